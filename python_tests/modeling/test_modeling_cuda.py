"""PoWER-BERT model on CUDA (skipped without a GPU): hard mode equals the SPEC 1.2 reference,
the inference path never synchronises with the host, torch.compile with CUDA graphs
(mode="reduce-overhead") equals eager, fp16 / bf16 run, dynamic padding."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from test_modeling import ATOL, _layers, inputs, random_retention, reference_logits, tiny_hf, wrap  # noqa: E402


def to_cuda(batch):
    return {k: v.cuda() for k, v in batch.items()}


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "electra"])
def test_cuda_hard_matches_reference(family):
    hf = tiny_hf(family, seed=2)
    retention = random_retention(len(_layers(hf)), 20, seed=5)
    power = wrap(hf, retention=retention).cuda()
    batch = inputs((5, 20), pair=family != "roberta", seed=6)
    with torch.no_grad():
        got = power(**to_cuda(batch)).logits.cpu()
    torch.testing.assert_close(got, reference_logits(hf, retention, **batch), atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["full", "hard", "soft"])
def test_cuda_forward_does_not_synchronise(mode):
    hf = tiny_hf("bert", seed=3)
    power = wrap(hf, retention=[12, 7, 3] if mode == "hard" else None, mode=mode, sequence_length=16).cuda()
    _runs_without_host_sync(power, to_cuda(inputs((4, 16), pair=True)))


def _runs_without_host_sync(power, batch) -> None:
    """A forward of ``power`` on ``batch`` after a warm-up (lazy initialisation, Triton
    compilation) under set_sync_debug_mode("error"): any host synchronisation raises."""
    with torch.no_grad():
        power(**batch)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            power(**batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_cuda_graphs_compile_matches_eager():
    hf = tiny_hf("bert", seed=4)
    power = wrap(hf, retention=[12, 7, 3]).cuda()
    batch = to_cuda(inputs((4, 16), pair=True))
    compiled = torch.compile(power, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        eager = power(**batch).logits.clone()
        for _ in range(3):  # recording, then replays
            got = compiled(**batch).logits.clone()
    torch.testing.assert_close(got, eager, atol=ATOL * 10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision(dtype):
    hf = tiny_hf("bert", seed=5)
    power = wrap(hf, retention=[12, 7, 3]).cuda()
    batch = to_cuda(inputs((4, 16), pair=True))
    with torch.no_grad():
        ref = power(**batch).logits
        low = power.to(dtype)(**batch).logits
    assert low.dtype == dtype and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0)


def test_cuda_dynamic_padding():
    hf = tiny_hf("bert", seed=6)
    retention = [40, 30, 9]
    power = wrap(hf, retention=retention).cuda()
    batch = inputs((4, 14), lengths=[14, 11, 6, 3], pair=True)
    with torch.no_grad():
        got = power(**to_cuda(batch)).logits.cpu()
    torch.testing.assert_close(got, reference_logits(hf, retention, **batch), atol=1e-4, rtol=0)


def test_cuda_soft_backward():
    hf = tiny_hf("bert", seed=7)
    soft = wrap(hf, mode="soft", sequence_length=12).cuda().train()
    batch = to_cuda(inputs((4, 12), pair=True))
    out = soft(**batch, labels=torch.tensor([0, 1, 1, 0], device="cuda"))
    (out.loss + soft.retention_loss(1e-3)).backward()
    assert soft.retention_params.grad is not None and torch.isfinite(soft.retention_params.grad).all()


def _bert_with_head_size(d, seed=7):
    from transformers import AutoModelForSequenceClassification

    from test_modeling import tiny_config

    torch.manual_seed(seed)
    cfg = tiny_config("bert")
    cfg.num_attention_heads, cfg.hidden_size, cfg.intermediate_size = 2, 2 * d, 4 * d
    return AutoModelForSequenceClassification.from_config(cfg).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_fused_and_eager_attention_paths_agree(dtype):
    # head size 32: "auto" runs the fused Triton attention; "eager" forms the probabilities.
    hf = _bert_with_head_size(32)
    power = wrap(hf, retention=[14, 9, 4]).cuda().to(dtype)
    batch = to_cuda(inputs((4, 20), pair=True, seed=3))
    with torch.no_grad():
        fused = power(**batch).logits.float()
        power.config.power_attention = "eager"
        eager = power(**batch).logits.float()
    torch.testing.assert_close(eager, fused, atol=1e-4 if dtype == torch.float32 else 2e-2, rtol=0)
    if dtype == torch.float32:
        torch.testing.assert_close(fused.cpu(), reference_logits(hf, [14, 9, 4], **inputs((4, 20), pair=True, seed=3)),
                                   atol=1e-4, rtol=0)


def test_cuda_head_size_without_fused_kernel_runs_eager_or_fails_clearly():
    # The tiny models' head size 8 has no Triton kernel: "auto" takes the eager path (the other
    # CUDA tests rely on it); "fused" names the problem.
    hf = tiny_hf("bert", seed=8)
    power = wrap(hf, retention=[12, 7, 3]).cuda()
    batch = inputs((3, 16), pair=True)
    with torch.no_grad():
        got = power(**to_cuda(batch)).logits.cpu()
        torch.testing.assert_close(got, reference_logits(hf, [12, 7, 3], **batch), atol=1e-4, rtol=0)
        power.config.power_attention = "fused"
        with pytest.raises(ValueError, match="head size d = 8 is not supported"):
            power(**to_cuda(batch))


# ------------------------------------------------------------------------------------------------
# Relative retention (SPEC 1.6) on CUDA: per-row k through the CUDA extract_scored kernel
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("min_rows,short", [(1, None), (3, None), (3, 6)])
def test_cuda_relative_equals_per_example_reference(min_rows, short):
    """Each example keeps its own k_j(x) rows: the batched CUDA model equals a loop over single
    examples cut to their real length, each with its k_j(x) as an absolute ℓ (CPU reference)."""
    from power_bert_ops.flops import rows_kept

    hf = tiny_hf("bert", seed=11)
    N, retention = 20, [15, 9, 1]
    power = wrap(hf, retention=retention, sequence_length=N, retention_scale="relative", min_rows=min_rows).cuda()
    power.config.min_rows_max_length = short
    batch = inputs((6, N), lengths=[20, 17, 11, 6, 3, 2], pair=True, seed=12)
    with torch.no_grad():
        got = power(**to_cuda(batch)).logits.cpu()
    for b, length in enumerate(batch["attention_mask"].sum(1).tolist()):
        one = {k: v[b:b + 1, :length] for k, v in batch.items()}
        ref = reference_logits(hf, rows_kept(retention, N, length, "relative", min_rows, short), **one)
        torch.testing.assert_close(got[b:b + 1], ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("min_rows,short", [(1, None), (3, None), (3, 6)])
def test_cuda_relative_forward_does_not_synchronise(min_rows, short):
    """The static-cap path: each layer's width comes from ℓ_j and the batch width, the per-row k
    from the lengths on the device (each example's floor too, with a length limit); nothing is
    read back to the host."""
    hf = tiny_hf("bert", seed=13)
    power = wrap(hf, retention=[12, 7, 1], sequence_length=16, retention_scale="relative",
                 min_rows=min_rows).cuda()
    power.config.min_rows_max_length = short
    _runs_without_host_sync(power, to_cuda(inputs((4, 16), lengths=[16, 9, 4, 2], pair=True)))


def test_cuda_per_row_extract_does_not_synchronise_with_width():
    """The op torch.ops.power_bert.extract_scored with a per-row k and its width runs the CUDA
    kernel without a host read (the model calls the op; the public wrapper's check of the values
    of k reads them in eager mode and is skipped under torch.compile and capture)."""
    B, N, D, W = 5, 24, 16, 9
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(B, N, D, device="cuda", generator=g)
    scores = torch.randn(B, N, device="cuda", generator=g)
    mask = torch.ones(B, N, dtype=torch.long, device="cuda")
    row_k = torch.tensor([1, 3, 9, 5, 2], device="cuda")
    ops = torch.ops.power_bert
    want = ops.extract_scored(hidden, scores, mask, W, row_k)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = ops.extract_scored(hidden, scores, mask, W, row_k)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert got[2].sum(1).tolist() == row_k.tolist()


def test_cuda_graphs_compile_relative_matches_eager():
    hf = tiny_hf("bert", seed=14)
    power = wrap(hf, retention=[12, 7, 1], sequence_length=16, retention_scale="relative", min_rows=3).cuda()
    batch = to_cuda(inputs((4, 16), lengths=[16, 10, 5, 2], pair=True))
    compiled = torch.compile(power, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        eager = power(**batch).logits.clone()
        for _ in range(3):
            got = compiled(**batch).logits.clone()
    torch.testing.assert_close(got, eager, atol=ATOL * 10, rtol=0)


def _recording_launches(monkeypatch) -> list:
    from triton_testing import record_launches  # here: importing it skips a module without triton

    return record_launches(monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_relative_fused_attention(dtype, monkeypatch):
    # head size 32: the fused Triton attention feeds the per-row selection.
    hf = _bert_with_head_size(32, seed=15)
    power = wrap(hf, retention=[14, 9, 1], sequence_length=20, retention_scale="relative", min_rows=3).cuda().to(dtype)
    batch = inputs((5, 20), lengths=[20, 14, 8, 3, 2], pair=True, seed=16)
    launched = _recording_launches(monkeypatch)
    with torch.no_grad():
        power.config.power_attention = "fused"
        fused = power(**to_cuda(batch)).logits.float()
        assert "_significance_kernel" in launched  # the eliminating layers ran the fused kernels
        power.config.power_attention = "eager"
        eager = power(**to_cuda(batch)).logits.float()
    torch.testing.assert_close(eager, fused, atol=1e-4 if dtype == torch.float32 else 3e-2, rtol=0)
    if dtype == torch.float32:
        cpu = wrap(hf, retention=[14, 9, 1], sequence_length=20, retention_scale="relative", min_rows=3)
        with torch.no_grad():
            torch.testing.assert_close(fused.cpu(), cpu(**batch).logits, atol=1e-4, rtol=0)


def test_cuda_graphs_compile_fused_attention_matches_eager(monkeypatch):
    """The deployment the README recommends on a GPU: torch.compile(mode="reduce-overhead") over
    the model whose layers run the fused Triton attention (head size 64, fp16, relative)."""
    hf = _bert_with_head_size(64, seed=17)
    power = wrap(hf, retention=[24, 12, 3], sequence_length=32, retention_scale="relative",
                 min_rows=3).cuda().half()
    batch = to_cuda(inputs((8, 32), lengths=[32, 30, 25, 17, 12, 6, 3, 2], pair=True, seed=18))
    launched = _recording_launches(monkeypatch)
    with torch.no_grad():
        eager = power(**batch).logits.float()
        assert "_attn_fwd_kernel" in launched
        compiled = torch.compile(power, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):  # recording, then replays
            got = compiled(**batch).logits.float().clone()
    torch.testing.assert_close(got, eager, atol=2e-2, rtol=0)


def test_cuda_measure_speedup_under_cuda_graphs():
    """`power-bert benchmark --compile` on CUDA: both models under CUDA graphs (reduce-overhead)
    over bucketed batches of several widths and a padded one; the compiled logits equal eager."""
    from power_bert_ops.training.speed import measure_speedup

    hf = _bert_with_head_size(64, seed=19)
    power = wrap(hf, retention=[24, 12, 3], sequence_length=32, retention_scale="relative", min_rows=3)
    data = inputs((24, 32), lengths=[32, 30, 25, 17, 12, 6, 3, 2] * 3, pair=True, seed=20)
    rows = [{k: v[i] for k, v in data.items()} for i in range(24)]
    # float32: no 16-bit near-ties of significance that could keep another row
    r = measure_speedup(hf, power, rows, 5, "cuda", dtype=torch.float32, repeats=2, compile=True)
    assert r["compile"] == "reduce-overhead" and r["compile_seconds"] > 0
    assert 0 <= r["compile_max_abs_diff"] < 1e-3 and r["compile_rows_checked"] == 2 * (5 + 4 + 5)
    assert r["compile_predictions_differ"] == 0
    assert r["batches"] == 5 and r["examples"] == 24 and r["speedup"] > 0 and r["padded"]["speedup"] > 0
