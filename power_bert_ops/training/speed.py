"""Measured inference speed-up of a PoWER-BERT model over its fine-tuned baseline: the same
eval batches, batch size, device and dtype, timed in one run, alternating the models.

Two padding regimes are timed (SPEC 6):

* fixed: every batch padded to N (the max_length the retention configuration is for);
* dynamic: every batch cut to its longest row, as a Hugging Face user with a padding collator
  runs the baseline. PoWER-BERT runs such batches too (ℓ_j capped at the batch's length).
"""
from __future__ import annotations

import statistics
import time

import torch
from torch.utils.data import DataLoader

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


def trim_to_longest(batch: dict) -> dict:
    """Dynamic padding: a right-padded batch cut to its longest row (attention_mask's last real
    column). Reads the mask on the host, so it is done when batches are prepared, not timed."""
    n = int(batch["attention_mask"].sum(dim=-1).max())
    return {k: v[..., :n] for k, v in batch.items()}


def measure_speedup(baseline, power_model, dataset, batch_size: int, device: str, dtype=torch.float32,
                    repeats: int = 3, max_batches: int | None = None, dynamic_padding: bool = True) -> dict:
    """Times full passes of both models over ``dataset`` (dicts of [N]-long tensors; labels
    dropped). Returns seconds per pass (median of ``repeats``) and the speed-up with batches
    padded to N; with ``dynamic_padding`` also under ``"dynamic"`` the same with every batch cut
    to its longest row (``speedup``: PoWER-BERT on those batches;
    ``speedup_power_bert_fixed``: PoWER-BERT at fixed N against that baseline)."""
    batches = []
    for i, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        if max_batches is not None and i >= max_batches:
            break
        batches.append({k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS})
    runs = {"baseline": (baseline, batches), "power_bert": (power_model, batches)}
    trimmed = [trim_to_longest(b) for b in batches] if dynamic_padding else []
    if dynamic_padding:
        runs.update({"baseline_dynamic": (baseline, trimmed), "power_bert_dynamic": (power_model, trimmed)})
    for m in (baseline, power_model):
        m.to(device=device, dtype=dtype).eval()
    for m, bs in runs.values():  # warm-up (each length once)
        _time_model(m, bs[:1], device)
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (m, bs) in runs.items():
            times[name].append(_time_model(m, bs, device))
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "baseline_seconds": med["baseline"],
        "power_bert_seconds": med["power_bert"],
        "speedup": med["baseline"] / med["power_bert"],
        "batch_size": batch_size,
        "batches": len(batches),
        "examples": sum(b["input_ids"].shape[0] for b in batches),
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }
    if dynamic_padding:
        lengths = [b["input_ids"].shape[-1] for b in trimmed]
        result["dynamic"] = {
            "baseline_seconds": med["baseline_dynamic"],
            "power_bert_seconds": med["power_bert_dynamic"],
            "speedup": med["baseline_dynamic"] / med["power_bert_dynamic"],
            "speedup_power_bert_fixed": med["baseline_dynamic"] / med["power_bert"],
            "mean_batch_length": sum(lengths) / max(len(lengths), 1),
            "padded_length": batches[0]["input_ids"].shape[-1] if batches else 0,
        }
    return result
