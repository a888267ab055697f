"""End-to-end CPU benchmark: PoWER-BERT (power_bert_ops.modeling) against Hugging Face
BertForSequenceClassification with SDPA attention, same weights, dtype, batch and N, one run.

    python -m pytest bench/bench_model_cpu.py --benchmark-json=bench/results/model_cpu.json
    python bench/report.py bench/results/model_cpu.json --baseline hf_sdpa

Configuration: bert-base-uncased's (12 layers, hidden 768, 12 heads, FFN 3072) with random weights
(speed does not depend on weight values), fp32, batch 8, N = 256, every token real, the paper's
RTE retention configuration (153, 125, 111, 105, 85, 80, 72, 48, 35, 27, 22, 5).

Issue targets: PoWER hard speed-up >= 0.95 x the SPEC 3 FLOP bound (3.37x); PoWER full <= 1.05x
Hugging Face's time. Each power_* entry's extra_info holds the FLOP bound, the speed-up measured
against hf_sdpa in this run (medians) and their ratio.

On a shared machine the three groups can see different background load, so
``test_interleaved`` also times hf / hard / full back to back in every round and reports the
medians and the median per-round ratios in its extra_info (its own time is one whole round). It
also times ``eager_hard``: SPEC 1.2 with the same weights in plain eager PyTorch (eager attention
probabilities, sum + topk + sort + gather, the W_o shortcut; ``bench/compositions.py``), the
version the issue says reaches 0.93 of the bound without our kernels.

``test_bound_sweep`` adds rows at N in {64, 128, 512} with geometric configurations whose
bound is about 2x, 3x and 4.5x (``power_bert_ops.flops.retention_for_bound``), timed the same
interleaved way; with ``--benchmark-json=F`` the plot of speed-up against bound for all rows
is written beside F (``model_cpu.png``).
"""
import copy
import os
import sys

import pytest
import torch

B, N = 8, 256
RTE = [153, 125, 111, 105, 85, 80, 72, 48, 35, 27, 22, 5]
ROUNDS = 7
IMPLS = ["hf_sdpa", "power_hard", "power_full"]  # hf first: the others compare against its median

transformers = pytest.importorskip("transformers")

from power_bert_ops.flops import retention_for_bound  # noqa: E402
from power_bert_ops.modeling import PowerBertForSequenceClassification, flop_bound  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compositions import dense_bert, eager_power_bert_logits  # noqa: E402

_medians = {}
_sweep_points = []  # for the plot: dicts of bound, speedup, label


@pytest.fixture(scope="module")
def models():
    hf = dense_bert(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    cfg = hf.config
    assert hf.config._attn_implementation == "sdpa"
    hard = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(hf), retention=RTE).eval()
    full = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(hf)).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, cfg.vocab_size, (B, N), generator=g)
    ids[:, 0] = 101
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "token_type_ids": torch.zeros_like(ids)}
    return {"hf_sdpa": hf, "power_hard": hard, "power_full": full}, batch, cfg


@pytest.mark.benchmark(group=f"BERT-base forward, fp32, B={B}, N={N}")
@pytest.mark.parametrize("impl", IMPLS)
def test_model_forward(benchmark, models, impl):
    mods, batch, cfg = models
    model = mods[impl]

    def run():
        with torch.inference_mode():
            return model(**batch).logits

    bound = flop_bound(cfg, RTE, N)
    benchmark.extra_info.update(shape=f"B={B} N={N} D=768 L=12 fp32", retention=RTE if impl == "power_hard" else None,
                                flop_bound=round(bound, 4), torch_threads=torch.get_num_threads())
    out = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    assert out.shape == (B, 2) and torch.isfinite(out).all()
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    median = benchmark.stats.stats.median
    _medians[impl] = median
    hf = _medians.get("hf_sdpa")
    if impl != "hf_sdpa" and hf is not None:
        speedup = hf / median
        benchmark.extra_info.update(hf_median_s=hf, speedup_vs_hf=round(speedup, 3))
        if impl == "power_hard":
            benchmark.extra_info.update(ratio_to_bound=round(speedup / bound, 3))
        else:
            benchmark.extra_info.update(time_vs_hf=round(median / hf, 3))


@pytest.mark.benchmark(group=f"interleaved rounds (hf, hard, full), fp32, B={B}, N={N}")
def test_interleaved(benchmark, models):
    import statistics

    mods, batch, cfg = models
    hf = mods["hf_sdpa"]

    def eager_hard(**b):  # SPEC 1.2 in plain eager PyTorch (bench/compositions.py), same weights
        return eager_power_bert_logits(hf, RTE, b["input_ids"], b["attention_mask"], b["token_type_ids"])

    with torch.inference_mode():
        torch.testing.assert_close(eager_hard(**batch), mods["power_hard"](**batch).logits, rtol=1e-4, atol=1e-4)
    t = interleaved_times(benchmark, {**{impl: mods[impl] for impl in IMPLS}, "eager_hard": eager_hard}, batch)
    med = {impl: statistics.median(v) for impl, v in t.items()}
    speedups = [h / p for h, p in zip(t["hf_sdpa"], t["power_hard"])]
    eager_speedup = statistics.median([h / p for h, p in zip(t["hf_sdpa"], t["eager_hard"])])
    full_ratio = [f / h for h, f in zip(t["hf_sdpa"], t["power_full"])]
    bound = flop_bound(cfg, RTE, N)
    speedup = statistics.median(speedups)
    benchmark.extra_info.update(
        shape=f"B={B} N={N} D=768 L=12 fp32", retention=RTE, flop_bound=round(bound, 4),
        median_ms={impl: round(v * 1e3, 1) for impl, v in med.items()},
        speedup_hard_vs_hf=round(speedup, 3), ratio_to_bound=round(speedup / bound, 3),
        full_time_vs_hf=round(statistics.median(full_ratio), 3), torch_threads=torch.get_num_threads(),
        # the same SPEC 1.2 computation in plain eager PyTorch, for comparison with our kernels
        speedup_eager_hard_vs_hf=round(eager_speedup, 3), ratio_to_bound_eager_hard=round(eager_speedup / bound, 3),
        # background load only ever adds time: the fastest round of each is the least disturbed
        min_ms={impl: round(min(v) * 1e3, 1) for impl, v in t.items()},
        speedup_hard_vs_hf_min=round(min(t["hf_sdpa"]) / min(t["power_hard"]), 3),
        ratio_to_bound_min=round(min(t["hf_sdpa"]) / min(t["power_hard"]) / bound, 3),
    )
    _sweep_points.append(dict(bound=bound, speedup=speedup, label=f"N={N} RTE"))
    print(f"\ninterleaved medians (ms): {benchmark.extra_info['median_ms']}; hard speed-up {speedup:.2f}x, "
          f"bound {bound:.2f}x, ratio {speedup / bound:.3f}; full/hf {statistics.median(full_ratio):.3f}")


def interleaved_times(benchmark, models: dict, batch: dict) -> dict:
    """Times every model back to back in each of ROUNDS rounds (after one warm-up round):
    {name: [seconds per round]}."""
    import time

    times = {name: [] for name in models}

    def one_round():
        with torch.inference_mode():
            for name, model in models.items():
                t0 = time.perf_counter()
                model(**batch)
                times[name].append(time.perf_counter() - t0)

    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    return {name: v[-ROUNDS:] for name, v in times.items()}


SWEEP = [(64, 2.0), (128, 3.0), (512, 4.5)]  # (N, target FLOP bound)


@pytest.mark.benchmark(group=f"bound sweep, interleaved rounds (hf, hard), fp32, B={B}")
@pytest.mark.parametrize("n,target", SWEEP, ids=[f"N={n}-bound{t}" for n, t in SWEEP])
def test_bound_sweep(benchmark, models, n, target):
    import statistics

    mods, _, cfg = models
    ell = retention_for_bound(cfg, n, target)
    hard = mods["power_hard"]
    saved = hard.retention
    hard.set_mode("hard", retention=ell)
    try:
        g = torch.Generator().manual_seed(n)
        ids = torch.randint(1000, cfg.vocab_size, (B, n), generator=g)
        ids[:, 0] = 101
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        t = interleaved_times(benchmark, {"hf_sdpa": mods["hf_sdpa"], "power_hard": hard}, batch)
    finally:
        hard.set_mode("hard", retention=saved)
    if benchmark.stats is None:
        return
    bound = flop_bound(cfg, ell, n)
    speedup = statistics.median([h / p for h, p in zip(t["hf_sdpa"], t["power_hard"])])
    benchmark.extra_info.update(
        shape=f"B={B} N={n} D=768 L=12 fp32", retention=ell, flop_bound=round(bound, 4),
        median_ms={k: round(statistics.median(v) * 1e3, 1) for k, v in t.items()},
        speedup_hard_vs_hf=round(speedup, 3), ratio_to_bound=round(speedup / bound, 3),
        torch_threads=torch.get_num_threads(),
    )
    _sweep_points.append(dict(bound=bound, speedup=speedup, label=f"N={n}"))


def speedup_plot():
    """The module's plot, drawn by conftest.py after the benchmarks (None: nothing measured)."""
    if not _sweep_points:
        return None
    import platform

    title = (f"BERT-base fp32 B={B}, {torch.get_num_threads()} CPU threads ({platform.processor() or 'cpu'}), "
             f"torch {torch.__version__}")
    return _sweep_points, title, dict(target_ratio=0.95)
