"""The benchmarks must keep running: the GPU scripts in --smoke mode on the CPU (Triton under
the interpreter), the pytest-benchmark suites once each with timing disabled. This checks
the scripts, not speed (speed is never asserted in tests)."""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args, tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", ["bench/bench_ops_gpu.py", "bench/bench_attention_gpu.py", "bench/bench_model_gpu.py"])
def test_gpu_script_smoke(script, tmp_path):
    out = tmp_path / "r.json"
    res = run([script, "--device", "cpu", "--smoke", "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["rows"] and data["environment"]["torch"] and "command" in data["environment"]
    if script.endswith("model_gpu.py"):
        assert (tmp_path / "r.png").stat().st_size > 0  # the speed-up against bound plot


def test_pytest_benchmark_suites_run(tmp_path):
    suites = sorted(glob.glob(os.path.join(ROOT, "bench", "bench_*_cpu.py")))
    assert suites
    res = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable", *suites], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def _report(task, baseline, power, bound):
    return {"task": task, "max_length": 64, "retention": [9, 3],
            "baseline": {"metric": {"name": "accuracy", "split": "test", "value": baseline}},
            "power_bert": {"metric": {"name": "accuracy", "split": "test", "value": power}},
            "search": {"soft_bound_final": bound / 1.5, "projection_jump": 1.5},
            "training": {"search": {"epoch_kept": 1.0, "epochs_run": 1.0},
                         "retrain": {"epoch_kept": 2.0, "epochs_run": 4.0, "still_rising": False}},
            "flop_bound": bound, "measured_speedup": 0.8 * bound,
            "padded": {"flop_bound": bound + 1, "measured_speedup": bound}}


def test_ablation_plot_measures_each_run_against_its_own_baseline(tmp_path):
    runs = {"a": _report("rotten_tomatoes", 0.80, 0.79, 3.0), "b": _report("20newsgroups", 0.73, 0.742, 6.0)}
    for name, r in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(r))
    out = tmp_path / "abl"
    res = run(["bench/ablation_plot.py", "--out", str(out), "short, N=64=" + str(tmp_path / "a"),
               "long=" + str(tmp_path / "b")], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    md = (tmp_path / "abl.md").read_text()
    assert "against each run's own baseline" in md
    assert "| short, N=64 | 0.8000 | 0.7900 (-1.0) |" in md and "| long | 0.7300 | 0.7420 (+1.2) |" in md
    assert (tmp_path / "abl.png").stat().st_size > 0


@pytest.mark.parametrize("arg, said", [("nolabel", "expected label=run folder"),
                                       ("x={missing}", "report.json not found")])
def test_ablation_plot_refuses_a_bad_run_argument(tmp_path, arg, said):
    res = run(["bench/ablation_plot.py", "--out", str(tmp_path / "abl"), arg.format(missing=tmp_path / "nope")],
              tmp_path)
    assert res.returncode == 2 and said in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "abl.md").exists()
