"""Break-even of one elimination: from which keep fraction does a layer that eliminates rows
(significance + extract) stop paying for itself?

For the packaged all-MiniLM-L6-v2 (6 layers, hidden 384) with its own weights, fp32, every token
real, the script times in interleaved rounds, all in one run:

* ``hf``: the Hugging Face model with SDPA attention (the baseline of every speed-up we report);
* ``keep_all``: PoWER-BERT with ℓ = [N] * L (no layer eliminates);
* ``j<J>_f<F>``: one elimination, at layer J, to round(F·N) rows, kept by every later layer
  (ℓ = [N] * (J-1) + [round(F·N)] * (L-J+1)), for J in {1, L/2, L} and F from 0.5 to 0.98.

A layer eliminating at keep fraction F pays significance and extract and saves (1 - F) of the
rows of its own W_o/FFN and of everything after it; the last layer (J = L) saves the least, so its
break-even is the highest. The script prints each configuration's speed-up over ``hf`` and over
``keep_all`` with its FLOP bound, the break-even per J (the keep fraction where the speed-up over
``keep_all`` crosses 1, linearly interpolated), and writes JSON plus a plot.

    python bench/bench_break_even.py --output bench/results/break_even_cpu.json

Speed-ups are ratios of medians over the rounds, measured in the same run; compare only within
one run (this VM's speed varies by up to 2x between runs).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForSequenceClassification

from power_bert_ops import PowerBertForSequenceClassification
from power_bert_ops.assets import packaged_model_dir
from power_bert_ops.flops import flop_bound

FRACTIONS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
SHAPES = ((64, 64), (512, 8))  # (N, B): the main job's N and 20 Newsgroups'


def configurations(n: int, layers: int) -> dict[str, list[int]]:
    """Name -> ℓ: keep_all and one elimination at layers 1, L/2 and L to each fraction."""
    out = {"keep_all": [n] * layers}
    for j in sorted({1, layers // 2, layers}):
        for f in FRACTIONS:
            k = max(1, round(f * n))
            out[f"j{j}_f{f:g}"] = [n] * (j - 1) + [k] * (layers - j + 1)
    return out


def time_once(model, ids, mask) -> float:
    t = time.perf_counter()
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - t


def break_even(points: list[tuple[float, float]]) -> float | None:
    """The keep fraction where speed-up over keep_all crosses 1, interpolated between measured
    fractions (points sorted by fraction); None when it never drops below 1."""
    for (f0, s0), (f1, s1) in zip(points, points[1:]):
        if s0 >= 1.0 > s1:
            return f0 + (f1 - f0) * (s0 - 1.0) / (s0 - s1)
    return None if points[-1][1] >= 1.0 else points[0][0]


def run_shape(model_dir: Path, n: int, batch: int, rounds: int) -> dict:
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    layers = hf.config.num_hidden_layers
    configs = configurations(n, layers)
    models = {"hf": hf}
    for name, ell in configs.items():
        base = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa").eval()
        models[name] = PowerBertForSequenceClassification.from_hf_model(base, retention=ell, sequence_length=n).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, hf.config.vocab_size, (batch, n), generator=g)
    mask = torch.ones_like(ids)
    for m in models.values():  # warm-up
        time_once(m, ids, mask)
    times = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            times[k].append(time_once(m, ids, mask))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for name, ell in configs.items():
        rows.append({"name": name, "retention": ell, "flop_bound": flop_bound(hf.config, ell, n),
                     "seconds": med[name], "speedup_over_hf": med["hf"] / med[name],
                     "speedup_over_keep_all": med["keep_all"] / med[name]})
    per_layer = {}
    for j in sorted({1, layers // 2, layers}):
        pts = [(float(r["name"].split("_f")[1]), r["speedup_over_keep_all"]) for r in rows
               if r["name"].startswith(f"j{j}_")]
        pts.sort()
        per_layer[j] = {"break_even_keep": break_even(pts), "points": pts}
    return {"n": n, "batch": batch, "rounds": rounds, "hf_seconds": med["hf"],
            "keep_all_over_hf": med["hf"] / med["keep_all"], "rows": rows, "break_even": per_layer}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        for j, info in res["break_even"].items():
            f, s = zip(*info["points"])
            ax.plot(f, s, marker="o", label=f"eliminate at layer {j}")
        ax.axhline(1.0, color="grey", lw=1, ls="--", label="no elimination (keep all)")
        ax.set_xlabel("keep fraction at that layer (later layers keep the same rows)")
        ax.set_ylabel("speed-up over keeping every row")
        ax.set_title(f"N = {res['n']}, batch {res['batch']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", required=True, help="JSON file; the plot is written beside it (.png)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    a = ap.parse_args(argv)
    model_dir = Path(a.model) if a.model else packaged_model_dir()
    results = []
    for n, batch in SHAPES:
        res = run_shape(model_dir, n, batch, a.rounds)
        results.append(res)
        print(f"N={n} B={batch}: hf {res['hf_seconds'] * 1e3:.1f} ms, keep_all/hf speed {res['keep_all_over_hf']:.3f}")
        for r in res["rows"]:
            print(f"  {r['name']:<12} bound {r['flop_bound']:.3f}x  over hf {r['speedup_over_hf']:.3f}x  "
                  f"over keep_all {r['speedup_over_keep_all']:.3f}x")
        for j, info in res["break_even"].items():
            print(f"  break-even at layer {j}: keep fraction {info['break_even_keep']}")
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": f"cpu ({torch.get_num_threads()} threads)",
            "machine": platform.processor() or platform.machine(), "command": " ".join(["python", *sys.argv])}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"written {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
