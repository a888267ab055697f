"""torch.library.opcheck (schema, fake kernels, autograd registration, AOT dispatch) and
torch.compile(fullgraph=True) on the native ops; the op count the README states; one backend
decision (power_bert_ops._backend); another implementation forced behind the ops
(power_bert_ops.testing.force_kernels) for forward and backward, and the wrappers' backend=
checked against the kernel chosen at import."""
import os
import re
import subprocess
import sys

import pytest
import torch

import power_bert_ops
from power_bert_ops import _backend, _checks
from power_bert_ops.testing import force_kernels, kernel_of

from inputs import make_attention, make_hidden, make_mask

ops = torch.ops.power_bert


def _inputs(device, dtype=torch.float32, B=2, H=2, N=9, D=5, requires_grad=False):
    mask = make_mask(B, N, "random", device)
    attn = make_attention(B, H, N, mask, dtype, device)
    hidden = make_hidden(B, N, D, dtype, device).requires_grad_(requires_grad)
    scores = torch.randn(B, N, device=device)
    retention = torch.rand(N, device=device, dtype=dtype).requires_grad_(requires_grad)
    return hidden, attn, mask, scores, retention


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck(device, dtype, requires_grad):
    hidden, attn, mask, scores, retention = _inputs(device, dtype, requires_grad=requires_grad)
    torch.library.opcheck(ops.significance.default, (attn, mask, True))
    torch.library.opcheck(ops.extract.default, (hidden, attn, mask, 4, True))
    torch.library.opcheck(ops.extract.default, (hidden, attn, mask, 1, False))
    torch.library.opcheck(ops.extract_scored.default, (hidden, scores, mask, 9))
    torch.library.opcheck(ops.soft_extract.default, (hidden, scores, mask, retention))
    index = ops.extract(hidden.detach(), attn, mask, 4)[1]
    torch.library.opcheck(ops.extract_backward.default, (torch.randn(2, 4, 5, device=device, dtype=dtype), index, 9))
    g = torch.randn_like(hidden.detach())
    torch.library.opcheck(ops.soft_extract_backward.default, (g, hidden.detach(), scores, mask, retention.detach()))


def test_fake_kernels_check_arguments():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        hidden, attn, mask = torch.randn(2, 6, 4), torch.randn(2, 2, 6, 6), torch.ones(2, 6)
        out, index, out_mask = ops.extract(hidden, attn, mask, 3)
        assert out.shape == (2, 3, 4) and index.dtype == torch.int64 and out_mask.dtype == mask.dtype
        with pytest.raises(ValueError, match="`k` must satisfy"):
            ops.extract(hidden, attn, mask, 7)


def test_compile_fullgraph_matches_eager(device):
    hidden, attn, mask, scores, retention = _inputs(device, N=12, D=8)

    def layer(hidden, attn, mask, scores, retention):
        kept = power_bert_ops.extract(hidden, attn, mask, 5)
        soft = power_bert_ops.soft_extract(hidden, scores, mask, retention)
        again = power_bert_ops.extract_scored(kept.out * 2, scores.gather(1, kept.index), kept.mask, 3)
        return kept.out.sum(-1), kept.index, soft, again.out, power_bert_ops.significance(attn, mask)

    eager = layer(hidden, attn, mask, scores, retention)
    compiled = torch.compile(layer, fullgraph=True)(hidden, attn, mask, scores, retention)
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e)


def test_compile_backward_matches_eager(device):
    hidden, attn, mask, scores, retention = _inputs(device, N=10, D=6, requires_grad=True)

    def loss(hidden, retention):
        kept = power_bert_ops.extract(hidden, attn, mask, 4)
        soft = power_bert_ops.soft_extract(hidden, scores, mask, retention)
        return (kept.out ** 2).sum() + (soft * soft).sum()

    eager = torch.autograd.grad(loss(hidden, retention), (hidden, retention))
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(hidden, retention), (hidden, retention))
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE_OPS = ("significance", "extract", "extract_scored", "extract_backward", "soft_extract",
                 "soft_extract_backward")


def test_registered_op_count_is_the_readme_s():
    # A fresh process: what `import power_bert_ops` registers, nothing a test defined.
    code = ("import torch, power_bert_ops; "
            "print(sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith('power_bert::')))")
    names = eval(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                cwd=ROOT).stdout)
    readme = open(os.path.join(ROOT, "README.md")).read()
    stated = re.search(r"registers \*\*(\d+)\*\* ops under `torch.ops.power_bert`", readme)
    assert stated, "README.md must state the registered op count"
    assert len(names) == int(stated.group(1)), names
    for name in names:  # each one named in the README's table
        assert f"`{name.split('::')[1]}`" in readme, name


def test_opcheck_with_the_reference_as_the_kernel():
    # The plain-PyTorch kernels (the CUDA kernels of a build without CUDA) behind the same ops:
    # swapped in for the CPU key, they pass the same checks as the C++ kernels.
    hidden, attn, mask, scores, retention = _inputs("cpu", requires_grad=True)
    with force_kernels("reference", "cpu", REFERENCE_OPS):
        assert all(kernel_of(op, "cpu") == "reference" for op in REFERENCE_OPS)
        torch.library.opcheck(ops.significance.default, (attn, mask, True))
        torch.library.opcheck(ops.extract.default, (hidden, attn, mask, 4, True))
        torch.library.opcheck(ops.extract_scored.default, (hidden, scores, mask, 9))
        torch.library.opcheck(ops.soft_extract.default, (hidden, scores, mask, retention))
        index = ops.extract(hidden, attn, mask, 4, True)[1]
        torch.library.opcheck(ops.extract_backward.default, (torch.randn(2, 4, 5), index, 9))
        g = torch.randn(2, 9, 5)
        torch.library.opcheck(ops.soft_extract_backward.default, (g, hidden.detach(), scores, mask, retention.detach()))
    assert all(kernel_of(op, "cpu") == "cpu" for op in REFERENCE_OPS)


@pytest.mark.skipif(not (_backend.triton_available() and os.environ.get("TRITON_INTERPRET") == "1"),
                    reason="runs the Triton kernels on CPU tensors (TRITON_INTERPRET=1)")
def test_forced_kernel_runs_forward_and_backward(monkeypatch):
    from triton_testing import record_launches

    launched = record_launches(monkeypatch)
    hidden, attn, mask, _, _ = _inputs("cpu", requires_grad=True)
    with force_kernels("triton", "cpu", _backend.OPS["extract"]):
        res = power_bert_ops.extract(hidden, attn, mask, 4)
        assert "_gather_kernel" in launched
        launched.clear()
        res.out.sum().backward()  # the backward op runs the forced kernel too
        assert launched == ["_inverse_kernel", "_scatter_kernel"]
    assert kernel_of("extract", "cpu") == "cpu" and kernel_of("extract_backward", "cpu") == "cpu"
    want = power_bert_ops.extract(hidden, attn, mask, 4)
    assert torch.equal(res.index, want.index) and torch.equal(res.out, want.out)


def test_backend_names_the_kernel_chosen_at_import():
    """backend='triton' where the device's kernel is another one is refused: the wrappers swap no
    kernel."""
    hidden, attn, mask, _, _ = _inputs("cpu")
    if _backend.triton_available():
        with pytest.MonkeyPatch.context() as m:
            m.setenv("TRITON_INTERPRET", "1")
            with pytest.raises(RuntimeError, match="backend='triton' is not the kernel of cpu tensors"):
                power_bert_ops.extract(hidden, attn, mask, 4, backend="triton")
    assert torch.equal(power_bert_ops.extract(hidden, attn, mask, 4, backend="cpu").index,
                       power_bert_ops.extract(hidden, attn, mask, 4, backend="reference").index)


def test_one_attention_decision(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for d in (8, 32, 100):
        for dtype in (torch.float16, torch.float32, torch.float64):
            assert _backend.attention_kernel_runs(cpu, dtype, d)  # the C++ kernel takes everything
            assert _backend.choose("attention", "auto", cpu, dtype, d) == "cpu"
    monkeypatch.setitem(_backend.CUDA_DEFAULTS, "_attention_forward", "triton")
    sizes = [d for d in range(1, 257) if _backend.attention_kernel_runs(cuda, torch.float16, d)]
    assert sizes == list(_checks.TRITON_ATTENTION_HEAD_SIZES) == [32, 64, 128]
    assert _backend.attention_kernel_runs(cuda, torch.float32, 128)
    assert not _backend.attention_kernel_runs(cuda, torch.float64, 64)
    assert _backend.choose("attention", "auto", cuda, torch.float16, 64) == "triton"
    assert _backend.choose("attention", "auto", cuda, torch.float16, 8) == "reference"
    monkeypatch.setitem(_backend.CUDA_DEFAULTS, "_attention_forward", None)  # triton not importable
    assert not _backend.attention_kernel_runs(cuda, torch.float16, 64)
    assert _backend.choose("attention", "auto", cuda, torch.float16, 64) == "reference"


def test_cuda_kernels_follow_what_was_built(monkeypatch):
    for built, triton, extract, others in ((True, True, "cuda", "cuda"), (False, True, "triton", "reference"),
                                           (False, False, "reference", "reference")):
        monkeypatch.setattr(_backend, "built_with_cuda", lambda: built)
        monkeypatch.setattr(_backend, "triton_available", lambda: triton)
        table = _backend._cuda_defaults()
        assert table["extract"] == table["extract_backward"] == extract
        assert table["significance"] == table["extract_scored"] == table["soft_extract"] == others
        assert table["_attention_forward"] == table["_attention_backward"] == ("triton" if triton else None)
