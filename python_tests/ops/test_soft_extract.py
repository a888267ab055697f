"""power_bert.soft_extract and its backward (SPEC 1.3) against reference.soft_extract."""
import pytest
import torch

import power_bert_ops
from power_bert_ops import reference

from inputs import make_hidden, make_mask, over_inputs

TOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def _scores(B, N, device, ties: bool):
    if ties:
        s = torch.randint(-2, 3, (B, N), device=device).float()
        s[torch.rand(B, N, device=device) < 0.1] = float("nan")
        return s
    return torch.randn(B, N, device=device)


@over_inputs()
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_forward_backward_match_reference(device, dtype, shape, padding, ties):
    B, _, N, D, _ = shape
    mask = make_mask(B, N, padding, device)
    scores = _scores(B, N, device, ties)
    hidden = make_hidden(B, N, D, dtype, device).requires_grad_()
    retention = torch.rand(N, device=device, dtype=torch.float32).requires_grad_()
    got = power_bert_ops.soft_extract(hidden, scores, mask, retention)
    assert got.dtype == dtype and got.shape == (B, N, D)
    ref_h = hidden.detach().clone().requires_grad_()
    ref_r = retention.detach().clone().requires_grad_()
    want = reference.soft_extract(ref_h, scores, mask, ref_r)
    tol = TOL[dtype]
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    grad = make_hidden(B, N, D, dtype, device)
    gh, gr = torch.autograd.grad(got, (hidden, retention), grad)
    wh, wr = torch.autograd.grad(want, (ref_h, ref_r), grad)
    torch.testing.assert_close(gh, wh, rtol=tol, atol=tol)
    torch.testing.assert_close(gr, wr, rtol=max(tol, 1e-5), atol=max(tol, 1e-5) * B * D)


def test_all_ones_retention_is_identity(device):
    B, N, D = 3, 10, 4
    mask = make_mask(B, N, "random", device)
    hidden = make_hidden(B, N, D, torch.float32, device)
    out = power_bert_ops.soft_extract(hidden, torch.randn(B, N, device=device), mask, torch.ones(N, device=device))
    assert torch.equal(out, hidden)


def test_rank_scaling_is_by_rank_not_position(device):
    hidden = torch.ones(1, 4, 1, device=device)
    scores = torch.tensor([[0.1, 5.0, 3.0, 7.0]], device=device)
    mask = torch.tensor([[1, 1, 1, 0]], device=device)  # position 3 is padding: ranked last
    retention = torch.tensor([1.0, 0.5, 0.25, 0.125], device=device)
    out = power_bert_ops.soft_extract(hidden, scores, mask, retention)
    # ranks: pos1 (5.0) -> 0, pos2 (3.0) -> 1, pos0 (0.1) -> 2, pos3 (padding) -> 3
    assert out.flatten().tolist() == [0.25, 1.0, 0.5, 0.125]


def test_gradcheck_float64(device):
    B, N, D = 2, 6, 3
    mask = make_mask(B, N, "random", device)
    scores = torch.randn(B, N, device=device, dtype=torch.float64)
    hidden = make_hidden(B, N, D, torch.float64, device).requires_grad_()
    retention = torch.rand(N, device=device, dtype=torch.float64).requires_grad_()
    fn = lambda h, r: power_bert_ops.soft_extract(h, scores, mask, r)
    assert torch.autograd.gradcheck(fn, (hidden, retention))


def test_double_backward_is_a_clear_error(device):
    B, N, D = 1, 4, 2
    hidden = torch.randn(B, N, D, device=device, dtype=torch.float64, requires_grad=True)
    r = torch.rand(N, device=device, dtype=torch.float64, requires_grad=True)
    out = power_bert_ops.soft_extract(hidden, torch.randn(B, N, device=device), torch.ones(B, N, device=device), r)
    (g,) = torch.autograd.grad(out.sum(), r, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_retention_float64_with_float32_hidden(device):
    B, N, D = 2, 5, 3
    mask = make_mask(B, N, "none", device)
    scores = torch.randn(B, N, device=device)
    hidden = make_hidden(B, N, D, torch.float32, device)
    r = torch.rand(N, device=device, dtype=torch.float64, requires_grad=True)
    out = power_bert_ops.soft_extract(hidden, scores, mask, r)
    out.sum().backward()
    assert out.dtype == torch.float32 and r.grad.dtype == torch.float64


def test_empty_batch(device):
    out = power_bert_ops.soft_extract(
        torch.empty(0, 4, 2, device=device), torch.empty(0, 4, device=device), torch.empty(0, 4, device=device),
        torch.ones(4, device=device),
    )
    assert out.shape == (0, 4, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_reference_backward_equals_autograd_and_kernel(device, dtype):
    # reference.soft_extract_backward (the CUDA kernel's fallback without a CUDA build) against
    # autograd of reference.soft_extract and against the op's backward kernel.
    B, N, D = 3, 11, 6
    hidden = make_hidden(B, N, D, dtype, device).requires_grad_(True)
    scores = torch.randn(B, N, device=device).round(decimals=1)
    mask = make_mask(B, N, "random", device)
    retention = torch.rand(N, device=device).requires_grad_(True)
    g = torch.randn(B, N, D, device=device).to(dtype)
    want = torch.autograd.grad(reference.soft_extract(hidden, scores, mask, retention), (hidden, retention), g)
    got = reference.soft_extract_backward(g, hidden.detach(), scores, mask, retention.detach())
    kernel = torch.ops.power_bert.soft_extract_backward(g, hidden.detach(), scores, mask, retention.detach())
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    for a, b, c in zip(got, want, kernel):
        assert a.dtype == b.dtype == c.dtype
        torch.testing.assert_close(a, b, **tol)
        torch.testing.assert_close(a, c, **tol)
