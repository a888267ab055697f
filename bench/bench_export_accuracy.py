"""What ONNX Runtime deployment gives on a trained run: the fine-tuned baseline
and the PoWER-BERT model of a `power-bert run` folder exported to ONNX (fp32; PoWER-BERT also
int8 with ONNX Runtime's dynamic quantisation), each scored on the task's test split and timed
over it in the same interleaved rounds (median), against the fp32 baseline in ONNX Runtime.

    python bench/bench_export_accuracy.py --run runs/rotten_tomatoes_minilm --out bench/results/export_accuracy.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import power_bert_ops
from power_bert_ops import data as D
from power_bert_ops.export import OnnxClassifier, export
from power_bert_ops.flops import flop_bound
from power_bert_ops.training.artifacts import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished `power-bert run` folder")
    ap.add_argument("--split", default="test")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run = Path(a.run)
    report = json.loads((run / "report.json").read_text())
    power, tokenizer = load_model(run / "retrain" / "model")
    n = power.config.sequence_length
    ds = D.tokenize_dataset(D.load_task(report["task"], a.split), tokenizer, n)
    batches = [ds[i:i + a.batch_size] for i in range(0, len(ds), a.batch_size)]
    labels = np.asarray(ds.labels) if hasattr(ds, "labels") else np.concatenate([b["labels"].numpy() for b in batches])
    tmp = Path(tempfile.mkdtemp(prefix="power_bert_export_"))
    files = {
        "baseline_fp32": export(run / "finetune" / "model", tmp / "baseline.onnx"),
        "power_bert_fp32": export(run / "retrain" / "model", tmp / "power.onnx"),
        "power_bert_int8": export(run / "retrain" / "model", tmp / "power_int8.onnx", quantize="int8"),
    }
    models = {k: OnnxClassifier(v) for k, v in files.items()}
    rows = {}
    for name, clf in models.items():
        logits = np.concatenate([clf(b["input_ids"], b["attention_mask"], b.get("token_type_ids")) for b in batches])
        rows[name] = {"accuracy": float((logits.argmax(-1) == labels).mean())}
    times = {k: [] for k in models}
    for _ in range(a.rounds):
        for name, clf in models.items():
            t = time.perf_counter()
            for b in batches:
                clf(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["baseline_fp32"])
    for name in models:
        rows[name]["seconds"] = statistics.median(times[name])
        rows[name]["speedup_vs_baseline_fp32"] = base / rows[name]["seconds"]
    result = {
        "run": str(run), "task": report["task"], "split": a.split, "examples": len(ds), "max_length": n,
        "batch_size": a.batch_size, "retention": list(power.retention),
        "flop_bound": flop_bound(power.config, list(power.retention), n),
        "pytorch_report_accuracy": {"baseline": report["baseline"]["metrics"].get(a.split),
                                    "power_bert": report["power_bert"]["metrics"].get(a.split)},
        "models": rows, "rounds": a.rounds,
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                     "power_bert_ops": power_bert_ops.__version__},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "command": f"python bench/bench_export_accuracy.py --run {a.run} --out {a.out}",
    }
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"{report['task']} {a.split} ({len(ds)} examples, N={n}, batch {a.batch_size}), ONNX Runtime:")
    for name, r in rows.items():
        print(f"  {name:16s} accuracy {r['accuracy']:.4f}  {r['seconds']:.3f} s/pass  "
              f"{r['speedup_vs_baseline_fp32']:.2f}x the fp32 baseline")
    print(f"  FLOP bound {result['flop_bound']:.2f}x; written to {a.out}")


if __name__ == "__main__":
    main()
