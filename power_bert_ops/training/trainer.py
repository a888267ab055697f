"""Trainer pieces for the three stages: two learning rates (retention parameters at lr_soft
without weight decay, the model at lr_bert), the stage-2 loss term, clamping r to [0, 1]
after every optimiser step, and a clear stop on a NaN loss."""
from __future__ import annotations

import math

import torch
from transformers import Trainer, TrainerCallback


class NonFiniteLossError(RuntimeError):
    pass


class PowerBertTrainer(Trainer):
    """transformers.Trainer plus, when ``lam`` is set (stage 2), ``lam * Σ_j j·mass_j`` in the
    loss and a separate optimiser group for the retention parameters at ``lr_soft``."""

    def __init__(self, *args, lam: float | None = None, lr_soft: float | None = None, **kwargs):
        self.lam = lam
        self.lr_soft = lr_soft
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        if self.lam:
            core = model.module if hasattr(model, "module") else model
            loss = loss + core.retention_loss(self.lam)
        return (loss, outputs) if return_outputs else loss

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


class ClampRetentionCallback(TrainerCallback):
    """SPEC 1.3: after every optimiser step r is clamped to [0, 1]."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            core = model.module if hasattr(model, "module") else model
            core.clamp_retention_()


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


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
