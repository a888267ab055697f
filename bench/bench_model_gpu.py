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

import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_timing import environment, median_ms, parse_bench_args, write_report  # noqa: E402
from plots import plot_speedup_vs_bound  # noqa: E402

from power_bert_ops.flops import flop_bound, retention_for_bound  # noqa: E402
from power_bert_ops.modeling import PowerBertForSequenceClassification  # noqa: E402

RTE = [153, 125, 111, 105, 85, 80, 72, 48, 35, 27, 22, 5]


def main(argv=None):
    args = parse_bench_args(argv, __doc__, "bench/results/model_gpu.json",
                            "a tiny model and sizes, to check the script (any device)")
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
        ell = retention_for_bound(dims, N, spec[1]) if isinstance(spec, tuple) else (spec or [N] * dims[1])
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
    cols = ["batch", "N", "mode", "cuda_graphs", "hf_ms", "power_ms", "speedup", "flop_bound", "ratio", "retention"]
    print(env["model"] + "\n" + write_report(args.out, env, rows, cols))
    plot(rows, os.path.splitext(args.out)[0] + ".png", env)


def plot(rows, path, env):
    hard = [r for r in rows if r["mode"] == "hard"]
    points = [dict(bound=float(r["flop_bound"][:-1]), speedup=float(r["speedup"][:-1]), label=f"B={r['batch']} N={r['N']}",
                   highlight=r["batch"] == 1) for r in hard]
    plot_speedup_vs_bound(points, path, env["device"], target_ratio=0.9)


if __name__ == "__main__":
    main()
