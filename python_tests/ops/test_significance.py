"""power_bert.significance (SPEC 1.1) against reference.significance."""
import pytest
import torch

import power_bert_ops
from power_bert_ops import reference

from inputs import make_attention, make_mask, over_inputs, sig_tolerance


@over_inputs()
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


# ---------------------------------------------------------------------------------------------
# A non-finite diagonal is skipped, not summed and subtracted (inf - inf = NaN), on every
# backend
# ---------------------------------------------------------------------------------------------
INF, NAN = float("inf"), float("nan")


def _skipping_diagonal(attn, mask):
    """SPEC 1.1 with exclude_self, written independently: the diagonal and padded query rows
    zeroed before the sum, float64."""
    N = attn.shape[-1]
    drop = (mask == 0)[:, None, :, None] | torch.eye(N, dtype=torch.bool, device=attn.device)
    sig = attn.double().masked_fill(drop, 0).sum(dim=(1, 2))
    return sig.masked_fill(mask == 0, -INF)


@pytest.mark.parametrize("value", [INF, -INF, NAN], ids=str)
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_non_finite_diagonal_does_not_poison_its_column(device, backend, value):
    a = torch.full((1, 1, 4, 4), 0.25, device=device)
    a[0, 0, 1, 1] = value
    ones = torch.ones(1, 4, device=device)
    assert power_bert_ops.significance(a, ones, backend=backend).tolist() == [[0.75, 0.75, 0.75, 0.75]]
    kept = power_bert_ops.extract(torch.randn(1, 4, 2, device=device), a, ones, 2, backend=backend).index
    assert kept.tolist() == [[0, 1]]  # four 0.75s: ties go to the lower position (a NaN would rank last)
    without = power_bert_ops.significance(a, ones, exclude_self=False, backend=backend)[0, 1]
    assert not torch.isfinite(without)  # counted when the diagonal is not excluded


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("B,H,N", [(1, 3, 300), (5, 2, 37), (2, 4, 9)])
def test_non_finite_diagonals_across_heads_and_blocks(device, dtype, B, H, N):
    """Several rows' diagonals inf or NaN, in several heads, with padding; N = 300 splits the
    columns into blocks on the CPU and exercises the four-row groups and their tails."""
    mask = make_mask(B, N, "random", device, min_len=N // 2)
    attn = make_attention(B, H, N, mask, dtype, device)
    for b in range(B):
        for h in range(H):
            for q, v in ((1 + h, INF), (N // 2 - 1 - h, NAN), (3 * h + 2, INF)):
                attn[b, h, q % N, q % N] = v
    want = _skipping_diagonal(attn, mask)
    real = mask.bool()
    for backend in ("auto", "reference"):
        got = power_bert_ops.significance(attn, mask, backend=backend)
        assert torch.isfinite(got[real]).all(), backend
        torch.testing.assert_close(got[real].double(), want[real], rtol=1e-5, atol=sig_tolerance(attn))


def test_non_finite_diagonal_triton_extract():
    """Triton's fused extract (interpreted on CPU without a GPU) skips the diagonal too."""
    pytest.importorskip("triton")
    from power_bert_ops.triton import extract_triton as et

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.full((1, 1, 4, 4), 0.25, device=device)
    a[0, 0, 1, 1] = INF
    ones = torch.ones(1, 4, device=device)
    assert et.extract(torch.randn(1, 4, 2, device=device), a, ones, 2)[1].tolist() == [[0, 1]]
    B, H, N, k = 2, 2, 11, 4
    mask = make_mask(B, N, "random", device, min_len=8)
    attn = make_attention(B, H, N, mask, torch.float32, device)
    attn[:, :, 3, 3] = INF
    attn[:, 1, 5, 5] = NAN
    hidden = torch.randn(B, N, 3, device=device)
    _, index, _ = et.extract(hidden, attn, mask, k)
    assert torch.equal(index, reference.select_positions(_skipping_diagonal(attn, mask), mask, k))


def test_non_finite_diagonal_onnx():
    """The ONNX translation (stock onnxruntime) skips the diagonal too."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from power_bert_ops.export import onnx_translation_table

    class Sig(torch.nn.Module):
        def forward(self, attn, mask):
            return torch.ops.power_bert.significance(attn, mask, True)

    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[1, 4:] = 0
    attn = make_attention(2, 3, 6, mask, torch.float32, "cpu")
    attn[0, 0, 1, 1] = INF
    attn[1, 2, 2, 2] = NAN
    program = torch.onnx.export(Sig(), (attn, mask), dynamo=True, custom_translation_table=onnx_translation_table())
    sess = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), (attn, mask))})
    want = _skipping_diagonal(attn, mask).float()
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-6, atol=1e-6)
