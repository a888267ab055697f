"""torch.library.opcheck (schema, fake kernels, autograd registration, AOT dispatch) and
torch.compile(fullgraph=True) on the native ops."""
import pytest
import torch

import power_bert_ops

from inputs import make_attention, make_hidden, make_mask

ops = torch.ops.power_bert


def _inputs(device, dtype=torch.float32, B=2, H=2, N=9, D=5, requires_grad=False):
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, dtype, device)
    hidden = make_hidden(B, N, D, dtype, device).requires_grad_(requires_grad)
    scores = torch.randn(B, N, device=device)
    retention = torch.rand(N, device=device, dtype=dtype).requires_grad_(requires_grad)
    return hidden, attn, mask, scores, retention


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck(device, dtype, requires_grad):
    hidden, attn, mask, scores, retention = _inputs(device, dtype, requires_grad=requires_grad)
    torch.library.opcheck(ops.significance.default, (attn, mask, True))
    torch.library.opcheck(ops.extract.default, (hidden, attn, mask, 4, True))
    torch.library.opcheck(ops.extract.default, (hidden, attn, mask, 1, False))
    torch.library.opcheck(ops.extract_scored.default, (hidden, scores, mask, 9))
    torch.library.opcheck(ops.soft_extract.default, (hidden, scores, mask, retention))
    index = ops.extract(hidden.detach(), attn, mask, 4)[1]
    torch.library.opcheck(ops.extract_backward.default, (torch.randn(2, 4, 5, device=device, dtype=dtype), index, 9))
    g = torch.randn_like(hidden.detach())
    torch.library.opcheck(ops.soft_extract_backward.default, (g, hidden.detach(), scores, mask, retention.detach()))


def test_fake_kernels_check_arguments():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        hidden, attn, mask = torch.randn(2, 6, 4), torch.randn(2, 2, 6, 6), torch.ones(2, 6)
        out, index, out_mask = ops.extract(hidden, attn, mask, 3)
        assert out.shape == (2, 3, 4) and index.dtype == torch.int64 and out_mask.dtype == mask.dtype
        with pytest.raises(ValueError, match="`k` must satisfy"):
            ops.extract(hidden, attn, mask, 7)


def test_compile_fullgraph_matches_eager(device):
    hidden, attn, mask, scores, retention = _inputs(device, N=12, D=8)

    def layer(hidden, attn, mask, scores, retention):
        kept = power_bert_ops.extract(hidden, attn, mask, 5)
        soft = power_bert_ops.soft_extract(hidden, scores, mask, retention)
        again = power_bert_ops.extract_scored(kept.out * 2, scores.gather(1, kept.index), kept.mask, 3)
        return kept.out.sum(-1), kept.index, soft, again.out, power_bert_ops.significance(attn, mask)

    eager = layer(hidden, attn, mask, scores, retention)
    compiled = torch.compile(layer, fullgraph=True)(hidden, attn, mask, scores, retention)
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e)


def test_compile_backward_matches_eager(device):
    hidden, attn, mask, scores, retention = _inputs(device, N=10, D=6, requires_grad=True)

    def loss(hidden, retention):
        kept = power_bert_ops.extract(hidden, attn, mask, 4)
        soft = power_bert_ops.soft_extract(hidden, scores, mask, retention)
        return (kept.out ** 2).sum() + (soft * soft).sum()

    eager = torch.autograd.grad(loss(hidden, retention), (hidden, retention))
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(hidden, retention), (hidden, retention))
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e)
