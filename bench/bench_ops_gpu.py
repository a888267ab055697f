"""GPU benchmark of the op library: fused extract (CUDA and Triton) against the PyTorch
composition, plus extract_scored / soft_extract / significance, each with its fraction of the
memory floor (bytes it must move / this device's measured copy bandwidth).

    python bench/bench_ops_gpu.py --out bench/results/ops_gpu.json

Issue targets (H100, fp16, H=12, D=768, k=N/2, B in {1, 32, 128}, N in {128, 512}): fused
extract >= 70% of measured bandwidth at B >= 32 and >= 3x the composition at every size. Both
GPU kernels of extract run through the one op, torch.ops.power_bert.extract: the C++ CUDA kernel
(the default where it was built) and the Triton one, forced for the timing
(power_bert_ops.testing.force_kernels). If Triton is the faster, POWER_BERT_GPU_BACKEND=triton
makes it the default (power_bert_ops/_backend.py).
"""
from __future__ import annotations

import contextlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compositions  # noqa: E402
from gpu_timing import (  # noqa: E402
    bench_dtype, environment, measured_bandwidth_gbs, median_ms, parse_bench_args, write_report,
)

import power_bert_ops  # noqa: E402
from power_bert_ops.testing import OPS, force_kernels  # noqa: E402

ops = torch.ops.power_bert


# (heads H, hidden size D, [(batch B, length N)]): the measured sizes and the --smoke ones
SIZES = (12, 768, [(B, N) for B in (1, 32, 128) for N in (128, 512)])
SMOKE_SIZES = (2, 16, [(1, 16), (2, 33)])

def make(B, H, N, D, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    lengths = torch.randint(N // 2, N + 1, (B,), generator=g, device=device)
    lengths[0] = N
    mask = (torch.arange(N, device=device)[None, :] < lengths[:, None]).long()
    logits = torch.randn(B, H, N, N, generator=g, device=device, dtype=dtype)
    attn = torch.softmax(logits.masked_fill(~mask.bool()[:, None, None, :], float("-inf")), dim=-1)
    hidden = torch.randn(B, N, D, generator=g, device=device, dtype=dtype)
    scores = torch.randn(B, N, generator=g, device=device)
    retention = torch.rand(N, generator=g, device=device)
    return hidden, attn, mask, scores, retention


def main(argv=None):
    args = parse_bench_args(argv, __doc__, "bench/results/ops_gpu.json")
    dev = args.device
    dtype = bench_dtype(dev)
    H, D, sizes = SMOKE_SIZES if args.smoke else SIZES
    bw = measured_bandwidth_gbs(dev)
    impls = {"composition": None}
    if dev == "cpu" or power_bert_ops.built_with_cuda():
        impls["cuda" if dev == "cuda" else "native"] = "native"
    if power_bert_ops.triton_available() and (dev == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
        impls["triton"] = "triton"
    rows = []
    esize = torch.finfo(dtype).bits // 8
    for B, N in sizes:
        k = max(1, N // 2)
        hidden, attn, mask, scores, retention = make(B, H, N, D, dtype, dev)
        floor_extract = B * H * N * N * esize + 2 * B * k * D * esize  # attn once, k rows in and out
        base = None
        for name, which in impls.items():
            swap = contextlib.nullcontext()
            if which is None:
                fn = lambda: compositions.extract(hidden, attn, mask, k)
            else:
                fn = lambda: ops.extract(hidden, attn, mask, k, True)
                if which == "triton":
                    swap = force_kernels("triton", torch.device(dev).type, OPS["extract"])
            with swap:
                ms = median_ms(fn, dev)
            base = ms if which is None else base
            rows.append(dict(op="extract", impl=name, B=B, N=N, ms=f"{ms:.4f}",
                             speedup=f"{base / ms:.2f}x", floor_frac=f"{floor_extract / (ms * 1e-3) / 1e9 / bw:.0%}"))
        for op, fn_ours, fn_comp, nbytes in (
            ("extract_scored", lambda: ops.extract_scored(hidden, scores, mask, k),
             lambda: compositions.extract_scored(hidden, scores, mask, k), 2 * B * k * D * esize),
            ("soft_extract", lambda: ops.soft_extract(hidden, scores, mask, retention),
             lambda: compositions.soft_extract(hidden, scores, mask, retention), 2 * B * N * D * esize),
            ("significance", lambda: ops.significance(attn, mask),
             lambda: compositions.significance(attn, mask), B * H * N * N * esize),
        ):
            if dev == "cuda" and not power_bert_ops.built_with_cuda():
                break
            ms_c = median_ms(fn_comp, dev)
            ms_o = median_ms(fn_ours, dev)
            rows.append(dict(op=op, impl="composition", B=B, N=N, ms=f"{ms_c:.4f}", speedup="1.00x",
                             floor_frac=f"{nbytes / (ms_c * 1e-3) / 1e9 / bw:.0%}"))
            rows.append(dict(op=op, impl="power_bert", B=B, N=N, ms=f"{ms_o:.4f}", speedup=f"{ms_c / ms_o:.2f}x",
                             floor_frac=f"{nbytes / (ms_o * 1e-3) / 1e9 / bw:.0%}"))
    env = environment(dev)
    env["measured_bandwidth_GBps"] = round(bw, 1)
    env["shape"] = f"H={H} D={D} k=N/2 dtype={dtype}"
    text = write_report(args.out, env, rows, ["op", "impl", "B", "N", "ms", "speedup", "floor_frac"])
    print(f"measured bandwidth: {bw:.0f} GB/s; {env['shape']}\n" + text)


if __name__ == "__main__":
    main()
