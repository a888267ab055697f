"""power_bert_ops: PoWER-BERT progressive word-vector elimination for PyTorch.

Ops (``torch.ops.power_bert.*``, wrapped here with argument checks and backend selection):
:func:`significance`, :func:`extract` (the fused one users call), :func:`extract_scored`,
:func:`soft_extract`, :func:`attention`. Plain-PyTorch definitions of each are in
:mod:`power_bert_ops.reference`.

Models (``power_bert_ops.PowerBertForSequenceClassification`` etc., from
:mod:`power_bert_ops.modeling`) are loaded on first use, so the ops need no transformers.
"""
import importlib
from . import reference
from ._library import built_with_cuda, cuda_version
from .ops import (
    BACKENDS,
    ExtractOutput,
    attention,
    extract,
    extract_scored,
    significance,
    soft_extract,
    triton_available,
)

__version__ = "0.1.0"

# Names served by power_bert_ops.modeling, imported on first access (it needs transformers).
_MODELING = ("PowerBertConfig", "PowerBertForSequenceClassification", "PowerBertForMultipleChoice")


def __getattr__(name):
    if name in _MODELING:
        return getattr(importlib.import_module(".modeling", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_MODELING))


__all__ = [
    "BACKENDS",
    "ExtractOutput",
    "PowerBertConfig",
    "PowerBertForMultipleChoice",
    "PowerBertForSequenceClassification",
    "attention",
    "built_with_cuda",
    "cuda_version",
    "extract",
    "extract_scored",
    "reference",
    "significance",
    "soft_extract",
    "triton_available",
]
