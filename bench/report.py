"""Turns a pytest-benchmark JSON file into a markdown table: the median time of each
implementation and its speed-up over its group's baseline ('composition'), both measured in
the same run, headed by the machine, versions, date and command that produced them. The last
column is the fraction of the floor: the group's 'floor' time over this implementation's time
(ops and attention), or the measured speed-up over the FLOP bound (model).

    python bench/report.py bench/results/ops_cpu.json [--baseline composition] [--out FILE]
"""
import argparse
import json
import sys
from collections import defaultdict


def render(data, baseline="composition"):
    m = data["machine_info"]
    cpu = m.get("cpu", {})
    lines = [
        f"- date: {data['datetime'][:19]} UTC",
        f"- machine: {m.get('cuda_device') or cpu.get('brand_raw', m.get('processor'))}; "
        f"{cpu.get('count', '?')} CPU cores, torch threads {m.get('torch_threads')}; {m.get('platform')}",
        f"- versions: Python {m['python_version']}, torch {m.get('torch_version')}, triton {m.get('triton_version')}, "
        f"power-bert {m.get('power_bert_version')} (CUDA kernels: {m.get('power_bert_cuda')})",
        f"- command: `{m.get('command')}`",
        "",
        f"| group | implementation | shape | median (ms) | speed-up vs {baseline} | fraction of floor |",
        "|---|---|---|---|---|---|",
    ]
    groups = defaultdict(dict)
    interleaved = []
    for b in data["benchmarks"]:
        if "median_ms" in b["extra_info"]:  # one test timing several implementations per round
            interleaved.append(b)
            continue
        groups[b["group"]][(b["params"] or {}).get("impl", b["name"])] = b
    for group, impls in groups.items():
        base = impls.get(baseline)
        for impl, b in impls.items():
            med = b["stats"]["median"]
            ratio = f"{base['stats']['median'] / med:.2f}x" if base else "n/a"
            bound = b["extra_info"].get("ratio_to_bound", "")
            if "floor" in impls and impl != "floor":
                bound = f"{impls['floor']['stats']['median'] / med:.2f}"
            lines.append(f"| {group} | {impl} | {b['extra_info'].get('shape', '')} | {med * 1e3:.3f} | {ratio} | {bound} |")
    for b in interleaved:
        info = b["extra_info"]
        lines += ["", f"Interleaved rounds (`{b['name']}`, {info.get('shape', '')}): medians "
                  + ", ".join(f"{k} {v} ms" for k, v in info["median_ms"].items())
                  + "; " + ", ".join(f"{k} {v}" for k, v in info.items()
                                     if k not in ("median_ms", "min_ms", "shape", "retention") and not isinstance(v, dict))]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("json_file")
    ap.add_argument("--baseline", default="composition")
    args = ap.parse_args(argv)
    with open(args.json_file) as f:
        sys.stdout.write(render(json.load(f), args.baseline))


if __name__ == "__main__":
    main()
