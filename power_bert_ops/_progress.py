"""Progress bars written to a stream that is not a terminal (a log file, a pipe).

tqdm redraws a bar with a carriage return up to ten times a second; in a file every redraw stays,
so a stage of 2,000 steps leaves one line of 2,000 bars. :func:`paced` slows a bar that writes to
such a stream to one redraw every :data:`LOG_INTERVAL_S` seconds (and its last state when it
closes). A bar on a terminal, or with ``TQDM_MININTERVAL`` set in the environment, is left as it is.
A bar nested under another one moves the cursor up and down (escape sequences a file keeps), so
the trainer shows its evaluation bars only on a terminal (:func:`is_terminal`).
"""
from __future__ import annotations

import os

__all__ = ["LOG_INTERVAL_S", "is_terminal", "paced"]

LOG_INTERVAL_S = 30.0
"""Seconds between two redraws of a bar written to a stream that is not a terminal."""


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (False for a file, a pipe, a closed stream or no stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def paced(bar):
    """``bar`` (a tqdm bar, or None), set to redraw at most every :data:`LOG_INTERVAL_S` seconds
    when it writes to a stream that is not a terminal.

    Args:
        bar: a ``tqdm.tqdm`` (its ``fp`` is the stream it writes to), a disabled one, or None.

    Returns:
        ``bar``.
    """
    if bar is None or getattr(bar, "disable", True) or "TQDM_MININTERVAL" in os.environ:
        return bar
    if not is_terminal(bar.fp):
        bar.mininterval = max(bar.mininterval, LOG_INTERVAL_S)
        bar.maxinterval = max(bar.maxinterval, LOG_INTERVAL_S)  # tqdm's monitor thread forces a redraw after it
    return bar
