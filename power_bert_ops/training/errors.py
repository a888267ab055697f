"""The pipeline's error for a setting, file or folder it cannot use. The message names the
setting (or path) and what to do; the ``power-bert`` command prints it as one line and exits 2."""
from __future__ import annotations

import math
import sys

__all__ = ["CorruptModelError", "MAX_COUNT", "MAX_SEED", "PowerBertError", "StageSettingsError",
           "check_whole_number"]


class PowerBertError(ValueError):
    """A setting, file or folder the pipeline cannot use; raised before any work it would spoil."""


class StageSettingsError(PowerBertError):
    """A stage directory holds a result computed with other settings."""


class CorruptModelError(PowerBertError):
    """A saved model's weights or tokenizer cannot be read (truncated, corrupt or missing)."""


# The largest count a setting may hold: Python's index limit, which torch's samplers, numpy and
# Trainer take (a batch size of 10**20 would fail inside a library after the run was claimed).
MAX_COUNT = sys.maxsize
# Seeds reach numpy's legacy seeding (transformers.set_seed), which takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def check_whole_number(value, flag: str, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """``value`` if it is a whole number in [``minimum``, ``maximum``]; else a PowerBertError
    naming ``flag``."""
    span = f"from {minimum} to {maximum}"
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or int(value) != value or value < minimum):
        rule = f">= {minimum}" if maximum == MAX_COUNT else span  # a bound no one meets is left unsaid
        raise PowerBertError(f"{flag} must be a whole number {rule}, got {value!r}")
    if value > maximum:
        raise PowerBertError(f"{flag} must be a whole number {span}, got {value!r}")
    return int(value)
