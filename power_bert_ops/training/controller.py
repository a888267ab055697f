"""Stage 2 with a target speed-up X (SPEC 1.6): a ``transformers.TrainerCallback`` that drives the
smooth FLOP bound of the retention masses to X, then ends the search once the bound has held there.

**Learning rate of r (steps-independence).** At ``on_train_begin`` the learning rate of the
optimiser group holding ``retention_params`` is replaced by ``travel / Σ_{s < planned} schedule(s)``
(:func:`rescale_group_lr`), where schedule is the Trainer's LambdaLR factor (linear warm-up and
decay in the pipeline) and ``planned`` the search's planned steps (``max_steps`` unless given).
Adam moves an entry of r by at most about the learning rate per step, so over the planned search an
entry can travel ``travel`` units whatever the number of steps.

**Pressure.** Every optimiser step the controller reads the masses, computes the smooth bound b of
:func:`~power_bert_ops.flops.soft_bound` and the error e = log(X / b) (> 0: too little
eliminated), and updates a proportional-integral law

    I ← clamp(I + k_i · e · w_s, ±u_max),   u = clamp(I + k_p · e, ±u_max)

(the integral is held while u is saturated and e would push it further: no wind-up on the way
to X, which otherwise carries the bound past X for many steps), where
w_s = schedule(s) / Σ_{s < planned} schedule is the step's share of the planned search's
learning-rate progress: time is measured in r's travel, so the gains mean the same on 24 steps or
24,000 and the integral does not wind up while the learning rate is small. Right after each
optimiser step r_j ← clamp(r_j − lr_soft(s) · u · reach · j / L, 0, 1) (:meth:`apply_pressure_`):
SPEC 1.3's λ·Σ_j j·mass_j term applied outside Adam, as AdamW applies weight decay. At |u| ≤ u_max
= 1 and reach = 1 the deepest layer's pressure is at most Adam's largest step, so an entry whose
task gradient consistently holds it up survives in every layer; the others drift down. u < 0
pushes r back up. The trainer's λ is 0.

**Whole rows (``steps=True``; off by default).** The pressure then moves each layer's mass,
mass_j ← mass_j − N · lr_soft(s) · u · reach · j / L (what it does to the mass of an unclamped r,
the same both ways), and r_j is kept on the step of its mass, r_j[t] = clamp(mass_j − t, 0, 1) with
mass_j ≥ 1 (``project_retention_to_steps_``), and the model's
``soft_like_hard`` is set on: [CLS] ranks first and each row's factors so far weight it as a key
(and as a query of the significance), so at integer masses the soft model computes exactly what
hard mode computes at that ℓ. In SPEC 1.3's box [0, 1]^N, Adam's per-entry normalisation moves
every entry alike: r shrinks every row of a layer together (measured on Rotten Tomatoes at 4.5x:
~0.7 across all ranks of layer 1, ~0 across all of layer 6, dev accuracy of the search model near
chance) and the soft bound stalls near 3.5x. On whole rows the same search holds its target (4.5x:
83-97 of 120 steps within 5%, projection jump x0.97-0.99), but stage 3 ended no better (bench/
RESULTS.md), so the pipeline keeps SPEC 1.3's soft mode.

**The end of the search.** With ``planned_steps`` below the Trainer's ``max_steps`` the search
runs at least ``planned_steps`` and then stops at the first step where the soft bound has been
within ``hold_window`` of X for at least ``hold_share`` of all its steps (:meth:`held`); else it
runs to ``max_steps``.

The final configuration comes from :meth:`final_retention` (:func:`.projection.project_to_target`),
so the ±tol guarantee does not depend on how well the search tracked X; :meth:`settings` records
how far the projection had to move the bound.

Plug-in (PowerBertTrainer; pass any ``lr_soft`` so r gets its own optimiser group)::

    ctl = TargetController(X, model.config, n).attach(trainer)   # sets trainer.lam = 0, adds itself
    trainer.train()
    ell = ctl.final_retention(trainer.model, keep_threshold=BREAK_EVEN_KEEP)
    report["target"] = ctl.settings()
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..flops import check_target, flop_dims, soft_bound
from .projection import DEFAULT_TOLERANCE, project_to_target
from .trainer import saved_callback_state

__all__ = ["HOLD_SHARE", "HOLD_WINDOW", "TargetController", "rescale_group_lr"]

HOLD_WINDOW = 0.05
"""The soft bound counts as at the target when |b / X - 1| ≤ 0.05."""

REACH = 1.0
"""The deepest layer's largest pressure, in Adam steps (see :class:`TargetController`)."""

HOLD_SHARE = 0.25
"""The search may end once the soft bound has been at the target for this share of its steps."""


def _core(model):
    return model.module if hasattr(model, "module") else model


def _retention_group(model, optimizer) -> int | None:
    """Index of the optimiser group holding the model's retention parameters (None: none does)."""
    ids = {id(p) for p in _core(model).retention_parameters()}
    found = None
    for i, g in enumerate(optimizer.param_groups):
        if any(id(p) in ids for p in g["params"]):
            if any(id(p) not in ids for p in g["params"]):
                raise ValueError("TargetController: the retention parameters share an optimiser group with other "
                                 "parameters; give the trainer an lr_soft so they get their own group")
            found = i
    return found


def rescale_group_lr(optimizer, scheduler, index: int, peak: float) -> None:
    """Sets the peak learning rate of optimiser group ``index`` to ``peak`` under a LambdaLR
    scheduler (its base rate and current rate at the schedule's position), or as a constant rate
    when the scheduler is of another kind."""
    group = optimizer.param_groups[index]
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas is None:
        group["lr"] = peak
        return
    scheduler.base_lrs[index] = peak
    group["initial_lr"] = peak
    group["lr"] = peak * lambdas[index](max(0, scheduler.last_epoch))


class TargetController(TrainerCallback, ExportableState):
    """The controller described in the module docstring.

    Args:
        target: the FLOP-bound speed-up X (checked with :func:`~power_bert_ops.flops.check_target`).
        config: the model config (PowerBertConfig, Hugging Face config or dict), (D, L[, F]) or a
            :class:`~power_bert_ops.flops.FlopModel`.
        n: the sequence length N of the search.
        k_p: proportional gain (units of u per nat of error).
        k_i: integral gain (units of u per nat of error per planned search).
        u_max: the bound on |u|.
        travel: how far one r entry can move over the planned search at u = 0 (r units).
        reach: the pressure on the deepest layer at |u| = 1, in Adam steps (layer j gets
            reach · j / L of it).
        tol: the tolerance used by :meth:`final_retention`.
        planned_steps: the steps the search runs at least; None: the Trainer's ``max_steps``, no
            early end.
        hold_window, hold_share: when the search may end after ``planned_steps`` (:meth:`held`).
        steps: search on whole rows (module docstring): the model's ``soft_like_hard`` is set
            on at the start of training and r is kept a step of its masses; False (the default):
            SPEC 1.3's soft mode, r in the box [0, 1]^N.
    """

    def __init__(self, target: float, config, n: int, *, k_p: float = 3.0, k_i: float = 6.0, u_max: float = 1.0,
                 travel: float = 2.0, tol: float = DEFAULT_TOLERANCE, planned_steps: int | None = None,
                 hold_window: float = HOLD_WINDOW, hold_share: float = HOLD_SHARE, steps: bool = False,
                 reach: float = REACH):
        self.dims = flop_dims(config)
        self.n = int(n)
        self.max_bound = check_target(target, self.dims, self.n)
        self.target = float(target)
        if not (travel > 0 and u_max > 0 and k_p >= 0 and k_i >= 0):
            raise ValueError("TargetController: travel and u_max must be > 0 and the gains >= 0")
        self.k_p, self.k_i, self.u_max, self.travel = float(k_p), float(k_i), float(u_max), float(travel)
        self.tol, self.hold_window, self.hold_share = float(tol), float(hold_window), float(hold_share)
        self.planned_steps = None if planned_steps is None else int(planned_steps)
        self.steps = bool(steps)
        self.reach = float(reach)
        if not self.reach > 0:
            raise ValueError("TargetController: reach must be > 0")
        self.integral = 0.0
        self.u = 0.0
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
        ``trainer.lam`` to 0 (the pressure acts outside the loss).

        Args:
            trainer: a PowerBertTrainer (anything with a ``lam`` attribute and ``add_callback``).

        Returns:
            self.
        """
        self.trainer = trainer
        trainer.lam = 0.0
        trainer.add_callback(self)
        return self

    def held_steps(self) -> int:
        """How many steps of the search had the soft bound within ``hold_window`` of the target."""
        return sum(abs(h["soft_bound"] / self.target - 1.0) <= self.hold_window for h in self.history)

    def held(self) -> bool:
        """Whether the search may end: the current soft bound is within ``hold_window`` of the
        target and has been for at least ``hold_share`` of the steps so far."""
        if not self.history or abs(self.bound / self.target - 1.0) > self.hold_window:
            return False
        return self.held_steps() >= self.hold_share * len(self.history)

    def settings(self) -> dict:
        """The method's settings and outcome so far, for report.json.

        Returns:
            A JSON-serialisable dict.
        """
        return {"method": "controller-decoupled+projection", "target": self.target, "tolerance": self.tol,
                "k_p": self.k_p, "k_i": self.k_i, "u_max": self.u_max, "travel": self.travel,
                "lr_soft": self.lr_soft, "u_final": self.u, "soft_bound_final": self.bound,
                "max_reachable_bound": self.max_bound, "steps": len(self.history),
                "planned_steps": self.planned_steps, "hold_window": self.hold_window, "hold_share": self.hold_share,
                "held_steps": self.held_steps(), "held": self.held(),
                "retention_shape": "step" if self.steps else "box", "reach": self.reach}

    # -- checkpoints -------------------------------------------------------------------------------
    _STATE = ("integral", "u", "bound", "history")

    def state(self) -> dict:
        """What a resumed search needs to go on where it stopped (the integral, u, the last bound
        and the history). Trainer stores it in each checkpoint's trainer_state.json
        (``stateful_callbacks``); :meth:`load_state` reads it back.

        Returns:
            ``{"args": constructor arguments, "attributes": the control state}``, JSON-serialisable.
        """
        return {"args": {"target": self.target, "config": list(self.dims), "n": self.n, "k_p": self.k_p,
                         "k_i": self.k_i, "u_max": self.u_max, "travel": self.travel, "tol": self.tol,
                         "planned_steps": self.planned_steps, "hold_window": self.hold_window,
                         "hold_share": self.hold_share, "steps": self.steps, "reach": self.reach},
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
        return self

    def load_checkpoint(self, checkpoint) -> bool:
        """Restores the control state from a Trainer checkpoint folder, if it holds one.

        Args:
            checkpoint: the checkpoint folder (``checkpoint-<step>``) a search resumes from.

        Returns:
            True when a state was found and restored.
        """
        state = saved_callback_state(checkpoint, type(self).__name__)
        if state is None:
            return False
        self.load_state(state)
        return True

    # -- the schedule ------------------------------------------------------------------------------
    def schedule_weights(self, total_steps: int, factor=None) -> list[float]:
        """Each step's share of the planned search's learning-rate progress (also sets the sum of
        the schedule used for the learning rate of r).

        Args:
            total_steps: the number of optimiser steps of the search (at most).
            factor: the schedule's multiplier as a function of the step index (None: constant).

        Returns:
            ``total_steps`` non-negative weights; those of the planned steps sum to 1 (uniform when
            the schedule sums to 0).
        """
        total_steps = max(1, int(total_steps))
        planned = min(total_steps, self.planned_steps or total_steps)
        f = [max(0.0, float(factor(s))) if factor is not None else 1.0 for s in range(total_steps)]
        s = sum(f[:planned])
        self._weights = [x / s for x in f] if s > 0 else [1.0 / planned] * total_steps
        self._factor_sum = s if s > 0 else float(planned)
        return self._weights

    def peak_lr(self) -> float:
        """The retention learning rate that lets an entry travel ``travel`` units over the planned
        steps of the schedule given to :meth:`schedule_weights`.

        Returns:
            travel / Σ_{s < planned} schedule(s).
        """
        if self._factor_sum is None:
            raise RuntimeError("TargetController.peak_lr: call schedule_weights first")
        return self.travel / self._factor_sum

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        """Sets the retention group's learning rate for ``travel`` and the per-step weights of the
        controller, from ``state.max_steps`` and the LR schedule."""
        sched = getattr(lr_scheduler, "scheduler", lr_scheduler)
        opt = getattr(optimizer, "optimizer", optimizer)
        index = _retention_group(model, opt) if model is not None and opt is not None else None
        if index is None:
            raise ValueError("TargetController: no optimiser group holds the model's retention parameters (is the "
                             "model in soft mode?)")
        self._group = opt.param_groups[index]
        _core(model).config.soft_like_hard = self.steps
        lambdas = getattr(sched, "lr_lambdas", None)
        self.schedule_weights(state.max_steps, lambdas[index] if lambdas is not None else None)
        self.lr_soft = self.peak_lr()
        rescale_group_lr(opt, sched, index, self.lr_soft)
        if self.trainer is not None:
            self.trainer.lam = 0.0

    # -- the control law ---------------------------------------------------------------------------
    def observe(self, masses: Sequence[float], step: int | None = None) -> float:
        """One controller update from the current masses. The Trainer callback calls it in
        ``on_step_end``; from a plain loop call :meth:`schedule_weights` first (else each step
        weighs 1/1000), then this and :meth:`apply_pressure_` after each optimiser step.

        Args:
            masses: mass_j per layer (L floats or a tensor).
            step: the index of the optimiser step just taken (0-based), for its weight.

        Returns:
            The new control value u.
        """
        if isinstance(masses, torch.Tensor):
            masses = masses.detach().double().cpu().tolist()
        self.bound = soft_bound([float(x) for x in masses], self.dims, self.n)
        e = math.log(self.target / self.bound)
        i = len(self.history) if step is None else int(step)
        w = self._weights[min(i, len(self._weights) - 1)] if self._weights else 1e-3
        if abs(self.integral + self.k_p * e) < self.u_max or e * self.integral < 0:  # no wind-up while saturated
            self.integral = min(self.u_max, max(-self.u_max, self.integral + self.k_i * e * w))
        self.u = min(self.u_max, max(-self.u_max, self.integral + self.k_p * e))
        self.history.append({"step": i + 1, "u": self.u, "soft_bound": self.bound})
        return self.u

    @torch.no_grad()
    def apply_pressure_(self, model, lr: float) -> None:
        """With ``steps``: mass_j ← mass_j − N · lr · u · reach · j / L (mass_j of r clamped to
        [0, 1]; in [1, N]), then r_j ← the step of that mass; otherwise
        r_j ← clamp(r_j − lr · u · reach · j / L, 0, 1) entry by entry, which moves the mass of an
        unclamped r by the same N · lr · u · reach · j / L.

        On a step vector the entry-wise pressure would be lopsided: pushing down moves only the
        ⌈mass⌉ entries above 0, pushing back up (u < 0) lifts all N, so every overshoot of the
        target would inflate the deepest layers' masses. The pressure on the mass is the same
        both ways, and like SPEC 1.3's λ·j·mass_j term it takes rows off in proportion to j.

        Args:
            model: the soft-mode PoWER-BERT model.
            lr: the retention learning rate of the optimiser step just taken.
        """
        core = _core(model)
        r = core.retention_params
        L = r.shape[0]
        j = torch.arange(1, L + 1, dtype=r.dtype, device=r.device)
        pressure = (lr * self.u * self.reach) * (j / L).unsqueeze(1)
        if self.steps:
            core.clamp_retention_()
            mass = r.sum(dim=1, keepdim=True) - r.shape[1] * pressure
            core.project_retention_to_steps_(mass.clamp(max=r.shape[1]))
        else:
            r.sub_(pressure)
            core.clamp_retention_()

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        """The pressure step with the learning rate Adam just used."""
        if model is not None and self._group is not None and self.u != 0.0:
            self.apply_pressure_(model, float(self._group["lr"]))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        """Clamps r to [0, 1] (idempotent with ClampRetentionCallback) and, with ``steps``, projects
        it onto steps of the same masses; updates the controller from the masses, and ends training
        once the planned steps are done and the bound has held."""
        if model is None:
            return
        core = _core(model)
        core.clamp_retention_()
        if self.steps:
            core.project_retention_to_steps_()
        with torch.no_grad():
            masses = core.retention_masses()
        self.observe(masses, state.global_step - 1)
        if self.planned_steps is not None and state.global_step >= self.planned_steps and self.held():
            control.should_training_stop = True
        return control

    # -- the result --------------------------------------------------------------------------------
    def final_retention(self, model_or_masses, keep_threshold: float | None = None, strict: bool = True) -> list[int]:
        """The stage-2 configuration: :func:`.projection.project_to_target` of the model's masses
        (or the masses given), so the bound is within the tolerance however the search went.

        Args:
            model_or_masses: the soft-mode model, or its masses / [L, N] retention vectors.
            keep_threshold: the break-even guard (None: off), e.g. ``BREAK_EVEN_KEEP``.
            strict: see :func:`.projection.project_to_target`.

        Returns:
            ℓ as a list of L ints.
        """
        src = model_or_masses
        if hasattr(src, "retention_masses"):
            src = _core(src).retention_masses().detach()
        return project_to_target(src, self.dims, self.n, self.target, tol=self.tol, keep_threshold=keep_threshold,
                                 strict=strict)
