"""CPU benchmark of power_bert.attention (attention + significance without the N x N matrix)
against eager attention followed by power_bert.significance of its probabilities (what a model
without the fused op does), and against scaled_dot_product_attention alone (no significance).

    python -m pytest bench/bench_attention_cpu.py --benchmark-json=bench/results/attention_cpu.json

Issue target (CPU, N=512): power_bert.attention not slower than eager attention + significance.
Shapes: B=4, H=12, N=512, d=64, fp32, random key-padding lengths in [N/2, N].

Short rows (group "attention short rows", ``-k short_rows``): what PoWER-BERT's later layers see
on sentences, B=64, H=12, d=32 (MiniLM), N in 8..64 real-length buckets (lengths in [3N/4, N]),
q/k/v as the model passes them (the [B, N, H, d] projections viewed as [B, H, N, d]); the op
with significance against SDPA without it.

``floor`` times one square matmul with the op's matmul FLOPs (4 B H N^2 d forward: q k^T and
P v; 8 B H N^2 d backward: the four gradient matmuls), i.e. those FLOPs at this machine's best
BLAS rate, so the report gives the op's fraction of its FLOP floor. Counted over every key; the
op skips padded keys, so it can beat the floor.
"""
import pytest
import torch
import torch.nn.functional as F

import power_bert_ops

B, H, N, d = 4, 12, 512, 64


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, N, d, generator=g) for _ in range(3))
    lengths = torch.randint(N // 2, N + 1, (B,), generator=g)
    mask = (torch.arange(N)[None, :] < lengths[:, None]).long()
    return q, k, v, mask


def square_matmul(flops):
    """A [S, S] @ [S, S] matmul doing about ``flops`` (2 S^3) multiply-adds: the FLOP floor."""
    side = round((flops / 2) ** (1 / 3))
    a, b = torch.randn(side, side), torch.randn(side, side)
    return lambda: a @ b


def eager_attention_with_significance(q, k, v, mask):
    bias = torch.where(mask.bool(), 0.0, float("-inf"))[:, None, None, :]
    probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias, dim=-1)
    return probs @ v, torch.ops.power_bert.significance(probs, mask)


@pytest.mark.benchmark(group="attention+significance")
@pytest.mark.parametrize("impl", ["power_bert", "composition", "sdpa_only", "floor"])
def test_attention(benchmark, data, impl):
    q, k, v, mask = data
    fn = {
        "floor": square_matmul(4 * B * H * N * N * d),
        "power_bert": lambda: torch.ops.power_bert.attention(q, k, v, mask),
        "composition": lambda: eager_attention_with_significance(q, k, v, mask),
        "sdpa_only": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bool()[:, None, None, :]),
    }[impl]
    benchmark.extra_info.update(shape=f"B={B} H={H} N={N} d={d}")
    benchmark(fn)


@pytest.mark.benchmark(group="attention backward")
@pytest.mark.parametrize("impl", ["power_bert", "composition", "floor"])
def test_attention_backward(benchmark, data, impl):
    q, k, v, mask = (t.clone().requires_grad_(t.is_floating_point()) for t in data)
    if impl == "floor":  # dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q: 8 B H N^2 d FLOPs
        benchmark.extra_info.update(shape=f"B={B} H={H} N={N} d={d}")
        benchmark(square_matmul(8 * B * H * N * N * d))
        return
    if impl == "power_bert":
        out = power_bert_ops.attention(q, k, v, mask, need_significance=False)[0]
    else:
        bias = torch.where(mask.bool(), 0.0, float("-inf"))[:, None, None, :]
        out = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5 + bias, dim=-1) @ v
    grad = torch.randn_like(out)
    benchmark.extra_info.update(shape=f"B={B} H={H} N={N} d={d}")
    benchmark(lambda: torch.autograd.grad(out, (q, k, v), grad, retain_graph=True))


SHORT_B, SHORT_H, SHORT_D = 64, 12, 32


@pytest.mark.benchmark(group="attention short rows")
@pytest.mark.parametrize("impl", ["power_bert", "sdpa_only"])
@pytest.mark.parametrize("n", [8, 16, 28, 48, 64])
def test_attention_short_rows(benchmark, n, impl):
    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(SHORT_B, n, SHORT_H, SHORT_D, generator=g).transpose(1, 2) for _ in range(3))
    lengths = torch.randint(max(1, n * 3 // 4), n + 1, (SHORT_B,), generator=g)
    mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
    fn = {
        "power_bert": lambda: torch.ops.power_bert.attention(q, k, v, mask),
        "sdpa_only": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bool()[:, None, None, :]),
    }[impl]
    benchmark.extra_info.update(shape=f"B={SHORT_B} H={SHORT_H} N={n} d={SHORT_D}")
    benchmark(fn)
