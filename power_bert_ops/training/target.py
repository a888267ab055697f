"""Target-driven configuration search (SPEC 1.6, issue 12): ask for a FLOP-bound speed-up X
instead of a λ.

Four pieces, each usable on its own:

* :func:`check_target` / :func:`max_reachable_speedup`: refuse, before any training, a target
  below 1 or above the bound of keeping one row in every layer (ℓ = [1]*L).
* :class:`TargetController`: a ``transformers.TrainerCallback`` for stage 2 that

  - rescales the retention parameters' learning rate so that, over the whole search, the
    schedule lets one r entry travel ``travel`` units (Σ_steps lr_soft(step) = travel). Adam
    moves an entry by at most about lr per step, so this makes how far r can move, and hence
    the search's result, independent of how many steps an epoch has (today a small data set
    caps r's movement at lr_soft·steps, e.g. ℓ = [64, 63, 62, ...]);
  - after every optimiser step, updates a proportional-integral control value u from
    e = log(X / bound(current masses)), with time measured in that same normalised
    learning-rate progress (so the gains mean the same on 24 steps or 24,000), and applies it
    as an elimination pressure r_j ← r_j − lr_soft·u·j/L outside Adam (default, "decoupled":
    scale-free, no λ to find) or as SPEC 1.3's λ = lam_scale·sinh(u) in the loss ("lambda");
  - keeps a history of (step, u, λ, bound) for report.json.

* :func:`project_to_target`: turns the learned masses (or the [L, N] r vectors) into an integer,
  non-increasing ℓ whose FLOP bound is X within ±3% whatever the search did: a common scale of
  the masses found by bisection, SPEC 1.3's rounding, then greedy ±1 moves on the integer grid
  (and an exact dynamic programme when that misses, which only happens at tiny N).
  Optional break-even guard (``keep_threshold``): layers that would drop only a small fraction of
  their input rows are set to drop none, and the other layers make up the difference.
* :func:`distillation_loss` / :func:`mix_distillation`: logit distillation from the stage-1
  teacher (KL at temperature T scaled by T², MSE for regression) and the mixing rule
  ``loss = (1 - alpha)·task + alpha·KD``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..flops import FlopModel, _dims, encoder_macs

__all__ = [
    "BREAK_EVEN_KEEP",
    "DEFAULT_ALPHA",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOLERANCE",
    "TargetController",
    "TargetUnreachableError",
    "apply_break_even",
    "check_target",
    "distillation_loss",
    "max_reachable_speedup",
    "mix_distillation",
    "project_to_target",
    "soft_bound",
]

DEFAULT_TOLERANCE = 0.03
"""Relative tolerance on the FLOP bound: |bound / X - 1| ≤ 0.03 (issue 12)."""

BREAK_EVEN_KEEP = 0.9
"""Keep fraction ℓ_j / ℓ_{j-1} above which a layer is treated as not worth eliminating in (its
significance and extract cost more than the few rows save). Measured on the 2-core CPU
(``bench/bench_break_even.py``, MiniLM, N = 64 and 512): one elimination at layer 1 or 3 breaks
even at a keep fraction of 0.93-0.98 and gains 2-5% at 0.9; at the last layer it gains nothing
measurable at any fraction. The GPU measurement is pending (no device lent yet)."""

DEFAULT_TEMPERATURE = 2.0
"""Distillation temperature used when the caller gives none."""

DEFAULT_ALPHA = 0.5
"""Weight of the distillation term in :func:`mix_distillation` when the caller gives none."""


class TargetUnreachableError(ValueError):
    """No integer retention configuration (under the constraints asked) has a FLOP bound within
    the tolerance of the target; the message names the closest bound found."""


# ------------------------------------------------------------------------------------------------
# FLOP-bound helpers
# ------------------------------------------------------------------------------------------------
def _layers(config, n_layers: int | None = None) -> tuple[int, int, int | None]:
    """(D, L, F) from anything :func:`power_bert_ops.flops.flop_bound` accepts; L is required. A
    :class:`~power_bert_ops.flops.FlopModel` (bounds over a length distribution) passes as it is."""
    if isinstance(config, FlopModel):
        return config
    D, L, Fw = _dims(config)
    L = n_layers if L is None else L
    if L is None:
        raise ValueError("give the number of layers: a model config or a (hidden, layers) tuple")
    return D, int(L), Fw


def _bound(dims: tuple[int, int, int | None], ell: Sequence[int], n: int) -> float:
    """SPEC 3 FLOP bound of the integer configuration ``ell`` at N = ``n`` (over the lengths of a
    FlopModel when ``dims`` is one)."""
    if isinstance(dims, FlopModel):
        return dims.bound(ell)
    return encoder_macs(dims, None, n) / encoder_macs(dims, ell, n)


def _float_macs(dims: tuple[int, int, int | None], rows: Sequence[float], n: float) -> float:
    """SPEC 3 multiply-adds with real-valued row counts (the same formula as flops.layer_macs)."""
    D, _, Fw = dims
    Fw = 4 * D if Fw is None else Fw
    total, n_in = 0.0, float(n)
    for r in rows:
        n_out = min(float(r), n_in)
        total += 3 * n_in * D * D + 2 * n_in * n_in * D + n_out * D * D + 2 * n_out * D * Fw
        n_in = n_out
    return total


def soft_bound(masses: Sequence[float], config, n: int) -> float:
    """The FLOP bound of real-valued retention masses: row counts clamp(cummin(mass_j), 1, n),
    no rounding. A smooth version of flop_bound(derive_retention(masses)) for the controller.

    Args:
        masses: mass_j = Σ_t r_j[t] per layer (L floats).
        config: a model config (PowerBertConfig, Hugging Face config or dict) or (D, L[, F]).
        n: the sequence length N.

    Returns:
        The bound Σ_j macs_j(N, N) / Σ_j macs_j(rows_{j-1}, rows_j) as a float ≥ 1.
    """
    dims = _layers(config, len(masses))
    if isinstance(dims, FlopModel):
        return dims.soft_bound(masses)
    rows, prev = [], float(n)
    for m in masses:
        prev = min(prev, max(1.0, float(m)))
        rows.append(prev)
    return _float_macs(dims, [n] * dims[1], n) / _float_macs(dims, rows, n)


def max_reachable_speedup(config, n: int) -> float:
    """The largest FLOP bound any configuration reaches at N = ``n``: ℓ = [1]*L.

    Args:
        config: a model config (PowerBertConfig, Hugging Face config or dict) or (D, L[, F]).
        n: the sequence length N (≥ 1).

    Returns:
        flop_bound(config, [1]*L, n).
    """
    dims = _layers(config)
    return _bound(dims, [1] * dims[1], int(n))


def check_target(target: float, config, n: int) -> float:
    """Refuses a target speed-up no configuration can give. Cheap (two FLOP sums): call it
    before training.

    Args:
        target: the requested FLOP-bound speed-up X.
        config: a model config (PowerBertConfig, Hugging Face config or dict) or (D, L[, F]).
        n: the sequence length N of the run.

    Returns:
        The largest reachable bound (ℓ = [1]*L), for the caller's report.

    Raises:
        ValueError: X is not a finite number, X < 1, or X is above the largest reachable bound
            (the message names that bound, the model's D and L, and N).
    """
    dims = _layers(config)
    if int(n) < 1:
        raise ValueError(f"target speed-up: the sequence length must be >= 1, got {n}")
    top = _bound(dims, [1] * dims[1], int(n))
    try:
        x = float(target)
    except (TypeError, ValueError):
        raise ValueError(f"target speed-up must be a number, got {target!r}; the largest reachable FLOP bound for "
                         f"this model (D={dims[0]}, L={dims[1]}) at N={n} is {top:.3f}") from None
    if not math.isfinite(x) or x < 1.0:
        raise ValueError(f"target speed-up must be a number >= 1 (1 = no elimination), got {target!r}; the largest "
                         f"reachable FLOP bound for this model (D={dims[0]}, L={dims[1]}) at N={n} is {top:.3f}")
    if x > top:
        raise ValueError(f"target speed-up {x:g} is above the largest reachable FLOP bound {top:.3f} for this model "
                         f"(D={dims[0]}, L={dims[1]}) at N={n} (keeping one row in every layer); ask for at most "
                         f"{top:.3f} or use a longer sequence length")
    return top


# ------------------------------------------------------------------------------------------------
# Projection of the learned retention onto the target bound
# ------------------------------------------------------------------------------------------------
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
    dims = _layers(config, len(masses))
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
        dims = _layers(config, len(out))
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


# ------------------------------------------------------------------------------------------------
# The controller (stage 2)
# ------------------------------------------------------------------------------------------------
def _core(model):
    return model.module if hasattr(model, "module") else model


class TargetController(TrainerCallback, ExportableState):
    """Stage 2 with a target speed-up X: the learning rate of r and a controlled elimination
    pressure, so that the bound of the current masses tracks X.

    **Learning rate of r (steps-independence).** At ``on_train_begin`` the learning rate of the
    optimiser group holding ``retention_params`` is replaced by
    ``travel / Σ_{s < max_steps} schedule(s)``, where schedule is the Trainer's LambdaLR factor
    (linear warm-up and decay in the pipeline). Adam moves an entry of r by at most about the
    learning rate per step, so over the whole search an entry can travel ``travel`` units
    whatever the number of steps (today a small data set caps r's movement at lr_soft·steps,
    e.g. ℓ = [64, 63, 62, ...]).

    **Pressure.** Every optimiser step the controller reads the masses, computes the smooth bound
    b of :func:`soft_bound` and the error e = log(X / b) (> 0: too little eliminated), and updates
    a proportional-integral law

        I ← clamp(I + k_i · e · w_s, ±u_max),   u = clamp(I + k_p · e, ±u_max)

    where w_s = schedule(s) / Σ schedule is the step's share of the search's learning-rate
    progress (Σ_s w_s = 1): time is measured in r's travel, so the gains mean the same on 24 steps
    or 24,000 and the integral does not wind up while the learning rate is small. u acts in one of
    two ways (``mode``):

    * ``"decoupled"`` (default): right after each optimiser step r_j ← r_j − lr_soft(s) · u · w_j,
      then clamped to [0, 1]; the trainer's λ is 0. This is SPEC 1.3's λ·Σ_j j·mass_j term
      applied outside Adam, as AdamW applies weight decay: Adam normalises the task gradient of
      each r entry to a step of at most about lr_soft, and u is measured in the same units. With
      ``weighting="last"`` (default) w_j = j / L, so the deepest layer's pressure is u and, as
      |u| ≤ u_max = 1, an entry whose task gradient consistently holds it up survives in every
      layer; the others drift down. ``weighting="mean"`` (w_j = j / j̄) with u_max = 2 lets the
      pressure on the deep layers reach 3.4x Adam's largest step: every entry of those layers
      goes to 0 whatever the task says, and the search collapses. On 20 Newsgroups (N = 512, 6x,
      baseline dev 0.682), "mean" gave ℓ = [304, 13, 7, 7, 7, 7] with soft-mode dev accuracy
      0.064 and retrained dev 0.632; "last" gave [123, 101, 87, 36, 21, 1], 0.632 and 0.734.
      No λ scale has to be found; u < 0 pushes r back up.
    * ``"lambda"``: SPEC 1.3's loss term with λ = lam_scale · sinh(u) written to ``trainer.lam``
      (signed; exponential in u away from 0). Adam sees λ·j relative to the task gradient, whose
      scale differs by orders of magnitude between models, so this mode needs lam_scale near the
      right scale; kept for comparison.

    In both modes the final configuration comes from :meth:`final_retention`
    (:func:`project_to_target`), so the ±tol guarantee does not depend on how well the search
    tracked X; the controller makes the masses' shape be learned near the target pressure.

    Plug-in (PowerBertTrainer; pass any ``lr_soft`` so r gets its own optimiser group)::

        ctl = TargetController(X, model.config, n).attach(trainer)   # sets trainer.lam, adds itself
        trainer.train()
        ell = ctl.final_retention(trainer.model, keep_threshold=BREAK_EVEN_KEEP)
        report["target"] = ctl.settings()

    Args:
        target: the FLOP-bound speed-up X (checked with :func:`check_target`).
        config: the model config (PowerBertConfig, Hugging Face config or dict) or (D, L[, F]).
        n: the sequence length N of the search.
        mode: ``"decoupled"`` or ``"lambda"`` (above).
        k_p: proportional gain (units of u per nat of error).
        k_i: integral gain (units of u per nat of error per whole search).
        u_max: the bound on |u|.
        weighting: ``"last"`` (w_j = j / L) or ``"mean"`` (w_j = j / j̄), the pressure's layer
            weights in ``decoupled`` mode (above).
        travel: how far one r entry can move over the whole search at u = 0 (r units).
        lam_scale: ``"lambda"`` mode only: λ = lam_scale · sinh(u).
        set_lr: rescale the retention group's learning rate at on_train_begin (True); False
            leaves lr_soft as the trainer has it (then the search depends on the step count).
        tol: the tolerance used by :meth:`final_retention`.
    """

    def __init__(self, target: float, config, n: int, *, mode: str = "decoupled", k_p: float = 3.0,
                 k_i: float = 6.0, u_max: float = 1.0, travel: float = 2.0, lam_scale: float = 1e-6,
                 weighting: str = "last",
                 set_lr: bool = True, tol: float = DEFAULT_TOLERANCE):
        self.dims = _layers(config)
        self.n = int(n)
        self.max_bound = check_target(target, self.dims, self.n)
        self.target = float(target)
        if mode not in ("decoupled", "lambda"):
            raise ValueError(f"TargetController: mode must be 'decoupled' or 'lambda', got {mode!r}")
        if not (travel > 0 and u_max > 0 and lam_scale > 0 and k_p >= 0 and k_i >= 0):
            raise ValueError("TargetController: travel, u_max and lam_scale must be > 0 and the gains >= 0")
        self.mode = mode
        if weighting not in ("mean", "last"):
            raise ValueError(f"TargetController: weighting must be 'mean' or 'last', got {weighting!r}")
        self.weighting = weighting
        self.k_p, self.k_i, self.u_max, self.travel = float(k_p), float(k_i), float(u_max), float(travel)
        self.lam_scale, self.set_lr, self.tol = float(lam_scale), bool(set_lr), float(tol)
        self.integral = 0.0
        self.u = 0.0
        self.lam = 0.0
        self.bound = 1.0
        self.lr_soft = None  # the retention group's peak learning rate once on_train_begin set it
        self.history: list[dict] = []
        self.trainer = None
        self._weights: list[float] | None = None
        self._factor_sum = None
        self._group = None

    # -- wiring ------------------------------------------------------------------------------------
    def attach(self, trainer) -> "TargetController":
        """Registers this controller with a PowerBertTrainer: adds the callback and sets
        ``trainer.lam`` (0 in ``decoupled`` mode; kept updated in ``lambda`` mode).

        Args:
            trainer: a PowerBertTrainer (anything with a ``lam`` attribute and ``add_callback``).

        Returns:
            self.
        """
        self.trainer = trainer
        trainer.lam = self.lam
        trainer.add_callback(self)
        return self

    def settings(self) -> dict:
        """The method's settings and outcome so far, for report.json.

        Returns:
            A JSON-serialisable dict.
        """
        return {"method": f"controller-{self.mode}+projection", "target": self.target, "tolerance": self.tol,
                "k_p": self.k_p, "k_i": self.k_i, "u_max": self.u_max, "travel": self.travel,
                "weighting": self.weighting, "lr_soft": self.lr_soft, "u_final": self.u, "lam_final": self.lam,
                "soft_bound_final": self.bound, "max_reachable_bound": self.max_bound, "steps": len(self.history)}

    # -- checkpoints -------------------------------------------------------------------------------
    _STATE = ("integral", "u", "lam", "bound", "history")

    def state(self) -> dict:
        """What a resumed search needs to go on where it stopped (the integral, u, λ, the last
        bound and the history). Trainer stores it in each checkpoint's trainer_state.json
        (``stateful_callbacks``); :meth:`load_state` reads it back.

        Returns:
            ``{"args": constructor arguments, "attributes": the control state}``, JSON-serialisable.
        """
        return {"args": {"target": self.target, "config": list(self.dims), "n": self.n, "mode": self.mode,
                         "k_p": self.k_p, "k_i": self.k_i, "u_max": self.u_max, "travel": self.travel,
                         "lam_scale": self.lam_scale, "weighting": self.weighting, "set_lr": self.set_lr,
                         "tol": self.tol},
                "attributes": {k: getattr(self, k) for k in self._STATE}}

    def load_state(self, state: dict) -> "TargetController":
        """Restores the control state saved by :meth:`state` (from a checkpoint of the same search).

        Args:
            state: the dict :meth:`state` returned.

        Returns:
            self.
        """
        if float(state["args"]["target"]) != self.target:
            raise ValueError(f"TargetController.load_state: the checkpoint's target is {state['args']['target']}, "
                             f"this search's {self.target}")
        for k in self._STATE:
            setattr(self, k, state["attributes"][k])
        if self.trainer is not None:
            self.trainer.lam = self.lam
        return self

    def load_checkpoint(self, checkpoint) -> bool:
        """Restores the control state from a Trainer checkpoint folder, if it holds one.

        Args:
            checkpoint: the checkpoint folder (``checkpoint-<step>``) a search resumes from.

        Returns:
            True when a state was found and restored.
        """
        path = Path(checkpoint) / "trainer_state.json"
        saved = json.loads(path.read_text()).get("stateful_callbacks", {}) if path.exists() else {}
        state = saved.get(type(self).__name__)
        if isinstance(state, list):
            state = state[0] if state else None
        if state is None:
            return False
        self.load_state(state)
        return True

    # -- the schedule ------------------------------------------------------------------------------
    def schedule_weights(self, total_steps: int, factor=None) -> list[float]:
        """Each step's share of the search's learning-rate progress (also sets the sum of the
        schedule used for the learning rate of r).

        Args:
            total_steps: the number of optimiser steps of the search.
            factor: the schedule's multiplier as a function of the step index (None: constant).

        Returns:
            ``total_steps`` non-negative weights summing to 1 (uniform when the schedule sums to 0).
        """
        total_steps = max(1, int(total_steps))
        f = [max(0.0, float(factor(s))) if factor is not None else 1.0 for s in range(total_steps)]
        s = sum(f)
        self._weights = [x / s for x in f] if s > 0 else [1.0 / total_steps] * total_steps
        self._factor_sum = s if s > 0 else float(total_steps)
        return self._weights

    def peak_lr(self) -> float:
        """The retention learning rate that lets an entry travel ``travel`` units over the
        schedule given to :meth:`schedule_weights`.

        Returns:
            travel / Σ_s schedule(s).
        """
        if self._factor_sum is None:
            raise RuntimeError("TargetController.peak_lr: call schedule_weights first")
        return self.travel / self._factor_sum

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        """Sets the retention group's learning rate for ``travel`` (see the class docstring) and
        the per-step weights of the controller, from ``state.max_steps`` and the LR schedule."""
        sched = getattr(lr_scheduler, "scheduler", lr_scheduler)
        opt = getattr(optimizer, "optimizer", optimizer)
        group_index = None
        if model is not None and opt is not None:
            ids = {id(p) for p in _core(model).retention_parameters()}
            for i, g in enumerate(opt.param_groups):
                if any(id(p) in ids for p in g["params"]):
                    if any(id(p) not in ids for p in g["params"]):
                        raise ValueError("TargetController: the retention parameters share an optimiser group with "
                                         "other parameters; give the trainer an lr_soft so they get their own group")
                    group_index = i
        if group_index is None and self.mode == "decoupled":
            raise ValueError("TargetController: no optimiser group holds the model's retention parameters (is the "
                             "model in soft mode?)")
        self._group = opt.param_groups[group_index] if group_index is not None else None
        lambdas = getattr(sched, "lr_lambdas", None)
        factor = lambdas[group_index] if lambdas is not None and group_index is not None else None
        self.schedule_weights(state.max_steps, factor)
        if self.set_lr and self._group is not None:
            peak = self.peak_lr()
            if lambdas is not None:
                sched.base_lrs[group_index] = peak
                self._group["initial_lr"] = peak
                self._group["lr"] = peak * lambdas[group_index](max(0, sched.last_epoch))
            else:  # a constant or unknown schedule: the constant peak
                self._group["lr"] = peak
            self.lr_soft = peak
        if self.trainer is not None:
            self.trainer.lam = self.lam

    # -- the control law ---------------------------------------------------------------------------
    def observe(self, masses: Sequence[float], step: int | None = None) -> float:
        """One controller update from the current masses. The Trainer callback calls it in
        ``on_step_end``; from a plain loop call :meth:`schedule_weights` first (else each step
        weighs 1/1000), then this after each optimiser step, and :meth:`apply_pressure_` after
        each optimiser step in ``decoupled`` mode.

        Args:
            masses: mass_j per layer (L floats or a tensor).
            step: the index of the optimiser step just taken (0-based), for its weight.

        Returns:
            The new control value u (and sets ``self.lam`` in ``lambda`` mode).
        """
        if isinstance(masses, torch.Tensor):
            masses = masses.detach().double().cpu().tolist()
        self.bound = soft_bound([float(x) for x in masses], self.dims, self.n)
        e = math.log(self.target / self.bound)
        i = len(self.history) if step is None else int(step)
        w = self._weights[min(i, len(self._weights) - 1)] if self._weights else 1e-3
        self.integral = min(self.u_max, max(-self.u_max, self.integral + self.k_i * e * w))
        self.u = min(self.u_max, max(-self.u_max, self.integral + self.k_p * e))
        if self.mode == "lambda":
            self.lam = self.lam_scale * math.sinh(self.u)
        self.history.append({"step": i + 1, "u": self.u, "lam": self.lam, "soft_bound": self.bound})
        return self.u

    @torch.no_grad()
    def apply_pressure_(self, model, lr: float) -> None:
        """``decoupled`` mode: r_j ← clamp(r_j − lr · u · w_j, 0, 1), w_j = j / L (``weighting="last"``)
        or j / j̄ (``"mean"``; j̄ the mean of 1..L).

        Args:
            model: the soft-mode PoWER-BERT model.
            lr: the retention learning rate of the optimiser step just taken.
        """
        core = _core(model)
        r = core.retention_params
        L = r.shape[0]
        j = torch.arange(1, L + 1, dtype=r.dtype, device=r.device)
        r.sub_((lr * self.u) * (j / (j.mean() if self.weighting == "mean" else L)).unsqueeze(1))
        core.clamp_retention_()

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        """``decoupled`` mode: the pressure step with the learning rate Adam just used."""
        if self.mode == "decoupled" and model is not None and self._group is not None and self.u != 0.0:
            self.apply_pressure_(model, float(self._group["lr"]))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        """Clamps r to [0, 1] (idempotent with ClampRetentionCallback), updates the controller from
        the masses and, in ``lambda`` mode, writes λ to the attached trainer."""
        if model is None:
            return
        core = _core(model)
        core.clamp_retention_()
        with torch.no_grad():
            masses = core.retention_masses()
        self.observe(masses, state.global_step - 1)
        if self.trainer is not None:
            self.trainer.lam = self.lam

    # -- the result --------------------------------------------------------------------------------
    def final_retention(self, model_or_masses, keep_threshold: float | None = None, strict: bool = True) -> list[int]:
        """The stage-2 configuration: :func:`project_to_target` of the model's masses (or the
        masses given), so the bound is within the tolerance however the search went.

        Args:
            model_or_masses: the soft-mode model, or its masses / [L, N] retention vectors.
            keep_threshold: the break-even guard (None: off), e.g. :data:`BREAK_EVEN_KEEP`.
            strict: see :func:`project_to_target`.

        Returns:
            ℓ as a list of L ints.
        """
        src = model_or_masses
        if hasattr(src, "retention_masses"):
            src = _core(src).retention_masses().detach()
        return project_to_target(src, self.dims, self.n, self.target, tol=self.tol, keep_threshold=keep_threshold,
                                 strict=strict)


# ------------------------------------------------------------------------------------------------
# Distillation
# ------------------------------------------------------------------------------------------------
def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE,
                      problem: str = "classification") -> torch.Tensor:
    """Logit distillation from the stage-1 teacher.

    * classification / multiple_choice: T² · KL(softmax(t / T) ‖ softmax(s / T)), averaged over
      the batch (the last axis holds the classes or choices). The T² keeps the gradient's size
      comparable to the task loss's as T changes (Hinton et al., 2015).
    * regression: mean squared error between the student's and the teacher's outputs
      (the temperature does not apply).

    Args:
        student_logits: [B, C] (or [B] / [B, 1] for regression), differentiable.
        teacher_logits: the same shape; no gradient flows into it (it is detached).
        temperature: T > 0.
        problem: "classification", "multiple_choice" or "regression".

    Returns:
        A scalar tensor in the student's dtype promoted to at least float32.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"distillation_loss: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    teacher = teacher_logits.detach().float()
    student = student_logits.float()
    if problem == "regression":
        return F.mse_loss(student, teacher)
    if problem not in ("classification", "multiple_choice"):
        raise ValueError(f"distillation_loss: problem must be classification, multiple_choice or regression, got "
                         f"{problem!r}")
    T = float(temperature)
    if not T > 0:
        raise ValueError(f"distillation_loss: temperature must be > 0, got {temperature}")
    s = F.log_softmax(student / T, dim=-1).reshape(-1, student.shape[-1])
    t = F.log_softmax(teacher / T, dim=-1).reshape(-1, student.shape[-1])
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * (T * T)


def mix_distillation(task_loss: torch.Tensor, kd_loss: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """The mixing rule: ``(1 - alpha) · task_loss + alpha · kd_loss``; alpha = 0 is no
    distillation, alpha = 1 learns from the teacher alone. Stage 2 adds λ·Σ_j j·mass_j on top.

    Args:
        task_loss: the task loss (cross-entropy or MSE) on the labels.
        kd_loss: :func:`distillation_loss` of the same batch.
        alpha: in [0, 1].

    Returns:
        The mixed scalar loss.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"mix_distillation: alpha must be in [0, 1], got {alpha}")
    return (1.0 - alpha) * task_loss + alpha * kd_loss
