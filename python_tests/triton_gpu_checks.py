"""GPU checks of the Triton kernels that need no GPU: launch grids against CUDA's limits, and
the real GPU launch configurations compiled for sm_90 by triton's own ptxas."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GridRecorder:
    """Stands in for torch.library.wrap_triton: records launch grids, runs nothing."""

    def __init__(self):
        self.grids = []

    def __call__(self, kernel):
        return self

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return lambda *args, **kwargs: None


def sm90_compile_report(script: str) -> list[dict]:
    """Runs ``script`` (which compiles kernels for sm_90 and prints ``RESULT <json list>``) in a
    fresh process without TRITON_INTERPRET; returns that list. Skips when triton has no NVIDIA
    backend."""
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.backends.nvidia import compiler  # noqa: F401
    except Exception as e:  # pragma: no cover
        pytest.skip(f"triton has no NVIDIA backend: {e}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])
