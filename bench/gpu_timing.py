"""Timing and bandwidth helpers shared by the GPU benchmark scripts.

On CUDA: ``triton.testing.do_bench`` (warm-up, CUDA events, median). On CPU (only for the
``--smoke`` runs that check the scripts themselves): median of perf_counter timings.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch


def median_ms(fn, device: str, rep_ms: int = 100) -> float:
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))
    fn()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measured_bandwidth_gbs(device: str) -> float:
    """Device memory bandwidth measured here: a 1 GiB device-to-device copy (read + write)."""
    nbytes = (1 << 30) if device == "cuda" else (64 << 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def environment(device: str) -> dict:
    import power_bert_ops

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "power_bert_cuda_kernels": power_bert_ops.built_with_cuda(),
        "python": platform.python_version(),
        "commit": commit,
        "command": " ".join([sys.executable.rsplit("/", 1)[-1]] + sys.argv),
    }


def parse_bench_args(argv, description: str, out: str,
                     smoke_help: str = "tiny sizes, to check the script itself (any device)") -> argparse.Namespace:
    """The options every GPU benchmark takes: --device (default cuda), --smoke and --out (default `out`)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help=smoke_help)
    ap.add_argument("--out", default=out)
    return ap.parse_args(argv)


def bench_dtype(device: str) -> torch.dtype:
    """float16 on CUDA; float32 elsewhere (the CPU --smoke runs)."""
    return torch.float16 if device == "cuda" else torch.float32


def write_report(path_json: str, env: dict, rows: list[dict], columns: list[str]) -> str:
    """Writes env and rows to path_json (creating its folder) and returns a Markdown report."""
    os.makedirs(os.path.dirname(os.path.abspath(path_json)), exist_ok=True)
    with open(path_json, "w") as f:
        json.dump({"environment": env, "rows": rows}, f, indent=1)
    head = (
        f"- date: {env['date']}\n- device: {env['device']}; torch {env['torch']} (CUDA {env['cuda']}), "
        f"triton {env['triton']}, Python {env['python']}, commit {env['commit']}\n- command: `{env['command']}`\n\n"
    )
    table = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    for r in rows:
        table += "| " + " | ".join(str(r.get(c, "")) for c in columns) + " |\n"
    return head + table
