"""Argument checks of the fake (meta) kernels, the Python kernels (Triton, the reference) and the
Python wrappers: the Python side of ``csrc/checks.h`` (the C++ kernels' checks), with the same
messages, so users get the same error whichever path they take. Each op's shape, dtype and device
checks are :data:`OP_ARGS`; they work on fake tensors. :func:`check_cls_real` and
:func:`check_rows_have_a_real_key` read data (the wrappers run them) and are skipped while
tracing or capturing a CUDA graph.
"""
from __future__ import annotations

import operator

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

SUPPORTED_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# What the Triton attention kernels take (power_bert_ops.triton.attention_triton); here, free of
# triton, so the backend decision (power_bert_ops._backend) can ask without importing it.
TRITON_ATTENTION_HEAD_SIZES = (32, 64, 128)
TRITON_ATTENTION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


LEFT_PADDED = ("attention_mask marks position 0 of a row as padding (a left-padded or all-padding row); PoWER-BERT "
               "keeps position 0 as [CLS] in every layer, so pad on the right (tokenizer.padding_side = 'right')")
"""Why a PoWER-BERT model (:mod:`power_bert_ops.modeling`) or an exported one refuses such a mask."""


def _fail(op: str, msg: str):
    raise ValueError(f"power_bert.{op}: {msg}")


def check_tensor(t, op: str, name: str) -> None:
    """``t`` must be a torch.Tensor (a NumPy array or a list is refused, naming the argument,
    instead of failing later on a missing ``.dim``)."""
    if not isinstance(t, torch.Tensor):
        hint = " (convert it with torch.as_tensor)" if hasattr(t, "__array__") or isinstance(t, (list, tuple)) else ""
        raise TypeError(f"power_bert.{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}{hint}")


def check_bool(value, op: str, name: str) -> bool:
    """``value`` if it is a bool; a TypeError naming the argument otherwise (``None`` or ``0``
    must not silently mean False)."""
    if not isinstance(value, bool):
        raise TypeError(f"power_bert.{op}: `{name}` must be a bool (True or False), got {value!r}")
    return value


def available_memory(device: torch.device) -> int | None:
    """Bytes a new tensor on ``device`` can take: free memory on a CUDA device, MemAvailable
    (else the physical memory) on the CPU; None when unknown (no check)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_copy_fits(t: torch.Tensor, op: str, name: str) -> None:
    """Kernels read ``t`` contiguous: a strided ``t`` (e.g. a stride-0 ``expand``) is copied first.
    Refuses, before copying, a ``t`` whose contiguous copy would not fit in the device's
    available memory (:func:`available_memory`), instead of an allocator error after the work."""
    if t.is_contiguous() or _no_data(t):
        return
    need = t.numel() * t.element_size()
    try:
        held = t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        held = 0
    if need <= held:  # a transposed or sliced view: its copy is no larger than the memory it holds
        return
    free = available_memory(t.device)
    if free is not None and need > free:
        _fail(op, f"`{name}` of shape {list(t.shape)} is not contiguous (strides {list(t.stride())}, e.g. "
                  f"expanded), and its contiguous copy would take {need / 2**30:.4g} GiB, more than the "
                  f"{free / 2**30:.4g} GiB available on {t.device}; pass a smaller or materialised tensor")


def check_floating(t: torch.Tensor, op: str, name: str) -> None:
    check_tensor(t, op, name)
    if t.dtype not in SUPPORTED_FLOATS:
        raise TypeError(f"power_bert.{op}: `{name}` must be float32, float16, bfloat16 or float64, got {t.dtype}")


def _check_shape(t, op: str, name: str, want: list, stated: str) -> None:
    """``t`` is a tensor of shape ``want`` (None: any size in that dimension); ``stated`` is the
    shape as the message gives it."""
    check_tensor(t, op, name)
    if t.dim() != len(want) or any(w is not None and size != w for size, w in zip(t.shape, want)):
        _fail(op, f"`{name}` must be {stated}, got shape {list(t.shape)}")


def check_hidden(hidden: torch.Tensor, op: str) -> None:
    _check_shape(hidden, op, "hidden", [None, None, None], "[B, N, D]")
    check_floating(hidden, op, "hidden")


def check_mask(mask: torch.Tensor, B: int, N: int, op: str) -> None:
    _check_shape(mask, op, "mask", [B, N], f"[B, N] = [{B}, {N}]")
    if mask.is_complex():
        raise TypeError(f"power_bert.{op}: `mask` must be bool, integer or floating, got {mask.dtype}")


def check_attn(attn: torch.Tensor, B: int, N: int, op: str) -> None:
    _check_shape(attn, op, "attn", [B, None, N, N], f"[B, H, N, N] with B = {B} and N = {N}")
    check_floating(attn, op, "attn")


def check_scores(scores: torch.Tensor, B: int, N: int, op: str) -> None:
    _check_shape(scores, op, "scores", [B, N], f"[B, N] = [{B}, {N}]")
    check_floating(scores, op, "scores")


def check_retention(retention: torch.Tensor, N: int, op: str) -> None:
    _check_shape(retention, op, "retention", [N], f"[N] = [{N}]")
    check_floating(retention, op, "retention")


def as_k(k, op: str) -> int:
    """``k`` as an int: Python and NumPy integers (anything with ``__index__``) and SymInts;
    bools and floats are refused."""
    if isinstance(k, torch.SymInt):
        return k
    if isinstance(k, bool) or isinstance(k, torch.Tensor) or not hasattr(type(k), "__index__"):
        raise TypeError(f"power_bert.{op}: `k` must be an int, got {type(k).__name__}")
    return operator.index(k)


def check_k(k: int, N: int, op: str) -> None:
    """1 <= k <= N. Symbolic k or N (torch.compile, torch.export) fail only where the bound is
    provably broken, adding no guard; the kernels check the values they run with."""
    if isinstance(k, bool) or not isinstance(k, (int, torch.SymInt)):
        raise TypeError(f"power_bert.{op}: `k` must be an int, got {type(k).__name__}")
    if isinstance(k, torch.SymInt) or isinstance(N, torch.SymInt):
        bad = statically_known_true(k < 1) or statically_known_true(k > N)
    else:
        bad = not 1 <= k <= N
    if bad:
        _fail(op, f"`k` must satisfy 1 <= k <= N = {N}, got k = {k}")


def check_row_k(row_k, hidden: torch.Tensor, op: str, name: str = "row_k") -> None:
    """A per-row k: int64 [B] on hidden's device (None passes). Its values: :func:`check_row_k_values`."""
    if row_k is None:
        return
    if not isinstance(row_k, torch.Tensor):
        raise TypeError(f"power_bert.{op}: `{name}` must be an int64 tensor [B], got {type(row_k).__name__}")
    B = hidden.shape[0]
    if row_k.dim() != 1 or row_k.shape[0] != B:
        _fail(op, f"`{name}` must be [B] = [{B}], got shape {list(row_k.shape)}")
    if row_k.dtype != torch.int64:
        raise TypeError(f"power_bert.{op}: `{name}` must be int64, got {row_k.dtype}")
    if row_k.device != hidden.device:
        _fail(op, f"`{name}` is on {row_k.device} but `hidden` is on {hidden.device}; all tensors must be on one device")


def check_row_k_values(row_k: torch.Tensor, k: int, op: str, name: str = "row_k") -> None:
    """Every 1 <= row_k[b] <= k. Reads data: eager only, skipped where :func:`_no_data`."""
    if _no_data(row_k):
        return
    bad = ((row_k < 1) | (row_k > k)).nonzero()
    if bad.numel():
        b = int(bad[0, 0])
        _fail(op, f"`{name}` must satisfy 1 <= {name}[b] <= {k}, got {name}[{b}] = {int(row_k[b])}")


def check_n(n: int, op: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, torch.SymInt)):
        raise TypeError(f"power_bert.{op}: `n` must be an int, got {type(n).__name__}")


def check_same_device(op: str, **tensors: torch.Tensor) -> None:
    names = list(tensors)
    ref = names[0]
    for name in names[1:]:
        if tensors[name].device != tensors[ref].device:
            _fail(op, f"`{name}` is on {tensors[name].device} but `{ref}` is on {tensors[ref].device}; "
                      "all tensors must be on one device")


def _tracing() -> bool:
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _no_data(mask: torch.Tensor) -> bool:
    """True where the mask's values cannot be read: empty, meta or fake tensors, under
    torch.compile and during CUDA-graph capture."""
    return (mask.shape[0] == 0 or mask.device.type == "meta" or _tracing()
            or isinstance(mask, torch._subclasses.FakeTensor))


def check_cls_real(mask: torch.Tensor, op: str) -> None:
    """Every row's position 0 ([CLS]) must be real. Reads data: eager only, skipped where
    :func:`_no_data`."""
    if mask.dim() != 2 or mask.shape[1] == 0 or _no_data(mask):  # a malformed mask: the kernels' shape checks
        return
    if not bool((mask[:, 0] != 0).all()):
        _fail(op, "`mask` has a row whose position 0 ([CLS]) is padding (an all-padding or left-padded row); "
                  "PoWER-BERT always keeps position 0, so it must be a real token")


def _check_selection_args(hidden, name: str, source, check_source, mask, k, op: str) -> None:
    """extract's and extract_scored's arguments: ``source`` is ``attn`` or ``scores``."""
    check_hidden(hidden, op)
    B, N = hidden.shape[0], hidden.shape[1]
    check_source(source, B, N, op)
    check_mask(mask, B, N, op)
    check_k(k, N, op)
    check_same_device(op, hidden=hidden, **{name: source}, mask=mask)


def check_extract_args(hidden, attn, mask, k, op: str = "extract") -> None:
    _check_selection_args(hidden, "attn", attn, check_attn, mask, k, op)


def check_extract_scored_args(hidden, scores, mask, k, op: str = "extract_scored") -> None:
    _check_selection_args(hidden, "scores", scores, check_scores, mask, k, op)


def check_extract_backward_args(grad_out, index, n, op: str = "extract_backward") -> None:
    check_tensor(grad_out, op, "grad_out")
    check_tensor(index, op, "index")
    _check_shape(grad_out, op, "grad_out", [None, None, None], "[B, k, D]")
    check_floating(grad_out, op, "grad_out")
    B, k = grad_out.shape[0], grad_out.shape[1]
    _check_shape(index, op, "index", [B, k], f"[B, k] = [{B}, {k}]")
    if index.dtype != torch.int64:
        raise TypeError(f"power_bert.{op}: `index` must be int64, got {index.dtype}")
    check_n(n, op)
    check_k(k, n, op)
    check_same_device(op, grad_out=grad_out, index=index)


def check_soft_extract_args(hidden, scores, mask, retention, op: str = "soft_extract") -> None:
    check_hidden(hidden, op)
    B, N = hidden.shape[0], hidden.shape[1]
    check_scores(scores, B, N, op)
    check_mask(mask, B, N, op)
    check_retention(retention, N, op)
    check_same_device(op, hidden=hidden, scores=scores, mask=mask, retention=retention)


def check_significance_args(attn, mask, op: str = "significance") -> None:
    check_tensor(attn, op, "attn")
    if attn.dim() != 4 or attn.shape[2] != attn.shape[3]:
        _fail(op, f"`attn` must be [B, H, N, N], got shape {list(attn.shape)}")
    check_floating(attn, op, "attn")
    check_mask(mask, attn.shape[0], attn.shape[2], op)
    check_same_device(op, attn=attn, mask=mask)


def check_attention_args(q, k, v, mask, dropout_p, op: str = "attention") -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(t, op, name)
    if q.dim() != 4:
        _fail(op, f"`q` must be [B, H, N, d], got shape {list(q.shape)}")
    if k.shape != q.shape:
        _fail(op, f"`k` must have q's shape {list(q.shape)}, got {list(k.shape)}")
    if v.shape != q.shape:
        _fail(op, f"`v` must have q's shape {list(q.shape)}, got {list(v.shape)}")
    check_floating(q, op, "q")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"power_bert.{op}: `q`, `k` and `v` must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    check_mask(mask, q.shape[0], q.shape[2], op)
    if not 0.0 <= float(dropout_p) < 1.0:
        _fail(op, f"`dropout_p` must be in [0, 1), got {dropout_p}")
    check_same_device(op, q=q, k=k, v=v, mask=mask)


def check_triton_attention(q, op: str = "attention") -> None:
    """What the Triton attention kernels take beyond :func:`check_attention_args`."""
    if q.dtype not in TRITON_ATTENTION_DTYPES:
        raise TypeError(f"power_bert.{op}: `q` must be float16, bfloat16 or float32 for the Triton kernel, "
                        f"got {q.dtype}")
    d = q.shape[-1]
    if d not in TRITON_ATTENTION_HEAD_SIZES:
        _fail(op, f"`q` head size d = {d} is not supported by the Triton kernel "
                  f"(supported: {', '.join(map(str, TRITON_ATTENTION_HEAD_SIZES))})")


def check_seed(seed, q, op: str = "attention") -> None:
    """The dropout seed of ``_attention_forward``: int64 [1] on q's device."""
    if seed.numel() != 1 or seed.dtype != torch.int64:
        raise TypeError(f"power_bert.{op}: `seed` must be an int64 tensor of shape [1], "
                        f"got {seed.dtype} of shape {list(seed.shape)}")
    check_same_device(op, q=q, seed=seed)


def check_rows_have_a_real_key(mask: torch.Tensor, op: str) -> None:
    """Eager only (reads data, skipped where :func:`_no_data`): every row needs at least one
    real token."""
    if mask.dim() != 2 or _no_data(mask):  # a malformed mask: the kernels' shape checks
        return
    if not bool((mask != 0).any(dim=1).all()):
        _fail(op, "`mask` has a row with no real token (all padding); attention over it is undefined")


# ---------------------------------------------------------------------------------------------
# Each op's shape, dtype and device checks, taking the op's own arguments: run by its fake kernel,
# by its Python kernels (Triton, the reference) and before a direct call of the reference. The
# C++ kernels run the same checks (csrc/checks.h).
# ---------------------------------------------------------------------------------------------
def _extract_op_args(hidden, attn, mask, k, exclude_self=True, row_k=None):
    check_extract_args(hidden, attn, mask, k)
    check_row_k(row_k, hidden, "extract")


def _extract_scored_op_args(hidden, scores, mask, k, row_k=None):
    check_extract_scored_args(hidden, scores, mask, k)
    check_row_k(row_k, hidden, "extract_scored")


OP_ARGS = {
    "significance": lambda attn, mask, exclude_self=True: check_significance_args(attn, mask),
    "extract": _extract_op_args,
    "extract_scored": _extract_scored_op_args,
    "extract_backward": check_extract_backward_args,
    "soft_extract": check_soft_extract_args,
    "soft_extract_backward": lambda grad_out, hidden, scores, mask, retention: check_soft_extract_args(
        hidden, scores, mask, retention, op="soft_extract_backward"),
    "_attention_forward": lambda q, k, v, mask, dropout_p, need_significance, exclude_self, seed=None:
        check_attention_args(q, k, v, mask, dropout_p),
}
