"""power_bert_ops: PoWER-BERT progressive word-vector elimination for PyTorch.

Ops (``torch.ops.power_bert.*``, wrapped here with argument checks and backend selection):
:func:`significance`, :func:`extract` (the fused one users call), :func:`extract_scored`,
:func:`soft_extract`. Plain-PyTorch definitions of each are in :mod:`power_bert_ops.reference`.
"""
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

__all__ = [
    "BACKENDS",
    "ExtractOutput",
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
