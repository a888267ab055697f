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
