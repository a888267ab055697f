"""The triton.jit building blocks of attention_triton's kernels: the matrix product, the dropout
keep mask, a program's head and block, head offsets, real-position masks, per-row statistics
and tile loads."""
import triton
import triton.language as tl


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """tl.dot with float32 accumulation; UPCAST multiplies in float32 (the interpreter's
    bfloat16 tl.dot is wrong in triton 3.9, so bfloat16 runs upcast there)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PRECISION)
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _keep(seed, qrow, kcol, bh, dropout_p):
    """Dropout keep mask. qrow, kcol: int32 index blocks that broadcast to the tile shape
    ([M, 1] / [1, N] or [1, M] / [N, 1]); bh: program's b*H + h. -> bool tile (True = keep)."""
    c0 = (kcol + qrow * 0).to(tl.uint32)
    c1 = (qrow + kcol * 0).to(tl.uint32)
    zero = c0 * 0
    c2 = zero + bh.to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, zero)
    return tl.uint_to_uniform_float(r0) >= dropout_p


@triton.jit
def _split_pid(N, BLOCK: tl.constexpr):
    """(block index along N, b*H + h) of this program. The kernels use a 1-D grid of
    cdiv(N, BLOCK) * B*H programs (axis 0 allows 2^31 - 1; axes 1 and 2 only 65535, which
    B*H alone exceeds at e.g. B = 4096, H = 16); blocks of one head are adjacent."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(N, BLOCK)
    return pid % n_blocks, pid // n_blocks


@triton.jit
def _head_program(N, H, BLOCK: tl.constexpr):
    """(first position, the BLOCK positions along N, b*H + h, b, h) of this program (see _split_pid)."""
    pid, bh = _split_pid(N, BLOCK)
    start = pid * BLOCK
    return start, start + tl.arange(0, BLOCK), bh, bh // H, bh % H


@triton.jit
def _load_tile(PTR, base, pos, stride, dcol, inside):
    """PTR[base + pos * stride + dcol] as a [len(pos), len(dcol)] tile; rows outside read 0."""
    return tl.load(PTR + base + pos[:, None].to(tl.int64) * stride + dcol[None, :], mask=inside[:, None], other=0.0)


@triton.jit
def _head_base(b, h, stride_b, stride_h):
    """Offset of head h of batch item b in a tensor with strides (stride_b, stride_h, ...)."""
    return b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h


@triton.jit
def _real_positions(REAL, b, N, pos):
    """(pos < N, pos < N and real[b, pos]) for positions pos of batch item b; REAL [B, N] int8."""
    inside = pos < N
    return inside, inside & (tl.load(REAL + b.to(tl.int64) * N + pos, mask=inside, other=0) != 0)


@triton.jit
def _row_stats(LSE, DELTA, bh, N, rows, row_in):
    """(lse in base 2, delta) of query rows `rows` of head bh; LSE, DELTA [B, H, N] f32."""
    lse2 = tl.load(LSE + bh.to(tl.int64) * N + rows, mask=row_in, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + bh.to(tl.int64) * N + rows, mask=row_in, other=0.0)
    return lse2, delta
