"""Flash-style attention that also returns PoWER-BERT significance (Triton).

Definition: :func:`power_bert_ops.reference.attention`. Shapes: batch ``B``, heads ``H``,
sequence ``N``, head size ``d`` (32, 64 or 128).

* ``q, k, v`` [B, H, N, d] (scaled_dot_product_attention's layout), float16 / bfloat16 / float32,
  any strides with a unit last stride (the forward reads them in place; the backward works on
  contiguous copies); ``out`` [B, H, N, d] is a view of [B, N, H, d] memory;
  ``mask`` [B, N] key padding (nonzero = real token, any dtype).
* ``P = softmax(q k^T / sqrt(d) + bias)`` with ``bias = -inf`` at padded keys;
  ``out = dropout(P) @ v`` [B, H, N, d] in q's dtype.
* ``significance`` [B, N] float32:
  ``sum_h sum_{q real, q != key when exclude_self} P[b, h, q, key]`` (the diagonal skipped, not
  subtracted), ``-inf`` at padded keys, from the un-dropped ``P``.

The N x N probabilities are never stored:

* forward (1-D grid ``cdiv(N, BLOCK_M) * B*H``, see ``_split_pid``): online softmax over key
  blocks, writes ``out`` and the natural-log log-sum-exp ``lse`` [B, H, N] float32 of the scaled
  logits;
* significance (1-D grid ``cdiv(N, BLOCK_N) * B*H``): recomputes ``P = exp(q k^T * scale - lse)``
  for one key block against every query block and writes its column sums over real query rows
  (diagonal left out when ``exclude_self``; ``-inf`` at padded keys) into a per-head buffer
  [B, H, N] float32; the sum over heads is a plain ``torch.sum`` in fixed order. Extra memory
  O(B*H*N), no atomics, deterministic;
* backward: flash-attention-2 (``Delta = rowsum(dO * O)``; dK/dV over key blocks looping over
  query blocks; dQ over query blocks looping over key blocks). No atomics, deterministic.

Dropout: element ``(b, h, qrow, kcol)`` is kept when the Philox draw with key ``seed`` and counter
``(kcol, qrow, b*H + h, 0)`` (all uint32, so unique for any size) maps to ``u >= dropout_p``.
``seed`` is an int64 tensor [1] on q's device, read inside the kernels (no host sync). Forward
and backward regenerate the identical mask; :func:`dropout_keep_mask` materialises it for tests.
Rows whose keys are all padding get ``out = 0`` and ``lse = +inf`` (the reference gives NaN).

Padding costs nothing past each row's last real token: every kernel reads ``KV_END`` [B] int32
(1 + the position of row b's last real token, 0 for a row of padding) and stops its key loop
there (forward, dQ), or its query loop too (significance: padded query rows are not summed), and
a key block wholly past it (significance, dK/dV) writes zeros without a loop. Holes in the mask
before that point are masked inside the tiles.

:func:`forward` and :func:`backward` are the CUDA kernels of ``power_bert::_attention_forward`` and
``_attention_backward`` (registered by ``power_bert_ops._backend``; schema, fake kernel and
autograd: ``csrc/power_bert.cpp``, ``power_bert_ops/ops.py``). Called directly they run on CUDA
tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .. import _checks
from . import _launch
from ._launch import interpreted
from .attention_tiles import (  # noqa: F401  (jit functions the kernels call)
    _head_base, _head_program, _keep, _load_tile, _mm, _real_positions, _row_stats, _split_pid,
)

__all__ = ["forward", "backward", "dropout_keep_mask", "SUPPORTED_HEAD_SIZES"]

SUPPORTED_HEAD_SIZES = _checks.TRITON_ATTENTION_HEAD_SIZES


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, REAL, KV_END, SEED, OUT, LSE,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
    H, N, scale, dropout_p,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """Q, K, V, OUT [B, H, N, d] with strides (s*b, s*h, s*n, 1); REAL [B, N] int8; KV_END [B]
    int32; SEED int64 [1]; LSE [B, H, N] f32 contiguous. 1-D grid over (b*H + h, query block),
    query block fastest."""
    _, rows, bh, b, h = _head_program(N, H, BLOCK_M)
    q_base = _head_base(b, h, sqb, sqh)
    k_base = _head_base(b, h, skb, skh)
    v_base = _head_base(b, h, svb, svh)
    dcol = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    q = _load_tile(Q, q_base, rows, sqn, dcol, row_ok)
    qk_scale = scale * 1.4426950408889634  # work in base 2

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if HAS_DROPOUT:
        seed = tl.load(SEED)
    kv_end = tl.load(KV_END + b)
    for start_n in range(0, kv_end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_in, col_ok = _real_positions(REAL, b, N, cols)
        k = _load_tile(K, k_base, cols, skn, dcol, col_in)
        s = _mm(q, tl.trans(k), PRECISION, UPCAST) * qk_scale
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        if HAS_DROPOUT:
            p = tl.where(_keep(seed, rows[:, None], cols[None, :], bh, dropout_p), p, 0.0)
        v = _load_tile(V, v_base, cols, svn, dcol, col_in)
        acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    if HAS_DROPOUT:
        acc = acc * (1.0 / (1.0 - dropout_p))
    out = acc / l_safe[:, None]
    o_off = b.to(tl.int64) * sob + h.to(tl.int64) * soh + rows[:, None].to(tl.int64) * son + dcol[None, :]
    tl.store(OUT + o_off, out.to(OUT.dtype.element_ty), mask=row_ok[:, None])
    lse = tl.where(empty, float("inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
    tl.store(LSE + bh.to(tl.int64) * N + rows, lse, mask=row_ok)


@triton.jit
def _significance_kernel(
    Q, K, REAL, KV_END, LSE, PART,
    sqb, sqh, sqn, skb, skh, skn,
    H, N, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    EXCLUDE_SELF: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """Per-head column sums of P over real query rows. Q, K [B, H, N, d] with strides
    (s*b, s*h, s*n, 1); REAL [B, N] int8;
    KV_END [B] int32; LSE [B, H, N] f32 -> PART [B, H, N] f32 (one key block of one head per
    program; zeros for a block past the row's last real token)."""
    n_start, cols, bh, b, h = _head_program(N, H, BLOCK_N)
    q_base = _head_base(b, h, sqb, sqh)
    k_base = _head_base(b, h, skb, skh)
    dcol = tl.arange(0, BLOCK_D)
    col_in = cols < N
    k = _load_tile(K, k_base, cols, skn, dcol, col_in)
    qk_scale = scale * 1.4426950408889634
    colsum = tl.zeros([BLOCK_N], tl.float32)
    kv_end = tl.load(KV_END + b)
    # real query rows end where real keys do; a key block past them has nothing to sum
    m_end = tl.where(n_start < kv_end, kv_end, 0)
    for start_m in range(0, m_end, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_in, row_ok = _real_positions(REAL, b, N, rows)
        q = _load_tile(Q, q_base, rows, sqn, dcol, row_in)
        lse2 = tl.load(LSE + bh.to(tl.int64) * N + rows, mask=row_in, other=0.0) * 1.4426950408889634
        # transposed tile [BLOCK_N keys, BLOCK_M queries]
        s = _mm(k, tl.trans(q), PRECISION, UPCAST) * qk_scale
        take = row_ok[None, :]
        if EXCLUDE_SELF:
            take = take & (rows[None, :] != cols[:, None])
        p = tl.where(take, tl.exp2(s - lse2[None, :]), 0.0)
        colsum += tl.sum(p, 1)
    # a padded key is -inf in every head, so in their sum
    _, key_real = _real_positions(REAL, b, N, cols)
    colsum = tl.where(key_real, colsum, float("-inf"))
    tl.store(PART + bh.to(tl.int64) * N + cols, colsum, mask=col_in)


@triton.jit
def _mask_kernel(MASK, REAL, KV_END, N, smb, smn, BLOCK: tl.constexpr):
    """MASK [B, N] (any dtype; strides smb, smn) -> REAL [B, N] int8 (1 at real tokens) and
    KV_END [B] int32 (1 + the position of row b's last real token, 0 for a row of padding). One
    program per row."""
    b = tl.program_id(0).to(tl.int64)
    end = tl.zeros([BLOCK], tl.int32)
    for start in range(0, N, BLOCK):
        pos = start + tl.arange(0, BLOCK)
        inside = pos < N
        real = tl.load(MASK + b * smb + pos.to(tl.int64) * smn, mask=inside, other=0) != 0
        tl.store(REAL + b * N + pos, real.to(tl.int8), mask=inside)
        end = tl.maximum(end, tl.where(real, pos + 1, 0))
    tl.store(KV_END + b, tl.max(end, 0))


@triton.jit
def _bwd_delta_kernel(OUT, DO, DELTA, N, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """DELTA[b, h, i] = sum_d dO * O. OUT, DO [B, H, N, d] -> DELTA [B, H, N] f32."""
    pid_m, bh = _split_pid(N, BLOCK_M)
    base = bh.to(tl.int64) * N * BLOCK_D
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dcol = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    off = base + rows[:, None] * BLOCK_D + dcol[None, :]
    o = tl.load(OUT + off, mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + off, mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + bh.to(tl.int64) * N + rows, tl.sum(o * do, 1), mask=row_ok)


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, REAL, KV_END, LSE, DELTA, SEED, DK, DV,
    H, N, scale, dropout_p,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """dK, dV for one key block. Q, K, V, DO, DK, DV [B, H, N, d]; REAL [B, N] int8; KV_END [B]
    int32; LSE, DELTA [B, H, N] f32; SEED int64 [1]. Works on transposed tiles [BLOCK_N, BLOCK_M];
    a key block past the row's last real token gets zeros (its P is zero for every query)."""
    pid_n, bh = _split_pid(N, BLOCK_N)
    b = bh // H
    base = bh.to(tl.int64) * N * BLOCK_D
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dcol = tl.arange(0, BLOCK_D)
    col_in, col_ok = _real_positions(REAL, b, N, cols)
    kv_off = base + cols[:, None] * BLOCK_D + dcol[None, :]
    k = tl.load(K + kv_off, mask=col_in[:, None], other=0.0)
    v = tl.load(V + kv_off, mask=col_in[:, None], other=0.0)
    qk_scale = scale * 1.4426950408889634
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    if HAS_DROPOUT:
        seed = tl.load(SEED)
        inv_keep = 1.0 / (1.0 - dropout_p)
    # every query row (padded ones too) attends to this block's real keys
    m_end = tl.where(pid_n * BLOCK_N < tl.load(KV_END + b), N, 0)
    for start_m in range(0, m_end, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_in = rows < N
        q_off = base + rows[:, None] * BLOCK_D + dcol[None, :]
        q = tl.load(Q + q_off, mask=row_in[:, None], other=0.0)
        do = tl.load(DO + q_off, mask=row_in[:, None], other=0.0)
        lse2, delta = _row_stats(LSE, DELTA, bh, N, rows, row_in)
        s = _mm(k, tl.trans(q), PRECISION, UPCAST) * qk_scale
        p = tl.where(col_ok[:, None] & row_in[None, :], tl.exp2(s - lse2[None, :]), 0.0)
        dp = _mm(v, tl.trans(do), PRECISION, UPCAST)
        if HAS_DROPOUT:
            keep = _keep(seed, rows[None, :], cols[:, None], bh, dropout_p)
            p_drop = tl.where(keep, p * inv_keep, 0.0)
            dp = tl.where(keep, dp * inv_keep, 0.0)
        else:
            p_drop = p
        dv += _mm(p_drop.to(do.dtype), do, PRECISION, UPCAST)
        ds = p * (dp - delta[None, :])
        dk += _mm(ds.to(q.dtype), q, PRECISION, UPCAST)
    dk = dk * scale
    tl.store(DK + kv_off, dk.to(DK.dtype.element_ty), mask=col_in[:, None])
    tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=col_in[:, None])


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, DO, REAL, KV_END, LSE, DELTA, SEED, DQ,
    H, N, scale, dropout_p,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """dQ for one query block. Q, K, V, DO, DQ [B, H, N, d]; REAL [B, N] int8; KV_END [B] int32;
    LSE, DELTA [B, H, N] f32; SEED int64 [1]."""
    pid_m, bh = _split_pid(N, BLOCK_M)
    b = bh // H
    base = bh.to(tl.int64) * N * BLOCK_D
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dcol = tl.arange(0, BLOCK_D)
    row_in = rows < N
    q_off = base + rows[:, None] * BLOCK_D + dcol[None, :]
    q = tl.load(Q + q_off, mask=row_in[:, None], other=0.0)
    do = tl.load(DO + q_off, mask=row_in[:, None], other=0.0)
    lse2, delta = _row_stats(LSE, DELTA, bh, N, rows, row_in)
    qk_scale = scale * 1.4426950408889634
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if HAS_DROPOUT:
        seed = tl.load(SEED)
        inv_keep = 1.0 / (1.0 - dropout_p)
    for start_n in range(0, tl.load(KV_END + b), BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_in, col_ok = _real_positions(REAL, b, N, cols)
        kv_off = base + cols[:, None] * BLOCK_D + dcol[None, :]
        k = tl.load(K + kv_off, mask=col_in[:, None], other=0.0)
        v = tl.load(V + kv_off, mask=col_in[:, None], other=0.0)
        s = _mm(q, tl.trans(k), PRECISION, UPCAST) * qk_scale
        p = tl.where(col_ok[None, :] & row_in[:, None], tl.exp2(s - lse2[:, None]), 0.0)
        dp = _mm(do, tl.trans(v), PRECISION, UPCAST)
        if HAS_DROPOUT:
            keep = _keep(seed, rows[:, None], cols[None, :], bh, dropout_p)
            dp = tl.where(keep, dp * inv_keep, 0.0)
        ds = p * (dp - delta[:, None])
        dq += _mm(ds.to(k.dtype), k, PRECISION, UPCAST)
    dq = dq * scale
    tl.store(DQ + q_off, dq.to(DQ.dtype.element_ty), mask=row_in[:, None])


@triton.jit
def _dropout_mask_kernel(SEED, KEEP, H, N, dropout_p, BLOCK: tl.constexpr):
    """Test helper: KEEP [B, H, N, N] int8, the mask the attention kernels use for SEED int64 [1].
    Grid (cdiv(N, BLOCK) * B*H, cdiv(N, BLOCK))."""
    pid_m, bh = _split_pid(N, BLOCK)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK + tl.arange(0, BLOCK)
    cols = pid_n * BLOCK + tl.arange(0, BLOCK)
    keep = _keep(tl.load(SEED), rows[:, None], cols[None, :], bh, dropout_p)
    ok = (rows[:, None] < N) & (cols[None, :] < N)
    off = (bh.to(tl.int64) * N + rows[:, None]) * N + cols[None, :]
    tl.store(KEEP + off, keep.to(tl.int8), mask=ok)


# ---------------------------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------------------------


# GPU configs were checked by compiling every kernel for sm_90 (triton 3.6 and 3.9, no GPU
# needed): none spills registers and all fit H100 shared memory. float32 ("ieee") tl.dot runs on
# FMA units and keeps whole operand tiles in registers: larger float32 tiles spilled kilobytes
# per thread. Philox dropout adds ~40 live registers: with 4 warps the 128 x 64 forward tile
# spilled, hence 8 warps (and a 64 x 32 tile in the d = 128 backward) when dropout is on.


def _fwd_config(dtype: torch.dtype, d: int, device: torch.device, dropout: bool = False):
    """-> (BLOCK_M, BLOCK_N, num_warps, num_stages) for the forward (``dropout``: its dropout
    variant) and significance kernels."""
    if interpreted(device):
        return 16, 16, 1, 1
    if dtype == torch.float32:
        return (32, 32, 4, 2) if d <= 64 else (32, 32, 8, 2)
    if d <= 64:
        return 128, 64, 8 if dropout else 4, 3
    return 128, 64, 8, 2


def _bwd_config(dtype: torch.dtype, d: int, device: torch.device, dropout: bool = False):
    """-> (BLOCK_M, BLOCK_N, num_warps, num_stages) for the dK/dV and dQ kernels."""
    if interpreted(device):
        return 16, 16, 1, 1
    if dtype == torch.float32:
        if d <= 32:
            return 32, 32, 4, 2
        return (32, 32, 8, 2) if d <= 64 else (32, 32, 8, 1)
    if d <= 64:
        return 64, 64, 4, 2
    return (64, 32, 8, 1) if dropout else (64, 64, 8, 1)


def _precision(dtype: torch.dtype) -> str:
    # "ieee": float32 matmuls without TF32 rounding. 16-bit operands ignore the setting; they get
    # "tf32", tl.dot's default on NVIDIA, so their code path is exactly the stock one.
    return "ieee" if dtype == torch.float32 else "tf32"


def _upcast(dtype: torch.dtype, device: torch.device) -> bool:
    # Under TRITON_INTERPRET=1 (triton 3.9) tl.dot on bfloat16 returns garbage; float16 is fine.
    return dtype == torch.bfloat16 and _launch.INTERPRET_AT_IMPORT


def _real_and_end(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mask [B, N] -> (real [B, N] int8: 1 at real tokens, kv_end [B] int32: 1 + the position of
    each row's last real token, 0 for a row of padding). One launch (``_mask_kernel``), no host
    sync."""
    B, N = mask.shape
    real = _empty((B, N), mask, torch.int8)
    kv_end = _empty((B,), mask, torch.int32)
    if mask.dtype == torch.bool:
        mask = mask.view(torch.int8)
    block = 16 if interpreted(mask.device) else 256  # one size for every N (widths vary by layer and bucket)
    _launch.launcher(_mask_kernel)[(B,)](mask, real, kv_end, N, mask.stride(0), mask.stride(1), BLOCK=block)
    return real, kv_end


def _empty(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    return _launch.empty(shape, like.device, like.dtype if dtype is None else dtype)


# ---------------------------------------------------------------------------------------------
# Kernels of power_bert::_attention_forward and power_bert::_attention_backward
# ---------------------------------------------------------------------------------------------


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    dropout_p: float,
    need_significance: bool,
    exclude_self: bool,
    seed: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, N, d]; mask [B, N]; seed int64 [1] on q's device ->
    (out [B, H, N, d] q's dtype, significance float32 [B, N] (or [0] when not needed),
    lse float32 [B, H, N] natural-log log-sum-exp of the scaled logits)."""
    _checks.check_attention_args(q, k, v, mask, dropout_p)
    _checks.check_triton_attention(q)
    _checks.check_seed(seed, q)
    B, H, N, d = q.shape
    # Read through their strides (the model's [B, N, H, d] projections viewed as [B, H, N, d]
    # need no copy); only a non-unit last stride is copied.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))

    # out lives in [B, N, H, d] memory, viewed as [B, H, N, d]: merging heads is a view
    out = _empty((B, N, H, d), q).transpose(1, 2)
    lse = _empty((B, H, N), q, torch.float32)
    sig = _empty((B, N) if need_significance else (0,), q, torch.float32)
    if B * H * N == 0:
        if need_significance:
            sig = torch.zeros((B, N), device=q.device, dtype=torch.float32)
            sig = sig.masked_fill(mask == 0, float("-inf"))
        return out, sig, lse

    real, kv_end = _real_and_end(mask)
    scale = 1.0 / math.sqrt(d)
    prec = _precision(q.dtype)
    upcast = _upcast(q.dtype, q.device)
    BM, BN, warps, stages = _fwd_config(q.dtype, d, q.device, dropout_p > 0.0)
    _launch.launcher(_attn_fwd_kernel)[(triton.cdiv(N, BM) * B * H,)](
        q, k, v, real, kv_end, seed, out, lse, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        *out.stride()[:3], H, N, scale, float(dropout_p),
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=d, HAS_DROPOUT=dropout_p > 0.0, PRECISION=prec, UPCAST=upcast,
        num_warps=warps, num_stages=stages,
    )
    if need_significance:
        part = _empty((B, H, N), q, torch.float32)
        BM, BN, warps, stages = _fwd_config(q.dtype, d, q.device)
        _launch.launcher(_significance_kernel)[(triton.cdiv(N, BN) * B * H,)](
            q, k, real, kv_end, lse, part, *q.stride()[:3], *k.stride()[:3], H, N, scale,
            BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=d, EXCLUDE_SELF=exclude_self, PRECISION=prec, UPCAST=upcast,
            num_warps=warps, num_stages=stages,
        )
        sig = part.sum(dim=1)
    return out, sig, lse


def backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    mask: torch.Tensor,
    dropout_p: float,
    seed: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_out, q, k, v, out [B, H, N, d]; lse [B, H, N] f32 (from the forward); mask [B, N];
    seed int64 [1] (the forward's) -> (grad_q, grad_k, grad_v) [B, H, N, d] in q's dtype."""
    B, H, N, d = q.shape
    grad_out, q, k, v, out = (t.contiguous() for t in (grad_out, q, k, v, out))
    lse = lse.contiguous()
    if grad_out.dtype != q.dtype:
        grad_out = grad_out.to(q.dtype)
    dq = _empty((B, H, N, d), q)
    dk = _empty((B, H, N, d), q)
    dv = _empty((B, H, N, d), q)
    if B * H * N == 0:
        return dq, dk, dv
    real, kv_end = _real_and_end(mask)
    scale = 1.0 / math.sqrt(d)
    prec = _precision(q.dtype)
    upcast = _upcast(q.dtype, q.device)
    has_drop = dropout_p > 0.0
    BM, BN, warps, stages = _bwd_config(q.dtype, d, q.device, has_drop)
    delta = _empty((B, H, N), q, torch.float32)
    _launch.launcher(_bwd_delta_kernel)[(triton.cdiv(N, BM) * B * H,)](
        out, grad_out, delta, N, BLOCK_M=BM, BLOCK_D=d, num_warps=4 if not interpreted(q.device) else 1,
    )
    _launch.launcher(_bwd_dkdv_kernel)[(triton.cdiv(N, BN) * B * H,)](
        q, k, v, grad_out, real, kv_end, lse, delta, seed, dk, dv, H, N, scale, float(dropout_p),
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=d, HAS_DROPOUT=has_drop, PRECISION=prec, UPCAST=upcast,
        num_warps=warps, num_stages=stages,
    )
    _launch.launcher(_bwd_dq_kernel)[(triton.cdiv(N, BM) * B * H,)](
        q, k, v, grad_out, real, kv_end, lse, delta, seed, dq, H, N, scale, float(dropout_p),
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=d, HAS_DROPOUT=has_drop, PRECISION=prec, UPCAST=upcast,
        num_warps=warps, num_stages=stages,
    )
    return dq, dk, dv


def dropout_keep_mask(seed: torch.Tensor, B: int, H: int, N: int, dropout_p: float) -> torch.Tensor:
    """The dropout mask the kernels use for ``seed`` (int64 [1]) -> bool [B, H, N, N] (True = keep).
    For tests: ``reference.attention(..., dropout_mask=dropout_keep_mask(...))`` replays a kernel."""
    keep = torch.empty((B, H, N, N), device=seed.device, dtype=torch.int8)
    if keep.numel():
        blk = 16
        _launch.launcher(_dropout_mask_kernel)[(triton.cdiv(N, blk) * B * H, triton.cdiv(N, blk))](
            seed, keep, H, N, float(dropout_p), BLOCK=blk)
    return keep.bool()
