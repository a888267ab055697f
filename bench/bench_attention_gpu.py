"""GPU benchmark of power_bert.attention (its CUDA kernels are Triton: attention + significance
without the N x N matrix) against scaled_dot_product_attention alone and eager attention +
power_bert.significance. In --smoke mode on the CPU the Triton kernels run interpreted, swapped in
for the CPU key (power_bert_ops.testing.force_kernels).

    python bench/bench_attention_gpu.py --out bench/results/attention_gpu.json

Issue targets (H100, fp16, H=12, d=64, B in {32, 128}, N in {128, 256, 512}, padding mask):
forward with significance <= 1.35x SDPA's time; >= 2x faster than eager attention +
significance; backward <= 1.5x SDPA's backward.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_timing import bench_dtype, environment, median_ms, parse_bench_args, write_report  # noqa: E402

import power_bert_ops  # noqa: E402
from power_bert_ops.testing import OPS, force_kernels  # noqa: E402

ops = torch.ops.power_bert


# (heads H, head size d, [(batch B, length N)]): the measured sizes and the --smoke ones
SIZES = (12, 64, [(B, N) for B in (32, 128) for N in (128, 256, 512)])
SMOKE_SIZES = (2, 32, [(1, 16), (2, 33)])

def measure(B, N, H, d, dtype, dev):
    """One row: forward and backward times of ours, SDPA and eager attention + significance."""
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, H, N, d, generator=g, device=dev, dtype=dtype) for _ in range(3))
    lengths = torch.randint(N // 2, N + 1, (B,), generator=g, device=dev)
    mask = (torch.arange(N, device=dev)[None, :] < lengths[:, None]).long()
    bool_mask = mask.bool()[:, None, None, :]
    seed = torch.zeros(1, dtype=torch.int64, device=dev)

    def ours(need_sig=True):
        return ops._attention_forward(q, k, v, mask, 0.0, need_sig, True, seed)

    def eager():
        bias = torch.zeros_like(bool_mask, dtype=dtype).masked_fill(~bool_mask, float("-inf"))
        probs = torch.softmax((q @ k.transpose(-1, -2)) * d**-0.5 + bias, dim=-1)
        return probs @ v, power_bert_ops.significance(probs, mask)

    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask)
    t_sdpa, t_ours, t_nosig, t_eager = (median_ms(f, dev) for f in (sdpa, ours, lambda: ours(False), eager))
    # backward: SDPA's vs ours, same incoming gradient
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    o_sdpa = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=bool_mask)
    o_ours = ops._attention_forward(qg, kg, vg, mask, 0.0, False, True, seed)[0]
    grad = torch.randn_like(o_sdpa)
    tb_sdpa = median_ms(lambda: torch.autograd.grad(o_sdpa, (qg, kg, vg), grad, retain_graph=True), dev)
    tb_ours = median_ms(lambda: torch.autograd.grad(o_ours, (qg, kg, vg), grad, retain_graph=True), dev)
    return dict(
        B=B, N=N, sdpa_ms=f"{t_sdpa:.4f}", ours_ms=f"{t_ours:.4f}", ours_nosig_ms=f"{t_nosig:.4f}",
        eager_sig_ms=f"{t_eager:.4f}", fwd_vs_sdpa=f"{t_ours / t_sdpa:.2f}x", speedup_vs_eager=f"{t_eager / t_ours:.2f}x",
        sdpa_bwd_ms=f"{tb_sdpa:.4f}", ours_bwd_ms=f"{tb_ours:.4f}", bwd_vs_sdpa=f"{tb_ours / tb_sdpa:.2f}x",
    )


def main(argv=None):
    args = parse_bench_args(argv, __doc__, "bench/results/attention_gpu.json")
    dev = args.device
    dtype = bench_dtype(dev)
    H, d, sizes = SMOKE_SIZES if args.smoke else SIZES
    rows = []
    with force_kernels("triton", torch.device(dev).type, OPS["attention"]):
        for B, N in sizes:
            rows.append(measure(B, N, H, d, dtype, dev))
    env = environment(dev)
    env["shape"] = f"H={H} d={d} dtype={dtype}, key padding lengths in [N/2, N]"
    cols = ["B", "N", "sdpa_ms", "ours_ms", "ours_nosig_ms", "eager_sig_ms", "fwd_vs_sdpa", "speedup_vs_eager",
            "sdpa_bwd_ms", "ours_bwd_ms", "bwd_vs_sdpa"]
    print(env["shape"] + "\n" + write_report(args.out, env, rows, cols))


if __name__ == "__main__":
    main()
