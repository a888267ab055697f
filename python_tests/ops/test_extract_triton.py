"""The Triton kernels of extract and extract_backward (power_bert_ops.triton.extract_triton)
against power_bert_ops.reference: called directly, and through torch.ops.power_bert.extract with
them swapped in as the device's kernel (the `triton_kernels` fixture, power_bert_ops.testing.force_kernels).

Without CUDA the kernels run on CPU tensors under TRITON_INTERPRET=1 (set below before triton
is imported), so shapes stay small. POWER_BERT_POISON_OUTPUTS=1 fills outputs with NaN / -12345
before the kernels run, so an element a kernel forgets to write shows up as a mismatch.
"""
import pytest
import torch
from triton_testing import INTERPRET, GridRecorder, ops, record_launches, sm90_compile_report

from inputs import FLOAT_DTYPES as DTYPES
from inputs import SHAPES as INPUT_SHAPES
from inputs import make_attention, make_hidden, make_mask, over_inputs
from power_bert_ops import reference
from power_bert_ops.testing import force_kernels
from power_bert_ops.triton import _launch
from power_bert_ops.triton import extract_triton as et

DEVICE = "cpu" if INTERPRET or not torch.cuda.is_available() else "cuda"


@pytest.fixture(autouse=True)
def triton_kernels():
    """The Triton kernels are the device's kernels of extract / extract_backward in every test."""
    with force_kernels("triton", DEVICE, ("extract", "extract_backward")):
        yield


def extract(hidden, attn, mask, k, exclude_self=True):
    """The op (its one autograd formula and fake kernel), running the Triton kernels."""
    return ops.extract(hidden, attn, mask, k, exclude_self)


pytestmark = [
    pytest.mark.skipif(DEVICE == "cpu" and not INTERPRET, reason="Triton on CPU tensors needs TRITON_INTERPRET=1"),
    # The interpreter runs NaN / inf arithmetic through numpy, which warns.
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

# (B, H, N, D, k): inputs.py's smallest shapes (B = 1, k = 1, k = N, odd N and D), then N crossing
# several kernel blocks/chunks at sizes the interpreter runs quickly.
SHAPES = INPUT_SHAPES[:3] + [(3, 3, 33, 17, 9), (2, 2, 67, 3, 34)]


# ---------------------------------------------------------------------------------------------
# Inputs and checks
# ---------------------------------------------------------------------------------------------


def check_result(res, hidden, mask, k):
    """Shapes, dtypes, [CLS] first, ascending unique index, out/out_mask exact gathers."""
    out, index, out_mask = res
    B, N, D = hidden.shape
    assert out.shape == (B, k, D) and out.dtype == hidden.dtype and out.device == hidden.device
    assert index.shape == (B, k) and index.dtype == torch.int64
    assert out_mask.shape == (B, k) and out_mask.dtype == mask.dtype
    if B == 0:
        return
    assert (index[:, 0] == 0).all()
    assert (index[:, 1:] > index[:, :-1]).all(), index
    assert int(index.max()) < N
    want = hidden.gather(1, index[:, :, None].expand(-1, -1, D))
    torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(out_mask, mask.gather(1, index))
    # Rows shorter than k keep every real token.
    kept = (out_mask != 0).sum(1)
    assert torch.equal(kept, (mask != 0).sum(1).clamp(max=k))


def check_selection(index, attn, mask, k, exclude_self=True, atol=None):
    """index equals the reference selection from float64 significance, except that positions
    whose scores lie within ``atol`` of each other may swap (summation order)."""
    H, N = attn.shape[1], attn.shape[2]
    if atol is None:
        atol = 2e-6 * H * N + 1e-6
    sig = reference.significance(attn.double(), mask, exclude_self).cpu().double()
    want = reference.select_positions(sig, mask.cpu(), k)
    index, real = index.cpu(), (mask != 0).cpu()
    for b in (index != want).any(dim=1).nonzero().flatten().tolist():
        diff = sorted(set(index[b].tolist()) ^ set(want[b].tolist()))
        assert bool(real[b, diff].all()), f"row {b}: padding/real swapped at {diff}"
        vals = sig[b, diff]
        assert float(vals.max() - vals.min()) <= atol, f"row {b}: {diff} scores {vals.tolist()} not a near-tie"


def dyadic_attn(B, H, N, mask, dtype, specials=True):
    """Attention-like values that are multiples of 1/8 (exact in every dtype, and their sums are
    exact in float32 in any order), with many exact ties, signed zeros and, optionally, NaN and
    +-inf sprinkled in. Every backend must then reproduce the reference selection bit for bit."""
    a = torch.randint(-4, 9, (B, H, N, N)).double() / 8
    if specials:
        u = torch.rand(B, H, N, N)
        a[u < 0.05] = -0.0
        a[(u > 0.05) & (u < 0.06)] = float("nan")
        a[(u > 0.06) & (u < 0.065)] = float("inf")
        a[(u > 0.065) & (u < 0.07)] = float("-inf")
    return a.to(device=DEVICE, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@over_inputs(shapes=SHAPES)
def test_matches_reference(dtype, shape, padding):
    B, H, N, D, k = shape
    mask = make_mask(B, N, padding, DEVICE)
    attn = make_attention(B, H, N, mask, dtype, DEVICE)
    hidden = make_hidden(B, N, D, dtype, DEVICE)
    res = extract(hidden, attn, mask, k)
    check_result(res, hidden, mask, k)
    check_selection(res[1], attn, mask, k)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 21, 3, 8), (3, 2, 40, 2, 40), (1, 1, 9, 1, 5)], ids=str)
def test_exact_scores_equal_reference_bit_for_bit(dtype, exclude_self, shape):
    """Ties, -0.0 vs +0.0, NaN (below every number among real), +-inf, short rows: with exactly
    representable sums the index must equal the reference's exactly."""
    B, H, N, D, k = shape
    mask = make_mask(B, N, "random", DEVICE)
    attn = dyadic_attn(B, H, N, mask, dtype)
    hidden = make_hidden(B, N, D, dtype, DEVICE)
    res = extract(hidden, attn, mask, k, exclude_self)
    want = reference.extract(hidden, attn, mask, k, exclude_self)
    check_result(res, hidden, mask, k)
    assert torch.equal(res[1], want[1]), (res[1], want[1])
    assert torch.equal(res[0], want[0]) and torch.equal(res[2], want[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 21, 3, 8), (3, 2, 40, 2, 40), (1, 1, 9, 1, 5), (4, 1, 67, 2, 34)], ids=str)
def test_row_k_equals_reference_bit_for_bit(dtype, shape):
    """A per-row k (int64 [B]): each row's kept positions first, then the next-ranked ones,
    out_mask 0 beyond row_k[b], exactly as the reference (through the op and its autograd)."""
    B, H, N, D, k = shape
    mask = make_mask(B, N, "random", DEVICE)
    attn = dyadic_attn(B, H, N, mask, dtype)
    hidden = make_hidden(B, N, D, dtype, DEVICE).requires_grad_()
    row_k = torch.randint(1, k + 1, (B,), device=DEVICE)
    res = ops.extract(hidden, attn, mask, k, True, row_k)
    want = reference.extract(hidden, attn, mask, k, True, row_k)
    for got, exp in zip(res, want):
        assert torch.equal(got, exp), (got, exp)
    grad = torch.randn_like(res[0])
    (g,) = torch.autograd.grad(res[0], hidden, grad)
    (w,) = torch.autograd.grad(want[0], hidden, grad)
    assert torch.equal(g, w)


def test_fp32_index_equals_reference_without_near_ties():
    B, H, N, D, k = 4, 3, 29, 5, 11
    mask = make_mask(B, N, "random", DEVICE)
    attn = make_attention(B, H, N, mask, torch.float32, DEVICE)
    hidden = make_hidden(B, N, D, torch.float32, DEVICE)
    sig = reference.significance(attn, mask)
    real_sorted = [s[torch.isfinite(s)].sort().values for s in sig.cpu()]
    assert all(len(s) < 2 or float(s.diff().min()) > 1e-4 for s in real_sorted), "near-tie: reseed"
    res = extract(hidden, attn, mask, k)
    want = reference.extract(hidden, attn, mask, k)
    assert torch.equal(res[1], want[1]) and torch.equal(res[0], want[0]) and torch.equal(res[2], want[2])


@pytest.mark.parametrize("exclude_self", [True, False])
def test_uniform_attention_ties_go_to_lowest_positions(exclude_self):
    B, H, N, D, k = 3, 2, 16, 4, 5
    mask = make_mask(B, N, "none", DEVICE)
    mask[1, 8:] = 0
    mask[2, 4:] = 0  # fewer real tokens than k: padding positions fill up, lowest first
    attn = torch.where(mask.bool()[:, None, None, :], 1.0, 0.0).expand(B, H, N, N).contiguous()
    attn = attn / attn.sum(-1, keepdim=True)  # 1/16, 1/8, 1/4: exact
    hidden = make_hidden(B, N, D, torch.float32, DEVICE)
    res = extract(hidden, attn, mask, k, exclude_self)
    check_result(res, hidden, mask, k)
    assert res[1].tolist() == [list(range(k))] * B
    assert res[2].tolist() == [[1] * 5, [1] * 5, [1, 1, 1, 1, 0]]


def test_nan_attention_ranks_lowest_among_real():
    B, H, N, D = 1, 2, 8, 3
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], device=DEVICE)
    attn = make_attention(B, H, N, mask, torch.float32, DEVICE)
    attn[0, 1, 2, 3] = float("nan")  # key 3 gets a NaN score (query 2 is real)
    attn[0, 0, 7, 1] = float("nan")  # query 7 is padding: ignored
    attn[0, 0, 6, 6] = float("nan")  # padding key: stays padding
    hidden = make_hidden(B, N, D, torch.float32, DEVICE)
    for k in (5, 6, 7, 8):
        res = extract(hidden, attn, mask, k)
        want = reference.extract(hidden, attn, mask, k)
        check_result(res, hidden, mask, k)
        assert torch.equal(res[1], want[1])
        assert (3 in res[1][0].tolist()) == (k >= 6)  # NaN real token is the last real one kept
        assert (6 in res[1][0].tolist()) == (k >= 7)


def test_signed_zero_scores_tie():
    # float64 sums that round to -0.0 / +0.0 in float32 tie with exact zeros: lowest positions win.
    B, H, N, D, k = 1, 1, 6, 2, 3
    mask = make_mask(B, N, "none", DEVICE)
    attn = torch.zeros(B, H, N, N, dtype=torch.float64, device=DEVICE)
    attn[0, 0, 0, 1] = -1e-50  # significance -1e-50 -> -0.0 in float32
    attn[0, 0, 0, 3] = 1e-50  # -> +0.0
    attn[0, 0, 0, 5] = -1.0
    hidden = make_hidden(B, N, D, torch.float64, DEVICE)
    res = extract(hidden, attn, mask, k, False)
    assert res[1].tolist() == [[0, 1, 2]] == reference.extract(hidden, attn, mask, k, False)[1].tolist()


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32, torch.int32, torch.uint8], ids=str)
def test_mask_dtypes(mask_dtype):
    B, H, N, D, k = 2, 2, 11, 4, 6
    mask = make_mask(B, N, "short", DEVICE, mask_dtype)
    attn = make_attention(B, H, N, mask, torch.float32, DEVICE)
    hidden = make_hidden(B, N, D, torch.float32, DEVICE)
    res = extract(hidden, attn, mask, k)
    check_result(res, hidden, mask, k)
    check_selection(res[1], attn, mask, k)


def test_non_contiguous_inputs():
    B, H, N, D, k = 2, 3, 10, 6, 4
    mask = make_mask(B, N, "random", DEVICE)
    attn = make_attention(B, H, N, mask, torch.float32, DEVICE)
    hidden = make_hidden(B, N, 2 * D, torch.float32, DEVICE)[:, :, ::2]
    attn_nc = attn.transpose(0, 1).contiguous().transpose(0, 1)
    assert not hidden.is_contiguous() and not attn_nc.is_contiguous()
    res = extract(hidden, attn_nc, mask, k)
    want = extract(hidden.contiguous(), attn, mask, k)
    for a, b in zip(res, want):
        assert torch.equal(a, b)


def test_degenerate_sizes():
    # B = 0: empty outputs, no launch.
    out, index, out_mask = extract(torch.randn(0, 5, 3, device=DEVICE), torch.rand(0, 2, 5, 5, device=DEVICE),
                                      torch.ones(0, 5, device=DEVICE), 2)
    assert out.shape == (0, 2, 3) and index.shape == (0, 2) and out_mask.shape == (0, 2)
    # D = 0 and H = 0 (all scores 0: lowest positions win).
    mask = make_mask(2, 7, "random", DEVICE)
    hidden = torch.randn(2, 7, 0, device=DEVICE)
    res = extract(hidden, make_attention(2, 2, 7, mask, torch.float32, DEVICE), mask, 3)
    check_result(res, hidden, mask, 3)
    hidden = make_hidden(2, 7, 3, torch.float32, DEVICE)
    res = extract(hidden, torch.rand(2, 0, 7, 7, device=DEVICE), mask, 3)
    assert torch.equal(res[1], reference.extract(hidden, torch.rand(2, 0, 7, 7, device=DEVICE), mask, 3)[1])


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_equals_reference_autograd(dtype):
    B, H, N, D, k = 3, 2, 13, 5, 6
    mask = make_mask(B, N, "random", DEVICE)
    attn = make_attention(B, H, N, mask, dtype, DEVICE)
    hidden = make_hidden(B, N, D, dtype, DEVICE).requires_grad_(True)
    out, index, _ = extract(hidden, attn, mask, k)
    g = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, hidden, g)
    ref_out = hidden.gather(1, index[:, :, None].expand(-1, -1, D))  # reference gather at our index
    (want,) = torch.autograd.grad(ref_out, hidden, g)
    assert got.dtype == dtype and torch.equal(got, want)
    assert not index.requires_grad


def test_backward_op_with_unsorted_index():
    B, n, k, D = 3, 9, 4, 7
    index = torch.stack([torch.randperm(n)[:k] for _ in range(B)]).to(DEVICE)
    g = torch.randn(B, k, D, device=DEVICE)
    got = ops.extract_backward(g, index, n)
    want = torch.zeros(B, n, D, device=DEVICE).scatter(1, index[:, :, None].expand(-1, -1, D), g)
    assert torch.equal(got, want)
    assert ops.extract_backward(g[:0], index[:0], n).shape == (0, n, D)


def test_gradcheck_and_gradgradcheck_float64():
    B, H, N, D, k = 2, 2, 6, 3, 3
    mask = make_mask(B, N, "random", DEVICE)
    attn = make_attention(B, H, N, mask, torch.float64, DEVICE)
    hidden = make_hidden(B, N, D, torch.float64, DEVICE).requires_grad_(True)
    fn = lambda h: extract(h, attn, mask, k)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (hidden,))
    assert torch.autograd.gradgradcheck(fn, (hidden,))


# ---------------------------------------------------------------------------------------------
# Fake tensors, torch.compile, opcheck
# ---------------------------------------------------------------------------------------------


def test_fake_tensor_and_meta_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        h = torch.randn(2, 9, 5, device=DEVICE, dtype=torch.bfloat16)
        a = torch.rand(2, 3, 9, 9, device=DEVICE, dtype=torch.float16)
        m = torch.ones(2, 9, device=DEVICE, dtype=torch.bool)
        out, index, out_mask = ops.extract(h, a, m, 4, True)
        assert out.shape == (2, 4, 5) and out.dtype == torch.bfloat16
        assert index.shape == (2, 4) and index.dtype == torch.int64
        assert out_mask.shape == (2, 4) and out_mask.dtype == torch.bool
        with pytest.raises(ValueError, match="`k` must satisfy"):
            ops.extract(h, a, m, 10, True)
        assert ops.extract_backward(torch.randn(2, 4, 5, device=DEVICE), index, 9).shape == (2, 9, 5)
    out, index, _ = ops.extract(torch.randn(2, 9, 5, device="meta"), torch.rand(2, 3, 9, 9, device="meta"),
                                       torch.ones(2, 9, device="meta"), 4)
    assert out.shape == (2, 4, 5) and index.device.type == "meta"


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    # The AOT-dispatch tests run on CUDA only.
    utils = (("test_schema", "test_autograd_registration", "test_faketensor") if INTERPRET
             else ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))
    B, H, N, D = 2, 2, 9, 5
    mask = make_mask(B, N, "random", DEVICE)
    attn = make_attention(B, H, N, mask, torch.float32, DEVICE)
    hidden = make_hidden(B, N, D, torch.float32, DEVICE).requires_grad_(requires_grad)
    torch.library.opcheck(ops.extract.default, (hidden, attn, mask, 4, True), test_utils=utils)
    torch.library.opcheck(ops.extract.default, (hidden, attn, mask, 1, False), test_utils=utils)
    index = extract(hidden.detach(), attn, mask, 4)[1]
    g = torch.randn(B, 4, D, device=DEVICE, requires_grad=requires_grad)
    torch.library.opcheck(ops.extract_backward.default, (g, index, N), test_utils=utils)


def test_compile_fullgraph_matches_eager():
    # backend="eager" keeps the op opaque (fake kernel for tracing, real kernels at run time),
    # which is what works under the interpreter; on CUDA the kernels also go through Inductor.
    backend = "eager" if INTERPRET else "inductor"
    B, H, N, D, k = 2, 2, 12, 6, 5
    mask = make_mask(B, N, "random", DEVICE)
    attn = make_attention(B, H, N, mask, torch.float32, DEVICE)
    hidden = make_hidden(B, N, D, torch.float32, DEVICE).requires_grad_(True)

    def layer(hidden, attn, mask):
        out, index, out_mask = extract(hidden * 2, attn, mask, k)
        return (out ** 2).sum(), index, out_mask

    torch._dynamo.reset()
    eager = layer(hidden, attn, mask)
    compiled = torch.compile(layer, fullgraph=True, backend=backend)(hidden, attn, mask)
    # The selection is exact; Inductor fuses the square and the sum into one reduction of its own
    # order, so the loss may differ from eager's in the last bit.
    assert torch.equal(compiled[1], eager[1]) and torch.equal(compiled[2], eager[2])
    torch.testing.assert_close(compiled[0], eager[0])
    ge = torch.autograd.grad(eager[0], hidden)[0]
    gc = torch.autograd.grad(compiled[0], hidden)[0]
    torch.testing.assert_close(gc, ge)


# ---------------------------------------------------------------------------------------------
# Bad input and launch configuration
# ---------------------------------------------------------------------------------------------


def _good(B=2, H=2, N=6, D=4):
    mask = torch.ones(B, N, dtype=torch.long, device=DEVICE)
    return make_hidden(B, N, D, torch.float32, DEVICE), make_attention(B, H, N, mask, torch.float32, DEVICE), mask


def test_bad_input():
    h, a, m = _good()
    with pytest.raises(ValueError, match=r"`attn` must be \[B, H, N, N\]"):
        extract(h, a[0], m, 2)
    with pytest.raises(ValueError, match="`attn`.*N = 6"):
        extract(h, a[..., :5], m, 2)
    with pytest.raises(TypeError, match="`attn` must be float32"):
        extract(h, (a * 100).long(), m, 2)
    with pytest.raises(ValueError, match="`k` must satisfy 1 <= k <= N = 6, got k = 0"):
        extract(h, a, m, 0)
    with pytest.raises(ValueError, match="`k` must satisfy 1 <= k <= N = 6, got k = 7"):
        extract(h, a, m, 7)
    with pytest.raises(ValueError, match="`mask` must be"):
        extract(h, a, m[:, :5], 2)
    with pytest.raises(ValueError, match="`hidden` must be"):
        extract(h[0], a, m, 2)
    with pytest.raises(ValueError, match="`index` must be"):
        ops.extract_backward(torch.randn(2, 3, 4, device=DEVICE), torch.zeros(2, 2, dtype=torch.long,
                                                                                      device=DEVICE), 6)
    with pytest.raises(ValueError, match="`k` must satisfy 1 <= k <= N = 2, got k = 3"):
        ops.extract_backward(torch.randn(2, 3, 4, device=DEVICE), torch.zeros(2, 3, dtype=torch.long,
                                                                                      device=DEVICE), 2)


def test_kernels_called_directly_equal_the_op():
    B, H, N, D, k = 2, 2, 11, 3, 4
    mask = make_mask(B, N, "random", DEVICE)
    attn, hidden = make_attention(B, H, N, mask, torch.float32, DEVICE), make_hidden(B, N, D, torch.float32, DEVICE)
    for a, b in zip(et.extract(hidden, attn, mask, k), extract(hidden, attn, mask, k)):
        assert torch.equal(a, b)
    g = torch.randn(B, k, D, device=DEVICE)
    index = extract(hidden, attn, mask, k)[1]
    assert torch.equal(et.extract_backward(g, index, N), ops.extract_backward(g, index, N))


def test_op_forward_and_backward_launch_the_triton_kernels(monkeypatch):
    launched = record_launches(monkeypatch)
    mask = make_mask(2, 9, "random", DEVICE)
    hidden = make_hidden(2, 9, 4, torch.float32, DEVICE).requires_grad_(True)
    out = extract(hidden, make_attention(2, 2, 9, mask, torch.float32, DEVICE), mask, 3)[0]
    assert launched == ["_colsum_kernel", "_keys_kernel", "_rank_kernel", "_compact_kernel", "_gather_kernel"]
    out.sum().backward()
    assert launched[5:] == ["_inverse_kernel", "_scatter_kernel"]


def test_gpu_launch_config_covers_all_rows(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cuda = torch.device("cuda")
    for H in (1, 3, 12, 16):
        for N in (1, 7, 128, 197, 512, 4096):
            R = H * N
            for eb in (2, 4, 8):
                br, bk, S, chunk, _ = et._colsum_config(N, R, eb, cuda)
                assert chunk % br == 0 and S * chunk >= R and (S - 1) * chunk < R
                assert bk & (bk - 1) == 0 and br & (br - 1) == 0 and bk <= 128
                # B = 1 still launches many programs when there are enough rows to split.
                n_kb = triton_cdiv(N, bk)
                assert S * n_kb >= min(2048, triton_cdiv(R, 4 * br) * n_kb) // 2
            bp, bi, bj, _ = et._select_config(N, cuda)
            assert all(x & (x - 1) == 0 for x in (bp, bi, bj))
    for D in (1, 5, 64, 768, 4096):
        for eb in (2, 4, 8):
            br, bd, _ = et._copy_config(D, eb, cuda)
            assert br * bd <= 4096 and bd * eb <= 4096


def triton_cdiv(a, b):
    return -(-a // b)


def test_launch_grids_fit_cuda_limits(monkeypatch):
    """Only grid axis x may exceed 65535 on a GPU (the interpreter does not check): B = 70000."""
    rec = GridRecorder()
    monkeypatch.setattr(_launch, "launcher", rec)
    # Nothing runs: valid (zero) indices instead of poison, for the mask.gather after the launches.
    monkeypatch.setattr(_launch, "empty", lambda shape, device, dtype: torch.zeros(shape, device=device, dtype=dtype))
    B, H, N, D = 70000, 1, 3, 2
    et.extract(torch.zeros(B, N, D), torch.zeros(B, H, N, N), torch.ones(B, N), 2)
    et.extract_backward(torch.zeros(B, 2, D), torch.zeros(B, 2, dtype=torch.int64), N)
    assert len(rec.grids) == 7
    for grid in rec.grids:
        assert 1 <= len(grid) <= 3 and grid[0] < 2**31 and all(g <= 65535 for g in grid[1:]), grid


_SM90_SCRIPT = r"""
import torch
from power_bert_ops.triton import extract_triton as et

PTR = {2: "*fp16", 4: "*fp32", 8: "*fp64"}


def build(fn, types, constexprs, warps):
    sig = {n: "constexpr" if n in constexprs else types.get(n, "i32") for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    return {"kernel": fn.__name__, "cfg": constexprs, **compile_sm90(fn, sig, constexprs, attrs, num_warps=warps)}


cuda = torch.device("cuda")
res = []
for eb, N, D in ((2, 512, 768), (4, 8192, 1), (8, 7, 5)):
    acc = "*fp64" if eb == 8 else "*fp32"
    BR, BK, S, CHUNK, w = et._colsum_config(N, 12 * N, eb, cuda)
    res.append(build(et._colsum_kernel, {"ATTN": PTR[eb], "REAL": "*i8", "PART": acc},
                     dict(EXCLUDE_SELF=True, BLOCK_R=BR, BLOCK_K=BK), w))
    BP, BI, BJ, w = et._select_config(N, cuda)
    res.append(build(et._keys_kernel, {"PART": acc, "REAL": "*i8", "KEYS": "*i64"}, dict(BLOCK_P=BP), w))
    res.append(build(et._rank_kernel, {"KEYS": "*i64", "RANK": "*i32"}, dict(BLOCK_I=BI, BLOCK_J=BJ), w))
    for has_row_k in (False, True):
        res.append(build(et._compact_kernel, {"RANK": "*i32", "ROW_K": "*i64", "INDEX": "*i64"},
                         dict(HAS_ROW_K=has_row_k, BLOCK_P=BP), w))
    CR, CD, w = et._copy_config(D, eb, cuda)
    res.append(build(et._gather_kernel, {"HIDDEN": PTR[eb], "INDEX": "*i64", "OUT": PTR[eb]},
                     dict(BLOCK_R=CR, BLOCK_D=CD), w))
    res.append(build(et._scatter_kernel, {"GRAD_OUT": PTR[eb], "INV": "*i32", "GRAD_HIDDEN": PTR[eb]},
                     dict(BLOCK_R=CR, BLOCK_D=CD), w))
res.append(build(et._inverse_kernel, {"INDEX": "*i64", "INV": "*i32"}, dict(BLOCK=1024), 4))
print("RESULT " + json.dumps(res))
"""


def test_gpu_configs_compile_for_h100_without_spills():
    """The GPU launch configurations compiled for sm_90 with triton's own ptxas (no GPU needed):
    within H100 shared memory (227 KB per block), no register spills."""
    for r in sm90_compile_report(_SM90_SCRIPT):
        assert r["shared"] <= 227 * 1024, r
        # A few bytes of stack are the call frame of the int64 division helper (row // k).
        assert r["stack"] is None or r["stack"] <= 32, r
