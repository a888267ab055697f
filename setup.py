"""Builds power_bert_ops._C: the C++ (CPU) kernels always, the CUDA kernels when the installed
torch has CUDA and nvcc is found. POWER_BERT_CUDA=0 forces CUDA off, POWER_BERT_CUDA=1 forces
it on (and fails loudly if it cannot be built).

    pip install --no-build-isolation -e .
"""
import glob
import os

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    flag = os.environ.get("POWER_BERT_CUDA", "").strip()
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if flag == "0":
        return False
    if flag == "1":
        if not available:
            raise RuntimeError(
                "POWER_BERT_CUDA=1 but the CUDA kernels cannot be built: "
                f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={CUDA_HOME!r}"
            )
        return True
    return available


def extension():
    rel = lambda pattern: sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    # -fopenmp: at::parallel_for is a header template whose OpenMP pragmas are compiled into
    # this library; without it every CPU kernel runs on one thread. The library then needs
    # libgomp.so.1, the runtime torch itself loads (same soname), so there is one thread pool.
    # -fno-trapping-math -fno-math-errno (as torch itself is built): lets GCC turn the
    # selects and math of the CPU kernels' row loops into vector code (attention_cpu.cpp's
    # exp loop stays scalar on AVX2 without them).
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", "-fdiagnostics-color=always"]
    link = ["-fopenmp"]
    macros = [("Py_LIMITED_API", "0x03090000")]
    if want_cuda():
        sources += rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu")
        macros.append(("WITH_CUDA", None))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension("power_bert_ops._C", sources, define_macros=macros, py_limited_api=True,
                             extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)
    return CppExtension("power_bert_ops._C", sources, define_macros=macros, py_limited_api=True,
                        extra_compile_args={"cxx": cxx}, extra_link_args=link)


setup(
    name="power-bert",
    version="0.1.0",
    description="PoWER-BERT progressive word-vector elimination: fused PyTorch ops (CPU, CUDA, Triton)",
    packages=find_packages(include=["power_bert_ops", "power_bert_ops.*"]),
    py_modules=["power_bert_cli"],  # the console command's entry point (imports the package inside main)
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    entry_points={"console_scripts": ["power-bert=power_bert_cli:main"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.6", "numpy", "transformers>=5.17", "accelerate>=1.1", "safetensors", "tqdm",
                      "scikit-learn", "scipy", "matplotlib"],
    extras_require={
        "triton": ["triton"],
        # power_bert_ops.export (power_bert_ops/export/) to ONNX and its tests (python_tests/export/test_export.py)
        "export": ["onnx", "onnxscript", "onnxruntime"],
        "test": ["pytest", "pytest-benchmark", "expecttest", "triton"],
    },
)
