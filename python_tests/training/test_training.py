"""The training pipeline and the power-bert command, end to end on a tiny random BERT and a
learnable synthetic CSV (SPEC 1.4; the issue 'The three-stage training pipeline')."""
import json
import re
import shutil

import pytest
import torch

from power_bert_ops import cli
from power_bert_ops.flops import rows_kept
from power_bert_ops.training.trainer import StopOnNonFiniteLoss, NonFiniteLossError

from tiny_models import one_and_two_processes, run_args, synthetic_race


def test_run_writes_report(finished_run):
    report = json.loads((finished_run / "report.json").read_text())
    for key in ("task", "max_length", "retention", "flop_bound", "measured_speedup", "device"):
        assert key in report, key
    assert report["max_length"] == 16
    assert report["baseline"]["metric"]["name"] == "accuracy"
    assert report["baseline"]["metric"]["value"] > 0.8, "the synthetic task is learnable"
    assert report["power_bert"]["metric"]["value"] > 0.7
    ell = report["retention"]
    assert len(ell) == 2 and all(1 <= a <= 16 for a in ell) and ell[0] >= ell[1]
    assert report["flop_bound"] >= 1.0 and report["measured_speedup"] > 0
    assert report["speed"]["padded"]["speedup"] > 0 and report["padded"]["flop_bound"] >= 1.0
    md = (finished_run / "report.md").read_text()
    assert "against the dense model on length-bucketed batches" in md and "both padded to N = 16" in md
    length = round(report["speed"]["mean_length"])
    kept = rows_kept(ell, 16, length, report["retention_scale"], report["min_rows"])
    assert 1 <= length <= 16
    assert (f"a text of the timed examples' mean length ({length} real tokens) keeps {kept[0]} and {kept[1]} "
            "of its rows after layers 1-2") in md
    # the synthetic sentences are short: stage 3 distils the logits, not the ranking (pipeline.resolve_auto)
    assert report["config"]["distill_ranking"] == 0.0 and "ranking" not in md
    assert "distilled from the fine-tuned model: stage 3 logits" in md
    assert report["config"]["distill"] is None and report["distilled_logits"] == {"search": False, "retrain": True}
    retrain = json.loads((finished_run / "retrain" / "settings.json").read_text())
    assert retrain["distill_ranking"] == 0.0 and retrain["distill"] is True and retrain["distill_alpha"] == 0.5
    assert json.loads((finished_run / "search" / "settings.json").read_text())["distill"] is False
    # texts longer than N are truncated and counted: check against the tokenizer directly
    import csv

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(finished_run.parent / "model")
    for split, f in (("train", "train.csv"), ("eval", "eval.csv")):
        texts = [r["review"] for r in csv.DictReader(open(finished_run.parent / f))]
        longer = sum(len(ids) > 16 for ids in tok(texts)["input_ids"])
        assert report["truncated"][split] == longer
    assert report["truncated"]["train"] > 0
    assert (finished_run / "report.md").read_text().startswith("# PoWER-BERT run")
    assert (finished_run / "retention.png").stat().st_size > 1000


def test_saved_model_loads_and_keeps_labels(finished_run):
    from power_bert_ops.modeling import PowerBertForSequenceClassification

    model = PowerBertForSequenceClassification.from_pretrained(finished_run / "retrain" / "model")
    assert model.mode == "hard" and model.retention == json.loads((finished_run / "report.json").read_text())["retention"]
    assert sorted(model.model.config.id2label.values()) == ["neg", "pos"]


def test_rerun_resumes_without_redoing_stages(workdir, finished_run):
    stamps = {s: (finished_run / s / "stage.json").stat().st_mtime_ns for s in ("finetune", "search", "retrain")}
    assert cli.main(run_args(workdir, finished_run)) == 0
    assert stamps == {s: (finished_run / s / "stage.json").stat().st_mtime_ns for s in stamps}


def test_rerun_with_other_settings_is_refused(workdir, finished_run, capsys):
    # Same data and model but another λ: the finished search stage must not be reused silently.
    stamps = {s: (finished_run / s / "stage.json").stat().st_mtime_ns for s in ("finetune", "search", "retrain")}
    args = run_args(workdir, finished_run)
    args[args.index("--lambda") + 1] = "7e-3"
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "stage 'search'" in err and "'lam': (0.002, 0.007)" in err and "new --output-dir" in err
    assert "give the settings it was run with (--lambda 0.002)" in err
    assert stamps == {s: (finished_run / s / "stage.json").stat().st_mtime_ns for s in stamps}


def test_killed_run_resumes_from_finished_stages(workdir, finished_run, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(finished_run, out)
    for f in ("report.json", "report.md"):
        (out / f).unlink()
    shutil.rmtree(out / "retrain")  # as if killed during stage 3
    stamp = (out / "search" / "stage.json").stat().st_mtime_ns
    assert cli.main(run_args(workdir, out)) == 0
    assert (out / "search" / "stage.json").stat().st_mtime_ns == stamp
    assert (out / "retrain" / "stage.json").exists() and (out / "report.json").exists()


def test_output_dir_holding_another_run(workdir, finished_run, capsys):
    assert cli.main(run_args(workdir, finished_run)[:-1] + ["--no-progress", "--seed", "7"]) == 2
    assert "holds another run (it differs in seed)" in capsys.readouterr().err


def test_output_dir_with_foreign_files(workdir, tmp_path, capsys):
    (tmp_path / "thesis.txt").write_text("precious")
    assert cli.main(run_args(workdir, tmp_path)) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "thesis.txt").read_text() == "precious"


def test_misnamed_column_names_it(workdir, tmp_path, capsys):
    args = run_args(workdir, tmp_path / "o")
    args[args.index("--text-column") + 1] = "text"
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "text" in err and "review" in err


# (the option given the file, the file's text, what the error names)
BAD_DATA_FILES = {
    "empty_file": ("--train-file", "", "empty"),
    "unseen_eval_labels": ("--eval-file", "review,sentiment\ngood film,pos\nodd film,meh\n", "meh"),
}


@pytest.mark.parametrize("case", BAD_DATA_FILES)
def test_bad_data_file_refused(workdir, tmp_path, capsys, case):
    flag, text, named = BAD_DATA_FILES[case]
    (tmp_path / "data.csv").write_text(text)
    args = run_args(workdir, tmp_path / "o")
    args[args.index(flag) + 1] = str(tmp_path / "data.csv")
    assert cli.main(args) == 2
    assert named in capsys.readouterr().err


def test_non_finite_loss_stops_with_clear_message():
    cb = StopOnNonFiniteLoss()

    class S:
        global_step = 7

    class A:
        output_dir = "/x"

    cb.on_log(A(), S(), None, logs={"loss": 0.5})
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 7"):
        cb.on_log(A(), S(), None, logs={"loss": float("nan")})


def test_ranking_distillation_is_decided_by_the_training_texts_length(capsys):
    """distill_ranking=None: RANKING_WEIGHT when the training examples average at least
    RANKING_MIN_LENGTH real tokens, else 0; augment_copies=None: AUTO_AUGMENT_COPIES whatever the
    length, 0 for multiple choice; said in one line; a value given is kept."""
    from types import SimpleNamespace

    import dataclasses

    from power_bert_ops.training.pipeline import (AUTO_AUGMENT_COPIES, RANKING_MIN_LENGTH, RANKING_WEIGHT,
                                                  PipelineConfig, resolve_auto)
    from power_bert_ops.training.stages import stage_distill

    def task(*lengths):
        return SimpleNamespace(train_lengths=list(lengths))

    cfg = PipelineConfig(model="m", output_dir="o")
    assert cfg.distill_ranking is None and cfg.distill is None
    at = RANKING_MIN_LENGTH
    long = resolve_auto(cfg, task(at - 10, at + 10), say=True)
    assert long.distill_ranking == RANKING_WEIGHT
    assert [stage_distill(s, long) for s in ("finetune", "search", "retrain")] == [False, False, False]
    assert f"distils the fine-tuned model's significance ranking (x{RANKING_WEIGHT:g}) and trains on " \
           f"{AUTO_AUGMENT_COPIES} word-dropped copies of each example too (each word left out with probability " \
           f"0.3): the training texts average {at} real tokens (at least {at};" in capsys.readouterr().out
    assert long.augment_copies == AUTO_AUGMENT_COPIES
    short = resolve_auto(cfg, task(at - 10, at + 8), say=True)
    assert short.distill_ranking == 0.0 and short.augment_copies == AUTO_AUGMENT_COPIES
    assert [stage_distill(s, short) for s in ("finetune", "search", "retrain")] == [False, False, True]
    assert f"model's logits and trains on {AUTO_AUGMENT_COPIES} word-dropped copies of each example too (each word " \
           f"left out with probability 0.3): the training texts average {at - 1} real tokens (under {at}; --distill-ranking, --distill / --no-distill " \
           f"and --augment-copies set it)" in capsys.readouterr().out
    copies_given = resolve_auto(dataclasses.replace(cfg, augment_copies=0), task(5), say=True)
    assert copies_given.augment_copies == 0 and "copies" not in capsys.readouterr().out
    one = resolve_auto(dataclasses.replace(cfg, augment_copies=1, augment_drop=0.3), task(5), say=True)
    assert one.augment_copies == 1 and "and trains on 1 word-dropped copy of each example too (each word left out " \
        "with probability 0.3; --augment-copies): the training texts average 5 real tokens (under 64; " \
        "--distill-ranking and --distill / --no-distill set it)" in capsys.readouterr().out  # given copies are said
    for length in (5, 500):  # copies whatever the length
        ranking_given = resolve_auto(dataclasses.replace(cfg, distill_ranking=0.0), task(length), say=True)
        assert ranking_given.augment_copies == AUTO_AUGMENT_COPIES and capsys.readouterr().out == (
            f"power-bert: stage 3 trains on {AUTO_AUGMENT_COPIES} word-dropped copies of each example too (each word "
            f"left out with probability 0.3) (--augment-copies sets it)\n")
    choice = resolve_auto(cfg, SimpleNamespace(train_lengths=[5], problem="multiple_choice"), say=True)
    assert choice.augment_copies == 0  # a choice's options would lose different words
    assert "makes no word-dropped copies (a multiple-choice example's options would lose different words)" in \
        capsys.readouterr().out
    none = resolve_auto(dataclasses.replace(cfg, distill=False), task(5), say=True)
    assert not stage_distill("retrain", none) and "stage 3 distils nothing from the fine-tuned model and trains on" \
        in capsys.readouterr().out
    given = PipelineConfig(model="m", output_dir="o", distill_ranking=3.0)
    assert resolve_auto(given, task(500), say=True).distill_ranking == 3.0 and capsys.readouterr().out == \
        f"power-bert: stage 3 trains on {AUTO_AUGMENT_COPIES} word-dropped copies of each example too (each word " \
        f"left out with probability 0.3) (--augment-copies sets it)\n"
    given = PipelineConfig(model="m", output_dir="o", distill_ranking=3.0, augment_copies=1)
    assert resolve_auto(given, task(5), say=True).augment_copies == 1 and capsys.readouterr().out == ""
    both = PipelineConfig(model="m", output_dir="o", distill=True, distill_ranking=0.0)
    assert [stage_distill(s, both) for s in ("finetune", "search", "retrain")] == [False, True, True]


def test_trim_to_longest():
    from power_bert_ops.training.speed import trim_to_longest

    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]])
    batch = {"input_ids": torch.arange(18).view(3, 6), "attention_mask": mask, "token_type_ids": mask * 0}
    got = trim_to_longest(batch)
    assert all(v.shape == (3, 5) for v in got.values())
    assert torch.equal(got["input_ids"], batch["input_ids"][:, :5]) and torch.equal(got["attention_mask"], mask[:, :5])
    mc = {k: v.view(1, 3, 6) for k, v in batch.items()}  # multiple choice [B, C, N]
    assert all(v.shape == (1, 3, 5) for v in trim_to_longest(mc).values())
    gaps = {**batch, "attention_mask": torch.tensor([[1, 0, 0, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])}
    assert trim_to_longest(gaps)["input_ids"].shape == (3, 4)  # cut after the last real token, not at the count


def test_two_processes_match_one(workdir, tmp_path):
    """torchrun with 2 CPU processes (gloo) trains the same model as one process."""
    base = ["finetune", "--model", str(workdir / "model"), "--train-file", str(workdir / "train.csv"),
            "--eval-file", str(workdir / "eval.csv"), "--text-column", "review", "--label-column", "sentiment",
            "--max-length", "16", "--batch-size", "32", "--finetune-epochs", "1", "--lr-bert", "2e-3",
            "--no-progress", "--device", "cpu"]
    one_and_two_processes(base, "--output-dir", tmp_path / "one", tmp_path / "two", port=29517)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "finetune" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "finetune" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-4, f"max parameter difference {worst}"


def test_explain_shows_tokens_per_layer(finished_run, tmp_path, capsys):
    from transformers import AutoTokenizer

    from power_bert_ops.explain import explain
    from power_bert_ops.modeling import PowerBertForSequenceClassification

    model_dir = finished_run / "retrain" / "model"
    text = "the movie was good and the ending was very long and boring"
    assert cli.main(["explain", "--model-dir", str(model_dir), "--text", text, "--image", str(tmp_path / "e.png")]) == 0
    out = capsys.readouterr().out
    assert "layer  1 keeps" in out and "layer  2 keeps" in out and (tmp_path / "e.png").stat().st_size > 1000
    model = PowerBertForSequenceClassification.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    exp = explain(model, tok, text)
    n = len(exp.tokens)
    # kept sets shrink as the configuration says, [CLS] always survives, positions ascending
    for j, positions in enumerate(exp.kept):
        assert len(positions) == min(model.retention[j], n if j == 0 else len(exp.kept[j - 1]))
        assert positions[0] == 0 and positions == sorted(positions)
        if j:
            assert set(positions) <= set(exp.kept[j - 1])
    assert exp.prediction in ("neg", "pos")  # the saved label names


def test_foreign_checkpoint(workdir, tmp_path, capsys):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    args = run_args(workdir, tmp_path / "o")
    args[args.index("--model") + 1] = str(tmp_path / "gpt2")
    assert cli.main(args) == 2
    assert re.search("gpt2.*supported|supported.*bert", capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_corrupt_checkpoint(workdir, tmp_path, capsys):
    shutil.copytree(workdir / "model", tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    args = run_args(workdir, tmp_path / "o")
    args[args.index("--model") + 1] = str(tmp_path / "m")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "model.safetensors is truncated" in err and str(weights) in err
    (tmp_path / "m" / "config.json").write_text("{not json")
    assert cli.main(args) == 2
    assert "not a readable" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_lambda_sweep_shares_stage_one(workdir, tmp_path):
    out = tmp_path / "sweep"
    args = run_args(workdir, out)
    i = args.index("--lambda")
    args[i:i + 2] = ["--lambdas", "1e-4,2e-2"]
    assert cli.main(args) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["lambda"] for r in rows] == [1e-4, 2e-2]
    assert (out / "sweep.png").stat().st_size > 1000 and "| λ=0.0001 |" in (out / "sweep.md").read_text()
    for lam in ("0.0001", "0.02"):
        assert (out / f"lambda_{lam}" / "report.json").exists()
        assert (out / f"lambda_{lam}" / "finetune").resolve() == (out / "finetune").resolve()  # run once
    # a larger λ never keeps more rows
    assert sum(rows[1]["retention"]) <= sum(rows[0]["retention"])


def test_multiple_choice_race_layout_end_to_end(workdir, tmp_path):
    # RACE's JSON layout through all three stages: multiple-choice heads, report, hard-mode model.
    import torch

    from power_bert_ops.modeling import PowerBertForMultipleChoice

    race = synthetic_race(tmp_path / "RACE", {"train": 64, "dev": 16, "test": 16}, seed=0)
    out = tmp_path / "race_run"
    args = ["run", "--task", "race", "--data-dir", str(race), "--model", str(workdir / "model"), "--max-length", "24",
            "--output-dir", str(out), "--batch-size", "8", "--eval-batch-size", "16", "--finetune-epochs", "2",
            "--search-epochs", "1", "--retrain-epochs", "1", "--lr-bert", "3e-3", "--lr-soft", "5e-2",
            "--lambda", "2e-2", "--distill-ranking", "10", "--no-progress"]  # the teacher's [B, C, N] ranking too
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "race" and report["max_length"] == 24 and report["config"]["distill_ranking"] == 10
    assert report["baseline"]["metric"]["name"] == "accuracy" and 0 <= report["power_bert"]["metric"]["value"] <= 1
    ell = report["retention"]
    assert len(ell) == 2 and all(1 <= b <= a <= 24 for a, b in zip([24] + ell, ell))
    assert report["flop_bound"] >= 1.0 and report["measured_speedup"] > 0
    model = PowerBertForMultipleChoice.from_pretrained(out / "retrain" / "model")
    assert model.mode == "hard" and model.retention == ell
    ids = torch.randint(5, 29, (3, 4, 24))
    ids[..., 0] = 2
    with torch.inference_mode():
        assert model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (3, 4)


def test_rows_line_for_absolute_relative_and_missing_lengths():
    """The reports' line on a text of the mean length: relative ℓ read against the trained N
    (``sequence_length``), absolute ℓ capped by the text, the floor applied; no line without lengths,
    for a mean under one token, for the threshold rule or without ℓ."""
    from power_bert_ops.flops import reference_length
    from power_bert_ops.training.report import rows_lines

    r = {"retention": [24, 16, 6, 1], "max_length": 128, "sequence_length": 64, "retention_scale": "relative",
         "min_rows": 3, "speed": {"mean_length": 26.5}}
    assert rows_lines(r) == ["- a text of the timed examples' mean length (27 real tokens) keeps 11, 7, 3 and 3 of "
                             "its rows after layers 1-4"]
    assert rows_lines(r | {"retention_scale": "absolute", "speed": {"mean_length": 20}}) == [
        "- a text of the timed examples' mean length (20 real tokens) keeps 20, 16, 6 and 1 of its rows after layers 1-4"]
    assert rows_lines({"retention": [2], "max_length": 8, "mean_length": 1.2}) == [
        "- a text of the timed examples' mean length (1 real token) keeps 1 of its rows after layer 1"]
    for bad in ({"speed": {}}, {"speed": {"mean_length": 0.0}}, {"thresholds": [None, 0.1, 0.1, 0.1]}, {"retention": []}):
        assert rows_lines(r | bad) == [], bad
    # the N ℓ is read against: the trained N under relative retention, the padded N otherwise
    assert (reference_length("relative", 64, 128), reference_length("relative", None, 128),
            reference_length("absolute", 64, 128)) == (64, 128, 128)
    with pytest.raises(ValueError, match="retention scale"):
        reference_length("proportional", 64, 128)


def test_distillation_label_reads_what_the_run_recorded():
    """report.md names the logit distillation report.json recorded per stage (``distilled_logits``);
    a report without that field gets it derived from its config as the run derived it."""
    from power_bert_ops.training.report import distillation_label

    # config distill None, no ranking: an automatic --distill that the run resolved to stage 3 logits
    auto = {"config": {"distill": None, "distill_ranking": 0.0}}
    assert distillation_label(auto) == ", distilled from the fine-tuned model: stage 3 logits"
    assert distillation_label(auto | {"distilled_logits": {"search": False, "retrain": False}}) == ""
    assert distillation_label(auto | {"distilled_logits": {"search": True, "retrain": True}}) == (
        ", distilled from the fine-tuned model: logits")
    assert distillation_label({"config": {"distill_ranking": 10.0}}) == (
        ", distilled from the fine-tuned model: stage 3 ranking x10")


def test_speedup_within_noise_is_not_a_speedup():
    """Issue 22 item 11: a ratio whose per-repeat range contains 1 is 'no measurable speed-up';
    a range above 1 is stated with its range and share of the bound."""
    from power_bert_ops.training.speed import _ratios, describe_speedup

    noisy = {**_ratios([1.0, 1.3, 0.9], [1.0, 1.0, 1.0]), "flop_bound": 1.0}
    assert noisy["within_noise"] and noisy["speedup_range"] == [0.9, 1.3]
    assert describe_speedup(noisy).startswith("no measurable speed-up (1.00x, within the timing noise: 0.90-1.30x")
    real = {**_ratios([3.0, 3.2, 2.9], [1.0, 1.0, 1.0]), "flop_bound": 4.0}
    assert not real["within_noise"] and real["speedup"] == 3.0
    assert describe_speedup(real) == "3.00x (0.75 of the 4.00x FLOP bound; 2.90-3.20x over the passes)"


def test_relative_bound_is_the_models_own_n_not_the_padding():
    """A relative model keeps ceil(ℓ_j·len/N) rows of an example, N its own sequence_length: the
    bound `power-bert benchmark` reports must not depend on the length the rows are padded to,
    and must be the bound at the model's N."""
    from transformers import BertConfig

    from power_bert_ops.flops import FlopModel
    from power_bert_ops.modeling import PowerBertForSequenceClassification
    from power_bert_ops.training.speed import speed_bounds
    from transformers import BertForSequenceClassification

    hf = BertForSequenceClassification(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=3,
                                                  num_attention_heads=2, intermediate_size=64,
                                                  max_position_embeddings=128))
    model = PowerBertForSequenceClassification.from_hf_model(hf, retention=[40, 20, 8], sequence_length=64,
                                                             retention_scale="relative")
    lengths = [5, 9, 12, 16]
    at16, at24 = (speed_bounds(model.config, [40, 20, 8], n, lengths)["flop_bound"] for n in (16, 24))
    assert at16 == pytest.approx(at24)
    assert at16 == pytest.approx(FlopModel(model.config, 64, lengths=lengths, scale="relative").bound([40, 20, 8]))


@pytest.mark.parametrize("min_rows", [1, 3])
def test_padded_bound_of_a_relative_model_counts_the_widths_it_runs(min_rows):
    """Padded to n < N, a relative model runs layer widths max(min_rows, ceil(ℓ_j·n/N)) (capped
    at n): the padded bound is the dense model at n against those widths, whatever N is."""
    from transformers import BertConfig, BertForSequenceClassification

    from power_bert_ops.flops import layer_macs
    from power_bert_ops.modeling import EncoderRecord, PowerBertForSequenceClassification
    from power_bert_ops.training.speed import speed_bounds

    hf = BertForSequenceClassification(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=3,
                                                  num_attention_heads=2, intermediate_size=64,
                                                  max_position_embeddings=64))
    model = PowerBertForSequenceClassification.from_hf_model(hf, retention=[10, 4, 1], sequence_length=20,
                                                             retention_scale="relative", min_rows=min_rows).eval()
    n = 10
    record = EncoderRecord()
    with torch.no_grad():
        model(input_ids=torch.randint(1, 40, (2, n)), attention_mask=torch.ones(2, n, dtype=torch.long),
              power_bert_record=record)
    widths = [m.shape[1] for m in record.masks]
    assert widths == ([5, 3, 3] if min_rows == 3 else [5, 2, 1])
    rows = [n] + widths
    want = sum(layer_macs(n, n, 32, 64) for _ in widths) / sum(layer_macs(a, b, 32, 64) for a, b in zip(rows, rows[1:]))
    assert speed_bounds(model.config, [10, 4, 1], n, [4, 7, 10])["padded_flop_bound"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_report_device_names_its_threads(threads):
    from power_bert_ops.training.report import speed_lines
    from power_bert_ops.training.run import device_name

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert device_name("cpu") == ("cpu (1 thread)" if threads == 1 else "cpu (2 threads)")
    finally:
        torch.set_num_threads(before)
    timing = {"speedup": 2.0, "speedup_range": [1.9, 2.1], "within_noise": False, "flop_bound": 3.0,
              "baseline_seconds": 2.0, "power_bert_seconds": 1.0, "mean_batch_length": 20.0, "padded_length": 64,
              "examples": 10, "batch_size": 4, "dtype": "float32", "threads": threads, "repeats": 3}
    timing["padded"] = dict(timing)
    want = "float32, 1 thread, median" if threads == 1 else "float32, 2 threads, median"
    assert want in speed_lines(timing)[-1]


def test_training_lengths_read_once(monkeypatch):
    """PreparedTask.train_lengths: each training example's real tokens, read from the data once
    however many FLOP models a run builds over them."""
    from power_bert_ops.training import speed
    from power_bert_ops.training.prepare import PreparedTask

    calls = []
    real = speed.example_lengths
    monkeypatch.setattr(speed, "example_lengths", lambda ds: calls.append(1) or real(ds))
    train = [{"attention_mask": [1] * n + [0] * (8 - n)} for n in (3, 8, 5)]
    task = PreparedTask("t", "classification", 2, None, train, train, 8, lambda p, l: {}, "accuracy")
    assert task.train_lengths == [3, 8, 5] and task.train_lengths == [3, 8, 5]
    assert len(calls) == 1
