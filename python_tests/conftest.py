"""Shared test set-up. Must run before power_bert_ops loads its library:
- POWER_BERT_POISON_OUTPUTS=1: kernels' outputs are filled with garbage before they are
  written, so an element a kernel forgets shows up as a mismatch.
- TRITON_INTERPRET=1 when there is no GPU, so the Triton kernels run on CPU tensors.
- A fresh torch.compile (Inductor) cache per session: Inductor's cache key does not cover our
  ops' fake kernels, so a cache left by an earlier build could replay code compiled against
  another output layout.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("POWER_BERT_POISON_OUTPUTS", "1")
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _inductor_cache = tempfile.mkdtemp(prefix="power_bert_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _inductor_cache
    atexit.register(shutil.rmtree, _inductor_cache, ignore_errors=True)

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import power_bert_ops  # noqa: E402

CUDA_OK = torch.cuda.is_available() and power_bert_ops.built_with_cuda()
CUDA_SKIP_REASON = (
    "no CUDA device" if not torch.cuda.is_available() else "power_bert_ops was built without its CUDA kernels"
)

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not CUDA_OK, reason=CUDA_SKIP_REASON)),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # A different, reproducible seed per test: fresh random inputs, replayable failures.
    import zlib

    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """A tiny random BERT checkpoint and a learnable synthetic CSV task (train 384, eval 96)."""
    from tiny_models import synthetic_csv, tiny_bert_checkpoint

    root = tmp_path_factory.mktemp("pipeline")
    tiny_bert_checkpoint(root / "model")
    synthetic_csv(root / "train.csv", 384, seed=0)
    synthetic_csv(root / "eval.csv", 96, seed=1)
    return root


@pytest.fixture(scope="session")
def finished_run(workdir):
    """A whole `power-bert run` on `workdir` (see tiny_models.run_args); tests must not change it."""
    from power_bert_ops import cli
    from tiny_models import run_args

    out = workdir / "run"
    assert cli.main(run_args(workdir, out)) == 0
    return out


# Order and grouping for pytest-xdist's `--dist loadgroup` (scripts/run_tests.sh runs two
# workers): the whole-pipeline tests of training/ (a tiny run each) go one by one to whichever
# worker is free; every other file stays on one worker, so that its module fixtures are built
# once. The files with the costliest fixtures start first, then the pipeline tests, so that no
# long file is left running alone at the end.
_FIRST = ("export/test_export.py", "builds/test_builds.py", "modeling/test_modeling.py")


def _spread(item) -> bool:
    path = item.nodeid.split("::")[0]
    return "/training/" in path and not path.endswith("test_target.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return 0 if path.endswith(_FIRST) else 1 if _spread(item) else 2

    items.sort(key=rank)  # stable: each file keeps its own order
    for item in items:
        if not _spread(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
