"""End-to-end CPU benchmark on texts of mixed length: PoWER-BERT against the dense model a
deployer runs, both on length-bucketed batches cut to their longest row (SPEC 6), with the
padded-to-N figures beside.

    python -m pytest bench/bench_lengths_cpu.py -q -p no:cacheprovider \
        --benchmark-json=bench/results/lengths_cpu.json

Configuration: all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, FFN 1536) with random
weights (speed does not depend on weight values), fp32, N = 64, batch 64, 512 examples whose real
lengths are drawn (seeded) like sentence data: log-normal with median 24 tokens, clipped to
[4, 64] (mean about 26, as Rotten Tomatoes at N = 64). Each case is timed by
``power_bert_ops.training.speed.speed_report``, the function behind ``power-bert benchmark``:
full passes of both models over the same examples, alternated, median of 3, bucketed and padded.

Cases:
* ``relative-2x`` / ``relative-3x``: length-relative retention (the default) with a geometric
  configuration whose FLOP bound against bucketed dense is 2x / 3x;
* ``absolute-3x-padded``: the paper's absolute ℓ with a padded-to-N bound of 3x, the setting
  whose speed mostly comes from padding.

Each row's extra_info holds both regimes' measured speed-up, FLOP bound and their ratio; with
``--benchmark-json=F`` the plot of speed-up against bound is written beside F.
"""
import copy
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from power_bert_ops.flops import retention_for_bound  # noqa: E402
from power_bert_ops.modeling import PowerBertForSequenceClassification  # noqa: E402
from compositions import dense_bert  # noqa: E402
from speed_cases import examples_of_lengths, plot_spec, time_case  # noqa: E402

N, BATCH, EXAMPLES, REPEATS = 64, 64, 512, 3
CASES = [("relative", "bucketed", 2.0), ("relative", "bucketed", 3.0), ("absolute", "padded", 3.0)]
_points = []


def sentence_lengths(n: int, seed: int = 0) -> list[int]:
    """Seeded log-normal lengths (median 24 tokens, sigma 0.5) clipped to [4, N]."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g)
    return [int(min(N, max(4, round(24 * math.exp(0.5 * float(v)))))) for v in z]


@pytest.fixture(scope="module")
def setup():
    dense = dense_bert(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    cfg = dense.config
    lengths = sentence_lengths(EXAMPLES)
    return cfg, dense, examples_of_lengths(lengths, N, cfg.vocab_size), lengths


@pytest.mark.benchmark(group=f"MiniLM-shaped, fp32, N={N}, batch {BATCH}, {EXAMPLES} sentence-length examples")
@pytest.mark.parametrize("scale,against,target", CASES, ids=[f"{s}-{t:g}x-{a}" for s, a, t in CASES])
def test_bucketed_speedup(benchmark, setup, scale, against, target):
    cfg, dense, data, lengths = setup
    # a geometric configuration whose bound against bucketed dense (or dense at N) is the target
    ell = retention_for_bound(cfg, N, target, **({} if against == "padded" else dict(lengths=lengths, scale=scale)))
    power = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(dense), retention=ell, sequence_length=N,
                                                             retention_scale=scale).eval()
    # --benchmark-disable (the suite's smoke run): one batch, one pass, to check the script
    rows, repeats = (data[:BATCH], 1) if benchmark.disabled else (data, REPEATS)
    result = time_case(benchmark, dense, power, rows, BATCH, repeats, _points)
    assert result["flop_bound"] > 1.0 and result["padded"]["flop_bound"] >= result["flop_bound"]


def speedup_plot():
    """The module's plot, drawn by conftest.py after the benchmarks (None: nothing measured)."""
    return plot_spec(_points, f"MiniLM-shaped fp32 N={N}, sentence lengths (mean {sum(sentence_lengths(EXAMPLES)) / EXAMPLES:.0f})")
