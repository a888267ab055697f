"""Which implementation runs each power_bert op: decided here, once, for the wrappers
(``power_bert_ops.ops``) and the model (``power_bert_ops.modeling``) alike.

Every op of ``torch.ops.power_bert`` has one schema (``csrc/power_bert.cpp``), one fake kernel
and one autograd formula (``power_bert_ops/ops.py``), and one kernel per dispatch key:

* CPU: the C++ kernels (``csrc/cpu/``).
* CUDA: chosen at import from static facts (what was built, whether triton imports):

  - ``significance``, ``extract_scored``, ``soft_extract``, ``soft_extract_backward``: the C++
    CUDA kernels when built, else the plain-PyTorch reference (:mod:`power_bert_ops.reference`,
    no host synchronisation);
  - ``extract``, ``extract_backward``: the C++ CUDA kernels when built, else Triton
    (``power_bert_ops/triton/extract_triton.py``) when triton imports, else the reference.
    With both, the C++ kernel is the default: on an H200 it ran 4.2-6.8x faster than the PyTorch
    composition, Triton's five launches 0.14-0.93x (``bench/results/gpu_h200_20261204``, measured
    while the Triton launches still went through ``torch.library.wrap_triton``, ~0.6 ms each: to
    be measured again);
    ``POWER_BERT_GPU_BACKEND=triton`` in the environment at import makes Triton the CUDA kernel
    instead;
  - ``_attention_forward``, ``_attention_backward`` (under the public ``attention``): Triton
    (``power_bert_ops/triton/attention_triton.py``), the only CUDA kernel, when triton imports.
    It takes float16 / bfloat16 / float32 and head sizes 32, 64, 128
    (:func:`attention_kernel_runs`).

The C++ kernels register themselves (``TORCH_LIBRARY_IMPL``); the Python kernels chosen above are
registered for the CUDA key when this module is imported.

``backend=`` on the wrappers: ``'auto'`` runs the op (the kernel registered for the tensors'
device); ``'reference'`` calls :mod:`power_bert_ops.reference` directly; a kernel's name is
checked against the tensors' device and must be the kernel chosen above. Nothing here swaps a
kernel after import; tests and benchmarks that run another implementation behind the op use
:func:`power_bert_ops.testing.force_kernels`.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import warnings

import torch

from . import _checks
from ._library import built_with_cuda

BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")

# The ops of each computation the wrappers expose: the forward op and the backward op its
# autograd formula calls.
OPS = {
    "significance": ("significance",),
    "extract": ("extract", "extract_backward"),
    "extract_scored": ("extract_scored", "extract_backward"),
    "soft_extract": ("soft_extract", "soft_extract_backward"),
    "attention": ("_attention_forward", "_attention_backward"),
}

# Implementations in Python, per op: (module, function). The C++ kernels ("cpu", "cuda") are
# registered by the compiled library.
PYTHON_KERNELS = {
    "triton": {
        "extract": ("power_bert_ops.triton.extract_triton", "extract"),
        "extract_backward": ("power_bert_ops.triton.extract_triton", "extract_backward"),
        "_attention_forward": ("power_bert_ops.triton.attention_triton", "forward"),
        "_attention_backward": ("power_bert_ops.triton.attention_triton", "backward"),
    },
    "reference": {
        "significance": ("power_bert_ops.reference", "significance"),
        "extract": ("power_bert_ops.reference", "extract"),
        "extract_scored": ("power_bert_ops.reference", "extract_scored"),
        "extract_backward": ("power_bert_ops.reference", "extract_backward"),
        "soft_extract": ("power_bert_ops.reference", "soft_extract"),
        "soft_extract_backward": ("power_bert_ops.reference", "soft_extract_backward"),
    },
}

DISPATCH_KEY = {"cpu": "CPU", "cuda": "CUDA"}


def triton_available() -> bool:
    """Triton is importable (its kernels run on CUDA tensors, or on CPU with TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


def _cuda_defaults() -> dict[str, str | None]:
    """The CUDA kernel of every op: 'cuda' (C++), 'triton', 'reference' or None (none)."""
    built, triton = built_with_cuda(), triton_available()
    prefer_triton = os.environ.get("POWER_BERT_GPU_BACKEND", "cuda") == "triton"
    table = {}
    for op in ("significance", "extract_scored", "soft_extract", "soft_extract_backward"):
        table[op] = "cuda" if built else "reference"
    for op in ("extract", "extract_backward"):
        if triton and (prefer_triton or not built):
            table[op] = "triton"
        else:
            table[op] = "cuda" if built else "reference"
    for op in ("_attention_forward", "_attention_backward"):
        table[op] = "triton" if triton else None
    return table


CUDA_DEFAULTS = _cuda_defaults()


def registered(op: str, device_type: str) -> str | None:
    """The implementation chosen at import for ``op`` on ``device_type``."""
    if device_type == "cpu":
        return "cpu"
    if device_type == "cuda":
        return CUDA_DEFAULTS[op]
    return None


def python_kernel(impl: str, op: str):
    """The Python implementation ``impl`` ('triton' or 'reference') of ``op`` as a dispatcher
    kernel, imported on first call (triton is imported only when a Triton kernel runs). The
    Triton entries check their arguments; the reference kernels run the op's checks first."""
    module, name = PYTHON_KERNELS[impl][op]
    check = _checks.OP_ARGS[op] if impl == "reference" else None
    fn = None

    def kernel(*args):
        nonlocal fn
        if fn is None:
            fn = getattr(importlib.import_module(module), name)
        if check is not None:
            check(*args)
        return fn(*args)

    kernel.__name__ = f"{op}_{impl}"
    kernel.__qualname__ = kernel.__name__
    return kernel


def register(lib: torch.library.Library, impl: str, op: str, device_type: str) -> None:
    """Registers the Python implementation ``impl`` of ``op`` for ``device_type`` in ``lib``."""
    with warnings.catch_warnings():
        # Overriding a kernel registered before warns; the override is what is wanted.
        warnings.simplefilter("ignore", UserWarning)
        lib.impl(op, python_kernel(impl, op), DISPATCH_KEY[device_type])


_lib = torch.library.Library("power_bert", "IMPL")
for _op, _impl in CUDA_DEFAULTS.items():
    if _impl in PYTHON_KERNELS:
        register(_lib, _impl, _op, "cuda")


def attention_kernel_runs(device: torch.device, dtype: torch.dtype, head_size: int) -> bool:
    """Whether ``torch.ops.power_bert.attention`` has a kernel for [B, H, n, head_size] inputs of
    ``dtype`` on ``device``: the CPU kernel takes every dtype and head size; on CUDA the Triton
    kernels need triton, head size 32/64/128 and float16/bfloat16/float32. Static (no tensor
    data), so it is traced away."""
    if device.type != "cuda":
        return True
    return (registered("_attention_forward", "cuda") == "triton" and head_size in _checks.TRITON_ATTENTION_HEAD_SIZES
            and dtype in _checks.TRITON_ATTENTION_DTYPES)


def choose(computation: str, backend: str, device: torch.device, dtype: torch.dtype | None = None,
           head_size: int | None = None) -> str:
    """The implementation of ``computation`` (a key of :data:`OPS`) that a wrapper runs on
    ``device``: 'cpu', 'cuda', 'triton' or 'reference'. ``backend='auto'`` gives the registered
    kernel, or the reference where there is none (attention on CUDA without triton, or with a
    dtype / head size the Triton kernels lack); any other value is checked (a kernel's name must
    be the kernel registered for ``device``) and returned."""
    op = f"power_bert.{computation}"
    if backend not in BACKENDS:
        raise ValueError(f"{op}: `backend` must be one of {BACKENDS}, got {backend!r}")
    first = OPS[computation][0]
    has_triton = first in PYTHON_KERNELS["triton"]
    if backend == "auto":
        if device.type != "cuda":
            return "cpu" if device.type == "cpu" else "auto"  # meta: the fake kernel
        if computation == "attention" and not attention_kernel_runs(device, dtype, head_size):
            return "reference"
        return registered(first, "cuda")
    if backend == "reference":
        return "reference"
    if backend == "triton":
        if not has_triton:
            raise ValueError(f"{op}: there is no Triton kernel for this op; use 'cuda', 'cpu' or 'reference'")
        if not triton_available():
            raise RuntimeError(f"{op}: backend='triton' needs the triton package (pip install triton)")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(f"{op}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 on CPU), got {device}")
        if registered(first, device.type) != "triton":
            raise RuntimeError(f"{op}: backend='triton' is not the kernel of {device.type} tensors in this process "
                               f"(it is {registered(first, device.type)!r}, chosen at import; "
                               "POWER_BERT_GPU_BACKEND=triton makes Triton the CUDA kernel); tests and benchmarks "
                               "force it with power_bert_ops.testing.force_kernels")
        return "triton"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"{op}: backend='cpu' needs CPU tensors, got tensors on {device}")
        return "cpu"
    # backend == "cuda"
    if device.type != "cuda":
        raise ValueError(f"{op}: backend='cuda' needs CUDA tensors, got tensors on {device}")
    if computation == "attention":
        raise ValueError(f"{op}: there is no C++ CUDA kernel for this op (its CUDA kernel is Triton); "
                         "use 'triton' or 'auto'")
    if not built_with_cuda():
        raise RuntimeError(
            f"{op}: the CUDA kernels were not built (power_bert_ops.built_with_cuda() is False); "
            "reinstall on a machine whose torch has CUDA with POWER_BERT_CUDA=1, or use backend='triton'"
        )
    if CUDA_DEFAULTS[first] != "cuda":
        raise RuntimeError(f"{op}: POWER_BERT_GPU_BACKEND=triton made Triton this op's CUDA kernel; "
                           "unset it to run the C++ CUDA kernel")
    return "cuda"
