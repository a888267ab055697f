"""Triton flash attention with significance (power_bert_ops.triton.attention_triton, the kernels
of power_bert::_attention_forward / _attention_backward on CUDA) against reference.attention,
through the ops. Without a GPU the kernels run under TRITON_INTERPRET=1 on CPU tensors, swapped
in as the CPU kernels (the `triton_kernels` fixture; tiny shapes; bfloat16 multiplies in float32
there, see attention_triton._upcast)."""
import contextlib

import pytest
import torch
from triton_testing import INTERPRET, GridRecorder, ops, record_launches, sm90_compile_report

from inputs import make_mask
from power_bert_ops import reference
from power_bert_ops.testing import OPS, force_kernels
from power_bert_ops.triton import _launch
from power_bert_ops.triton import attention_triton as at

CUDA = torch.cuda.is_available() and not INTERPRET


@pytest.fixture(autouse=True)
def triton_kernels():
    """Under the interpreter the Triton kernels are swapped in as the CPU kernels of the attention
    ops (on CUDA they are its kernels already)."""
    swap = force_kernels("triton", "cpu", OPS["attention"]) if INTERPRET else contextlib.nullcontext()
    with swap:
        yield


def attention(q, k, v, mask, dropout_p=0.0, need_significance=True, exclude_self=True, seed=None):
    """-> (out, significance): the public op torch.ops.power_bert.attention (which draws the seed),
    or with ``seed`` the op under it, _attention_forward; both run the Triton kernels here."""
    if seed is None:
        return ops.attention(q, k, v, mask, float(dropout_p), need_significance, exclude_self)
    out, sig, _ = ops._attention_forward(q, k, v, mask, float(dropout_p), need_significance, exclude_self, seed)
    return out, sig

DEVICES = [
    pytest.param("cpu", id="cpu", marks=pytest.mark.skipif(not INTERPRET, reason="CPU needs TRITON_INTERPRET=1")),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device")),
]

# (B, N): N = 1, odd, not a multiple of any block size, several blocks.
SHAPES = [(1, 1), (3, 17), (1, 40), (3, 70)]
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def make_qkv(B, H, N, d, dtype, device, requires_grad=False):
    return [torch.randn(B, H, N, d, device=device).to(dtype).requires_grad_(requires_grad) for _ in range(3)]


def ref(q, k, v, mask, **kw):
    """reference.attention on float64 copies (leaf tensors with requires_grad)."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out, sig = reference.attention(q64, k64, v64, mask, **kw)
    return out, sig, (q64, k64, v64)


def assert_sig_close(sig, sig_ref, mask, H, N, dtype):
    real = mask != 0
    assert sig.dtype == torch.float32 and sig.shape == sig_ref.shape
    assert torch.isneginf(sig[~real]).all()
    atol = TOL[dtype] * N * H
    torch.testing.assert_close(sig[real].double(), sig_ref[real].double(), atol=atol, rtol=0)


@pytest.mark.parametrize("B,N", SHAPES)
@pytest.mark.parametrize("padding", ["none", "short", "random"])
@pytest.mark.parametrize("d", [32, 64])
def test_forward_fp32(device, B, N, padding, d):
    H = 2
    q, k, v = make_qkv(B, H, N, d, torch.float32, device)
    mask = make_mask(B, N, padding, device)
    out, sig = attention(q, k, v, mask)
    out_ref, sig_ref, _ = ref(q, k, v, mask)
    assert out.dtype == q.dtype and out.shape == q.shape
    torch.testing.assert_close(out.double(), out_ref, atol=1e-4, rtol=1e-4)  # padded query rows too
    assert_sig_close(sig, sig_ref, mask, H, N, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("B,N,d", [(1, 17, 32), (3, 40, 64)])
def test_forward_half(device, dtype, B, N, d):
    H = 2
    q, k, v = make_qkv(B, H, N, d, dtype, device)
    mask = make_mask(B, N, "random", device)
    out, sig = attention(q, k, v, mask)
    out_ref, sig_ref, _ = ref(q, k, v, mask)
    assert out.dtype == dtype
    tol = TOL[dtype]
    torch.testing.assert_close(out.double(), out_ref, atol=4 * tol, rtol=4 * tol)
    assert_sig_close(sig, sig_ref, mask, H, N, dtype)


@pytest.mark.skipif(not CUDA, reason="d = 128 only on CUDA (slow under the interpreter)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("N", [70, 200])
def test_forward_d128_cuda(dtype, N):
    B, H, d = 3, 2, 128
    q, k, v = make_qkv(B, H, N, d, dtype, "cuda", requires_grad=True)
    mask = make_mask(B, N, "random", "cuda")
    out, sig = attention(q, k, v, mask)
    out_ref, sig_ref, leaves = ref(q, k, v, mask)
    tol = TOL[dtype]
    torch.testing.assert_close(out.double(), out_ref, atol=4 * tol, rtol=4 * tol)
    assert_sig_close(sig, sig_ref, mask, H, N, dtype)
    g = torch.randn_like(out_ref)
    out.backward(g.to(dtype))
    out_ref.backward(g)
    for t, t_ref in zip((q, k, v), leaves):
        torch.testing.assert_close(t.grad.double(), t_ref.grad, atol=10 * tol, rtol=10 * tol)


def test_options_and_layouts(device):
    B, H, N, d = 2, 2, 21, 32
    x = torch.randn(B, N, 3, H, d, device=device)  # packed qkv, non-contiguous views
    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    mask = make_mask(B, N, "random", device, dtype=torch.bool)
    out_ref, sig_ref, _ = ref(q, k, v, mask, exclude_self=False)
    out, sig = attention(q, k, v, mask.float(), exclude_self=False)
    torch.testing.assert_close(out.double(), out_ref, atol=1e-4, rtol=1e-4)
    assert_sig_close(sig, sig_ref, mask, H, N, torch.float32)
    out2, sig2 = attention(q, k, v, mask, need_significance=False)
    assert sig2.shape == (0,) and sig2.dtype == torch.float32
    torch.testing.assert_close(out2, out, atol=0, rtol=0)
    # read through strides, no copy; out in [B, N, H, d] memory so merging heads is a view
    assert out.transpose(1, 2).is_contiguous()
    # other layouts: every-other-row q, expanded k (stride 0 over heads), v with a non-unit
    # last stride (copied), all give the same answer
    q2 = torch.randn(B, H, 2 * N, d, device=device)[:, :, ::2]
    k2 = torch.randn(B, 1, N, d, device=device).expand(B, H, N, d)
    v2 = torch.randn(B, H, d, N, device=device).transpose(-1, -2)
    out_ref, sig_ref, _ = ref(q2, k2, v2, mask)
    out, sig = attention(q2, k2, v2, mask)
    torch.testing.assert_close(out.double(), out_ref, atol=1e-4, rtol=1e-4)
    assert_sig_close(sig, sig_ref, mask, H, N, torch.float32)
    # B = 0: empty outputs, no launch
    e = torch.empty(0, H, N, d, device=device)
    out0, sig0 = attention(e, e, e, torch.ones(0, N, device=device))
    assert out0.shape == e.shape and sig0.shape == (0, N)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("B,N,d", [(1, 1, 32), (3, 17, 32), (1, 40, 64)])
def test_backward(device, dtype, B, N, d):
    H = 2
    q, k, v = make_qkv(B, H, N, d, dtype, device, requires_grad=True)
    mask = make_mask(B, N, "random", device)
    out, _ = attention(q, k, v, mask)
    out_ref, _, leaves = ref(q, k, v, mask)
    g = torch.randn_like(out_ref)
    out.backward(g.to(dtype))
    out_ref.backward(g)
    tol = 1e-4 if dtype == torch.float32 else 4e-3
    for t, t_ref in zip((q, k, v), leaves):
        assert t.grad.dtype == dtype
        torch.testing.assert_close(t.grad.double(), t_ref.grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("layout", ["column_slice", "transposed", "expanded", "bool_column_slice"])
def test_masks_read_through_their_strides(device, layout):
    """The mask kernel reads the mask through its strides, in any dtype: a column slice of a wider
    mask, a transposed copy, a broadcast row (stride 0) and a bool slice give what the same mask
    made contiguous gives (KV_END, real bytes, significance), with the reference's values."""
    B, H, N, d = 3, 2, 37, 32  # N crosses the interpreter's 16-wide blocks
    lengths = torch.tensor([37, 20, 3])
    if layout == "expanded":
        mask = (torch.arange(N) < 20).long()[None].expand(B, N)
    else:
        wide = torch.arange(N + 5)[None] < lengths[:, None]
        wide = wide if layout.startswith("bool") else wide.long()
        mask = wide.t().contiguous().t()[:, :N] if layout == "transposed" else wide[:, :N]
    mask = mask.to(device)
    assert not mask.is_contiguous()
    q, k, v = make_qkv(B, H, N, d, torch.float32, device)
    real, kv_end = at._real_and_end(mask)
    want_real, want_end = at._real_and_end(mask.contiguous())
    assert torch.equal(real, want_real) and torch.equal(real, (mask != 0).to(torch.int8))
    assert torch.equal(kv_end, want_end)
    assert kv_end.tolist() == ([20] * B if layout == "expanded" else lengths.tolist())
    out, sig = attention(q, k, v, mask)
    out_ref, sig_ref, _ = ref(q, k, v, mask.contiguous())
    real_rows = (mask != 0)[:, None, :, None].expand_as(out)  # padded query rows are arbitrary in the reference
    torch.testing.assert_close(out.double()[real_rows], out_ref.detach()[real_rows], atol=1e-5, rtol=1e-5)
    assert_sig_close(sig, sig_ref, mask, H, N, torch.float32)


def test_masks_with_holes_and_padded_rows(device):
    """Key blocks past each row's last real token are skipped (KV_END): rows ending in the first,
    a middle and the last block, holes before the end, and a row of padding (out 0, no NaN), with
    significance and gradients against the reference."""
    B, H, N, d = 5, 2, 40, 32  # the interpreter's blocks are 16: ends in blocks 0, 1 and 2
    mask = torch.zeros(B, N, dtype=torch.int64)
    mask[0, :3] = 1
    mask[1, :21] = 1
    mask[1, 5:9] = 0  # a hole
    mask[2] = 1
    mask[2, 17:33:3] = 0
    mask[3, [0, 39]] = 1  # real at both ends, a hole across every block between
    mask = mask.to(device)  # row 4: all padding
    q, k, v = make_qkv(B, H, N, d, torch.float32, device, requires_grad=True)
    out, sig = attention(q, k, v, mask)
    live = slice(0, 4)
    out_ref, sig_ref, leaves = ref(q[live], k[live], v[live], mask[live])
    torch.testing.assert_close(out[live].double(), out_ref, atol=1e-4, rtol=1e-4)
    assert_sig_close(sig[live], sig_ref, mask[live], H, N, torch.float32)
    assert torch.equal(out[4], torch.zeros_like(out[4])) and torch.isneginf(sig[4]).all()
    g = torch.randn_like(out)
    out.backward(g)
    out_ref.backward(g[live].double())
    for t, t_ref in zip((q, k, v), leaves):
        torch.testing.assert_close(t.grad[live].double(), t_ref.grad, atol=1e-4, rtol=1e-4)
        assert torch.isfinite(t.grad).all()
    # nothing flows into padded keys, nor anything at all in the padded row
    padded = mask == 0
    assert (k.grad.transpose(1, 2)[padded] == 0).all() and (v.grad.transpose(1, 2)[padded] == 0).all()
    assert (q.grad[4] == 0).all()


def test_dropout_replay(device):
    """Fixed seed: bitwise repeatable; the kernels' mask (dropout_keep_mask) replayed through the
    reference gives the same output and gradients; significance ignores dropout."""
    B, H, N, d, p = 2, 2, 23, 32, 0.3
    q, k, v = make_qkv(B, H, N, d, torch.float32, device, requires_grad=True)
    mask = make_mask(B, N, "random", device)
    seed = torch.tensor([1234567890123], device=device)
    out, sig = attention(q, k, v, mask, dropout_p=p, seed=seed)
    out2, sig2 = attention(q, k, v, mask, dropout_p=p, seed=seed.clone())
    assert torch.equal(out, out2) and torch.equal(sig, sig2)
    out3, _ = attention(q, k, v, mask, dropout_p=p, seed=seed + 1)
    out0, sig0 = attention(q, k, v, mask, dropout_p=0.0, seed=seed)
    assert not torch.equal(out3, out) and not torch.equal(out0, out)
    assert torch.equal(sig0, sig)

    keep = at.dropout_keep_mask(seed, B, H, N, p)
    assert keep.shape == (B, H, N, N) and keep.dtype == torch.bool
    out_ref, sig_ref, leaves = ref(q, k, v, mask, dropout_p=p, dropout_mask=keep)
    torch.testing.assert_close(out.double(), out_ref, atol=1e-4, rtol=1e-4)
    assert_sig_close(sig, sig_ref, mask, H, N, torch.float32)
    g = torch.randn_like(out_ref)
    out.backward(g.float())
    out_ref.backward(g)
    for t, t_ref in zip((q, k, v), leaves):
        torch.testing.assert_close(t.grad.double(), t_ref.grad, atol=1e-4, rtol=1e-4)


def test_dropout_keep_rate(device):
    seed = torch.tensor([7], device=device)
    keep = at.dropout_keep_mask(seed, 1, 2, 64, 0.25)
    assert abs(keep.float().mean().item() - 0.75) < 0.03
    assert not torch.equal(keep[0, 0], keep[0, 1])  # heads draw different masks
    assert torch.equal(keep, at.dropout_keep_mask(seed.clone(), 1, 2, 64, 0.25))


def test_dropout_finite_differences(device):
    """Analytic gradients (dropout on) against central differences of sum(out * g) along random
    directions, with the same seed (so the same mask) in every forward."""
    B, H, N, d, p, eps = 1, 1, 6, 32, 0.5, 1e-2
    q, k, v = make_qkv(B, H, N, d, torch.float32, device, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], device=device)
    seed = torch.tensor([99], device=device)
    g = torch.randn(B, H, N, d, device=device)

    def f(q_, k_, v_):
        return (attention(q_, k_, v_, mask, dropout_p=p, need_significance=False, seed=seed)[0] * g).sum()

    f(q, k, v).backward()
    with torch.no_grad():
        for i, t in enumerate((q, k, v)):
            for _ in range(2):
                u = torch.randn_like(t)
                args = [q, k, v]
                args[i] = t + eps * u
                hi = f(*args)
                args[i] = t - eps * u
                lo = f(*args)
                numeric = ((hi - lo) / (2 * eps)).item()
                analytic = (t.grad * u).sum().item()
                assert abs(numeric - analytic) <= 5e-2 * abs(analytic) + 1e-2, (i, numeric, analytic)


def test_opcheck(device):
    B, H, N, d = 1, 2, 9, 32
    q, k, v = make_qkv(B, H, N, d, torch.float32, device, requires_grad=True)
    mask = make_mask(B, N, "random", device)
    seed = torch.tensor([3], device=device)
    torch.library.opcheck(ops._attention_forward.default,
                          (q, k, v, mask, 0.0, True, True, seed),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_compile(device):
    B, H, N, d = 1, 2, 9, 32
    q, k, v = make_qkv(B, H, N, d, torch.float32, device, requires_grad=True)
    mask = make_mask(B, N, "random", device)
    seed = torch.tensor([3], device=device)
    fn = torch.compile(lambda *a: attention(*a, dropout_p=0.1, seed=seed), backend="aot_eager", fullgraph=True)
    out, sig = fn(q, k, v, mask)
    out_e, sig_e = attention(q, k, v, mask, dropout_p=0.1, seed=seed)
    assert torch.equal(out, out_e) and torch.equal(sig, sig_e)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def _qkv_mask(device, B=1, H=2, N=5, d=32):
    q, k, v = make_qkv(B, H, N, d, torch.float32, device)
    return q, k, v, torch.ones(B, N, device=device)


@pytest.mark.parametrize("case,exc,match", [
    ("k_shape", ValueError, "`k` must have q's shape"),
    ("v_shape", ValueError, "`v` must have q's shape"),
    ("q_3d", ValueError, r"`q` must be \[B, H, N, d\]"),
    ("head_size", ValueError, "`q` head size d = 48"),
    ("mixture", TypeError, "must share one dtype, got torch.float32, torch.float16"),
    ("float64", TypeError, "`q` must be float16, bfloat16 or float32"),
    ("mask_shape", ValueError, "`mask` must be"),
    ("dropout_one", ValueError, "`dropout_p`"),
    ("dropout_neg", ValueError, "`dropout_p`"),
    ("seed_dtype", TypeError, "`seed`"),
])
def test_bad_input(device, case, exc, match):
    q, k, v, mask = _qkv_mask(device)
    kw = {}
    if case == "k_shape":
        k = k[:, :, :4]
    elif case == "v_shape":
        v = v[:, :1]
    elif case == "q_3d":
        q = q[0]
    elif case == "head_size":
        q, k, v = (torch.randn(1, 2, 5, 48, device=device) for _ in range(3))
    elif case == "mixture":
        k = k.half()
    elif case == "float64":
        q, k, v = q.double(), k.double(), v.double()
    elif case == "mask_shape":
        mask = mask[:, :4]
    elif case == "dropout_one":
        kw["dropout_p"] = 1.0
    elif case == "dropout_neg":
        kw["dropout_p"] = -0.1
    elif case == "seed_dtype":
        kw["seed"] = torch.tensor([1.0], device=device)
    with pytest.raises(exc, match=match):
        attention(q, k, v, mask, **kw)


def test_ops_launch_the_triton_kernels(device, monkeypatch):
    launched = record_launches(monkeypatch)
    q, k, v = make_qkv(1, 2, 9, 32, torch.float32, device, requires_grad=True)
    out, _ = attention(q, k, v, make_mask(1, 9, "random", device))
    # the mask's real bytes and row ends in one launch; -inf at padded keys inside the significance kernel
    assert launched == ["_mask_kernel", "_attn_fwd_kernel", "_significance_kernel"]
    out.sum().backward()
    assert launched[3:] == ["_mask_kernel", "_bwd_delta_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"]


def test_fully_padded_row(device):
    """A mask row of zeros (no real key): out = 0 and finite gradients (the reference gives NaN)."""
    q, k, v = make_qkv(2, 2, 9, 32, torch.float32, device, requires_grad=True)
    mask = torch.ones(2, 9, device=device)
    mask[1] = 0
    out, sig = attention(q, k, v, mask, dropout_p=0.2)
    out.sum().backward()
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.isneginf(sig[1]).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


# ---------------------------------------------------------------------------------------------
# GPU launch geometry and code generation, checked without a GPU
# ---------------------------------------------------------------------------------------------


def test_launch_grids_fit_cuda_limits(monkeypatch):
    """B*H = 70000 > 65535: a grid axis other than x holding B*H would fail to launch on a GPU
    (gridDim.y and gridDim.z are at most 65535), which the interpreter does not check."""
    rec = GridRecorder()
    monkeypatch.setattr(_launch, "launcher", rec)
    B, H, N, d = 35000, 2, 3, 32
    q, k, v = (torch.zeros(B, H, N, d) for _ in range(3))
    mask = torch.ones(B, N)
    seed = torch.zeros(1, dtype=torch.int64)
    out, sig, lse = at.forward(q, k, v, mask, 0.1, True, True, seed)
    at.backward(out, q, k, v, out, lse, mask, 0.1, seed)
    at.dropout_keep_mask(seed, B, H, 1, 0.1)
    assert len(rec.grids) == 8  # the mask kernel in forward and backward
    for grid in rec.grids:
        assert 1 <= len(grid) <= 3 and grid[0] < 2**31 and all(g <= 65535 for g in grid[1:]), grid


_SM90_SCRIPT = r"""
import torch
from power_bert_ops.triton import attention_triton as at

PTR = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}
FIXED = {"REAL": "*i8", "KV_END": "*i32", "SEED": "*i64", "LSE": "*fp32", "DELTA": "*fp32", "PART": "*fp32",
         "H": "i32", "N": "i32", "scale": "fp32", "dropout_p": "fp32", "MASK": "*i64", "smb": "i32", "smn": "i32",
         **{f"s{t}{a}": "i32" for t in "qkvo" for a in "bhn"}}
STRIDES = {f"s{t}{a}" for t in "qkvo" for a in "bhn"}


def build(fn, dtype, constexprs, warps, stages):
    sig = {n: "constexpr" if n in constexprs else FIXED.get(n, PTR[dtype]) for n in fn.arg_names}
    # torch allocations are 16-byte aligned and N = 512 is a multiple of 16, as in a real launch.
    # strides too: multiples of d (or of H * d) in every real launch
    aligned = [n for n, t in sig.items() if t.startswith("*") or n == "N" or n in STRIDES]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    usage = compile_sm90(fn, sig, constexprs, attrs, num_warps=warps, num_stages=stages)
    return {"kernel": fn.__name__, "dtype": str(dtype), "cfg": constexprs, "warps": warps, **usage}


cuda = torch.device("cuda")
res = []
for dtype, d in ((torch.float32, 64), (torch.float32, 128), (torch.float16, 64), (torch.bfloat16, 128)):
    prec = at._precision(dtype)
    for drop in (False, True):
        BM, BN, w, st = at._fwd_config(dtype, d, cuda, drop)
        res.append(build(at._attn_fwd_kernel, dtype, dict(BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=d, HAS_DROPOUT=drop,
                                                          PRECISION=prec, UPCAST=False), w, st))
    BM, BN, w, st = at._fwd_config(dtype, d, cuda)
    res.append(build(at._significance_kernel, dtype, dict(BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=d, EXCLUDE_SELF=True,
                                                          PRECISION=prec, UPCAST=False), w, st))
    BM, BN, w, st = at._bwd_config(dtype, d, cuda, True)
    for fn in (at._bwd_dkdv_kernel, at._bwd_dq_kernel):
        res.append(build(fn, dtype, dict(BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=d, HAS_DROPOUT=True, PRECISION=prec,
                                         UPCAST=False), w, st))
res.append(build(at._mask_kernel, torch.float32, dict(BLOCK=256), 4, 1))  # its one GPU block size
print("RESULT " + json.dumps(res))
"""


def test_gpu_configs_compile_for_h100_without_spills():
    """The GPU launch configurations (not the interpreter's) compiled for sm_90 with triton's own
    ptxas, no GPU needed: every kernel must fit H100 shared memory (227 KB per block) and keep
    its registers (float32 "ieee" tl.dot tiles of 64 x 64 spilled kilobytes per thread)."""
    for r in sm90_compile_report(_SM90_SCRIPT):
        assert r["shared"] <= 227 * 1024, r
        assert r["stack"] in (None, 0), r


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_kernels_launch_without_the_wrap_triton_dispatch(monkeypatch):
    """The Triton kernels run only on real CUDA tensors (fake kernels serve tracing), so they
    launch directly. Through torch.library.wrap_triton's higher-order op each launch cost about
    0.6 ms of host time on an H200 (bench/profile_gpu.py: 1.34 ms against 0.22 ms per attention
    forward), which made the model launch-bound; no eager launch may take that path."""
    from torch._higher_order_ops import triton_kernel_wrap

    from power_bert_ops.triton import extract_triton

    def refuse(*args, **kwargs):
        raise AssertionError("a Triton kernel was launched through wrap_triton's higher-order op")

    monkeypatch.setattr(triton_kernel_wrap.TraceableTritonKernelWrapper, "__call__", refuse)
    B, H, N, d = 2, 2, 40, 32
    mask = make_mask(B, N, "random", "cuda")
    q, k, v = (torch.randn(B, H, N, d, device="cuda", requires_grad=True) for _ in range(3))
    out, sig = ops.attention(q, k, v, mask, 0.1, True, True)
    out.sum().backward()
    assert torch.isfinite(sig[mask != 0]).all() and q.grad is not None
    attn = torch.softmax(torch.randn(B, H, N, N, device="cuda"), dim=-1)
    hidden = torch.randn(B, N, 8, device="cuda")
    res = extract_triton.extract(hidden, attn, mask, 5, True, torch.tensor([2, 5], device="cuda"))
    grad = extract_triton.extract_backward(torch.ones_like(res[0]), res[1], N)
    assert grad.shape == hidden.shape
