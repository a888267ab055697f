#!/usr/bin/env python3
"""Break-even of one elimination on the GPU: bench/bench_break_even.py's question,
configurations, interpolation, plot and JSON layout, timed on CUDA.

bench/bench_break_even.py times on the CPU only (perf_counter, no --device): this wrapper reuses
its ``configurations``, ``break_even`` and ``plot`` and replaces the timing: the packaged
all-MiniLM-L6-v2 with its own weights on CUDA in ``--dtype`` (default fp16), every token real;
in each of ``--rounds`` interleaved rounds every model ('hf' with SDPA, 'keep_all', one
elimination at layers 1, L/2, L to each keep fraction) gets a ``triton.testing.do_bench``
median (CUDA events, after warm-up); a model's time is the median over the rounds. Shapes: the
CPU run's (N=64 B=64, N=512 B=8) for comparison, and GPU-sized batches (N=64 B=512, N=512 B=64).

    python3 scripts/gpu_break_even.py --output bench/results/break_even_gpu.json   # + .png beside it
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

SHAPES = ((64, 64), (512, 8), (64, 512), (512, 64))  # (N, B)
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def shape_result(n: int, batch: int, rounds: int, layers: int, configs: dict[str, list[int]],
                 med: dict[str, float], bounds: dict[str, float]) -> dict:
    """One shape's entry of the JSON, laid out as bench_break_even.run_shape lays it out.
    ``med``: median seconds per model name ('hf' and every configuration)."""
    from bench_break_even import break_even

    rows = [{"name": name, "retention": ell, "flop_bound": bounds[name], "seconds": med[name],
             "speedup_over_hf": med["hf"] / med[name], "speedup_over_keep_all": med["keep_all"] / med[name]}
            for name, ell in configs.items()]
    per_layer = {}
    for j in sorted({1, layers // 2, layers}):
        pts = sorted((float(r["name"].split("_f")[1]), r["speedup_over_keep_all"]) for r in rows
                     if r["name"].startswith(f"j{j}_"))
        per_layer[j] = {"break_even_keep": break_even(pts), "points": pts}
    return {"n": n, "batch": batch, "rounds": rounds, "hf_seconds": med["hf"],
            "keep_all_over_hf": med["hf"] / med["keep_all"], "rows": rows, "break_even": per_layer}


def run_shape(hf, n: int, batch: int, rounds: int, dtype) -> dict:
    import torch
    import triton.testing
    from bench_break_even import configurations

    from power_bert_ops import PowerBertForSequenceClassification
    from power_bert_ops.flops import flop_bound

    layers = hf.config.num_hidden_layers
    configs = configurations(n, layers)
    models = {"hf": hf}
    for name, ell in configs.items():
        models[name] = PowerBertForSequenceClassification.from_hf_model(
            copy.deepcopy(hf), retention=ell, sequence_length=n).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, hf.config.vocab_size, (batch, n), generator=g).cuda()
    mask = torch.ones_like(ids)
    times = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(rounds):
            for k, m in models.items():
                ms = triton.testing.do_bench(lambda m=m: m(input_ids=ids, attention_mask=mask), warmup=10, rep=25,
                                             return_mode="median")
                times[k].append(ms * 1e-3)
    del models
    torch.cuda.empty_cache()
    med = {k: statistics.median(v) for k, v in times.items()}
    bounds = {name: flop_bound(hf.config, ell, n) for name, ell in configs.items()}
    return shape_result(n, batch, rounds, layers, configs, med, bounds)


def meta(dtype_name: str, rounds: int) -> dict:
    import torch
    import transformers

    return {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
            "dtype": dtype_name, "machine": platform.processor() or platform.machine(),
            "timing": f"triton.testing.do_bench medians (warmup 10 ms, rep 25 ms), median of {rounds} "
                      "interleaved rounds",
            "command": " ".join(["python", *sys.argv])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", required=True, help="JSON file; the plot is written beside it (.png)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    ap.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    a = ap.parse_args(argv)
    import torch
    from bench_break_even import plot
    from transformers import AutoModelForSequenceClassification

    from power_bert_ops.assets import packaged_model_dir

    if not torch.cuda.is_available():
        print("gpu_break_even: no CUDA device (bench/bench_break_even.py is the CPU measurement)", file=sys.stderr)
        return 2
    dtype = getattr(torch, DTYPES[a.dtype])
    model_dir = Path(a.model) if a.model else packaged_model_dir()
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa", dtype=dtype)
    hf = hf.cuda().eval()
    results = []
    for n, batch in SHAPES:
        res = run_shape(hf, n, batch, a.rounds, dtype)
        results.append(res)
        print(f"N={n} B={batch}: hf {res['hf_seconds'] * 1e3:.3f} ms, keep_all/hf speed {res['keep_all_over_hf']:.3f}; "
              + "; ".join(f"layer {j}: break-even keep {info['break_even_keep']}"
                          for j, info in res["break_even"].items()), flush=True)
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta(a.dtype, a.rounds), "results": results}, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"written {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
