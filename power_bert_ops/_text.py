"""Wording shared by the messages and reports of every layer (data readers, training, the command)."""
from __future__ import annotations

__all__ = ["count_text"]


def count_text(n: int, noun: str, plural: str | None = None) -> str:
    """'1 example', '2 examples'; ``plural`` where it is not the noun and an s ('1 row has',
    '3 rows have' from ``count_text(n, "row has", "rows have")``)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
