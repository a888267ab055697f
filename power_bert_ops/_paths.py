"""File-system predicates shared by the layers that write files (``training.outputs``, ``export``)."""
from __future__ import annotations

import os
from pathlib import Path


def is_read_only(path) -> bool:
    """Whether ``path`` is an existing file that must not be written: this process may not write
    it, or no write bit is set at all (root passes ``os.access`` on a file the user made read-only)."""
    p = Path(path)
    return p.exists() and (not os.access(p, os.W_OK) or not p.stat().st_mode & 0o222)
