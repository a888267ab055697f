"""A whole ``power-bert run`` from Python: every check first, then the output folder is claimed,
the stages run (:mod:`.pipeline`) and the report is written.

    from power_bert_ops.training import DataArgs, PipelineConfig, train
    report = train(PipelineConfig(model="my-bert", output_dir="out", max_length=64),
                   DataArgs(train_file="train.csv", eval_file="dev.csv"))

Nothing is written before every setting, the model, its tokenizer and the data have been
checked, so a mistyped command leaves no trace and the corrected one is not refused. A run is
identified by the *content* of its model and data files (not the paths that named them), and
stage.json files name models relative to the run folder, so a copied or moved run folder resumes
as itself.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
from accelerate import PartialState

from ..flops import check_target
from .artifacts import check_checkpoint, check_max_length, load_tokenizer
from .errors import PowerBertError
from .inference import predict_logits
from .outputs import check_writable_folder
from .pipeline import (STAGE_FILE, STAGES, TARGET_FILE, PipelineConfig, StageResult, check_stage_settings,
                       decide_auto, flop_model, missing_stage, run_pipeline)
from .stages import stage_distill
from .prepare import DataArgs, PreparedTask, prepare
from .report import threads_text, write_report, write_sweep
from .speed import describe_speedup, speed_report
from .trainer import resolve_device

__all__ = ["DEFAULT_TARGET_SPEEDUP", "DTYPES", "RUN_FILE", "finish_run", "is_main_process", "run_identity",
           "torch_dtype", "train"]

RUN_FILE = "run_config.json"
# What `power-bert run` aims for when given neither a target nor a λ: a FLOP bound of 3x.
DEFAULT_TARGET_SPEEDUP = 3.0
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(precision: str) -> torch.dtype:
    """``"fp32"`` / ``"fp16"`` / ``"bf16"`` -> the torch dtype."""
    if precision not in DTYPES:
        raise PowerBertError(f"--precision must be one of {list(DTYPES)}, got {precision!r}")
    return DTYPES[precision]


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun / accelerate launch."""
    return int(os.environ.get("RANK", "0")) == 0


def _hash_files(paths, names: bool = False) -> str:
    """A hash of the files' content, in order; their names are not part of it (a byte-identical
    file under another name is the same data). ``names``: include each file's base name too, as
    the hashes some run folders store do (read to resume those runs)."""
    h = hashlib.sha256()
    for p in paths:
        if names:
            h.update(Path(p).name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _hash_tree(root: Path, names: bool = False) -> str:
    """A folder's hash: each file's path inside it (a GLUE folder's layout is part of the data)
    and content."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0" + _hash_files([p], names).encode())
    return h.hexdigest()[:16]


def run_identity(model: str, data: DataArgs, max_length: int, seed: int, legacy: bool = False) -> dict:
    """What makes a run the same run: the model's and the data's content (a hash of the model's
    config and weights, of each data file or data folder), the task, N, the columns, the seed and
    the training subset. Paths and file names are not part of it. ``legacy``: the identity with each
    file's base name in its hashes, as some run folders store it (accepted on resume)."""
    model_dir = Path(model)
    files = {"train_file": data.train_file, "eval_file": data.eval_file, "test_file": data.test_file}
    return {
        "model": _hash_files([model_dir / "config.json", *sorted(model_dir.glob("*.safetensors"))], legacy),
        "task": data.name,
        **{k: _hash_files([v], legacy) if v else None for k, v in files.items()},
        "data_dir": _hash_tree(Path(data.data_dir), legacy) if data.data_dir else None,
        "max_length": max_length, "text_column": data.text_column, "text_pair_column": data.text_pair_column,
        "label_column": data.label_column, "regression": data.regression, "eval_split": data.eval_split,
        "seed": seed, "max_train_examples": data.max_train_examples or None,
        "max_eval_examples": data.max_eval_examples or None,
    }


def check_output_dir(out: Path, identity: dict | None = None, legacy: dict | None = None) -> None:
    """Refuses, before anything is written, an output folder that cannot hold this run: a file,
    a folder that cannot be created or written, a folder holding files of something else, or
    (with ``identity``) one holding another run. ``legacy``: the same run's identity with the
    files' base names in its hashes (as some run folders store it), also accepted."""
    if out.exists() and not out.is_dir():
        raise PowerBertError(f"--output-dir {out} is a file, not a folder")
    f = out / RUN_FILE
    if f.exists():
        if identity is not None:
            previous = json.loads(f.read_text())
            if previous != identity and (legacy is None or previous != legacy):
                diff = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
                raise PowerBertError(f"{out} holds another run (it differs in {', '.join(diff)}); use a new "
                                     f"--output-dir")
    elif out.is_dir() and any(out.iterdir()):
        raise PowerBertError(f"--output-dir {out} is not empty and holds no power-bert run; use a new --output-dir")
    check_writable_folder(out, "--output-dir", out)


def _claim_output_dir(out: Path, identity: dict, legacy: dict | None = None) -> None:
    check_output_dir(out, identity, legacy)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_FILE).write_text(json.dumps(identity, indent=1))
    except OSError as e:
        raise PowerBertError(f"--output-dir {out} cannot be written: {e.strerror or e}") from None


def _numbers(values, flag: str, rule: str, ok) -> list[float] | None:
    """A sweep's values (``--lambdas`` / ``--target-speedups``), each checked; None for none."""
    if values is None:
        return None
    out = []
    for x in values:
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise PowerBertError(f"{flag} must be comma-separated numbers {rule}; {str(x).strip()!r} is not a "
                                 f"number") from None
        if not ok(v) or v == float("inf"):
            raise PowerBertError(f"{flag} must be comma-separated numbers {rule}; got {x!r}")
        out.append(v)
    if not out:
        raise PowerBertError(f"{flag} needs at least one value")
    return out


def check_lambdas(lambdas) -> list[float] | None:
    """A λ sweep's values: numbers >= 0, at least one."""
    return _numbers(lambdas, "--lambdas", ">= 0", lambda v: v >= 0)


def _variants(cfg: PipelineConfig, lambdas, targets) -> list[tuple[str | None, PipelineConfig]]:
    """(sub-folder, settings) per run of a sweep; one (None, cfg) without a sweep."""
    if lambdas and targets:
        raise PowerBertError("give --lambdas or --target-speedups, not both")
    if lambdas:
        return [(f"lambda_{v:g}", dataclasses.replace(cfg, lam=v, target_speedup=None)) for v in lambdas]
    if targets:
        return [(f"target_{v:g}x", dataclasses.replace(cfg, target_speedup=v)) for v in targets]
    return [(None, cfg)]


def variant_dir(out: Path, folder: str | None, variants: list) -> Path:
    """Where a run of ``variants`` keeps its stages 2-3: a sweep of several values in each value's
    folder, anything else (one value too) in ``out``. Stage 1 is always in ``out``."""
    return out / folder if folder is not None and len(variants) > 1 else out


def stage_dir(out: Path, stage: str, folder: str | None, variants: list) -> Path:
    """The folder of ``stage`` of the variant under ``folder`` (:func:`variant_dir`; stage 1: ``out``)."""
    return (out if stage == "finetune" else variant_dir(out, folder, variants)) / stage


def check_earlier_stages(out: Path, stages, variants) -> None:
    """Refuses, before anything is read or written, ``stages`` whose earlier stages have not
    finished (:func:`stage_dir`)."""
    first = min((STAGES.index(s) for s in stages if s in STAGES), default=0)  # unknown names: run_pipeline
    for folder, _ in variants:
        for stage in STAGES[:first]:
            where = stage_dir(out, stage, folder, variants)
            if not (where / STAGE_FILE).exists():
                raise missing_stage(stage, where.parent)


def check_logit_flags(cfg: PipelineConfig, stages, flags, task: PreparedTask | None = None) -> None:
    """Refuses logit-distillation settings (``flags``: the names the caller gave them by, e.g.
    ``--distill-alpha``) that no stage of ``stages`` would use, or that contradict ``cfg.distill``.
    With ``task``: after the automatic choice of stage 3's distillation for its texts."""
    if not flags:
        return
    given = " and ".join(flags)
    sets = "set" if len(flags) > 1 else "sets"
    if cfg.distill is False:
        raise PowerBertError(f"{given} {sets} logit distillation, which --no-distill turns off; give one or the other")
    # stage 3's choice depends on the texts (``task``); stages 1-2 distil the logits only with --distill
    if (task is not None or "retrain" not in stages) and not any(stage_distill(s, cfg) for s in stages):
        if "retrain" in stages:
            why = "stage 3 distils the fine-tuned model's ranking on these texts (--distill-ranking)"
            fix = "add --distill, or "
        elif "search" in stages:
            why, fix = "stage 2 distils the logits only with --distill", "add --distill, or "
        else:
            why, fix = "stage 1 distils nothing", ""
        raise PowerBertError(f"{given} {sets} logit distillation, which this command does not run ({why}); "
                             f"{fix}leave {given} out")


def check_augment_flags(cfg: PipelineConfig, stages, flags, task: PreparedTask | None = None) -> None:
    """Refuses word-dropped copy settings (``flags``: the names the caller gave them by) for a
    command without stage 3, ``--augment-drop`` where there are no copies and copies of
    multiple-choice examples. With ``task``: after the automatic choice of copies for its texts."""
    given = " and ".join(flags)
    if flags and "retrain" not in stages:
        raise PowerBertError(f"{given}: word-dropped copies are stage 3's; this command runs "
                             f"{' and '.join(stages)}, so leave {given} out")
    if task is None:
        return
    if cfg.augment_copies and task.problem == "multiple_choice":
        raise PowerBertError("--augment-copies takes single texts and text pairs; a multiple-choice example's "
                             "options would lose different words, so leave --augment-copies out")
    if "--augment-drop" in flags and not cfg.augment_copies:
        why = "--augment-copies 0" if "--augment-copies" in flags else "stage 3 makes none for multiple choice"
        raise PowerBertError(f"--augment-drop sets how stage 3's word-dropped copies are drawn, and there are none "
                             f"({why}); add --augment-copies K (K >= 1) or leave --augment-drop out")


def train(cfg: PipelineConfig, data: DataArgs, stages=STAGES, lambdas=None, targets=None,
          logit_flags=(), augment_flags=()) -> dict | None:
    """Checks everything, then runs ``stages`` into ``cfg.output_dir`` and, when they include
    stage 3, writes the report (returned). A sweep shares stage 1 and runs stages 2-3 once per
    value, under ``lambda_<λ>/`` (``lambdas``: SPEC 1.3's procedure) or ``target_<X>x/``
    (``targets``: target speed-ups), then writes sweep.md / sweep.json / sweep.png; the last
    report is returned. Finished stages are reused (see :mod:`.pipeline`). ``logit_flags``:
    the logit-distillation settings the caller gave (:func:`check_logit_flags`); ``augment_flags``:
    the word-dropped copy settings it gave (:func:`check_augment_flags`)."""
    lambdas = check_lambdas(lambdas)
    targets = _numbers(targets, "--target-speedups", ">= 1", lambda v: v >= 1)
    variants = _variants(cfg, lambdas, targets)
    model_cfg = check_checkpoint(cfg.model)
    check_max_length(cfg.max_length, model_cfg)
    check_logit_flags(cfg, stages, logit_flags)
    check_augment_flags(cfg, stages, augment_flags)
    out = Path(cfg.output_dir)
    check_output_dir(out)
    check_earlier_stages(out, stages, variants)
    tokenizer = load_tokenizer(cfg.model, model_cfg)
    task = prepare(data, tokenizer, cfg.max_length)
    cfg, auto_line = decide_auto(cfg, task)
    check_logit_flags(cfg, stages, logit_flags, task)
    check_augment_flags(cfg, stages, augment_flags, task)
    variants = _variants(cfg, lambdas, targets)  # again, from the settings decided for this data
    if cfg.retention_rule == "threshold" and task.problem == "multiple_choice":
        raise PowerBertError("--retention-rule threshold takes classification and regression tasks; for multiple "
                             "choice use --retention-rule top-k")
    if "search" in stages and any(v.target_speedup is not None for _, v in variants):
        lengths_model = flop_model(model_cfg, task, cfg.retention_scale, cfg)  # what the target is measured by
        for _, v in variants:
            if v.target_speedup is not None:
                try:
                    check_target(v.target_speedup, lengths_model, cfg.max_length)
                except ValueError as e:
                    raise PowerBertError(f"--target-speedup: {e}") from None
    identity = run_identity(cfg.model, data, cfg.max_length, cfg.seed)
    legacy = None
    if (out / RUN_FILE).exists() and json.loads((out / RUN_FILE).read_text()) != identity:
        # the folder may hold this run with file names in its hashes
        legacy = run_identity(cfg.model, data, cfg.max_length, cfg.seed, legacy=True)
    check_output_dir(out, identity, legacy)
    last = max((STAGES.index(s) for s in stages if s in STAGES), default=-1)  # unknown names: run_pipeline
    for folder, variant in variants:  # finished or started stages run with other settings, and the ones built on
        for stage in STAGES[:last + 1]:
            check_stage_settings(stage, variant, stage_dir(out, stage, folder, variants), running=stages)
    # every refusal that depends on the texts is made: now the line saying what stage 3 was given
    if auto_line and "retrain" in stages and is_main_process():
        print(auto_line)
    with PartialState(cpu=resolve_device(cfg.device) == "cpu").main_process_first():
        _claim_output_dir(out, identity, legacy)
    reports = []
    for folder, run_cfg in variants:
        sub = variant_dir(out, folder, variants)
        if sub != out:  # stage 1 shared; stages 2-3 per value
            run_pipeline(run_cfg, task, stages=("finetune",))
            sub.mkdir(exist_ok=True)
            if not (sub / "finetune").exists():
                (sub / "finetune").symlink_to(Path("..") / "finetune")  # relative: the folder moves as one
            run_cfg = dataclasses.replace(run_cfg, output_dir=str(sub))
        results = run_pipeline(run_cfg, task, stages=stages)
        if "retrain" in stages and is_main_process():
            reports.append(finish_run(run_cfg, task, results, Path(run_cfg.output_dir)))
    if len(reports) > 1 and is_main_process():
        paths = write_sweep(out, reports)
        print(f"sweep written to {paths['markdown']} and {paths['plot']}")
    return reports[-1] if reports else None


def finish_run(cfg: PipelineConfig, task: PreparedTask, results: dict[str, StageResult], out: Path) -> dict:
    """Evaluates baseline and PoWER-BERT (eval and test splits), measures the speed-up on the eval
    set, computes the FLOP bound, writes report.json / report.md / the plot."""
    device = resolve_device(cfg.device)
    baseline = task.hf_class.from_pretrained(results["finetune"].model_dir, attn_implementation="sdpa")
    power = task.power_class.from_pretrained(results["retrain"].model_dir)
    retention = list(power.retention)
    metric = task.primary_metric
    evals = {}
    for name, model in (("baseline", baseline), ("power_bert", power)):
        for split, ds in (("eval", task.eval), ("test", task.test)):
            if ds is None:
                continue
            logits, labels = predict_logits(model, ds, cfg.eval_batch_size, device)
            if labels is not None:
                evals.setdefault(name, {})[split] = task.compute_metrics(task.predictions(logits), labels)
    speed = speed_report(baseline, power, task.eval, cfg.eval_batch_size, device, dtype=torch_dtype(cfg.precision))
    split = "test" if task.test is not None else "eval"
    search_file = Path(results["search"].model_dir).parent / TARGET_FILE
    report = {
        "task": task.name,
        "model": cfg.model,
        "max_length": task.max_length,
        "lambda": cfg.lam if cfg.target_speedup is None else None,
        "target_speedup": cfg.target_speedup,
        "search": json.loads(search_file.read_text()) if search_file.exists() else None,
        "baseline": {"metric": {"name": metric, "value": evals["baseline"][split][metric], "split": split},
                     "metrics": evals["baseline"]},
        "power_bert": {"metric": {"name": metric, "value": evals["power_bert"][split][metric], "split": split},
                       "metrics": evals["power_bert"]},
        "retention": retention,
        "retention_scale": power.config.retention_scale,
        "sequence_length": power.config.sequence_length,  # the N relative retention reads ℓ against
        "min_rows": power.config.min_rows,
        "min_rows_max_length": power.config.min_rows_max_length,  # the floor holds up to it (None: every text)
        "retention_rule": "threshold" if power.config.thresholds is not None else "top-k",
        "thresholds": power.config.thresholds,
        # what --target-speedup is measured by: the training data's lengths (SPEC 1.6)
        "target_bound": flop_model(power.config, task, power.config.retention_scale).bound(retention),
        "flop_bound": speed["flop_bound"],
        "measured_speedup": speed["speedup"],
        "padded": {"flop_bound": speed["padded"]["flop_bound"], "measured_speedup": speed["padded"]["speedup"]},
        "speed": speed,
        "device": device_name(device),
        "examples": {k: len(v) for k, v in (("eval", task.eval), ("test", task.test)) if v is not None},
        "truncated": task.truncated,
        "stages": {k: v.metrics for k, v in results.items()},
        # per stage: the dev metric per evaluation, the epoch kept, whether dev was still rising
        "training": {k: v.training for k, v in results.items()},
        "config": cfg.to_dict(),
        # what config's distill (None: automatic) came to in each stage that can distil the logits
        "distilled_logits": {stage: stage_distill(stage, cfg) for stage in ("search", "retrain")},
    }
    paths = write_report(out, report)
    b, p = report["baseline"]["metric"], report["power_bert"]["metric"]
    floor = f", at least {report['min_rows']} rows" if report["min_rows"] > 1 else ""
    if floor and report["min_rows_max_length"] is not None:
        floor += f" of a text up to {report['min_rows_max_length']} tokens"
    print(f"\n{task.name} (N={task.max_length}, {split} split): baseline {metric} {b['value']:.4f} | PoWER-BERT "
          f"{p['value']:.4f} | retention {retention} ({report['retention_scale']}, {report['retention_rule']}{floor}) | "
          f"speed-up against the dense model on length-bucketed batches: {describe_speedup(speed)}; padded to N: {speed['padded']['speedup']:.2f}x "
          f"(bound {speed['padded']['flop_bound']:.2f}x) on {report['device']}\nreport: {paths['json']}")
    return report


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({threads_text(torch.get_num_threads())})"
