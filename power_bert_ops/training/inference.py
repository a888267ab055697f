"""What the pipeline's models are used for afterwards, from Python as from the command line:
:func:`evaluate` (metrics on a labelled dataset), :func:`predict` (class probabilities of a
file's texts, to CSV) and :func:`benchmark` (measured speed-up over the baseline, with the FLOP
bound). Each runs at the N the model was trained at unless told otherwise, so its figures equal
the ones the run's report gives for the same model and data."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .. import data as D
from .._progress import paced
from .artifacts import (check_labels_fit, check_max_length, check_same_classifier, class_names, default_max_length,
                        label_names, load_model, position_limit)
from .errors import PowerBertError, check_whole_number
from .outputs import (check_benchmark_output_dir, check_output_file, folder_files, replace_atomically,
                      writes_to_stdout, written_in_place)
from .prepare import DataArgs, check_distinct_columns, predictions, subset
from .report import write_benchmark_report
from .speed import MODEL_INPUTS, bucketed_batches, speed_report
from .trainer import check_device, resolve_device

__all__ = ["benchmark", "evaluate", "predict", "predict_logits", "resolve_max_length"]


def predict_logits(model, dataset, batch_size: int, device: str, progress: bool = False, sort: bool = True):
    """Logits (float32 numpy [examples, outputs]) of ``model`` over ``dataset`` (dicts of model
    inputs), and the labels (numpy) when the dataset has them, else None; both in input order.
    ``sort``: score length-bucketed batches, each cut to its longest row (the results are put
    back in input order); False: batches in input order, padded as the dataset is."""
    model.to(device).eval()
    if sort:
        batches = bucketed_batches(dataset, batch_size)
    else:
        batches = ((None, b) for b in DataLoader(dataset, batch_size=batch_size))
    outs, labels, where = [], [], []
    with torch.inference_mode():
        for rows, batch in paced(tqdm(batches, total=-(-len(dataset) // batch_size), disable=not progress,
                                      desc="batches", leave=False)):
            outs.append(model(**{k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}).logits.float().cpu())
            if "labels" in batch:
                labels.append(batch["labels"])
            if rows is not None:
                where.extend(rows)
    if not outs:
        return np.zeros((0, 0), dtype=np.float32), None
    logits = torch.cat(outs)
    label_t = torch.cat(labels) if labels else None
    if where:
        inverse = torch.empty(len(where), dtype=torch.long)
        inverse[torch.tensor(where)] = torch.arange(len(where))
        logits = logits[inverse]
        label_t = label_t[inverse] if label_t is not None else None
    return logits.numpy(), (label_t.numpy() if label_t is not None else None)


def resolve_max_length(model, tokenizer, max_length: int | None, data: DataArgs | None = None) -> int:
    """N: the one asked for (checked against the position embeddings), else the model's trained N
    (:func:`artifacts.default_max_length`), else the task's paper value, else 128."""
    if max_length is not None:
        return check_max_length(max_length, model.config)
    n = default_max_length(model, tokenizer)
    if n is None and data is not None and data.metric_kind:
        n = D.get_task(data.metric_kind).max_length
    return min(n or 128, position_limit(model.config))


def _check_problem(model, model_dir, regression: bool) -> None:
    """Refuses a file read as regression targets for a classifier, or as classes for a regression
    model (one output): the scores would not fit the labels."""
    if "MultipleChoice" in type(model).__name__:
        return
    k = int(getattr(model.config, "num_labels", 0) or 0)
    if regression and k > 1:
        raise PowerBertError(f"--regression: the model in --model-dir {model_dir} is a {k}-class classifier, not a "
                             f"regression model; drop --regression")
    if not regression and k == 1:
        raise PowerBertError(f"--model-dir {model_dir} is a regression model (one output): pass --regression to "
                             f"read the label column as numbers")


def check_text_pairs(model, model_dir, pairs: bool, pair_flag: str = "--text-pair-column") -> None:
    """Refuses single texts (``pairs`` False) for a model trained on text pairs, and the reverse:
    it would score them without a word. The pipeline records ``trained_on_text_pairs`` in each
    model it saves (not for multiple choice); a model without it is not checked."""
    trained = getattr(model.config, "trained_on_text_pairs", None)
    if trained is None or bool(trained) == pairs:
        return
    if trained:
        raise PowerBertError(f"--model-dir {model_dir} was trained on text pairs: give the column of the second "
                             f"texts ({pair_flag})")
    raise PowerBertError(f"--model-dir {model_dir} was trained on single texts: leave out {pair_flag}")


def _eval_data(data: DataArgs, model, tokenizer, max_length: int, model_dir=None, labels: bool = True):
    """The eval split or file, tokenised at ``max_length``; ``labels`` False: a file without the
    label column is taken (benchmark only times the models)."""
    if data.eval_file or data.test_file:
        if data.eval_file and data.test_file:
            raise PowerBertError("--eval-file and --test-file both given: this command scores one file; give one "
                                 "of them")
        if labels:
            _check_problem(model, model_dir, data.regression)
        # without labels the file is read as a test file, which may lack them
        eval_file, test_file = (data.eval_file, data.test_file) if labels else (None, data.eval_file or data.test_file)
        raw = D.load_files(None, eval_file, data.text_column, data.label_column if labels else None,
                           data.text_pair_column, test_file, is_regression=data.regression,
                           label_names=class_names(model))
        ds = raw.get("eval") or raw.get("test")
    else:
        ds = D.load_task(data.name, data.eval_split, data_dir=data.data_dir)
        check_labels_fit(model, getattr(ds, "label_names", None), "--model-dir", model_dir, f"--task {data.name}")
    check_text_pairs(model, model_dir, getattr(ds, "text_pairs", None) is not None)
    ds = subset(ds, data.max_eval_examples, data.seed)
    return D.tokenize_dataset(ds, tokenizer, max_length)


def _device(device: str) -> str:
    return resolve_device(check_device(device))


def evaluate(model_dir, data: DataArgs, max_length: int | None = None, batch_size: int = 64,
             device: str = "auto", progress: bool = False, sort: bool = True, artifact=None) -> dict:
    """Metrics of the model saved in ``model_dir`` on ``data``'s eval split (or eval / test
    file), scored on length-bucketed batches unless ``sort`` is False (the metrics are the same).
    ``artifact``: an ONNX file or pt2 package exported from ``model_dir`` scores the data instead
    of the PyTorch model (on the CPU), as in :func:`predict`.
    Returns ``{"model", ["artifact",] "max_length", "examples", "truncated", <metric>: value, ...}``."""
    check_whole_number(batch_size, "--batch-size")
    device = _device(device)
    model, tokenizer = load_model(model_dir)
    n = resolve_max_length(model, tokenizer, max_length, data)
    scorer, device = _scorer(model, model_dir, artifact, n, device)
    ds = _eval_data(data, model, tokenizer, n, model_dir=model_dir)
    logits, labels = predict_logits(scorer, ds, batch_size, device, progress, sort=sort)
    if labels is None:
        raise D.DataError("evaluate: the dataset has no labels (use `power-bert predict`)")
    kind = data.metric_kind or ds.problem
    metrics = D.compute_metrics(kind, predictions(ds.problem, logits), labels)
    where = {} if artifact is None else {"artifact": str(artifact)}
    return {"model": str(model_dir), **where, "max_length": n, "examples": len(ds), "truncated": int(ds.num_truncated),
            **metrics}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class _Artifact:
    """An exported model (ONNX file or pt2 package, :mod:`power_bert_ops.export`) called like a
    Hugging Face classifier by :func:`predict_logits` (CPU inputs; ``.logits`` out)."""

    def __init__(self, path):
        from ..export import OnnxClassifier, load_pt2

        path = Path(path)
        if not path.exists():
            raise PowerBertError(f"--artifact {path}: no such file")
        if not path.is_file() or path.suffix not in (".onnx", ".pt2"):
            raise PowerBertError(f"--artifact {path}: not an .onnx file or .pt2 package (power-bert export writes them)")
        self.path = path
        try:
            self.run = OnnxClassifier(path) if path.suffix == ".onnx" else load_pt2(path)
        except ValueError as e:  # a corrupt, foreign or unreadable file; the message starts with the path
            raise PowerBertError(f"--artifact {e}; export it again with `power-bert export` (for a file exported "
                                 f"elsewhere, the runtime here may be older than the one that wrote it)") from None
        self.max_length = self.run.max_length

    def check_exported_from(self, model, model_dir) -> None:
        """PowerBertError unless the artifact's metadata (written by power-bert export) describes
        ``model``: the same kind (PoWER-BERT or dense), retention (ℓ, its scale and floor of rows),
        classes and base model type (an artifact exported before a key existed is not checked on it)."""
        meta = getattr(self.run, "metadata", None) or {}
        power = getattr(model.config, "model_type", "") == "power_bert"
        want = {"kind": "power_bert" if power else "huggingface",
                "num_labels": int(model.config.num_labels),
                "retention": list(model.retention) if power and model.mode == "hard" else None,
                "retention_scale": model.config.retention_scale if power else None,
                "min_rows": int(model.config.min_rows) if power else None,
                "min_rows_max_length": model.config.min_rows_max_length if power else None,
                "labels": label_names(model)}
        diff = {k: (meta[k], v) for k, v in want.items() if k in meta and meta[k] != v}
        if not meta or diff:
            why = f"(setting: (artifact, model) = {diff})" if meta else "(it carries no power-bert metadata)"
            raise PowerBertError(f"--artifact {self.path} was not exported from --model-dir {model_dir} {why}; export "
                                 f"it with `power-bert export --model-dir {model_dir}`")

    def to(self, device):
        return self

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        out = self.run(input_ids, attention_mask, token_type_ids)
        return SimpleNamespace(logits=torch.as_tensor(out))


def _scorer(model, model_dir, artifact, n: int, device: str):
    """(what scores the rows, its device): ``model`` on ``device``, or the exported ``artifact``
    on the CPU once it is checked to come from ``model_dir`` and to take N = ``n`` tokens."""
    if artifact is None:
        return model, device
    scorer = _Artifact(artifact)
    scorer.check_exported_from(model, model_dir)
    if n > scorer.max_length:
        raise PowerBertError(f"--artifact {artifact} takes at most {scorer.max_length} tokens; N is {n} "
                             f"(pass --max-length {scorer.max_length})")
    return scorer, "cpu"


def predict(model_dir, input_file, output_file, text_column: str = "text", text_pair_column: str | None = None,
            max_length: int | None = None, batch_size: int = 64, device: str = "auto", progress: bool = False,
            artifact=None, sort: bool = True) -> dict:
    """Writes one CSV row per input text, in input order: the text (and pair, under the input's
    column names), the predicted label and, for a classifier, the probability of each class
    (softmax) under ``score_<label>``; for regression the predicted value.

    ``output_file``: a path (tab-separated when it ends in .tsv / .tab), or ``"-"`` for standard
    output; never one of the command's inputs (the input file, the artifact, a file of
    ``model_dir``).
    ``artifact``: an ONNX file or pt2 package exported from ``model_dir`` (``power-bert export``)
    scores the texts instead of the PyTorch model (on the CPU); ``model_dir`` still gives the
    tokenizer and the label names. ``sort``: score length-bucketed batches (rows are written in
    input order either way).

    Under ``torchrun`` / ``accelerate launch`` every process scores a contiguous shard of the
    input (on its own GPU, or its CPU cores) and the main process writes the one output file.
    Returns ``{"output_file", "examples", "max_length", "truncated", "seconds", "rows_per_second",
    "processes"}`` (the same on every process)."""
    check_whole_number(batch_size, "--batch-size")
    check_distinct_columns(**{"--text-column": text_column, "--text-pair-column": text_pair_column})
    D.check_table_file(input_file, "--input-file")
    for flag, column in (("--text-column", text_column), ("--text-pair-column", text_pair_column)):
        if column == "prediction" or str(column).startswith("score_"):
            raise PowerBertError(f"{flag} {column}: predict writes its own column of that name (prediction, "
                                 f"score_<label>); rename that column of --input-file")
    device = _device(device)
    out = check_output_file(output_file, "--output-file", {"--input-file": input_file, "--artifact": artifact,
                                                           **folder_files("--model-dir", model_dir)})
    kind = _output_kind(out, output_file)
    state = PartialState(cpu=device == "cpu")
    if device.startswith("cuda") and state.num_processes > 1:
        device = str(state.device)
    model, tokenizer = load_model(model_dir)
    n = resolve_max_length(model, tokenizer, max_length)
    scorer, device = _scorer(model, model_dir, artifact, n, device)
    table = D.load_files(None, None, text_column, None, text_pair_column, input_file)["test"]
    check_text_pairs(model, model_dir, table.text_pairs is not None)
    ds = D.tokenize_dataset(table, tokenizer, n)
    start = time.perf_counter()
    with state.split_between_processes(list(range(len(ds)))) as shard:
        logits, _ = predict_logits(scorer, Subset(ds, shard), batch_size, device, progress and state.is_main_process,
                                   sort=sort)
        rows = list(zip(shard, logits.tolist()))
    rows = gather_object(rows) if state.num_processes > 1 else rows  # shards in process order = input order
    seconds = time.perf_counter() - start
    result = {"output_file": str(out), "examples": len(ds), "max_length": n, "truncated": int(ds.num_truncated),
              "seconds": seconds, "rows_per_second": len(ds) / max(seconds, 1e-9), "processes": state.num_processes}
    if not state.is_main_process:
        return result
    logits = np.asarray([r[1] for r in sorted(rows, key=lambda r: r[0])], dtype=np.float32).reshape(len(ds), -1)
    names = label_names(model)
    regression = logits.shape[-1] == 1
    probs = None if regression else _softmax(logits)
    header = [text_column] + ([text_pair_column] if table.text_pairs else []) + ["prediction"] + \
        ([] if regression else [f"score_{c}" for c in (names or range(logits.shape[-1]))])
    with replace_atomically(out, "w", newline="") as f:  # a failure leaves no half file
        w = None if kind == "jsonl" else csv.writer(f, delimiter="\t" if kind == "tsv" else ",", lineterminator="\n")
        if w is not None:
            w.writerow(header)
        for i, row in enumerate(logits):
            pred = float(row[0]) if regression else (names[int(row.argmax())] if names else int(row.argmax()))
            values = [table.texts[i]] + ([table.text_pairs[i]] if table.text_pairs else []) + [pred]
            if w is None:
                scores = [] if regression else [round(float(x), 6) for x in probs[i]]
                f.write(json.dumps(dict(zip(header, values + scores)), ensure_ascii=False) + "\n")
            else:
                w.writerow(values + ([] if regression else [f"{x:.6f}" for x in probs[i]]))
    return result


# predict's output formats by the --output-file's ending; standard output, devices and pipes get CSV.
OUTPUT_KINDS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl"}


def _output_kind(out: Path, output_file) -> str:
    """'csv', 'tsv' or 'jsonl' for predict's ``--output-file``; PowerBertError for another ending."""
    if writes_to_stdout(output_file) or written_in_place(out) or not out.suffix:
        return "csv"
    kind = OUTPUT_KINDS.get(out.suffix.lower())
    if kind is None:
        raise PowerBertError(f"--output-file {output_file}: predict writes {', '.join(OUTPUT_KINDS)} files (by the "
                             f"name's ending; a name without one gets CSV), not {out.suffix}")
    return kind


def benchmark(model_dir, baseline_dir, data: DataArgs, max_length: int | None = None, batch_size: int = 64,
              device: str = "auto", dtype: torch.dtype = torch.float32, output_dir=None, compile: bool = False) -> dict:
    """Times the PoWER-BERT model in ``model_dir`` (hard mode) against the Hugging Face model in
    ``baseline_dir`` on ``data``'s eval split, at the model's trained N unless ``max_length``
    says otherwise (:func:`.speed.measure_speedup`), and adds the FLOP bound. ``compile``: both
    models under torch.compile (CUDA graphs on CUDA). With ``output_dir``, writes report.json,
    report.md and the speed-up plot there."""
    check_whole_number(batch_size, "--batch-size")
    if output_dir is not None:  # before the work: never over a run's report
        check_benchmark_output_dir(output_dir)
    device = _device(device)
    power, tokenizer = load_model(model_dir)
    if getattr(power.config, "model_type", "") != "power_bert" or power.retention is None or power.mode != "hard":
        raise PowerBertError(f"--model-dir {model_dir} is not a PoWER-BERT model in hard mode (benchmark the "
                             f"retrain stage's model)")
    if compile and power.config.thresholds is not None:
        raise PowerBertError(f"--compile: the model in {model_dir} keeps rows by the threshold rule, whose widths are "
                             f"read on the host (eager only); benchmark it without --compile")
    baseline, _ = load_model(baseline_dir)
    check_same_classifier(power, baseline, "--baseline", baseline_dir, model_dir)
    n = resolve_max_length(power, tokenizer, max_length, data)
    ds = _eval_data(data, power, tokenizer, n, model_dir=model_dir, labels=False)
    speed = speed_report(baseline, power, ds, batch_size, device, dtype=dtype, compile=compile)
    result = {"model": str(model_dir), "baseline": str(baseline_dir), "max_length": n, "examples": len(ds),
              "truncated": int(ds.num_truncated), "retention": list(power.retention),
              "retention_scale": power.config.retention_scale, "min_rows": power.config.min_rows,
              "min_rows_max_length": power.config.min_rows_max_length,
              "sequence_length": power.config.sequence_length, **speed}
    if power.config.thresholds is not None:
        result["thresholds"] = list(power.config.thresholds)
    if output_dir is not None:
        result["files"] = {k: str(v) for k, v in write_benchmark_report(Path(output_dir), result).items()}
    return result


