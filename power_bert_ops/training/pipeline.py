"""The three stages of SPEC 1.4, each a resumable unit under ``output_dir/<stage>/``:

1. ``finetune``: the plain Hugging Face model fine-tuned on the task until the dev metric has not
   improved for ``patience`` epochs (at most ``finetune_epochs``), best dev checkpoint kept. Its
   directory is an ordinary HF checkpoint: the baseline for accuracy and speed.
2. ``search``: from stage 1, soft-extract in every layer; retention parameters at lr_soft (no
   weight decay), the model at lr_bert, linear warm-up over 10% of the steps then linear decay,
   r clamped to [0, 1] after every step. With a target speed-up the controller
   (:mod:`.controller`) drives the soft FLOP bound to it for at least ``search_min_steps`` steps
   and projects ℓ onto it; with λ, loss = task loss + λ·Σ_j j·mass_j and ℓ is derived (SPEC 1.3).
3. ``retrain``: from the stage-2 weights, hard extract with ℓ, stopped on the dev metric like
   stage 1 (at most ``retrain_epochs``), best dev checkpoint kept.

What each stage loads and records is in :data:`.stages.STAGE_TABLE`.

A stage is finished when ``<stage>/stage.json`` exists and its model's weights are whole;
:func:`run_pipeline` skips finished stages, redoes a stage whose saved model is damaged (and the
stages after it, which were derived from it), and resumes an interrupted one from its newest
*complete* Trainer checkpoint (a checkpoint cut short by a kill is removed). Every saved model
folder holds the tokenizer, with ``model_max_length`` = N.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import EvalPrediction, TrainingArguments

from ..flops import RETENTION_SCALES
from .artifacts import check_weights, save_tokenizer
from .augment import SetCopiesEpoch, WordDropCopies
from .distillation import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, MAX_TEMPERATURE, MIN_TEMPERATURE
from .errors import MAX_COUNT, MAX_SEED, CorruptModelError, PowerBertError, StageSettingsError, check_whole_number
from .prepare import PreparedTask
from .projection import BREAK_EVEN_KEEP
from .thresholds import RETENTION_RULES
from .._text import count_text
from .stages import (SEARCH_MIN_STEPS, STAGE_TABLE, StagePlan, check_search_floor, describe_training, flop_model,
                     say, set_attention_dropout, stage_distill, training_record)
from .trainer import (PowerBertTrainer, StopOnNonFiniteLoss, check_device, readable_progress, resolve_device,
                      restore_patience)

__all__ = ["STAGES", "PipelineConfig", "StageResult", "flop_model", "load_finished", "run_pipeline", "run_stage",
           "set_attention_dropout"]

STAGES = ("finetune", "search", "retrain")
STAGE_FILE = "stage.json"


PRECISIONS = ("fp32", "fp16", "bf16")


RETRAIN_LR_FACTOR = 2.0
"""Stage 3's default learning rate, as a multiple of ``lr_bert`` (stages 1 and 2): at twice it
stage 3 ended 0.5-2.0 points higher on test and dev at Rotten Tomatoes relative 3x (3,000 sentences
and the full split) and R8 relative 6x than at ``lr_bert`` (bench/RESULTS.md, "Stage 3's learning
rate")."""

DEFAULT_AUGMENT_DROP = 0.3
"""Stage 3's word-dropped copies leave out each word with this probability (:mod:`.augment`)."""
MAX_AUGMENT_COPIES = 16

DEFAULT_MIN_ROWS = 3
"""Relative retention's default floor of rows: [CLS], [SEP] and a word, so a text of one or two
words keeps them in every layer (with a floor of 1, a one-word review kept [CLS] and [SEP] from
layer 2 on and the Rotten Tomatoes models scored 0.50-0.55 on such reviews, the dense model 1.00)."""

DEFAULT_MIN_ROWS_MAX_LENGTH = 8
"""The longest text (real tokens, [CLS] and [SEP] included) relative retention's floor of rows holds
for by default: a text of one or two words keeps them, a longer one keeps the fraction ℓ_j/N of its
length down to 1 row, as SPEC 1.6 writes it (bench/RESULTS.md, "A floor for short texts only")."""


@dataclass
class PipelineConfig:
    """Settings of the three stages. Checked when built: a :class:`PowerBertError` names the
    setting (with its ``power-bert`` flag) before any work starts."""

    model: str
    output_dir: str
    max_length: int = 128
    finetune_epochs: float = 6.0  # the cap: stage 1 stops earlier after `patience` epochs without a better dev score
    search_epochs: float = 1.0
    retrain_epochs: float = 4.0  # the cap, as finetune_epochs
    patience: int = 2  # epochs without a better dev score before stages 1 and 3 stop; 0: train every epoch
    search_min_steps: int = SEARCH_MIN_STEPS  # a target search's floor on steps (more epochs on small data); 0: none
    lr_bert: float = 3e-5
    lr_retrain: float | None = None  # stage 3's rate of the model's weights; None: RETRAIN_LR_FACTOR x lr_bert
    lr_soft: float = 1e-3
    lam: float = 1e-3
    target_speedup: float | None = None  # stage 2 ends at this FLOP bound (±3%); None: SPEC 1.3's λ procedure
    break_even_keep: float | None = BREAK_EVEN_KEEP  # layers keeping more than this share drop none; None: off
    # stage-1 model's logits as teacher (KD): True: stages 2 and 3; False: none; None: automatic, stage 3
    # where it runs no ranking distillation (:func:`.stages.stage_distill`)
    distill: bool | None = None
    distill_temperature: float = DEFAULT_TEMPERATURE
    distill_alpha: float = DEFAULT_ALPHA
    distill_hidden: float = 0.0  # weight of stage 3's hidden-state distillation on the kept rows; 0: none
    # weight of stage 3's ranking distillation of the teacher's significance; 0: none; None: automatic
    # (:func:`resolve_auto`: RANKING_WEIGHT on long texts, none on short ones)
    distill_ranking: float | None = None
    # stage 3 also trains on this many word-dropped copies of each example; 0: none; None: automatic
    # (:func:`resolve_auto`: AUTO_AUGMENT_COPIES on short texts, none on long ones)
    augment_copies: int | None = None
    augment_drop: float = DEFAULT_AUGMENT_DROP  # a copy leaves out each word with this probability
    attention_dropout: float | None = None  # dropout on attention probabilities; None: the model's
    retention_scale: str = "relative"  # "relative": ℓ_j as a fraction of each example's length; "absolute": the paper
    # relative retention keeps at least min(len, min_rows) rows of every example in every layer; None:
    # DEFAULT_MIN_ROWS under relative retention, 1 (no floor) under absolute
    min_rows: int | None = None
    # the floor holds for texts of at most this many real tokens (longer ones keep at least 1 row);
    # "all": every text; None: DEFAULT_MIN_ROWS_MAX_LENGTH under relative retention, "all" under absolute
    min_rows_max_length: int | str | None = None
    retention_rule: str = "top-k"  # stage 3: ℓ's rows ("top-k"), or rows above θ_j calibrated to ℓ ("threshold")
    batch_size: int = 32
    eval_batch_size: int = 64
    seed: int = 42
    device: str = "auto"
    precision: str = "fp32"  # fp32 | fp16 | bf16 (mixed precision training on GPU)
    max_steps: int = -1  # per stage; > 0 caps a stage (quick runs, tests)
    logging_steps: int = 50
    progress: bool = True

    def __post_init__(self):
        def bad(name, rule):
            flag = "--" + {"lam": "lambda"}.get(name, name).replace("_", "-")
            raise PowerBertError(f"{flag} must be {rule}, got {getattr(self, name)!r}")

        def number(name):
            v = getattr(self, name)
            return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)

        for name, minimum in (("max_length", 4), ("batch_size", 1), ("eval_batch_size", 1), ("patience", 0),
                              ("search_min_steps", 0)):
            setattr(self, name, check_whole_number(getattr(self, name), "--" + name.replace("_", "-"), minimum))
        # The seed reaches numpy (transformers.set_seed): checked here, before anything is written.
        self.seed = check_whole_number(self.seed, "--seed", 0, MAX_SEED)
        for name in ("finetune_epochs", "search_epochs", "retrain_epochs", "lr_bert", "lr_soft"):
            if not number(name) or getattr(self, name) <= 0:
                bad(name, "a number > 0")
        for name in ("finetune_epochs", "search_epochs", "retrain_epochs"):
            if getattr(self, name) > MAX_COUNT:  # Trainer's step count, epochs x steps per epoch, must stay finite
                bad(name, f"a number > 0 and at most {MAX_COUNT}")
        if self.lr_retrain is None and number("lr_bert"):
            self.lr_retrain = RETRAIN_LR_FACTOR * self.lr_bert
        if not number("lr_retrain") or self.lr_retrain <= 0:
            bad("lr_retrain", "a number > 0")
        if not number("lam") or self.lam < 0:
            bad("lam", "a number >= 0")
        if self.target_speedup is not None and (not number("target_speedup") or self.target_speedup < 1):
            bad("target_speedup", "a number >= 1 (the FLOP-bound speed-up to reach)")
        if self.break_even_keep is not None and not (number("break_even_keep") and 0 < self.break_even_keep < 1):
            bad("break_even_keep", "a fraction in (0, 1), or off")
        if not number("distill_temperature") or not MIN_TEMPERATURE <= self.distill_temperature <= MAX_TEMPERATURE:
            bad("distill_temperature", f"a number from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}")
        if not number("distill_alpha") or not 0 < self.distill_alpha <= 1:
            bad("distill_alpha", "a number in (0, 1] (no logit distillation: --no-distill)")
        if not number("distill_hidden") or self.distill_hidden < 0:
            bad("distill_hidden", "a number >= 0 (0: no hidden-state distillation)")
        if self.distill_ranking is not None and (not number("distill_ranking") or self.distill_ranking < 0):
            bad("distill_ranking", "a number >= 0 (0: no ranking distillation)")
        if self.augment_copies is not None:
            self.augment_copies = check_whole_number(self.augment_copies, "--augment-copies", 0, MAX_AUGMENT_COPIES)
        if not number("augment_drop") or not 0 < self.augment_drop < 1:
            bad("augment_drop", "a probability in (0, 1)")
        if self.attention_dropout is not None and not (number("attention_dropout") and 0 <= self.attention_dropout < 1):
            bad("attention_dropout", "a probability in [0, 1)")
        if (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps == 0
                or self.max_steps < -1 or self.max_steps > MAX_COUNT):
            bad("max_steps", "-1 (no cap) or a whole number >= 1")
        if self.precision not in PRECISIONS:
            bad("precision", f"one of {PRECISIONS}")
        if self.retention_scale not in RETENTION_SCALES:
            raise PowerBertError(f"--retention must be one of {RETENTION_SCALES}, got {self.retention_scale!r}")
        if self.retention_rule not in RETENTION_RULES:
            bad("retention_rule", f"one of {RETENTION_RULES}")
        if self.min_rows is None:
            self.min_rows = DEFAULT_MIN_ROWS if self.retention_scale == "relative" else 1
        # a floor of N rows would keep every row of every example
        self.min_rows = check_whole_number(self.min_rows, "--min-rows", 1, self.max_length - 1)
        if self.retention_scale == "absolute" and self.min_rows != 1:
            raise _floor_is_relative(f"--min-rows {self.min_rows}")
        self.min_rows_max_length = check_floor_length(self.min_rows_max_length, self.retention_scale, self.max_length)
        self.device = check_device(self.device)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class StageResult:
    """A finished stage. ``model_dir`` is absolute in memory; stage.json stores it relative to
    the run folder, so a copied or moved run folder reads its own models."""

    stage: str
    model_dir: str
    metrics: dict
    retention: list[int] | None = None
    training: dict | None = None  # :func:`.stages.training_record`: epochs run and kept, the dev curve

    @classmethod
    def load(cls, stage_dir: Path) -> "StageResult | None":
        """The stage's result, or None when it has not finished. The run folder is the stage
        folder's lexical parent (a λ sweep's shared ``finetune`` is a symlink inside it)."""
        path = Path(stage_dir) / STAGE_FILE
        if not path.exists():
            return None
        fields = json.loads(path.read_text())
        fields["model_dir"] = str(Path(stage_dir).parent / fields["model_dir"])
        return cls(**fields)

    def save(self, stage_dir: Path) -> None:
        fields = dataclasses.asdict(self)
        fields["model_dir"] = os.path.relpath(self.model_dir, Path(stage_dir).parent)
        tmp = stage_dir / (STAGE_FILE + ".tmp")
        tmp.write_text(json.dumps(fields, indent=1))
        os.replace(tmp, stage_dir / STAGE_FILE)


def _training_args(cfg: PipelineConfig, task: PreparedTask, out: Path, epochs: float, best: bool,
                   max_steps: int = -1, eval_steps: int | None = None, lr: float | None = None) -> TrainingArguments:
    device = resolve_device(cfg.device)
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else max_steps,
        learning_rate=cfg.lr_bert if lr is None else lr,
        weight_decay=0.01,
        warmup_steps=0.1,  # a float in [0, 1): ratio of the total steps
        lr_scheduler_type="linear",
        eval_strategy="steps" if cfg.max_steps > 0 or eval_steps else "epoch",
        save_strategy="epoch" if cfg.max_steps <= 0 else "steps",
        eval_steps=max(1, cfg.max_steps) if cfg.max_steps > 0 else eval_steps,
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


def _checkpoint_complete(path: Path) -> bool:
    """Whether Trainer finished writing ``checkpoint-N``: its state, optimiser and scheduler
    files are there and its weights are whole."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        if "global_step" not in state:
            return False
        check_weights(path)
    except (OSError, ValueError):
        return False
    return all((path / f).is_file() for f in ("optimizer.pt", "scheduler.pt"))


def _newest_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint of an interrupted stage; incomplete ones (a kill while
    Trainer wrote them) are removed, so Trainer neither resumes from nor rotates them."""
    ckpts = [p for p in (out / "checkpoints").glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(ckpts, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if _checkpoint_complete(path):
            return str(path)
        print(f"power-bert: {path} is incomplete (the run was stopped while writing it); removed it")
        shutil.rmtree(path, ignore_errors=True)
    return None


# Automatic distillation in stage 3 (``distill_ranking=None``, ``distill=None``): the teacher's
# significance ranking, at this weight, where the training examples average at least
# RANKING_MIN_LENGTH real tokens; its logits below. Measured (bench/RESULTS.md, "Distillation by
# text length"): ranking +5.8 points over logits and +8.0 over none on 20 Newsgroups documents
# (mean 216 tokens) at 6x; on Rotten Tomatoes sentences (27 tokens) at 3x, three seeds each,
# logits 1.0 point above none and 0.55 above ranking over dev and test together, at half
# ranking's stage-3 cost.
RANKING_WEIGHT = 10.0
RANKING_MIN_LENGTH = 64
# Automatic word-dropped copies in stage 3 (``augment_copies=None``): this many for every
# single-text or text-pair task, none for multiple choice. Measured (bench/RESULTS.md, "Word-dropped
# copies in stage 3", "Heavier word-dropped copies" and "Word-dropped copies on long documents"):
# on the main job's 3,000 sentences at 3x, three seeds, test -1.9 points against the baseline
# without copies, -1.5 with one, -0.76 with two at drop 0.15 and -0.31 with four at drop 0.3; four at
# 0.3 scored higher than two at 0.15 on the mean of dev and test in 8 of 9 comparisons (3x, 4.5x and
# 6x, four stage 1s). On Reuters R8 documents at 6x (all 2,189 test documents), 800 training
# documents: test -1.7 without copies, -0.1 with two, +0.55 with four; 2,000: -1.75 without, -1.15
# with two.
AUTO_AUGMENT_COPIES = 4


def mean_train_length(task: PreparedTask) -> float:
    """The mean count of real tokens of the task's training examples (multiple choice: of each
    example's longest choice)."""
    lengths = task.train_lengths
    return float(np.mean(lengths)) if lengths else 0.0


def resolve_auto(cfg: PipelineConfig, task: PreparedTask, say: bool = False) -> PipelineConfig:
    """``cfg`` with its automatic settings decided for ``task`` (:func:`decide_auto`); ``say``:
    print the line saying what was decided and why."""
    cfg, line = decide_auto(cfg, task)
    if say and line:
        print(line)
    return cfg


def decide_auto(cfg: PipelineConfig, task: PreparedTask) -> tuple[PipelineConfig, str | None]:
    """``cfg`` with its automatic settings decided for ``task`` by the training examples' mean
    count of real tokens: ``distill_ranking=None`` becomes :data:`RANKING_WEIGHT` when they average
    at least :data:`RANKING_MIN_LENGTH`, else 0 (and then, with ``distill=None``, stage 3 distils
    the logits: :func:`.stages.stage_distill`); ``augment_copies=None`` becomes
    :data:`AUTO_AUGMENT_COPIES` (0 for multiple choice). Also returns the line saying what was
    decided and why (None: nothing was)."""
    if cfg.distill_ranking is not None and cfg.augment_copies is not None:
        return cfg, None
    mean = mean_train_length(task)
    on = mean >= RANKING_MIN_LENGTH
    decided = {}
    if cfg.distill_ranking is None:
        decided["distill_ranking"] = RANKING_WEIGHT if on else 0.0
    if cfg.augment_copies is None:
        decided["augment_copies"] = 0 if getattr(task, "problem", None) == "multiple_choice" else AUTO_AUGMENT_COPIES
    cfg = dataclasses.replace(cfg, **decided)
    parts, flags = [], []
    if "distill_ranking" in decided:
        parts.append("distils " + (f"the fine-tuned model's significance ranking (x{RANKING_WEIGHT:g})" if on
                                   else "the fine-tuned model's logits" if stage_distill("retrain", cfg)
                                   else "nothing from the fine-tuned model"))
        flags += ["--distill-ranking", "--distill / --no-distill"]
    if cfg.augment_copies:  # given or decided: the line says what stage 3 trains on
        copies = count_text(cfg.augment_copies, "word-dropped copy", "word-dropped copies")
        parts.append(f"trains on {copies} of each example too (each word left out with probability "
                     f"{cfg.augment_drop:g}{'' if 'augment_copies' in decided else '; --augment-copies'})")
    elif "augment_copies" in decided:
        parts.append("makes no word-dropped copies (a multiple-choice example's options would lose different words)")
    if "augment_copies" in decided:
        flags.append("--augment-copies")
    what = ", ".join(flags[:-1]) + " and " + flags[-1] if len(flags) > 1 else flags[0]
    sets = f"{what} set{'s' if len(flags) == 1 else ''} it"
    if "distill_ranking" not in decided:  # the copies do not depend on the texts' length
        return cfg, f"power-bert: stage 3 {' and '.join(parts)} ({sets})"
    return cfg, (f"power-bert: stage 3 {' and '.join(parts)}: the training texts average {mean:.0f} real tokens "
                 f"({'at least' if on else 'under'} {RANKING_MIN_LENGTH}; {sets})")


def _floor_is_relative(given: str) -> PowerBertError:
    """The refusal of a floor-of-rows flag (``given``: the flag and its value) under absolute retention."""
    return PowerBertError(f"{given}: the floor of rows applies to --retention relative (absolute retention keeps ℓ_j "
                          f"rows of every example)")


def check_floor_length(value, scale: str, max_length: int) -> int | str:
    """``--min-rows-max-length``: a whole number from 1 to ``max_length`` or "all" (None: the
    default under relative retention, "all" under absolute, where no floor applies)."""
    if value is None:  # a limit at or above N holds for every text
        return DEFAULT_MIN_ROWS_MAX_LENGTH if scale == "relative" and DEFAULT_MIN_ROWS_MAX_LENGTH < max_length \
            else "all"
    if value == "all":
        return value
    if isinstance(value, str):
        raise PowerBertError(f"--min-rows-max-length must be a whole number from 1 to {max_length} or 'all', "
                             f"got {value!r}")
    value = check_whole_number(value, "--min-rows-max-length", 1, max_length)
    if scale == "absolute":
        raise _floor_is_relative(f"--min-rows-max-length {value}")
    return value


# The settings each stage's result depends on (besides the data and the model, which the
# output directory's run_config.json pins): a finished or interrupted stage is reused only when
# they are the same, so a rerun with, say, another λ cannot silently return the old result.
_DISTILL = ("distill", "distill_temperature", "distill_alpha")
STAGE_SETTINGS = {
    "finetune": ("max_length", "finetune_epochs", "lr_bert", "batch_size", "seed", "precision", "max_steps",
                 "attention_dropout", "patience"),
    "search": ("max_length", "search_epochs", "lr_bert", "lr_soft", "lam", "target_speedup", "break_even_keep",
               "batch_size", "seed", "precision", "max_steps", "retention_scale", "min_rows",
               "min_rows_max_length", "search_min_steps",
               *_DISTILL),
    "retrain": ("max_length", "retrain_epochs", "lr_bert", "lr_retrain", "batch_size", "seed", "precision", "max_steps",
                "patience", *_DISTILL, "distill_hidden", "distill_ranking", "retention_rule", "min_rows",
                "min_rows_max_length", "augment_copies", "augment_drop"),
}
TARGET_FILE = "target.json"
SETTINGS_FILE = "settings.json"


# What a stage did before a setting existed: a settings file without the key holds this value.
SETTING_BEFORE_IT_EXISTED = {"attention_dropout": None, "retention_scale": "absolute", "patience": 0,
                             "search_min_steps": 0, "distill_hidden": 0.0, "distill_ranking": 0.0,
                             "retention_rule": "top-k", "min_rows": 1, "min_rows_max_length": "all",
                             "augment_copies": 0}


def _before_it_existed(setting: str, previous: dict):
    """What a stage whose settings file has no ``setting`` ran with: None when its switch
    (:data:`DEPENDS_ON`) was off, so it meant nothing; stage 3 trained at lr_bert before lr_retrain
    existed."""
    switch = DEPENDS_ON.get(setting)
    if switch is not None and not previous.get(switch, _before_it_existed(switch, previous)):
        return None
    if setting == "lr_retrain":
        return previous.get("lr_bert")
    return SETTING_BEFORE_IT_EXISTED.get(setting)


SEARCH_METHODS = ("lam", "target_speedup")  # a search records the one it ran with

# settings recorded only while another is on
DEPENDS_ON = {"distill_temperature": "distill", "distill_alpha": "distill", "augment_drop": "augment_copies",
              "search_min_steps": "target_speedup"}


def _stage_settings(stage: str, cfg: PipelineConfig) -> dict:
    settings = {k: getattr(cfg, k) for k in STAGE_SETTINGS[stage]}
    if stage == "search":  # what the chosen method does not use does not make another run
        settings.pop("lam" if cfg.target_speedup is not None else "target_speedup", None)
    if "distill" in settings:
        settings["distill"] = stage_distill(stage, cfg)
    for k, switch in DEPENDS_ON.items():
        if not settings.get(switch):
            settings.pop(k, None)
    return settings


_FLAGS = {"lam": "--lambda", "retention_scale": "--retention"}


def _flag(setting: str, value) -> str | None:
    """The ``power-bert`` arguments that give ``setting`` the value ``value`` (None: none do)."""
    if value is None and setting != "break_even_keep":
        return None
    flag = _FLAGS.get(setting, "--" + setting.replace("_", "-"))
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {'off' if value is None else _number(value) if isinstance(value, float) else value}"


def _number(value: float) -> str:
    """The shortest text that reads back as ``value`` ('10' for 10.0, '0.1234567', '5e-05')."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def check_stage_settings(stage: str, cfg: PipelineConfig, out: Path, running=None) -> None:
    """Refuses to reuse or resume the stage in ``out`` when it ran with other settings than
    ``cfg``'s. ``running``: the stages the command runs, when ``stage`` is not one of them but
    one it builds on (``retrain`` takes the search's ℓ, ``search`` the fine-tuned model); then
    only the settings that no stage of ``running`` takes are compared (the search's λ or target,
    the fine-tuning epochs, ...), since the run's report carries them: a shared one such as
    ``--lr-bert`` or ``--distill`` sets the command's own stages, and the floor of rows is left to
    :func:`check_search_floor`, which names the floor ℓ was found for."""
    path = out / SETTINGS_FILE
    if not path.exists():
        return
    previous, now = json.loads(path.read_text()), _stage_settings(stage, cfg)
    builds_on = running is not None and stage not in running
    if builds_on:
        own = {k for s in running for k in STAGE_SETTINGS.get(s, ())}
        now = {k: v for k, v in now.items() if k not in own}
    then = {k: previous.get(k, _before_it_existed(k, previous)) for k in now}
    diff = {k: (then[k], now[k]) for k in now if then[k] != now[k]}
    # the search's method: a λ then and a target now (or the reverse) shows both, the one given then as its flag
    diff |= {k: (previous[k], None) for k in SEARCH_METHODS if previous.get(k) is not None and k not in now}
    if diff:
        # a setting absent then (its switch was off) meant nothing: it is neither shown nor given a
        # flag, its switch's change and flag say it; one present then and absent now (its switch is
        # off now) needs its own flag beside the switch's
        diff = {k: v for k, v in diff.items() if not (k in DEPENDS_ON and v[0] is None)}
        flags = [_flag(k, v) for k, (v, _) in diff.items() if not (k in SEARCH_METHODS and v is None)]
        flags += [_flag(k, previous[k]) for k, switch in DEPENDS_ON.items()
                  if switch in diff and k in previous and k not in now and previous[k] != getattr(cfg, k)]
        same = f"; to reuse it, give the settings it was run with ({' '.join(flags)})" if all(flags) else ""
        if builds_on:
            give = f"give the settings it was run with ({' '.join(flags)}), or " if all(flags) else ""
            raise StageSettingsError(f"stage {stage!r} in {out}, which this command builds on, was run with other "
                                     f"settings (setting: (then, now) = {diff}); {give}run the stages again with "
                                     f"these into a new --output-dir (nothing was changed)")
        if not (out / STAGE_FILE).exists():  # interrupted: nothing finished to keep but its checkpoints
            raise StageSettingsError(f"stage {stage!r} in {out} was started with other settings and did not finish "
                                     f"(setting: (then, now) = {diff}); to start it again with these, remove {out} "
                                     f"(its checkpoints; the stages before it are kept); or use a new --output-dir"
                                     f"{same.replace('reuse it', 'resume it')} (nothing was changed)")
        raise StageSettingsError(f"stage {stage!r} in {out} was run with other settings "
                                 f"(setting: (then, now) = {diff}); use a new --output-dir{same}; or, to run "
                                 f"it again with these, remove {out} (its model; the stages before it are kept) "
                                 f"(nothing was changed)")


def _write_stage_settings(stage: str, cfg: PipelineConfig, out: Path) -> None:
    (out / SETTINGS_FILE).write_text(json.dumps(_stage_settings(stage, cfg), indent=1))


def load_finished(stage_dir: Path) -> StageResult | None:
    """A finished stage whose model is whole, or None when the stage has not finished.
    CorruptModelError names the damaged file of a finished one."""
    done = StageResult.load(stage_dir)
    if done is not None:
        check_weights(done.model_dir)
    return done


def _discard(stage_dir: Path) -> None:
    """Forgets a finished stage (its result and model), keeping its settings file."""
    (stage_dir / STAGE_FILE).unlink(missing_ok=True)
    shutil.rmtree(stage_dir / "model", ignore_errors=True)


def run_stage(stage: str, cfg: PipelineConfig, task: PreparedTask, previous: StageResult | None = None,
              redo: bool = False, teacher_dir: str | None = None) -> StageResult:
    """Runs one stage (resuming from its newest complete checkpoint if it was interrupted).
    A finished stage is returned as it is, unless ``redo`` (a stage it derives from ran again)
    or its saved model is damaged: then it runs again."""
    return _run_stage(stage, resolve_auto(cfg, task), task, previous, redo, teacher_dir)[0]


def _reusable(stage: str, out: Path, task: PreparedTask, redo: bool) -> StageResult | None:
    """The stage's finished result when it can be reused; else None, after forgetting a finished
    result that must be redone (``redo``: a stage it derives from ran again; or a damaged model)."""
    try:
        done = load_finished(out)
    except CorruptModelError as e:
        print(f"power-bert: {e}. Redoing stage {stage!r}.")
        done, redo = None, True
    if done is not None and not redo:
        if task.tokenizer is not None and not (Path(done.model_dir) / "tokenizer_config.json").exists():
            save_tokenizer(task.tokenizer, done.model_dir, task.max_length)  # a folder saved without it
        return done
    if done is not None:
        print(f"power-bert: redoing stage {stage!r} too (it was derived from a stage that just ran)")
    if redo:
        _discard(out)
    return None


def _trainer(stage: str, cfg: PipelineConfig, task: PreparedTask, out: Path, plan: StagePlan,
             teacher_dir: str | None) -> PowerBertTrainer:
    """The stage's Trainer from its plan, with distillation from stage 1 when asked: logits in
    stages 2-3, hidden states on the kept rows and the significance ranking in stage 3; stage 3's
    rows with ``cfg.augment_copies`` word-dropped copies of each (:mod:`.augment`)."""
    trainer_kw = dict(plan.trainer_kw)
    hidden = cfg.distill_hidden if stage == "retrain" else 0.0
    ranking = cfg.distill_ranking if stage == "retrain" else 0.0
    logits = stage_distill(stage, cfg)
    if (logits or hidden or ranking) and stage != "finetune":
        trainer_kw.update(teacher=task.hf_class.from_pretrained(teacher_dir), distill_temperature=cfg.distill_temperature,
                          distill_alpha=cfg.distill_alpha if logits else 0.0, distill_hidden=hidden,
                          distill_ranking=ranking,
                          problem=task.problem)
    train, callbacks = task.train, list(plan.callbacks)
    if stage == "retrain" and cfg.augment_copies:
        train = WordDropCopies(task.train, task.tokenizer, cfg.augment_copies, cfg.augment_drop, cfg.seed)
        callbacks.append(SetCopiesEpoch(train))
    plan.model.train()
    trainer = PowerBertTrainer(
        model=plan.model,
        args=_training_args(cfg, task, out, plan.epochs, plan.best, plan.max_steps, plan.eval_steps,
                            lr=cfg.lr_retrain if stage == "retrain" else None),
        train_dataset=train,
        eval_dataset=task.eval,
        data_collator=task.collator,
        compute_metrics=_metrics_fn(task),
        callbacks=[StopOnNonFiniteLoss(), *callbacks],
        **trainer_kw,
    )
    readable_progress(trainer, stage, task.primary_metric, bars=cfg.progress)
    if plan.controller is not None:
        plan.controller.attach(trainer)
    return trainer


def _save_stage(stage: str, task: PreparedTask, out: Path, trainer, result: StageResult, search: dict | None) -> None:
    """Writes the stage's model (with the tokenizer), its search record and stage.json, and removes
    its checkpoints; in a distributed run only the main process writes."""
    if trainer.is_world_process_zero():
        if task.problem != "multiple_choice":  # what evaluate and predict check the data's columns against
            trainer.model.config.trained_on_text_pairs = task.text_pairs
        trainer.model.save_pretrained(result.model_dir)
        if task.tokenizer is not None:
            save_tokenizer(task.tokenizer, result.model_dir, task.max_length)
        if search is not None:
            (out / "retention.json").write_text(json.dumps(result.retention))
            (out / TARGET_FILE).write_text(json.dumps(search, indent=1))
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        result.save(out)
    trainer.accelerator.wait_for_everyone()  # the next stage reads these files on every rank


def _run_stage(stage: str, cfg: PipelineConfig, task: PreparedTask, previous: StageResult | None,
               redo: bool, teacher_dir: str | None) -> tuple[StageResult, bool]:
    """:func:`run_stage`, and whether the stage trained (False: its finished result was reused)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    out = Path(cfg.output_dir) / stage
    check_stage_settings(stage, cfg, out)
    if stage == "retrain":
        check_search_floor(cfg, previous)
    done = _reusable(stage, out, task, redo)
    if done is not None:
        value = done.metrics.get(f"eval_{task.primary_metric}")
        dev = f"dev {task.primary_metric} {value:.4f}, " if isinstance(value, (int, float)) else ""
        say(f"power-bert: {stage} reused: {dev}finished earlier in {out} with these settings")
        return done, False
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    row = STAGE_TABLE[stage]
    plan = row.plan(cfg, task, previous)
    trainer = _trainer(stage, cfg, task, out, plan, teacher_dir)
    if trainer.is_world_process_zero():  # before training: an interrupted stage keeps them too
        _write_stage_settings(stage, cfg, out)
    checkpoint = _newest_checkpoint(out)
    if checkpoint is not None:
        done_epochs = json.loads((Path(checkpoint) / "trainer_state.json").read_text()).get("epoch") or 0
        say(f"power-bert: {stage}: resuming from {checkpoint} ({done_epochs:g} of {plan.epochs:g} epochs done)")
        restore_patience(trainer, checkpoint)
    if plan.controller is not None and checkpoint is not None and not plan.controller.load_checkpoint(checkpoint):
        print(f"power-bert: {checkpoint} holds no controller state; the search's pressure starts again from 0")
    trainer.train(resume_from_checkpoint=checkpoint)
    record = training_record(trainer, task.primary_metric, plan.epochs, cfg.patience)
    if plan.best and trainer.is_world_process_zero():
        print("power-bert: " + describe_training(stage, record))
    retention, search = row.finish(cfg, task, plan, trainer)
    result = StageResult(stage=stage, model_dir=str(out / "model"), metrics=trainer.evaluate(), retention=retention,
                         training=record)
    _save_stage(stage, task, out, trainer, result, search)
    return result, True


def missing_stage(stage: str, where) -> PowerBertError:
    """The error for a command whose earlier ``stage`` has not finished in ``where``."""
    return PowerBertError(f"stage {stage!r} has not run in {where}; run it first (`power-bert {stage}` with the same "
                          f"arguments)")


def run_pipeline(cfg: PipelineConfig, task: PreparedTask, stages=STAGES) -> dict[str, StageResult]:
    """Runs the requested stages in order, skipping those already finished under
    ``cfg.output_dir``; stages before them must have finished (their results are loaded)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; stages are {STAGES}")
    cfg = resolve_auto(cfg, task)
    last = max(STAGES.index(s) for s in stages)
    results: dict[str, StageResult] = {}
    previous, ran = None, False
    for stage in STAGES[: last + 1]:
        stage_dir = Path(cfg.output_dir) / stage
        if stage not in stages:
            try:
                previous = load_finished(stage_dir)
            except CorruptModelError as e:
                raise CorruptModelError(f"{e}; or run `power-bert {stage}` with the same arguments") from None
            if previous is None:
                raise missing_stage(stage, cfg.output_dir)
            results[stage] = previous
            continue
        teacher = results["finetune"].model_dir if "finetune" in results else None
        previous, trained = _run_stage(stage, cfg, task, previous, ran, teacher)
        ran = ran or trained
        results[stage] = previous
    return results
