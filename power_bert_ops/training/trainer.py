"""Trainer pieces for the three stages: two learning rates (retention parameters at lr_soft
without weight decay, the model at lr_bert), the stage-2 loss term, clamping r to [0, 1]
after every optimiser step, and a clear stop on a NaN loss."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, PrinterCallback, ProgressCallback, Trainer, TrainerCallback

from .errors import PowerBertError
from .._progress import is_terminal, paced
from ..modeling import EncoderRecord
from .distillation import (DEFAULT_ALPHA, DEFAULT_TEMPERATURE, TeacherCache, distillation_loss,
                           hidden_distillation_loss, mix_distillation, ranking_distillation_loss, teacher_significance)


DEVICES = ("auto", "cpu", "cuda")


class NonFiniteLossError(RuntimeError):
    pass


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class PowerBertTrainer(Trainer):
    """transformers.Trainer plus, when ``lam`` is set (stage 2), ``lam * Σ_j j·mass_j`` in the
    loss and a separate optimiser group for the retention parameters at ``lr_soft``; with a
    ``teacher`` (the stage-1 model), the task loss is mixed with logit distillation:
    ``(1 - distill_alpha)·task + distill_alpha·KD`` (:func:`.distillation.distillation_loss`;
    ``distill_alpha`` = 0: none), plus ``distill_hidden · HD``, the hidden-state distillation on
    the kept rows (:func:`.distillation.hidden_distillation_loss`; 0: none), plus
    ``distill_ranking · RD``, the ranking distillation of the teacher's last-layer significance
    into the eliminating layers' (:func:`.distillation.ranking_distillation_loss`; 0: none; the
    teacher then runs with eager attention). Without hidden-state distillation the teacher's
    logits and significance of each example come from a :class:`.distillation.TeacherCache`: the
    teacher runs once per distinct example, not once per epoch."""

    def __init__(self, *args, lam: float | None = None, lr_soft: float | None = None, teacher=None,
                 distill_temperature: float = DEFAULT_TEMPERATURE, distill_alpha: float = DEFAULT_ALPHA,
                 distill_hidden: float = 0.0, distill_ranking: float = 0.0, problem: str = "classification",
                 **kwargs):
        self.lam = lam
        self.lr_soft = lr_soft
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.distill_temperature, self.distill_alpha, self.problem = distill_temperature, distill_alpha, problem
        self.distill_hidden, self.distill_ranking = distill_hidden, distill_ranking
        if self.teacher is not None and distill_ranking > 0:
            self.teacher.set_attn_implementation("eager")  # its attentions give the teacher's ranking
        super().__init__(*args, **kwargs)
        self.teacher_cache = None
        if self.teacher is not None and distill_hidden <= 0 and (distill_alpha > 0 or distill_ranking > 0):
            self.teacher_cache = TeacherCache(self.teacher, significance=distill_ranking > 0,
                                              exclude_self=self._exclude_self(self.model))
            self.add_callback(NewCacheEpoch(self.teacher_cache))

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        hidden = self.teacher is not None and self.distill_hidden > 0 and model.training
        ranking = self.teacher is not None and self.distill_ranking > 0 and model.training
        record = EncoderRecord(hidden_states=[] if hidden else None, significance_grad=[] if ranking else None) \
            if hidden or ranking else None
        if record is not None:
            inputs = {**inputs, "power_bert_record": record}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        if self.teacher is not None and model.training:
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
            self.teacher.to(logits.device)
            plain = {k: v for k, v in inputs.items() if k not in ("labels", "power_bert_record")}
            cache = self.teacher_cache
            if cache is not None and cache.accepts(plain):
                teacher_logits, teacher_sig = cache(plain)
            else:
                with torch.no_grad():
                    teacher_out = self.teacher(**plain, output_hidden_states=hidden, output_attentions=ranking)
                teacher_logits = teacher_out.logits
                teacher_sig = teacher_significance(teacher_out, plain.get("attention_mask"),
                                                   self._exclude_self(model)) if ranking else None
            if self.distill_alpha > 0:
                kd = distillation_loss(logits, teacher_logits, self.distill_temperature, self.problem)
                loss = mix_distillation(loss, kd, self.distill_alpha)
            if hidden:
                loss = loss + self.distill_hidden * hidden_distillation_loss(
                    record.hidden_states, record, teacher_out.hidden_states)
            if ranking:
                loss = loss + self.distill_ranking * ranking_distillation_loss(record, teacher_sig)
        if self.lam:
            loss = loss + _unwrap(model).retention_loss(self.lam)
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def _exclude_self(model) -> bool:
        return getattr(_unwrap(model).config, "exclude_self", True)

    def create_optimizer(self, *args, **kwargs):
        if self.optimizer is not None or self.lr_soft is None:
            return super().create_optimizer(*args, **kwargs)
        model = self.model
        retention = {id(p) for p in model.retention_parameters()}
        decay_names = set(self.get_decay_parameter_names(model))
        groups = [
            {"params": [p for n, p in model.named_parameters() if p.requires_grad and id(p) not in retention
                        and n in decay_names], "weight_decay": self.args.weight_decay},
            {"params": [p for n, p in model.named_parameters() if p.requires_grad and id(p) not in retention
                        and n not in decay_names], "weight_decay": 0.0},
            {"params": list(model.retention_parameters()), "weight_decay": 0.0, "lr": self.lr_soft},
        ]
        groups = [g for g in groups if g["params"]]
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def saved_callback_state(checkpoint, name: str) -> dict | None:
    """The state a Trainer checkpoint folder holds for the stateful callback class ``name`` (its
    ``args`` and ``attributes``), or None."""
    path = Path(checkpoint) / "trainer_state.json"
    saved = json.loads(path.read_text()).get("stateful_callbacks", {}) if path.exists() else {}
    state = saved.get(name)
    if isinstance(state, list):
        state = state[0] if state else None
    return state


def restore_patience(trainer: Trainer, checkpoint) -> None:
    """Gives an interrupted stage's early stopping its count of evaluations without a better dev
    score back from the checkpoint it resumes from. (transformers' own restore replaces every
    stateful callback with a new object, the search's controller included.)"""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, EarlyStoppingCallback):
            state = saved_callback_state(checkpoint, type(callback).__name__) or {}
            for name, value in state.get("attributes", {}).items():
                setattr(callback, name, value)


class ClampRetentionCallback(TrainerCallback):
    """SPEC 1.3: after every optimiser step r is clamped to [0, 1]."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            core = model.module if hasattr(model, "module") else model
            core.clamp_retention_()


class NewCacheEpoch(TrainerCallback):
    """Tells a :class:`.distillation.TeacherCache` each new epoch, so that it forgets the rows it
    did not meet in the last one (word-dropped copies)."""

    def __init__(self, cache: TeacherCache):
        self.cache = cache

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.cache.new_epoch()


class StopOnNonFiniteLoss(TrainerCallback):
    """Stops with a clear message when the logged training loss is NaN or infinite; the last
    checkpoint written before it stays on disk."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"training loss became {loss} at step {state.global_step}; stopping. The last good checkpoint is the "
                f"newest checkpoint-* in {args.output_dir} (try a lower learning rate)"
            )


class EpochLineCallback(ProgressCallback):
    """Trainer's progress bars (training steps, evaluation batches) when ``bars`` (written to a
    file or a pipe: paced, and no evaluation bars), and one readable line per
    evaluation in place of Trainer's raw log dicts:
    ``finetune epoch 2/3: dev accuracy 0.8031 (train loss 0.4123)``, and after training
    ``finetune done: dev accuracy 0.8031`` for the model the stage keeps."""

    def __init__(self, stage: str, metric: str, bars: bool = True):
        super().__init__()
        self.stage, self.metric, self.bars = stage, metric, bars
        self.train_loss = None
        self.finished = False

    def on_train_begin(self, args, state, control, **kwargs):
        if self.bars:
            super().on_train_begin(args, state, control, **kwargs)
            paced(self.training_bar)
        self.current_step = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.bars:
            super().on_step_end(args, state, control, **kwargs)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        # under the training bar an evaluation bar moves the cursor (escape sequences a log file keeps), and
        # after it (the kept model's evaluation) its bar would glue to the stage's last line: on a terminal only
        if self.bars and is_terminal(sys.stderr):
            new = self.prediction_bar is None
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)
            if new:
                paced(self.prediction_bar)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bars:
            super().on_train_end(args, state, control, **kwargs)
        self.finished = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.train_loss = float(logs["loss"])
        value = logs.get(f"eval_{self.metric}")
        if value is None or not state.is_world_process_zero:
            return
        if self.finished:  # the evaluation of the model the stage keeps
            line = f"{self.stage} done: dev {self.metric} {value:.4f}"
        else:
            line = f"{self.stage} epoch {state.epoch:.3g}/{args.num_train_epochs:g}: dev {self.metric} {value:.4f}"
            if self.train_loss is not None:
                line += f" (train loss {self.train_loss:.4f})"
        (self.training_bar.write if self.training_bar is not None else print)(line)


def readable_progress(trainer: Trainer, stage: str, metric: str, bars: bool = True) -> None:
    """Replaces Trainer's own progress / log printing by :class:`EpochLineCallback`."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(EpochLineCallback(stage, metric, bars))


def check_device(device: str) -> str:
    """``device`` as given when it can run here: 'auto', 'cpu', 'cuda' or 'cuda:<i>' with a GPU."""
    kind, _, index = str(device).partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise PowerBertError(f"--device must be one of auto, cpu, cuda, cuda:<index>; got {device!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise PowerBertError(f"--device {device}: no CUDA GPU is visible to torch {torch.__version__} here "
                                 f"(use --device cpu or auto)")
        if index and int(index) >= torch.cuda.device_count():
            raise PowerBertError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) are visible")
    return str(device)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
