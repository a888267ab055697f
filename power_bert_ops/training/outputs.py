"""Files the commands write for a user (predictions, a benchmark report, a picture), checked
before any work and written so that nothing a user had is lost:

- an output path is refused, naming its flag, when it is a folder, lies under a missing folder or
  a file, cannot be written, or is one of the command's own inputs (``predict --output-file X
  --input-file X``, the ``--artifact``, a file of ``--model-dir``; also through a symlink or
  another relative path);
- a folder that holds a ``power-bert run`` (its report.json), one of its stages or a model is
  refused as a benchmark's ``--output-dir``: the benchmark's files would mix with them;
- files are written to a temporary file beside the target and renamed over it, so a failure (a
  full disk, Ctrl-C) never leaves a half-written file in its place; a symlink's target is
  replaced (the link stays), a read-only file is refused, and ``-`` (standard output), a device
  or a pipe is written into; a path that is standard output (``/dev/stdout``, or the file the
  shell redirected it to) is written as ``-`` is, so the command's messages go to standard error.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path

from .._paths import is_read_only
from .errors import PowerBertError

__all__ = ["check_benchmark_output_dir", "check_image_path", "check_output_file", "check_writable_folder",
           "folder_files", "replace_atomically", "writes_to_stdout", "written_in_place"]

# The files `power-bert benchmark --output-dir` writes (power_bert_ops.training.report).
BENCHMARK_FILES = ("report.json", "report.md", "speedup.png")


def check_writable_folder(folder: Path, flag: str, what: str) -> None:
    """``folder`` (existing, or to be created: its nearest existing parent) accepts new files;
    else a PowerBertError naming ``flag`` and ``what`` (the path the user gave)."""
    existing = Path(folder)
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise PowerBertError(f"{flag} {what} cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise PowerBertError(f"{flag} {what} cannot be written ({existing}: {e.strerror or e})") from None


def writes_to_stdout(path) -> bool:
    """Whether writing ``path`` writes this process's standard output: ``-``, or a path naming the
    file descriptor 1 points to (``/dev/stdout``, ``/proc/self/fd/1``, or the very file or pipe
    the shell redirected standard output to). Such a path is written through ``sys.stdout``, in
    order with what the command prints, and the command's own messages go to standard error."""
    if str(path) == "-":
        return True
    try:
        a, b = os.stat(path), os.fstat(1)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def folder_files(flag: str, folder) -> dict:
    """``{"<flag>'s <name>": path}`` for the files in ``folder`` (none when it is not a folder):
    a command's input folder, for :func:`check_output_file`'s ``inputs``."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {f"{flag}'s {p.name}": p for p in sorted(folder.iterdir()) if p.is_file()}


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_output_file(path, flag: str, inputs: dict | None = None) -> Path:
    """An output file ``path`` that can be written without losing anything: not a folder, in an
    existing, writable folder, and none of ``inputs`` (flag -> path: the command's own input
    files). Returns it as a Path."""
    out = Path(path)
    if not str(path):
        raise PowerBertError(f"{flag}: an empty path; give a file name")
    if out.is_dir():
        raise PowerBertError(f"{flag} {path}: is a folder")
    if str(path).endswith(os.sep):
        raise PowerBertError(f"{flag} {path}: names a folder (it ends with {os.sep}); give a file name")
    for in_flag, in_path in (inputs or {}).items():
        if in_path is not None and _same_file(out, Path(in_path)):
            raise PowerBertError(f"{flag} {path} is the {in_flag} ({in_path}): writing it would overwrite the input; "
                                 f"give another {flag}")
    if writes_to_stdout(path):
        return out
    if written_in_place(out):  # a device or a pipe (/dev/stdout, a FIFO): written into as it is
        if not os.access(out, os.W_OK):
            raise PowerBertError(f"{flag} {path}: cannot be written")
        return out
    target = Path(os.path.realpath(out))  # a symlink: the file it points to is written
    if is_read_only(target):
        raise PowerBertError(f"{flag} {path}: is read-only")
    if not target.parent.is_dir():
        raise PowerBertError(f"{flag} {path}: its folder {'is a file' if target.parent.exists() else 'does not exist'}")
    check_writable_folder(target.parent, flag, str(path))
    return out


@contextlib.contextmanager
def replace_atomically(path, mode: str = "w", **open_kwargs):
    """Opens a temporary file beside ``path`` for writing and, when the block ends without an
    error, renames it over ``path`` (an atomic replace on one file system); on an error the
    temporary file is removed and ``path`` is untouched. Yields the open file.

    A symlink's target is replaced (the link stays) and keeps its permissions; a device or a pipe
    (``/dev/stdout``, a FIFO) is written into directly."""
    if writes_to_stdout(path):
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        if "b" in mode:
            sys.stdout.flush()  # what was printed before comes first
        yield stream
        stream.flush()
        return
    if written_in_place(Path(path)):
        with open(path, mode, **open_kwargs) as f:
            yield f
        return
    path = Path(os.path.realpath(path))
    keep = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.chmod(tmp, keep)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def written_in_place(path: Path) -> bool:
    """Whether ``path`` is written into as it is rather than replaced: a path under /dev or /proc
    (``/dev/stdout`` is a link to whatever the shell redirected it to), or (after symlinks) a
    character device or a pipe. (``-``, standard output, is handled before it is asked.)"""
    if os.path.abspath(path).startswith(("/dev/", "/proc/")):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_benchmark_report(report: Path) -> bool:
    """Whether ``report`` is a report.json that ``power-bert benchmark`` wrote (its "baseline"
    is the baseline's folder; a run's report holds the baseline's metrics and its stages)."""
    try:
        r = json.loads(report.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(r, dict) and isinstance(r.get("baseline"), str) and "flop_bound" in r and "stages" not in r


def check_benchmark_output_dir(path, flag: str = "--output-dir") -> Path:
    """A folder ``power-bert benchmark`` may write report.json, report.md and speedup.png into:
    not a file, creatable and writable, and not holding anything those files would replace
    except an earlier benchmark's report (a run's report.json, or a run folder, is refused)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise PowerBertError(f"{flag} {path} is a file, not a folder")
    from .run import RUN_FILE  # a run folder: its report.json is the run's

    if (out / RUN_FILE).exists():
        raise PowerBertError(f"{flag} {path} holds a power-bert run: the benchmark's report.json would replace the "
                             f"run's; give another {flag} (e.g. {Path(path) / 'benchmark'})")
    held = [name for name in ("stage.json", "config.json") if (out / name).exists()]
    if held:
        what = "a stage of a power-bert run" if held[0] == "stage.json" else "a model"
        raise PowerBertError(f"{flag} {path} holds {what} ({held[0]}): give a folder of the benchmark's own "
                             f"(e.g. {out.parent / 'benchmark'})")
    present = [name for name in BENCHMARK_FILES if (out / name).exists()]
    if present and not _is_benchmark_report(out / "report.json"):
        what = "a run's report" if (out / "report.json").exists() else "files"
        raise PowerBertError(f"{flag} {path} holds {what} that the benchmark would replace ({', '.join(present)}); "
                             f"give another {flag} (e.g. {Path(path) / 'benchmark'})")
    check_writable_folder(out, flag, str(path))
    return out


def check_image_path(path, flag: str = "--image") -> tuple[Path, str]:
    """A picture file to write: :func:`check_output_file`, and a format matplotlib writes (from
    the suffix; none: PNG). Returns (path, format)."""
    out = check_output_file(path, flag)
    fmt = out.suffix[1:].lower() or "png"
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise PowerBertError(f"{flag} {path}: matplotlib cannot write .{fmt} pictures (use one of "
                             f"{', '.join('.' + s for s in sorted(supported))})")
    return out, fmt
