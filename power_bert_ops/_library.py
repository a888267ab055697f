"""Loads the compiled op library (power_bert_ops._C), which registers torch.ops.power_bert.*."""
from __future__ import annotations

import torch

from . import _C  # noqa: F401  (importing registers the C++/CUDA kernels)


def cuda_version() -> int:
    """CUDA_VERSION the kernels were built with (e.g. 13000), or -1 when built without CUDA."""
    return int(torch.ops.power_bert._cuda_version())


def built_with_cuda() -> bool:
    """True when the compiled library contains the CUDA kernels."""
    return cuda_version() > 0
