"""Bad input: a clear error naming the argument, from the Python wrappers and from the raw
torch.ops.power_bert ops (the C++ checks, for C++/TorchScript users)."""
import pytest
import torch

import power_bert_ops

ops = torch.ops.power_bert


def good(device="cpu", B=2, H=2, N=6, D=4):
    mask = torch.ones(B, N, dtype=torch.long, device=device)
    attn = torch.softmax(torch.randn(B, H, N, N, device=device), -1)
    return torch.randn(B, N, D, device=device), attn, mask


def both(op_name):
    """The wrapper and the raw op, so both paths are tested."""
    return [
        pytest.param(getattr(power_bert_ops, op_name), id="wrapper"),
        pytest.param(getattr(ops, op_name), id="torch.ops"),
    ]


@pytest.mark.parametrize("fn", both("extract"))
class TestExtract:
    def test_attn_wrong_rank(self, fn):
        h, a, m = good()
        with pytest.raises(ValueError, match=r"`attn` must be \[B, H, N, N\]"):
            fn(h, a[0], m, 2)

    def test_attn_mismatched_n(self, fn):
        h, a, m = good()
        with pytest.raises(ValueError, match="`attn`.*N = 6"):
            fn(h, a[..., :5], m, 2)

    def test_attn_mismatched_batch(self, fn):
        h, a, m = good()
        with pytest.raises(ValueError, match="`attn`.*B = 2"):
            fn(h, a[:1], m, 2)

    def test_mask_wrong_shape(self, fn):
        h, a, m = good()
        with pytest.raises(ValueError, match=r"`mask` must be \[B, N\] = \[2, 6\]"):
            fn(h, a, m[:, :5], 2)

    @pytest.mark.parametrize("k", [0, -1, 7])
    def test_k_out_of_range(self, fn, k):
        h, a, m = good()
        with pytest.raises(ValueError, match=f"`k` must satisfy 1 <= k <= N = 6, got k = {k}"):
            fn(h, a, m, k)

    def test_integer_hidden(self, fn):
        h, a, m = good()
        with pytest.raises(TypeError, match="`hidden` must be float32"):
            fn(h.long(), a, m, 2)

    def test_integer_attn(self, fn):
        h, a, m = good()
        with pytest.raises(TypeError, match="`attn` must be float32"):
            fn(h, (a * 10).int(), m, 2)

    def test_hidden_wrong_rank(self, fn):
        h, a, m = good()
        with pytest.raises(ValueError, match=r"`hidden` must be \[B, N, D\]"):
            fn(h[0], a, m, 2)

    def test_cls_is_padding(self, fn):
        h, a, m = good()
        m[1] = 0  # an all-padding row
        with pytest.raises(ValueError, match=r"position 0 \(\[CLS\]\) is padding"):
            fn(h, a, m, 2)

    def test_left_padded_row(self, fn):
        h, a, m = good()
        m[0, :2] = 0
        with pytest.raises(ValueError, match=r"\[CLS\]"):
            fn(h, a, m, 2)

    def test_complex_mask(self, fn):
        h, a, m = good()
        with pytest.raises(TypeError, match="`mask` must be bool, integer or floating"):
            fn(h, a, m.to(torch.complex64), 2)


def test_devices_differ_wrapper():
    h, a, m = good()
    with pytest.raises(ValueError, match="`attn` is on meta but `hidden` is on cpu"):
        power_bert_ops.extract(h, a.to("meta"), m, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fn", both("extract"))
def test_devices_differ_cuda(fn):
    h, a, m = good()
    with pytest.raises((ValueError, RuntimeError), match="device|on cuda|on cpu"):
        fn(h.cuda(), a, m, 2)


@pytest.mark.parametrize("fn", both("extract_scored"))
def test_extract_scored_bad_scores(fn):
    h, _, m = good()
    with pytest.raises(ValueError, match=r"`scores` must be \[B, N\] = \[2, 6\]"):
        fn(h, torch.randn(2, 5), m, 2)
    with pytest.raises(TypeError, match="`scores` must be float32"):
        fn(h, torch.ones(2, 6, dtype=torch.long), m, 2)


@pytest.mark.parametrize("fn", both("soft_extract"))
def test_soft_extract_bad_retention(fn):
    h, _, m = good()
    s = torch.randn(2, 6)
    with pytest.raises(ValueError, match=r"`retention` must be \[N\] = \[6\]"):
        fn(h, s, m, torch.ones(5))
    with pytest.raises(ValueError, match=r"`retention` must be \[N\]"):
        fn(h, s, m, torch.ones(1, 6))
    with pytest.raises(TypeError, match="`retention` must be float32"):
        fn(h, s, m, torch.ones(6, dtype=torch.long))


@pytest.mark.parametrize("fn", both("significance"))
def test_significance_bad_input(fn):
    _, a, m = good()
    with pytest.raises(ValueError, match=r"`attn` must be \[B, H, N, N\]"):
        fn(a[..., :5], m)
    with pytest.raises(ValueError, match=r"`mask` must be \[B, N\]"):
        fn(a, m[:1])
    with pytest.raises(TypeError, match="`attn` must be float32"):
        fn(a.to(torch.int8), m)


def test_unknown_backend():
    h, a, m = good()
    with pytest.raises(ValueError, match="`backend` must be one of"):
        power_bert_ops.extract(h, a, m, 2, backend="tpu")


def test_backend_device_mismatch():
    h, a, m = good()
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        power_bert_ops.extract(h, a, m, 2, backend="cuda")
    with pytest.raises(ValueError, match="no Triton kernel"):
        power_bert_ops.soft_extract(h, torch.randn(2, 6), m, torch.ones(6), backend="triton")


@pytest.mark.parametrize("k", [2.0, True, torch.tensor(2), "2"], ids=repr)
@pytest.mark.parametrize("op", ["extract", "extract_scored"])
def test_k_not_int(op, k):
    h, a, m = good()
    second = a if op == "extract" else power_bert_ops.significance(a, m)
    with pytest.raises(TypeError, match=rf"power_bert.{op}: `k` must be an int"):
        getattr(power_bert_ops, op)(h, second, m, k)


def test_k_any_integer_type():
    np = pytest.importorskip("numpy")
    h, a, m = good()
    want = power_bert_ops.extract(h, a, m, 3)
    for k in (np.int64(3), np.int32(3)):
        assert torch.equal(power_bert_ops.extract(h, a, m, k).index, want.index)


def test_meta_tensors_give_shapes():
    # Shape propagation without data (e.g. building a model on the meta device): the data
    # checks are skipped, the shape checks still run.
    h, a, m = (t.to("meta") for t in good())
    res = power_bert_ops.extract(h, a, m, 3)
    assert res.out.shape == (2, 3, 4) and res.index.shape == (2, 3) and res.mask.shape == (2, 3)
    assert power_bert_ops.extract_scored(h, torch.randn(2, 6, device="meta"), m, 2).out.shape == (2, 2, 4)
    q = torch.randn(2, 3, 6, 8, device="meta")
    out, sig = power_bert_ops.attention(q, q, q, m)
    assert out.shape == q.shape and sig.shape == (2, 6)
    with pytest.raises(ValueError, match="`k` must satisfy"):
        power_bert_ops.extract(h, a, m, 7)


def test_extract_backward_bad_index():
    with pytest.raises(TypeError, match="`index` must be int64"):
        ops.extract_backward(torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="outside"):
        ops.extract_backward(torch.randn(1, 2, 3), torch.tensor([[0, 9]]), 4)


# ---------------------------------------------------------------------------------------------
# Loose argument types: a TypeError naming the argument, before any work
# ---------------------------------------------------------------------------------------------
def _wrapper_calls(h, a, m, **kw):
    q = torch.randn(2, 2, 6, 8)
    return {
        "significance": lambda: power_bert_ops.significance(a, m, **kw),
        "extract": lambda: power_bert_ops.extract(h, a, m, 2, **kw),
        "attention": lambda: power_bert_ops.attention(q, q, q, m, **kw),
    }


@pytest.mark.parametrize("value", [None, 0, 1, "yes", torch.tensor(True)], ids=repr)
@pytest.mark.parametrize("op", ["significance", "extract", "attention"])
def test_exclude_self_must_be_a_bool(op, value):
    h, a, m = good()
    with pytest.raises(TypeError, match=rf"power_bert.{op}: `exclude_self` must be a bool"):
        _wrapper_calls(h, a, m, exclude_self=value)[op]()


def test_need_significance_must_be_a_bool():
    q = torch.randn(2, 2, 6, 8)
    with pytest.raises(TypeError, match="`need_significance` must be a bool"):
        power_bert_ops.attention(q, q, q, torch.ones(2, 6), need_significance=None)


@pytest.mark.parametrize("kind", ["numpy", "list"])
def test_arrays_and_lists_are_named(kind):
    pytest.importorskip("numpy")
    h, a, m = good()
    convert = (lambda t: t.numpy()) if kind == "numpy" else (lambda t: t.tolist())
    s = power_bert_ops.significance(a, m)
    q = torch.randn(2, 2, 6, 8)
    cases = [
        ("extract", "hidden", lambda: power_bert_ops.extract(convert(h), a, m, 2)),
        ("extract", "attn", lambda: power_bert_ops.extract(h, convert(a), m, 2)),
        ("extract", "mask", lambda: power_bert_ops.extract(h, a, convert(m), 2)),
        ("extract_scored", "hidden", lambda: power_bert_ops.extract_scored(convert(h), s, m, 2)),
        ("extract_scored", "scores", lambda: power_bert_ops.extract_scored(h, convert(s), m, 2)),
        ("extract_scored", "mask", lambda: power_bert_ops.extract_scored(h, s, convert(m), 2)),
        ("significance", "attn", lambda: power_bert_ops.significance(convert(a), m)),
        ("significance", "mask", lambda: power_bert_ops.significance(a, convert(m))),
        ("soft_extract", "hidden", lambda: power_bert_ops.soft_extract(convert(h), s, m, torch.ones(6))),
        ("soft_extract", "retention", lambda: power_bert_ops.soft_extract(h, s, m, convert(torch.ones(6)))),
        ("attention", "q", lambda: power_bert_ops.attention(convert(q), q, q, m)),
        ("attention", "v", lambda: power_bert_ops.attention(q, q, convert(q), m)),
        ("attention", "mask", lambda: power_bert_ops.attention(q, q, q, convert(m))),
    ]
    for op, name, call in cases:
        with pytest.raises(TypeError, match=rf"power_bert.{op}: `{name}` must be a torch.Tensor, got "):
            call()


def test_expanded_attn_that_would_not_fit_is_refused_before_copying(monkeypatch):
    """A stride-0 expanded attn is copied to contiguous memory by the kernels: refused first when
    the copy would not fit. Here with a low limit on a small tensor..."""
    from power_bert_ops import _checks

    h, a, m = good()
    expanded = a[:1].clone().expand(2, -1, -1, -1)  # one example's memory, seen as two
    assert not expanded.is_contiguous()
    strided = a.transpose(2, 3)  # not contiguous, but its copy is no larger than what it holds
    monkeypatch.setattr(_checks, "available_memory", lambda device: pytest.fail("a plain strided view is not checked"))
    power_bert_ops.significance(strided, m)
    monkeypatch.setattr(_checks, "available_memory", lambda device: expanded.numel() * 4 - 1)
    for call in (lambda: power_bert_ops.significance(expanded, m), lambda: power_bert_ops.extract(h, expanded, m, 2)):
        with pytest.raises(ValueError, match=r"`attn` of shape \[2, 2, 6, 6\] is not contiguous .* would take"):
            call()
    # a contiguous attn, and an expanded one that fits, are taken
    power_bert_ops.significance(a, m)
    monkeypatch.setattr(_checks, "available_memory", lambda device: expanded.numel() * 4)
    torch.testing.assert_close(power_bert_ops.significance(expanded, m), power_bert_ops.significance(
        expanded.contiguous(), m))


def test_huge_expanded_attn_is_refused_fast():
    """... and with the machine's own memory, a [1e6, 12, 4096, 4096] view (800 TB as a copy)."""
    import time

    B, H, N = 10**6, 12, 4096
    attn = torch.full((1, 1, 1, 1), 1.0 / N).expand(B, H, N, N)
    mask = torch.ones(1, 1, dtype=torch.long).expand(B, N)
    hidden = torch.zeros(1, 1, 1).expand(B, N, 8)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"significance: `attn` of shape \[1000000, 12, 4096, 4096\] is not contig"):
        power_bert_ops.significance(attn, mask)
    with pytest.raises(ValueError, match=r"extract: `attn` .* is not contiguous"):
        power_bert_ops.extract(hidden, attn, mask, 2)
    assert time.perf_counter() - start < 5


def test_reference_paths_check_like_the_kernels():
    """backend='reference' (a direct call) and the reference as the op's kernel run the op's
    checks, with the kernels' messages."""
    from power_bert_ops.testing import force_kernels

    h, a, m = good()
    with pytest.raises(ValueError, match=r"`attn` must be \[B, H, N, N\]"):
        power_bert_ops.extract(h, a[0], m, 2, backend="reference")
    with pytest.raises(ValueError, match=r"`k` must satisfy 1 <= k <= N = 6, got k = 7"):
        power_bert_ops.extract_scored(h, torch.randn(2, 6), m, 7, backend="reference")
    padded = m.clone()
    padded[1] = 0
    with pytest.raises(ValueError, match=r"position 0 \(\[CLS\]\) is padding"):
        power_bert_ops.extract(h, a, padded, 2, backend="reference")
    with pytest.raises(ValueError, match="`mask` has a row with no real token"):
        q = torch.randn(2, 2, 6, 4)
        power_bert_ops.attention(q, q, q, padded, backend="reference")
    with force_kernels("reference", "cpu", ("extract_scored", "soft_extract")):
        with pytest.raises(ValueError, match=r"`scores` must be \[B, N\] = \[2, 6\]"):
            ops.extract_scored(h, torch.randn(2, 5), m, 2)
        with pytest.raises(ValueError, match=r"`retention` must be \[N\] = \[6\]"):
            ops.soft_extract(h, torch.randn(2, 6), m, torch.ones(5))
