"""Shared test set-up. Must run before power_bert_ops loads its library:
- POWER_BERT_POISON_OUTPUTS=1: kernels' outputs are filled with garbage before they are
  written, so an element a kernel forgets shows up as a mismatch.
- TRITON_INTERPRET=1 when there is no GPU, so the Triton kernels run on CPU tensors.
"""
import os

os.environ.setdefault("POWER_BERT_POISON_OUTPUTS", "1")

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
