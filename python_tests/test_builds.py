"""The two other ways the kernels are built:
- CMakeLists.txt against libtorch (for C++ users): built here, loaded with
  torch.ops.load_library in a fresh process, run against the reference.
- the CUDA sources compiled with nvcc (compile only: no GPU here), so a broken .cu cannot land.
  They need only CUDA's own headers (SPEC section 5).
"""
import glob
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRE = os.environ.get("POWER_BERT_REQUIRE_BUILD_TOOLS") == "1"  # .ci/run sets it: no silent skips


def _tool(name):
    path = shutil.which(name)
    if path is None:
        if REQUIRE:
            pytest.fail(f"{name} not found but POWER_BERT_REQUIRE_BUILD_TOOLS=1")
        pytest.skip(f"{name} not found")
    return path


@pytest.fixture(scope="module")
def cmake_library(tmp_path_factory):
    _tool("cmake")
    build = tmp_path_factory.mktemp("cmake-build")
    prefix = torch.utils.cmake_prefix_path
    subprocess.run(["cmake", "-S", ROOT, "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}"], check=True,
                   capture_output=True, text=True)
    subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)], check=True,
                   capture_output=True, text=True)
    (lib,) = glob.glob(str(build / "libpower_bert_ops.*"))
    return lib


SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys, torch
    torch.ops.load_library(sys.argv[1])
    spec = importlib.util.spec_from_file_location("reference", sys.argv[2])
    ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
    torch.manual_seed(0)
    B, H, N, D, k = 3, 4, 17, 6, 5
    mask = torch.ones(B, N, dtype=torch.long); mask[1, 9:] = 0; mask[2, 3:] = 0
    attn = torch.softmax(torch.randn(B, H, N, N) + torch.where(mask.bool(), 0.0, float("-inf"))[:, None, None], -1)
    hidden = torch.randn(B, N, D)
    ops = torch.ops.power_bert
    out, index, out_mask = ops.extract(hidden, attn, mask, k)
    r_out, r_index, r_mask = ref.extract(hidden, attn.double(), mask, k)
    assert torch.equal(index, r_index) and torch.equal(out, r_out) and torch.equal(out_mask, r_mask)
    s = ops.significance(attn, mask)
    torch.testing.assert_close(s, ref.significance(attn, mask))
    r = torch.rand(N)
    torch.testing.assert_close(ops.soft_extract(hidden, s, mask, r), ref.soft_extract(hidden, s, mask, r))
    g = ops.extract_backward(out, index, N)
    assert g.shape == (B, N, D)
    assert ops._cuda_version() == -1
    try:
        ops.extract(hidden, attn, mask, N + 1)
    except ValueError as e:
        assert "`k` must satisfy" in str(e)
    else:
        raise AssertionError("no error for k > N")
    print("ok")
    """
)


def test_cmake_library_loads_and_runs(cmake_library):
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, cmake_library, os.path.join(ROOT, "power_bert_ops", "reference.py")],
        capture_output=True, text=True,
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr


CUDA_SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))


def test_cuda_sources_exist():
    assert CUDA_SOURCES, "csrc/cuda/*.cu not found"


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=os.path.basename)
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    nvcc = _tool("nvcc")
    cmd = [nvcc, "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Werror", "all-warnings",
           "-gencode", "arch=compute_90,code=sm_90", "-I", os.path.join(ROOT, "csrc"),
           "-c", source, "-o", str(tmp_path / "k.o")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
