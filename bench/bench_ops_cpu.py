"""CPU benchmarks of the power_bert ops against their PyTorch compositions (same run).

    python -m pytest bench/bench_ops_cpu.py --benchmark-json=bench/results/ops_cpu.json
    python bench/report.py bench/results/ops_cpu.json

Issue target (2 cores, B=32, H=12, N=128, D=768, fp32): fused extract >= 3x faster than the
composition; extract_scored and soft_extract faster than theirs. Shapes: batch B, heads H,
sequence N, hidden D, kept rows k = N/2.
"""
import pytest
import torch

import power_bert_ops
import compositions

B, H, N, D = 32, 12, 128, 768
K = N // 2


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(N // 2, N + 1, (B,), generator=g)
    lengths[0] = N
    mask = (torch.arange(N)[None, :] < lengths[:, None]).long()
    bias = torch.where(mask.bool(), 0.0, float("-inf"))[:, None, None, :]
    attn = torch.softmax(torch.randn(B, H, N, N, generator=g) * 3 + bias, dim=-1)
    hidden = torch.randn(B, N, D, generator=g)
    scores = torch.randn(B, N, generator=g)
    retention = torch.rand(N, generator=g)
    return hidden, attn, mask, scores, retention


ops = torch.ops.power_bert


@pytest.mark.benchmark(group="extract")
@pytest.mark.parametrize("impl", ["power_bert", "composition"])
def test_extract(benchmark, data, impl):
    hidden, attn, mask, _, _ = data
    fn = ops.extract if impl == "power_bert" else compositions.extract
    benchmark.extra_info.update(shape=f"B={B} H={H} N={N} D={D} k={K}", bytes=attn.nbytes + 2 * B * K * D * 4)
    benchmark(fn, hidden, attn, mask, K)


@pytest.mark.benchmark(group="significance")
@pytest.mark.parametrize("impl", ["power_bert", "composition", "plain_sum"])
def test_significance(benchmark, data, impl):
    _, attn, mask, _, _ = data
    fn = {
        "power_bert": lambda: ops.significance(attn, mask),
        "composition": lambda: compositions.significance(attn, mask),
        "plain_sum": lambda: attn.sum(dim=(1, 2)),  # one pass over the probabilities: the floor
    }[impl]
    benchmark.extra_info.update(shape=f"B={B} H={H} N={N}", bytes=attn.nbytes)
    benchmark(fn)


@pytest.mark.benchmark(group="extract_scored")
@pytest.mark.parametrize("impl", ["power_bert", "composition"])
def test_extract_scored(benchmark, data, impl):
    hidden, _, mask, scores, _ = data
    fn = ops.extract_scored if impl == "power_bert" else compositions.extract_scored
    benchmark.extra_info.update(shape=f"B={B} N={N} D={D} k={K}", bytes=2 * B * K * D * 4)
    benchmark(fn, hidden, scores, mask, K)


@pytest.mark.benchmark(group="soft_extract")
@pytest.mark.parametrize("impl", ["power_bert", "composition"])
def test_soft_extract(benchmark, data, impl):
    hidden, _, mask, scores, retention = data
    fn = ops.soft_extract if impl == "power_bert" else compositions.soft_extract
    benchmark.extra_info.update(shape=f"B={B} N={N} D={D}", bytes=2 * hidden.nbytes)
    benchmark(fn, hidden, scores, mask, retention)


@pytest.mark.benchmark(group="soft_extract_backward")
@pytest.mark.parametrize("impl", ["power_bert", "composition"])
def test_soft_extract_backward(benchmark, data, impl):
    hidden, _, mask, scores, retention = data
    h = hidden.clone().requires_grad_()
    r = retention.clone().requires_grad_()
    fn = power_bert_ops.soft_extract if impl == "power_bert" else compositions.soft_extract
    out = fn(h, scores, mask, r)
    grad = torch.randn_like(out)
    benchmark.extra_info.update(shape=f"B={B} N={N} D={D}", bytes=3 * hidden.nbytes)
    benchmark(lambda: torch.autograd.grad(out, (h, r), grad, retain_graph=True))
