"""PoWER-BERT fused extract (SPEC 1.2) in Triton.

Definition: :func:`power_bert_ops.reference.extract`. Shapes: batch ``B``, heads ``H``,
sequence ``N``, hidden ``D``, kept rows ``k``.

* ``hidden`` [B, N, D], ``attn`` [B, H, N, N] attention probabilities, ``mask`` [B, N] key
  padding (nonzero = real token, any dtype); float32 / float16 / bfloat16 / float64.
* significance ``sig[b, p] = sum_h sum_{q real, q != p when exclude_self} attn[b, h, q, p]``
  accumulated in float32 (float64 for float64 ``attn``), compared as float32. The diagonal is
  skipped, not subtracted, so a non-finite ``attn[b, h, p, p]`` cannot make ``inf - inf``.
* ranking (``csrc/selection_key.h``): position 0 first, then real tokens by descending score
  (NaN below every number, ``-0.0 == +0.0``), then padding; ties toward the lower position.
* ``index`` [B, k] int64: position 0 plus the k-1 best other positions, ascending;
  ``out[b, i] = hidden[b, index[b, i]]`` [B, k, D]; ``out_mask = mask.gather(1, index)``.

Kernels (every output element is written by exactly one program; no atomics; deterministic):

1. ``_colsum_kernel`` grid ``(B * S, cdiv(N, BLOCK_K))``: the ``H * N`` rows ``(h, q)`` of a
   batch are split into ``S`` chunks of ``CHUNK`` rows (``S`` depends on ``H``, ``N`` only, so a
   row's result does not depend on ``B``, and is large enough that ``B = 1`` still launches
   ~2048 programs). A program streams its chunk in ``[BLOCK_R, BLOCK_K]`` tiles (coalesced over
   keys; padded query rows, and the diagonal ``q == key`` when ``exclude_self``, are masked out
   of the load, costing no bandwidth), keeps a 2-D accumulator and writes one partial column sum
   ``part[s, b, key block]`` ([S, B, N]).
2. ``_keys_kernel`` grid ``(B, cdiv(N, BLOCK_P))``: reduces the S partials in order ``s = 0..S-1``,
   rounds to float32 and builds the ranking key of ``csrc/selection_key.h``,
   ``(float_order_bits(score) << 32) | (0xFFFFFFFF - p)`` (order bits 0 for padding, 1 for NaN;
   position 0 gets the largest key) -> ``keys`` [B, N], uint64 bits in an int64 buffer.
3. ``_rank_kernel`` grid ``(B, cdiv(N, BLOCK_I))``: ``rank[b, p] = #{q : key[q] > key[p]}`` by
   ``[BLOCK_I, BLOCK_J]`` compare tiles over all keys of the row (O(N^2) per row, parallel over
   position blocks so ``B = 1`` still spreads over many SMs) -> ``rank`` [B, N] int32, a permutation.
4. ``_compact_kernel`` grid ``(B, cdiv(N, BLOCK_P))``: selected = ``rank < k``; a position's slot
   is the number of selected positions before it (sum over earlier blocks + ``tl.cumsum`` in its
   block); writes ``index[b, slot] = p`` (exactly k writes per row).
5. ``_gather_kernel`` grid ``(cdiv(B * k, BLOCK_R), cdiv(D, BLOCK_D))``: row copy
   ``out[b, i, :] = hidden[b, index[b, i], :]``.

Backward (:func:`extract_backward`): ``_inverse_kernel`` grid ``(cdiv(B * k, BLOCK))`` writes
``inverse[b, index[b, i]] = i`` into an int32 [B, n] buffer preset to -1 (indices unique), then
``_scatter_kernel`` grid ``(cdiv(B * n, BLOCK_R), cdiv(D, BLOCK_D))`` writes every element of
``grad_hidden`` [B, n, D] once: ``grad_out[b, inverse[b, p]]`` or 0.

:func:`extract` and :func:`extract_backward` are kernels of the ops ``power_bert::extract`` and
``power_bert::extract_backward`` (registered for a device key by ``power_bert_ops._backend``; the
schema, fake kernel and autograd are the ops' own, in ``csrc/power_bert.cpp`` and
``power_bert_ops/ops.py``). Called directly they run on CUDA tensors, or on CPU tensors under
``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _checks
from ..reference import extract_out_mask
from . import _launch
from ._launch import interpreted

__all__ = ["extract", "extract_backward"]


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _colsum_kernel(
    ATTN,  # [B, H*N, N] contiguous, any float dtype
    REAL,  # [B, N] int8, 1 = real token
    PART,  # [S, B, N] float32 (float64 for float64 attn)
    B, N, R, S, CHUNK,  # R = H*N rows per batch; CHUNK rows per chunk (multiple of BLOCK_R)
    EXCLUDE_SELF: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """part[s, b, kk] = sum over rows r in chunk s with real query q = r % N (and q != kk when
    EXCLUDE_SELF) of attn[b, r, kk]."""
    pid = tl.program_id(0)
    b = pid // S
    s = pid % S
    kb = tl.program_id(1)
    ACC = PART.dtype.element_ty
    cols = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < N
    rr = tl.arange(0, BLOCK_R)
    base = ATTN + b.to(tl.int64) * R * N
    real_row = REAL + b.to(tl.int64) * N
    acc = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
    r_start = s * CHUNK
    r_end = tl.minimum(r_start + CHUNK, R)
    for r0 in range(r_start, r_end, BLOCK_R):
        rows = r0 + rr
        row_ok = rows < r_end
        q = rows % N
        real = tl.load(real_row + q, mask=row_ok, other=0) != 0
        ptrs = base + rows.to(tl.int64)[:, None] * N + cols[None, :]
        take = (row_ok & real)[:, None] & col_ok[None, :]
        if EXCLUDE_SELF:
            take = take & (q[:, None] != cols[None, :])
        tile = tl.load(ptrs, mask=take, other=0.0)
        acc += tile.to(ACC)
    total = tl.sum(acc, axis=0)
    tl.store(PART + (s.to(tl.int64) * B + b) * N + cols, total, mask=col_ok)


@triton.jit
def _keys_kernel(
    PART,  # [S, B, N] float32 / float64
    REAL,  # [B, N] int8
    KEYS,  # [B, N] int64 buffer, written as uint64 keys
    B, N, S,
    BLOCK_P: tl.constexpr,
):
    """keys[b, p]: the ranking key of ``csrc/selection_key.h`` (larger = ranked earlier), unique
    per row, as uint64 bits in the int64 buffer: bits 63..32 the order bits of the float32 score
    (0 padding, 1 NaN, else the order-preserving image of the float), bits 31..0 0xFFFFFFFF - p;
    position 0 gets the largest key."""
    b = tl.program_id(0)
    pos = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    ok = pos < N
    ACC = PART.dtype.element_ty
    acc = tl.zeros([BLOCK_P], dtype=ACC)
    for s in range(0, S):
        acc += tl.load(PART + (s * B + b).to(tl.int64) * N + pos, mask=ok, other=0.0)
    score = acc.to(tl.float32)
    score = tl.where(score == 0.0, 0.0, score)  # -0.0 -> +0.0
    bits = score.to(tl.uint32, bitcast=True)
    # float_order_bits: negative floats -> ~bits, non-negative -> bits | 0x80000000; NaN -> 1.
    hi = tl.where((bits & 0x80000000) != 0, ~bits, bits | 0x80000000)
    hi = tl.where(score != score, 1, hi)
    real = tl.load(REAL + b.to(tl.int64) * N + pos, mask=ok, other=0) != 0
    hi = tl.where(real, hi, 0)
    low = (4294967295 - pos.to(tl.int64)).to(tl.uint64)
    key = (hi.to(tl.uint64) << 32) | low
    key = tl.where(pos == 0, 18446744073709551615, key)  # cls_key()
    tl.store(KEYS.to(tl.pointer_type(tl.uint64)) + b.to(tl.int64) * N + pos, key, mask=ok)


@triton.jit
def _rank_kernel(
    KEYS,  # [B, N] int64 buffer holding uint64 keys
    RANK,  # [B, N] int32 out
    N,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """rank[b, p] = number of positions of row b whose key beats p's (0 = ranked first)."""
    b = tl.program_id(0)
    pi = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    ok_i = pi < N
    row = KEYS.to(tl.pointer_type(tl.uint64)) + b.to(tl.int64) * N  # uint64 keys (_keys_kernel)
    ki = tl.load(row + pi, mask=ok_i, other=0)
    cnt = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, N, BLOCK_J):
        pj = j0 + tl.arange(0, BLOCK_J)
        # Lanes past N get key 0: below every key of a position (its low bits are >= 1).
        kj = tl.load(row + pj, mask=pj < N, other=0)
        cnt += tl.sum((kj[None, :] > ki[:, None]).to(tl.int32), axis=1)
    tl.store(RANK + b.to(tl.int64) * N + pi, cnt, mask=ok_i)


@triton.jit
def _compact_kernel(
    RANK,  # [B, N] int32
    ROW_K,  # [B] int64 rows kept per example (read when HAS_ROW_K)
    INDEX,  # [B, k] int64 out
    N, k,
    HAS_ROW_K: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """index[b, slot(p)] = p for every selected p (rank < k): the kept ones (rank < row_k[b], or
    all) in slots 0.. ascending, the others after them, ascending."""
    b = tl.program_id(0)
    start = tl.program_id(1) * BLOCK_P
    row = RANK + b.to(tl.int64) * N
    if HAS_ROW_K:
        kept = tl.minimum(tl.maximum(tl.load(ROW_K + b).to(tl.int32), 1), k)
    else:
        kept = k
    lanes = tl.arange(0, BLOCK_P)
    before_kept = tl.zeros([BLOCK_P], dtype=tl.int32)
    before_rest = tl.zeros([BLOCK_P], dtype=tl.int32)
    for j0 in range(0, start, BLOCK_P):
        r = tl.load(row + j0 + lanes, mask=j0 + lanes < N, other=k)
        before_kept += (r < kept).to(tl.int32)
        before_rest += ((r >= kept) & (r < k)).to(tl.int32)
    pos = start + lanes
    ok = pos < N
    r = tl.load(row + pos, mask=ok, other=k)
    sel_kept = (r < kept) & ok
    sel_rest = (r >= kept) & (r < k) & ok
    f_kept = sel_kept.to(tl.int32)
    f_rest = sel_rest.to(tl.int32)
    slot_kept = tl.sum(before_kept, axis=0) + tl.cumsum(f_kept, axis=0) - f_kept
    slot_rest = kept + tl.sum(before_rest, axis=0) + tl.cumsum(f_rest, axis=0) - f_rest
    slot = tl.where(sel_kept, slot_kept, slot_rest)
    tl.store(INDEX + b.to(tl.int64) * k + slot, pos.to(tl.int64), mask=sel_kept | sel_rest)


@triton.jit
def _copy_rows(SRC, MAP, DST, SRC_ROWS, DST_ROWS, D, ROWS, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """The row copy of _gather_kernel and _scatter_kernel: dst[b, r, :] = src[b, map[b, r], :], or 0
    where map[b, r] < 0, for SRC [B, SRC_ROWS, D], MAP [B, DST_ROWS], DST [B, DST_ROWS, D] and
    ROWS = B * DST_ROWS; this program's block of rows and columns."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < ROWS
    rows64 = rows.to(tl.int64)
    i = tl.load(MAP + rows64, mask=row_ok, other=-1)
    src_row = (rows64 // DST_ROWS) * SRC_ROWS + i
    col_ok = (cols < D)[None, :]
    vals = tl.load(SRC + src_row[:, None] * D + cols[None, :], mask=(row_ok & (i >= 0))[:, None] & col_ok,
                   other=0.0)
    tl.store(DST + rows64[:, None] * D + cols[None, :], vals, mask=row_ok[:, None] & col_ok)


@triton.jit
def _gather_kernel(HIDDEN, INDEX, OUT, N, k, D, ROWS, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[b, i, :] = hidden[b, index[b, i], :]; HIDDEN [B, N, D] contiguous, INDEX [B, k] int64,
    OUT [B, k, D], ROWS = B * k."""
    _copy_rows(HIDDEN, INDEX, OUT, N, k, D, ROWS, BLOCK_R, BLOCK_D)


@triton.jit
def _inverse_kernel(
    INDEX,  # [B, k] int64
    INV,  # [B, n] int32, preset to -1
    n, k, TOTAL,  # TOTAL = B * k
    BLOCK: tl.constexpr,
):
    """inv[b, index[b, i]] = i (indices unique per row; out-of-range indices are ignored)."""
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = t < TOTAL
    t64 = t.to(tl.int64)
    p = tl.load(INDEX + t64, mask=ok, other=-1)
    valid = ok & (p >= 0) & (p < n)
    tl.store(INV + (t64 // k) * n + p, (t64 % k).to(tl.int32), mask=valid)


@triton.jit
def _scatter_kernel(GRAD_OUT, INV, GRAD_HIDDEN, n, k, D, ROWS, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad_hidden[b, p, :] = grad_out[b, inv[b, p], :], or 0 where inv[b, p] < 0; GRAD_OUT
    [B, k, D] contiguous, INV [B, n] int32, GRAD_HIDDEN [B, n, D], ROWS = B * n."""
    _copy_rows(GRAD_OUT, INV, GRAD_HIDDEN, k, n, D, ROWS, BLOCK_R, BLOCK_D)


# ---------------------------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------------------------


def _colsum_config(N: int, R: int, elem_bytes: int, device: torch.device):
    """-> (BLOCK_R, BLOCK_K, S, CHUNK, num_warps). S and CHUNK depend on H and N only."""
    if interpreted(device):
        # Small blocks so that the modest test shapes cross block and chunk boundaries.
        block_r, block_k, target, min_iters, warps = 16, 32, 16, 2, 1
    else:
        # H100 (bandwidth-bound): each tile row is 128 consecutive keys (256 B for 16-bit attn,
        # 512 B for float32), 64 / 32 / 16 rows per tile for 2 / 4 / 8-byte elements, so a
        # 4-warp program keeps 16 KB of loads in flight per iteration and a 2-D register
        # accumulator (no cross-thread reduction inside the loop). Chunks are sized so that one
        # batch row alone launches up to ~2048 programs (~15 per SM), each streaming at least
        # 4 tiles.
        block_k = min(triton.next_power_of_2(N), 128)
        block_r = {1: 64, 2: 64, 4: 32}.get(elem_bytes, 16)
        block_r = max(1, min(block_r, 8192 // block_k))
        target, min_iters, warps = 2048, 4, 4
    n_kb = triton.cdiv(N, block_k)
    max_s = max(1, triton.cdiv(R, block_r * min_iters))
    S = max(1, min(triton.cdiv(target, n_kb), max_s))
    chunk = triton.cdiv(triton.cdiv(max(R, 1), S), block_r) * block_r
    S = max(1, triton.cdiv(R, chunk))
    return block_r, block_k, S, chunk, warps


def _select_config(N: int, device: torch.device):
    """-> (BLOCK_P, BLOCK_I, BLOCK_J, num_warps) for the keys, rank and compact kernels."""
    if interpreted(device):
        return 16, 16, 32, 1
    np2 = triton.next_power_of_2(N)
    return min(np2, 1024), min(np2, 64), min(np2, 128), 4


def _copy_config(D: int, elem_bytes: int, device: torch.device):
    """-> (BLOCK_R, BLOCK_D, num_warps) for the gather / scatter row copies."""
    if interpreted(device):
        return 4, 16, 1
    block_d = min(triton.next_power_of_2(max(D, 1)), 2048 // max(elem_bytes // 2, 1))
    block_r = max(1, 4096 // block_d)
    return block_r, block_d, 4


# ---------------------------------------------------------------------------------------------
# Kernels of power_bert::extract and power_bert::extract_backward
# ---------------------------------------------------------------------------------------------


def extract(hidden: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor, k: int, exclude_self: bool = True,
            row_k: torch.Tensor | None = None):
    """hidden [B, N, D], attn [B, H, N, N], mask [B, N], optional row_k int64 [B] ->
    (out [B, k, D] hidden's dtype, index int64 [B, k] ascending with index[:, 0] = 0 (with row_k:
    the row_k[b] kept positions ascending, then the others ascending), out_mask [B, k] =
    mask.gather(1, index) in mask's dtype, 0 in slots at or beyond row_k[b]). row_k values are
    clamped into [1, k] on the device (the public wrapper refuses others on the host)."""
    _checks.check_extract_args(hidden, attn, mask, k)
    _checks.check_row_k(row_k, hidden, "extract")
    row_k = row_k.contiguous() if row_k is not None else None
    B, N, D = hidden.shape
    H = attn.shape[1]
    dev = hidden.device
    hidden = hidden.contiguous()
    attn = attn.contiguous()

    out = _launch.empty((B, k, D), dev, hidden.dtype)
    index = _launch.empty((B, k), dev, torch.int64)
    if B == 0:
        return out, index, extract_out_mask(mask, index, row_k)

    real = _launch.real_bytes(mask)
    acc_dtype = torch.float64 if attn.dtype == torch.float64 else torch.float32
    R = H * N
    BR, BK, S, CHUNK, warps = _colsum_config(N, R, attn.element_size(), dev)
    part = torch.empty((S, B, N), device=dev, dtype=acc_dtype)
    _launch.launcher(_colsum_kernel)[(B * S, triton.cdiv(N, BK))](
        attn, real, part, B, N, R, S, CHUNK, EXCLUDE_SELF=bool(exclude_self), BLOCK_R=BR, BLOCK_K=BK,
        num_warps=warps,
    )

    BP, BI, BJ, warps = _select_config(N, dev)
    keys = torch.empty((B, N), device=dev, dtype=torch.int64)
    _launch.launcher(_keys_kernel)[(B, triton.cdiv(N, BP))](
        part, real, keys, B, N, S, BLOCK_P=BP, num_warps=warps,
    )
    rank = torch.empty((B, N), device=dev, dtype=torch.int32)
    _launch.launcher(_rank_kernel)[(B, triton.cdiv(N, BI))](
        keys, rank, N, BLOCK_I=BI, BLOCK_J=BJ, num_warps=warps,
    )
    _launch.launcher(_compact_kernel)[(B, triton.cdiv(N, BP))](
        rank, row_k if row_k is not None else rank, index, N, k, HAS_ROW_K=row_k is not None,
        BLOCK_P=BP, num_warps=warps,
    )

    if D > 0:
        CR, CD, warps = _copy_config(D, hidden.element_size(), dev)
        _launch.launcher(_gather_kernel)[(triton.cdiv(B * k, CR), triton.cdiv(D, CD))](
            hidden, index, out, N, k, D, B * k, BLOCK_R=CR, BLOCK_D=CD, num_warps=warps,
        )
    return out, index, extract_out_mask(mask, index, row_k)


def extract_backward(grad_out: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """grad_out [B, k, D], index int64 [B, k] (unique per row), n = N ->
    grad_hidden [B, N, D] in grad_out's dtype: zeros except rows index[b, i] = grad_out[b, i]."""
    _checks.check_extract_backward_args(grad_out, index, n)
    B, k, D = grad_out.shape
    dev = grad_out.device
    grad_out = grad_out.contiguous()
    index = index.contiguous()
    grad_hidden = _launch.empty((B, n, D), dev, grad_out.dtype)
    if B * n * D == 0:
        return grad_hidden
    inv = torch.full((B, n), -1, device=dev, dtype=torch.int32)
    blk = 64 if interpreted(dev) else 1024
    _launch.launcher(_inverse_kernel)[(triton.cdiv(B * k, blk),)](
        index, inv, n, k, B * k, BLOCK=blk, num_warps=1 if interpreted(dev) else 4,
    )
    CR, CD, warps = _copy_config(D, grad_out.element_size(), dev)
    _launch.launcher(_scatter_kernel)[(triton.cdiv(B * n, CR), triton.cdiv(D, CD))](
        grad_out, inv, grad_hidden, n, k, D, B * n, BLOCK_R=CR, BLOCK_D=CD, num_warps=warps,
    )
    return grad_hidden
