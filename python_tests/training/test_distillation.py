"""Distillation from the stage-1 teacher (training.distillation): the logit loss against
hand-computed values, the hidden-state loss on the kept rows against a per-example loop, the
Trainer's mixing of both, the ranking distillation of the teacher's last-layer significance
against a per-example loop, the cache of the teacher's outputs against the live teacher, and ``power-bert retrain --distill-hidden / --distill-ranking`` end to
end."""
import copy
import json
import math
import shutil

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from power_bert_ops import cli
from power_bert_ops.flops import rows_kept
from power_bert_ops.modeling import EncoderRecord, PowerBertForSequenceClassification
from power_bert_ops.reference import significance as reference_significance
from power_bert_ops.training.distillation import (TeacherCache, distillation_loss, hidden_distillation_loss,
                                                  mix_distillation, ranking_distillation_loss, teacher_significance)
from power_bert_ops.training.trainer import PowerBertTrainer

from tiny_models import retrain_args


# -- logits ------------------------------------------------------------------------------------
def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def test_distillation_loss_against_hand_computed():
    s = [[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]]
    t = [[0.5, 0.5, 2.0], [1.0, 0.0, 0.0]]
    T = 2.0
    want = 0.0
    for srow, trow in zip(s, t):
        ps, pt = _softmax([x / T for x in srow]), _softmax([x / T for x in trow])
        want += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    want = want / 2 * T * T
    student = torch.tensor(s, requires_grad=True)
    teacher = torch.tensor(t, requires_grad=True)
    got = distillation_loss(student, teacher, T, "classification")
    assert float(got.detach()) == pytest.approx(want, rel=1e-6)
    got.backward()
    assert student.grad is not None and teacher.grad is None
    # multiple choice: the last axis holds the choices
    assert float(distillation_loss(torch.tensor(s), torch.tensor(t), T, "multiple_choice")) == pytest.approx(want, rel=1e-6)
    assert float(distillation_loss(torch.tensor(t), torch.tensor(t), T, "classification")) == pytest.approx(0, abs=1e-7)
    # regression: mean squared error, temperature not used
    reg = distillation_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [0.5]]), 5.0, "regression")
    assert float(reg) == pytest.approx((1.0 + 6.25) / 2)
    assert float(mix_distillation(torch.tensor(2.0), torch.tensor(4.0), 0.25)) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 2), T, "classification")
    with pytest.raises(ValueError):
        mix_distillation(torch.tensor(1.0), torch.tensor(1.0), 1.5)


# -- hidden states on the kept rows ---------------------------------------------------------------
N = 12


def _teacher_student(retention, scale="relative", teacher_class=BertForSequenceClassification,
                     student_class=PowerBertForSequenceClassification):
    cfg = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=len(retention), num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = teacher_class(cfg).eval()
    student = student_class.from_hf_model(copy.deepcopy(teacher), retention=retention, sequence_length=N,
                                          retention_scale=scale).eval()
    return teacher, student


def _batch(lengths):
    ids = torch.randint(5, 40, (len(lengths), N))
    ids[:, 0] = 2
    mask = torch.zeros(len(lengths), N, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}


def _hidden_loss(student, teacher, batch):
    record = EncoderRecord(hidden_states=[])
    student(**batch, power_bert_record=record)
    with torch.no_grad():
        t = teacher(**batch, output_hidden_states=True).hidden_states
    return hidden_distillation_loss(record.hidden_states, record, t), record


def test_hidden_loss_equals_per_example_loop():
    """Batched with padding and per-row k (relative retention) equals a loop over single examples
    cut to their length: per layer, the squared error summed over every example's kept rows
    divided by the teacher's squared norm summed over the same rows, then the mean over layers."""
    retention = [9, 5, 2]
    teacher, student = _teacher_student(retention)
    for p in student.parameters():  # a student that differs from its teacher
        p.data.add_(0.05 * torch.randn_like(p))
    lengths = [12, 7, 4, 10]
    batch = _batch(lengths)
    with torch.no_grad():
        got, _ = _hidden_loss(student, teacher, batch)
    sums, counts = [0.0] * 3, [0] * 3
    for b, n in enumerate(lengths):
        one = {k: v[b:b + 1, :n] for k, v in batch.items()}
        record = EncoderRecord(hidden_states=[])
        with torch.no_grad():
            student(**one, power_bert_record=record)
            t = teacher(**one, output_hidden_states=True).hidden_states
        alive = torch.arange(n)
        for j in range(3):
            if record.kept[j] is not None:
                alive = alive[record.kept[j][0]]
            assert len(alive) == rows_kept(retention, N, n, "relative")[j] or len(alive) == n
            sums[j] += float((record.hidden_states[j + 1][0] - t[j + 1][0, alive]).pow(2).sum())
            counts[j] += float(t[j + 1][0, alive].pow(2).sum())
    want = sum(s / c for s, c in zip(sums, counts)) / 3
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_hidden_loss_is_zero_up_to_the_first_pruned_layer_and_reaches_only_the_student():
    """Same weights: layers that keep every row, and the first layer that removes rows (the kept
    rows' outputs are the teacher's at those positions), match the teacher exactly; the layer
    after sees fewer rows and differs. The gradient reaches the student only."""
    teacher, student = _teacher_student([N, 6, 3], scale="absolute")
    batch = _batch([12, 12, 12])
    record = EncoderRecord(hidden_states=[])
    student(**batch, power_bert_record=record)
    t = teacher(**batch, output_hidden_states=True).hidden_states
    per_layer = []
    for j in range(3):
        pos = record.original_positions()[j]
        want = t[j + 1] if pos is None else t[j + 1].gather(1, pos[:, :, None].expand(-1, -1, 32))
        per_layer.append(float(((record.hidden_states[j + 1] - want).pow(2).sum() / want.pow(2).sum()).detach()))
    assert record.kept[0] is None and record.original_positions()[0] is None
    assert per_layer[0] == pytest.approx(0, abs=1e-10) and per_layer[1] == pytest.approx(0, abs=1e-10)
    assert per_layer[2] > 1e-6
    loss = hidden_distillation_loss(record.hidden_states, record, t)
    assert float(loss.detach()) == pytest.approx(sum(per_layer) / 3, rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    with pytest.raises(ValueError, match="same depth"):
        hidden_distillation_loss(record.hidden_states, record, t[:-1])


def test_trainer_adds_weighted_hidden_loss(tmp_path):
    """PowerBertTrainer with a teacher, no logit distillation (alpha 0) and distill_hidden = 2:
    the loss is the task loss plus 2 x the hidden-state loss of the same pass."""
    teacher, student = _teacher_student([9, 5, 2])
    batch = {**_batch([12, 8, 5, 11]), "labels": torch.tensor([0, 1, 1, 0])}
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = PowerBertTrainer(model=student, args=args, teacher=teacher, distill_alpha=0.0, distill_hidden=2.0)
    student.train()
    got = trainer.compute_loss(student, dict(batch))
    task = student(**batch).loss
    hidden, _ = _hidden_loss(student, teacher, {k: v for k, v in batch.items() if k != "labels"})
    assert float(got.detach()) == pytest.approx(float((task + 2.0 * hidden).detach()), rel=1e-5)
    assert float(hidden.detach()) > 0


@pytest.mark.parametrize("flag,key,label", [("--distill-hidden", "distill_hidden", "hidden states x1"),
                                            ("--distill-ranking", "distill_ranking", "ranking x1")])
def test_retrain_with_stage3_distillation(finished_run, workdir, tmp_path, capsys, flag, key, label):
    """`power-bert retrain --distill-hidden 1` / `--distill-ranking 1` on a finished run's stages
    1-2: the report and the stage's settings name the distillation; a rerun with another weight is
    refused before it trains, and a negative weight before any work, naming the option."""
    out = tmp_path / "run"
    args = retrain_args(finished_run, workdir, out, flag, "1")
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"][key] == 1.0
    assert label in (out / "report.md").read_text()
    assert json.loads((out / "retrain" / "settings.json").read_text())[key] == 1.0
    shutil.rmtree(out / "retrain" / "model")
    (out / "retrain" / "stage.json").unlink()
    args[args.index(flag) + 1] = "0.5"
    assert cli.main(args) == 2
    assert not (out / "retrain" / "model").exists()
    capsys.readouterr()
    bad = tmp_path / "bad"
    args = retrain_args(finished_run, workdir, bad, flag, "-1")
    assert cli.main(args) == 2
    assert f"{flag} must be a number >= 0" in capsys.readouterr().err
    assert not (bad / "retrain").exists()


# -- ranking distillation -----------------------------------------------------------------------
def _eager_teacher(teacher):
    teacher.set_attn_implementation("eager")
    return teacher


def test_differentiable_significance_equals_the_ops_and_reaches_the_attention():
    """EncoderRecord(significance_grad=[]) records, at each eliminating layer, the significance the
    layer ranked its rows by, with its gradient reaching that layer's query and key weights; the
    rows kept and the logits are those of a pass without it."""
    teacher, student = _teacher_student([9, 5, 2])
    batch = _batch([12, 7, 4, 10])
    plain = EncoderRecord(significance=[])
    with torch.no_grad():
        want = student(**batch, power_bert_record=plain).logits
    record = EncoderRecord(significance=[], significance_grad=[])
    got = student(**batch, power_bert_record=record).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for j in range(3):
        assert (record.kept[j] is None) == (plain.kept[j] is None)
        if record.kept[j] is not None:
            assert torch.equal(record.kept[j], plain.kept[j])
        s = record.significance_grad[j]
        assert s is not None and s.requires_grad and s.dtype == torch.float32
        torch.testing.assert_close(s.detach(), plain.significance[j], atol=1e-5, rtol=1e-5)
    record.significance_grad[1][torch.isfinite(record.significance_grad[1])].sum().backward()
    grads = [p.grad for n, p in student.named_parameters() if "layer.1." in n and ("query" in n or "key" in n)]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_ranking_loss_equals_per_example_loop():
    """Batched with padding and per-row k (relative retention) equals a loop over single examples
    cut to their length: per eliminating layer, the KL divergence from the teacher's last-layer
    significance to the student's, each normalised over the real rows other than [CLS], averaged
    over the examples, then over the layers."""
    retention = [9, 5, 2]
    teacher, student = _teacher_student(retention)
    teacher = _eager_teacher(teacher)
    for p in student.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    lengths = [12, 7, 4, 10]
    batch = _batch(lengths)
    record = EncoderRecord(significance_grad=[])
    with torch.no_grad():
        student(**batch, power_bert_record=record)
        t = teacher_significance(teacher(**batch, output_attentions=True), batch["attention_mask"])
        got = ranking_distillation_loss(record, t)
    per_layer = {}
    for b, n in enumerate(lengths):
        one = {k: v[b:b + 1, :n] for k, v in batch.items()}
        rec = EncoderRecord(significance=[])
        with torch.no_grad():
            student(**one, power_bert_record=rec)
            attn = teacher(**one, output_attentions=True).attentions[-1]
        t_one = reference_significance(attn, torch.ones(1, n))[0]
        alive = torch.arange(n)
        for j in range(3):
            if rec.significance[j] is not None and len(alive) > 2:
                s = rec.significance[j][0].double()
                keep = alive != 0
                ps = s[keep] / s[keep].sum()
                pt = t_one[alive][keep].double()
                pt = pt / pt.sum()
                per_layer.setdefault(j, []).append(float((pt * (pt.log() - ps.log())).sum()))
            if rec.kept[j] is not None:
                alive = alive[rec.kept[j][0]]
    want = sum(sum(v) / len(v) for v in per_layer.values()) / len(per_layer)
    assert float(got) > 1e-4
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_ranking_loss_is_zero_when_the_student_ranks_as_the_teacher_and_reaches_only_the_student():
    """A one-layer student with its teacher's weights ranks its rows by the teacher's last-layer
    significance itself: the loss is 0. With three layers it is not, and the gradient reaches the
    student only."""
    teacher, student = _teacher_student([6])
    teacher = _eager_teacher(teacher)
    batch = _batch([12, 9, 7])
    record = EncoderRecord(significance_grad=[])
    student(**batch, power_bert_record=record)
    t = teacher_significance(teacher(**batch, output_attentions=True), batch["attention_mask"])
    assert float(ranking_distillation_loss(record, t).detach()) == pytest.approx(0, abs=1e-6)

    teacher, student = _teacher_student([9, 5, 2])
    teacher = _eager_teacher(teacher)
    with torch.no_grad():  # a teacher whose last layer attends sharply: a ranking far from the student's
        teacher.bert.encoder.layer[-1].attention.self.query.weight.mul_(8.0)
    record = EncoderRecord(significance_grad=[])
    student(**batch, power_bert_record=record)
    t = teacher_significance(teacher(**batch, output_attentions=True), batch["attention_mask"])
    loss = ranking_distillation_loss(record, t)
    assert float(loss.detach()) > 1e-4  # over 1000x the one-layer case's rounding
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_ranking_loss_refuses_a_record_without_gradients_and_a_teacher_without_attentions():
    teacher, student = _teacher_student([9, 5, 2])
    batch = _batch([12, 9])
    record = EncoderRecord()
    student(**batch, power_bert_record=record)
    with pytest.raises(ValueError, match="significance_grad"):
        ranking_distillation_loss(record, torch.zeros(2, N))
    with pytest.raises(ValueError, match="attentions"):
        teacher_significance(teacher(**batch), batch["attention_mask"])
    record = EncoderRecord(significance_grad=[])
    student(**batch, power_bert_record=record)
    with pytest.raises(ValueError, match="differ in shape"):
        ranking_distillation_loss(record, torch.zeros(2, N + 1))


def test_trainer_adds_weighted_ranking_loss(tmp_path):
    """PowerBertTrainer with a teacher, no logit distillation and distill_ranking = 3: the loss is
    the task loss plus 3 x the ranking loss of the same pass (the teacher switched to eager
    attention to give its attentions)."""
    teacher, student = _teacher_student([9, 5, 2])
    batch = {**_batch([12, 8, 5, 11]), "labels": torch.tensor([0, 1, 1, 0])}
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = PowerBertTrainer(model=student, args=args, teacher=teacher, distill_alpha=0.0, distill_ranking=3.0)
    assert teacher.config._attn_implementation == "eager"
    student.train()
    got = trainer.compute_loss(student, dict(batch))
    plain = {k: v for k, v in batch.items() if k != "labels"}
    record = EncoderRecord(significance_grad=[])
    task = student(**batch, power_bert_record=record).loss
    with torch.no_grad():
        t = teacher_significance(teacher(**plain, output_attentions=True), plain["attention_mask"])
    ranking = ranking_distillation_loss(record, t)
    assert float(ranking.detach()) > 0
    assert float(got.detach()) == pytest.approx(float((task + 3.0 * ranking).detach()), rel=1e-5)
    # A second pass over the same rows (another order) takes the teacher's outputs from the cache.
    calls = _rows_through(teacher)
    order = [3, 1, 0, 2]
    again = trainer.compute_loss(student, {k: v[order] for k, v in batch.items()})
    assert calls == []
    record = EncoderRecord(significance_grad=[])
    task = student(**{k: v[order] for k, v in batch.items()}, power_bert_record=record).loss
    ranking = ranking_distillation_loss(record, t[order])
    assert float(again.detach()) == pytest.approx(float((task + 3.0 * ranking).detach()), rel=1e-5)



def _rows_through(model):
    """A list that records the batch size of each forward call of ``model``."""
    calls = []
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape[0]),
                                    with_kwargs=True)
    return calls


def _live(teacher, batch):
    with torch.no_grad():
        out = teacher(**batch, output_attentions=True)
    return out.logits, teacher_significance(out, batch.get("attention_mask"))


def _assert_same(got, want):
    assert got.shape == want.shape
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got.masked_fill(torch.isinf(got), 0), want.masked_fill(torch.isinf(want), 0),
                               rtol=1e-5, atol=1e-6)


def test_teacher_cache_equals_the_live_teacher_and_runs_it_once_per_example():
    """The cache gives the live teacher's logits and significance of a batch; a later batch of
    seen and new rows, in another order and cut to another width, runs the teacher on the new
    rows only (cut to their longest) and still equals the live teacher on that batch."""
    teacher = _eager_teacher(_teacher_student([9, 5, 2])[0])
    first = _batch([12, 8, 5, 11])
    first["token_type_ids"] = (torch.arange(N) >= 4).long().expand(4, N) * first["attention_mask"]
    cache = TeacherCache(teacher, significance=True)
    calls = _rows_through(teacher)
    logits, sig = cache(first)
    assert calls == [4] and (cache.hits, cache.misses, len(cache)) == (0, 4, 4)
    want_logits, want_sig = _live(teacher, first)
    _assert_same(logits, want_logits)
    _assert_same(sig, want_sig)

    new = _batch([7])
    new["token_type_ids"] = torch.zeros_like(new["input_ids"])
    second = {k: torch.cat([first[k][[3, 1]], new[k]])[:, :11] for k in first}  # rows of 11, 8 and 7 tokens
    calls.clear()
    logits, sig = cache(second)
    assert calls == [1] and (cache.hits, cache.misses, len(cache)) == (2, 5, 5)
    want_logits, want_sig = _live(teacher, second)
    _assert_same(logits, want_logits)
    _assert_same(sig, want_sig)
    assert sig.shape == (3, 11)


def test_teacher_cache_forgets_rows_not_met_in_the_last_epoch():
    """new_epoch() drops what the epoch before did not ask for (word-dropped copies, drawn afresh
    each epoch) and keeps the rows met every epoch, which then hit without running the teacher."""
    teacher = _eager_teacher(_teacher_student([9, 5, 2])[0])
    cache = TeacherCache(teacher, significance=True)
    originals, copies = _batch([12, 8]), [_batch([5]), _batch([6]), _batch([7])]
    calls = _rows_through(teacher)
    for epoch in range(3):
        cache.new_epoch()
        cache(originals)
        cache(copies[epoch])
        assert len(cache) == (3 if epoch == 0 else 4), "at most two epochs' copies"
    assert calls == [2, 1, 1, 1], "the originals ran once"
    cache.new_epoch()
    assert len(cache) == 3 and len(cache._sig) == 3
    cache.new_epoch()
    assert len(cache) == 0 and len(cache._sig) == 0  # nothing met since the last call


def test_teacher_cache_keys_each_input_and_leaves_other_batches_to_the_caller():
    """Two examples with the same tokens but other token types are two keys; logits alone
    (ranking off) come without significance; batches of another form are refused with a clear
    error (the trainer runs the teacher itself on them), and so is a teacher in training mode."""
    teacher = _teacher_student([9, 5, 2])[0]
    batch = _batch([12, 8])
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    cache = TeacherCache(teacher, significance=False)
    logits, sig = cache(batch)
    assert sig is None and logits.shape == (2, 2)
    other = {**batch, "token_type_ids": batch["attention_mask"].clone()}
    cache(other)
    assert (cache.hits, cache.misses) == (0, 4)
    cache(batch)
    assert (cache.hits, cache.misses) == (2, 4)
    mc = {k: v.view(1, 2, N) for k, v in batch.items()}
    assert not TeacherCache.accepts(mc)
    with pytest.raises(ValueError, match="integer tensors"):
        cache(mc)
    teacher.train()
    with pytest.raises(ValueError, match="training mode"):
        cache(batch)


def test_trainer_logit_distillation_through_the_cache(tmp_path):
    """PowerBertTrainer with logit distillation: each call's loss is the mix of the task loss and
    the KD loss against the live teacher, and the teacher runs once per distinct example across
    calls (the second pass over the same rows runs it not at all)."""
    teacher, student = _teacher_student([9, 5, 2])
    batch = {**_batch([12, 8, 5, 11]), "labels": torch.tensor([0, 1, 1, 0])}
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = PowerBertTrainer(model=student, args=args, teacher=teacher, distill_alpha=0.5, distill_ranking=0.0)
    calls = _rows_through(teacher)
    student.train()
    plain = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        want_teacher = teacher(**plain).logits
    calls.clear()
    for order in ([0, 1, 2, 3], [2, 0, 3, 1]):
        shuffled = {k: v[order] for k, v in batch.items()}
        got = trainer.compute_loss(student, dict(shuffled))
        out = student(**shuffled)
        want = mix_distillation(out.loss, distillation_loss(out.logits, want_teacher[order]), 0.5)
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    assert calls == [4]


def test_trainer_ranking_loss_on_multiple_choice(tmp_path):
    """Multiple choice: inputs [B, C, N] reach the teacher and the student as B·C rows; the ranking
    loss is that of the flattened batch (the teacher's mask flattened alike), and it reaches the
    student's eliminating layers."""
    from transformers import BertForMultipleChoice

    from power_bert_ops.modeling import PowerBertForMultipleChoice

    teacher, student = _teacher_student([9, 5, 2], teacher_class=BertForMultipleChoice,
                                        student_class=PowerBertForMultipleChoice)
    with torch.no_grad():  # a teacher whose last layer ranks its rows unlike the student
        teacher.bert.encoder.layer[-1].attention.self.query.weight.mul_(8.0)
    flat = _batch([12, 8, 5, 11, 7, 9])
    batch = {k: v.view(2, 3, N) for k, v in flat.items()}
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = PowerBertTrainer(model=student, args=args, teacher=teacher, distill_alpha=0.0, distill_ranking=2.0,
                               problem="multiple_choice")
    student.train()
    got = trainer.compute_loss(student, {**batch, "labels": torch.tensor([0, 2])})
    record = EncoderRecord(significance_grad=[])
    task = student(**batch, labels=torch.tensor([0, 2]), power_bert_record=record).loss
    with torch.no_grad():
        t = teacher_significance(teacher(**batch, output_attentions=True), flat["attention_mask"])
    assert t.shape == (6, N)
    ranking = ranking_distillation_loss(record, t)
    assert float(ranking.detach()) > 1e-4
    assert float(got.detach()) == pytest.approx(float((task + 2.0 * ranking).detach()), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_trainer_ranking_loss_under_mixed_precision(tmp_path, dtype):
    """--precision bf16 / fp16 trains under autocast with ranking distillation (the default on
    long texts): the loss and every gradient stay finite, and the ranking term is in the loss (it differs from
    the loss without it)."""
    teacher, student = _teacher_student([9, 5, 2])
    batch = {**_batch([12, 8, 5, 11]), "labels": torch.tensor([0, 1, 1, 0])}
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    losses = {}
    for weight in (0.0, 10.0):
        trainer = PowerBertTrainer(model=student, args=args, teacher=teacher, distill_alpha=0.0,
                                   distill_ranking=weight)
        student.train()
        student.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = trainer.compute_loss(student, dict(batch))
        loss.backward()
        assert torch.isfinite(loss.detach())
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        losses[weight] = float(loss.detach())
    assert losses[10.0] > losses[0.0]
