"""CPU benchmarks of the power_bert ops against their PyTorch compositions (same run).

    python -m pytest bench/bench_ops_cpu.py --benchmark-json=bench/results/ops_cpu.json
    python bench/report.py bench/results/ops_cpu.json

Issue target (2 cores, B=32, H=12, N=128, D=768, fp32): fused extract >= 3x faster than the
composition; extract_scored and soft_extract faster than theirs. Shapes: batch B, heads H,
sequence N, hidden D, kept rows k = N/2.

Each forward group also times a ``floor``: the plainest PyTorch pass that touches the same bytes
(one sum over the probabilities, one copy of the kept rows, one multiply over hidden), so the
report gives each kernel's fraction of its memory floor (floor time / kernel time).
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
@pytest.mark.parametrize("impl", ["power_bert", "composition", "floor"])
def test_extract(benchmark, data, impl):
    hidden, attn, mask, _, _ = data
    fn = {"power_bert": ops.extract, "composition": compositions.extract,
          # read the probabilities once, write k rows: what any extract must at least do
          "floor": lambda h, a, m, k: (a.sum(dim=(1, 2)), h[:, :k].clone())}[impl]
    benchmark.extra_info.update(shape=f"B={B} H={H} N={N} D={D} k={K}", bytes=attn.nbytes + 2 * B * K * D * 4)
    benchmark(fn, hidden, attn, mask, K)


@pytest.mark.benchmark(group="significance")
@pytest.mark.parametrize("impl", ["power_bert", "composition", "floor"])
def test_significance(benchmark, data, impl):
    _, attn, mask, _, _ = data
    fn = {
        "power_bert": lambda: ops.significance(attn, mask),
        "composition": lambda: compositions.significance(attn, mask),
        "floor": lambda: attn.sum(dim=(1, 2)),  # one plain pass over the probabilities
    }[impl]
    benchmark.extra_info.update(shape=f"B={B} H={H} N={N}", bytes=attn.nbytes)
    benchmark(fn)


@pytest.mark.benchmark(group="extract_scored")
@pytest.mark.parametrize("impl", ["power_bert", "composition", "floor"])
def test_extract_scored(benchmark, data, impl):
    hidden, _, mask, scores, _ = data
    fn = {"power_bert": ops.extract_scored, "composition": compositions.extract_scored,
          "floor": lambda h, s, m, k: h[:, :k].clone()}[impl]  # copy k rows per sequence
    benchmark.extra_info.update(shape=f"B={B} N={N} D={D} k={K}", bytes=2 * B * K * D * 4)
    benchmark(fn, hidden, scores, mask, K)


@pytest.mark.benchmark(group="soft_extract")
@pytest.mark.parametrize("impl", ["power_bert", "composition", "floor"])
def test_soft_extract(benchmark, data, impl):
    hidden, _, mask, scores, retention = data
    weight = torch.rand(B, N, 1)
    fn = {"power_bert": ops.soft_extract, "composition": compositions.soft_extract,
          "floor": lambda h, s, m, r: h * weight}[impl]  # scale each row: read hidden, write out
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
