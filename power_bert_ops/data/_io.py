"""Reading text files strictly as UTF-8, with errors that say where the bad bytes are."""
from __future__ import annotations

import csv
import difflib
import logging
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

from .types import DataError

logger = logging.getLogger("power_bert_ops.data")

ERRORS = ("strict", "replace")


def read_text(path, errors: str = "strict") -> str:
    """The file's text, decoded as UTF-8 (a leading BOM dropped).

    ``errors="strict"`` (default) raises :class:`DataError` naming the file, the byte offset and
    the line of the first undecodable byte, with an ``iconv`` command that re-saves the file as
    UTF-8; ``errors="replace"`` puts U+FFFD in its place and logs how many bytes were replaced.
    """
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {ERRORS}, got {errors!r}")
    path = check_file(path)
    data = path.read_bytes()
    return decode_bytes(data, str(path), errors)


def check_file(path, where: str | None = None) -> Path:
    """``path`` as a Path; DataError when nothing is there or it is a directory, its message
    starting with ``where`` (default: the path)."""
    path = Path(path)
    where = where or str(path)
    if not path.exists():
        raise DataError(f"{where}: no such file")
    if path.is_dir():
        raise DataError(f"{where}: is a directory, expected a file")
    return path


def decode_bytes(data: bytes, name: str, errors: str = "strict") -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if errors == "strict":
            line = data.count(b"\n", 0, exc.start) + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
            bad = data[exc.start:exc.end].hex(" ")
            src = Path(name)
            fixed = shlex.quote(str(src.with_name(f"{src.stem}.utf8{src.suffix}")))
            if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # a UTF-16 byte-order mark
                source, example = "utf-16", "it is UTF-16 (its first bytes are a UTF-16 byte-order mark)"
            else:  # Windows-1252: Latin-1 and the smart quotes and dashes of Windows editors
                source, example = "cp1252", "e.g. from Windows-1252 / Latin-1"
            raise DataError(
                f"{name}: not valid UTF-8 at byte offset {exc.start} (line {line}, byte {col} of the line: "
                f"0x{bad}, {exc.reason}); save the file as UTF-8 and pass that one instead, {example}: "
                f"`iconv -f {source} -t utf-8 {shlex.quote(name)} > {fixed}`"
            ) from None
        text = data.decode("utf-8", errors="replace")
        logger.warning("%s: replaced undecodable bytes with U+FFFD (%d replacement characters)", name,
                       text.count("\ufffd") - data.count("\ufffd".encode()))
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


@contextmanager
def big_csv_fields():
    """Lift the csv module's 128 KiB field limit for the duration (long documents)."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def is_empty_cell(value) -> bool:
    """None, NaN, or blank: what a missing text looks like in CSV / JSON."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return isinstance(value, str) and not value.strip()


def missing_column_error(path, column: str, role: str, columns) -> DataError:
    columns = list(columns)
    hint = difflib.get_close_matches(column, columns, n=1) if column else []
    near = f"; did you mean {hint[0]!r}?" if hint else ""
    if str(path).lower().endswith(".csv") and any("\t" in str(c) for c in columns):
        near = "; its header is separated by tabs: name a tab-separated file .tsv"
    return DataError(f"{path}: {role} {column!r} not found; the columns are {columns}{near}")
