"""Launch helpers shared by the Triton kernels (``extract_triton``, ``attention_triton``); the
Python side of ``csrc/poison.h``.

* :func:`interpreted`: whether a launch runs under the Triton interpreter (``TRITON_INTERPRET=1``
  or tensors not on CUDA); the kernels then use small blocks so tiny test shapes still cross
  block boundaries.
* :data:`INTERPRET_AT_IMPORT`: ``TRITON_INTERPRET=1`` when the kernels were decorated (``triton.jit``
  reads it then, so it decides whether the kernels are interpreted).
* :func:`empty`: output allocation; with ``POWER_BERT_POISON_OUTPUTS=1`` the output is filled with
  garbage first (NaN for floating point, true for bool, -12345 for integers, or their least value),
  as the C++ kernels do, so an element a kernel forgets to write fails the comparison with the
  reference.
* :func:`real_bytes`: the int8 [B, N] mask of real tokens every kernel reads.

* :func:`launcher`: every launch is ``launcher(kernel)[grid](...)``, the kernel itself. They are
  the CUDA kernels of custom ops and only ever see real tensors (the ops' fake kernels serve
  torch.compile and export), so they launch directly, not through ``torch.library.wrap_triton``,
  whose higher-order-op path costs about 0.6 ms of host time per launch in eager mode on an H200.
  Tests replace it to record launches and grids.
"""
from __future__ import annotations

import os

import torch

INTERPRET_AT_IMPORT = os.environ.get("TRITON_INTERPRET") == "1"


def interpreted(device: torch.device) -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1" or device.type != "cuda"


def poison_enabled() -> bool:
    return os.environ.get("POWER_BERT_POISON_OUTPUTS") == "1"


def empty(shape, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = torch.empty(shape, device=device, dtype=dtype)
    if poison_enabled() and t.numel():
        if dtype.is_floating_point:
            t.fill_(float("nan"))
        elif dtype == torch.bool:
            t.fill_(True)
        else:
            t.fill_(max(-12345, torch.iinfo(dtype).min))
    return t


def real_bytes(mask: torch.Tensor) -> torch.Tensor:
    """mask [B, N] of any dtype -> int8 [B, N] contiguous, 1 at real tokens (nonzero)."""
    return (mask != 0).to(torch.int8).contiguous()


def launcher(kernel):
    """``kernel`` (a triton.jit function), launched by the caller as ``launcher(kernel)[grid](...)``."""
    return kernel
