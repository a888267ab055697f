"""Issue 22, "Nothing lost: the faults that are left": every command refuses what it cannot do
before any work, in one line naming the setting (exit 2), leaves no trace when it refuses, and
never overwrites what a user had (its input, a run's report, a half-written file in place of a
whole one). The op-level items are in ops/test_significance.py and ops/test_bad_input.py."""
import csv
import json
import logging
import re
import shutil

import pytest

from power_bert_ops import cli
from power_bert_ops.training import inference as inference_module

from tiny_models import run_args

EVAL = ["--text-column", "review", "--label-column", "sentiment"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, f"one line: {err!r}"
    return err


def _replace(args, flag, *values):
    """args with ``flag``'s value replaced (or ``flag`` removed when no values are given)."""
    args = list(args)
    i = args.index(flag)
    args[i:i + 2] = [flag, *values] if values else []
    return args


# ---------------------------------------------------------------------------------------------
# 1. Settings refused before any work: those that reach a library (numpy's seeding, Trainer's
#    samplers; the `finetune` rows) and nonsense (the `run` rows)
# ---------------------------------------------------------------------------------------------
# (command, the option and its value, what the one-line error says)
REFUSED_SETTINGS = [
    ("finetune", ["--seed", "-1"], "--seed must be a whole number from 0 to 4294967295, got -1"),
    ("finetune", ["--seed", "99999999999999999999"], "--seed must be a whole number from 0 to 4294967295"),
    ("finetune", ["--seed", "4294967296"], "--seed must be a whole number from 0 to 4294967295"),
    ("finetune", ["--batch-size", "99999999999999999999"], "--batch-size must be a whole number from 1 to "),
    ("finetune", ["--eval-batch-size", "99999999999999999999"], "--eval-batch-size must be a whole number from 1 to "),
    ("finetune", ["--max-steps", "99999999999999999999"], "--max-steps must be -1 (no cap) or a whole number >= 1"),
    ("finetune", ["--finetune-epochs", "1e308"],
     "--finetune-epochs must be a number > 0 and at most 9223372036854775807"),
    ("run", ["--max-length", "0"], "--max-length"),
    ("run", ["--max-length", "100000"], "--max-length 100000 is longer than the model's position embeddings hold (64"),
    ("run", ["--lambda", "-1"], "--lambda must be a number >= 0"),
    ("run", ["--batch-size", "0"], "--batch-size must be a whole number >= 1"),
    ("run", ["--lambdas", "1e-3,abc"], "--lambdas must be comma-separated numbers >= 0; 'abc'"),
    ("run", ["--max-train-examples", "-5"], "--max-train-examples must be a whole number >= 0"),
    ("run", ["--finetune-epochs", "-1"], "--finetune-epochs must be a number > 0"),
    ("run", ["--search-epochs", "0"], "--search-epochs must be a number > 0"),
    ("run", ["--patience", "-1"], "--patience must be a whole number >= 0, got -1"),
    ("run", ["--search-min-steps", "-3"], "--search-min-steps must be a whole number >= 0, got -3"),
    ("run", ["--lr-bert", "nan"], "--lr-bert must be a number > 0"),
    ("run", ["--text-column", "nope"], "'nope' not found"),
    ("run", ["--batch-size", "abc"], "argument --batch-size: invalid int value"),
    ("run", ["--attention-dropout", "1"], "--attention-dropout must be a probability in [0, 1), got 1.0"),
    ("run", ["--attention-dropout", "-0.1"], "--attention-dropout must be a probability in [0, 1)"),
    ("run", ["--break-even-keep", "1"], "--break-even-keep must be a fraction in (0, 1), or off, got 1.0"),
    ("run", ["--break-even-keep", "most"], "argument --break-even-keep: must be a fraction in (0, 1) or 'off'"),
    ("run", ["--min-rows", "0"], "--min-rows must be a whole number from 1 to 15, got 0"),
    ("run", ["--min-rows", "16"], "--min-rows must be a whole number from 1 to 15, got 16"),
    ("run", ["--retention", "absolute", "--min-rows", "3"], "--min-rows 3: the floor of rows applies to --retention "
     "relative"),
    ("run", ["--min-rows-max-length", "0"], "--min-rows-max-length must be a whole number from 1 to 16, got 0"),
    ("run", ["--min-rows-max-length", "17"], "--min-rows-max-length must be a whole number from 1 to 16, got 17"),
    ("run", ["--min-rows-max-length", "short"], "argument --min-rows-max-length: must be a whole number of tokens "
     "or 'all', got 'short'"),
    ("run", ["--retention", "absolute", "--min-rows-max-length", "8"], "--min-rows-max-length 8: the floor of rows "
     "applies to --retention relative"),
]


@pytest.mark.parametrize("command,extra,message", REFUSED_SETTINGS,
                         ids=[f"{command} {' '.join(extra)}" for command, extra, _ in REFUSED_SETTINGS])
def test_settings_refused_before_anything(workdir, tmp_path, capsys, command, extra, message):
    out = tmp_path / "o"
    args = [command, *run_args(workdir, out)[1:]]
    args = _replace(args, *extra) if extra[0] in args else args + extra
    if extra[0] == "--lambdas":
        args = _replace(args, "--lambda")
    try:
        rc = cli.main(args)
    except SystemExit as e:  # argparse's own type errors
        rc = e.code
    assert rc == 2
    assert message in _one_line(capsys)
    assert not out.exists(), "a refused command leaves no trace"


def test_seed_refused_then_the_corrected_command_runs(workdir, tmp_path, capsys):
    """The README's promise: the corrected command in the same folder is not refused."""
    out = tmp_path / "o"
    args = ["finetune", *run_args(workdir, out)[1:], "--max-steps", "1"]
    assert cli.main([*args, "--seed", "-1"]) == 2
    assert "--seed" in _one_line(capsys) and not out.exists()
    assert cli.main([*args, "--seed", "7"]) == 0
    assert (out / "finetune" / "stage.json").exists()
    assert json.loads((out / "run_config.json").read_text())["seed"] == 7


# ---------------------------------------------------------------------------------------------
# 2. predict never overwrites its input, and never leaves a half file
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["same", "symlink", "relative"])
def test_predict_refuses_to_write_over_its_input(finished_run, tmp_path, capsys, monkeypatch, how):
    texts = tmp_path / "in.csv"
    texts.write_text("review\ngood movie\nboring plot\n")
    before = texts.read_bytes()
    output = str(texts)
    if how == "symlink":
        (tmp_path / "link.csv").symlink_to(texts)
        output = str(tmp_path / "link.csv")
    elif how == "relative":
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
        output = "../in.csv"
    assert cli.main(["predict", "--model-dir", str(finished_run / "retrain" / "model"), "--input-file", str(texts),
                     "--output-file", output, "--text-column", "review", "--no-progress"]) == 2
    err = _one_line(capsys)
    assert f"--output-file {output} is the --input-file" in err
    assert texts.read_bytes() == before


@pytest.mark.parametrize("target", ["symlink", "fifo", "stdout", "closed-stdout", "read-only"])
def test_predict_writes_through_links_and_pipes(finished_run, tmp_path, capfd, target):
    """A symlink's target is written (the link stays a link), a FIFO is written into (not
    replaced by a file), `-` is standard output, a standard output closed by its reader ends the
    command quietly (`... --output-file - | head -1`), and a read-only file is refused untouched."""
    import os
    import stat
    import threading

    texts = tmp_path / "in.csv"
    texts.write_text("review\ngood movie\nboring plot\n")
    args = ["predict", "--model-dir", str(finished_run / "retrain" / "model"), "--input-file", str(texts),
            "--text-column", "review", "--no-progress", "--output-file"]
    if target == "symlink":
        (tmp_path / "real.csv").write_text("old\n")
        os.chmod(tmp_path / "real.csv", 0o640)
        (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
        assert cli.main([*args, str(tmp_path / "link.csv")]) == 0
        assert (tmp_path / "link.csv").is_symlink()
        assert (tmp_path / "real.csv").read_text().startswith("review,prediction,")
        assert stat.S_IMODE((tmp_path / "real.csv").stat().st_mode) == 0o640
    elif target == "fifo":
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        got = []
        reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
        reader.start()
        assert cli.main([*args, str(fifo)]) == 0
        reader.join(timeout=60)
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got[0].count("\n") == 3
    elif target == "stdout":
        capfd.readouterr()
        assert cli.main([*args, "-"]) == 0
        out, err = capfd.readouterr()
        assert out.startswith("review,prediction,") and out.count("\n") == 3
        assert "2 predictions written to standard output" in err and not (tmp_path / "-").exists()
        (tmp_path / "one.csv").write_text("review\ngood movie\n")
        assert cli.main([*args[:4], str(tmp_path / "one.csv"), *args[5:], "-"]) == 0
        assert "1 prediction written to standard output (0 texts truncated" in capfd.readouterr().err
    elif target == "closed-stdout":
        import subprocess
        import sys

        proc = subprocess.Popen([sys.executable, "-m", "power_bert_cli", *args, "-"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # the reader is gone before the first row is written
        err = proc.communicate(timeout=300)[1]
        assert proc.returncode == 141, err
        assert "Traceback" not in err and "Error" not in err, err
    else:
        out = tmp_path / "ro.csv"
        out.write_text("keep me\n")
        os.chmod(out, 0o444)
        assert cli.main([*args, str(out)]) == 2
        assert f"--output-file {out}: is read-only" in capfd.readouterr().err
        assert out.read_text() == "keep me\n"


def test_predict_failure_leaves_the_previous_file_whole(finished_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "in.csv").write_text("review\ngood movie\nboring plot\nthe end\n")
    out = tmp_path / "out.csv"
    out.write_text("my earlier predictions\n")

    real_writer = csv.writer

    class Failing:
        def __init__(self, f, **kwargs):
            self.w, self.rows = real_writer(f, **kwargs), 0

        def writerow(self, row):
            if self.rows == 2:
                raise OSError(28, "No space left on device")
            self.rows += 1
            self.w.writerow(row)

    monkeypatch.setattr(inference_module.csv, "writer", Failing)
    args = ["predict", "--model-dir", str(finished_run / "retrain" / "model"), "--input-file",
            str(tmp_path / "in.csv"), "--output-file", str(out), "--text-column", "review", "--no-progress"]
    assert cli.main(args) == 1
    assert "no space left" in capsys.readouterr().err
    assert out.read_text() == "my earlier predictions\n", "a failed write must not cut the file short"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"], "no temporary file is left"
    monkeypatch.undo()
    assert cli.main(args) == 0
    assert len(list(csv.reader(open(out)))) == 4


# ---------------------------------------------------------------------------------------------
# 3. benchmark never replaces a run's report
# ---------------------------------------------------------------------------------------------
def test_benchmark_refuses_a_run_folder(workdir, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    sweep_like = tmp_path / "lambda_0.001"  # a sweep's sub-folder: a run's report, no run_config.json
    sweep_like.mkdir()
    shutil.copy(run / "report.json", sweep_like / "report.json")
    bench = ["benchmark", "--model-dir", str(run / "retrain" / "model"), "--baseline", str(run / "finetune" / "model"),
             "--eval-file", str(workdir / "eval.csv"), *EVAL, "--no-progress"]
    for folder in (run, sweep_like):
        before = (folder / "report.json").read_bytes()
        assert cli.main([*bench, "--output-dir", str(folder)]) == 2
        err = _one_line(capsys)
        assert f"--output-dir {folder} holds" in err and "give another --output-dir" in err
        assert (folder / "report.json").read_bytes() == before
    assert not (run / "speedup.png").exists() and not (sweep_like / "report.md").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "report.md").write_text("my notes")
    assert cli.main([*bench, "--output-dir", str(tmp_path / "notes")]) == 2
    assert "report.md" in _one_line(capsys) and (tmp_path / "notes" / "report.md").read_text() == "my notes"
    # a folder of its own, and the same folder again (its own earlier report), are fine
    for _ in range(2):
        assert cli.main([*bench, "--output-dir", str(tmp_path / "bench")]) == 0
        assert json.loads((tmp_path / "bench" / "report.json").read_text())["flop_bound"] > 0


# ---------------------------------------------------------------------------------------------
# 4. explain --image is checked before the work
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where,message", [("missing/kept.png", "its folder does not exist"), ("adir", "is a folder"),
                                           ("afile/kept.png", "its folder is a file"),
                                           ("kept.nope", "matplotlib cannot write .nope pictures")])
def test_explain_image_path_checked_first(finished_run, tmp_path, capsys, where, message):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    image = tmp_path / where
    assert cli.main(["explain", "--model-dir", str(finished_run / "retrain" / "model"), "--text", "good film",
                     "--image", str(image)]) == 2
    out = capsys.readouterr()
    assert out.err.startswith(f"power-bert explain: --image {image}: {message}")
    assert out.err.count("\n") == 1 and "Traceback" not in out.err
    assert out.out == "", "refused before the work (nothing explained)"


def test_explain_image_without_suffix_is_a_png_at_that_path(finished_run, tmp_path, capsys):
    image = tmp_path / "kept"
    assert cli.main(["explain", "--model-dir", str(finished_run / "retrain" / "model"), "--text", "good film",
                     "--image", str(image)]) == 0
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "kept.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


# ---------------------------------------------------------------------------------------------
# 5. Conflicting flags are refused, naming both
# ---------------------------------------------------------------------------------------------
CONFLICTS = [
    (["--lambdas", "1e-3,2e-3"], ("--lambda", "--lambdas")),
    (["--target-speedups", "2,3", "--target-speedup", "2"], ("--target-speedup", "--target-speedups")),
    (["--text-pair-column", "review"], ("--text-column", "--text-pair-column")),
    (["--label-column", "review"], ("--text-column", "--label-column")),
    (["--text-pair-column", "sentiment"], ("--text-pair-column", "--label-column")),
]


@pytest.mark.parametrize("extra,flags", CONFLICTS, ids=[" ".join(e) for e, _ in CONFLICTS])
def test_conflicting_flags_refused(workdir, tmp_path, capsys, extra, flags):
    out = tmp_path / "o"
    args = run_args(workdir, out)
    if "--target-speedups" in extra:
        args = _replace(args, "--lambda")
    if extra[0] == "--label-column":
        args = _replace(args, "--label-column", "review")
    else:
        args += extra
    assert cli.main(args) == 2
    err = _one_line(capsys)
    assert all(f in err for f in flags), err
    assert not out.exists()


def test_same_column_twice_refused_by_evaluate_and_predict(workdir, finished_run, tmp_path, capsys):
    model = str(finished_run / "retrain" / "model")
    assert cli.main(["evaluate", "--model-dir", model, "--eval-file", str(workdir / "eval.csv"), *EVAL,
                     "--text-pair-column", "review"]) == 2
    assert "--text-column and --text-pair-column both name the column 'review'" in _one_line(capsys)
    assert cli.main(["predict", "--model-dir", model, "--input-file", str(workdir / "eval.csv"), "--output-file",
                     str(tmp_path / "p.csv"), "--text-column", "review", "--text-pair-column", "review"]) == 2
    assert "--text-column and --text-pair-column" in _one_line(capsys) and not (tmp_path / "p.csv").exists()


# ---------------------------------------------------------------------------------------------
# 6. --help shows every default, read from the config dataclasses and library constants
# ---------------------------------------------------------------------------------------------
def _help(capsys, *command) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main([*command, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_the_defaults(capsys):
    from power_bert_ops.training import PipelineConfig
    from power_bert_ops.training.run import DEFAULT_TARGET_SPEEDUP
    from power_bert_ops.training.projection import BREAK_EVEN_KEEP

    text = _help(capsys, "run")
    for name in ("finetune_epochs", "search_epochs", "retrain_epochs", "eval_batch_size", "seed", "precision",
                 "device", "max_steps", "patience", "search_min_steps"):
        flag = "--" + name.replace("_", "-")
        value = PipelineConfig.__dataclass_fields__[name].default
        section = text[text.rindex(f"{flag} "):]  # the option's entry, not the usage line
        assert f"(default: {value})" in section[:400], (flag, section[:400])
    for fallback in (f"else {PipelineConfig.lr_bert}", f"else {PipelineConfig.lr_soft}",
                     f"else {PipelineConfig.batch_size})", f"else {PipelineConfig.max_length};",
                     f"(default: {BREAK_EVEN_KEEP})", f"(default: {DEFAULT_TARGET_SPEEDUP:g} when no λ is given)"):
        assert fallback in text, fallback
    for command in ("evaluate", "predict", "benchmark"):
        assert "--batch-size BATCH_SIZE examples per batch (default: 64)" in _help(capsys, command), command


def test_help_defaults_are_not_a_second_copy(capsys, monkeypatch):
    from power_bert_ops.training import PipelineConfig

    fields = PipelineConfig.__dataclass_fields__
    monkeypatch.setattr(fields["finetune_epochs"], "default", 7.5)
    monkeypatch.setattr(fields["lr_bert"], "default", 4.25e-5)
    monkeypatch.setattr(fields["break_even_keep"], "default", 0.8)
    text = _help(capsys, "run")
    assert "stage 1 (fine-tune) epochs (default: 7.5)" in text
    assert "else 4.25e-05)" in text and "as it is (default: 0.8)" in text


def test_every_option_says_its_default():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.required or isinstance(action, (cli.argparse._HelpAction, cli.argparse._StoreTrueAction)):
                continue
            text = formatter._get_help_string(action) or ""
            assert "default" in text.lower(), (name, action.option_strings, text)


# ---------------------------------------------------------------------------------------------
# 9. A run is its content: a byte-identical file under another name is the same run
# ---------------------------------------------------------------------------------------------
def test_identical_training_file_under_another_name_is_the_same_run(workdir, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    stamp = (run / "finetune" / "stage.json").stat().st_mtime_ns
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(workdir / "train.csv", data / "reviews_2024.csv")
    shutil.copy(workdir / "eval.csv", data / "held_out.csv")
    args = ["finetune", *run_args(workdir, run)[1:]]
    args = _replace(args, "--train-file", str(data / "reviews_2024.csv"))
    args = _replace(args, "--eval-file", str(data / "held_out.csv"))
    assert cli.main(args) == 0, capsys.readouterr().err
    assert (run / "finetune" / "stage.json").stat().st_mtime_ns == stamp, "the finished stage is reused"
    out = capsys.readouterr().out
    assert re.search(rf"power-bert: finetune reused: dev accuracy \d\.\d{{4}}, finished earlier in {re.escape(str(run / 'finetune'))} "
                     r"with these settings", out), out


def test_a_run_from_before_content_hashes_still_resumes(workdir, finished_run, tmp_path):
    """run_config.json written when the hash included the file names: the same run, upgraded."""
    from power_bert_ops.training import DataArgs
    from power_bert_ops.training.run import run_identity

    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    data = DataArgs(train_file=str(workdir / "train.csv"), eval_file=str(workdir / "eval.csv"),
                    text_column="review", label_column="sentiment")
    old = run_identity(str(workdir / "model"), data, 16, 42, legacy=True)
    new = run_identity(str(workdir / "model"), data, 16, 42)
    assert old != new
    (run / "run_config.json").write_text(json.dumps(old))
    assert cli.main(["finetune", *run_args(workdir, run)[1:]]) == 0
    assert json.loads((run / "run_config.json").read_text()) == new


# ---------------------------------------------------------------------------------------------
# 10. Our one line is all a user sees
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def transformers_says():
    """What transformers shows a user at its default verbosity (warnings), as a Python user has
    it: the messages reaching its loggers' handlers."""
    from transformers.utils import logging as hf_logging

    said = []

    class Collect(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())

    root = logging.getLogger("transformers")
    handler = Collect(logging.WARNING)
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    root.addHandler(handler)
    yield said
    root.removeHandler(handler)
    hf_logging.set_verbosity(before)


def test_loading_a_power_bert_tokenizer_says_nothing(finished_run, monkeypatch, transformers_says):
    """AutoTokenizer re-reading a PoWER-BERT folder's config through a class that cannot (here:
    AutoConfig made to fail, as where power_bert is not registered) warned "You are using a model
    of type power_bert to instantiate a model of type ``"."""
    from transformers import AutoConfig

    from power_bert_ops.training.artifacts import load_tokenizer, read_config

    folder = finished_run / "retrain" / "model"
    cfg = read_config(folder)

    def unreadable(*args, **kwargs):
        raise ValueError("Unrecognized model in the folder")

    monkeypatch.setattr(AutoConfig, "from_pretrained", unreadable)
    tok = load_tokenizer(folder, cfg)
    assert len(tok) == cfg.base_config["vocab_size"]
    assert not [m for m in transformers_says if m.startswith("You are using a model of type")], transformers_says


def test_long_rows_warning_silenced_only_around_our_calls(finished_run, transformers_says):
    from transformers import AutoTokenizer

    from power_bert_ops._quiet import quiet_transformers

    folder = finished_run / "retrain" / "model"
    long_text = " ".join(["good movie"] * 30)
    with quiet_transformers():
        AutoTokenizer.from_pretrained(folder)(long_text)
    assert not [m for m in transformers_says if m.startswith("Token indices")], transformers_says
    AutoTokenizer.from_pretrained(folder)(long_text)  # outside our calls transformers logs as it normally does
    assert [m for m in transformers_says if m.startswith("Token indices")]
    assert not logging.getLogger("transformers.tokenization_utils_base").filters


def test_predict_and_evaluate_long_rows_print_nothing_of_transformers(workdir, finished_run, tmp_path,
                                                                      transformers_says):
    from power_bert_ops.training import DataArgs, evaluate, predict

    long_text = " ".join(["good movie"] * 30)
    (tmp_path / "in.csv").write_text(f"review,sentiment\n{long_text},pos\nbad,neg\n")
    model = finished_run / "retrain" / "model"
    assert predict(model, tmp_path / "in.csv", tmp_path / "out.csv", text_column="review")["truncated"] == 1
    assert evaluate(model, DataArgs(eval_file=str(tmp_path / "in.csv"), text_column="review",
                                    label_column="sentiment"))["truncated"] == 1
    assert not [m for m in transformers_says if m.startswith(("Token indices", "You are using a model of type"))]


def test_power_bert_folder_without_tokenizer_is_one_line(workdir, finished_run, tmp_path, capsys):
    folder = tmp_path / "no_tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(finished_run / "retrain" / "model" / name, folder / name)
    assert cli.main(["evaluate", "--model-dir", str(folder), "--eval-file", str(workdir / "eval.csv"), *EVAL]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"power-bert evaluate: {folder}: the folder holds no tokenizer files (tokenizer.json, "
                          f"vocab.txt ...)") and "sentencepiece" not in err


# ---------------------------------------------------------------------------------------------
# 11. A user's input file is read whole or refused in one line: no row dropped, no column
#     chosen silently, advice a command-line user can act on
# ---------------------------------------------------------------------------------------------
def test_ragged_rows_refused_by_predict_evaluate_and_run(workdir, finished_run, tmp_path, capsys):
    """A row with a field too many or too few is refused, naming the file, the line and the
    field counts: predict's output rows stay the input's rows (none dropped with a notice)."""
    ragged = tmp_path / "in.csv"
    ragged.write_text('review,sentiment\ngood movie,pos\n"bad, and\nlong",neg\nok,pos,extra\nfine\n')
    expected = f"{ragged}: 2 rows do not have the header's 2 fields (line 5 has 3, line 6 has 1)"
    model = str(finished_run / "retrain" / "model")
    out = tmp_path / "p.csv"
    assert cli.main(["predict", "--model-dir", model, "--input-file", str(ragged), "--output-file", str(out),
                     "--text-column", "review", "--no-progress"]) == 2
    assert _one_line(capsys).startswith(f"power-bert predict: {expected}; a text holding a comma")
    assert not out.exists()
    assert cli.main(["evaluate", "--model-dir", model, "--eval-file", str(ragged), *EVAL, "--no-progress"]) == 2
    assert expected in _one_line(capsys)
    run = tmp_path / "o"
    args = _replace(run_args(workdir, run), "--train-file", str(ragged))
    assert cli.main(args) == 2
    assert expected in _one_line(capsys) and not run.exists()


def test_duplicate_column_refused_by_predict(finished_run, tmp_path, capsys):
    texts = tmp_path / "in.csv"
    texts.write_text("review,review\ngood movie,boring plot\n")
    out = tmp_path / "p.csv"
    assert cli.main(["predict", "--model-dir", str(finished_run / "retrain" / "model"), "--input-file", str(texts),
                     "--output-file", str(out), "--text-column", "review", "--no-progress"]) == 2
    assert _one_line(capsys) == (f"power-bert predict: {texts}: the header (line 1) names the column 'review' more "
                                 f"than once; give each column its own name\n")
    assert not out.exists()


def test_not_utf8_input_says_how_to_resave_it(finished_run, tmp_path, capsys):
    texts = tmp_path / "in.csv"
    texts.write_bytes("review\ncaf\xe9 movie\n".encode("latin-1"))
    assert cli.main(["predict", "--model-dir", str(finished_run / "retrain" / "model"), "--input-file", str(texts),
                     "--output-file", str(tmp_path / "p.csv"), "--text-column", "review", "--no-progress"]) == 2
    err = _one_line(capsys)
    assert f"{texts}: not valid UTF-8 at byte offset 10 (line 2, byte 3 of the line: 0xe9" in err
    assert f"`iconv -f cp1252 -t utf-8 {texts} > {tmp_path / 'in.utf8.csv'}`" in err and "errors=" not in err


# ---------------------------------------------------------------------------------------------
# 12. --task with files: the files are the data and --task picks the metric (documented in
#     --help); what the files would silently override is refused, naming both flags
# ---------------------------------------------------------------------------------------------
TASK_WITH_FILES = [
    (["--data-dir", "glue_data"], "--data-dir and --train-file / --eval-file both given"),
    (["--task", "rte", "--data-dir", "glue_data"], "--data-dir and --train-file / --eval-file both given"),
    (["--eval-split", "test"], "--eval-split test and --train-file / --eval-file both given"),
    (["--task", "stsb"], "--task stsb is a regression task: pass --regression"),
    (["--task", "sst2", "--regression"], "--regression and --task sst2 (a classification task) both given"),
    (["--task", "race"], "--task race is a multiple-choice task"),
    (["--task", "sst-3"], "--task 'sst-3' is not a known task ("),
]


@pytest.mark.parametrize("extra,message", TASK_WITH_FILES, ids=[" ".join(e) for e, _ in TASK_WITH_FILES])
def test_task_with_files_refuses_what_the_files_override(workdir, tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    assert cli.main(run_args(workdir, out) + extra) == 2
    assert message in _one_line(capsys)
    assert not out.exists()
    evaluate_args = ["evaluate", "--model-dir", str(workdir / "model"), "--eval-file", str(workdir / "eval.csv"),
                     *EVAL, *extra]
    assert cli.main(evaluate_args) == 2
    assert message.replace("--train-file / ", "") in _one_line(capsys)


def test_task_with_eval_file_scores_the_file_with_the_tasks_metric(workdir, finished_run, capsys):
    """`evaluate --task mrpc --eval-file F`: F is the data, scored with MRPC's metrics (F1 and
    accuracy) instead of the files' default (accuracy); the --help of --task says so."""
    model = str(finished_run / "retrain" / "model")
    assert cli.main(["evaluate", "--model-dir", model, "--eval-file", str(workdir / "eval.csv"), *EVAL, "--json",
                     "--no-progress"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", "--model-dir", model, "--task", "mrpc", "--eval-file", str(workdir / "eval.csv"),
                     *EVAL, "--json", "--no-progress"]) == 0
    mrpc = json.loads(capsys.readouterr().out)
    assert "f1" in mrpc and "f1" not in plain and mrpc["accuracy"] == plain["accuracy"]
    assert mrpc["examples"] == plain["examples"] == 96
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "--task only picks the metric" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("keep,message", [
    ("--train-file", "--train-file without --eval-file: training needs the dev data"),
    ("--eval-file", "--eval-file without --train-file: with your own files the training data comes from "
                    "--train-file (--task rotten_tomatoes only names the metric"),
])
def test_training_needs_both_files(workdir, tmp_path, capsys, keep, message):
    out = tmp_path / "o"
    args = _replace(run_args(workdir, out), "--eval-file" if keep == "--train-file" else "--train-file")
    assert cli.main([*args, "--task", "rotten_tomatoes"]) == 2
    assert message in _one_line(capsys)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 13. Ctrl-C at any moment of any command: one line, exit status 130
# ---------------------------------------------------------------------------------------------
COMMANDS = {
    "run": (["--output-dir", "o"], "cmd_train"), "finetune": (["--output-dir", "o"], "cmd_train"),
    "search": (["--output-dir", "o"], "cmd_train"), "retrain": (["--output-dir", "o"], "cmd_train"),
    "evaluate": (["--model-dir", "m"], "cmd_evaluate"),
    "predict": (["--model-dir", "m", "--input-file", "i.csv", "--output-file", "p.csv"], "cmd_predict"),
    "benchmark": (["--model-dir", "m", "--baseline", "b"], "cmd_benchmark"),
    "export": (["--model-dir", "m", "--format", "onnx", "--output", "m.onnx"], "cmd_export"),
    "explain": (["--model-dir", "m", "--text", "good"], "cmd_explain"),
}


@pytest.mark.parametrize("when", ["start-up", "work"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch, command, when):
    """Ctrl-C while the command starts (building its parser imports the training stack: seconds)
    or while it works: `power-bert ...: interrupted` on stderr, no traceback, exit status 130."""
    monkeypatch.chdir(tmp_path)
    args, func = COMMANDS[command]

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_defaults" if when == "start-up" else func, interrupt)
    try:
        rc = cli.main([command, *args])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main(): Python prints its traceback")
    assert rc == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[0].startswith("power-bert") and \
        ": interrupted" in err and err.count("\n") == 2, err


@pytest.mark.parametrize("when", ["start-up", "work"])
def test_ctrl_c_that_a_library_turns_into_another_error_is_one_line(tmp_path, capsys, monkeypatch, when):
    """A real SIGINT whose KeyboardInterrupt a library swallows half-way through an import, which
    then fails with another error (a RecursionError in a half-imported numpy, seen on Ctrl-C 0.5 s
    into `power-bert predict`): still `interrupted`, exit 130, no traceback."""
    import os
    import signal

    monkeypatch.chdir(tmp_path)
    args, func = COMMANDS["predict"]

    def interrupted_import(*a, **kw):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what a library's `except BaseException` / import machinery does
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cli, "_defaults" if when == "start-up" else func, interrupted_import)
    assert cli.main(["predict", *args]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == ("power-bert: interrupted" if when == "start-up" else
                                                      "power-bert predict: interrupted"), err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # main put Python's handler back
    # an error without a Ctrl-C is not taken for one
    monkeypatch.setattr(cli, "_defaults" if when == "start-up" else func,
                        lambda *a, **kw: (_ for _ in ()).throw(RecursionError("deep")))
    with pytest.raises(RecursionError):
        cli.main(["predict", *args])


@pytest.mark.parametrize("command", ["predict", "run"])
def test_broken_pipe_other_than_stdout_is_an_error(tmp_path, capsys, monkeypatch, command):
    """A broken pipe that is not a closed standard output (a FIFO --output-file whose reader left,
    a worker's pipe) is a one-line error with status 1, not the quiet end of `... | head`."""
    monkeypatch.chdir(tmp_path)
    args, func = COMMANDS[command]

    def broken(*a, **kw):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, func, broken)
    assert cli.main([command, *args]) == 1
    what = "what reads p.csv" if command == "predict" else "a process this command wrote to"
    assert capsys.readouterr().err == f"power-bert {command}: broken pipe: {what} stopped reading " \
                                      f"([Errno 32] Broken pipe)\n"


@pytest.mark.parametrize("command", ["search", "retrain"])
def test_stage_without_its_earlier_stages_leaves_nothing(workdir, tmp_path, capsys, command):
    """A later stage asked for in a new folder is refused before the data is read, and writes
    nothing there, so the corrected command (`run` with other settings) runs."""
    out = tmp_path / "o"
    args = run_args(workdir, out)
    args[0] = command
    assert cli.main(args) == 2
    assert capsys.readouterr().err == (f"power-bert {command}: stage 'finetune' has not run in {out}; run it first "
                                       f"(`power-bert finetune` with the same arguments)\n")
    assert not out.exists()


def test_retrain_of_a_one_value_sweep_finds_its_stages(workdir, finished_run, tmp_path, capsys):
    """A sweep of one value keeps its stages in the folder itself (not lambda_<λ>/), so `retrain
    --lambdas <that value>` over a finished search finds it; a sweep of two looks in each value's
    folder and refuses the one whose search has not run, writing nothing."""
    from tiny_models import retrain_args

    args = retrain_args(finished_run, workdir, tmp_path / "r")
    i = args.index("--lambda")
    assert cli.main([*args[:i], "--lambdas", args[i + 1], *args[i + 2:]]) == 0
    assert (tmp_path / "r" / "retrain" / "stage.json").exists() and not (tmp_path / "r" / "lambda_0.002").exists()
    capsys.readouterr()
    assert cli.main([*args[:i], "--lambdas", "2e-3,3e-3", *args[i + 2:]]) == 2
    where = tmp_path / "r" / "lambda_0.002"
    assert capsys.readouterr().err == (f"power-bert retrain: stage 'search' has not run in {where}; run it first "
                                       f"(`power-bert search` with the same arguments)\n")
    assert not (tmp_path / "r" / "lambda_0.002").exists()


def test_ctrl_c_while_the_command_loads_is_one_line(monkeypatch, capsys):
    """The console command (power_bert_cli:main) imports the package inside main: Ctrl-C during
    that import (torch: seconds) exits 130 with one line, as Ctrl-C later does."""
    import importlib.abc
    import sys

    import power_bert_cli

    class Interrupt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "power_bert_ops.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "power_bert_ops.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupt(), *sys.meta_path])
    assert power_bert_cli.main() == 130
    assert capsys.readouterr().err == "\npower-bert: interrupted\n"


def test_console_entry_point_runs_the_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "power_bert_cli", "benchmark", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: power-bert benchmark"), done.stderr
    assert "--compile" in done.stdout


def test_a_run_folder_given_as_the_model_names_its_models(workdir, finished_run, capsys):
    """`evaluate --model-dir <the run folder>`: refused before any work, naming the two models in it."""
    assert cli.main(["evaluate", "--model-dir", str(finished_run), "--eval-file", str(workdir / "eval.csv"),
                     "--text-column", "review", "--label-column", "sentiment", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"holds no config.json: it is not a Hugging Face model folder; it is a `power-bert run` folder: give its " \
           f"models, {finished_run / 'retrain' / 'model'} or {finished_run / 'finetune' / 'model'}" in err
    assert err.count("\n") == 1
