"""Plots shared by the model benchmarks: measured speed-up against the SPEC 3 FLOP bound."""
from __future__ import annotations


def plot_speedup_vs_bound(points, path: str, title: str, target_ratio: float,
                          ylabel: str = "measured speed-up over HF (SDPA)") -> None:
    """points: dicts with ``bound``, ``speedup``, ``label`` and optional ``highlight`` (drawn in a
    second colour, e.g. batch 1). Writes a PNG with the speed-up = bound diagonal and the issue's
    target line (target_ratio x bound)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    xs = [p["bound"] for p in points]
    ys = [p["speedup"] for p in points]
    ax.scatter(xs, ys, c=["tab:orange" if p.get("highlight") else "tab:blue" for p in points], zorder=3)
    for p in points:
        ax.annotate(p["label"], (p["bound"], p["speedup"]), fontsize=7, textcoords="offset points", xytext=(4, -8))
    top = max(xs + ys + [1.0]) * 1.1
    ax.plot([1, top], [1, top], "k--", lw=1, label="speed-up = FLOP bound")
    ax.plot([1, top], [target_ratio, target_ratio * top], ":", color="gray", lw=1, label=f"{target_ratio} x bound (target)")
    ax.set_xlim(1, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("FLOP bound (SPEC 3)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
