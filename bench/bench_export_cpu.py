"""CPU benchmark of the exported artifacts: ONNX Runtime, PoWER-BERT against the
exported Hugging Face baseline, and against our own PyTorch CPU path, same inputs, one run.

    python bench/bench_export_cpu.py --out bench/results/export_cpu.json

Configurations (fp32, every token real, so the FLOP bound of SPEC 3 applies as computed):

* ``minilm``: the packaged all-MiniLM-L6-v2 (6 layers, hidden 384), B=32, N=64, retention
  [42, 32, 23, 10, 6, 4]; also ONNX Runtime's graph optimisation levels and the int8 (dynamic
  quantisation) PoWER model against the fp32 baseline.
* ``bert_base``: bert-base's configuration with random weights, B=8, N=256, the paper's RTE
  retention (153, 125, 111, 105, 85, 80, 72, 48, 35, 27, 22, 5).

Each round times every implementation back to back (interleaved, so background load on a shared
machine hits them alike); the JSON holds the per-implementation medians and the medians of the
per-round ratios. Issue target: ORT PoWER vs ORT baseline >= 0.8 x the FLOP bound.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from power_bert_ops.export import OnnxClassifier, export
from power_bert_ops.flops import flop_bound

MINILM_RETENTION = [42, 32, 23, 10, 6, 4]
RTE = [153, 125, 111, 105, 85, 80, 72, 48, 35, 27, 22, 5]


def _models(name: str):
    from transformers import AutoModelForSequenceClassification, BertConfig

    from power_bert_ops import PowerBertForSequenceClassification

    torch.manual_seed(0)
    if name == "minilm":
        from power_bert_ops.assets import packaged_model_dir

        d = packaged_model_dir()
        hf = AutoModelForSequenceClassification.from_pretrained(d, num_labels=2, attn_implementation="sdpa").eval()
        B, N, retention = 32, 64, MINILM_RETENTION
    else:
        cfg = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                         num_labels=2)
        hf = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="sdpa").eval()
        B, N, retention = 8, 256, RTE
    power = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(hf), retention=retention,
                                                             sequence_length=N).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, hf.config.vocab_size, (B, N), generator=g)
    ids[:, 0] = 101
    inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    return hf, power, inputs, B, N, retention


def _interleaved(fns: dict, rounds: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1e3)
    return times


def _ratio(times, num, den):
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def run_config(name: str, tmp: Path, rounds: int, threads: int) -> dict:
    hf, power, inputs, B, N, retention = _models(name)
    bound = flop_bound(hf.config, retention, N)
    t0 = time.perf_counter()
    hf_path = export(hf, tmp / f"{name}_hf.onnx", max_length=N, check=False)
    power_path = export(power, tmp / f"{name}_power.onnx", check=False)
    export_s = time.perf_counter() - t0
    ort_hf, ort_power = OnnxClassifier(hf_path, threads=threads), OnnxClassifier(power_path, threads=threads)
    kw = {"input_ids": inputs[0], "attention_mask": inputs[1], "token_type_ids": inputs[2]}

    def torch_run(m):
        def f():
            with torch.inference_mode():
                return m(**kw).logits
        return f

    fns = {
        "ort_hf": lambda: ort_hf(*inputs),
        "ort_power": lambda: ort_power(*inputs),
        "torch_hf": torch_run(hf),
        "torch_power": torch_run(power),
    }
    with torch.inference_mode():
        want_power, want_hf = power(**kw).logits.numpy(), hf(**kw).logits.numpy()
    diff_power = float(np.abs(ort_power(*inputs) - want_power).max())
    diff_hf = float(np.abs(ort_hf(*inputs) - want_hf).max())
    extra = {}
    if name == "minilm":
        # ONNX Runtime's graph optimisation levels at load (the saved files are 'basic'), and int8.
        for level in ("disable", "basic", "extended", "all"):
            fns[f"ort_hf_{level}"] = (lambda c: (lambda: c(*inputs)))(OnnxClassifier(hf_path, level, threads))
            fns[f"ort_power_{level}"] = (lambda c: (lambda: c(*inputs)))(OnnxClassifier(power_path, level, threads))
        int8_path = export(power, tmp / f"{name}_power_int8.onnx", quantize="int8", check=False)
        ort_int8 = OnnxClassifier(int8_path, threads=threads)
        fns["ort_power_int8"] = lambda: ort_int8(*inputs)
        got = ort_int8(*inputs)
        extra["int8_vs_fp32_power"] = {"max_abs_logit_diff": float(np.abs(got - want_power).max()),
                                       "argmax_agreement": float((got.argmax(-1) == want_power.argmax(-1)).mean())}
    times = _interleaved(fns, rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "config": name, "B": B, "N": N, "retention": retention, "layers": hf.config.num_hidden_layers,
        "hidden": hf.config.hidden_size, "flop_bound": bound, "rounds": rounds, "export_seconds": export_s,
        "median_ms": med, "times_ms": times,
        "ort_speedup_power_vs_hf": _ratio(times, "ort_hf", "ort_power"),
        "ort_fraction_of_bound": _ratio(times, "ort_hf", "ort_power") / bound,
        "torch_speedup_power_vs_hf": _ratio(times, "torch_hf", "torch_power"),
        "ort_power_vs_torch_power": _ratio(times, "torch_power", "ort_power"),
        "ort_hf_vs_torch_hf": _ratio(times, "torch_hf", "ort_hf"),
        "max_abs_logit_diff_ort_vs_torch": {"power": diff_power, "hf": diff_hf},
        **extra,
    }
    if name == "minilm":
        res["ort_levels_speedup_power_vs_hf"] = {
            lvl: _ratio(times, f"ort_hf_{lvl}", f"ort_power_{lvl}") for lvl in ("disable", "basic", "extended", "all")}
        res["int8_power_speedup_vs_fp32_hf"] = _ratio(times, "ort_hf", "ort_power_int8")
    return res


def environment(threads: int) -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    import transformers

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S UTC"), "cpu": cpu,
            "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__,
            "loadavg_start": os.getloadavg()}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"- date: {env['date']}; command: `{report['command']}`",
             f"- machine: {env['cpu']}; {env['cores']} cores, {env['threads']} threads (torch and ORT); "
             f"load average at start {env['loadavg_start'][0]:.1f}, at end {env['loadavg_end'][0]:.1f}",
             f"- versions: Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
             f"onnx {env['onnx']}, onnxscript {env['onnxscript']}, onnxruntime {env['onnxruntime']}", "",
             "| config | FLOP bound | ORT HF (ms) | ORT PoWER (ms) | ORT speed-up | fraction of bound | "
             "PyTorch PoWER (ms) | ORT PoWER vs PyTorch PoWER | PyTorch HF (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        m = r["median_ms"]
        lines.append(f"| {r['config']} B={r['B']} N={r['N']} | {r['flop_bound']:.2f}x | {m['ort_hf']:.1f} | "
                     f"{m['ort_power']:.1f} | {r['ort_speedup_power_vs_hf']:.2f}x | {r['ort_fraction_of_bound']:.2f} | "
                     f"{m['torch_power']:.1f} | {r['ort_power_vs_torch_power']:.2f}x | {m['torch_hf']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/export_cpu.json")
    p.add_argument("--configs", default="minilm,bert_base")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"command": "python bench/bench_export_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": environment(args.threads), "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            report["results"].append(run_config(name, Path(tmp), args.rounds, args.threads))
            print(json.dumps({k: v for k, v in report["results"][-1].items() if k != "times_ms"}, indent=1))
    report["environment"]["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
