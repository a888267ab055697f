"""Silences transformers' messages that say nothing to a user of ours, around our own calls only
(a logging filter added for the call and removed after it; nothing changes globally):

- "You are using a model of type power_bert to instantiate a model of type ``": AutoTokenizer
  reading a PoWER-BERT folder's config through the base config class;
- "Token indices sequence length is longer than the specified maximum sequence length": a long
  row being tokenised, which we truncate at N on purpose (and count: ``truncated``).
"""
from __future__ import annotations

import contextlib
import logging

__all__ = ["NOISE", "quiet_transformers"]

# logger name -> the starts of the messages dropped from it
NOISE = {
    "transformers.configuration_utils": ("You are using a model of type",),
    "transformers.tokenization_utils_base": ("Token indices sequence length is longer than the specified maximum",),
}


class _DropNoise(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not str(record.getMessage()).startswith(self.starts)
        except Exception:  # a record that cannot be formatted is not ours to judge
            return True


@contextlib.contextmanager
def quiet_transformers():
    """Within the block, the messages in :data:`NOISE` are dropped (every other message passes)."""
    added = []
    for name, starts in NOISE.items():
        logger = logging.getLogger(name)
        f = _DropNoise(starts)
        logger.addFilter(f)
        added.append((logger, f))
    try:
        yield
    finally:
        for logger, f in added:
            logger.removeFilter(f)
