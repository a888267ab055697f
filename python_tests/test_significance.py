"""power_bert.significance (SPEC 1.1) against reference.significance."""
import pytest
import torch

import power_bert_ops
from power_bert_ops import reference

from inputs import FLOAT_DTYPES, SHAPES, make_attention, make_mask, sig_tolerance


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("padding", ["none", "random", "short"])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_matches_reference(device, dtype, shape, padding, exclude_self):
    B, H, N, _, _ = shape
    mask = make_mask(B, N, padding, device)
    attn = make_attention(B, H, N, mask, dtype, device)
    got = power_bert_ops.significance(attn, mask, exclude_self)
    want = reference.significance(attn.double(), mask, exclude_self)
    assert got.dtype == torch.float32 and got.shape == (B, N)
    real = mask.bool()
    assert torch.isneginf(got[~real]).all(), "padding positions must be -inf"
    torch.testing.assert_close(got[real].double(), want[real].double(), rtol=1e-5, atol=sig_tolerance(attn))


def test_padded_queries_do_not_count(device):
    # An example's significance must not depend on how long its batch-mates are.
    B, H, N = 2, 3, 9
    mask = make_mask(B, N, "none", device)
    mask[0, 5:] = 0
    attn = make_attention(B, H, N, mask, torch.float32, device)
    alone = power_bert_ops.significance(attn[:1, :, :5, :5].contiguous(), mask[:1, :5])
    batched = power_bert_ops.significance(attn, mask)[:1, :5]
    torch.testing.assert_close(batched, alone, rtol=1e-6, atol=1e-6)


def test_exclude_self_subtracts_diagonal(device):
    B, H, N = 2, 4, 6
    mask = make_mask(B, N, "none", device)
    attn = make_attention(B, H, N, mask, torch.float64, device)
    diff = power_bert_ops.significance(attn, mask, False) - power_bert_ops.significance(attn, mask, True)
    torch.testing.assert_close(diff.double(), attn.diagonal(dim1=-2, dim2=-1).sum(1), rtol=1e-5, atol=1e-5)


def test_mask_dtypes_are_equivalent(device):
    B, H, N = 3, 2, 11
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, torch.float32, device)
    want = power_bert_ops.significance(attn, mask)
    for m in (mask.bool(), mask.float(), mask.to(torch.uint8), mask.half() * 3):
        torch.testing.assert_close(power_bert_ops.significance(attn, m), want, rtol=0, atol=0)


def test_non_contiguous_attention(device):
    B, H, N = 2, 3, 10
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, torch.float32, device)
    strided = attn.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    assert not strided.is_contiguous()
    torch.testing.assert_close(power_bert_ops.significance(strided, mask), power_bert_ops.significance(attn, mask))


def test_no_gradient(device):
    B, H, N = 2, 2, 5
    mask = make_mask(B, N, "none", device)
    attn = make_attention(B, H, N, mask, torch.float64, device).requires_grad_()
    assert not power_bert_ops.significance(attn, mask).requires_grad


def test_empty_batch(device):
    attn = torch.empty(0, 2, 5, 5, device=device)
    mask = torch.empty(0, 5, device=device)
    assert power_bert_ops.significance(attn, mask).shape == (0, 5)
