"""Projection of learned retention masses onto a target FLOP bound, and the break-even guard.

* :func:`project_to_target` turns the learned masses (or the [L, N] r vectors) into an integer,
  non-increasing ℓ whose FLOP bound is X within ±3% whatever the search did: a common scale of the
  masses found by bisection, SPEC 1.3's rounding, then greedy ±1 moves on the integer grid (and an
  exact dynamic programme when that misses, which only happens at tiny N). With ``keep_threshold``
  (the break-even guard) layers that would drop only a small fraction of their input rows are set
  to drop none, and the other layers make up the difference.
* :func:`apply_break_even`: the same guard on a given configuration (the λ procedure's).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..flops import FlopModel, bound_of as _bound, check_target, encoder_macs, flop_dims

__all__ = ["BREAK_EVEN_KEEP", "DEFAULT_TOLERANCE", "TargetUnreachableError", "apply_break_even", "project_to_target"]

DEFAULT_TOLERANCE = 0.03
"""Relative tolerance on the FLOP bound: |bound / X - 1| ≤ 0.03."""

BREAK_EVEN_KEEP = 0.9
"""Keep fraction ℓ_j / ℓ_{j-1} above which a layer is treated as not worth eliminating in (its
significance and extract cost more than the few rows save). Measured on the 2-core CPU
(``bench/bench_break_even.py``, MiniLM, N = 64 and 512): one elimination at layer 1 or 3 breaks
even at a keep fraction of 0.93-0.98 and gains 2-5% at 0.9; at the last layer it gains nothing
measurable at any fraction. Not yet measured on a GPU."""


class TargetUnreachableError(ValueError):
    """No integer retention configuration (under the constraints asked) has a FLOP bound within
    the tolerance of the target; the message names the closest bound found."""


def _masses_from(masses_or_scores) -> list[float]:
    """Per-layer masses from L floats or from [L, N'] retention vectors (summed over N')."""
    if isinstance(masses_or_scores, torch.Tensor):
        t = masses_or_scores.detach().double().cpu()
    else:
        t = torch.as_tensor(masses_or_scores, dtype=torch.float64)
    if t.dim() == 2:
        t = t.sum(dim=1)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"project_to_target: give L masses or [L, N] retention vectors, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("project_to_target: a retention mass is NaN or infinite")
    return t.tolist()


def _scaled(masses: Sequence[float], c: float, n: int, pinned: frozenset) -> list[int]:
    """SPEC 1.3's rule on the masses scaled by c: ℓ_j = min(ℓ_{j-1}, max(1, ceil(c·mass_j))),
    and ℓ_j = ℓ_{j-1} for pinned layers (ℓ_0 = n). Non-increasing in every layer as c grows."""
    out, prev = [], n
    for j, m in enumerate(masses):
        lj = prev if j in pinned else min(prev, max(1, math.ceil(c * m)))
        out.append(lj)
        prev = lj
    return out


def _greedy(ell: list[int], n: int, target: float, dims, pinned: frozenset, max_moves: int) -> list[int]:
    """±1 moves on the free layers' values (a pinned layer follows the one before it) while one
    strictly reduces |log(bound / target)|; keeps ℓ non-increasing in [1, n]."""
    L = len(ell)
    free = [j for j in range(L) if j not in pinned]

    def materialise(vals: dict) -> list[int]:
        out, prev = [], n
        for j in range(L):
            prev = prev if j in pinned else vals[j]
            out.append(prev)
        return out

    vals = {j: ell[j] for j in free}
    cur = materialise(vals)
    err = abs(math.log(_bound(dims, cur, n) / target))
    for _ in range(max_moves):
        best = None
        for j in free:
            for step in (1, -1):
                v = vals[j] + step
                trial = dict(vals)
                trial[j] = v
                cand = materialise(trial)
                upper = cand[j - 1] if j > 0 else n
                later = [trial[k] for k in free if k > j]
                if not (1 <= v <= upper) or (later and later[0] > v):
                    continue
                e = abs(math.log(_bound(dims, cand, n) / target))
                if e < err - 1e-12 and (best is None or e < best[0]):
                    best = (e, trial, cand)
        if best is None:
            break
        err, vals, cur = best
    return cur


def _project_once(masses: list[float], n: int, target: float, tol: float, dims, pinned: frozenset) -> list[int]:
    """Bisection on a common scale c of the masses (in log c), the closer of the two bracketing
    integer configurations, then :func:`_greedy`; :func:`_dp_search` when that misses ±tol."""
    floor = 1e-6 * n  # a zero mass still scales (it keeps its place below every other layer)
    m = [max(floor, float(x)) for x in masses]  # no cap at n: a cap would flatten the shape when scaling down
    lo = math.log(0.5 / max(m))         # ℓ = 1 everywhere not pinned: the largest bound
    hi = math.log(2.0 * n / min(m))     # ℓ = n everywhere: bound 1
    for _ in range(100):
        mid = (lo + hi) / 2
        if _bound(dims, _scaled(m, math.exp(mid), n, pinned), n) >= target:
            lo = mid
        else:
            hi = mid
    cands = [_scaled(m, math.exp(lo), n, pinned), _scaled(m, math.exp(hi), n, pinned)]
    ell = min(cands, key=lambda e: abs(math.log(_bound(dims, e, n) / target)))
    ell = _greedy(ell, n, target, dims, pinned, max_moves=4 * len(m) + 64)
    if abs(_bound(dims, ell, n) / target - 1.0) > tol:
        alt = _dp_search(n, target, tol, dims, pinned)
        if alt is not None and abs(math.log(_bound(dims, alt, n) / target)) < abs(math.log(_bound(dims, ell, n) / target)):
            ell = alt
    return ell


_DP_BUDGET = 3_000_000
"""Largest L·N²·buckets the exact fallback of :func:`_dp_search` may take (a few seconds)."""


def _dp_search(n: int, target: float, tol: float, dims, pinned: frozenset) -> list[int] | None:
    """The fallback when the greedy projection misses the tolerance (tiny N, where reaching the
    window may need several layers to move by many rows at once): a dynamic programme over the
    layers on the total multiply-adds, which are a sum of terms of consecutive (ℓ_{j-1}, ℓ_j).
    Partial sums above the window's top are pruned; those within δ = width / (4L) of each other
    share one bucket, so the programme misses a configuration in the window by at most L·δ.

    Returns:
        The configuration closest to the target (in |log bound/X|) found, or None when the
        programme would exceed :data:`_DP_BUDGET`.
    """
    if isinstance(dims, FlopModel):
        return None  # the programme sums per-layer terms at one length
    D, L, Fw = dims
    base = encoder_macs(dims, None, n)
    lo_total, hi_total = base / (target * (1 + tol)), base / (target * (1 - tol))
    delta = (hi_total - lo_total) / (4 * L)
    if L * n * n * (hi_total / delta) > _DP_BUDGET:
        return None

    def macs(n_in: int, n_out: int) -> int:
        return encoder_macs((D, 1, Fw), [n_out], n_in)

    # states: ℓ_j -> {bucket: (partial sum, path)}
    states: dict[int, dict[int, tuple[int, tuple]]] = {n: {0: (0, ())}}
    for j in range(L):
        nxt: dict[int, dict[int, tuple[int, tuple]]] = {}
        for prev, entries in states.items():
            outs = [prev] if j in pinned else range(1, prev + 1)
            for v in outs:
                cost = macs(prev, v)
                slot = nxt.setdefault(v, {})
                for s, path in entries.values():
                    t = s + cost
                    if t > hi_total:
                        continue
                    key = int(t // delta)
                    if key not in slot:
                        slot[key] = (t, path + (v,))
        states = nxt
    best = None
    for entries in states.values():
        for t, path in entries.values():
            e = abs(math.log(base / t / target))
            if best is None or e < best[0]:
                best = (e, list(path))
    return None if best is None else best[1]


def _keep_fraction(ell: Sequence[int], n: int, j: int) -> float:
    prev = n if j == 0 else ell[j - 1]
    return ell[j] / prev


def project_to_target(masses_or_scores, config, n: int, target: float, *, tol: float = DEFAULT_TOLERANCE,
                      keep_threshold: float | None = None, strict: bool = True) -> list[int]:
    """A retention configuration with FLOP bound ``target`` (±tol) shaped like the learned one.

    Method: the masses (made non-increasing by SPEC 1.3's rule) are multiplied by a common
    factor c found by bisection so that ℓ_j = max(1, ceil(c·mass_j)) (then ℓ_j ≤ ℓ_{j-1}) has
    the bound closest to the target; the integer rounding is then fixed by greedy ±1 moves of
    single layers, each of which must bring the bound closer to the target. With
    ``keep_threshold`` (the break-even guard), a layer that keeps more than that fraction of its
    input rows (but not all) is pinned to keep all of them and the projection re-runs so the
    other layers make up for it; the layer with the highest keep fraction is tried first and a
    pin that would put the bound outside the tolerance is not made.

    Args:
        masses_or_scores: the learned masses (L floats, e.g. ``model.retention_masses()``) or the
            retention vectors ``model.retention_params`` ([L, N], summed per layer).
        config: a model config (PowerBertConfig, Hugging Face config or dict) or (D, L[, F]).
        n: the sequence length N of the run.
        target: the requested FLOP-bound speed-up X (checked with :func:`check_target`).
        tol: the relative tolerance, |bound / X - 1| ≤ tol (default 0.03).
        keep_threshold: None (no guard) or a fraction in (0, 1), e.g. :data:`BREAK_EVEN_KEEP`.
        strict: raise :class:`TargetUnreachableError` when the closest configuration found is
            outside the tolerance (only possible for tiny N, where one row is a large share of the
            FLOPs); False returns that closest configuration.

    Returns:
        ℓ as a list of L ints, 1 ≤ ℓ_j ≤ n, non-increasing.

    Raises:
        ValueError: a bad target (see :func:`check_target`), masses of the wrong length, or NaN.
        TargetUnreachableError: with ``strict``, when no configuration within tol was found.
    """
    n = int(n)
    masses = _masses_from(masses_or_scores)
    dims = flop_dims(config, len(masses))
    if len(masses) != dims[1]:
        raise ValueError(f"project_to_target: {len(masses)} masses for a model with {dims[1]} layers")
    check_target(target, dims, n)
    if keep_threshold is not None and not 0.0 < keep_threshold < 1.0:
        raise ValueError(f"keep_threshold must be in (0, 1) or None, got {keep_threshold}")
    target = float(target)

    def within(e: list[int]) -> bool:
        return abs(_bound(dims, e, n) / target - 1.0) <= tol

    pinned: frozenset = frozenset()
    ell = _project_once(masses, n, target, tol, dims, pinned)
    if keep_threshold is not None and within(ell):
        refused: set = set()
        while True:
            cands = [j for j in range(len(ell)) if j not in pinned and j not in refused
                     and keep_threshold < _keep_fraction(ell, n, j) < 1.0]
            if not cands:
                break
            j = max(cands, key=lambda k: (_keep_fraction(ell, n, k), -k))
            trial = _project_once(masses, n, target, tol, dims, pinned | {j})
            if within(trial):
                pinned, ell = pinned | {j}, trial
            else:
                refused.add(j)
    if strict and not within(ell):
        b = _bound(dims, ell, n)
        raise TargetUnreachableError(
            f"no retention configuration found with a FLOP bound within ±{100 * tol:g}% of {target:g} at N={n} "
            f"(D={dims[0]}, L={dims[1]}): the closest found is {ell} with {b:.4f} (at this N one row is a large share "
            f"of the FLOPs, so the integer grid is coarse; ask for {b:.3f}, or pass strict=False)")
    return ell


def apply_break_even(ell: Sequence[int], n: int, keep_threshold: float = BREAK_EVEN_KEEP, *, config=None,
                     min_bound: float | None = None) -> list[int]:
    """The break-even guard on a given configuration: a layer that keeps more than
    ``keep_threshold`` of its input rows, but not all, is raised to keep all of them
    (ℓ_j = ℓ_{j-1}), so it skips significance and extract. Layers are raised one at a time, the
    highest keep fraction first; with ``min_bound`` a raise that would put the FLOP bound below it
    is skipped. Use it on configurations from the paper's λ procedure; with a target, prefer
    ``project_to_target(..., keep_threshold=...)``, which re-balances the other layers.

    Args:
        ell: a retention configuration (L ints, non-increasing, 1 ≤ ℓ_j ≤ n).
        n: the sequence length N.
        keep_threshold: the keep fraction ℓ_j / ℓ_{j-1} above which a layer is raised.
        config: the model config or (D, L[, F]); required with ``min_bound``.
        min_bound: None, or the smallest FLOP bound the result may have.

    Returns:
        The guarded configuration (a new list).
    """
    n = int(n)
    out = [int(x) for x in ell]
    if any(not 1 <= x <= n for x in out) or any(b > a for a, b in zip(out, out[1:])):
        raise ValueError(f"apply_break_even: {list(ell)} is not a non-increasing configuration in [1, {n}]")
    if not 0.0 < keep_threshold < 1.0:
        raise ValueError(f"keep_threshold must be in (0, 1), got {keep_threshold}")
    dims = None
    if min_bound is not None:
        if config is None:
            raise ValueError("apply_break_even: min_bound needs the model config")
        dims = flop_dims(config, len(out))
    skipped: set = set()
    while True:
        cands = [j for j in range(len(out)) if j not in skipped and keep_threshold < _keep_fraction(out, n, j) < 1.0]
        if not cands:
            return out
        j = max(cands, key=lambda k: (_keep_fraction(out, n, k), -k))
        trial = list(out)
        trial[j] = n if j == 0 else out[j - 1]
        if dims is not None and _bound(dims, trial, n) < min_bound:
            skipped.add(j)
        else:
            out = trial
