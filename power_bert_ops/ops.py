"""The power_bert ops' Python side: one fake (meta) kernel and one autograd formula per op, and
the public wrappers.

Shapes: batch ``B``, sequence ``N``, hidden ``D``, heads ``H``, kept rows ``k``.

Schemas: ``csrc/power_bert.cpp``. Kernels, one per dispatch key, chosen in
:mod:`power_bert_ops._backend`: C++ on CPU (``csrc/cpu/``); on CUDA the C++ kernels
(``csrc/cuda/``), the Triton kernels (``power_bert_ops/triton/``) or the plain-PyTorch reference.
Argument checks (``_checks``, the same messages as ``csrc/checks.h``): each op's shape, dtype
and device rules run where the op runs (its C++ kernels, its fake kernel, its Python kernels);
the wrappers check Python argument types and what reads tensor data, ask ``_backend.choose``
which implementation runs, and call the op (or, for ``backend='reference'``,
:mod:`power_bert_ops.reference` directly, after the op's checks). No wrapper changes which
kernel the op runs.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import _backend
from . import _checks as checks
from . import reference
from ._backend import BACKENDS, triton_available

__all__ = [
    "ExtractOutput",
    "BACKENDS",
    "significance",
    "extract",
    "extract_scored",
    "soft_extract",
    "attention",
    "triton_available",
]

ops = torch.ops.power_bert


class ExtractOutput(NamedTuple):
    """``out`` [B, k, D] (hidden's dtype), ``index`` int64 [B, k] (ascending positions, [CLS]
    first), ``mask`` [B, k] (mask's dtype; 0 where a short row's slot holds padding)."""

    out: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor


# ---------------------------------------------------------------------------------------------
# Fake kernels: shapes and dtypes only, with the same argument checks as the real kernels.
# ---------------------------------------------------------------------------------------------
@torch.library.register_fake("power_bert::significance")
def _significance_fake(attn, mask, exclude_self=True):
    checks.OP_ARGS["significance"](attn, mask)
    return attn.new_empty((attn.shape[0], attn.shape[2]), dtype=torch.float32)


def _extract_outputs_fake(hidden, mask, k):
    B, _, D = hidden.shape
    return (
        hidden.new_empty((B, k, D)),
        hidden.new_empty((B, k), dtype=torch.int64),
        mask.new_empty((B, k)),
    )


@torch.library.register_fake("power_bert::extract")
def _extract_fake(hidden, attn, mask, k, exclude_self=True, row_k=None):
    checks.OP_ARGS["extract"](hidden, attn, mask, k, exclude_self, row_k)
    return _extract_outputs_fake(hidden, mask, k)


@torch.library.register_fake("power_bert::extract_scored")
def _extract_scored_fake(hidden, scores, mask, k, row_k=None):
    checks.OP_ARGS["extract_scored"](hidden, scores, mask, k, row_k)
    return _extract_outputs_fake(hidden, mask, k)


@torch.library.register_fake("power_bert::extract_backward")
def _extract_backward_fake(grad_out, index, n):
    checks.OP_ARGS["extract_backward"](grad_out, index, n)
    return grad_out.new_empty((grad_out.shape[0], n, grad_out.shape[2]))


@torch.library.register_fake("power_bert::soft_extract")
def _soft_extract_fake(hidden, scores, mask, retention):
    checks.OP_ARGS["soft_extract"](hidden, scores, mask, retention)
    return torch.empty_like(hidden, memory_format=torch.contiguous_format)


@torch.library.register_fake("power_bert::soft_extract_backward")
def _soft_extract_backward_fake(grad_out, hidden, scores, mask, retention):
    checks.OP_ARGS["soft_extract_backward"](grad_out, hidden, scores, mask, retention)
    return torch.empty_like(hidden, memory_format=torch.contiguous_format), torch.empty_like(retention)


@torch.library.register_fake("power_bert::_attention_forward")
def _attention_forward_fake(q, k, v, mask, dropout_p, need_significance, exclude_self, seed):
    checks.OP_ARGS["_attention_forward"](q, k, v, mask, dropout_p, need_significance, exclude_self, seed)
    B, H, N, d = q.shape
    sig = q.new_empty((B, N) if need_significance else (0,), dtype=torch.float32)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    # Every kernel (C++ CPU, Triton) writes out in [B, N, H, d] memory: merging heads is a view.
    out = q.new_empty((B, N, H, d)).transpose(1, 2)
    return out, sig, q.new_empty((B, H, N), dtype=lse_dtype)


@torch.library.register_fake("power_bert::_attention_backward")
def _attention_backward_fake(grad_out, q, k, v, out, lse, mask, dropout_p, seed):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


# ---------------------------------------------------------------------------------------------
# Autograd. Significance and the selection get no gradient (SPEC 1.1): only ``hidden`` (and
# ``retention`` for soft_extract; q, k, v for attention) do. The backward ops run the kernel
# registered for their device, like every op.
# ---------------------------------------------------------------------------------------------
def _significance_setup_context(ctx, inputs, output):
    ctx.mark_non_differentiable(output)


def _no_gradient(ctx, *grads):
    return (None,) * len(ctx.needs_input_grad)


torch.library.register_autograd("power_bert::significance", _no_gradient, setup_context=_significance_setup_context)


def _extract_setup_context(ctx, inputs, output):
    ctx.n = inputs[0].shape[1]
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(output[1])


def _extract_backward(ctx, grad_out, _grad_index, _grad_mask):
    (index,) = ctx.saved_tensors
    grad_hidden = None
    if ctx.needs_input_grad[0]:
        grad_hidden = ops.extract_backward(grad_out, index, ctx.n)
    return (grad_hidden,) + (None,) * (len(ctx.needs_input_grad) - 1)


torch.library.register_autograd("power_bert::extract", _extract_backward, setup_context=_extract_setup_context)
torch.library.register_autograd(
    "power_bert::extract_scored", _extract_backward, setup_context=_extract_setup_context
)


def _extract_backward_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _extract_backward_backward(ctx, grad_grad):
    # extract_backward is linear in grad_out: its own gradient is the forward gather.
    (index,) = ctx.saved_tensors
    gathered = grad_grad.gather(1, index[:, :, None].expand(-1, -1, grad_grad.shape[-1]))
    return gathered, None, None


torch.library.register_autograd(
    "power_bert::extract_backward", _extract_backward_backward, setup_context=_extract_backward_setup_context
)


def _soft_extract_setup_context(ctx, inputs, output):
    hidden, scores, mask, retention = inputs
    ctx.save_for_backward(hidden, scores, mask, retention)


def _soft_extract_backward(ctx, grad_out):
    hidden, scores, mask, retention = ctx.saved_tensors
    grad_hidden, grad_retention = ops.soft_extract_backward(grad_out, hidden, scores, mask, retention)
    need = ctx.needs_input_grad
    return (grad_hidden if need[0] else None, None, None, grad_retention if need[3] else None)


def _soft_extract_double_backward(ctx, *grads):
    raise RuntimeError(
        "power_bert.soft_extract: double backward is not supported (differentiate soft_extract once, "
        "or use power_bert_ops.reference.soft_extract, which is plain autograd)"
    )


torch.library.register_autograd(
    "power_bert::soft_extract", _soft_extract_backward, setup_context=_soft_extract_setup_context
)
torch.library.register_autograd(
    "power_bert::soft_extract_backward", _soft_extract_double_backward, setup_context=lambda ctx, inputs, output: None
)


def _attention_setup_context(ctx, inputs, output):
    q, k, v, mask, dropout_p, _need_sig, _exclude_self, seed = inputs
    out, sig, lse = output
    ctx.mark_non_differentiable(sig, lse)
    ctx.dropout_p = dropout_p
    ctx.save_for_backward(q, k, v, out, lse, mask, seed)


def _attention_backward(ctx, grad_out, _grad_sig, _grad_lse):
    q, k, v, out, lse, mask, seed = ctx.saved_tensors
    dq, dk, dv = ops._attention_backward(grad_out, q, k, v, out, lse, mask, ctx.dropout_p, seed)
    return dq, dk, dv, None, None, None, None, None


def _attention_double_backward(ctx, *grads):
    raise RuntimeError("power_bert.attention: double backward is not supported")


torch.library.register_autograd(
    "power_bert::_attention_forward", _attention_backward, setup_context=_attention_setup_context
)
torch.library.register_autograd(
    "power_bert::_attention_backward", _attention_double_backward, setup_context=lambda ctx, inputs, output: None
)


# ---------------------------------------------------------------------------------------------
# Public wrappers: check what the kernels cannot (Python argument types; tensor data), choose
# the implementation (power_bert_ops._backend), run it. Shapes, dtypes and devices are checked
# where the op runs: its C++ kernels, its fake kernel, its Python kernels, and before a direct
# call of the reference (``_checks.OP_ARGS``).
# ---------------------------------------------------------------------------------------------
def _run(name: str, impl: str, device: torch.device, op, reference_fn, args: tuple, data_check=None):
    """``op(*args)``, or for ``impl == 'reference'`` ``reference_fn(*args)`` after the op's
    argument checks. ``data_check`` (reads tensor data) runs before, except on the CPU, whose C++
    kernels run it themselves."""
    if impl == "reference":
        checks.OP_ARGS[name](*args)
        if data_check is not None:
            data_check()
        return reference_fn(*args)
    if data_check is not None and device.type != "cpu":
        data_check()
    return op(*args)


def _tensors(op: str, **tensors) -> None:
    for name, t in tensors.items():
        checks.check_tensor(t, op, name)


def attention(q, k, v, mask, dropout_p: float = 0.0, need_significance: bool = True, exclude_self: bool = True,
              *, backend: str = "auto"):
    """Softmax attention that also returns SPEC 1.1 significance, never materialising the
    B*H*N*N probabilities (extra memory O(B*H*N) on GPU; a fixed block budget on CPU).

    q, k, v [B, H, N, d] (scaled_dot_product_attention's layout), mask [B, N] key padding ->
    (out [B, H, N, d], significance float32 [B, N], ``-inf`` at padding; an empty [0] tensor
    when ``need_significance`` is False). q, k, v may be strided views (e.g. [B, N, H, d]
    projections transposed): the CPU (fp32/fp64) and Triton forward kernels read them in place
    and write ``out`` in [B, N, H, d] memory, so ``out.transpose(1, 2).reshape(B, N, H * d)`` is
    a view. Scale 1/sqrt(d). ``dropout_p`` drops attention
    probabilities (pass 0 in eval); significance uses the un-dropped ones and has no gradient.
    Backends: 'auto' runs the device's kernel (C++ on CPU, Triton on CUDA), or the reference on
    CUDA where the Triton kernels do not take the input (``_backend.attention_kernel_runs``);
    'reference' calls :func:`power_bert_ops.reference.attention` (eager, O(N^2) memory); 'cpu'
    and 'triton' name the device's kernel (checked).
    """
    _tensors("attention", q=q, k=k, v=v, mask=mask)
    checks.check_bool(need_significance, "attention", "need_significance")
    checks.check_bool(exclude_self, "attention", "exclude_self")
    for name, t in (("q", q), ("k", k), ("v", v)):
        checks.check_copy_fits(t, "attention", name)
    impl = _backend.choose("attention", backend, q.device, q.dtype, q.shape[-1] if q.dim() else 0)
    return _run("_attention_forward", impl, q.device, ops.attention, reference.attention,
                (q, k, v, mask, float(dropout_p), need_significance, exclude_self),
                lambda: checks.check_rows_have_a_real_key(mask, "attention"))


def significance(attn: torch.Tensor, mask: torch.Tensor, exclude_self: bool = True, *, backend: str = "auto"):
    """SPEC 1.1 significance. attn [B, H, N, N] probabilities, mask [B, N] -> float32 [B, N]
    (``-inf`` at padding). Padded query rows are excluded (the authors' Keras code includes them)."""
    _tensors("significance", attn=attn, mask=mask)
    checks.check_bool(exclude_self, "significance", "exclude_self")
    checks.check_copy_fits(attn, "significance", "attn")
    impl = _backend.choose("significance", backend, attn.device)
    return _run("significance", impl, attn.device, ops.significance, reference.significance,
                (attn, mask, exclude_self))


def _width_and_rows(k, width, hidden, op: str):
    """(output width, per-row k tensor or None) from the public ``k`` (an int, or an int64 [B]
    tensor) and ``width``. A tensor k without ``width`` takes the batch's largest k (one host
    read; pass ``width``, a static cap, under torch.compile, export or CUDA graphs)."""
    checks.check_tensor(hidden, op, "hidden")
    if not isinstance(k, torch.Tensor):
        if width is not None:
            raise TypeError(f"power_bert.{op}: `width` goes with a per-row `k` tensor; with an int k the width is k")
        return checks.as_k(k, op), None
    if k.dim() == 0:
        raise TypeError(f"power_bert.{op}: `k` must be an int or an int64 tensor [B] (rows kept per example), "
                        "got a 0-d tensor")
    checks.check_row_k(k, hidden, op, name="k")
    if width is None:
        if checks._no_data(k):
            raise ValueError(f"power_bert.{op}: a per-row `k` needs `width=` (a static cap on k) while tracing "
                             "or capturing, where the batch's largest k cannot be read")
        checks.check_row_k_values(k, hidden.shape[1], op, name="k")
        return (int(k.max()) if k.numel() else 1), k
    width = checks.as_k(width, op)
    checks.check_k(width, hidden.shape[1], op)
    checks.check_row_k_values(k, width, op, name="k")
    return width, k


def extract(hidden, attn, mask, k, exclude_self: bool = True, *, width: int | None = None,
            backend: str = "auto") -> ExtractOutput:
    """SPEC 1.2 fused extract: significance from ``attn``, keep [CLS] and the k-1 most
    significant other rows, in their original order.

    Args:
        hidden: [B, N, D]; attn: [B, H, N, N] probabilities; mask: [B, N].
        k: rows kept, an int, or an int64 tensor [B] of rows kept per example
            (1 <= k[b] <= N).
        width: with a tensor ``k``, the output width W (>= every k[b]); default the batch's
            largest k (a host read).
    Returns:
        :class:`ExtractOutput` (out [B, W, D], index int64 [B, W], mask [B, W]); W = k for an
        int k. Row b's k[b] kept positions fill its first slots in ascending order; the
        remaining slots hold the next-ranked positions (ascending) with mask 0. Rows shorter
        than k are padded with padding positions (mask 0). Gradient flows to ``hidden`` only.
        A NaN significance ranks below every number.
    """
    k, row_k = _width_and_rows(k, width, hidden, "extract")
    _tensors("extract", attn=attn, mask=mask)
    checks.check_bool(exclude_self, "extract", "exclude_self")
    checks.check_copy_fits(attn, "extract", "attn")
    impl = _backend.choose("extract", backend, hidden.device)
    return ExtractOutput(*_run("extract", impl, hidden.device, ops.extract, reference.extract,
                               (hidden, attn, mask, k, exclude_self, row_k),
                               lambda: checks.check_cls_real(mask, "extract")))


def extract_scored(hidden, scores, mask, k, *, width: int | None = None, backend: str = "auto") -> ExtractOutput:
    """SPEC 1.2 selection and gather from precomputed ``scores`` [B, N] (compared as float32).

    hidden [B, N, D], scores [B, N], mask [B, N]; ``k`` and ``width`` as in :func:`extract`
    -> :class:`ExtractOutput`."""
    k, row_k = _width_and_rows(k, width, hidden, "extract_scored")
    _tensors("extract_scored", scores=scores, mask=mask)
    impl = _backend.choose("extract_scored", backend, hidden.device)
    return ExtractOutput(*_run("extract_scored", impl, hidden.device, ops.extract_scored, reference.extract_scored,
                               (hidden, scores, mask, k, row_k), lambda: checks.check_cls_real(mask, "extract_scored")))


def soft_extract(hidden, scores, mask, retention, *, backend: str = "auto"):
    """SPEC 1.3: ``out[b, p] = hidden[b, p] * retention[rank_b(p)]``, ranks by descending
    ``scores`` (padding last, no [CLS] special case). hidden [B, N, D], scores [B, N],
    mask [B, N], retention [N] -> [B, N, D]. Differentiable in hidden and retention."""
    _tensors("soft_extract", hidden=hidden, scores=scores, mask=mask, retention=retention)
    impl = _backend.choose("soft_extract", backend, hidden.device)
    return _run("soft_extract", impl, hidden.device, ops.soft_extract, reference.soft_extract,
                (hidden, scores, mask, retention))
