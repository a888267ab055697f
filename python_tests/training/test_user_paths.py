"""Every path a user takes after training, and every fault they can meet (issue "Numbers a user
can trust"): the figures `evaluate` / `benchmark` give of a run's models equal its report; saved
folders carry their tokenizer at the trained N; transformers' Auto classes and `pipeline` load
them; killed, copied, moved, corrupted and full-disk runs recover or say what to do; bad settings
are refused before anything is written, in one line, with exit status 2."""
import csv
import json
import re
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from power_bert_ops import cli
from power_bert_ops.training import trainer as trainer_module

from tiny_models import one_and_two_processes, run_args, synthetic_csv

STAGES = ("finetune", "search", "retrain")
EVAL = ["--text-column", "review", "--label-column", "sentiment"]


def _stamps(run):
    return {s: (run / s / "stage.json").stat().st_mtime_ns for s in STAGES}


def _json(capsys) -> dict:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"--json prints exactly one line: {out!r}"
    return json.loads(out)


# ---------------------------------------------------------------------------------------------
# The numbers agree with each other
# ---------------------------------------------------------------------------------------------
def test_evaluate_and_benchmark_every_stage_equal_the_report(workdir, finished_run, capsys, tmp_path):
    """No --max-length anywhere: every command runs at the trained N and reproduces report.json."""
    report = json.loads((finished_run / "report.json").read_text())
    eval_file = ["--eval-file", str(workdir / "eval.csv"), *EVAL]
    expected = {"finetune": report["baseline"]["metrics"]["eval"]["accuracy"],
                "search": report["stages"]["search"]["eval_accuracy"],
                "retrain": report["power_bert"]["metrics"]["eval"]["accuracy"]}
    for stage in STAGES:
        assert cli.main(["evaluate", "--model-dir", str(finished_run / stage / "model"), *eval_file, "--json",
                         "--no-progress"]) == 0
        got = _json(capsys)
        assert got["max_length"] == report["max_length"] == 16
        assert got["examples"] == report["examples"]["eval"] == 96
        assert got["truncated"] == report["truncated"]["eval"]
        assert got["accuracy"] == pytest.approx(expected[stage], abs=1e-12), stage
    assert cli.main(["benchmark", "--model-dir", str(finished_run / "retrain" / "model"), "--baseline",
                     str(finished_run / "finetune" / "model"), *eval_file, "--json", "--no-progress",
                     "--output-dir", str(tmp_path / "bench")]) == 0
    speed = _json(capsys)
    assert speed["max_length"] == 16 and speed["retention"] == report["retention"]
    assert speed["flop_bound"] == pytest.approx(report["flop_bound"], rel=1e-12)
    assert speed["examples"] == 96 and speed["truncated"] == report["truncated"]["eval"]
    assert speed["speedup"] > 0 and speed["padded_length"] == 16 and speed["padded"]["speedup"] > 0
    assert speed["padded"]["flop_bound"] == pytest.approx(report["padded"]["flop_bound"], rel=1e-12)
    for name in ("report.json", "report.md", "speedup.png"):
        assert (tmp_path / "bench" / name).stat().st_size > 100, name
    assert json.loads((tmp_path / "bench" / "report.json").read_text())["flop_bound"] == speed["flop_bound"]
    # both reports say what a text of the eval examples' mean length keeps, alike
    rows = [line for line in (finished_run / "report.md").read_text().splitlines() if "of its rows after" in line]
    assert len(rows) == 1 and rows[0] in (tmp_path / "bench" / "report.md").read_text()


def test_benchmark_rows_line_is_what_the_model_keeps_at_another_n(workdir, finished_run, tmp_path, capsys):
    """Benchmarked padded to twice the N it was trained at, a relative model still reads ℓ against
    its own N: the report's rows line for a text of the mean length equals the rows the model
    keeps of such a text."""
    from power_bert_ops.modeling import EncoderRecord, PowerBertForSequenceClassification

    model_dir = finished_run / "retrain" / "model"
    assert cli.main(["benchmark", "--model-dir", str(model_dir), "--baseline", str(finished_run / "finetune" / "model"),
                     "--eval-file", str(workdir / "eval.csv"), *EVAL, "--max-length", "32", "--json", "--no-progress",
                     "--output-dir", str(tmp_path / "b")]) == 0
    speed = _json(capsys)
    assert speed["max_length"] == 32 and speed["sequence_length"] == 16 and speed["retention_scale"] == "relative"
    length = int(speed["mean_length"] + 0.5)
    model = PowerBertForSequenceClassification.from_pretrained(model_dir).eval()
    record = EncoderRecord()
    ids = torch.randint(5, model.get_input_embeddings().num_embeddings, (1, length))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), power_bert_record=record)
    kept = [int(m.sum()) for m in record.masks]
    line = f"keeps {kept[0]} and {kept[1]} of its rows after layers 1-2"
    assert line in (tmp_path / "b" / "report.md").read_text()


def test_benchmark_compiled_models_equal_eager_and_the_report(workdir, finished_run, capsys):
    """--compile times both models under torch.compile (Inductor on CPU) and checks their logits
    against the eager models'; the FLOP bounds are the report's."""
    report = json.loads((finished_run / "report.json").read_text())
    assert cli.main(["benchmark", "--model-dir", str(finished_run / "retrain" / "model"), "--baseline",
                     str(finished_run / "finetune" / "model"), "--eval-file", str(workdir / "eval.csv"), *EVAL,
                     "--json", "--no-progress", "--compile", "--batch-size", "32"]) == 0
    speed = _json(capsys)
    assert speed["compile"] == "default" and speed["compile_seconds"] > 0
    assert 0 <= speed["compile_max_abs_diff"] < 1e-4 and speed["compile_predictions_differ"] == 0
    assert speed["compile_rows_checked"] == 2 * 3 * 32  # both models: the first and last bucket, a padded batch
    assert speed["flop_bound"] == pytest.approx(report["flop_bound"], rel=1e-12)
    assert speed["speedup"] > 0 and speed["padded"]["speedup"] > 0 and speed["examples"] == 96


def test_benchmark_times_texts_without_labels(workdir, finished_run, tmp_path, capsys):
    """benchmark only times the models: an eval file of texts alone is enough."""
    rows = list(csv.DictReader(open(workdir / "eval.csv")))
    with open(tmp_path / "texts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review"])
        w.writerows([r["review"]] for r in rows)
    assert cli.main(["benchmark", "--model-dir", str(finished_run / "retrain" / "model"), "--baseline",
                     str(finished_run / "finetune" / "model"), "--eval-file", str(tmp_path / "texts.csv"),
                     "--text-column", "review", "--json", "--no-progress"]) == 0
    speed = _json(capsys)
    assert speed["examples"] == len(rows) == 96 and speed["speedup"] > 0


def test_summary_lines_for_people(workdir, finished_run, capsys, tmp_path):
    model = str(finished_run / "retrain" / "model")
    assert cli.main(["evaluate", "--model-dir", model, "--eval-file", str(workdir / "eval.csv"), *EVAL,
                     "--no-progress"]) == 0
    out = capsys.readouterr().out.strip()
    assert "\n" not in out and out.startswith("accuracy 0.") and "on 96 examples (N = 16" in out
    assert cli.main(["benchmark", "--model-dir", model, "--baseline", str(finished_run / "finetune" / "model"),
                     "--eval-file", str(workdir / "eval.csv"), *EVAL, "--no-progress",
                     "--output-dir", str(tmp_path / "b")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("speed-up against the dense model on length-bucketed batches") and \
        "FLOP bound" in lines[0] and "both padded to N = 16" in lines[0]
    assert lines[1] == f"report: {tmp_path / 'b' / 'report.md'}"


def test_predict_writes_probabilities_at_the_trained_length(workdir, finished_run, tmp_path, capsys):
    long_text = " ".join(["good movie"] * 30)
    (tmp_path / "in.csv").write_text(f"review\ngood movie\nboring plot\n{long_text}\n")
    assert cli.main(["predict", "--model-dir", str(finished_run / "retrain" / "model"), "--input-file",
                     str(tmp_path / "in.csv"), "--output-file", str(tmp_path / "out.csv"), "--text-column", "review",
                     "--no-progress"]) == 0
    assert "1 text truncated to N = 16 tokens" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert len(rows) == 3
    for row in rows:
        p = [float(row["score_neg"]), float(row["score_pos"])]
        assert all(0.0 <= x <= 1.0 for x in p) and sum(p) == pytest.approx(1.0, abs=2e-6)
        assert row["prediction"] == ("pos" if p[1] > p[0] else "neg")


# ---------------------------------------------------------------------------------------------
# Saved folders: tokenizer, Auto classes, pipeline, dtype
# ---------------------------------------------------------------------------------------------
def test_every_stage_folder_carries_its_tokenizer_at_n(finished_run):
    from transformers import AutoConfig, AutoTokenizer

    for stage in STAGES:
        folder = finished_run / stage / "model"
        tok = AutoTokenizer.from_pretrained(folder)
        cfg = AutoConfig.from_pretrained(folder)
        vocab = cfg.base_config["vocab_size"] if cfg.model_type == "power_bert" else cfg.vocab_size
        assert len(tok) == vocab, stage
        assert tok.model_max_length == 16, stage
        assert tok("the movie was good")["input_ids"][1] != tok.unk_token_id


def test_tokenizer_that_does_not_fit_the_model_is_refused(workdir, finished_run, tmp_path, capsys):
    folder = tmp_path / "no_tokenizer"
    shutil.copytree(finished_run / "finetune" / "model", folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    assert cli.main(["evaluate", "--model-dir", str(folder), "--eval-file", str(workdir / "eval.csv"), *EVAL]) == 2
    err = capsys.readouterr().err
    assert "holds no tokenizer files (tokenizer.json, vocab.txt ...)" in err and str(folder) in err
    assert err.count("\n") == 1
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")  # another model's
    assert cli.main(["evaluate", "--model-dir", str(folder), "--eval-file", str(workdir / "eval.csv"), *EVAL]) == 2
    err = capsys.readouterr().err
    assert "its tokenizer has 6 tokens but the model's embeddings have" in err and err.count("\n") == 1
    (folder / "vocab.txt").unlink()
    args = run_args(workdir, tmp_path / "o")
    args[args.index("--model") + 1] = str(folder)
    assert cli.main(args) == 2
    assert "tokenizer" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_left_padding_tokenizer_still_pads_on_the_right(workdir, finished_run, tmp_path, capsys):
    """A folder whose saved tokenizer pads on the left (padding_side = "left") evaluates to the
    report's accuracy: the package's tokenizer keeps [CLS] at position 0."""
    report = json.loads((finished_run / "report.json").read_text())
    folder = tmp_path / "left"
    shutil.copytree(finished_run / "retrain" / "model", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    assert cli.main(["evaluate", "--model-dir", str(folder), "--eval-file", str(workdir / "eval.csv"), *EVAL,
                     "--json", "--no-progress"]) == 0
    got = _json(capsys)
    assert got["accuracy"] == pytest.approx(report["power_bert"]["metrics"]["eval"]["accuracy"], abs=1e-12)


def test_a_model_is_scored_only_on_its_own_classes(workdir, finished_run, tmp_path, capsys):
    """evaluate --task refuses a task whose classes are not the model's; benchmark refuses a
    baseline that is a PoWER-BERT model or has other classes; each in one line, exit 2."""
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    (glue / "dev.tsv").write_text("sentence\tlabel\na good movie\t1\na boring plot\t0\n")
    model = str(finished_run / "retrain" / "model")
    assert cli.main(["evaluate", "--model-dir", model, "--task", "sst2", "--data-dir", str(tmp_path / "glue"),
                     "--eval-split", "dev"]) == 2
    err = capsys.readouterr().err
    assert "--task sst2 has the classes ['0', '1'] but the model in --model-dir" in err and "['neg', 'pos']" in err
    assert err.count("\n") == 1
    other = tmp_path / "other"
    shutil.copytree(finished_run / "finetune" / "model", other)
    config = json.loads((other / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "bad", "1": "good"}, {"bad": 0, "good": 1}
    (other / "config.json").write_text(json.dumps(config))
    eval_file = ["--eval-file", str(workdir / "eval.csv"), *EVAL]
    for baseline, why in ((model, "is a PoWER-BERT model"), (str(other), "has other classes")):
        assert cli.main(["benchmark", "--model-dir", model, "--baseline", baseline, *eval_file, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"--baseline {baseline} {why}" in err and err.count("\n") == 1


def test_auto_classes_and_pipeline_after_import(finished_run):
    """`import power_bert_ops` (which itself imports no transformers) is enough for the Auto
    classes and pipeline; pipeline(truncation=True) runs at the trained N."""
    code = f"""
import sys
import power_bert_ops
assert "transformers" not in sys.modules
from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline
folder = {str(finished_run / "retrain" / "model")!r}
model = AutoModelForSequenceClassification.from_pretrained(folder)
assert type(model).__name__ == "PowerBertForSequenceClassification" and model.mode == "hard", type(model)
assert AutoConfig.from_pretrained(folder).model_type == "power_bert"
clf = pipeline("text-classification", model=folder, truncation=True)
seen = []
model = clf.model
model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[-1]), with_kwargs=True)
out = clf(" ".join(["good movie"] * 100))
assert out[0]["label"] in ("neg", "pos"), out
assert seen == [16], seen
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


@pytest.mark.parametrize("how", ["dtype", "torch_dtype", "string"])
def test_from_pretrained_dtype(finished_run, how):
    from power_bert_ops.modeling import PowerBertForSequenceClassification

    value = "bfloat16" if how == "string" else torch.bfloat16
    kwargs = {"torch_dtype" if how == "torch_dtype" else "dtype": value}
    model = PowerBertForSequenceClassification.from_pretrained(finished_run / "retrain" / "model", **kwargs)
    assert {p.dtype for p in model.model.parameters()} == {torch.bfloat16}
    assert model.retention_params.dtype == torch.float32  # ranks and masses stay fp32
    assert model.config.dtype == torch.bfloat16 and model.model.config.dtype == torch.bfloat16
    assert model.dtype == torch.bfloat16  # the weights' dtype, as Hugging Face models report it
    ids = torch.randint(5, 29, (2, 16))
    ids[:, 0] = 2
    with torch.inference_mode():
        assert model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# Stuck or lost work
# ---------------------------------------------------------------------------------------------
def test_copied_and_moved_run_folders_read_their_own_models(workdir, finished_run, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy, symlinks=True)
    stamps = _stamps(copy)
    moved = tmp_path / "moved"
    copy.rename(moved)
    # the data and the model named by other (relative) paths are the same run
    monkeypatch.chdir(workdir)
    args = run_args(workdir, moved)
    for flag, name in (("--train-file", "train.csv"), ("--eval-file", "eval.csv"), ("--model", "model")):
        args[args.index(flag) + 1] = name
    assert cli.main(args) == 0
    assert _stamps(moved) == stamps
    for stage in STAGES:
        stage_json = json.loads((moved / stage / "stage.json").read_text())
        assert stage_json["model_dir"] == f"{stage}/model"
    assert json.loads((moved / "report.json").read_text())["model"] == "model"


def test_another_file_at_the_same_path_is_another_run(workdir, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(workdir / "eval.csv", data / "eval.csv")
    synthetic_csv(data / "train.csv", 384, seed=5)  # other content, same name
    args = run_args(workdir, run)
    args[args.index("--train-file") + 1] = str(data / "train.csv")
    args[args.index("--eval-file") + 1] = str(data / "eval.csv")
    assert cli.main(args) == 2
    assert "holds another run (it differs in train_file)" in capsys.readouterr().err


def test_kill_while_checkpointing_then_resume(workdir, tmp_path, monkeypatch, capfd):
    """Ctrl-C right after the first checkpoint: a clean stop that says how to resume. A checkpoint
    cut short (only config.json and a temp file) is skipped on resume, not fatal."""
    out = tmp_path / "killed"
    args = ["finetune", *run_args(workdir, out)[1:]]
    args[args.index("--finetune-epochs") + 1] = "2"

    def interrupt(self, a, state, control, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.StopOnNonFiniteLoss, "on_save", interrupt, raising=False)
    assert cli.main(args) == 130
    err = capfd.readouterr().err
    assert "interrupted; finished stages are kept in" in err and "run the same command again" in err
    assert "Traceback" not in err
    ckpts = list((out / "finetune" / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 1
    monkeypatch.undo()
    broken = out / "finetune" / "checkpoints" / "checkpoint-9999"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors.tmp").write_bytes(b"\0" * 10)
    assert cli.main(args) == 0
    assert "checkpoint-9999 is incomplete" in capfd.readouterr().out
    assert (out / "finetune" / "stage.json").exists() and not broken.exists()


def test_corrupt_stage_model_named_and_redone(workdir, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    stamps = _stamps(run)
    weights = run / "retrain" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert cli.main(["evaluate", "--model-dir", str(run / "retrain" / "model"), "--eval-file",
                     str(workdir / "eval.csv"), *EVAL]) == 2
    err = capsys.readouterr().err
    assert f"{weights} is truncated" in err and err.count("\n") == 1
    assert cli.main(run_args(workdir, run)) == 0
    assert f"{weights} is truncated" in capsys.readouterr().out
    now = _stamps(run)
    assert now["finetune"] == stamps["finetune"] and now["search"] == stamps["search"]
    assert now["retrain"] != stamps["retrain"]
    assert json.loads((run / "report.json").read_text())["retention"] == \
        json.loads((finished_run / "report.json").read_text())["retention"]


def test_full_disk_says_so(workdir, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root in a container that allows it)")
    try:
        args = ["finetune", *run_args(workdir, disk / "out")[1:]]
        r = subprocess.run([sys.executable, "-m", "power_bert_ops.cli", *args], capture_output=True, text=True,
                           timeout=600)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "no space left on " in r.stderr and str(disk) in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# Nonsense refused before any work: test_faults.py, REFUSED_SETTINGS
# ---------------------------------------------------------------------------------------------
def test_corrected_command_is_not_refused(workdir, tmp_path, capsys):
    out = tmp_path / "o"
    args = run_args(workdir, out)
    args[args.index("--text-column") + 1] = "nope"
    assert cli.main(args) == 2
    args = ["finetune", *run_args(workdir, out)[1:], "--max-steps", "1"]
    assert cli.main(args) == 0
    assert (out / "finetune" / "stage.json").exists()


def test_device_cuda_without_gpu(workdir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cli.main(run_args(workdir, tmp_path / "o", "--device", "cuda")) == 2
    assert "--device cuda: no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_output_dir_that_cannot_be_written(workdir, tmp_path, capsys, where):
    if where == "under_a_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "run"
    else:
        out = "/proc/power_bert_run"
    assert cli.main(run_args(workdir, out)) == 2
    err = capsys.readouterr().err
    assert f"--output-dir {out} cannot be" in err and err.count("\n") == 1


def test_single_class_training_file_refused(workdir, tmp_path, capsys):
    (tmp_path / "one.csv").write_text("review,sentiment\n" + "".join(f"good film {i},pos\n" for i in range(20)))
    args = run_args(workdir, tmp_path / "o")
    args[args.index("--train-file") + 1] = str(tmp_path / "one.csv")
    args[args.index("--eval-file") + 1] = str(tmp_path / "one.csv")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "single class (pos)" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--train-file", "--eval-file", "--test-file"])
@pytest.mark.parametrize("fault", ["missing", "folder", "type"])
def test_bad_data_file_named_by_its_flag(workdir, tmp_path, capsys, flag, fault):
    """A missing file, a folder or an unreadable type is refused in one line naming the flag, before
    anything is written."""
    bad = {"missing": tmp_path / "nope.csv", "folder": tmp_path, "type": tmp_path / "data.txt"}[fault]
    if fault == "type":
        bad.write_text("review,sentiment\ngood,pos\n")
    args = run_args(workdir, tmp_path / "o")
    if flag in args:
        args[args.index(flag) + 1] = str(bad)
    else:
        args += [flag, str(bad)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    expected = {"missing": "no such file", "folder": "is a directory, expected a file",
                "type": "unsupported file type '.txt'"}[fault]
    assert f"{flag} {bad}: {expected}" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_data_dir_with_a_packaged_corpus_is_refused(finished_run, tmp_path, capsys):
    """--data-dir beside a packaged corpus (the default task included) would be ignored: refused."""
    for task in ([], ["--task", "r8"]):
        assert cli.main(["evaluate", "--model-dir", str(finished_run / "retrain" / "model"), "--data-dir",
                         str(tmp_path), *task]) == 2
        err = capsys.readouterr().err
        name = task[1] if task else "rotten_tomatoes"
        assert f"--data-dir {tmp_path} with the packaged corpus {name}" in err and err.count("\n") == 1, err


def test_predict_input_file_named_by_its_flag(finished_run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert cli.main(["predict", "--model-dir", str(finished_run / "retrain" / "model"), "--input-file",
                     str(tmp_path / "nope.csv"), "--output-file", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--input-file {tmp_path / 'nope.csv'}: no such file" in err and err.count("\n") == 1
    assert not out.exists()


def test_eval_file_labels_and_problem_must_fit_the_model(workdir, finished_run, tmp_path, capsys):
    """A model with Hugging Face's LABEL_<i> placeholders scores a file of class ids, and refuses
    one of names (which it could only map by guessing); --regression on a classifier and both
    --eval-file and --test-file are refused in one line."""
    generic = tmp_path / "generic"
    shutil.copytree(finished_run / "retrain" / "model", generic)
    config = json.loads((generic / "config.json").read_text())
    for c in (config, config["base_config"]):
        c["id2label"], c["label2id"] = {"0": "LABEL_0", "1": "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    (generic / "config.json").write_text(json.dumps(config))
    rows = list(csv.DictReader(open(workdir / "eval.csv")))
    ids = tmp_path / "ids.csv"
    with open(ids, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        w.writerows([r["review"], ["neg", "pos"].index(r["sentiment"])] for r in rows)
    want = {}
    for name, model, data in (("names", finished_run / "retrain" / "model", workdir / "eval.csv"),
                              ("ids", finished_run / "retrain" / "model", ids), ("generic ids", generic, ids)):
        assert cli.main(["evaluate", "--model-dir", str(model), "--eval-file", str(data), *EVAL, "--json",
                         "--no-progress"]) == 0
        want[name] = _json(capsys)["accuracy"]
    assert want["names"] == want["ids"] == want["generic ids"]
    assert cli.main(["evaluate", "--model-dir", str(generic), "--eval-file", str(workdir / "eval.csv"), *EVAL]) == 2
    err = capsys.readouterr().err
    assert "labels not among the model's labels: ['neg', 'pos']" in err and "class ids 0..1" in err, err
    for extra, message in ((["--regression"], "is a 2-class classifier, not a regression model"),
                           (["--test-file", str(ids)], "--eval-file and --test-file both given")):
        assert cli.main(["evaluate", "--model-dir", str(generic), "--eval-file", str(ids), *EVAL, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_outputs_that_would_mix_with_a_run_or_misname_columns(workdir, finished_run, tmp_path, capsys):
    """benchmark --output-dir refuses a stage or model folder; predict refuses a text column named
    like its own output columns, a path ending in a separator and an empty one and an ending it
    does not write, and writes .tsv tab-separated and .jsonl as one JSON object per text."""
    model, base = finished_run / "retrain" / "model", finished_run / "finetune" / "model"
    for folder, what in ((finished_run / "retrain", "a stage of a power-bert run (stage.json)"),
                         (model, "a model (config.json)")):
        before = sorted(p.name for p in folder.iterdir())
        assert cli.main(["benchmark", "--model-dir", str(model), "--baseline", str(base), "--eval-file",
                         str(workdir / "eval.csv"), *EVAL, "--output-dir", str(folder), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"--output-dir {folder} holds {what}" in err and err.count("\n") == 1, err
        assert sorted(p.name for p in folder.iterdir()) == before
    (tmp_path / "in.csv").write_text("prediction,review\na,good movie\nb,boring plot\n")
    predict = ["predict", "--model-dir", str(model), "--input-file", str(tmp_path / "in.csv"), "--no-progress"]
    for extra, message in ((["--text-column", "prediction", "--output-file", str(tmp_path / "o.csv")],
                            "--text-column prediction: predict writes its own column of that name"),
                           (["--text-column", "review", "--output-file", str(tmp_path / "new") + "/"],
                            "names a folder (it ends with /)"),
                           (["--text-column", "review", "--output-file", ""], "--output-file: an empty path")):
        assert cli.main([*predict, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "new").exists()
    assert cli.main([*predict, "--text-column", "review", "--output-file", str(tmp_path / "o.tsv")]) == 0
    lines = (tmp_path / "o.tsv").read_text().splitlines()
    assert lines[0] == "review\tprediction\tscore_neg\tscore_pos" and lines[1].startswith("good movie\t")
    assert cli.main([*predict, "--text-column", "review", "--output-file", str(tmp_path / "o.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["review"] for r in rows] == ["good movie", "boring plot"]
    assert [list(r) for r in rows] == [["review", "prediction", "score_neg", "score_pos"]] * 2
    assert [r["prediction"] for r in rows] == [line.split("\t")[1] for line in lines[1:]]
    assert all(abs(r["score_neg"] + r["score_pos"] - 1) < 1e-5 for r in rows)
    capsys.readouterr()
    assert cli.main([*predict, "--text-column", "review", "--output-file", str(tmp_path / "o.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "--output-file" in err and "not .xlsx" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.xlsx").exists()


def test_standard_output_as_a_path_holds_only_the_data(workdir, finished_run, tmp_path):
    """--output-file /dev/stdout and explain --image /dev/stdout (or -) with standard output sent to
    a file: the file holds the CSV (the picture) alone, after what the shell wrote before it; the
    command's messages go to standard error."""
    model = finished_run / "retrain" / "model"
    (tmp_path / "in.csv").write_text("review\ngood movie\nboring plot\n")
    cmd = [sys.executable, "-m", "power_bert_cli"]
    captured = tmp_path / "captured"
    with open(captured, "w") as out:
        out.write("before\n")
        out.flush()
        done = subprocess.run([*cmd, "predict", "--model-dir", str(model), "--input-file", str(tmp_path / "in.csv"),
                               "--output-file", "/dev/stdout", "--text-column", "review", "--no-progress"],
                              stdout=out, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = captured.read_text().splitlines()
    assert lines[:2] == ["before", "review,prediction,score_neg,score_pos"] and len(lines) == 4, lines
    assert "2 predictions written to standard output" in done.stderr
    for image in ("/dev/stdout", "-"):
        with open(captured, "wb") as out:
            done = subprocess.run([*cmd, "explain", "--model-dir", str(model), "--text", "good movie", "--image",
                                   image], stdout=out, stderr=subprocess.PIPE, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert captured.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), image
        assert "picture: standard output" in done.stderr and "input (" in done.stderr


def test_max_train_examples_zero_means_all(workdir, tmp_path):
    out = tmp_path / "o"
    args = ["finetune", *run_args(workdir, out)[1:], "--max-train-examples", "0", "--max-steps", "1"]
    assert cli.main(args) == 0
    assert json.loads((out / "run_config.json").read_text())["max_train_examples"] is None


def test_bad_model_folders_for_evaluate_and_explain(workdir, finished_run, tmp_path, capsys):
    assert cli.main(["evaluate", "--model-dir", str(tmp_path / "missing"), "--eval-file", str(workdir / "eval.csv"),
                     *EVAL]) == 2
    assert f"{tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    assert cli.main(["explain", "--model-dir", str(finished_run / "search" / "model"), "--text", "good film"]) == 2
    err = capsys.readouterr().err
    assert "not a PoWER-BERT model in hard mode" in err and err.count("\n") == 1
    assert cli.main(["evaluate", "--model-dir", str(finished_run / "retrain" / "model"), "--eval-file",
                     str(workdir / "eval.csv"), *EVAL, "--max-length", "100000"]) == 2
    assert "--max-length 100000 is longer than the model's position embeddings hold (64 tokens)" in \
        capsys.readouterr().err
    assert cli.main(["evaluate", "--model-dir", str(finished_run / "retrain" / "model"), "--eval-file",
                     str(workdir / "eval.csv"), *EVAL, "--max-length", "3"]) == 2
    assert "--max-length must be a whole number >= 4, got 3" in capsys.readouterr().err
    assert cli.main(["explain", "--model-dir", str(finished_run / "retrain" / "model"), "--text", "good film",
                     "--max-length", "2"]) == 2  # the same rule as evaluate and predict
    assert "--max-length must be a whole number >= 4, got 2" in capsys.readouterr().err


def _edit_weights(folder, edit) -> None:
    from safetensors.torch import load_file, save_file
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _edit_config(folder, edit) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


def _drop(tensors, key):
    del tensors[key]


def _rename(tensors, key):
    tensors["x." + key] = tensors.pop(key)


def _nan(tensors, key):
    tensors[key] = torch.full_like(tensors[key], float("nan"))


def _three_classes(cfg):
    base = cfg.get("base_config", cfg)
    base["id2label"] = {"0": "a", "1": "b", "2": "c"}
    base["label2id"] = {"a": 0, "b": 1, "c": 2}


def _encoder_only(m):
    """The folder as a pretrained checkpoint without a task head: the encoder's weights and config alone."""
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(m).bert.save_pretrained(m)


# fault -> (stage, what is done to a copy of its model folder, what the one-line refusal says)
BAD_FOLDERS = {
    "encoder_without_head": ("finetune", _encoder_only, "is a pretrained encoder without the classifier's head (its "
                             "weights lack classifier.bias, classifier.weight), not a fine-tuned model: fine-tune it "
                             "first"),
    "weight_missing": ("retrain", lambda m: _edit_weights(m, lambda t: _drop(t, "model.classifier.weight")),
                       "its weights file lacks 1 weight the model needs (model.classifier.weight)"),
    "head_missing": ("finetune", lambda m: _edit_weights(m, lambda t: [_drop(t, k) for k in list(t) if "classifier" in k]),
                     "lacks 2 weights the model needs (classifier.bias, classifier.weight)"),
    "weights_renamed": ("retrain", lambda m: _edit_weights(
        m, lambda t: [_rename(t, k) for k in list(t) if ".layer.1." in k]), "weights the model needs"),
    "weight_extra": ("finetune", lambda m: _edit_weights(m, lambda t: t.update(extra=torch.zeros(2))),
                     "holds 1 weight its config.json has no place for (extra)"),
    "weight_nan": ("retrain", lambda m: _edit_weights(m, lambda t: _nan(t, "model.classifier.bias")),
                   "the weight model.classifier.bias holds NaN or inf values"),
    "classes_unlike_weights": ("retrain", lambda m: _edit_config(m, _three_classes),
                               "in another shape than its config.json gives (model.classifier.bias, "
                               "model.classifier.weight)"),
    "heads_unlike_width": ("finetune", lambda m: _edit_config(m, lambda c: c.update(num_attention_heads=5)),
                           "its config.json and weights do not make a model (The hidden size"),
    "no_base_config": ("retrain", lambda m: _edit_config(m, lambda c: c.pop("base_config")),
                       "its config.json is not valid (a PoWER-BERT config needs base_config"),
    "base_config_not_a_dict": ("retrain", lambda m: _edit_config(m, lambda c: c.update(base_config="x")),
                               "its config.json is not valid ("),
}


@pytest.mark.parametrize("fault", sorted(BAD_FOLDERS))
def test_weights_that_do_not_make_the_model_are_refused(workdir, finished_run, tmp_path, capsys, fault):
    """A model folder whose weights lack a tensor (Hugging Face would fill it with random values),
    hold one the config has no place for or in another shape, hold NaN, or whose config.json does
    not describe a model: predict and evaluate refuse it in one line naming the folder and what
    is wrong, before writing anything."""
    stage, damage, message = BAD_FOLDERS[fault]
    model = tmp_path / "model"
    shutil.copytree(finished_run / stage / "model", model)
    damage(model)
    capsys.readouterr()  # what Hugging Face printed while the damage was done
    (tmp_path / "in.csv").write_text("review\ngood movie\n")
    out = tmp_path / "out.csv"
    for cmd in (["predict", "--model-dir", str(model), "--input-file", str(tmp_path / "in.csv"), "--text-column",
                 "review", "--output-file", str(out)],
                ["evaluate", "--model-dir", str(model), "--eval-file", str(workdir / "eval.csv"), *EVAL]):
        assert cli.main([*cmd, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert str(model) in err and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_text_pairs_must_be_what_the_model_was_trained_on(workdir, finished_run, tmp_path, capsys):
    """Each saved model records whether it was trained on text pairs; evaluate and predict refuse
    the other kind of input in one line naming the flag, before writing anything, and score the
    right kind."""
    for stage in STAGES:
        assert json.loads((finished_run / stage / "model" / "config.json").read_text())["trained_on_text_pairs"] is False
    with open(workdir / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pairs = tmp_path / "pairs.csv"  # the dev file with a second text beside each review
    with open(pairs, "w", newline="") as f:
        writer = csv.DictWriter(f, ["review", "other", "sentiment"])
        writer.writeheader()
        writer.writerows({**r, "other": r["review"]} for r in rows)
    (tmp_path / "in.csv").write_text("review,other\ngood movie,fine\n")
    out = tmp_path / "out.csv"

    def refused(model, pair_args, message):
        for cmd in (["evaluate", "--model-dir", str(model), "--eval-file", str(pairs), *EVAL],
                    ["predict", "--model-dir", str(model), "--input-file", str(tmp_path / "in.csv"),
                     "--text-column", "review", "--output-file", str(out)]):
            capsys.readouterr()
            assert cli.main([*cmd, *pair_args, "--no-progress"]) == 2, cmd
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, err
        assert not out.exists()

    model = finished_run / "retrain" / "model"
    refused(model, ["--text-pair-column", "other"], f"--model-dir {model} was trained on single texts: leave out "
                                                    "--text-pair-column")
    paired = tmp_path / "paired"
    shutil.copytree(model, paired)
    _edit_config(paired, lambda c: c.update(trained_on_text_pairs=True))
    refused(paired, [], f"--model-dir {paired} was trained on text pairs: give the column of the second texts "
                        "(--text-pair-column)")
    for model_dir, pair, message in ((model, ["--text-pair", "fine"], "was trained on single texts: leave out "
                                      "--text-pair"), (paired, [], "give the column of the second texts (--text-pair)")):
        capsys.readouterr()
        assert cli.main(["explain", "--model-dir", str(model_dir), "--text", "good movie", *pair]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert cli.main(["explain", "--model-dir", str(paired), "--text", "good movie", "--text-pair", "fine"]) == 0
    assert cli.main(["evaluate", "--model-dir", str(paired), "--eval-file", str(pairs), *EVAL, "--text-pair-column",
                     "other", "--no-progress"]) == 0


def test_from_pretrained_says_what_it_loaded(finished_run, tmp_path):
    """``output_loading_info=True`` gives ``(model, info)`` as in Hugging Face: nothing missing
    from a saved model, the dropped weight's name from a damaged copy."""
    from power_bert_ops.modeling import PowerBertForSequenceClassification
    model, info = PowerBertForSequenceClassification.from_pretrained(finished_run / "retrain" / "model",
                                                                     output_loading_info=True)
    assert model.config.mode == "hard" and not info["missing_keys"] and not info["unexpected_keys"]
    shutil.copytree(finished_run / "retrain" / "model", tmp_path / "m")
    _edit_weights(tmp_path / "m", lambda t: _drop(t, "model.classifier.weight"))
    _, info = PowerBertForSequenceClassification.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert set(info["missing_keys"]) == {"model.classifier.weight"}


def test_log_is_readable(workdir, tmp_path):
    """One line per epoch with the metric; no weight-loading bars, load reports or raw dicts."""
    args = ["finetune", *run_args(workdir, tmp_path / "o")[1:]]
    args[args.index("--finetune-epochs") + 1] = "2"
    args.remove("--no-progress")
    r = subprocess.run([sys.executable, "-m", "power_bert_ops.cli", *args], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert "finetune epoch 1/2: dev accuracy " in text and "finetune epoch 2/2: dev accuracy " in text
    assert "finetune done: dev accuracy " in text
    for noise in ("Loading weights", "LOAD REPORT", "{'loss'", "{'eval_loss'", "'train_runtime'"):
        assert noise not in text, noise
    assert "it/s]" in r.stderr or "s/it]" in r.stderr  # the training progress bar stays
    # written to a pipe, the training bar (24 steps) redraws when it starts, around each epoch line, when it
    # ends and every LOG_INTERVAL_S seconds (power_bert_ops._progress), not ten times a second
    draws = re.findall(r"\d+/24 \[", r.stderr)
    assert 2 <= len(draws) <= 6, draws
    assert "\x1b[A" not in r.stderr  # no evaluation bar nested under it, moving the cursor
    assert not re.search(r"\d/2 \[", r.stderr), r.stderr  # nor after it (96 dev rows: 2 batches of 64)


def test_predict_sharded_over_two_processes_matches_one(workdir, finished_run, tmp_path):
    """torchrun with 2 CPU processes (gloo): each scores a shard, one file in input order."""
    import random

    from tiny_models import WORDS

    rng = random.Random(3)
    with open(tmp_path / "in.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review"])
        for _ in range(77):
            w.writerow([" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))])
    base = ["predict", "--model-dir", str(finished_run / "retrain" / "model"), "--input-file", str(tmp_path / "in.csv"),
            "--text-column", "review", "--batch-size", "8", "--no-progress", "--device", "cpu"]
    _, two = one_and_two_processes(base, "--output-file", tmp_path / "one.csv", tmp_path / "two.csv", port=29519)
    assert two.stdout.count("predictions written") == 1 and "rows/s on 2 processes" in two.stdout
    a = list(csv.reader(open(tmp_path / "one.csv")))
    b = list(csv.reader(open(tmp_path / "two.csv")))
    assert len(a) == len(b) == 78
    for ra, rb in zip(a, b):
        assert ra[:2] == rb[:2]  # text and prediction, row for row
        if ra is not a[0]:
            assert all(abs(float(x) - float(y)) <= 1e-5 for x, y in zip(ra[2:], rb[2:]))


def test_export_command(workdir, finished_run, tmp_path, capsys):
    """`power-bert export` writes an ONNX file that ONNX Runtime runs at any length up to N, and
    refuses a soft-mode model and an unwritable path in one line (exit 2)."""
    ort = pytest.importorskip("onnxruntime")
    import power_bert_ops

    assert callable(power_bert_ops.export) and power_bert_ops.export.__module__ == "power_bert_ops.export"
    model = finished_run / "retrain" / "model"
    out = tmp_path / "m.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["export", "--model-dir", str(model), "--format", "onnx", "--output", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"onnx artifact written to {out}" in printed.out and "torchvision" not in printed.err
    assert not [w for w in caught if "axis name" in str(w.message) or "LeafSpec" in str(w.message)]
    from power_bert_ops.modeling import PowerBertForSequenceClassification

    torch_model = PowerBertForSequenceClassification.from_pretrained(model)
    session = ort.InferenceSession(str(out))
    names = [i.name for i in session.get_inputs()]
    for n in (5, 16):
        ids = torch.randint(5, 29, (3, n))
        ids[:, 0] = 2
        mask = torch.ones_like(ids)
        mask[1, n // 2:] = 0
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": (ids * 0).numpy()}
        got = session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
        with torch.inference_mode():
            want = torch_model(input_ids=ids, attention_mask=mask, token_type_ids=ids * 0).logits
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=0)
    # predict scores with the exported file as with the PyTorch model, row for row
    (tmp_path / "in.csv").write_text("review\ngood movie\nboring plot\n" + " ".join(["good film"] * 20) + "\n")
    for name, extra in (("torch.csv", []), ("onnx.csv", ["--artifact", str(out)])):
        assert cli.main(["predict", "--model-dir", str(model), "--input-file", str(tmp_path / "in.csv"), "--output-file",
                         str(tmp_path / name), "--text-column", "review", "--no-progress", *extra]) == 0
    a = list(csv.reader(open(tmp_path / "torch.csv")))
    b = list(csv.reader(open(tmp_path / "onnx.csv")))
    assert len(a) == len(b) == 4 and a[0] == b[0]
    for ra, rb in zip(a[1:], b[1:]):
        assert ra[:2] == rb[:2] and all(abs(float(x) - float(y)) <= 1e-5 for x, y in zip(ra[2:], rb[2:]))
    # evaluate scores with the exported file the report's figure, as with the PyTorch model
    capsys.readouterr()
    report = json.loads((finished_run / "report.json").read_text())
    assert cli.main(["evaluate", "--model-dir", str(model), "--artifact", str(out), "--eval-file",
                     str(workdir / "eval.csv"), *EVAL, "--json", "--no-progress"]) == 0
    got = _json(capsys)
    assert got["artifact"] == str(out) and got["model"] == str(model)
    assert got["accuracy"] == pytest.approx(report["power_bert"]["metrics"]["eval"]["accuracy"], abs=1e-12)
    assert cli.main(["evaluate", "--model-dir", str(model), "--artifact", str(out), "--eval-file",
                     str(workdir / "eval.csv"), *EVAL, "--no-progress"]) == 0
    assert f"truncated): {out} (exported from {model})" in capsys.readouterr().out
    assert cli.main(["evaluate", "--model-dir", str(finished_run / "finetune" / "model"), "--artifact", str(out),
                     "--eval-file", str(workdir / "eval.csv"), *EVAL, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--artifact {out} was not exported from --model-dir" in err and err.count("\n") == 1
    # the same weights with the floor of rows for every text: not the graph that was exported
    every = tmp_path / "every"
    shutil.copytree(model, every)
    config = json.loads((every / "config.json").read_text())
    assert config["min_rows_max_length"] == 8
    (every / "config.json").write_text(json.dumps({**config, "min_rows_max_length": None}))
    assert cli.main(["evaluate", "--model-dir", str(every), "--artifact", str(out), "--eval-file",
                     str(workdir / "eval.csv"), *EVAL, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "was not exported from --model-dir" in err and "'min_rows_max_length': (8, None)" in err
    assert cli.main(["export", "--model-dir", str(finished_run / "search" / "model"), "--format", "onnx",
                     "--output", str(tmp_path / "s.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("power-bert export: --model-dir is in soft mode") and err.count("\n") == 1
    assert "retrain stage's model" in err
    assert cli.main(["export", "--model-dir", str(model), "--format", "onnx", "--output",
                     str(tmp_path / "missing" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--output " in err and "does not exist" in err and "output=" not in err
    assert cli.main(["export", "--model-dir", str(model), "--format", "onnx", "--output", str(tmp_path / "m.onnx"),
                     "--max-length", "1000"]) == 2
    assert "--max-length must be" in capsys.readouterr().err
    assert cli.main(["export", "--model-dir", str(model), "--format", "onnx", "--output", str(tmp_path / "m.txt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err and not (tmp_path / "m.txt").exists()
    # an artifact is used only with the folder it was exported from
    for other in ("finetune", "search"):
        assert cli.main(["predict", "--model-dir", str(finished_run / other / "model"), "--artifact", str(out),
                         "--input-file", str(tmp_path / "in.csv"), "--output-file", str(tmp_path / "x.csv"),
                         "--text-column", "review", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"--artifact {out} was not exported from --model-dir" in err and err.count("\n") == 1, other
    for cut, kind in ((tmp_path / "cut.onnx", "an ONNX model"), (tmp_path / "cut.pt2", "an AOTInductor package")):
        cut.write_bytes(out.read_bytes()[:1000])  # a truncated artifact
        assert cli.main(["predict", "--model-dir", str(model), "--artifact", str(cut), "--input-file",
                         str(tmp_path / "in.csv"), "--output-file", str(tmp_path / "y.csv"), "--text-column",
                         "review", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"--artifact {cut}: cannot be loaded as {kind}" in err and err.count("\n") == 1, err
        assert not (tmp_path / "y.csv").exists()
    # predict never writes over its inputs: the artifact, a file of --model-dir
    size = out.stat().st_size
    for target, what in ((out, "the --artifact"), (model / "config.json", "the --model-dir's config.json")):
        assert cli.main(["predict", "--model-dir", str(model), "--artifact", str(out), "--input-file",
                         str(tmp_path / "in.csv"), "--output-file", str(target), "--text-column", "review",
                         "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"--output-file {target} is {what}" in err and err.count("\n") == 1, err
    assert out.stat().st_size == size and json.loads((model / "config.json").read_text())["model_type"] == "power_bert"
    # a left-padded row is refused by the artifact, as by the PyTorch model, not scored wrongly
    from power_bert_ops.export import OnnxClassifier

    ids, mask = torch.tensor([[0, 2, 7, 3]]), torch.tensor([[0, 1, 1, 1]])
    with pytest.raises(ValueError, match="position 0 of a row as padding"):
        OnnxClassifier(out)(ids, mask)
    with pytest.raises(ValueError, match="position 0 of a row as padding"):
        torch_model(input_ids=ids, attention_mask=mask)
    # export refuses a read-only file, as predict does
    ro = tmp_path / "ro.onnx"
    ro.write_bytes(b"mine")
    ro.chmod(0o444)
    assert cli.main(["export", "--model-dir", str(model), "--format", "onnx", "--output", str(ro)]) == 2
    err = capsys.readouterr().err
    assert f"--output {ro!s} is read-only" in err.replace("'", "") and ro.read_bytes() == b"mine", err
    floor1 = tmp_path / "floor1"  # the same weights and ℓ with another floor of rows
    shutil.copytree(model, floor1)
    config = json.loads((floor1 / "config.json").read_text())
    config["min_rows"] = 1
    (floor1 / "config.json").write_text(json.dumps(config))
    assert cli.main(["predict", "--model-dir", str(floor1), "--artifact", str(out), "--input-file",
                     str(tmp_path / "in.csv"), "--output-file", str(tmp_path / "x.csv"), "--text-column", "review",
                     "--no-progress"]) == 2
    assert "'min_rows': (3, 1)" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    assert cli.main(["predict", "--model-dir", str(model), "--artifact", str(tmp_path / "nope.onnx"),
                     "--input-file", str(tmp_path / "in.csv"), "--output-file", str(tmp_path / "x.csv"),
                     "--text-column", "review"]) == 2
    assert "nope.onnx: no such file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# --attention-dropout: set in stage 1, carried by the saved folders into stages 2 and 3
# ---------------------------------------------------------------------------------------------
def _attention_dropouts(model):
    return [m.p for n, m in model.named_modules()
            if isinstance(m, torch.nn.Dropout) and n.endswith("attention.self.dropout")]


def test_attention_dropout_reaches_every_stage(workdir, tmp_path):
    from transformers import AutoConfig

    from power_bert_ops import PowerBertForSequenceClassification

    out = tmp_path / "o"
    assert cli.main(run_args(workdir, out, "--attention-dropout", "0.25", "--max-steps", "1")) == 0
    assert AutoConfig.from_pretrained(out / "finetune" / "model").attention_probs_dropout_prob == 0.25
    for stage in ("search", "retrain"):
        model = PowerBertForSequenceClassification.from_pretrained(out / stage / "model")
        assert _attention_dropouts(model) == [0.25, 0.25], stage
        assert model.config.base_config["hidden_dropout_prob"] == 0.0, "only attention dropout changes"
    settings = json.loads((out / "finetune" / "settings.json").read_text())
    assert settings["attention_dropout"] == 0.25


def test_attention_dropout_on_a_power_bert_folder(finished_run, tmp_path):
    from power_bert_ops import PowerBertForSequenceClassification
    from power_bert_ops.training.pipeline import set_attention_dropout

    model = PowerBertForSequenceClassification.from_pretrained(finished_run / "retrain" / "model")
    assert _attention_dropouts(model) == [0.0, 0.0]
    set_attention_dropout(model, 0.3)
    assert _attention_dropouts(model) == [0.3, 0.3]
    model.save_pretrained(tmp_path / "m")
    assert _attention_dropouts(PowerBertForSequenceClassification.from_pretrained(tmp_path / "m")) == [0.3, 0.3]


# ---------------------------------------------------------------------------------------------
# The break-even guard applies to the paper's λ procedure too (never slower than the baseline)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", ["0.05", "off"])
def test_break_even_guard_in_lambda_mode(workdir, finished_run, tmp_path, keep):
    from power_bert_ops.training.projection import apply_break_even

    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(finished_run / "finetune", out / "finetune")
    shutil.copy(finished_run / "run_config.json", out / "run_config.json")
    assert cli.main(run_args(workdir, out, "--break-even-keep", keep)) == 0
    search = json.loads((out / "search" / "target.json").read_text())
    derived, got = search["derived"], json.loads((out / "search" / "retention.json").read_text())
    assert derived != [16, 16], "the search eliminated rows (else this test shows nothing)"
    if keep == "off":
        assert search["break_even_keep"] is None and got == derived
    else:  # every ℓ_j >= 1 keeps more than 5% of 16 rows: the guard raises every layer
        assert search["break_even_keep"] == 0.05 and got == [16, 16] == apply_break_even(derived, 16, 0.05)
    assert json.loads((out / "report.json").read_text())["retention"] == got


def test_bucketed_scoring_changes_no_prediction(finished_run, workdir):
    """Length-bucketed batches (the default) give the same logits and labels, row for row, as
    batches in file order padded to N, for the dense and the PoWER-BERT model."""
    import numpy as np

    from power_bert_ops.training.artifacts import load_model
    from power_bert_ops.training.inference import _eval_data, predict_logits
    from power_bert_ops.training.prepare import DataArgs

    for stage in ("finetune", "retrain"):
        model, tok = load_model(finished_run / stage / "model")
        data = DataArgs(eval_file=str(workdir / "eval.csv"), text_column="review", label_column="sentiment")
        ds = _eval_data(data, model, tok, 16)
        sorted_logits, sorted_labels = predict_logits(model, ds, 7, "cpu", sort=True)
        plain_logits, plain_labels = predict_logits(model, ds, 7, "cpu", sort=False)
        assert np.array_equal(sorted_labels, plain_labels)
        np.testing.assert_allclose(sorted_logits, plain_logits, atol=1e-5, rtol=0)
        assert (sorted_logits.argmax(-1) == plain_logits.argmax(-1)).all()


def test_resumed_stage_keeps_its_patience_count(workdir, tmp_path, monkeypatch, capfd):
    """Killed after epoch 2 of a stage whose dev score falls every epoch after the first (patience
    2): the resumed stage counts epoch 2 as one epoch without a better score and stops after epoch
    3, as the uninterrupted stage would, instead of starting the count again."""
    from power_bert_ops.training import pipeline

    scores = iter([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])

    def falling(task):
        return lambda pred: {task.primary_metric: next(scores)}

    monkeypatch.setattr(pipeline, "_metrics_fn", falling)
    out = tmp_path / "patient"
    args = ["finetune", *run_args(workdir, out)[1:], "--patience", "2"]
    args[args.index("--finetune-epochs") + 1] = "6"
    saves = []

    def interrupt_second(self, a, state, control, **kw):
        saves.append(state.epoch)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.StopOnNonFiniteLoss, "on_save", interrupt_second, raising=False)
    assert cli.main(args) == 130
    monkeypatch.setattr(trainer_module.StopOnNonFiniteLoss, "on_save", lambda *a, **k: None, raising=False)
    capfd.readouterr()
    assert cli.main(args) == 0
    assert f"power-bert: finetune: resuming from {out / 'finetune' / 'checkpoints'}" in capfd.readouterr().out
    record = json.loads((out / "finetune" / "stage.json").read_text())["training"]
    assert record["epochs_run"] == 3 and record["epoch_kept"] == 1 and record["stopped_early"]
    assert [round(v, 1) for _, v in record["dev_curve"]] == [0.9, 0.8, 0.7]


def test_stage_run_with_other_distillation_names_the_flags_that_reuse_it(workdir, finished_run, tmp_path, capsys):
    """A stage 3 run with ranking distillation and no logits, rerun with the defaults (logits on
    these short texts): refused with the flags that reuse it, which reuse it without training."""
    from tiny_models import retrain_args

    args = retrain_args(finished_run, workdir, tmp_path / "r", "--no-distill", "--distill-ranking", "10")
    assert cli.main(args) == 0
    stamp = (tmp_path / "r" / "retrain" / "stage.json").stat().st_mtime_ns
    defaults = args[:args.index("--no-distill")]
    capsys.readouterr()
    assert cli.main(defaults) == 2
    printed = capsys.readouterr()
    err = printed.err
    assert "give the settings it was run with (--no-distill --distill-ranking 10)" in err and err.count("\n") == 1
    assert printed.out == ""  # refused before the line saying what stage 3 distils
    assert cli.main([*defaults, "--no-distill", "--distill-ranking", "10"]) == 0
    assert (tmp_path / "r" / "retrain" / "stage.json").stat().st_mtime_ns == stamp


def test_distillation_mix_flags(workdir, finished_run, tmp_path, capsys):
    """--distill-alpha / --distill-temperature set stage 3's logit distillation; a stage run with
    other values is refused with the flags that reuse it; values out of range are refused first."""
    from tiny_models import retrain_args

    args = retrain_args(finished_run, workdir, tmp_path / "r", "--distill-alpha", "0.9", "--distill-temperature", "3")
    assert cli.main(args) == 0
    settings = json.loads((tmp_path / "r" / "retrain" / "settings.json").read_text())
    assert settings["distill"] is True and settings["distill_alpha"] == 0.9 and settings["distill_temperature"] == 3
    defaults = args[:args.index("--distill-alpha")]
    capsys.readouterr()
    assert cli.main(defaults) == 2
    err = capsys.readouterr().err
    assert "give the settings it was run with (--distill-temperature 3 --distill-alpha 0.9)" in err, err
    for flag, value in (("--distill-alpha", "1.5"), ("--distill-temperature", "0"), ("--distill-temperature", "1e30")):
        assert cli.main([*defaults, flag, value]) == 2
        assert f"{flag} must be a number" in capsys.readouterr().err
    # settings that contradict each other, or that no stage of the command would use
    stamp = (tmp_path / "r" / "retrain" / "stage.json").stat().st_mtime_ns
    for extra, message in ((["--no-distill", "--distill-alpha", "0.7"], "--distill-alpha sets logit distillation, "
                            "which --no-distill turns off"),
                           (["--distill-alpha", "0"], "--distill-alpha must be a number in (0, 1] (no logit "
                            "distillation: --no-distill), got 0.0"),
                           (["--distill-ranking", "10", "--distill-temperature", "3", "--distill-alpha", "0.9"],
                            "--distill-alpha and --distill-temperature set logit distillation, which this command "
                            "does not run (stage 3 distils the fine-tuned model's ranking")):
        assert cli.main([*defaults, *extra]) == 2
        printed = capsys.readouterr()
        assert message in printed.err and printed.err.count("\n") == 1, printed.err
        assert printed.out == ""  # refused before the line that says what stage 3 distils
    assert (tmp_path / "r" / "retrain" / "stage.json").stat().st_mtime_ns == stamp
    # stage 1 alone distils nothing: refused before the data is read, nothing written
    capsys.readouterr()
    fresh = run_args(workdir, tmp_path / "f", "--distill", "--distill-alpha", "0.9")
    fresh[0] = "finetune"
    assert cli.main(fresh) == 2
    printed = capsys.readouterr()
    assert printed.err == ("power-bert finetune: --distill-alpha sets logit distillation, which this command does not "
                           "run (stage 1 distils nothing); leave --distill-alpha out\n") and printed.out == ""
    assert not (tmp_path / "f").exists()


def _run_before_setting(finished_run, run, key: str, value):
    """A copy of ``finished_run`` at ``run`` whose stages 2-3 ran before ``key`` existed: their
    settings and models' configs without it (each held ``value``)."""
    shutil.copytree(finished_run, run)
    for stage in ("search", "retrain"):
        for name in ("settings.json", "model/config.json"):
            path = run / stage / name
            old = json.loads(path.read_text())
            assert old.pop(key) == value
            path.write_text(json.dumps(old))
    return run


def test_search_from_before_the_floor_of_rows(workdir, finished_run, tmp_path, capsys):
    """Stages 2-3 run before relative retention had a floor of rows (their settings and models
    without min_rows, i.e. 1): the default (a floor of 3) is refused with the flag that reuses
    them, which reuses both without training and scores the model without a floor; the report of
    a run records its floor."""
    assert json.loads((finished_run / "report.json").read_text())["min_rows"] == 3
    run = _run_before_setting(finished_run, tmp_path / "run", "min_rows", 3)
    stamps = [(run / s / "stage.json").stat().st_mtime_ns for s in ("search", "retrain")]
    args = run_args(workdir, run)
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "'min_rows': (1, 3)" in err and "give the settings it was run with (--min-rows 1)" in err
    assert cli.main([*args, "--min-rows", "1"]) == 0
    assert [(run / s / "stage.json").stat().st_mtime_ns for s in ("search", "retrain")] == stamps
    assert json.loads((run / "report.json").read_text())["min_rows"] == 1


def test_retrain_over_a_search_with_another_floor_is_refused(workdir, finished_run, tmp_path, capsys):
    """`power-bert retrain --min-rows 1` over a search that found ℓ for a floor of 3 rows: refused
    before stage 3 writes anything, naming the floor that fits; the search's floor runs."""
    from tiny_models import retrain_args

    out = tmp_path / "r"
    args = retrain_args(finished_run, workdir, out)
    capsys.readouterr()
    assert cli.main([*args, "--min-rows", "1"]) == 2
    err = capsys.readouterr().err
    assert "found ℓ for a floor of 3 rows (--min-rows 3); stage 3 asks for 1: give --min-rows 3" in err
    assert err.count("\n") == 1 and not (out / "retrain").exists()
    assert cli.main(args) == 0
    assert json.loads((out / "retrain" / "model" / "config.json").read_text())["min_rows"] == 3


def test_retrain_over_a_search_with_another_floor_length_is_refused(workdir, finished_run, tmp_path, capsys):
    """`power-bert retrain --min-rows-max-length all` over a search whose floor held for texts of
    at most 8 tokens (the default): refused before stage 3 writes anything, naming the setting
    that fits; with the default, stage 3 runs and its model and settings record the search's limit."""
    from tiny_models import retrain_args

    out = tmp_path / "r"
    args = retrain_args(finished_run, workdir, out)
    capsys.readouterr()
    assert cli.main([*args, "--min-rows-max-length", "all"]) == 2
    err = capsys.readouterr().err
    assert ("found ℓ for a floor of 3 rows on texts of at most 8 tokens (--min-rows-max-length 8); stage 3 asks "
            "for all: give --min-rows-max-length 8") in err
    assert err.count("\n") == 1 and not (out / "retrain").exists()
    assert cli.main(args) == 0
    assert json.loads((out / "retrain" / "model" / "config.json").read_text())["min_rows_max_length"] == 8
    assert json.loads((out / "retrain" / "settings.json").read_text())["min_rows_max_length"] == 8
    assert json.loads((finished_run / "report.json").read_text())["min_rows_max_length"] == 8


def test_earlier_stages_run_with_other_settings_are_refused(workdir, finished_run, tmp_path, capsys):
    """`retrain` builds on the search's ℓ and `search` on the fine-tuned model: given another λ, a
    target instead of the λ, or other fine-tuning epochs, each is refused in one line naming the
    stage and the flags it was run with, and the report keeps the run's settings. A setting that
    the command's own stage takes too may differ: `retrain --distill` over a search run without
    logit distillation goes on."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    report = (out / "report.json").read_text()
    args = run_args(workdir, out)
    no_lambda = [a for i, a in enumerate(args) if "--lambda" not in args[max(i - 1, 0):i + 1]]
    cases = [("retrain", [*args, "--lambda", "5e-3"], "search", "'lam': (0.002, 0.005)", "(--lambda 0.002)"),
             ("retrain", [*no_lambda, "--target-speedup", "1.5"], "search", "'lam': (0.002, None)", "(--lambda 0.002)"),
             ("retrain", [*args, "--finetune-epochs", "3"], "finetune", "(8.0, 3.0)", "(--finetune-epochs 8)"),
             ("search", [*args, "--finetune-epochs", "3"], "finetune", "(8.0, 3.0)", "(--finetune-epochs 8)")]
    for command, given, stage, change, flags in cases:
        capsys.readouterr()
        assert cli.main([command, *given[1:]]) == 2, (command, given)
        err = capsys.readouterr().err
        assert f"stage '{stage}' in {out / stage}, which this command builds on, was run with other settings" in err
        assert change in err and f"give the settings it was run with {flags}" in err and err.count("\n") == 1, err
    assert (out / "report.json").read_text() == report
    assert json.loads((out / "search" / "settings.json").read_text())["distill"] is False
    assert cli.main(["retrain", *args[1:], "--distill"]) == 0
    assert json.loads((out / "report.json").read_text())["lambda"] == 2e-3


def test_run_from_before_the_floor_length(workdir, finished_run, tmp_path, capsys):
    """Stages 2-3 run before the floor's length limit existed (settings and models without
    min_rows_max_length: the floor for every text): the default (8) is refused with the flag that
    reuses them, which reuses both without training and reports the floor for every text."""
    run = _run_before_setting(finished_run, tmp_path / "run", "min_rows_max_length", 8)
    stamps = [(run / s / "stage.json").stat().st_mtime_ns for s in ("search", "retrain")]
    args = run_args(workdir, run)
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "'min_rows_max_length': ('all', 8)" in err and "(--min-rows-max-length all)" in err
    assert cli.main([*args, "--min-rows-max-length", "all"]) == 0
    assert [(run / s / "stage.json").stat().st_mtime_ns for s in ("search", "retrain")] == stamps
    report = json.loads((run / "report.json").read_text())
    assert report["min_rows"] == 3 and report["min_rows_max_length"] is None


def test_lr_retrain_sets_stage_3s_learning_rate_alone(workdir, finished_run, tmp_path, monkeypatch, capsys):
    """--lr-retrain: stage 3 trains at it, stages 1-2 are reused (their --lr-bert unchanged); the
    retrain settings record it, and a stage 3 run without it is refused naming the difference."""
    from power_bert_ops.training import pipeline
    from tiny_models import retrain_args

    rates = []
    real = pipeline.TrainingArguments
    monkeypatch.setattr(pipeline, "TrainingArguments", lambda **kw: rates.append(kw["learning_rate"]) or real(**kw))
    out = tmp_path / "r"
    args = retrain_args(finished_run, workdir, out, "--lr-retrain", "7e-3")
    assert cli.main(args) == 0
    assert rates == [7e-3]
    assert json.loads((out / "retrain" / "settings.json").read_text())["lr_retrain"] == 7e-3
    assert cli.main(args[:-2]) == 2  # the same folder, stage 3 at its default: another stage 3
    assert cli.main([*args[:-2], "--lr-retrain", "0"]) == 2
    # the default is twice --lr-bert (3e-3 here); a stage 3 from before the setting trained at --lr-bert
    assert json.loads((finished_run / "retrain" / "settings.json").read_text())["lr_retrain"] == 6e-3
    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    settings = json.loads((old / "retrain" / "settings.json").read_text())
    del settings["lr_retrain"]
    (old / "retrain" / "settings.json").write_text(json.dumps(settings))
    capsys.readouterr()
    assert cli.main(run_args(workdir, old)) == 2
    assert "'lr_retrain': (0.003, 0.006)" in capsys.readouterr().err
    assert cli.main([*run_args(workdir, old), "--lr-retrain", "3e-3"]) == 0


def test_stage_from_before_a_setting_existed(workdir, finished_run, tmp_path, capsys):
    """A stage whose settings file predates --patience ran without it (patience 0): the default
    is refused with the flag that reuses it, and that flag reuses it without training."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    settings = run / "finetune" / "settings.json"
    old = json.loads(settings.read_text())
    del old["patience"]
    settings.write_text(json.dumps(old))
    stamp = (run / "finetune" / "stage.json").stat().st_mtime_ns
    args = ["finetune", *run_args(workdir, run)[1:]]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "'patience': (0, 2)" in err and "give the settings it was run with (--patience 0)" in err
    assert cli.main([*args, "--patience", "0"]) == 0
    assert (run / "finetune" / "stage.json").stat().st_mtime_ns == stamp
