"""Target-driven configuration search (training.projection, training.controller, flops): projection of
learned retention masses onto a FLOP-bound target, refusal of unreachable targets, the
break-even guard and the stage-2 controller on a tiny soft-mode model with a real Trainer."""
import copy
import json
import math
import random
import time

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from power_bert_ops.flops import check_target, flop_bound, max_reachable_speedup, retention_for_bound, soft_bound
from power_bert_ops.modeling import PowerBertForSequenceClassification
from power_bert_ops.modeling.configuration_power_bert import derive_retention
from power_bert_ops.training.controller import TargetController
from power_bert_ops.training.projection import TargetUnreachableError, apply_break_even, project_to_target
from power_bert_ops.training.trainer import ClampRetentionCallback, PowerBertTrainer

TARGETS = (1.5, 2.0, 3.0, 4.5, 6.0, 8.0)
MODELS = {"minilm": (384, 1536), "base": (768, 3072), "narrow": (256, 1024)}


def _valid(ell, n, L):
    return len(ell) == L and all(1 <= a <= n for a in ell) and all(b <= a for a, b in zip(ell, ell[1:]))


def _learned_masses(n, L, seed):
    """Non-trivial learned-looking masses: decreasing with noise, some layers not monotone."""
    rng = random.Random(seed)
    return [n * (0.9 ** j) * rng.uniform(0.3, 1.0) for j in range(1, L + 1)]


# -- projection --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [64, 128, 512])
@pytest.mark.parametrize("L", [6, 12, 24])
def test_projection_reaches_every_target(n, L):
    t0 = time.time()
    for k, (name, (D, F)) in enumerate(MODELS.items()):
        dims = (D, L, F)
        for i, X in enumerate(TARGETS):
            masses = _learned_masses(n, L, seed=100 * k + i)
            ell = project_to_target(masses, dims, n, X)
            assert _valid(ell, n, L), ell
            b = flop_bound(dims, ell, n)
            assert abs(b / X - 1) <= 0.03, (name, X, ell, b)
    assert time.time() - t0 < 20


def test_projection_takes_retention_vectors_and_configs():
    cfg = BertConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128)
    r = torch.rand(4, 64, generator=torch.Generator().manual_seed(0))
    ell_r = project_to_target(r, cfg, 64, 2.5)
    ell_m = project_to_target(r.sum(1).tolist(), (64, 4, 128), 64, 2.5)
    assert ell_r == ell_m
    assert abs(flop_bound(cfg, ell_r, 64) / 2.5 - 1) <= 0.03


@pytest.mark.parametrize("X", [2.0, 4.5])
def test_projection_keeps_a_learned_shape(X):
    """Masses that already meet the target come back (almost) unchanged; masses with the same
    shape at another level are scaled to it."""
    dims, n = (768, 12, 3072), 256
    ell0 = retention_for_bound(dims, n, X)
    ell = project_to_target([float(a) for a in ell0], dims, n, X)
    assert max(abs(a - b) for a, b in zip(ell, ell0)) <= 2, (ell, ell0)
    # the same shape at other levels (a search that eliminated too little, or too much)
    for factor in (2.0, 0.5):
        ell2 = project_to_target([factor * a for a in ell0], dims, n, X)
        assert max(abs(a - b) for a, b in zip(ell2, ell0)) <= 3, (factor, ell2, ell0)


def test_projection_of_the_failure_case_reaches_the_target():
    """A configuration no better than dense: a search that ended at ℓ = [64, 63, 62, 62, 62, 62] (bound 1.02)."""
    dims, n = (384, 6, 1536), 64
    masses = [63.2, 62.4, 61.5, 61.9, 61.1, 61.3]
    assert flop_bound(dims, derive_retention(masses, n), n) < 1.05
    ell = project_to_target(masses, dims, n, 3.0)
    assert abs(flop_bound(dims, ell, n) / 3 - 1) <= 0.03 and _valid(ell, n, 6)


def test_projection_on_a_coarse_grid_is_exact_or_says_so():
    # N = 16, BERT-base width, 2 layers: the grid near 3x needs both layers to move several rows
    # (the closest is [6, 1] at 2.97, found by the exact fallback).
    dims = (768, 2, 3072)
    ell = project_to_target([10.0, 9.0], dims, 16, 3.0)
    assert abs(flop_bound(dims, ell, 16) / 3 - 1) <= 0.03, ell
    # 4.5x has no configuration within 3% at all: [2, 1] gives 4.718 and [3, 1] below 4.3.
    with pytest.raises(TargetUnreachableError, match=r"\[2, 1\] with 4\.7178"):
        project_to_target([10.0, 9.0], dims, 16, 4.5)
    ell = project_to_target([10.0, 9.0], dims, 16, 4.5, strict=False)
    assert ell == [2, 1]


# -- targets refused up front ------------------------------------------------------------------
def test_max_reachable_and_bad_targets_refused():
    cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    top = max_reachable_speedup(cfg, 64)
    assert top == pytest.approx(flop_bound(cfg, [1] * 6, 64))
    assert check_target(3.0, cfg, 64) == pytest.approx(top)
    assert check_target(top, cfg, 64) == pytest.approx(top)
    for bad in (0.5, 0.999, float("nan"), float("inf"), top * 1.01, "fast"):
        with pytest.raises(ValueError, match=f"{top:.3f}"):
            check_target(bad, cfg, 64)
    with pytest.raises(ValueError, match=f"{top:.3f}"):
        project_to_target([30.0] * 6, cfg, 64, top + 1)
    with pytest.raises(ValueError, match="largest reachable"):
        TargetController(top * 2, cfg, 64)
    t0 = time.perf_counter()
    for _ in range(100):
        check_target(3.0, cfg, 512)
    assert time.perf_counter() - t0 < 0.5, "check_target must be cheap enough to call before training"


# -- break-even guard --------------------------------------------------------------------------
def test_break_even_guard():
    n, dims = 64, (384, 6, 1536)
    assert apply_break_even([64, 63, 62, 62, 62, 62], n, 0.9) == [64] * 6
    # a layer dropping 30% stays; the 2-row drop after it is removed; the bound floor is respected
    assert apply_break_even([60, 42, 40, 20, 20, 19], n, 0.9) == [64, 42, 42, 20, 20, 20]
    ell = [40, 38, 20, 19, 10, 10]
    floor = flop_bound(dims, ell, n) * 0.99
    out = apply_break_even(ell, n, 0.9, config=dims, min_bound=floor)
    assert flop_bound(dims, out, n) >= floor and out != ell and _valid(out, n, 6)
    with pytest.raises(ValueError):
        apply_break_even([10, 20], n, 0.9)


@pytest.mark.parametrize("X", [1.5, 3.0, 6.0])
def test_projection_with_break_even_guard(X):
    n, dims, theta = 128, (768, 12, 3072), 0.9
    masses = _learned_masses(n, 12, seed=7)
    plain = project_to_target(masses, dims, n, X)
    ell = project_to_target(masses, dims, n, X, keep_threshold=theta)
    assert abs(flop_bound(dims, ell, n) / X - 1) <= 0.03 and _valid(ell, n, 12)
    prev = [n] + ell[:-1]
    small = [j for j in range(12) if theta < ell[j] / prev[j] < 1]
    plain_prev = [n] + plain[:-1]
    plain_small = [j for j in range(12) if theta < plain[j] / plain_prev[j] < 1]
    assert len(small) <= len(plain_small)
    assert not small or len(small) < len(plain_small)


# -- the controller on a tiny soft-mode model --------------------------------------------------
N_TINY = 32


def _tiny_data(size, seed):
    """Token 7 somewhere in the text <=> label 1 (the model must keep that token's row)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(size):
        length = int(torch.randint(8, N_TINY + 1, (1,), generator=g))
        ids = torch.randint(8, 40, (N_TINY,), generator=g)
        ids[0], ids[length:] = 2, 0
        label = int(torch.rand(1, generator=g) < 0.5)
        if label:
            ids[int(torch.randint(1, length, (1,), generator=g))] = 7
        mask = torch.zeros(N_TINY, dtype=torch.long)
        mask[:length] = 1
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(label)})
    return rows


def _args(tmp_path, epochs, batch, lr):
    return TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=batch, num_train_epochs=epochs,
                             learning_rate=lr, warmup_steps=0.1, lr_scheduler_type="linear", report_to=[],
                             save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """The tiny models train several times faster on one thread of a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, one_thread):
    """A 3-layer BERT (hidden 32) fine-tuned on the token-7 task: the stage-1 model."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=N_TINY, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    hf = BertForSequenceClassification(cfg)
    Trainer(model=hf, args=_args(tmp_path_factory.mktemp("s1"), 4, 16, 3e-3), train_dataset=_tiny_data(384, 1)).train()
    return hf


def _search(hf, tmp_path, size, target, **kw):
    torch.manual_seed(0)
    model = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(hf), mode="soft", sequence_length=N_TINY)
    model.train()
    trainer = PowerBertTrainer(model=model, args=_args(tmp_path, 3, 8, 1e-4), train_dataset=_tiny_data(size, 3),
                               lam=1e-3, lr_soft=1e-3, callbacks=[ClampRetentionCallback()])
    ctl = TargetController(target, model.config, N_TINY, **kw).attach(trainer)
    trainer.train()
    return model, trainer, ctl


@pytest.mark.parametrize("size,whole", [(64, False), (384, False), (384, True)])
def test_controller_drives_the_bound_to_the_target(stage1, tmp_path, size, whole):
    X = 3.0
    model, trainer, ctl = _search(stage1, tmp_path, size, X, **(dict(steps=True, reach=6.0) if whole else {}))
    steps = math.ceil(size / 8) * 3
    assert len(ctl.history) == steps
    assert trainer.lam == 0.0  # decoupled mode: no λ term in the loss
    # r's learning rate was set so one entry can travel `travel` units over the whole schedule
    assert ctl.lr_soft * ctl._factor_sum == pytest.approx(ctl.travel)
    assert trainer.optimizer.param_groups[-1]["initial_lr"] == pytest.approx(ctl.lr_soft)
    start, end = ctl.history[0]["soft_bound"], soft_bound(model.retention_masses().tolist(), model.config, N_TINY)
    assert start < 1.6
    assert abs(math.log(end / X)) < math.log(1.25), (size, [round(h["soft_bound"], 2) for h in ctl.history])
    assert ctl.bound == pytest.approx(end)
    ell = ctl.final_retention(model)
    assert abs(flop_bound(model.config, ell, N_TINY) / X - 1) <= 0.03
    s = ctl.settings()
    assert s["target"] == X and s["steps"] == steps and s["method"] == "controller-decoupled+projection"
    assert model.config.soft_like_hard is whole and s["retention_shape"] == ("step" if whole else "box")
    if whole:  # every step left r a step of its mass: whole rows kept or dropped, one fraction
        r = model.retention_params.detach()
        mass = r.sum(dim=1, keepdim=True)
        torch.testing.assert_close(r, (mass - torch.arange(N_TINY)).clamp(0, 1))
        assert torch.all(mass >= 1)


def test_controller_schedule_weights_and_observe():
    ctl = TargetController(2.0, (32, 3, 64), 32)
    w = ctl.schedule_weights(10, lambda s: min(1.0, (s + 1) / 2))
    assert len(w) == 10 and sum(w) == pytest.approx(1.0) and w[0] < w[5]
    assert ctl.peak_lr() == pytest.approx(2.0 / sum(min(1.0, (s + 1) / 2) for s in range(10)))
    u1 = ctl.observe([32.0, 32.0, 32.0], 0)  # bound 1 < 2: push toward elimination
    assert u1 > 0
    ctl.integral = 0.0
    u2 = ctl.observe([1.0, 1.0, 1.0], 1)  # bound at its maximum > 2: push back
    assert u2 < 0


@pytest.mark.parametrize("reach", [1.0, 3.0])
def test_pressure_weights(stage1, reach):
    u, expected = 1.0, [reach / 3, 2 * reach / 3, reach]  # the deepest layer moves by `reach` Adam steps
    model = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(stage1), mode="soft",
                                                             sequence_length=N_TINY)
    with torch.no_grad():
        model.retention_params.fill_(0.5)
    ctl = TargetController(2.0, model.config, N_TINY, u_max=2.0, reach=reach, steps=False)
    ctl.u = u
    ctl.apply_pressure_(model, lr=0.01)
    moved = (0.5 - model.retention_params[:, 1:]).mean(dim=1) / 0.01
    assert moved.tolist() == pytest.approx(expected, rel=1e-4)
    # on steps: each layer's mass changes by N times the entry-wise pressure, whichever way u pushes
    for u in (1.0, -1.0):
        with torch.no_grad():
            model.retention_params.fill_(0.5)
        stepped = TargetController(2.0, model.config, N_TINY, reach=reach, steps=True)
        stepped.u = u
        stepped.apply_pressure_(model, lr=0.01)
        r = model.retention_params.detach()
        mass = torch.tensor([16 - N_TINY * 0.01 * u * e for e in expected])
        torch.testing.assert_close(r.sum(dim=1), mass)
        torch.testing.assert_close(r, (mass[:, None] - torch.arange(N_TINY)).clamp(0, 1))
    with pytest.raises(ValueError, match="reach must be > 0"):
        TargetController(2.0, model.config, N_TINY, reach=0)


def test_controller_state_round_trip():
    a = TargetController(2.0, (32, 3, 64), 32)
    a.schedule_weights(10)
    for i, m in enumerate(([32.0] * 3, [20.0] * 3, [10.0] * 3)):
        a.observe(m, i)
    state = json.loads(json.dumps(a.state()))  # what trainer_state.json stores
    b = TargetController(**state["args"]).load_state(state)
    assert (b.integral, b.u, b.bound, b.history) == (a.integral, a.u, a.bound, a.history)
    b.schedule_weights(10)
    assert b.observe([8.0] * 3, 3) == a.observe([8.0] * 3, 3)
    with pytest.raises(ValueError, match="target is 2.0, this search's 3.0"):
        TargetController(3.0, (32, 3, 64), 32).load_state(state)


# -- the end of the search -----------------------------------------------------------------------
def test_search_runs_its_planned_steps_then_ends_once_the_bound_held(stage1, tmp_path):
    """With planned_steps below max_steps the search trains at least planned_steps, then stops at
    the first step where the soft bound has been within 5% of X for 25% of its steps."""
    X = 1.5
    model, trainer, ctl = _search(stage1, tmp_path, 64, X, planned_steps=8)  # max_steps: 3 epochs x 8 = 24
    steps = len(ctl.history)
    assert 8 <= steps < 24, [round(h["soft_bound"], 3) for h in ctl.history]
    assert trainer.state.global_step == steps and ctl.held()
    within = [abs(h["soft_bound"] / X - 1) <= 0.05 for h in ctl.history]
    assert within[-1] and sum(within) >= 0.25 * steps
    if steps > 8:  # it ends at the first step after the planned ones where the bound has held
        assert not (within[-2] and sum(within[:-1]) >= 0.25 * (steps - 1))
    # the learning rate of r is set for `travel` over the planned steps, not over max_steps
    assert ctl.lr_soft * ctl._factor_sum == pytest.approx(ctl.travel)
    assert sum(ctl._weights[:8]) == pytest.approx(1.0) and len(ctl._weights) == 24
    s = ctl.settings()
    assert s["planned_steps"] == 8 and s["held"] is True and s["held_steps"] == sum(within)


def test_search_that_cannot_hold_runs_to_its_cap(stage1, tmp_path):
    model, trainer, ctl = _search(stage1, tmp_path, 64, 3.0, planned_steps=8, travel=0.01)  # r can barely move
    assert len(ctl.history) == 24 and not ctl.held() and ctl.settings()["held"] is False
