"""GPU benchmark of the PoWER-BERT model (BERT-base configuration, random weights) against
Hugging Face BertForSequenceClassification with SDPA, same dtype, batch and N, in one run.

    python bench/bench_model_gpu.py --out bench/results/model_gpu.json   # + model_gpu.png

Rows: batch 128 fp16 at N=256 with the paper's RTE configuration and at N in {64, 128, 512}
with configurations whose FLOP bound is about 2x, 3x and 4.5x; batch 1 with torch.compile
(mode="reduce-overhead": CUDA graphs); full mode against HF. Each row reports the measured
speed-up, the SPEC 3 FLOP bound and their ratio; the plot shows speed-up against bound.
Issue targets: >= 0.9 x bound at batch 128; >= 0.7 x bound at batch 1 with CUDA graphs;
full mode <= 1.10x HF's time. Padding to N (the speed-up is defined at fixed N).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_timing import environment, median_ms, write_report  # noqa: E402

from power_bert_ops.flops import flop_bound  # noqa: E402
from power_bert_ops.modeling import PowerBertForSequenceClassification  # noqa: E402

RTE = [153, 125, 111, 105, 85, 80, 72, 48, 35, 27, 22, 5]


def config_for_bound(n: int, target: float, dims) -> list[int]:
    """A geometric retention configuration ℓ_j = ceil(n·r^j) whose FLOP bound is closest to target."""
    layers = dims[1]
    lo, hi, best = 0.0, 1.0, [n] * layers
    for _ in range(40):
        r = (lo + hi) / 2
        ell = [max(1, min(n, math.ceil(n * r ** (j + 1)))) for j in range(layers)]
        if flop_bound(dims, ell, n) > target:
            lo = r
        else:
            hi, best = r, ell
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="a tiny model and sizes, to check the script (any device)")
    ap.add_argument("--out", default="bench/results/model_gpu.json")
    args = ap.parse_args(argv)
    dev = args.device
    from transformers import BertConfig, BertForSequenceClassification

    if args.smoke:
        cfg = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100, max_position_embeddings=64)
        dtype, rows_spec = torch.float32, [(4, 32, [20, 12, 8, 4], False), (1, 16, None, False)]
    else:
        cfg = BertConfig()  # bert-base-uncased's configuration: 12 x 768, 12 heads, 3072
        dtype = torch.float16
        rows_spec = [(128, 256, RTE, False)] + [(128, n, ("bound", t), False) for n, t in ((64, 2.0), (128, 3.0), (512, 4.5))]
        rows_spec += [(1, 256, RTE, True), (1, 128, ("bound", 3.0), True)]
    dims = (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size)
    cfg.num_labels = 2
    torch.manual_seed(0)
    hf = BertForSequenceClassification(cfg).to(dev, dtype).eval()
    hf.config._attn_implementation = "sdpa"
    power = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(hf)).eval()  # same weights
    rows = []
    for B, N, spec, graphs in rows_spec:
        ell = config_for_bound(N, spec[1], dims) if isinstance(spec, tuple) else (spec or [N] * dims[1])
        mode = "full" if spec is None else "hard"
        power.set_mode(mode, retention=ell if mode == "hard" else None)
        ids = torch.randint(0, cfg.vocab_size, (B, N), device=dev)
        mask = torch.ones(B, N, dtype=torch.long, device=dev)
        run_hf = lambda: hf(input_ids=ids, attention_mask=mask).logits
        run_pb = lambda: power(input_ids=ids, attention_mask=mask).logits
        if graphs and dev == "cuda":
            run_hf = torch.compile(run_hf, mode="reduce-overhead")
            run_pb = torch.compile(run_pb, mode="reduce-overhead")
        with torch.inference_mode():
            t_hf, t_pb = median_ms(run_hf, dev), median_ms(run_pb, dev)
        bound = flop_bound(dims, ell, N)
        rows.append(dict(batch=B, N=N, mode=mode, cuda_graphs=graphs and dev == "cuda", retention=ell,
                         hf_ms=f"{t_hf:.3f}", power_ms=f"{t_pb:.3f}", speedup=f"{t_hf / t_pb:.2f}x",
                         flop_bound=f"{bound:.2f}x", ratio=f"{t_hf / t_pb / bound:.2f}"))
    env = environment(dev)
    env["model"] = f"BERT (D={dims[0]}, L={dims[1]}, F={dims[2]}) random weights, {dtype}"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cols = ["batch", "N", "mode", "cuda_graphs", "hf_ms", "power_ms", "speedup", "flop_bound", "ratio", "retention"]
    print(env["model"] + "\n" + write_report(args.out, env, rows, cols))
    plot(rows, os.path.splitext(args.out)[0] + ".png", env)


def plot(rows, path, env):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    hard = [r for r in rows if r["mode"] == "hard"]
    xs = [float(r["flop_bound"][:-1]) for r in hard]
    ys = [float(r["speedup"][:-1]) for r in hard]
    ax.scatter(xs, ys, c=["tab:orange" if r["batch"] == 1 else "tab:blue" for r in hard])
    for r, x, y in zip(hard, xs, ys):
        ax.annotate(f"B={r['batch']} N={r['N']}", (x, y), fontsize=7, textcoords="offset points", xytext=(4, -8))
    top = max(xs + ys + [1.0]) * 1.1
    ax.plot([1, top], [1, top], "k--", lw=1, label="speed-up = FLOP bound")
    ax.plot([1, top], [0.9, 0.9 * top], ":", color="gray", lw=1, label="0.9 x bound")
    ax.set_xlabel("FLOP bound (SPEC 3)")
    ax.set_ylabel("measured speed-up over HF (SDPA)")
    ax.set_title(f"{env['device']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
