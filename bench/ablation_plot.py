"""Table and plot of an ablation over finished runs: each run's change of the test metric against
its own baseline, with its FLOP bound against dense on length-bucketed batches.

    python bench/ablation_plot.py --out bench/results/rt_ablation/ablation \
        "defaults, 6x=runs/rt_hi/target_6x" "no search floor, 6x=runs/abl6_nofloor" ...

Each argument is ``label=run folder`` (a folder with report.json; the label may hold ``=``, the
folder is what follows the last one). Writes ``<out>.md`` (a markdown
table: baseline, metric and change against it, ℓ, the search's soft bound and jump, the epochs
each stage kept, bound and measured speed-up against bucketed and padded dense) and ``<out>.png``.
"""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from power_bert_ops.training.report import epochs_kept  # noqa: E402


def _change(r: dict) -> float:
    """The run's test metric against its own baseline, in points."""
    return 100 * (r["power_bert"]["metric"]["value"] - r["baseline"]["metric"]["value"])


def _row(label: str, r: dict) -> str:
    b, p, s = r["baseline"]["metric"], r["power_bert"]["metric"], r.get("search") or {}
    soft = f"{s['soft_bound_final']:.2f}x / x{s['projection_jump']:.2f}" if "projection_jump" in s else "-"
    return (f"| {label} | {b['value']:.4f} | {p['value']:.4f} ({_change(r):+.1f}) | {r['retention']} | {soft} | "
            f"{epochs_kept(r, 'search')} / {epochs_kept(r, 'retrain')} | {r['measured_speedup']:.2f}x / "
            f"{r['flop_bound']:.2f}x | {r['padded']['measured_speedup']:.2f}x / {r['padded']['flop_bound']:.2f}x |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="label=run folder")
    ap.add_argument("--out", required=True, type=Path, help="path without suffix for the .md and .png")
    a = ap.parse_args(argv)
    runs = []
    for item in a.runs:
        label, _, folder = item.rpartition("=")
        if not label or not folder:
            ap.error(f"run {item!r}: expected label=run folder")
        report = Path(folder) / "report.json"
        if not report.is_file():
            ap.error(f"run {item!r}: {report} not found (a finished run's folder holds report.json)")
        runs.append((label, json.loads(report.read_text())))
    first = runs[0][1]
    b = first["baseline"]["metric"]
    shared = len({(r["task"], r["max_length"], r["baseline"]["metric"]["value"]) for _, r in runs}) == 1
    against = f"the baseline {b['value']:.4f}" if shared else "each run's own baseline"
    lines = [f"{b['name']} ({b['split']}) against {against}. Speed-ups: measured / FLOP bound.", "",
             f"| run | baseline | {b['name']} (points vs baseline) | ℓ | search: soft bound / jump | epochs kept: "
             "search / retrain (↑ still rising) | bucketed dense | padded to N |", "|---|---|---|---|---|---|---|---|"]
    lines += [_row(label, r) for label, r in runs]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * len(runs)))
    deltas = [_change(r) for _, r in runs]
    ys = list(range(len(runs)))[::-1]
    ax.barh(ys, deltas, color=["#3a7dc9" if d >= -1 else "#c96a3a" for d in deltas], height=0.6)
    for y, d, (_, r) in zip(ys, deltas, runs):
        ax.annotate(f"{d:+.1f} at {r['flop_bound']:.2f}x (measured {r['measured_speedup']:.2f}x)", (max(d, 0), y),
                    xytext=(4, 0), textcoords="offset points", ha="left", va="center", fontsize=8)
    ax.set_yticks(ys, [label for label, _ in runs], fontsize=8)
    ax.axvline(0, color="#777777", linewidth=1)
    ax.axvline(-1, color="#777777", linestyle=":", linewidth=1)
    lo, hi = min(deltas + [0]), max(deltas + [0])
    ax.set_xlim(lo * 1.05 - 0.5, hi + 1.6 * max(hi - lo, 2) + 1)  # the labels right of each bar's end
    ax.set_xlabel(f"{b['name']} ({b['split']}) change against {against}, points\n"
                  "(bound: FLOP bound against bucketed dense)", fontsize=8)
    tasks = dict.fromkeys(f"{r['task']}, N = {r['max_length']}" for _, r in runs)
    ax.set_title(textwrap.fill(f"{'; '.join(tasks)}: ablation", 60), fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out.with_suffix(".png"), dpi=120)
    print(f"written {a.out.with_suffix('.md')} and {a.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
