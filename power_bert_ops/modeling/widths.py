"""How many rows each PoWER layer keeps: absolute retention (the paper's ℓ_j) and relative
retention (SPEC 1.6, the fraction ℓ_j / N of each example's length), and the threshold rule
(keep the rows whose share of significance exceeds θ_j, as Learned Token Pruning does).

:func:`hard_widths` gives every layer's output width from the input width alone (an int, or a
SymInt under torch.export), so the forward pass has static per-layer shapes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

__all__ = ["hard_widths", "relative_rows", "relative_soft_factor", "significance_shares", "threshold_rows"]


def relative_rows(retention_j: int, lengths: torch.Tensor, n_cfg: int, min_rows=1) -> torch.Tensor:
    """Relative retention (SPEC 1.6): rows kept of each example,
    min(len, max(min_rows, ceil(ℓ_j·len/N))), in integers. lengths int64 [B], min_rows an int or
    each example's floor (int64 [B], :func:`~power_bert_ops.flops.row_floors`) -> int64 [B]."""
    k = (lengths * int(retention_j) + (n_cfg - 1)) // n_cfg
    k = torch.maximum(k, min_rows) if isinstance(min_rows, torch.Tensor) else k.clamp(min=max(1, int(min_rows)))
    return torch.minimum(k, lengths)


def significance_shares(sig: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each real row's share of its example's significance: sig / Σ sig over the real rows, 0 on
    padding. sig float [B, n], mask [B, n] -> float32 [B, n] (each real row sums to 1)."""
    real = mask != 0
    s = torch.where(real, sig.float(), 0.0)
    return s / s.sum(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)


def threshold_rows(sig: torch.Tensor, mask: torch.Tensor, theta: float, min_rows=1) -> torch.Tensor:
    """The threshold rule: rows kept of each example, the count of its real rows whose share of
    significance (:func:`significance_shares`) exceeds ``theta``, at least min(real rows,
    ``min_rows``) and 1 (and at most its real rows). sig float [B, n], mask [B, n], min_rows an
    int or each example's floor (int64 [B]) -> int64 [B]."""
    real = mask != 0
    above = (significance_shares(sig, mask) > float(theta)) & real
    n_real = real.sum(dim=1).clamp(min=1)
    floor = torch.minimum(n_real, min_rows.clamp(min=1)) if isinstance(min_rows, torch.Tensor) \
        else n_real.clamp(max=max(1, int(min_rows)))
    return above.sum(dim=1).maximum(floor).minimum(n_real)


def relative_soft_factor(retention_row: torch.Tensor, sig: torch.Tensor, mask: torch.Tensor,
                         lengths: torch.Tensor, min_rows=1) -> torch.Tensor:
    """Stage 2 for relative retention: the row ranked t of an example with len real tokens gets
    r_j[floor(t·N/len)], so mass_j / N is the kept fraction; the rows ranked below ``min_rows``
    (hard mode always keeps them) get 1: below an int above 1, or below each example's floor
    (int64 [B], a floor of 1 included). -> float32 [B, n] (differentiable in ``retention_row`` [N])."""
    from ..reference import rank_of

    n_cfg = retention_row.shape[0]
    rank = rank_of(sig, mask)
    bins = torch.div(rank * n_cfg, lengths.clamp(min=1)[:, None], rounding_mode="floor").clamp(max=n_cfg - 1)
    factor = retention_row[bins]
    floor = min_rows[:, None] if isinstance(min_rows, torch.Tensor) else int(min_rows)
    if isinstance(min_rows, torch.Tensor) or min_rows > 1:
        factor = torch.where((rank < floor) & (mask != 0), torch.ones_like(factor), factor)
    return factor


def _is_sym(*values) -> bool:
    return any(isinstance(v, torch.SymInt) for v in values)


def _relative_width(ell: int, n0, rows, relative_n: int, min_rows: int = 1):
    """Output width of a relative layer that eliminates: the longest example's count,
    min(rows in, max(min_rows, ceil(ℓ_j·n0/N))) for an input of n0 rows."""
    width = (n0 * ell + relative_n - 1) // relative_n
    if _is_sym(width):
        # Under torch.export a width that may be 1 makes the layout guards fail; one more slot
        # (mask 0 where no row keeps it) changes no result.
        width = torch.sym_max(width, max(2, int(min_rows)))
    elif min_rows > 1:
        width = max(width, int(min_rows))
    return torch.sym_min(width, rows) if _is_sym(width, rows) else min(width, rows)


def hard_widths(retention: Sequence[int], n0, relative_n: int | None = None, min_rows: int = 1) -> list[tuple]:
    """Hard mode on an input of ``n0`` rows: ``(keep_j, eliminate_j)`` for every layer, where
    ``keep_j`` is layer j's output width and ``eliminate_j`` says whether it drops rows (and so
    computes significance). ``relative_n``: N of relative retention, or None for absolute ℓ_j;
    ``min_rows``: relative retention's floor (:func:`relative_rows`)."""
    out, rows, prev = [], n0, relative_n
    for ell in retention:
        if relative_n is not None:
            # Rows change only where ℓ_j drops; the width is the longest example's count.
            eliminate = ell < prev
            prev = ell
            keep = _relative_width(ell, n0, rows, relative_n, min_rows) if eliminate else rows
        elif _is_sym(rows):
            # Dynamic length (torch.export): ℓ_j is capped at the row count inside the graph
            # (no guard on n), and a layer whose ℓ_j is at least every possible n keeps all rows.
            eliminate = not statically_known_true(ell >= rows)
            keep = torch.sym_min(ell, rows) if eliminate else rows
        else:
            keep = min(ell, rows)
            eliminate = keep < rows
        out.append((keep, eliminate))
        rows = keep
    return out
