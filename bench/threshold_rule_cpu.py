"""The threshold rule (keep the rows whose share of significance exceeds θ_j, as Learned Token
Pruning does) against the top-k rule at the same FLOP bound, on a finished relative run.

    python bench/threshold_rule_cpu.py --run-dir runs/rt3 --output-dir runs/rt3_threshold
    python bench/threshold_rule_cpu.py --run-dir runs/rt3 --output-dir runs/rt3_threshold --time

From the run's stage-2 model and ℓ: θ_j is calibrated on the training data so that the threshold
rule keeps as many rows in each eliminating layer as ℓ does
(``power_bert_ops.training.thresholds.calibrate_thresholds``); stage 3 then retrains with the run's
own settings under the threshold rule (the pipeline's ``run_stage("retrain")``). Retraining moves
the shares, so θ is calibrated again on the retrained model as a second variant. Each model's test
accuracy comes from ``power_bert_ops.training.inference.evaluate`` (as ``power-bert evaluate``),
its FLOP bound from the rows it kept of each test example (``rows_bound``) against dense at real
lengths. ``--time`` times each model against the fine-tuned baseline on length-bucketed batches
(``measure_speedup``, the code behind ``power-bert benchmark``; run it on an idle machine).
Writes ``threshold_rule.json`` into the output folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from power_bert_ops.training.artifacts import load_model, load_tokenizer  # noqa: E402
from power_bert_ops.training.inference import evaluate  # noqa: E402
from power_bert_ops.training.pipeline import PipelineConfig, StageResult, load_finished, run_stage  # noqa: E402
from power_bert_ops.training.prepare import DataArgs, prepare  # noqa: E402
from power_bert_ops.training.speed import example_lengths, measure_speedup  # noqa: E402
from power_bert_ops.training.thresholds import calibrate_thresholds, kept_rows, rows_bound  # noqa: E402


def _data(run: Path, split: str | None = None) -> DataArgs:
    rc = json.loads((run / "run_config.json").read_text())
    split = rc["eval_split"] if split is None else split
    return DataArgs(task=rc["task"], train_file=rc["train_file"], eval_file=rc["eval_file"],
                    test_file=rc["test_file"], data_dir=rc["data_dir"], text_column=rc["text_column"],
                    text_pair_column=rc["text_pair_column"], label_column=rc["label_column"],
                    regression=rc["regression"], eval_split=split, max_train_examples=rc["max_train_examples"],
                    max_eval_examples=rc["max_eval_examples"])


def _describe(model_dir: Path, run: Path, task, test) -> dict:
    model = load_model(model_dir)[0]
    lengths = example_lengths(test)
    rows = kept_rows(model, test)
    acc = evaluate(model_dir, _data(run, "test"))["accuracy"]
    return {"model": str(model_dir), "thresholds": model.config.thresholds, "test_accuracy": acc,
            "flop_bound_test": rows_bound(model.config, lengths, rows),
            "mean_rows_test": rows.double().mean(dim=0).tolist(),
            "mean_rows_train": kept_rows(model, task.train).double().mean(dim=0).tolist()}


def train(run: Path, out: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    cfg = PipelineConfig(**{**report["config"], "output_dir": str(out), "progress": False})
    tokenizer = load_tokenizer(cfg.model)
    task = prepare(_data(run), tokenizer, cfg.max_length)
    test = task.test
    search = load_finished(run / "search")
    model = task.power_class.from_pretrained(search.model_dir, retention=search.retention)
    calibration = calibrate_thresholds(model, task.train)
    print(f"calibrated θ = {calibration['thresholds']}: rows {calibration['rows']} for ℓ's {calibration['target_rows']}")
    start = out / "calibrated" / "model"
    model.save_pretrained(start)
    tokenizer.save_pretrained(start)
    retrained = run_stage("retrain", cfg, task, StageResult("search", str(start), {}, retention=search.retention))
    model = load_model(retrained.model_dir)[0]
    again = calibrate_thresholds(model, task.train)
    recalibrated = out / "recalibrated" / "model"
    model.save_pretrained(recalibrated)
    tokenizer.save_pretrained(recalibrated)
    results = {
        "run": str(run), "retention": search.retention, "calibration": calibration,
        "retrain_training": retrained.training,
        "models": {
            "baseline": {"model": str(Path(load_finished(run / "finetune").model_dir)),
                         "test_accuracy": report["baseline"]["metrics"]["test"]["accuracy"]},
            "top-k": _describe(Path(load_finished(run / "retrain").model_dir), run, task, test),
            "threshold": _describe(Path(retrained.model_dir), run, task, test),
            "threshold, recalibrated": _describe(recalibrated, run, task, test),
        },
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "command": " ".join(sys.argv),
    }
    return results


def time_models(results: dict, run: Path, repeats: int) -> None:
    report = json.loads((run / "report.json").read_text())
    tokenizer = load_tokenizer(report["config"]["model"])
    test = prepare(_data(run), tokenizer, report["config"]["max_length"]).test
    baseline = load_model(results["models"]["baseline"]["model"])[0]
    for name, entry in results["models"].items():
        if name == "baseline":
            continue
        speed = measure_speedup(baseline, load_model(entry["model"])[0], test, 64, "cpu", repeats=repeats)
        entry["speed"] = {"bucketed": speed["speedup"], "bucketed_range": speed["speedup_range"],
                          "padded": speed["padded"]["speedup"], "threads": speed["threads"]}
        print(f"{name}: {speed['speedup']:.2f}x of {entry['flop_bound_test']:.2f}x bucketed "
              f"({speed['speedup'] / entry['flop_bound_test']:.2f}), padded {speed['padded']['speedup']:.2f}x")
    results["timing"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "command": " ".join(sys.argv), "repeats": repeats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, type=Path, help="a finished relative run (report.json in it)")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--time", action="store_true", help="time the models of an earlier call against the baseline")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    path = a.output_dir / "threshold_rule.json"
    if a.time:
        results = json.loads(path.read_text())
        time_models(results, a.run_dir, a.repeats)
    else:
        results = train(a.run_dir, a.output_dir)
    path.write_text(json.dumps(results, indent=1))
    for name, entry in results["models"].items():
        bound = entry.get("flop_bound_test")
        print(f"{name}: test accuracy {entry['test_accuracy']:.4f}" + (f", FLOP bound {bound:.2f}x" if bound else ""))


if __name__ == "__main__":
    main()
