"""Measured inference speed-up of a PoWER-BERT model over its fine-tuned baseline: the same
eval examples, batch size, device and dtype, timed in one run, alternating the models.

Two batching regimes are timed (SPEC 6):

* bucketed (the headline): examples sorted by length into batches, each cut to its longest row,
  as a deployer with length bucketing runs the dense model; PoWER-BERT runs the same batches;
* padded: every batch padded to N (the paper's setting), both models.

Each regime's speed-up is the ratio of median seconds per pass; the per-repeat ratios give its
range, and a range that contains 1 is reported as no measurable speed-up (``within_noise``).
"""
from __future__ import annotations

import math
import statistics
import time

import torch
from torch.utils.data import DataLoader, default_collate

# The tokeniser outputs a BERT-family classifier takes (labels and bookkeeping are dropped).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def _time_model(model, batches, device: str) -> float:
    t = time.perf_counter()
    for batch in batches:
        model(**batch)
    _sync(device)
    return time.perf_counter() - t


def real_width(mask: torch.Tensor) -> int:
    """The columns a batch can be cut to without losing a real token: one past the last nonzero
    column of any row of ``mask`` [..., n] (at least 1). Reads the mask on the host."""
    real = mask.reshape(-1, mask.shape[-1]) != 0
    positions = torch.arange(1, real.shape[-1] + 1, device=real.device)
    return max(1, int((real * positions).amax())) if real.numel() else 1


def trim_to_longest(batch: dict) -> dict:
    """Dynamic padding: a batch's model inputs cut to its longest row (:func:`real_width` of
    attention_mask). Reads the mask on the host, so it is done when batches are prepared, not
    timed."""
    n = real_width(batch["attention_mask"])
    return {k: v[..., :n] if k in MODEL_INPUTS else v for k, v in batch.items()}


def example_lengths(dataset) -> list[int]:
    """Real tokens of each example (multiple choice: its longest choice), from attention_mask."""
    return [int(torch.as_tensor(dataset[i]["attention_mask"]).sum(dim=-1).max()) for i in range(len(dataset))]


def bucketed_order(lengths) -> list[int]:
    """Example indices sorted by length (stable): consecutive slices are length buckets."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def _collate(examples: list[dict]) -> dict:
    """default_collate, after right-padding (with 0) the model inputs of examples left unpadded
    (dynamic padding) to the widest one; examples padded to N pass unchanged."""
    width = max(torch.as_tensor(ex["input_ids"]).shape[-1] for ex in examples)

    def fit(value):
        value = torch.as_tensor(value)
        return torch.nn.functional.pad(value, (0, width - value.shape[-1]))

    return default_collate([{k: fit(v) if k in MODEL_INPUTS else v for k, v in ex.items()} for ex in examples])


def bucketed_batches(dataset, batch_size: int, lengths=None):
    """(indices, batch) pairs over ``dataset`` (padded to N, or not padded) sorted by length, each
    batch cut to its longest row; the indices say where each row came from, so results can be put
    back in input order."""
    lengths = example_lengths(dataset) if lengths is None else lengths
    order = bucketed_order(lengths)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        yield rows, trim_to_longest(_collate([dataset[i] for i in rows]))


def _ratios(base: list[float], power: list[float]) -> dict:
    per_repeat = [b / p for b, p in zip(base, power)]
    lo, hi = min(per_repeat), max(per_repeat)
    return {
        "baseline_seconds": statistics.median(base),
        "power_bert_seconds": statistics.median(power),
        "speedup": statistics.median(base) / statistics.median(power),
        "speedup_range": [lo, hi],
        "within_noise": lo <= 1.0 <= hi,
    }


def compile_mode(device: str) -> str:
    """The torch.compile mode :func:`measure_speedup` uses with ``compile=True``: CUDA graphs on
    CUDA (``reduce-overhead``: an eager model there is bound by its launches' host time), Inductor's
    default elsewhere."""
    return "reduce-overhead" if device.startswith("cuda") else "default"


def _compiled(model, device: str):
    return torch.compile(model, mode=compile_mode(device), fullgraph=True)


@torch.inference_mode()
def _compiled_difference(eager: dict, compiled: dict, batches: list) -> dict:
    """What the compiled timings computed, checked against the eager models over ``batches``
    (both models): the largest absolute difference of their logits, and the rows whose predicted
    class differs, of all rows checked."""
    gaps, differ, rows = [], 0, 0
    classes = True
    for name, model in eager.items():
        for batch in batches:
            # used before the next compiled call, which may write its outputs into the same memory
            got = compiled[name](**batch).logits.float()
            want = model(**batch).logits.float()
            gaps.append(float((got - want).abs().max()))
            classes = classes and got.shape[-1] > 1
            if classes:
                differ += int((got.argmax(-1) != want.argmax(-1)).sum())
            rows += got.shape[0]
    worst = math.nan if any(math.isnan(g) for g in gaps) else max(gaps, default=0.0)  # max() would drop a NaN
    return {"compile_max_abs_diff": worst, "compile_predictions_differ": differ if classes else None,
            "compile_rows_checked": rows}


def measure_speedup(baseline, power_model, dataset, batch_size: int, device: str, dtype=torch.float32,
                    repeats: int = 3, max_batches: int | None = None, lengths=None, compile: bool = False) -> dict:
    """Times full passes of both models over ``dataset`` (dicts of [N]-long tensors; labels
    dropped), on length-bucketed batches (the headline: ``speedup``, ``baseline_seconds``, ...)
    and on batches padded to N (under ``"padded"``). Seconds are medians of ``repeats``;
    ``speedup_range`` is the range of the per-repeat ratios and ``within_noise`` whether it
    contains 1. ``lengths``: the examples' real lengths when the caller has them.

    ``compile``: both models run under ``torch.compile`` (:func:`compile_mode`; fullgraph), after
    two untimed passes over every batch of both regimes (compilation, and on CUDA the graphs'
    recording; ``compile_seconds`` says how long that took; ``compile_max_abs_diff`` and
    ``compile_predictions_differ`` of ``compile_rows_checked`` compare their logits with the eager
    models' on the shortest, longest and a padded batch: in 16-bit a near-tie of significance can
    keep another row, as it can between eager 16-bit and float32). Both compile with dynamic shapes after
    their second width, so the bucketed batches keep their exact widths (CUDA graphs record one
    graph per shape)."""
    import torch._inductor.config as inductor_config

    lengths = example_lengths(dataset) if lengths is None else lengths
    keep = lambda batch: {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}  # noqa: E731
    padded, bucketed = [], []
    for i, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        if max_batches is not None and i >= max_batches:
            break
        padded.append(keep(batch))
    for i, (_, batch) in enumerate(bucketed_batches(dataset, batch_size, lengths)):
        if max_batches is not None and i >= max_batches:
            break
        bucketed.append(keep(batch))
    for m in (baseline, power_model):
        m.to(device=device, dtype=dtype).eval()
    compile_seconds = None
    compile_check = dict.fromkeys(("compile_max_abs_diff", "compile_predictions_differ", "compile_rows_checked"))
    eager = {"baseline": baseline, "power_bert": power_model}
    if compile:
        baseline, power_model = _compiled(baseline, device), _compiled(power_model, device)
    runs = {"baseline": (baseline, bucketed), "power_bert": (power_model, bucketed),
            "baseline_padded": (baseline, padded), "power_bert_padded": (power_model, padded)}
    # one CUDA graph per bucket width is what is asked for here, not a warning's matter
    with inductor_config.patch({"triton.cudagraph_dynamic_shape_warn_limit": None}):
        if compile:  # every shape compiled (and its CUDA graph recorded) before any timing
            t = time.perf_counter()
            for m, bs in runs.values():
                for _ in range(2):
                    _time_model(m, bs, device)
            compile_seconds = time.perf_counter() - t
            checked = bucketed[:1] + bucketed[1:][-1:] + padded[:1]  # shortest and longest bucket, a padded batch
            compile_check = _compiled_difference(eager, {"baseline": baseline, "power_bert": power_model}, checked)
        else:
            for m, bs in runs.values():  # warm-up (the longest and the shortest batch)
                _time_model(m, bs[-1:] + bs[:1], device)
        times = {name: [] for name in runs}
        for _ in range(repeats):
            for name, (m, bs) in runs.items():
                times[name].append(_time_model(m, bs, device))
    widths = [b["input_ids"].shape[-1] for b in bucketed]
    return {
        **_ratios(times["baseline"], times["power_bert"]),
        "baseline_kind": "length-bucketed batches, each cut to its longest row",
        "mean_batch_length": sum(widths) / max(len(widths), 1),
        "mean_length": sum(lengths) / max(len(lengths), 1),
        "padded_length": padded[0]["input_ids"].shape[-1] if padded else 0,
        "padded": _ratios(times["baseline_padded"], times["power_bert_padded"]),
        "batch_size": batch_size,
        "batches": len(bucketed),
        "examples": sum(b["input_ids"].shape[0] for b in bucketed),
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "compile": compile_mode(device) if compile else None,
        "compile_seconds": compile_seconds,
        **compile_check,
    }


def speed_bounds(config, retention, n: int, lengths) -> dict:
    """The FLOP bounds of the two timed regimes: against the dense model at the examples' real
    lengths (``flop_bound``, what bucketing approaches) and padded to N (``padded``)."""
    from ..flops import FlopModel, reference_length

    scale = getattr(config, "retention_scale", "absolute")
    N = reference_length(scale, getattr(config, "sequence_length", None), n)
    # padded: every example n tokens long (a relative model keeps ceil(ℓ_j·n/N) of them, its floor included)
    padded = FlopModel(config, N, lengths=[n], scale=scale) if scale == "relative" else FlopModel(config, n)
    return {"flop_bound": FlopModel(config, N, lengths=lengths, scale=scale).bound(retention),
            "padded_flop_bound": padded.bound(retention)}


def threshold_speed_bounds(model, dataset, batch_size: int, device: str, n: int, lengths) -> dict:
    """:func:`speed_bounds` of a model under the threshold rule, whose rows depend on the data: the
    bounds of the rows it keeps of each example of ``dataset`` (``flop_bound``), and of the same
    rows with the layers before its first eliminating one at the padded width ``n``
    (``padded_flop_bound``)."""
    from .thresholds import kept_rows, rows_bound

    rows = kept_rows(model, dataset, batch_size, device, lengths)
    first = next((j for j, t in enumerate(model.config.thresholds) if t is not None), len(model.config.thresholds))
    padded = rows.clone()
    padded[:, :first] = n
    return {"flop_bound": rows_bound(model.config, lengths, rows),
            "padded_flop_bound": rows_bound(model.config, [n] * len(lengths), padded)}


def speed_report(baseline, power_model, dataset, batch_size: int, device: str, dtype=torch.float32,
                 repeats: int = 3, compile: bool = False) -> dict:
    """:func:`measure_speedup` with each regime's FLOP bound beside its measured speed-up
    (``flop_bound`` for the bucketed headline, ``padded["flop_bound"]`` at N)."""
    lengths = example_lengths(dataset)
    speed = measure_speedup(baseline, power_model, dataset, batch_size, device, dtype=dtype, repeats=repeats,
                            lengths=lengths, compile=compile)
    n = int(speed["padded_length"])
    if getattr(power_model.config, "thresholds", None) is not None:
        bounds = threshold_speed_bounds(power_model, dataset, batch_size, device, n, lengths)
    else:
        bounds = speed_bounds(power_model.config, list(power_model.retention), n, lengths)
    speed["flop_bound"] = bounds["flop_bound"]
    speed["padded"]["flop_bound"] = bounds["padded_flop_bound"]
    return speed


def describe_speedup(s: dict) -> str:
    """'2.61x (0.87 of the 3.01x FLOP bound; range 2.55-2.70x over 3 passes)', or the statement
    that no speed-up was measured when the per-repeat range contains 1."""
    lo, hi = s["speedup_range"]
    if s["within_noise"]:
        return (f"no measurable speed-up ({s['speedup']:.2f}x, within the timing noise: {lo:.2f}-{hi:.2f}x over "
                f"the passes; FLOP bound {s['flop_bound']:.2f}x)")
    return (f"{s['speedup']:.2f}x ({s['speedup'] / s['flop_bound']:.2f} of the {s['flop_bound']:.2f}x FLOP bound; "
            f"{lo:.2f}-{hi:.2f}x over the passes)")
