"""power_bert.attention on the native CPU kernel (and the raw op): against the eager
reference, scaled_dot_product_attention and power_bert.significance of the eager
probabilities; gradients; dropout replay; bounded memory; bad input. The Triton kernels have
their own file (test_attention_triton.py)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import power_bert_ops
from power_bert_ops import reference

from inputs import PADDINGS, assert_selection_valid, make_mask, over_inputs

ops = torch.ops.power_bert

SHAPES = [(1, 1, 1, 4), (1, 2, 17, 8), (3, 2, 40, 16), (2, 12, 70, 32), (2, 3, 130, 64)]  # B, H, N, d


def qkv(B, H, N, d, dtype, requires_grad=False):
    return [torch.randn(B, H, N, d, dtype=torch.float64).to(dtype).requires_grad_(requires_grad) for _ in range(3)]


def seed(value=1234):
    return torch.tensor([value], dtype=torch.int64)


TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


@over_inputs(shapes=SHAPES, paddings=PADDINGS + ["holes"])
def test_forward_matches_reference_and_sdpa(dtype, shape, padding):
    B, H, N, d = shape
    mask = make_mask(B, N, padding, "cpu")
    q, k, v = qkv(B, H, N, d, dtype)
    out, sig = power_bert_ops.attention(q, k, v, mask)
    ref_out, ref_sig = reference.attention(q.double(), k.double(), v.double(), mask)
    tol = TOL[dtype]
    assert out.dtype == dtype and out.shape == q.shape and sig.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol)
    sdpa = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask.bool()[:, None, None, :])
    torch.testing.assert_close(out.double(), sdpa, rtol=tol, atol=tol)
    real = mask.bool()
    assert torch.isneginf(sig[~real]).all()
    torch.testing.assert_close(sig[real].double(), ref_sig[real].double(), rtol=tol, atol=tol * H * N)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("N", [300, 601])  # more query rows than one block of the per-head CPU kernel
@pytest.mark.parametrize("exclude_self", [True, False])
def test_strided_projection_views_and_several_query_blocks(dtype, N, exclude_self):
    # The model passes q, k, v as [B, N, H, d] projections viewed as [B, H, N, d] (no copy);
    # the CPU kernel reads them through their strides and writes out in [B, N, H, d] memory.
    B, H, d = 2, 3, 16
    mask = make_mask(B, N, "random", "cpu")
    q, k, v = (torch.randn(B, N, H * d, dtype=torch.float64).to(dtype).view(B, N, H, d).transpose(1, 2)
               for _ in range(3))
    assert not q.is_contiguous()
    out, sig = power_bert_ops.attention(q, k, v, mask, exclude_self=exclude_self)
    ref_out, ref_sig = reference.attention(q.double(), k.double(), v.double(), mask, exclude_self=exclude_self)
    tol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol)
    real = mask.bool()
    assert torch.isneginf(sig[~real]).all()
    torch.testing.assert_close(sig[real].double(), ref_sig[real].double(), rtol=tol, atol=tol * H * N)
    merged = out.transpose(1, 2).reshape(B, N, H * d)
    assert merged.data_ptr() == out.data_ptr() and merged._base is not None  # merging heads is a view


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["transposed_last_dim", "every_other_column", "expanded_batch"])
def test_any_strides_every_dtype(dtype, layout):
    # Inputs whose last dimension is not contiguous, or with zero strides, on every dtype path
    # (fp32/fp64: the per-head kernel; fp16/bf16: ATen's flash kernel + significance pass).
    B, H, N, d = 2, 3, 19, 8
    mask = make_mask(B, N, "random", "cpu")
    if layout == "transposed_last_dim":
        q, k, v = (torch.randn(B, H, d, N, dtype=torch.float64).to(dtype).transpose(-1, -2) for _ in range(3))
    elif layout == "every_other_column":
        q, k, v = (torch.randn(B, H, N, 2 * d, dtype=torch.float64).to(dtype)[..., ::2] for _ in range(3))
    else:
        q, k, v = (torch.randn(1, H, N, d, dtype=torch.float64).to(dtype).expand(B, H, N, d) for _ in range(3))
    assert not q.is_contiguous()
    out, sig = power_bert_ops.attention(q, k, v, mask)
    ref_out, ref_sig = reference.attention(q.double(), k.double(), v.double(), mask)
    tol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol)
    real = mask.bool()
    torch.testing.assert_close(sig[real].double(), ref_sig[real].double(), rtol=tol, atol=tol * H * N)


@pytest.mark.parametrize("padding", ["none", "random", "short"])
def test_significance_equals_op_on_eager_probabilities_and_selection_identical(padding):
    B, H, N, d, kk = 4, 12, 64, 32, 20
    mask = make_mask(B, N, padding, "cpu")
    q, k, v = qkv(B, H, N, d, torch.float32)
    _, sig = power_bert_ops.attention(q, k, v, mask)
    probs = torch.softmax((q @ k.transpose(-1, -2)) / d**0.5 + torch.where(mask.bool(), 0.0, float("-inf"))[:, None, None], -1)
    eager_sig = power_bert_ops.significance(probs, mask)
    torch.testing.assert_close(sig, eager_sig, rtol=1e-5, atol=1e-4)
    hidden = torch.randn(B, N, 8)
    fused = power_bert_ops.extract_scored(hidden, sig, mask, kk)
    assert_selection_valid(fused.index, reference.significance(probs.double(), mask), mask, kk, atol=1e-4)
    assert torch.equal(fused.index, power_bert_ops.extract(hidden, probs, mask, kk).index)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_exclude_self(exclude_self):
    B, H, N, d = 2, 3, 9, 8
    mask = make_mask(B, N, "random", "cpu")
    q, k, v = qkv(B, H, N, d, torch.float64)
    _, sig = power_bert_ops.attention(q, k, v, mask, exclude_self=exclude_self)
    _, ref = reference.attention(q, k, v, mask, exclude_self=exclude_self)
    torch.testing.assert_close(sig, ref)


def test_need_significance_false_returns_empty():
    q, k, v = qkv(2, 2, 7, 4, torch.float32)
    out, sig = power_bert_ops.attention(q, k, v, torch.ones(2, 7), need_significance=False)
    assert sig.shape == (0,) and out.shape == q.shape


@pytest.mark.parametrize("shape", SHAPES[1:4], ids=str)
@pytest.mark.parametrize("padding", ["none", "random", "holes"])
def test_gradients_match_reference(shape, padding):
    B, H, N, d = shape
    mask = make_mask(B, N, padding, "cpu")
    q, k, v = qkv(B, H, N, d, torch.float64, requires_grad=True)
    out, sig = power_bert_ops.attention(q, k, v, mask)
    assert not sig.requires_grad
    ref_out, _ = reference.attention(q, k, v, mask)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    want = torch.autograd.grad(ref_out, (q, k, v), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_gradients_through_strided_views_and_several_blocks():
    B, H, N, d = 1, 2, 300, 8
    mask = make_mask(B, N, "random", "cpu")
    base = [torch.randn(B, N, H * d, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    q, k, v = (t.view(B, N, H, d).transpose(1, 2) for t in base)
    out, _ = power_bert_ops.attention(q, k, v, mask)
    ref_out, _ = reference.attention(q, k, v, mask)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, base, g), torch.autograd.grad(ref_out, base, g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_gradcheck_float64_with_and_without_dropout():
    B, H, N, d = 2, 2, 6, 4
    mask = make_mask(B, N, "random", "cpu")
    q, k, v = qkv(B, H, N, d, torch.float64, requires_grad=True)
    for p in (0.0, 0.4):
        fn = lambda q, k, v: ops._attention_forward(q, k, v, mask, p, True, True, seed())[0]
        assert torch.autograd.gradcheck(fn, (q, k, v))


def test_dropout_replays_from_seed_and_keeps_significance_undropped():
    B, H, N, d = 2, 3, 33, 8
    mask = make_mask(B, N, "random", "cpu")
    q, k, v = qkv(B, H, N, d, torch.float32)
    a = ops._attention_forward(q, k, v, mask, 0.5, True, True, seed(7))
    b = ops._attention_forward(q, k, v, mask, 0.5, True, True, seed(7))
    c = ops._attention_forward(q, k, v, mask, 0.5, True, True, seed(8))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    torch.testing.assert_close(a[1], power_bert_ops.attention(q, k, v, mask)[1])  # significance ignores dropout
    # Unbiased: averaged over many seeds, dropout attention approaches the undropped output.
    mean = torch.stack([ops._attention_forward(q, k, v, mask, 0.5, False, True, seed(s))[0] for s in range(300)]).mean(0)
    ref = power_bert_ops.attention(q, k, v, mask)[0]
    assert (mean - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_public_op_draws_seed_from_torch_generator():
    q, k, v = qkv(1, 2, 9, 4, torch.float32)
    mask = torch.ones(1, 9)
    torch.manual_seed(3)
    a = ops.attention(q, k, v, mask, 0.3)[0]
    torch.manual_seed(3)
    b = ops.attention(q, k, v, mask, 0.3)[0]
    assert torch.equal(a, b)


def test_opcheck_and_compile():
    B, H, N, d = 2, 2, 10, 8
    mask = make_mask(B, N, "random", "cpu")
    q, k, v = qkv(B, H, N, d, torch.float32, requires_grad=True)
    torch.library.opcheck(ops._attention_forward.default, (q, k, v, mask, 0.0, True, True, seed()))
    torch.library.opcheck(ops._attention_forward.default, (q, k, v, mask, 0.2, False, False, seed()))

    def f(q, k, v):
        out, sig = power_bert_ops.attention(q, k, v, mask)
        return out.sum() + out.pow(2).sum(), sig

    eager = f(q, k, v)
    compiled = torch.compile(f, fullgraph=True)(q, k, v)
    torch.testing.assert_close(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1])


def test_batch_mates_do_not_change_an_example():
    q, k, v = qkv(2, 2, 12, 8, torch.float64)
    mask = torch.ones(2, 12)
    mask[0, 7:] = 0
    out, sig = power_bert_ops.attention(q, k, v, mask)
    alone_out, alone_sig = power_bert_ops.attention(q[:1, :, :7], k[:1, :, :7], v[:1, :, :7], mask[:1, :7])
    torch.testing.assert_close(out[:1, :, :7], alone_out)
    torch.testing.assert_close(sig[:1, :7], alone_sig)


def test_memory_stays_bounded():
    # B=1, H=12, N=4096 fp32: the probabilities alone would take 805 MB.
    script = textwrap.dedent(
        """
        import resource, torch, power_bert_ops
        torch.set_num_threads(2)
        B, H, N, d = 1, 12, 4096, 64
        q, k, v = (torch.randn(B, H, N, d) for _ in range(3))
        mask = torch.ones(B, N); mask[:, 4000:] = 0
        power_bert_ops.attention(q[:, :, :64], k[:, :, :64], v[:, :, :64], mask[:, :64])  # warm up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out, sig = power_bert_ops.attention(q, k, v, mask)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert torch.isfinite(sig[:, :4000]).all() and out.shape == q.shape
        print((peak - base) / 1024)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    extra_mb = float(res.stdout.strip().splitlines()[-1])
    probs_mb = 12 * 4096 * 4096 * 4 / 2**20
    assert extra_mb < probs_mb / 4, f"peak extra memory {extra_mb:.0f} MB (probabilities would be {probs_mb:.0f} MB)"


def test_aten_matmul_fallback_runs_the_same_tests():
    # POWER_BERT_CPU_BLAS=aten: the per-head kernel's products go through ATen's mm instead of
    # the BLAS symbols torch exports (what a torch build without them runs). The forward tests
    # run again in a process with it set.
    here = os.path.dirname(os.path.abspath(__file__))
    tests = ["test_forward_matches_reference_and_sdpa", "test_strided_projection_views_and_several_query_blocks",
             "test_any_strides_every_dtype", "test_exclude_self", "test_batch_mates_do_not_change_an_example"]
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:xdist",
         os.path.join(here, "test_attention.py"), "-k", " or ".join(tests)],
        capture_output=True, text=True, env=dict(os.environ, POWER_BERT_CPU_BLAS="aten"),
        cwd=os.path.dirname(os.path.dirname(here)),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    passed = int(res.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 40, res.stdout[-500:]


class TestBadInput:
    def test_mismatched_shapes(self):
        q, k, v = qkv(2, 2, 5, 4, torch.float32)
        for fn in (power_bert_ops.attention, ops.attention):
            with pytest.raises(ValueError, match=r"`k` must have q's shape"):
                fn(q, k[:, :, :4], v, torch.ones(2, 5))
            with pytest.raises(ValueError, match=r"`v` must have q's shape"):
                fn(q, k, v[..., :3], torch.ones(2, 5))
            with pytest.raises(ValueError, match=r"`q` must be \[B, H, N, d\]"):
                fn(q[0], k[0], v[0], torch.ones(2, 5))

    def test_dtype_mixture(self):
        q, k, v = qkv(2, 2, 5, 4, torch.float32)
        for fn in (power_bert_ops.attention, ops.attention):
            with pytest.raises(TypeError, match="must share one dtype"):
                fn(q, k.half(), v, torch.ones(2, 5))

    def test_mask_shape(self):
        q, k, v = qkv(2, 2, 5, 4, torch.float32)
        for fn in (power_bert_ops.attention, ops.attention):
            with pytest.raises(ValueError, match=r"`mask` must be \[B, N\] = \[2, 5\]"):
                fn(q, k, v, torch.ones(2, 4))

    @pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
    def test_dropout_out_of_range(self, p):
        q, k, v = qkv(2, 2, 5, 4, torch.float32)
        for fn in (power_bert_ops.attention, ops.attention):
            with pytest.raises(ValueError, match=r"`dropout_p` must be in \[0, 1\)"):
                fn(q, k, v, torch.ones(2, 5), p)

    def test_all_padding_row(self):
        q, k, v = qkv(2, 2, 5, 4, torch.float32)
        mask = torch.ones(2, 5)
        mask[1] = 0
        for fn in (power_bert_ops.attention, ops.attention):
            with pytest.raises(ValueError, match="no real token"):
                fn(q, k, v, mask)

    def test_integer_inputs(self):
        q = torch.ones(1, 1, 3, 4, dtype=torch.long)
        with pytest.raises(TypeError, match="`q` must be float32"):
            power_bert_ops.attention(q, q, q, torch.ones(1, 3))
