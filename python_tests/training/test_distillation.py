"""Distillation from the stage-1 teacher (training.distillation): the logit loss against
hand-computed values, the hidden-state loss on the kept rows against a per-example loop, the
Trainer's mixing of both, and ``power-bert retrain --distill-hidden`` end to end."""
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
from power_bert_ops.training.distillation import distillation_loss, hidden_distillation_loss, mix_distillation
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


def _teacher_student(retention, scale="relative"):
    cfg = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = BertForSequenceClassification(cfg).eval()
    student = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(teacher), retention=retention,
                                                               sequence_length=N, retention_scale=scale).eval()
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


def test_retrain_with_hidden_distillation(finished_run, workdir, tmp_path):
    """`power-bert retrain --distill-hidden 1` on a finished run's stages 1-2: the report names
    the distillation; a rerun with another weight is refused before it trains."""
    out = tmp_path / "run"
    args = retrain_args(finished_run, workdir, out, "--distill-hidden", "1")
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["distill_hidden"] == 1.0
    assert "hidden states x1" in (out / "report.md").read_text()
    assert json.loads((out / "retrain" / "settings.json").read_text())["distill_hidden"] == 1.0
    shutil.rmtree(out / "retrain" / "model")
    (out / "retrain" / "stage.json").unlink()
    args[args.index("--distill-hidden") + 1] = "0.5"
    assert cli.main(args) == 2
    assert not (out / "retrain" / "model").exists()
