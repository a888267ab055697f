"""Shared by the end-to-end benchmarks on texts of mixed length (bench_lengths_cpu.py,
bench_long_documents_cpu.py): the examples, one timed case through ``speed_report`` (the
function behind ``power-bert benchmark``) with both regimes in ``extra_info``, and the points of
the speed-up plot."""
import torch

from power_bert_ops.training.speed import speed_report


def examples_of_lengths(lengths, n: int, vocab_size: int, seed: int = 1) -> list[dict]:
    """Right-padded [n]-long examples with the given real lengths ([CLS] first, random ids)."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for length in lengths:
        ids = torch.zeros(n, dtype=torch.long)
        ids[:length] = torch.randint(1000, vocab_size, (length,), generator=g)
        ids[0] = 101
        mask = (torch.arange(n) < length).long()
        data.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros(n, dtype=torch.long)})
    return data


def _regime(r: dict, bound: float) -> dict:
    return dict(speedup=round(r["speedup"], 3), flop_bound=round(bound, 3),
                ratio_to_bound=round(r["speedup"] / bound, 3), range=[round(v, 3) for v in r["speedup_range"]],
                seconds=dict(dense=round(r["baseline_seconds"], 3), power=round(r["power_bert_seconds"], 3)))


def time_case(benchmark, dense, power, data, batch: int, repeats: int, points: list) -> dict:
    """Times ``power`` against ``dense`` over ``data`` (bucketed and padded, one run), records both
    regimes' speed-up, bound and ratio in the benchmark's extra_info, adds both points to
    ``points``, prints a line; returns speed_report's result."""
    result = {}

    def run():
        result.update(speed_report(dense, power, data, batch, "cpu", repeats=repeats))

    benchmark.pedantic(run, rounds=1, warmup_rounds=0, iterations=1)
    padded, scale = result["padded"], power.config.retention_scale
    benchmark.extra_info.update(
        retention=list(power.retention), retention_scale=scale, mean_length=round(result["mean_length"], 2),
        mean_batch_length=round(result["mean_batch_length"], 2), torch_threads=torch.get_num_threads(),
        bucketed=_regime(result, result["flop_bound"]), padded=_regime(padded, padded["flop_bound"]))
    points.append(dict(bound=result["flop_bound"], speedup=result["speedup"], label=f"{scale} (bucketed)"))
    points.append(dict(bound=padded["flop_bound"], speedup=padded["speedup"], label=f"{scale} (padded)",
                       highlight=True))
    print(f"\n{scale} ℓ={list(power.retention)}: bucketed {result['speedup']:.2f}x of bound "
          f"{result['flop_bound']:.2f}x; padded {padded['speedup']:.2f}x of bound {padded['flop_bound']:.2f}x")
    return result


def plot_spec(points: list, what: str):
    """The module's plot for conftest.py: None when nothing was measured, else (points, title,
    keyword arguments of plots.plot_speedup_vs_bound); ``what`` names the configuration."""
    if not points:
        return None
    title = (f"{what}\n{torch.get_num_threads()} CPU threads, torch {torch.__version__}; blue: against dense on\n"
             "length-bucketed batches, orange: against dense padded to N")
    return points, title, dict(target_ratio=0.85, ylabel="measured speed-up over dense (SDPA)")
