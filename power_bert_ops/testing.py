"""For tests and benchmarks: run another implementation behind a power_bert op.

:func:`force_kernels` registers a Python implementation (``'triton'`` or ``'reference'``) as the
kernel of some ops for one device key inside a ``with`` block, so the op's own fake kernel and
autograd formula run around it (the backward op too, when it is listed). It changes the process's
dispatcher: not for concurrent use, and never done by the library itself, whose kernels are
chosen once at import (:mod:`power_bert_ops._backend`).
"""
from __future__ import annotations

import contextlib

import torch

from . import _backend

__all__ = ["OPS", "force_kernels", "kernel_of"]

# The ops of each computation the wrappers expose (the forward op and its backward op).
OPS = _backend.OPS

# (op, device type) -> implementations forced by force_kernels, innermost last.
_forced: dict[tuple[str, str], list[str]] = {}


def kernel_of(op: str, device_type: str) -> str | None:
    """The implementation the dispatcher runs for ``op`` on ``device_type`` now."""
    stack = _forced.get((op, device_type))
    return stack[-1] if stack else _backend.registered(op, device_type)


@contextlib.contextmanager
def force_kernels(impl: str, device_type: str, ops):
    """Runs ``ops`` (names of torch.ops.power_bert ops) with implementation ``impl`` on
    ``device_type`` ('cpu' or 'cuda') inside the block; ops whose kernel is ``impl`` already are
    left alone. The kernels are restored on exit."""
    todo = [op for op in ops if kernel_of(op, device_type) != impl]
    for op in todo:
        if op not in _backend.PYTHON_KERNELS.get(impl, {}):
            raise RuntimeError(f"power_bert.{op}: no {impl!r} kernel to run on {device_type}")
    lib = torch.library.Library("power_bert", "IMPL")
    done = []
    try:
        for op in todo:
            _backend.register(lib, impl, op, device_type)
            _forced.setdefault((op, device_type), []).append(impl)
            done.append(op)
        yield
    finally:
        for op in done:
            _forced[(op, device_type)].pop()
        lib._destroy()
