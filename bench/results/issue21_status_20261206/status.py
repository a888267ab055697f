"""Issue 21's accuracy targets against the runs with today's defaults: status.md and status.png.

    python bench/results/issue21_status_20261206/status.py

Each point: its report.json (test and dev metric of the fine-tuned baseline and of PoWER-BERT, ℓ,
FLOP bound, measured speed-up against bucketed dense), the target's tolerance in points, and, where
`power-bert evaluate` scored more test examples than the report, that figure in place of the
report's test metric.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent

# label, report.json, tolerance (points), test examples, `power-bert evaluate` on more test examples than the
# report's: (baseline, PoWER-BERT, examples) or None
POINTS = [
    ("Rotten Tomatoes full split, 4.5x", "rt_high_20261205e/l8_4.5.report.json", 1.0, 1280, None),
    ("Rotten Tomatoes full split, 6x", "rt_high_20261205e/l8_6.report.json", 2.0, 1280, None),
    ("Rotten Tomatoes 3,000 (main job), 4.5x", "hidden_distill_20261206/rt_4.5.report.json", 1.0, 1280, None),
    ("Rotten Tomatoes 3,000 (main job), 6x", "hidden_distill_20261206/rt_6.report.json", 2.0, 1280, None),
    ("R8 N=256, 800 docs, 6x", "copies_long_20261206/r8_800_c4/report.json", 1.0, 2189, None),
    ("R8 N=256, 2,000 docs, 6x", "copies_long_20261206/r8_2000_c4/report.json", 1.0, 2189, None),
    ("20 Newsgroups N=256, 800 docs, 6x", "copies_long_20261206/ng6_c4/report.json", 1.0, 2000,
     (0.7060, 0.7380, 2000)),
    ("20 Newsgroups N=512, 800 docs, 6x (no copies)", "ng512_relative_6x/report.json", 1.0, 500, None),
]


def load():
    rows = []
    for label, rel, tol, n, override in POINTS:
        path = RESULTS / rel
        if not path.is_file():
            print(f"skipped {label}: {path} not found")
            continue
        r = json.loads(path.read_text())
        b, p = r["baseline"]["metrics"], r["power_bert"]["metrics"]
        name = r["baseline"]["metric"]["name"]
        test_b, test_p = b["test"][name], p["test"][name]
        if override is not None:
            test_b = override[0]
            test_p = override[1]
            n = override[2]
        rows.append(dict(label=label, tol=tol, n=n, test_b=test_b, test_p=test_p,
                         dev_b=b["eval"][name], dev_p=p["eval"][name], retention=r["retention"],
                         bound=r["flop_bound"], measured=r["measured_speedup"], threads=r["speed"]["threads"]))
    return rows


def main() -> None:
    rows = load()
    md = ["| point | test: baseline → PoWER-BERT (Δ, points) | dev Δ | target: within | met on test | ℓ | "
          "FLOP bound / measured (bucketed dense) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        dt, dd = 100 * (r["test_p"] - r["test_b"]), 100 * (r["dev_p"] - r["dev_b"])
        se = 100 * (r["test_b"] * (1 - r["test_b"]) / r["n"]) ** 0.5
        md.append(f"| {r['label']} | {r['test_b']:.4f} → {r['test_p']:.4f} ({dt:+.2f}; one s.e. {se:.1f} on {r['n']}) | "
                  f"{dd:+.2f} | {r['tol']:.1f} | {'yes' if dt >= -r['tol'] else 'no'} | {r['retention']} | "
                  f"{r['bound']:.2f}x / {r['measured']:.2f}x ({r['threads']} thread{'s' if r['threads'] > 1 else ''}, in the run) |")
    (HERE / "status.md").write_text("\n".join(md) + "\n")
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.5 * len(rows)))
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        dt, dd = 100 * (r["test_p"] - r["test_b"]), 100 * (r["dev_p"] - r["dev_b"])
        ax.barh(y, dt, height=0.55, color="#3a7dc9" if dt >= -r["tol"] else "#c96a3a")
        ax.plot([dd], [y], "kd", markersize=5)
        ax.plot([-r["tol"]] * 2, [y - 0.35, y + 0.35], color="#444444", linestyle="--", linewidth=1.2)
    ax.set_yticks(ys, [r["label"] for r in rows], fontsize=8)
    ax.axvline(0, color="#777777", linewidth=1)
    ax.set_xlabel("change against the fine-tuned baseline, points: bar test, ◆ dev; dashed: the target's limit",
                  fontsize=8)
    ax.set_title("Issue 21's targets with today's defaults (relative retention)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "status.png", dpi=120)
    print(f"written {HERE / 'status.md'} and {HERE / 'status.png'}")


if __name__ == "__main__":
    main()
