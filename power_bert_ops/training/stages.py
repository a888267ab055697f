"""The table of the three stages (SPEC 1.4): what each one loads, how it trains, and what it
records. :func:`.pipeline._run_stage` resumes, trains and saves over :data:`STAGE_TABLE`.

* ``finetune``: the Hugging Face model on the task; stops on the dev metric with patience.
* ``search``: soft-extract from stage 1. With a target speed-up, :func:`search_steps` sets a floor on
  its steps and lets it run on (capped) until the soft bound has held at the target; the record
  says how far the final projection moved the bound.
* ``retrain``: hard extract at the searched ℓ; stops on the dev metric with patience.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from transformers import AutoConfig, EarlyStoppingCallback

from .._text import count_text
from ..flops import FlopModel, rows_floor, soft_bound
from ..modeling import adapters
from .controller import TargetController
from .errors import StageSettingsError
from .projection import apply_break_even
from .thresholds import calibrate_thresholds
from .trainer import ClampRetentionCallback, resolve_device

if TYPE_CHECKING:
    from .pipeline import PipelineConfig
    from .prepare import PreparedTask

SEARCH_MIN_STEPS = 120
"""A target search's default floor on steps (``PipelineConfig.search_min_steps``)."""

SEARCH_EXTEND = 1.5
"""A target search runs at most this many times its planned steps while the soft bound has not held."""

JUMP_WARNING = 0.10
"""The projection moving the bound by more than this share (projected / soft bound) is warned about."""


@dataclass
class StagePlan:
    """How one stage trains: its model, the epochs (the cap when ``best``), ``best`` (keep the best
    dev checkpoint and stop on patience), a step count overriding the epochs (> 0), a dev
    evaluation interval in steps (None: every epoch), the trainer's extra arguments and callbacks,
    and a search controller."""

    model: torch.nn.Module
    epochs: float
    best: bool
    max_steps: int = -1
    eval_steps: int | None = None  # evaluate every this many steps instead of every epoch
    trainer_kw: dict = field(default_factory=dict)
    callbacks: list = field(default_factory=list)
    controller: TargetController | None = None
    record: dict = field(default_factory=dict)


@dataclass
class Stage:
    """A row of :data:`STAGE_TABLE`: ``plan(cfg, task, previous)`` builds the :class:`StagePlan`;
    ``finish(cfg, task, plan, trainer)`` returns the retention configuration and the search record
    (None for stages without one)."""

    plan: Callable
    finish: Callable


def stage_distill(stage: str, cfg) -> bool:
    """Whether ``stage`` distils the stage-1 model's logits: in stages 2 and 3 when ``cfg.distill``
    is True, in none when False; automatically (None), in stage 3 only, and only where it runs no
    ranking distillation (``cfg.distill_ranking`` 0, as decided for short texts)."""
    if stage == "finetune":
        return False
    if cfg.distill is not None:
        return bool(cfg.distill)
    return stage == "retrain" and not cfg.distill_ranking


def floor_length(value) -> int | None:
    """A model config's ``min_rows_max_length`` from the pipeline's ``--min-rows-max-length``
    (None for "all")."""
    return None if value in (None, "all") else int(value)


def flop_model(config, task: "PreparedTask", scale: str, cfg: "PipelineConfig | None" = None) -> FlopModel:
    """The FLOP model a target speed-up is measured by: relative retention, the training data's
    real lengths (each example against the dense model at its own length, SPEC 1.6) and the floor
    of rows of ``cfg`` (None: the model config's); absolute retention, the paper's bound at N (SPEC 3)."""
    lengths = task.train_lengths if scale == "relative" else None
    floor = {} if cfg is None else dict(min_rows=cfg.min_rows, min_rows_max_length=floor_length(cfg.min_rows_max_length))
    return FlopModel(config, task.max_length, lengths=lengths, scale=scale, **floor)


def set_attention_dropout(model: torch.nn.Module, p: float) -> None:
    """Sets the dropout on attention probabilities of ``model`` (a Hugging Face encoder
    classifier or a PoWER-BERT model) to ``p``, in its layers and in its config, so the stages
    loaded from its saved folder train with it too. On CPU, ``p = 0`` lets SDPA use its fused
    kernel instead of the math path: a training step at N = 512 takes about a third of the time."""
    if model.config.model_type == "power_bert":
        model.set_attention_dropout(p)
    else:
        adapters.set_attention_dropout(model, p)


def _is_power_bert_dir(path: str) -> bool:
    try:
        return AutoConfig.from_pretrained(path).model_type == "power_bert"
    except (OSError, ValueError):
        return False


def _label_kwargs(task: "PreparedTask") -> dict:
    if task.problem == "multiple_choice":
        return {}
    kw = {"num_labels": task.num_labels}
    if task.problem == "regression":
        kw["problem_type"] = "regression"
    elif task.label_names:
        kw["id2label"] = dict(enumerate(task.label_names))
        kw["label2id"] = {n: i for i, n in enumerate(task.label_names)}
    return kw


def steps_per_epoch(cfg: "PipelineConfig", task: "PreparedTask") -> int:
    """Optimiser steps per epoch: --batch-size is the global batch."""
    return max(1, math.ceil(len(task.train) / cfg.batch_size))


def search_steps(cfg: "PipelineConfig", task: "PreparedTask") -> dict:
    """The target search's step plan: ``requested`` (--search-epochs), ``planned`` (at least
    --search-min-steps, whatever the data size) and ``cap`` (:data:`SEARCH_EXTEND` x planned, the
    most it runs while the soft bound has not held at the target). --search-min-steps 0, or
    --max-steps, runs the requested steps exactly."""
    spe = steps_per_epoch(cfg, task)
    requested = max(1, math.ceil(cfg.search_epochs * spe))
    if cfg.max_steps > 0 or cfg.search_min_steps == 0:
        steps = cfg.max_steps if cfg.max_steps > 0 else requested
        return {"steps_per_epoch": spe, "requested": steps, "planned": steps, "cap": steps}
    planned = max(requested, cfg.search_min_steps)
    return {"steps_per_epoch": spe, "requested": requested, "planned": planned,
            "cap": int(math.ceil(SEARCH_EXTEND * planned))}


def training_record(trainer, metric: str, epochs: float, patience: int) -> dict:
    """What a stage's training did, from the Trainer's log: the dev metric per evaluation, the epoch
    of the model kept (the best for a stage that keeps its best, else the last), whether it stopped
    before its cap, and whether dev was still rising at the end (the last evaluation the best so far
    and above the one before; None with a single evaluation)."""
    state = trainer.state
    curve = [[round(float(h["epoch"]), 4), float(h[f"eval_{metric}"])] for h in state.log_history
             if f"eval_{metric}" in h]
    best = trainer.args.load_best_model_at_end
    kept = round(float(state.epoch or 0.0), 4)  # a stage that keeps its last model
    if best:
        values = [v for _, v in curve]
        kept = curve[values.index(max(values))][0] if curve else None
    rising = None if len(curve) < 2 else curve[-1][1] > max(v for _, v in curve[:-1])
    return {"epochs_cap": epochs, "epochs_run": round(float(state.epoch or 0.0), 4), "steps": state.global_step,
            "max_steps": state.max_steps, "epoch_kept": kept, "dev_curve": curve,
            "stopped_early": state.global_step < state.max_steps, "still_rising": rising,
            "patience": patience if best else None}


def describe_training(stage: str, rec: dict) -> str:
    """One line: the epoch kept, the epochs run, and whether dev was still rising."""
    if rec["epoch_kept"] is None:
        return f"{stage}: {rec['steps']} steps, no dev evaluation"
    line = f"{stage}: kept epoch {rec['epoch_kept']:g} of {rec['epochs_run']:g} run (cap {rec['epochs_cap']:g})"
    if rec["stopped_early"]:
        return line + f", stopped after {rec['patience']} epoch(s) without a better dev score"
    if rec["still_rising"]:
        return line + "; dev was still rising at the end" + _RISING_ADVICE.get(stage, "")
    return line


# What a user can do when a stage's dev metric still rose at its cap. A baseline stopped too early
# is a weak teacher and a flattering comparison; stage 3 at a higher cap gained on some measured
# runs and lost on others (bench/RESULTS.md: Rotten Tomatoes 3x and 4.5x, R8 6x), so it gets the
# flag and that record, not advice.
_RISING_ADVICE = {
    "finetune": ": a higher --finetune-epochs may help (a stronger baseline and teacher)",
    "retrain": " (--retrain-epochs sets the cap; a higher one gained on some measured runs and lost on others)",
}


def say(line: str) -> None:
    """Prints ``line`` once in a distributed run (on rank 0)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(line)


def _early_stopping(cfg: "PipelineConfig") -> list:
    if cfg.patience > 0 and cfg.max_steps <= 0:
        return [EarlyStoppingCallback(early_stopping_patience=cfg.patience)]
    return []


# -- stage 1 -----------------------------------------------------------------------------------------
def _plan_finetune(cfg: "PipelineConfig", task: "PreparedTask", previous) -> StagePlan:
    if _is_power_bert_dir(cfg.model):
        model = task.power_class.from_pretrained(cfg.model, retention=None)
    else:
        # A checkpoint fine-tuned for another task may carry a head of another shape (e.g. 2
        # labels, loaded for multiple choice): stage 1 trains a fresh head then.
        model = task.hf_class.from_pretrained(cfg.model, use_safetensors=True, ignore_mismatched_sizes=True,
                                              **_label_kwargs(task))
    if cfg.attention_dropout is not None:
        set_attention_dropout(model, cfg.attention_dropout)
    return StagePlan(model, cfg.finetune_epochs, True, callbacks=_early_stopping(cfg))


def _finish_plain(cfg, task, plan, trainer):
    return None, None


# -- stage 2 -----------------------------------------------------------------------------------------
def _plan_search(cfg: "PipelineConfig", task: "PreparedTask", previous) -> StagePlan:
    model = task.power_class.from_pretrained(previous.model_dir, mode="soft", sequence_length=task.max_length,
                                             retention_scale=cfg.retention_scale, min_rows=cfg.min_rows,
                                             min_rows_max_length=floor_length(cfg.min_rows_max_length))
    model.reset_retention_params_()
    plan = StagePlan(model, cfg.search_epochs, False, trainer_kw=dict(lam=cfg.lam, lr_soft=cfg.lr_soft),
                     callbacks=[ClampRetentionCallback()])
    if cfg.target_speedup is None:
        return plan
    steps = search_steps(cfg, task)
    # one dev evaluation at the planned end (and the stage's final one): a search stretched over
    # many epochs of a small data set does not evaluate every epoch
    plan.max_steps, plan.eval_steps, plan.record = steps["cap"], steps["planned"], steps
    plan.epochs = round(steps["cap"] / steps["steps_per_epoch"], 2)
    plan.controller = TargetController(cfg.target_speedup, flop_model(model.config, task, cfg.retention_scale),
                                       task.max_length, planned_steps=steps["planned"])
    if steps["planned"] > steps["requested"]:
        say(f"power-bert: search: {steps['requested']} steps (--search-epochs {cfg.search_epochs:g}) are under the "
             f"floor of {cfg.search_min_steps}; extending to {steps['planned']} steps "
             f"({steps['planned'] / steps['steps_per_epoch']:.1f} epochs)")
    return plan


def _finish_search(cfg: "PipelineConfig", task: "PreparedTask", plan: StagePlan, trainer):
    """ℓ from the search (the controller's projection, or SPEC 1.3's rule and the break-even
    guard), and the search record: the method, the soft bound reached, the steps, the extension
    and the projection's jump (projected bound / soft bound)."""
    core = trainer.model
    fm = flop_model(core.config, task, cfg.retention_scale)
    masses = core.retention_masses().detach().double().cpu().tolist()
    ctl = plan.controller
    if ctl is not None:  # identical on every rank (synchronised weights)
        retention = ctl.final_retention(core, keep_threshold=cfg.break_even_keep)
        method = ctl.settings()
        steps = plan.record
        method.update(requested_steps=steps["requested"], max_steps=steps["cap"],
                      steps_per_epoch=steps["steps_per_epoch"],
                      extended_steps=max(0, len(ctl.history) - steps["requested"]))
    else:
        derived = core.derive_retention()
        retention = derived if cfg.break_even_keep is None else apply_break_even(derived, task.max_length,
                                                                                 cfg.break_even_keep)
        # "derived": SPEC 1.3's configuration before the guard
        method = {"method": "lambda (SPEC 1.3)", "lambda": cfg.lam, "lr_soft": cfg.lr_soft, "derived": derived,
                  "soft_bound_final": soft_bound(masses, fm, task.max_length), "steps": trainer.state.global_step}
    projected = fm.bound(retention)
    method.update(projected_bound=projected, projection_jump=projected / method["soft_bound_final"],
                  break_even_keep=cfg.break_even_keep, distill=stage_distill("search", cfg))
    if abs(method["projection_jump"] - 1.0) > JUMP_WARNING:
        say(jump_warning(method["soft_bound_final"], retention, projected, trainer.state.global_step))
    return retention, method


def jump_warning(soft: float, retention: list[int], projected: float, steps: int) -> str:
    """The warning for a projection that moved the search's soft bound ``soft`` to ``projected``:
    more steps are the remedy only for a search shorter than :data:`SEARCH_MIN_STEPS`; a longer
    search that ended below its target stalled there whatever its length, and the warning says so
    (bench/RESULTS.md, "The search's travel scaled with the target": 482 steps end where 180 do)."""
    if steps < SEARCH_MIN_STEPS:
        remedy = f"; give the search more steps (it ran {steps}; --search-epochs / --search-min-steps)"
    elif projected > soft:
        remedy = (f"; more search steps do not close it ({steps} ran): compare the report's accuracy with the "
                  f"baseline's, or ask for a lower --target-speedup")
    else:  # the search ended past its target
        remedy = ""
    return (f"power-bert: WARNING: the search ended at a soft FLOP bound of {soft:.2f}x and the projection to "
            f"ℓ = {retention} moved it to {projected:.2f}x (x{projected / soft:.2f}); stage 3 has to recover "
            f"from that jump: expect a larger accuracy loss{remedy}")


# -- stage 3 -----------------------------------------------------------------------------------------
def _calibrate(model, cfg: "PipelineConfig", task: "PreparedTask", when: str) -> None:
    """Sets the threshold rule's θ on ``model`` so that it keeps ℓ's rows over the training data
    (:func:`.thresholds.calibrate_thresholds`), and says what it set."""
    cal = calibrate_thresholds(model, task.train, cfg.eval_batch_size, resolve_device(cfg.device))
    theta = ", ".join("-" if t is None else f"{t:.4f}" for t in cal["thresholds"])
    say(f"power-bert: retrain: threshold rule {when}, θ = [{theta}] keep "
         f"[{', '.join(f'{r:.1f}' for r in cal['rows'])}] rows per layer on average over the training data "
         f"(ℓ keeps [{', '.join(f'{r:.1f}' for r in cal['target_rows'])}])")


def check_search_floor(cfg: "PipelineConfig", search) -> None:
    """Refuses stage 3 over a relative search whose floor of rows (``min_rows`` and
    ``min_rows_max_length`` in its model's config; 1 and every text before they existed) is not
    ``cfg``'s: ℓ was found for the bound with the search's floor."""
    config = json.loads((Path(search.model_dir) / "config.json").read_text())
    if config.get("retention_scale", "absolute") != "relative":
        return
    searched = rows_floor("relative", config.get("min_rows"))
    if searched != cfg.min_rows:
        raise StageSettingsError(f"stage 'search' in {cfg.output_dir} found ℓ for a floor of {count_text(searched, 'row')} "
                                 f"(--min-rows {searched}); stage 3 asks for {cfg.min_rows}: give --min-rows "
                                 f"{searched}, or run the search again in a new --output-dir (nothing was changed)")
    longest = config.get("min_rows_max_length")
    if searched > 1 and floor_length(cfg.min_rows_max_length) != longest:
        given = "all" if longest is None else longest
        raise StageSettingsError(f"stage 'search' in {cfg.output_dir} found ℓ for a floor of {count_text(searched, 'row')} "
                                 f"on texts of {'any length' if longest is None else f'at most {longest} tokens'} "
                                 f"(--min-rows-max-length {given}); stage 3 asks for {cfg.min_rows_max_length}: give "
                                 f"--min-rows-max-length {given}, or run the search again in a new --output-dir "
                                 f"(nothing was changed)")


def _plan_retrain(cfg: "PipelineConfig", task: "PreparedTask", previous) -> StagePlan:
    model = task.power_class.from_pretrained(previous.model_dir, retention=previous.retention)
    if cfg.retention_rule == "threshold":
        _calibrate(model, cfg, task, "before retraining")
    return StagePlan(model, cfg.retrain_epochs, True, callbacks=_early_stopping(cfg))


def _finish_retrain(cfg, task, plan, trainer):
    """ℓ; under the threshold rule, θ calibrated again on the retrained model (retraining moves the
    shares of significance, and with them the rows kept and the FLOP bound)."""
    if cfg.retention_rule == "threshold":
        _calibrate(trainer.model, cfg, task, "after retraining")
        trainer.model.train()
    return list(trainer.model.retention), None


STAGE_TABLE = {
    "finetune": Stage(_plan_finetune, _finish_plain),
    "search": Stage(_plan_search, _finish_search),
    "retrain": Stage(_plan_retrain, _finish_retrain),
}
"""The stages in order, each with how it is planned and what it returns when it has trained."""
