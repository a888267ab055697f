"""Turns a pytest-benchmark JSON file into a markdown table: the median time of each
implementation and its speed-up over its group's baseline ('composition'), both measured in
the same run, headed by the machine, versions, date and command that produced them.

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
        f"| group | implementation | shape | median (ms) | speed-up vs {baseline} |",
        "|---|---|---|---|---|",
    ]
    groups = defaultdict(dict)
    for b in data["benchmarks"]:
        groups[b["group"]][b["params"].get("impl", b["name"])] = b
    for group, impls in groups.items():
        base = impls.get(baseline)
        for impl, b in impls.items():
            med = b["stats"]["median"]
            ratio = f"{base['stats']['median'] / med:.2f}x" if base else "n/a"
            lines.append(f"| {group} | {impl} | {b['extra_info'].get('shape', '')} | {med * 1e3:.3f} | {ratio} |")
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
