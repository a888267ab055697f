"""Random inputs and comparison helpers for the op tests."""
from __future__ import annotations

import pytest
import torch

from power_bert_ops import reference

# (B, H, N, D, k): odd N and D, B = 1, k = 1, k = N, N not a multiple of any block size.
SHAPES = [
    (1, 1, 1, 1, 1),
    (1, 3, 5, 7, 1),
    (2, 2, 7, 5, 7),
    (3, 4, 33, 17, 9),
    (4, 12, 64, 40, 16),
    (2, 3, 130, 9, 65),
]

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
PADDINGS = ["none", "random", "short"]


def over_inputs(dtypes=FLOAT_DTYPES, shapes=SHAPES, paddings=PADDINGS):
    """Parametrises an op test over every dtype x shape x padding (arguments ``dtype``, ``shape``
    and ``padding``; test ids ``[padding-shape-dtype]``)."""
    def parametrise(test):
        test = pytest.mark.parametrize("padding", paddings)(test)
        test = pytest.mark.parametrize("shape", shapes, ids=str)(test)
        return pytest.mark.parametrize("dtype", dtypes, ids=str)(test)
    return parametrise


def make_mask(B: int, N: int, padding: str, device, dtype=torch.int64, min_len: int = 1) -> torch.Tensor:
    """Right-padded mask [B, N]. padding: 'none' (all real), 'random' (random lengths >= 1),
    'short' (every row shorter than N // 2 + 1, so often fewer real tokens than k),
    'holes' (a random length, and padding scattered before it too; the first token real)."""
    if padding == "none":
        lengths = torch.full((B,), N)
    elif padding == "random":
        lengths = torch.randint(min_len, N + 1, (B,))
    elif padding == "short":
        lengths = torch.randint(min_len, max(min_len, N // 2) + 1, (B,))
    elif padding == "holes":
        lengths = torch.randint(min_len, N + 1, (B,))
        mask = (torch.arange(N)[None, :] < lengths[:, None]) & (torch.rand(B, N) < 0.7)
        mask[:, 0] = True
        return mask.to(device=device, dtype=dtype)
    else:
        raise ValueError(padding)
    mask = torch.arange(N)[None, :] < lengths[:, None]
    return mask.to(device=device, dtype=dtype)


def make_attention(B: int, H: int, N: int, mask: torch.Tensor, dtype, device, sharp: float = 3.0) -> torch.Tensor:
    """Softmax attention probabilities [B, H, N, N] with a key-padding mask (padded query rows
    are arbitrary rows of probabilities too, as in real models)."""
    logits = torch.randn(B, H, N, N, device=device, dtype=torch.float64) * sharp
    bias = torch.where(mask.bool(), 0.0, float("-inf")).to(device=device, dtype=torch.float64)
    return torch.softmax(logits + bias[:, None, None, :], dim=-1).to(dtype)


def make_hidden(B: int, N: int, D: int, dtype, device) -> torch.Tensor:
    return torch.randn(B, N, D, device=device, dtype=torch.float64).to(dtype)


def sig_tolerance(attn: torch.Tensor) -> float:
    H, N = attn.shape[1], attn.shape[2]
    return 2e-6 * H * N + 1e-6


def assert_selection_valid(index, scores_ref, mask, k, atol):
    """index must equal the reference selection from float64 scores, except that positions
    whose reference scores lie within ``atol`` of each other may swap (rounding of the sums)."""
    ref = reference.select_positions(scores_ref, mask, k)
    assert index.shape == ref.shape and index.dtype == torch.int64
    index, ref = index.cpu(), ref.cpu()
    scores_ref, real = scores_ref.cpu().double(), (mask != 0).cpu()
    for b in (index != ref).any(dim=1).nonzero().flatten().tolist():
        got, want = set(index[b].tolist()), set(ref[b].tolist())
        assert index[b, 0] == 0 and index[b].tolist() == sorted(got) and len(got) == k, index[b]
        differ = sorted((got - want) | (want - got))
        assert bool(real[b, differ].all()), f"row {b}: padding/real swapped at {differ}"
        vals = scores_ref[b, differ]
        assert float(vals.max() - vals.min()) <= atol, f"row {b}: {differ} scores {vals.tolist()} not a near-tie"
