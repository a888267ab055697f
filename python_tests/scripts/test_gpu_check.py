"""scripts/gpu_check.sh, the one prepared command for the GPU machine, checked on the
CPU: its dry run passes on this checkout and fails, naming the problem, on a broken carry
manifest or a missing file; its runner records failed, timed-out and skipped steps and keeps
OUTDIR within what the device tool brings back. No network, no GPU."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gc():
    return _load("gpu_check")


@pytest.fixture(scope="module")
def carry():
    return _load("gpu_carry")


def _dry_run(root, out, *extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    return subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh"), "--dry-run", *extra, str(out)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)


def test_dry_run_passes(tmp_path):
    res = _dry_run(ROOT, tmp_path / "out")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "dry_run.json").read_text())
    assert report["ok"] and len(report["checks"]) >= 20
    names = " ".join(c["check"] for c in report["checks"])
    for what in ("wheel tags", "$POWER_BERT_CACHE", "step tests", "step bench_model", "step e2e_run",
                 "test selection", "bench JSON schema", "break-even JSON"):
        assert what in names, what


def test_dry_run_fails_on_a_broken_manifest(tmp_path, gc, capsys):
    manifest = json.loads((ROOT / "scripts" / "gpu_carry_manifest.json").read_text())
    manifest["wheels"][0]["file"] = "expecttest-0.3.0-cp311-cp311-manylinux_2_17_aarch64.whl"
    manifest["files"] = [f for f in manifest["files"] if not f["path"].endswith(".csv.bz2")]
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps(manifest))
    assert gc.main(["--dry-run", "--no-collect", "--manifest", str(bad), str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "FAIL carry manifest" in out and "expecttest-0.3.0-cp311-cp311-manylinux_2_17_aarch64.whl" in out
    assert "does not run on CPython 3.12" in out

    manifest["wheels"][0]["file"] = "expecttest-0.3.0-py3-none-any.whl"  # tags fine again: the layout check runs
    bad.write_text(json.dumps(manifest))
    assert gc.main(["--dry-run", "--no-collect", "--manifest", str(bad), str(tmp_path / "out2")]) == 1
    out = capsys.readouterr().out
    assert "Rotten Tomatoes file is missing" in out and "did not find the prepared cache" in out
    assert not json.loads((tmp_path / "out2" / "dry_run.json").read_text())["ok"]


def test_dry_run_fails_on_a_missing_path(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".gpu_carry", "build", "*.egg-info",
                                                               "__pycache__", ".pytest_cache", "runs", "results"))
    (copy / "bench" / "bench_attention_gpu.py").unlink()
    res = _dry_run(copy, tmp_path / "out", "--no-collect")
    assert res.returncode == 1, res.stdout[-3000:]
    assert "FAIL step bench_attention" in res.stdout
    assert "reads bench/bench_attention_gpu.py, which is not in the repository" in res.stdout
    assert "bench/bench_attention_gpu.py is missing or does not parse" in res.stdout


@pytest.mark.parametrize("name, ok", [
    ("expecttest-0.3.0-py3-none-any.whl", True),
    ("numpy-2.3.0-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", True),
    ("cryptography-45.0.0-cp39-abi3-manylinux2014_x86_64.whl", True),
    ("numpy-2.3.0-cp311-cp311-manylinux_2_28_x86_64.whl", False),
    ("numpy-2.3.0-cp313-cp313-manylinux_2_28_x86_64.whl", False),
    ("numpy-2.3.0-cp312-cp312-manylinux_2_28_aarch64.whl", False),
    ("numpy-2.3.0-cp312-cp312-macosx_14_0_x86_64.whl", False),
    ("numpy-2.3.0-cp312-cp312-manylinux_2_40_x86_64.whl", False),
    ("numpy-2.3.0.tar.gz", False),
])
def test_wheel_tags(carry, name, ok):
    assert (carry.wheel_tag_problem(name) is None) == ok


def _py(code):
    return lambda ctx, timeout: [sys.executable, "-c", code]


def test_runner_records_failures_timeouts_and_skips(tmp_path, gc, monkeypatch, capsys):
    rows = [{"op": "extract", "impl": "cuda", "B": 1, "N": 128, "ms": "0.0100", "speedup": "3.00x",
             "floor_frac": "50%"}]
    bench = {"environment": {k: "x" for k in gc.BENCH_ENV_KEYS}, "rows": rows}
    bench_file = tmp_path / "ops_gpu.json"
    steps = [
        gc.Step("environment", "ok", _py("print('hello')"), 30, 1),
        gc.Step("tests", "fails", _py("import sys; print('boom'); sys.exit(3)"), 30, 1),
        gc.Step("bench_ops", "hangs", _py("import time; time.sleep(60)"), 2, 1),
        gc.Step("bench_attention", "writes a result",
                _py(f"import json; open({str(bench_file)!r}, 'w').write(json.dumps({bench!r}))"), 30, 1,
                collect=((str(bench_file), "out:ops_gpu.json"),)),
        gc.Step("e2e_run", "needs tests", _py("print(1)"), 30, 1, needs=("tests",)),
        gc.Step("bench_model", "wants more time than is left", _py("print(1)"), 600, 500),
    ]
    monkeypatch.setattr(gc, "plan", lambda ctx: steps)
    ctx = gc.Ctx(out=tmp_path / "out", work=tmp_path / "work", site=tmp_path / "site", cache=tmp_path / "cache")
    assert gc.run_all(ctx, budget=120, only=set(), skip=set()) == 1
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {k: v["status"] for k, v in summary["steps"].items()}
    assert status == {"environment": "ok", "tests": "failed", "bench_ops": "timeout", "bench_attention": "ok",
                      "e2e_run": "skipped", "bench_model": "skipped"}
    assert summary["steps"]["bench_ops"]["seconds"] < 15  # killed at its own timeout
    assert "needs tests" in summary["steps"]["e2e_run"]["note"]
    assert "no time" in summary["steps"]["bench_model"]["note"]
    # e2e_run needs tests, which failed: the second call runs it too (its scratch folder starts empty)
    assert "--only tests,bench_ops,e2e_run,bench_model " in summary["rerun"]
    assert "[gpu_check] tests: failed" in printed and "s of 120 s used" in printed and "boom" in printed
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert set(files) <= set(gc.OUT_FILES) and len(files) <= 8
    assert "ops_gpu.json" in files and "| extract | cuda | 1 | 128 |" in (tmp_path / "out" / "summary.md").read_text()
    with tarfile.open(tmp_path / "out" / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu_check/logs/tests.log" in names and "gpu_check/files/summary.md" in names


def test_junit_counts(tmp_path, gc):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
                   '<testcase classname="python_tests.test_extract" name="test_a[cuda]"/>'
                   '<testcase classname="python_tests.test_extract" name="test_b[cuda]"><failure message="off by 1"/>'
                   '</testcase></testsuite></testsuites>')
    c = gc.junit_counts(xml)
    assert (c["passed"], c["failures"], c["skipped"]) == (2, 1, 1)
    assert c["failed_tests"] == ["python_tests.test_extract::test_b[cuda]: off by 1"]
    assert "error" in gc.junit_counts(tmp_path / "absent.xml")


def test_rerun_command_brings_the_prerequisites(gc):
    """The first GPU run left e2e_export_pt2 for a second call; `--only e2e_export_pt2` alone
    skipped it there ("needs e2e_run": the scratch folder is emptied at each run)."""
    ctx = gc.Ctx(out=Path("/tmp/o"), work=Path("/tmp/w"), site=Path("/tmp/s"), cache=Path("/tmp/c"))
    steps = gc.plan(ctx)
    assert gc.with_prerequisites(["e2e_export_pt2"], steps) == ["e2e_run", "e2e_export_pt2"]
    assert gc.with_prerequisites(["e2e_benchmark", "bench_ops"], steps) == ["bench_ops", "e2e_run", "e2e_benchmark"]
    assert gc.with_prerequisites(["tests"], steps) == ["tests"]  # the build is a set-up step

