"""What a ``power-bert run`` leaves behind: report.json (the fields the pipeline promises),
report.md (the same for people) and plots (tokens kept per layer; for a λ sweep, the
accuracy / speed-up trade-off like the paper's figure)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .._text import count_text  # noqa: E402
from ..flops import reference_length, rows_floor, rows_kept  # noqa: E402


def _save(fig, ax, path: Path, legend_loc: str = "best") -> None:
    ax.legend(loc=legend_loc, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def speed_lines(s: dict) -> list[str]:
    """Markdown lines of a speed record (:func:`.speed.speed_report`): the length-bucketed
    headline, then padded to N, each against its own FLOP bound."""
    from .speed import describe_speedup

    p = s["padded"]
    return [
        f"- speed-up against the dense model on length-bucketed batches ({bucket_text(s)}): "
        f"**{describe_speedup(s)}**; baseline "
        f"{s['baseline_seconds']:.3f} s, PoWER-BERT {s['power_bert_seconds']:.3f} s per pass",
        f"- both padded to N = {s['padded_length']} (the paper's setting): {describe_speedup(p)}; baseline "
        f"{p['baseline_seconds']:.3f} s, PoWER-BERT {p['power_bert_seconds']:.3f} s per pass",
        f"- timing: {count_text(s['examples'], 'eval example')}, batch {s['batch_size']}, {s['dtype']}, "
        f"{threads_text(s['threads'])}, median of {s['repeats']} passes{compile_text(s)}",
    ]


def bucket_text(s: dict) -> str:
    """How wide the bucketed batches were against the examples' real lengths: the FLOP bound
    counts each example at its real length, the dense model pays its batch's longest row."""
    real = f", for examples of {s['mean_length']:.1f}" if s.get("mean_length") is not None else ""
    return f"each cut to its longest row: {s['mean_batch_length']:.1f} tokens on average{real}"


def compile_text(s: dict) -> str:
    """'' for eager timings, else how the models were compiled."""
    if not s.get("compile"):
        return ""
    differ = s.get("compile_predictions_differ")
    predictions = ("" if differ is None else f", the predicted class differs in {differ} of the "
                   f"{s['compile_rows_checked']} rows checked: both models' shortest, longest and one padded batch")
    return (f"; both models under torch.compile (mode {s['compile']}, {s['compile_seconds']:.0f} s to compile and warm "
            f"up; logits within {s['compile_max_abs_diff']:.1e} of the eager models'{predictions})")


def write_report(out_dir: Path, report: dict) -> dict:
    """Writes report.json, report.md and retention.png into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    plot = out_dir / "retention.png"
    plot_retention(report, plot)
    (out_dir / "report.md").write_text(render_markdown(report, plot.name))
    return {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "plot": plot}


def threads_text(n: int) -> str:
    """'1 thread', '2 threads': the CPU threads a timing ran on."""
    return count_text(n, "thread")


def epochs_kept(r: dict, stage: str) -> str:
    """``3/5`` (epoch kept / epochs run) of a stage, with ``↑`` when its dev metric was still rising
    at the end; ``?`` for a report without the record."""
    rec = (r.get("training") or {}).get(stage)
    if not rec or rec.get("epoch_kept") is None:
        return "?"
    return f"{rec['epoch_kept']:.3g}/{rec['epochs_run']:.3g}" + (" ↑" if rec.get("still_rising") else "")


def search_line(r: dict) -> str | None:
    """What the search reached: its soft FLOP bound, steps (and extension), and the projection's jump."""
    s = r.get("search") or {}
    if "soft_bound_final" not in s or "projection_jump" not in s:
        return None
    line = f"- search: soft FLOP bound reached **{s['soft_bound_final']:.2f}x** in {s['steps']} steps"
    if s.get("requested_steps") is not None and s["steps"] > s["requested_steps"]:
        line += f" ({s['requested_steps']} requested, extended by {s['steps'] - s['requested_steps']})"
    if s.get("held") is not None:
        line += f"; at the target (±{100 * s['hold_window']:g}%) for {s['held_steps']} steps"
    return line + (f"; the projection to ℓ moved it to {s['projected_bound']:.2f}x "
                   f"(jump **x{s['projection_jump']:.2f}**)")


def distillation_label(r: dict) -> str:
    """", distilled from the fine-tuned model (...)" naming the kinds a run used, or ""."""
    from types import SimpleNamespace

    from .stages import stage_distill

    cfg = r.get("config") or {}
    recorded = r.get("distilled_logits") or {}
    search = bool(recorded.get("search", (r.get("search") or {}).get("distill")))
    stage3 = recorded.get("retrain")
    if stage3 is None:  # an older report: derived from its config as the run did (no distill setting: none)
        stage3 = stage_distill("retrain", SimpleNamespace(distill=cfg.get("distill", False),
                                                          distill_ranking=cfg.get("distill_ranking")))
    kinds = (["logits"] if search else ["stage 3 logits"] if stage3 else []) + (
        [f"stage 3 hidden states x{cfg['distill_hidden']:g}"] if cfg.get("distill_hidden") else []) + (
        [f"stage 3 ranking x{cfg['distill_ranking']:g}"] if cfg.get("distill_ranking") else [])
    return f", distilled from the fine-tuned model: {', '.join(kinds)}" if kinds else ""


def render_markdown(r: dict, plot_name: str | None = None) -> str:
    b, p, s = r["baseline"]["metric"], r["power_bert"]["metric"], r.get("speed", {})
    lines = [
        f"# PoWER-BERT run: {r['task']}",
        "",
        f"- model: `{r.get('model')}`, max_length N = {r['max_length']}, device {r['device']}",
        f"- baseline (fine-tuned) {b['name']}: **{b['value']:.4f}**",
        f"- PoWER-BERT {p['name']}: **{p['value']:.4f}** ({p['value'] - b['value']:+.4f})",
        f"- retention configuration ℓ: {r['retention']} ({setting_label(r)}"
        f"{distillation_label(r)}){floor_label(r)}",
        *rows_lines(r),
    ]
    if r.get("thresholds") is not None:
        theta = ", ".join("-" if t is None else f"{t:.4f}" for t in r["thresholds"])
        lines.append(f"- threshold rule (`--retention-rule threshold`): layer j keeps the rows whose share of "
                     f"significance exceeds θ_j = [{theta}], calibrated on the training data to keep as many rows "
                     f"as ℓ; the FLOP bounds below are those of the rows it kept")
    if search_line(r):
        lines.append(search_line(r))
    cfg = r.get("config") or {}
    if cfg.get("augment_copies"):
        lines.append(f"- stage 3 also trained on {count_text(cfg['augment_copies'], 'word-dropped copy', 'word-dropped copies')} "
                     f"of each example (`--augment-copies`; each word left out with probability {cfg['augment_drop']:g})")
    if s:
        lines += speed_lines(s)
    if r.get("truncated"):
        lines.append(f"- texts truncated to N: {r['truncated']}")
    lines += ["", "| stage | epoch kept / run (↑: dev still rising) | metrics |", "|---|---|---|"]
    for stage, m in r.get("stages", {}).items():
        shown = ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in m.items()
                          if isinstance(v, float) and "runtime" not in k and "per_second" not in k)
        lines.append(f"| {stage} | {epochs_kept(r, stage)} | {shown} |")
    if plot_name:
        lines += ["", f"![tokens kept per layer]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot_retention(r: dict, path: Path) -> None:
    ell = r["retention"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(range(1, len(ell) + 1), ell, color="#3a7dc9", label="kept (ℓ_j)")
    ax.axhline(r["max_length"], color="gray", ls="--", lw=1, label=f"N = {r['max_length']}")
    ax.set_xlabel("encoder layer j")
    ax.set_ylabel("word vectors kept")
    ax.set_title(f"{r['task']}: FLOP bound {r['flop_bound']:.2f}x, measured {r['measured_speedup']:.2f}x")
    ax.set_xticks(range(1, len(ell) + 1))
    _save(fig, ax, path, legend_loc="upper right")


def floor_label(r: dict) -> str:
    """Relative retention's floor of rows, when it has one."""
    m = rows_floor(r.get("retention_scale", "absolute"), r.get("min_rows"))
    if m == 1:
        return ""
    short = r.get("min_rows_max_length")
    which = "every example" if short is None else f"every example of at most {short} tokens (--min-rows-max-length)"
    return f"; {which} keeps at least {m} rows in every layer (--min-rows)"


def rows_lines(r: dict) -> list[str]:
    """The rows a text of the timed examples' mean real length keeps after each layer under
    top-k (none for the threshold rule, whose rows vary by text, or a record without lengths):
    how much of a typical text the later layers see. Relative retention reads ℓ against the N the
    model was trained at (``sequence_length``), whatever N the examples were padded to."""
    mean = (r.get("speed") or r).get("mean_length")
    if not r.get("retention") or mean is None or mean < 1 or r.get("thresholds") is not None:
        return []
    length = int(mean + 0.5)
    scale = r.get("retention_scale", "absolute")
    n = reference_length(scale, r.get("sequence_length"), r["max_length"])
    rows = [str(k) for k in rows_kept(r["retention"], n, length, scale, r.get("min_rows") or 1,
                                       r.get("min_rows_max_length"))]
    counts = f"{', '.join(rows[:-1])} and {rows[-1]}" if len(rows) > 1 else rows[0]
    layers = f"layers 1-{len(rows)}" if len(rows) > 1 else "layer 1"
    return [f"- a text of the timed examples' mean length ({count_text(length, 'real token')}) keeps {counts} "
            f"of its rows after {layers}"]


def setting_label(r: dict) -> str:
    """How a run's configuration was asked for: ``target 3x`` or ``λ=0.0005``."""
    return f"target {r['target_speedup']:g}x" if r.get("target_speedup") is not None else f"λ={r['lambda']:g}"


def write_sweep(out_dir: Path, rows: list[dict]) -> dict:
    """rows: one report dict per λ or target speed-up. Writes sweep.json, sweep.md and sweep.png
    (metric against speed-up: FLOP bound and measured, with the baseline metric as a line)."""
    out_dir = Path(out_dir)
    (out_dir / "sweep.json").write_text(json.dumps(rows, indent=1))
    name = rows[0]["power_bert"]["metric"]["name"]
    kind = "target speed-up" if rows[0].get("target_speedup") is not None else "λ"
    md = [f"# {kind} sweep: {rows[0]['task']}", "",
          "Speed-ups against the dense model on length-bucketed batches (each cut to its longest row); "
          "padded to N beside them.", "",
          f"| setting | {name} | baseline | ℓ | search: soft bound reached | projection jump | epochs kept "
          f"(fine-tune / retrain) | FLOP bound | measured | padded: bound / measured |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pad, search = r.get("padded") or {}, r.get("search") or {}
        md.append(f"| {setting_label(r)} | {r['power_bert']['metric']['value']:.4f} | "
                  f"{r['baseline']['metric']['value']:.4f} | {r['retention']} | "
                  f"{search.get('soft_bound_final', float('nan')):.2f}x | "
                  f"x{search.get('projection_jump', float('nan')):.2f} | "
                  f"{epochs_kept(r, 'finetune')} / {epochs_kept(r, 'retrain')} | {r['flop_bound']:.2f}x | "
                  f"{r['measured_speedup']:.2f}x | {pad.get('flop_bound', float('nan')):.2f}x / "
                  f"{pad.get('measured_speedup', float('nan')):.2f}x |")
    md += ["", "![trade-off](sweep.png)"]
    (out_dir / "sweep.md").write_text("\n".join(md) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    rs = sorted(rows, key=lambda r: r["flop_bound"])
    ax.plot([r["flop_bound"] for r in rs], [r["power_bert"]["metric"]["value"] for r in rs], "o-", label="vs FLOP bound")
    rs = sorted(rows, key=lambda r: r["measured_speedup"])
    ax.plot([r["measured_speedup"] for r in rs], [r["power_bert"]["metric"]["value"] for r in rs], "s--",
            label="vs measured speed-up")
    ax.axhline(rows[0]["baseline"]["metric"]["value"], color="gray", ls=":", label="fine-tuned baseline")
    for r in rows:
        ax.annotate(setting_label(r), (r["flop_bound"], r["power_bert"]["metric"]["value"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("speed-up over the fine-tuned model (length-bucketed batches)")
    ax.set_ylabel(name)
    ax.set_title(f"{rows[0]['task']}: accuracy / speed-up trade-off")
    _save(fig, ax, out_dir / "sweep.png")
    return {"json": out_dir / "sweep.json", "markdown": out_dir / "sweep.md", "plot": out_dir / "sweep.png"}


def write_benchmark_report(out_dir: Path, r: dict) -> dict:
    """``power-bert benchmark --output-dir``: report.json (the result as returned), report.md
    and speedup.png (seconds per pass of each model, fixed N and dynamic padding, with the
    speed-ups and the FLOP bound in the title). Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(r, indent=1))
    lines = [
        "# PoWER-BERT benchmark",
        "",
        f"- model `{r['model']}` against baseline `{r['baseline']}`",
        f"- N = {r['max_length']}, {r['examples']} examples ({r['truncated']} truncated), batch {r['batch_size']}, "
        f"{r['dtype']}, {r['device']}, {threads_text(r['threads'])}, median of {r['repeats']} passes",
        f"- retention ℓ: {r['retention']} ({r.get('retention_scale', 'absolute')}){floor_label(r)}",
        *rows_lines(r),
        *speed_lines(r),
    ]
    lines += ["", "![seconds per pass](speedup.png)"]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    p = r["padded"]
    groups = [("length-bucketed", r["baseline_seconds"], r["power_bert_seconds"]),
              (f"padded to N = {r['max_length']}", p["baseline_seconds"], p["power_bert_seconds"])]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    x = range(len(groups))
    ax.bar([i - 0.2 for i in x], [g[1] for g in groups], width=0.4, color="#999999", label="baseline")
    ax.bar([i + 0.2 for i in x], [g[2] for g in groups], width=0.4, color="#3a7dc9", label="PoWER-BERT")
    for i, g in enumerate(groups):
        ax.annotate(f"{g[1] / g[2]:.2f}x", (i + 0.2, g[2]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(x), [g[0] for g in groups])
    ax.set_ylabel("seconds per pass")
    how = f"{r['dtype']}, {r['device']}" + (f", torch.compile ({r['compile']})" if r.get("compile") else ", eager")
    ax.set_title(f"bucketed: {r['speedup']:.2f}x (bound {r['flop_bound']:.2f}x); padded to N: {p['speedup']:.2f}x "
                 f"(bound {p['flop_bound']:.2f}x)\n{how}", fontsize=9)
    _save(fig, ax, out_dir / "speedup.png")
    return {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "plot": out_dir / "speedup.png"}
