"""The three stages of SPEC 1.4, each a resumable unit under ``output_dir/<stage>/``:

1. ``finetune``: the plain Hugging Face model fine-tuned on the task, best dev checkpoint kept.
   Its directory is an ordinary HF checkpoint: the baseline for accuracy and speed.
2. ``search``: from stage 1, soft-extract in every layer; retention parameters at lr_soft (no
   weight decay), the model at lr_bert, linear warm-up over 10% of the steps then linear decay,
   r clamped to [0, 1] after every step; loss = task loss + λ·Σ_j j·mass_j. Derives ℓ.
3. ``retrain``: from the stage-2 weights, hard extract with ℓ, best dev checkpoint kept.

A stage is finished when ``<stage>/stage.json`` exists; :func:`run_pipeline` skips finished
stages and resumes an interrupted one from its newest Trainer checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    EvalPrediction,
    TrainingArguments,
)

from ..modeling import PowerBertForMultipleChoice, PowerBertForSequenceClassification
from .trainer import ClampRetentionCallback, PowerBertTrainer, StopOnNonFiniteLoss, resolve_device

STAGES = ("finetune", "search", "retrain")
STAGE_FILE = "stage.json"


@dataclass
class PreparedTask:
    """A tokenised task ready for Trainer. ``train`` / ``eval`` yield dicts of model inputs
    (input_ids, attention_mask, token_type_ids, labels), padded to ``max_length``.
    ``compute_metrics(predictions, labels)`` takes class ids (or regression values)."""

    name: str
    problem: str  # "classification" | "regression" | "multiple_choice"
    num_labels: int
    label_names: list[str] | None
    train: Any
    eval: Any
    max_length: int
    compute_metrics: Callable[[np.ndarray, np.ndarray], dict]
    primary_metric: str
    test: Any = None
    truncated: dict = field(default_factory=dict)
    collator: Any = None  # batches `train` (e.g. dynamic padding); None: default stacking

    @property
    def power_class(self):
        return PowerBertForMultipleChoice if self.problem == "multiple_choice" else PowerBertForSequenceClassification

    @property
    def hf_class(self):
        return AutoModelForMultipleChoice if self.problem == "multiple_choice" else AutoModelForSequenceClassification

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        if self.problem == "regression":
            return np.asarray(logits).reshape(-1)
        return np.asarray(logits).argmax(axis=-1)


@dataclass
class PipelineConfig:
    model: str
    output_dir: str
    max_length: int = 128
    finetune_epochs: float = 3.0
    search_epochs: float = 1.0
    retrain_epochs: float = 2.0
    lr_bert: float = 3e-5
    lr_soft: float = 1e-3
    lam: float = 1e-3
    batch_size: int = 32
    eval_batch_size: int = 64
    seed: int = 42
    device: str = "auto"
    precision: str = "fp32"  # fp32 | fp16 | bf16 (mixed precision training on GPU)
    max_steps: int = -1  # per stage; > 0 caps a stage (quick runs, tests)
    logging_steps: int = 50
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class StageResult:
    stage: str
    model_dir: str
    metrics: dict
    retention: list[int] | None = None

    @classmethod
    def load(cls, stage_dir: Path) -> "StageResult | None":
        path = stage_dir / STAGE_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, stage_dir: Path) -> None:
        tmp = stage_dir / (STAGE_FILE + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        os.replace(tmp, stage_dir / STAGE_FILE)


def _training_args(cfg: PipelineConfig, task: PreparedTask, out: Path, epochs: float, best: bool) -> TrainingArguments:
    device = resolve_device(cfg.device)
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr_bert,
        weight_decay=0.01,
        warmup_steps=0.1,  # a float in [0, 1): ratio of the total steps
        lr_scheduler_type="linear",
        eval_strategy="epoch" if cfg.max_steps <= 0 else "steps",
        save_strategy="epoch" if cfg.max_steps <= 0 else "steps",
        eval_steps=max(1, cfg.max_steps) if cfg.max_steps > 0 else None,
        save_steps=max(1, cfg.max_steps) if cfg.max_steps > 0 else None,
        load_best_model_at_end=best,
        metric_for_best_model=task.primary_metric if best else None,
        greater_is_better=True if best else None,
        save_total_limit=2,
        logging_steps=cfg.logging_steps,
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=device == "cpu",
        fp16=cfg.precision == "fp16",
        bf16=cfg.precision == "bf16",
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        save_only_model=False,
        # --batch-size is the global batch, split across processes: `accelerate launch` /
        # `torchrun` with any number of processes trains the same model as one process.
        accelerator_config={"split_batches": True, "use_seedable_sampler": True},
        average_tokens_across_devices=False,  # our losses are per-example means already
        ddp_backend="gloo" if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )


def _metrics_fn(task: PreparedTask):
    def compute(pred: EvalPrediction) -> dict:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return task.compute_metrics(task.predictions(logits), np.asarray(pred.label_ids))

    return compute


def _label_kwargs(task: PreparedTask) -> dict:
    if task.problem == "multiple_choice":
        return {}
    kw = {"num_labels": task.num_labels}
    if task.problem == "regression":
        kw["problem_type"] = "regression"
    elif task.label_names:
        kw["id2label"] = dict(enumerate(task.label_names))
        kw["label2id"] = {n: i for i, n in enumerate(task.label_names)}
    return kw


def _newest_checkpoint(out: Path) -> str | None:
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def _is_power_bert_dir(path: str) -> bool:
    try:
        return AutoConfig.from_pretrained(path).model_type == "power_bert"
    except (OSError, ValueError):
        return False


# The settings each stage's result depends on (besides the data and the model, which the
# output directory's run_config.json pins): a finished or interrupted stage is reused only when
# they are the same, so a rerun with, say, another λ cannot silently return the old result.
STAGE_SETTINGS = {
    "finetune": ("max_length", "finetune_epochs", "lr_bert", "batch_size", "seed", "precision", "max_steps"),
    "search": ("max_length", "search_epochs", "lr_bert", "lr_soft", "lam", "batch_size", "seed", "precision",
               "max_steps"),
    "retrain": ("max_length", "retrain_epochs", "lr_bert", "batch_size", "seed", "precision", "max_steps"),
}
SETTINGS_FILE = "settings.json"


class StageSettingsError(ValueError):
    """A stage directory holds a result computed with other settings."""


def _stage_settings(stage: str, cfg: PipelineConfig) -> dict:
    return {k: getattr(cfg, k) for k in STAGE_SETTINGS[stage]}


def _check_stage_settings(stage: str, cfg: PipelineConfig, out: Path) -> None:
    path = out / SETTINGS_FILE
    if not path.exists():
        return
    previous, now = json.loads(path.read_text()), _stage_settings(stage, cfg)
    diff = {k: (previous.get(k), now[k]) for k in now if previous.get(k) != now[k]}
    if diff:
        raise StageSettingsError(f"stage {stage!r} in {out} was run with other settings "
                         f"(setting: (then, now) = {diff}); use a new --output-dir (nothing was changed)")


def _write_stage_settings(stage: str, cfg: PipelineConfig, out: Path) -> None:
    (out / SETTINGS_FILE).write_text(json.dumps(_stage_settings(stage, cfg), indent=1))


def run_stage(stage: str, cfg: PipelineConfig, task: PreparedTask, previous: StageResult | None = None) -> StageResult:
    """Runs one stage (resuming from its newest checkpoint if it was interrupted)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    out = Path(cfg.output_dir) / stage
    _check_stage_settings(stage, cfg, out)
    done = StageResult.load(out)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    trainer_kw: dict = {}
    callbacks = [StopOnNonFiniteLoss()]
    if stage == "finetune":
        if _is_power_bert_dir(cfg.model):
            model = task.power_class.from_pretrained(cfg.model, retention=None)
        else:
            # A checkpoint fine-tuned for another task may carry a head of another shape (e.g. 2
            # labels, loaded for multiple choice): stage 1 trains a fresh head then.
            model = task.hf_class.from_pretrained(cfg.model, use_safetensors=True, ignore_mismatched_sizes=True,
                                                  **_label_kwargs(task))
        epochs, best = cfg.finetune_epochs, True
    elif stage == "search":
        model = task.power_class.from_pretrained(previous.model_dir, mode="soft", sequence_length=task.max_length)
        model.reset_retention_params_()
        trainer_kw = dict(lam=cfg.lam, lr_soft=cfg.lr_soft)
        callbacks.append(ClampRetentionCallback())
        epochs, best = cfg.search_epochs, False
    else:
        model = task.power_class.from_pretrained(previous.model_dir, retention=previous.retention)
        epochs, best = cfg.retrain_epochs, True
    model.train()
    trainer = PowerBertTrainer(
        model=model,
        args=_training_args(cfg, task, out, epochs, best),
        train_dataset=task.train,
        eval_dataset=task.eval,
        data_collator=task.collator,
        compute_metrics=_metrics_fn(task),
        callbacks=callbacks,
        **trainer_kw,
    )
    if trainer.is_world_process_zero():  # before training: an interrupted stage keeps them too
        _write_stage_settings(stage, cfg, out)
    trainer.train(resume_from_checkpoint=_newest_checkpoint(out))
    retention = None
    if stage == "search":
        retention = trainer.model.derive_retention()  # identical on every rank (synchronised weights)
    elif stage == "retrain":
        retention = list(trainer.model.retention)
    metrics = trainer.evaluate()
    model_dir = out / "model"
    result = StageResult(stage=stage, model_dir=str(model_dir), metrics=metrics, retention=retention)
    if trainer.is_world_process_zero():  # in a distributed run only the main process writes
        trainer.model.save_pretrained(model_dir)
        if stage == "search":
            (out / "retention.json").write_text(json.dumps(retention))
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        result.save(out)
    trainer.accelerator.wait_for_everyone()  # the next stage reads these files on every rank
    return result


def run_pipeline(cfg: PipelineConfig, task: PreparedTask, stages=STAGES) -> dict[str, StageResult]:
    """Runs the requested stages in order, skipping those already finished under
    ``cfg.output_dir``; stages before them must have finished (their results are loaded)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; stages are {STAGES}")
    last = max(STAGES.index(s) for s in stages)
    results: dict[str, StageResult] = {}
    previous = None
    for stage in STAGES[: last + 1]:
        if stage not in stages:
            previous = StageResult.load(Path(cfg.output_dir) / stage)
            if previous is None:
                raise ValueError(f"stage {stage!r} has not run in {cfg.output_dir}; run it first")
            results[stage] = previous
            continue
        previous = run_stage(stage, cfg, task, previous)
        results[stage] = previous
    return results
