"""The threshold rule's calibration and the FLOP bound of the rows a model kept
(training.thresholds), on a tiny random BERT and sentence-like lengths."""
import json
import re
import shutil

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from power_bert_ops import cli
from power_bert_ops.flops import FlopModel, rows_kept
from power_bert_ops.modeling import EncoderRecord, PowerBertForSequenceClassification
from power_bert_ops.training.artifacts import load_model
from power_bert_ops.training.speed import speed_report
from power_bert_ops.training.thresholds import calibrate_thresholds, kept_rows, rows_bound

from tiny_models import retrain_args

N = 24


def _model(retention, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=N, initializer_range=0.2)
    hf = BertForSequenceClassification(cfg).eval()
    return PowerBertForSequenceClassification.from_hf_model(hf, retention=retention, sequence_length=N,
                                                            retention_scale="relative").eval()


def _dataset(count=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        length = int(torch.randint(4, N + 1, (1,), generator=g))
        mask = (torch.arange(N) < length).long()
        ids = torch.randint(5, 100, (N,), generator=g) * mask
        rows.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros(N, dtype=torch.long),
                     "labels": torch.tensor(0)})
    return rows


def test_kept_rows_of_top_k_match_its_rule_and_its_bound():
    """kept_rows (bucketed batches, restored to dataset order) of a relative top-k model equals
    each example's k_j(x); rows_bound of them equals FlopModel's bound of ℓ over those lengths."""
    retention = [24, 15, 9, 3]
    model, data = _model(retention), _dataset()
    lengths = [int(r["attention_mask"].sum()) for r in data]
    rows = kept_rows(model, data, batch_size=8)
    assert rows.tolist() == [rows_kept(retention, N, n, "relative") for n in lengths]
    unpadded = [{k: v[:n] if v.dim() else v for k, v in r.items()} for r, n in zip(data, lengths)]
    assert torch.equal(kept_rows(model, unpadded, batch_size=8), rows)  # training data: dynamic padding
    want = FlopModel(model.config, N, lengths=lengths, scale="relative").bound(retention)
    assert rows_bound(model.config, lengths, rows) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="expected"):
        rows_bound(model.config, lengths, rows[:, :3])


@pytest.mark.parametrize("min_rows,short", [(3, None), (5, None), (3, 12)])
def test_threshold_rule_keeps_the_floor_of_rows(min_rows, short):
    """Relative retention with a floor: the threshold rule keeps at least min(len, min_rows) rows
    of every example (of at most ``short`` tokens when given) in every layer (a 3-token example
    keeps all 3 even at θ = 0.9), and θ is calibrated to ℓ's rows counting that floor."""
    from power_bert_ops.flops import row_floors

    retention = [24, 14, 14, 1]
    model = _model(retention, seed=2)
    model.config.min_rows, model.config.min_rows_max_length = min_rows, short
    data = _dataset(60, seed=3)
    data[0]["attention_mask"] = (torch.arange(N) < 3).long()
    lengths = [int(r["attention_mask"].sum()) for r in data]
    floors = torch.minimum(torch.tensor(lengths), row_floors(torch.tensor(lengths), "relative", min_rows, short))
    assert short is None or {int(f) for f in floors} == {1, 3}
    model.set_thresholds([0.9] * 4)
    rows = kept_rows(model, data, batch_size=16)
    assert rows[0].tolist() == [3, 3, 3, 3]
    assert bool((rows >= floors[:, None]).all())
    out = calibrate_thresholds(model, data, batch_size=16)
    rows = kept_rows(model, data, batch_size=16)
    top_k = torch.tensor([rows_kept(retention, N, n, "relative", min_rows, short) for n in lengths])
    assert bool((rows >= floors[:, None]).all())
    for j in (1, 3):
        assert int(top_k[:, j].sum()) - 2 <= int(rows[:, j].sum()) <= int(top_k[:, j].sum())
        assert out["rows"][j] == pytest.approx(float(rows[:, j].double().mean()))


def test_calibrated_thresholds_keep_as_many_rows_as_top_k():
    retention = [24, 14, 14, 1]
    model, data = _model(retention, seed=2), _dataset(60, seed=3)
    lengths = [int(r["attention_mask"].sum()) for r in data]
    out = calibrate_thresholds(model, data, batch_size=16)
    assert out["thresholds"][0] is None and out["thresholds"][2] is None  # ℓ drops in layers 2 and 4 only
    assert all(0 < out["thresholds"][j] < 1 for j in (1, 3))
    assert model.config.thresholds == out["thresholds"]
    rows = kept_rows(model, data, batch_size=16)
    top_k = torch.tensor([rows_kept(retention, N, n, "relative") for n in lengths])
    for j in (1, 3):
        # each θ_j keeps the top-k rule's total, counting the row every example keeps at least
        assert int(top_k[:, j].sum()) - 2 <= int(rows[:, j].sum()) <= int(top_k[:, j].sum())
        assert out["rows"][j] == pytest.approx(float(rows[:, j].double().mean()))
    assert not torch.equal(rows, top_k)  # the same total, spread over the examples differently
    bound = rows_bound(model.config, lengths, rows)
    assert bound == pytest.approx(FlopModel(model.config, N, lengths=lengths, scale="relative").bound(retention),
                                  rel=0.1)
    # an example scored alone keeps what it kept in its batch
    for i in (0, 7, 33):
        one = {k: v[None, :lengths[i]] for k, v in data[i].items() if k != "labels"}
        record = EncoderRecord()
        with torch.no_grad():
            model(**one, power_bert_record=record)
        assert [int(m.sum()) for m in record.masks] == rows[i].tolist()


def test_speed_report_bounds_a_threshold_model_by_the_rows_it_kept():
    """The bound `power-bert benchmark` prints for a model under the threshold rule is that of the
    rows it kept of the timed examples (bucketed), and of the same rows after full-width layers
    before its first eliminating one (padded); not the bound of the ℓ it was calibrated against."""
    retention = [24, 12, 6, 2]
    model, data = _model(retention, seed=4), _dataset(24, seed=5)
    lengths = [int(r["attention_mask"].sum()) for r in data]
    calibrate_thresholds(model, data[:16], batch_size=8)
    assert model.config.thresholds[0] is None  # ℓ_1 = N: layer 1 keeps every row
    dense = BertForSequenceClassification(model.model.config).eval()  # the wrapped model's weights, dense
    dense.load_state_dict(model.model.state_dict())
    speed = speed_report(dense, model, [{k: v for k, v in r.items() if k != "labels"} for r in data], 8, "cpu",
                         repeats=1)
    rows = kept_rows(model, data, batch_size=8)
    assert speed["flop_bound"] == pytest.approx(rows_bound(model.config, lengths, rows), rel=1e-12)
    padded = rows.clone()
    padded[:, 0] = N
    assert speed["padded"]["flop_bound"] == pytest.approx(rows_bound(model.config, [N] * len(data), padded), rel=1e-12)
    top_k = FlopModel(model.config, N, lengths=lengths, scale="relative").bound(retention)
    assert speed["flop_bound"] != pytest.approx(top_k, rel=1e-6)


def test_retrain_with_the_threshold_rule(finished_run, workdir, tmp_path, capsys):
    """`power-bert retrain --retention-rule threshold` on a finished run's stages 1-2: θ is
    calibrated before and again after retraining, printed, and kept by the model; the report says
    so and its bounds are those of the rows kept; `evaluate` and `benchmark` reproduce the report;
    a rerun with top-k is refused."""
    out = tmp_path / "run"
    args = retrain_args(finished_run, workdir, out, "--retention-rule", "threshold")
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "retrain: threshold rule before retraining, θ = [" in printed
    after = re.search(r"threshold rule after retraining, θ = \[(.*?)\] keep \[(.*?)\] rows .* keeps \[(.*?)\]\)",
                      printed)
    assert after is not None, printed
    # the retrained model's θ keeps ℓ's rows over the training data (retraining moves the shares)
    kept, target = ([float(v) for v in after.group(i).split(", ")] for i in (2, 3))
    assert kept == pytest.approx(target, abs=0.06)
    report = json.loads((out / "report.json").read_text())
    assert report["retention_rule"] == "threshold" and any(t is not None for t in report["thresholds"])
    md = (out / "report.md").read_text()
    assert "threshold rule (`--retention-rule threshold`)" in md
    assert "of its rows after" not in md  # ℓ's rows of a typical text: not what the rule keeps
    model = load_model(out / "retrain" / "model")[0]
    assert model.config.thresholds == report["thresholds"]
    eval_file = ["--eval-file", str(workdir / "eval.csv"), "--text-column", "review", "--label-column", "sentiment"]
    assert cli.main(["evaluate", "--model-dir", str(out / "retrain" / "model"), *eval_file, "--json",
                     "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["accuracy"] == pytest.approx(report["power_bert"]["metrics"]["eval"]["accuracy"], abs=1e-12)
    assert cli.main(["benchmark", "--model-dir", str(out / "retrain" / "model"), "--baseline",
                     str(out / "finetune" / "model"), *eval_file, "--json", "--no-progress"]) == 0
    speed = json.loads(capsys.readouterr().out)
    assert speed["thresholds"] == report["thresholds"]
    assert speed["flop_bound"] == pytest.approx(report["flop_bound"], rel=1e-12)
    assert speed["padded"]["flop_bound"] == pytest.approx(report["padded"]["flop_bound"], rel=1e-12)
    assert cli.main(["benchmark", "--model-dir", str(out / "retrain" / "model"), "--baseline",
                     str(out / "finetune" / "model"), *eval_file, "--no-progress", "--compile"]) == 2
    assert "--compile: the model in" in capsys.readouterr().err  # its widths are read on the host
    shutil.rmtree(out / "retrain" / "model")
    (out / "retrain" / "stage.json").unlink()
    args[args.index("--retention-rule") + 1] = "top-k"
    assert cli.main(args) == 2
    assert "--retention-rule threshold" in capsys.readouterr().err
    assert not (out / "retrain" / "model").exists()


def test_threshold_rule_refused_for_multiple_choice_before_training(workdir, tmp_path, capsys):
    from tiny_models import synthetic_race

    race = synthetic_race(tmp_path / "RACE", {"train": 16, "dev": 8, "test": 8}, seed=0)
    out = tmp_path / "race_run"
    assert cli.main(["run", "--task", "race", "--data-dir", str(race), "--model", str(workdir / "model"),
                     "--max-length", "24", "--output-dir", str(out), "--retention-rule", "threshold",
                     "--no-progress"]) == 2
    assert "--retention-rule threshold takes classification and regression tasks" in capsys.readouterr().err
    assert not out.exists()
