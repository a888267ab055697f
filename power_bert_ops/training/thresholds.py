"""The threshold rule (Learned Token Pruning's form of elimination) calibrated against a top-k
configuration, and the FLOP bound of the rows a model actually kept.

Under the threshold rule layer j keeps the rows whose share of their example's significance
exceeds θ_j (:func:`power_bert_ops.modeling.widths.threshold_rows`), so an example whose
attention is spread keeps more rows than one whose attention is concentrated. To compare it
with the top-k rule at the same cost, :func:`calibrate_thresholds` picks each θ_j, layer by
layer, so that the threshold rule keeps as many rows over a data set as ℓ does.
"""
from __future__ import annotations

import torch

from ..flops import _dims, layer_macs, row_floors, rows_kept
from ..modeling.encoder import EncoderRecord
from ..modeling.widths import hard_widths, significance_shares
from .speed import MODEL_INPUTS, bucketed_batches, example_lengths

__all__ = ["RETENTION_RULES", "calibrate_thresholds", "kept_rows", "rows_bound"]

RETENTION_RULES = ("top-k", "threshold")
"""How stage 3 keeps rows: ``top-k`` keeps ℓ_j's rows (SPEC 1.2); ``threshold`` keeps the rows
whose share of significance exceeds θ_j, with θ calibrated on the training data to keep as many
rows as ℓ (:func:`calibrate_thresholds`)."""


def _batches(dataset, batch_size: int, device: str, lengths):
    """:func:`.speed.bucketed_batches` with the model inputs only, on ``device``."""
    for rows, batch in bucketed_batches(dataset, batch_size, lengths):
        yield rows, {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}


def _threshold_for(shares: torch.Tensor, target: int, floor: torch.Tensor | None = None) -> float:
    """The smallest θ at which Σ_x max(floor_x, count of x's shares above θ) is at most
    ``target`` (bisection; the count only falls as θ grows). shares float32 [examples, n], 0 on
    padding; ``floor`` int64 [examples], the rows each example keeps at least (None: 1)."""
    floor = torch.ones(shares.shape[0], dtype=torch.int64) if floor is None else floor.clamp(min=1)

    def total(theta: float) -> int:
        return int((shares > theta).sum(dim=1).maximum(floor).sum())

    lo, hi = 0.0, 1.0
    if total(lo) <= target:
        return lo
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if total(mid) <= target else (mid, hi)
    return hi


@torch.inference_mode()
def calibrate_thresholds(model, dataset, batch_size: int = 64, device: str = "cpu") -> dict:
    """θ_j for each layer where the model's top-k configuration ℓ eliminates, in order: the
    smallest θ at which the threshold rule keeps at most T_j rows over ``dataset`` at layer j (with
    θ_1..θ_{j-1} already applied; at least one row of each example), where T_j is the count of rows
    ℓ_j keeps over ``dataset``; the other layers keep every row. The model is left in hard mode
    with the thresholds set.

    Args:
        model: a PoWER-BERT model with a retention configuration ℓ (absolute or relative).
        dataset: examples (dicts of [N]-long tensors with ``attention_mask``).

    Returns:
        {"thresholds": [θ_j or None] * L, "target_rows": mean rows ℓ keeps per layer,
        "rows": mean rows the thresholds keep per layer, both over ``dataset``}.
    """
    cfg = model.config
    retention, N = list(cfg.retention), int(cfg.sequence_length)
    lengths = example_lengths(dataset)
    short = cfg.min_rows_max_length
    per_example = [rows_kept(retention, N, n, cfg.retention_scale, cfg.min_rows, short) for n in lengths]
    L = len(retention)
    thresholds: list = [None] * L
    model.to(device).eval()
    model.set_mode("hard", retention=retention)
    # the layers where ℓ drops (hard mode's eliminating layers on an input of N rows)
    for j in [j for j, (_, eliminate) in enumerate(hard_widths(retention, N, N)) if eliminate]:
        target = sum(rows[j] for rows in per_example)
        # θ_j = 0 makes layer j compute significance and keep (nearly) every row
        model.set_thresholds(thresholds[:j] + [0.0] + [None] * (L - j - 1))
        shares, floors = [], []
        for _, batch in _batches(dataset, batch_size, device, lengths):
            record = EncoderRecord(significance=[])
            model(**batch, power_bert_record=record)
            mask_in = batch["attention_mask"] if j == 0 else record.masks[j - 1]
            s = significance_shares(record.significance[j], mask_in).cpu()
            shares.append(torch.nn.functional.pad(s, (0, N - s.shape[1])))
            # each example's floor, as the threshold rule keeps it
            floor = row_floors((batch["attention_mask"] != 0).sum(dim=1), cfg.retention_scale, cfg.min_rows, short)
            floors.append(torch.minimum((mask_in != 0).sum(dim=1), floor).cpu())
        thresholds[j] = _threshold_for(torch.cat(shares), target, torch.cat(floors))
    model.set_thresholds(thresholds)
    return {"thresholds": thresholds,
            "target_rows": [sum(r[j] for r in per_example) / len(per_example) for j in range(L)],
            "rows": kept_rows(model, dataset, batch_size, device, lengths).double().mean(dim=0).tolist()}


@torch.inference_mode()
def kept_rows(model, dataset, batch_size: int = 64, device: str = "cpu", lengths=None) -> torch.Tensor:
    """Rows each layer of ``model`` kept of each example of ``dataset``, in dataset order:
    int64 [examples, L] (a layer that eliminates nothing keeps the example's real rows).
    ``lengths``: the examples' real lengths when the caller has them."""
    lengths = example_lengths(dataset) if lengths is None else lengths
    out = torch.empty((len(lengths), model.num_power_layers), dtype=torch.int64)
    model.to(device).eval()
    for rows, batch in _batches(dataset, batch_size, device, lengths):
        record = EncoderRecord()
        model(**batch, power_bert_record=record)
        counts, current = [], (batch["attention_mask"] != 0).sum(dim=1)
        for mask in record.masks:
            current = current if mask is None else (mask != 0).sum(dim=1)
            counts.append(current.cpu())
        out[torch.tensor(rows)] = torch.stack(counts, dim=1)
    return out


def rows_bound(config, lengths, rows: torch.Tensor) -> float:
    """SPEC 3's FLOP bound of per-example row counts against the dense model at each example's
    real length: Σ_x Σ_j macs(len_x, len_x) / Σ_x Σ_j macs(rows_{x,j-1}, rows_{x,j}).

    Args:
        config: the model's config (hidden size, layers and FFN width are read from it).
        lengths: real tokens of each example, [examples].
        rows: int [examples, L], e.g. :func:`kept_rows`.
    """
    D, L, F = _dims(config)
    n = torch.as_tensor(lengths, dtype=torch.float64)
    rows = rows.to(torch.float64)
    if rows.shape != (n.shape[0], L):
        raise ValueError(f"rows_bound: rows has shape {tuple(rows.shape)}, expected ({n.shape[0]}, {L})")
    dense = L * layer_macs(n, n, D, F).sum()
    n_in, power = n, 0.0
    for j in range(L):
        power = power + layer_macs(n_in, rows[:, j], D, F).sum()
        n_in = rows[:, j]
    return float(dense / power)
