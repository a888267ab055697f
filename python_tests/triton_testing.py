"""What the Triton test files share: the set-up (the kernels run under TRITON_INTERPRET=1 on CPU
tensors when there is no GPU, outputs poisoned; the importing module is skipped without triton),
and the GPU checks that need no GPU: launch grids against CUDA's limits, and the real GPU launch
configurations compiled for sm_90 by triton's own ptxas."""
import json
import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("POWER_BERT_POISON_OUTPUTS", "1")

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
ops = torch.ops.power_bert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def record_launches(monkeypatch) -> list:
    """Names of the Triton kernels launched from now on, in order (through
    power_bert_ops.triton._launch.launcher, which still launches them)."""
    from power_bert_ops.triton import _launch

    launched, real = [], _launch.launcher
    monkeypatch.setattr(_launch, "launcher",
                        lambda kernel: launched.append(getattr(kernel, "fn", kernel).__name__) or real(kernel))
    return launched


class GridRecorder:
    """Stands in for power_bert_ops.triton._launch.launcher: records launch grids, runs nothing."""

    def __init__(self):
        self.grids = []

    def __call__(self, kernel):
        return self

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return lambda *args, **kwargs: None


# Prepended to every sm90_compile_report script: compile_sm90(fn, sig, constexprs, attrs,
# **options) compiles one kernel for sm_90 with triton's own ptxas and returns its shared memory
# and (where triton ships cuobjdump) its stack bytes, which are the register spills.
SM90_PRELUDE = r"""
import json, os, re, subprocess, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_sm90(fn, sig, constexprs, attrs, **options):
    k = triton.compile(ASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", 90, 32), options=options)
    stack = None
    if os.path.exists(CUOBJDUMP):
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"])
            f.flush()
            usage = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True).stdout
        m = re.search(r"STACK:(\d+)", usage)
        stack = int(m.group(1)) if m else None
    return {"shared": k.metadata.shared, "stack": stack}
"""


def sm90_compile_report(script: str) -> list[dict]:
    """Runs ``script`` (which compiles kernels for sm_90 with ``compile_sm90`` from SM90_PRELUDE
    and prints ``RESULT <json list>``) in a fresh process without TRITON_INTERPRET; returns that
    list. Skips when triton has no NVIDIA backend."""
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.backends.nvidia import compiler  # noqa: F401
    except Exception as e:  # pragma: no cover
        pytest.skip(f"triton has no NVIDIA backend: {e}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", SM90_PRELUDE + script], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])
