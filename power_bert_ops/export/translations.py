"""The power_bert ops in standard ONNX operators (opset 18), one onnxscript function per op, for
``torch.onnx.export(..., custom_translation_table=onnx_translation_table())``: the exported graph
runs in stock ONNX Runtime with no custom-op library. Float32 in, as the model exports it.

The selection (:func:`extract_scored`) is ONNX's form of the ranking rule of
:func:`power_bert_ops.reference.rank_order`; ``python_tests`` compare it with the reference on
ties, NaN, infinities and padding.
"""
from __future__ import annotations

import torch

from .runtime import EXTRA_HINT

try:
    import onnx
    from onnx import TensorProto
    from onnxscript import opset18 as op
except ImportError as e:
    raise ImportError(f"export(format='onnx') needs onnx and onnxscript (missing: {e.name}): {EXTRA_HINT}") from e

__all__ = ["attention", "attention_forward", "extract", "extract_scored", "onnx_translation_table", "significance"]

FLOAT, BOOL, INT64, DOUBLE = TensorProto.FLOAT, TensorProto.BOOL, TensorProto.INT64, TensorProto.DOUBLE


def _const_f(x, like):
    return op.CastLike(op.Constant(value_float=float(x)), like)


def _const_d(x):
    return op.Constant(value=onnx.helper.make_tensor("c", DOUBLE, [], [float(x)]))


def _ints(*v):
    return op.Constant(value_ints=list(v))


def _significance_of(probs, real, exclude_self: bool):
    # SPEC 1.1: sum over heads and real query rows, leaving out the diagonal. Heads are summed
    # first (one pass over [B, H, n, n]); padded query rows (finite probabilities) and, for
    # exclude_self, the diagonal are then zeroed in the [B, n, n] sum: skipped, not subtracted,
    # so a non-finite diagonal cannot make its column inf - inf = NaN.
    s = op.ReduceSum(op.Cast(probs, to=FLOAT), _ints(1), keepdims=0)  # [B, n, n]
    s = op.Where(op.Unsqueeze(real, _ints(2)), s, _const_f(0.0, s))
    if exclude_self:
        n = op.Shape(real, start=1, end=2)
        diagonal = op.Cast(op.EyeLike(op.ConstantOfShape(op.Concat(n, n, axis=0))), to=BOOL)  # [n, n]
        s = op.Where(diagonal, _const_f(0.0, s), s)
    sig = op.ReduceSum(s, _ints(1), keepdims=0)  # [B, n]
    return op.Where(real, sig, _const_f(float("-inf"), sig))


def _attention_core(q, k, v, mask, need_significance: bool, exclude_self: bool, want_lse: bool = False):
    real = op.Cast(mask, to=BOOL)
    d = q.shape[3] if q.shape is not None and isinstance(q.shape[3], int) else None
    if d is not None:
        scale = _const_f(d ** -0.5, q)
    else:
        scale = op.CastLike(op.Reciprocal(op.Sqrt(op.Cast(op.Shape(q, start=3, end=4), to=FLOAT))), q)
    logits = op.MatMul(op.Mul(q, scale), op.Transpose(k, perm=[0, 1, 3, 2]))  # scaling q: fewer elements
    logits = op.Where(op.Unsqueeze(real, _ints(1, 2)), logits, _const_f(float("-inf"), logits))
    probs = op.Softmax(logits, axis=-1)
    out = op.MatMul(probs, v)
    if need_significance:
        sig = _significance_of(probs, real, exclude_self)
    else:
        sig = op.Cast(op.ConstantOfShape(_ints(0)), to=FLOAT)
    if want_lse:
        return out, sig, op.Cast(op.ReduceLogSumExp(logits, _ints(-1), keepdims=0), to=FLOAT)
    return out, sig


def attention(q, k, v, mask, dropout_p: float = 0.0, need_significance: bool = True, exclude_self: bool = True):
    """power_bert::attention (eval: no dropout)."""
    return _attention_core(q, k, v, mask, need_significance, exclude_self)


def attention_forward(q, k, v, mask, dropout_p: float, need_significance: bool, exclude_self: bool, seed):
    """power_bert::_attention_forward, the core the public attention runs (eval: no dropout)."""
    return _attention_core(q, k, v, mask, need_significance, exclude_self, want_lse=True)


def significance(attn, mask, exclude_self: bool = True):
    """power_bert::significance."""
    return _significance_of(attn, op.Cast(mask, to=BOOL), exclude_self)


def _ranking_keys(scores, mask):
    """Float64 keys whose descending order is the reference's ranking with position 0 first
    (extract keeps it): +inf at position 0, then real numbers, a real -inf as -1e300 (below
    every float32), a real NaN as -2e300, padding -inf. ONNX TopK breaks ties toward the lower
    index, as the rule does."""
    real = op.Cast(mask, to=BOOL)
    s = op.Cast(op.Cast(scores, to=FLOAT), to=DOUBLE)
    s = op.Where(op.IsInf(s, detect_positive=0, detect_negative=1), _const_d(-1e300), s)
    s = op.Where(op.IsNaN(s), _const_d(-2e300), s)
    s = op.Where(real, s, _const_d(float("-inf")))
    n = op.Shape(scores, start=1, end=2)
    pos = op.Range(op.Constant(value_int=0), op.Squeeze(n), op.Constant(value_int=1))
    return op.Where(op.Equal(pos, op.Constant(value_int=0)), _const_d(float("inf")), s)


def _gather_rows(hidden, mask, index, kept):
    shape = op.Concat(op.Shape(index), op.Shape(hidden, start=2, end=3), axis=0)
    out = op.GatherElements(hidden, op.Expand(op.Unsqueeze(index, _ints(2)), shape), axis=1)
    out_mask = op.GatherElements(mask, index, axis=1)
    if kept is not None:
        out_mask = op.Where(kept, out_mask, op.CastLike(op.Constant(value_int=0), out_mask))
    return out, index, out_mask


def extract_scored(hidden, scores, mask, k, row_k=None):
    """power_bert::extract_scored: SPEC 1.2 selection with ONNX TopK, then the gather. ``k`` is
    an int or, for a symbolic width, an int64 scalar tensor."""
    n = op.Shape(scores, start=1, end=2)
    kk = op.Constant(value_ints=[int(k)]) if isinstance(k, int) else op.Reshape(op.Cast(k, to=INT64), _ints(1))
    _, ranked = op.TopK(_ranking_keys(scores, mask), kk, axis=-1, largest=1, sorted=1)  # positions by rank
    if row_k is None:
        index, _ = op.TopK(ranked, kk, axis=-1, largest=0, sorted=1)  # ascending positions
        return _gather_rows(hidden, mask, index, None)
    # Per-row k: slots at or beyond row_k[b] (by rank) sort after the kept ones (offset N).
    slots = op.Range(op.Constant(value_int=0), op.Squeeze(kk), op.Constant(value_int=1))
    dropped = op.GreaterOrEqual(op.Unsqueeze(slots, _ints(0)), op.Unsqueeze(row_k, _ints(1)))
    keyed = op.Add(ranked, op.Mul(op.Cast(dropped, to=INT64), n))
    index, _ = op.TopK(keyed, kk, axis=-1, largest=0, sorted=1)
    index = op.Mod(index, n)
    kept = op.Less(op.Unsqueeze(slots, _ints(0)), op.Unsqueeze(row_k, _ints(1)))
    return _gather_rows(hidden, mask, index, kept)


def extract(hidden, attn, mask, k, exclude_self: bool = True, row_k=None):
    """power_bert::extract: significance, then :func:`extract_scored`."""
    return extract_scored(hidden, significance(attn, mask, exclude_self), mask, k, row_k)


def onnx_translation_table() -> dict:
    """{op overload: onnxscript function} for ``torch.onnx.export(custom_translation_table=...)``."""
    ops = torch.ops.power_bert
    return {
        ops.significance.default: significance,
        ops.extract_scored.default: extract_scored,
        ops.extract.default: extract,
        ops.attention.default: attention,
        ops._attention_forward.default: attention_forward,
    }
