"""Silences messages that say nothing to a user of ours, around our own calls only (a logging
filter or warnings filter added for the call and removed after it; nothing changes globally).

transformers (:func:`quiet_transformers`):

- "You are using a model of type power_bert to instantiate a model of type ``": AutoTokenizer
  reading a PoWER-BERT folder's config through the base config class;
- "Token indices sequence length is longer than the specified maximum sequence length": a long
  row being tokenised, which we truncate at N on purpose (and count: ``truncated``).

Export (:func:`quiet_export`): from torch.onnx's exporter, that torchvision's ops are skipped (our
models have none) and that the batch and sequence axis names are kept as they are; a deprecation
inside torch's own pytree code (torch.export, both formats); ONNX Runtime's quantizer's advice to
run its pre-processing first (on the root logger), which the int8 export does not need.
"""
from __future__ import annotations

import contextlib
import logging
import warnings

__all__ = ["EXPORT_NOISE", "NOISE", "quiet_export", "quiet_transformers"]

# logger name -> the starts of the messages dropped from it
NOISE = {
    "transformers.configuration_utils": ("You are using a model of type",),
    "transformers.tokenization_utils_base": ("Token indices sequence length is longer than the specified maximum",),
}

EXPORT_NOISE = {"torch.onnx._internal.exporter._registration": ("torchvision is not installed",),
                "root": ("Please consider to run pre-processing before quantization",)}
EXPORT_WARNINGS = (r"# The axis name: .* will not be used", r"`isinstance\(treespec, LeafSpec\)` is deprecated")


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
    with _drop(NOISE):
        yield


@contextlib.contextmanager
def quiet_export():
    """Within the block, the log messages in :data:`EXPORT_NOISE` and the warnings matching
    :data:`EXPORT_WARNINGS` are dropped (every other message passes)."""
    with _drop(EXPORT_NOISE), warnings.catch_warnings():
        for message in EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


@contextlib.contextmanager
def _drop(noise: dict):
    added = []
    for name, starts in noise.items():
        logger = logging.getLogger(name)
        f = _DropNoise(starts)
        logger.addFilter(f)
        added.append((logger, f))
    try:
        yield
    finally:
        for logger, f in added:
            logger.removeFilter(f)
