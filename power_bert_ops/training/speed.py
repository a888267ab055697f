"""Measured inference speed-up of a PoWER-BERT model over its fine-tuned baseline: the same
eval batches, batch size, device and dtype, timed in one run, alternating the two models."""
from __future__ import annotations

import statistics
import time

import torch

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


def measure_speedup(baseline, power_model, dataset, batch_size: int, device: str, dtype=torch.float32,
                    repeats: int = 3, max_batches: int | None = None) -> dict:
    """Times full passes of both models over ``dataset`` (dicts of [N]-long tensors; labels
    dropped). Returns seconds per pass (median of ``repeats``), the speed-up, and the setting."""
    from torch.utils.data import DataLoader

    batches = []
    for i, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        if max_batches is not None and i >= max_batches:
            break
        batches.append({k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS})
    models = {"baseline": baseline.to(device=device, dtype=dtype).eval(),
              "power_bert": power_model.to(device=device, dtype=dtype).eval()}
    for m in models.values():  # warm-up
        _time_model(m, batches[:1], device)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, m in models.items():
            times[name].append(_time_model(m, batches, device))
    base, ours = statistics.median(times["baseline"]), statistics.median(times["power_bert"])
    return {
        "baseline_seconds": base,
        "power_bert_seconds": ours,
        "speedup": base / ours,
        "batch_size": batch_size,
        "batches": len(batches),
        "examples": sum(b["input_ids"].shape[0] for b in batches),
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }
