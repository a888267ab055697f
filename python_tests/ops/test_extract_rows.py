"""extract / extract_scored with a per-row k (an int64 [B] tensor of rows kept per example):
every backend against the reference, the kept set equal to the plain selection at that row's k,
gradients, opcheck, torch.compile with a static width, and the bad-input contract."""
import pytest
import torch

import power_bert_ops
from power_bert_ops import reference

from inputs import SHAPES, make_attention, make_hidden, make_mask, over_inputs

ops = torch.ops.power_bert


def _row_k(B, width, device):
    return torch.randint(1, width + 1, (B,), device=device)


def _tied_scores(B, N, dtype, device):
    scores = torch.randint(-3, 4, (B, N), device=device).to(dtype)
    scores[torch.rand(B, N, device=device) < 0.1] = -0.0
    scores[torch.rand(B, N, device=device) < 0.05] = float("nan")
    return scores


def _check_rows(res, hidden, scores, mask, row_k):
    """Slots < row_k[b] hold exactly the plain selection at k = row_k[b] (ascending, [CLS] first,
    mask gathered); the other slots hold the next-ranked positions ascending with mask 0."""
    out, index, out_mask = res
    B, W = index.shape
    for b in range(B):
        kb = int(row_k[b])
        plain = reference.select_positions(scores[b:b + 1], mask[b:b + 1], kb)[0]
        assert torch.equal(index[b, :kb], plain)
        rest_want = reference.select_positions(scores[b:b + 1], mask[b:b + 1], W)[0]
        rest_want = rest_want[~torch.isin(rest_want, plain)]
        assert torch.equal(index[b, kb:], rest_want)
        assert torch.equal(out_mask[b, :kb], mask[b, plain])
        assert (out_mask[b, kb:] == 0).all()
    assert torch.equal(out, hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1])))


@over_inputs()
def test_extract_scored_rows_equal_reference(device, dtype, shape, padding):
    B, _, N, D, k = shape
    mask = make_mask(B, N, padding, device)
    scores = _tied_scores(B, N, dtype, device)
    hidden = make_hidden(B, N, D, dtype, device)
    row_k = _row_k(B, k, device)
    got = power_bert_ops.extract_scored(hidden, scores, mask, row_k, width=k)
    want = reference.extract_scored(hidden, scores, mask, k, row_k)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    _check_rows(got, hidden, scores.float(), mask, row_k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_extract_rows_equal_reference(device, dtype, shape):
    B, H, N, D, k = shape
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, dtype, device)
    hidden = make_hidden(B, N, D, dtype, device)
    row_k = _row_k(B, k, device)
    got = power_bert_ops.extract(hidden, attn, mask, row_k, width=k)
    # The same significance on both sides: selection is compared exactly.
    want = reference.extract_scored(hidden, power_bert_ops.significance(attn, mask), mask, k, row_k)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_width_defaults_to_the_largest_k(device):
    B, N, D = 4, 12, 3
    mask = make_mask(B, N, "random", device)
    hidden, scores = make_hidden(B, N, D, torch.float32, device), torch.randn(B, N, device=device)
    row_k = torch.tensor([2, 5, 1, 3], device=device)
    res = power_bert_ops.extract_scored(hidden, scores, mask, row_k)
    assert res.out.shape == (B, 5, D)
    same = power_bert_ops.extract_scored(hidden, scores, mask, row_k, width=5)
    assert torch.equal(res.index, same.index)


def test_all_rows_at_width_is_the_plain_op(device):
    B, N, D, k = 3, 17, 4, 6
    mask = make_mask(B, N, "short", device)
    hidden, scores = make_hidden(B, N, D, torch.float32, device), torch.randn(B, N, device=device)
    rows = power_bert_ops.extract_scored(hidden, scores, mask, torch.full((B,), k, device=device))
    plain = power_bert_ops.extract_scored(hidden, scores, mask, k)
    for a, b in zip(rows, plain):
        assert torch.equal(a, b)


def test_gradcheck_float64_rows(device):
    B, H, N, D, k = 3, 2, 9, 4, 6
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, torch.float64, device)
    hidden = make_hidden(B, N, D, torch.float64, device).requires_grad_()
    row_k = _row_k(B, k, device)
    torch.autograd.gradcheck(lambda h: power_bert_ops.extract(h, attn, mask, row_k, width=k).out, (hidden,))
    scores = torch.randn(B, N, device=device, dtype=torch.float64)
    torch.autograd.gradcheck(lambda h: power_bert_ops.extract_scored(h, scores, mask, row_k, width=k).out, (hidden,))


def test_opcheck_rows(device):
    B, H, N, D, k = 3, 2, 9, 5, 6
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, torch.float32, device)
    hidden = make_hidden(B, N, D, torch.float32, device).requires_grad_()
    scores = torch.randn(B, N, device=device)
    row_k = _row_k(B, k, device)
    torch.library.opcheck(ops.extract.default, (hidden, attn, mask, k, True, row_k))
    torch.library.opcheck(ops.extract_scored.default, (hidden, scores, mask, k, row_k))


def test_compile_with_static_width(device):
    B, N, D, k = 4, 16, 8, 7
    mask = make_mask(B, N, "random", device)
    hidden, scores = make_hidden(B, N, D, torch.float32, device), torch.randn(B, N, device=device)
    row_k = _row_k(B, k, device)

    def f(h, s, m, r):
        res = power_bert_ops.extract_scored(h, s, m, r, width=k)
        return res.out * 2, res.index, res.mask

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(hidden, scores, mask, row_k)
    want = f(hidden, scores, mask, row_k)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_compile_without_width_is_refused(device):
    B, N, D = 2, 6, 3
    mask = make_mask(B, N, "none", device)
    hidden, scores = make_hidden(B, N, D, torch.float32, device), torch.randn(B, N, device=device)
    f = torch.compile(lambda h, s, m, r: power_bert_ops.extract_scored(h, s, m, r).out, fullgraph=True,
                      backend="aot_eager")
    with pytest.raises(Exception, match="needs `width=`"):
        f(hidden, scores, mask, torch.tensor([1, 2], device=device))


@pytest.mark.parametrize("bad, match", [
    (lambda B, d: torch.ones(B + 1, dtype=torch.int64, device=d), r"`k` must be \[B\] = \[3\]"),
    (lambda B, d: torch.ones(B, 1, dtype=torch.int64, device=d), r"`k` must be \[B\] = \[3\]"),
    (lambda B, d: torch.ones(B, dtype=torch.int32, device=d), "`k` must be int64"),
    (lambda B, d: torch.tensor([1, 0, 2], device=d), r"1 <= k\[b\] <= 8, got k\[1\] = 0"),
    (lambda B, d: torch.tensor([1, 9, 2], device=d), r"1 <= k\[b\] <= 8, got k\[1\] = 9"),
])
def test_bad_row_k_refused(device, bad, match):
    B, N, D = 3, 8, 2
    mask = make_mask(B, N, "none", device)
    hidden, scores = make_hidden(B, N, D, torch.float32, device), torch.randn(B, N, device=device)
    attn = make_attention(B, 1, N, mask, torch.float32, device)
    with pytest.raises((ValueError, TypeError), match=match):
        power_bert_ops.extract_scored(hidden, scores, mask, bad(B, device))
    with pytest.raises((ValueError, TypeError), match=match):
        power_bert_ops.extract(hidden, attn, mask, bad(B, device))


def test_bad_width_refused(device):
    B, N, D = 3, 8, 2
    mask = make_mask(B, N, "none", device)
    hidden, scores = make_hidden(B, N, D, torch.float32, device), torch.randn(B, N, device=device)
    with pytest.raises(ValueError, match=r"1 <= k\[b\] <= 2, got k\[1\] = 3"):
        power_bert_ops.extract_scored(hidden, scores, mask, torch.tensor([1, 3, 2], device=device), width=2)
    with pytest.raises(ValueError, match=r"1 <= k <= N = 8, got k = 9"):
        power_bert_ops.extract_scored(hidden, scores, mask, torch.tensor([1, 3, 2], device=device), width=9)
    with pytest.raises(TypeError, match="`width` goes with a per-row `k` tensor"):
        power_bert_ops.extract_scored(hidden, scores, mask, 2, width=2)
    # The op itself refuses a row_k above its width (C++ check; the kernels never see it).
    if device == "cpu":
        with pytest.raises(ValueError, match=r"`row_k` must satisfy 1 <= row_k\[b\] <= k = 2"):
            ops.extract_scored(hidden, scores, mask, 2, torch.tensor([1, 3, 2]))
