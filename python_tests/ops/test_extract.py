"""power_bert.extract / extract_scored / extract_backward (SPEC 1.2) against the reference,
on the native backends (C++ on CPU, CUDA on GPU) and the reference backend itself."""
import pytest
import torch

import power_bert_ops
from power_bert_ops import reference

from inputs import (
    FLOAT_DTYPES,
    assert_selection_valid,
    make_attention,
    make_hidden,
    make_mask,
    over_inputs,
    sig_tolerance,
)


def _check_extract_result(res, hidden, mask, k):
    out, index, out_mask = res
    B, N, D = hidden.shape
    assert out.shape == (B, k, D) and out.dtype == hidden.dtype
    assert index.shape == (B, k) and index.dtype == torch.int64
    assert out_mask.shape == (B, k) and out_mask.dtype == mask.dtype
    assert (index[:, 0] == 0).all(), "[CLS] must stay at row 0"
    assert (index[:, 1:] > index[:, :-1]).all(), "positions must be unique and ascending"
    torch.testing.assert_close(out, hidden.gather(1, index[:, :, None].expand(-1, -1, D)), rtol=0, atol=0)
    torch.testing.assert_close(out_mask, mask.gather(1, index), rtol=0, atol=0)
    # Short rows: every real token is kept before any padding position.
    real_kept = (out_mask != 0).sum(1)
    assert torch.equal(real_kept, torch.minimum((mask != 0).sum(1), torch.tensor(k, device=mask.device)))


@over_inputs()
def test_extract_matches_reference(device, dtype, shape, padding):
    B, H, N, D, k = shape
    mask = make_mask(B, N, padding, device)
    attn = make_attention(B, H, N, mask, dtype, device)
    hidden = make_hidden(B, N, D, dtype, device)
    res = power_bert_ops.extract(hidden, attn, mask, k)
    _check_extract_result(res, hidden, mask, k)
    assert_selection_valid(res.index, reference.significance(attn.double(), mask), mask, k, sig_tolerance(attn))


@over_inputs()
def test_extract_scored_equals_reference_exactly(device, dtype, shape, padding):
    B, _, N, D, k = shape
    mask = make_mask(B, N, padding, device)
    # Scores with many exact duplicates, signed zeros and infinities: ties must break identically.
    scores = torch.randint(-3, 4, (B, N), device=device).to(dtype)
    scores[torch.rand(B, N, device=device) < 0.1] = -0.0
    scores[torch.rand(B, N, device=device) < 0.05] = float("-inf")
    hidden = make_hidden(B, N, D, dtype, device)
    got = power_bert_ops.extract_scored(hidden, scores, mask, k)
    want = reference.extract_scored(hidden, scores, mask, k)
    _check_extract_result(got, hidden, mask, k)
    torch.testing.assert_close(got.index, want[1], rtol=0, atol=0)


def test_ties_break_toward_lower_position(device):
    # Uniform attention: every real key has the same significance, so the lowest positions win.
    # 16 and 8 real keys: the probabilities 1/16 and 1/8 and their sums are exact in any order
    # of summation (the CUDA kernel sums in another order than the CPU one; with 1/9 the column
    # sums differ in the last bit and the tie is no longer a tie).
    B, H, N, D, k = 3, 4, 16, 8, 5
    mask = make_mask(B, N, "none", device)
    mask[1, 8:] = 0
    attn = torch.where(mask.bool()[:, None, None, :], 1.0, 0.0).expand(B, H, N, N).to(device)
    attn = attn / attn.sum(-1, keepdim=True)
    hidden = make_hidden(B, N, D, torch.float32, device)
    res = power_bert_ops.extract(hidden, attn, mask, k)
    assert res.index.tolist() == [list(range(k))] * B


def test_nan_scores_rank_lowest_among_real_tokens(device):
    B, N, D, k = 1, 6, 3, 5
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], device=device)
    scores = torch.tensor([[0.0, float("nan"), float("-inf"), 2.0, 1.0, 9.0]], device=device)
    hidden = make_hidden(B, N, D, torch.float32, device)
    # ranks among positions != 0: 3 (2.0), 4 (1.0), 2 (-inf), 1 (NaN), 5 (padding)
    assert power_bert_ops.extract_scored(hidden, scores, mask, 4).index.tolist() == [[0, 2, 3, 4]]
    assert power_bert_ops.extract_scored(hidden, scores, mask, k).index.tolist() == [[0, 1, 2, 3, 4]]
    res = power_bert_ops.extract_scored(hidden, scores, mask, 6)
    assert res.index.tolist() == [[0, 1, 2, 3, 4, 5]] and res.mask.tolist() == [[1, 1, 1, 1, 1, 0]]


def test_nan_attention_gives_nan_score_ranked_lowest(device):
    B, H, N, D = 1, 2, 6, 4
    mask = make_mask(B, N, "none", device)
    attn = make_attention(B, H, N, mask, torch.float32, device)
    attn[0, 1, 3, 2] = float("nan")  # position 2's significance becomes NaN
    assert torch.isnan(power_bert_ops.significance(attn, mask)[0, 2])
    res = power_bert_ops.extract(make_hidden(B, N, D, torch.float32, device), attn, mask, N - 1)
    assert 2 not in res.index[0].tolist()


def test_k_equals_n_keeps_everything(device):
    B, H, N, D = 2, 3, 9, 5
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, torch.float32, device)
    hidden = make_hidden(B, N, D, torch.float32, device)
    res = power_bert_ops.extract(hidden, attn, mask, N)
    assert torch.equal(res.out, hidden) and torch.equal(res.mask, mask)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_backward_scatters_gradient(device, dtype):
    B, H, N, D, k = 3, 2, 11, 6, 4
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, dtype, device)
    hidden = make_hidden(B, N, D, dtype, device).requires_grad_()
    res = power_bert_ops.extract(hidden, attn, mask, k)
    grad = make_hidden(B, k, D, dtype, device)
    (got,) = torch.autograd.grad(res.out, hidden, grad)
    ref_hidden = hidden.detach().clone().requires_grad_()
    ref_out = ref_hidden.gather(1, res.index[:, :, None].expand(-1, -1, D))
    (want,) = torch.autograd.grad(ref_out, ref_hidden, grad)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_gradcheck_float64(device):
    B, H, N, D, k = 2, 2, 7, 3, 4
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, torch.float64, device)
    scores = reference.significance(attn, mask)
    hidden = make_hidden(B, N, D, torch.float64, device).requires_grad_()
    assert torch.autograd.gradcheck(lambda h: power_bert_ops.extract(h, attn, mask, k).out, (hidden,))
    assert torch.autograd.gradgradcheck(lambda h: power_bert_ops.extract(h, attn, mask, k).out, (hidden,))
    assert torch.autograd.gradcheck(lambda h: power_bert_ops.extract_scored(h, scores, mask, k).out, (hidden,))


def test_extract_backward_op_writes_zeros_elsewhere(device):
    B, N, D, k = 2, 6, 3, 3
    grad = torch.randn(B, k, D, device=device)
    index = torch.tensor([[0, 2, 5], [0, 1, 4]], device=device)
    got = torch.ops.power_bert.extract_backward(grad, index, N)
    want = torch.zeros(B, N, D, device=device).scatter(1, index[:, :, None].expand(-1, -1, D), grad)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


MASK_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32,
               torch.int64, torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64,
               torch.float8_e4m3fn, torch.float8_e5m2]


@pytest.mark.parametrize("mask_dtype", MASK_DTYPES, ids=str)
@pytest.mark.parametrize("path", ["extract", "extract_scored", "torch.ops", "reference"])
def test_every_mask_dtype(device, mask_dtype, path):
    # "nonzero = real token" for every bool, integer and floating dtype; out_mask keeps the dtype.
    B, H, N, D, k = 2, 2, 8, 4, 5
    base = make_mask(B, N, "short", device)
    attn = make_attention(B, H, N, base, torch.float32, device)
    hidden = make_hidden(B, N, D, torch.float32, device)
    m = (base * 2).to(mask_dtype)  # 2, not 1: any nonzero value marks a real token
    want = power_bert_ops.extract(hidden, attn, base, k)
    if path == "extract":
        res = power_bert_ops.extract(hidden, attn, m, k)
    elif path == "extract_scored":
        res = power_bert_ops.extract_scored(hidden, power_bert_ops.significance(attn, base), m, k)
    elif path == "torch.ops":
        res = torch.ops.power_bert.extract(hidden, attn, m, k)
    else:
        res = reference.extract(hidden, attn, m, k)
    out, index, out_mask = res
    assert torch.equal(index, want.index) and torch.equal(out, want.out)
    assert out_mask.dtype == mask_dtype and not out_mask.requires_grad
    assert torch.equal(out_mask.view(torch.uint8) if mask_dtype.itemsize == 1 else out_mask.to(torch.float64),
                       (want.mask * 2).to(mask_dtype).view(torch.uint8) if mask_dtype.itemsize == 1
                       else (want.mask * 2).to(torch.float64))


def test_non_contiguous_inputs(device):
    B, H, N, D, k = 3, 2, 9, 6, 4
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, torch.float32, device)
    hidden = make_hidden(B, D, N, torch.float32, device).transpose(1, 2)  # [B, N, D], strided
    assert not hidden.is_contiguous()
    res = power_bert_ops.extract(hidden, attn, mask, k)
    want = power_bert_ops.extract(hidden.contiguous(), attn, mask, k)
    assert torch.equal(res.out, want.out) and torch.equal(res.index, want.index)


def test_reference_backend_agrees(device):
    B, H, N, D, k = 2, 3, 12, 5, 6
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, torch.float64, device)
    hidden = make_hidden(B, N, D, torch.float64, device)
    a = power_bert_ops.extract(hidden, attn, mask, k)
    b = power_bert_ops.extract(hidden, attn, mask, k, backend="reference")
    assert torch.equal(a.index, b.index) and torch.equal(a.out, b.out)


def test_empty_batch(device):
    hidden = torch.empty(0, 5, 3, device=device)
    attn = torch.empty(0, 2, 5, 5, device=device)
    mask = torch.empty(0, 5, device=device, dtype=torch.bool)
    res = power_bert_ops.extract(hidden, attn, mask, 2)
    assert res.out.shape == (0, 2, 3) and res.index.shape == (0, 2) and res.mask.shape == (0, 2)


def test_reference_selection_has_static_shapes_and_no_host_sync():
    # Meta tensors carry no data, and torch.compile(fullgraph=True) refuses data-dependent
    # shapes: both work only if select_positions never reads the tensors on the host (a boolean
    # index such as order[order != 0] does). The CUDA kernel's fallback (no CUDA build) is it.
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 20, generator=g).round(decimals=1)  # ties
    scores[1, 5] = float("nan")
    mask = (torch.arange(20)[None, :] < torch.tensor([20, 15, 9, 4, 1, 20])[:, None]).long()
    hidden = torch.randn(6, 20, 8, generator=g)
    assert reference.select_positions(scores.to("meta"), mask.to("meta"), 5).shape == (6, 5)
    compiled = torch.compile(reference.select_positions, fullgraph=True, backend="eager")
    for k in (1, 3, 9, 20):
        want = torch.ops.power_bert.extract_scored(hidden, scores, mask, k)
        assert torch.equal(compiled(scores, mask, k), want[1])
        for a, b in zip(reference.extract_scored(hidden, scores, mask, k), want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reference_extract_backward_equals_kernel(device):
    B, n, k, D = 3, 9, 4, 5
    index = torch.stack([torch.randperm(n)[:k].sort().values for _ in range(B)]).to(device)
    g = torch.randn(B, k, D, device=device)
    torch.testing.assert_close(reference.extract_backward(g, index, n),
                               torch.ops.power_bert.extract_backward(g, index, n), rtol=0, atol=0)
