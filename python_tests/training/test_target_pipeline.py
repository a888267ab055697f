"""`power-bert run --target-speedup` end to end on the tiny model: the report's FLOP bound is the
target within ±3%, the trade-off curve from one command, distillation, and targets refused
before any training (issue "Ask for a speed-up, get it")."""
import json
import math
import shutil

import pytest

from power_bert_ops import cli
from power_bert_ops.flops import flop_bound
from power_bert_ops.training import stages, trainer as trainer_module
from power_bert_ops.flops import max_reachable_speedup

from tiny_models import run_args


def _target_args(workdir, out, *extra):
    args = run_args(workdir, out, *extra)
    i = args.index("--lambda")
    del args[i:i + 2]
    args[args.index("--finetune-epochs") + 1] = "4"
    return args + ["--search-min-steps", "0"]  # the search runs --search-epochs exactly (test_search_floor: the floor)


def test_target_sweep_with_distillation(workdir, tmp_path):
    out = tmp_path / "curve"
    assert cli.main(_target_args(workdir, out, "--target-speedups", "1.3,2", "--distill", "--retention",
                                 "absolute")) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["target_speedup"] for r in rows] == [1.3, 2.0]
    for r in rows:
        assert r["lambda"] is None
        assert abs(r["target_bound"] / r["target_speedup"] - 1) <= 0.03, r["retention"]
        # the bound in the report is the SPEC 3 bound of the configuration the model holds
        from power_bert_ops.modeling import PowerBertForSequenceClassification

        sub = out / f"target_{r['target_speedup']:g}x"
        model = PowerBertForSequenceClassification.from_pretrained(sub / "retrain" / "model")
        assert model.retention == r["retention"]
        assert flop_bound(model.config, model.retention, 16) == pytest.approx(r["target_bound"])
        assert r["padded"]["flop_bound"] == pytest.approx(r["target_bound"])  # absolute: the paper's bound
        search = r["search"]
        assert search["method"].startswith("controller") and search["target"] == r["target_speedup"]
        assert search["distill"] is True and search["max_reachable_bound"] > 2
        assert (sub / "finetune").resolve() == (out / "finetune").resolve()  # stage 1 ran once
    md = (out / "sweep.md").read_text()
    assert "| target 1.3x |" in md and "| target 2x |" in md
    assert (out / "sweep.png").stat().st_size > 1000
    assert sum(rows[1]["retention"]) < sum(rows[0]["retention"])  # a larger target keeps fewer rows


def test_default_is_a_target(workdir, tmp_path, capsys):
    """No λ and no target: `run` targets 3x; on a model where 3x cannot be reached the message
    names the largest reachable bound, before anything is written."""
    args = _target_args(workdir, tmp_path / "o", "--min-rows", "1")  # the bound of N = 4 rows, no floor
    args[args.index("--max-length") + 1] = "4"  # 2 layers at N=4 cannot reach 3x
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    from transformers import AutoConfig

    top = max_reachable_speedup(AutoConfig.from_pretrained(workdir / "model"), 4)
    assert top < 3 and f"target speed-up 3 is above the largest reachable FLOP bound {top:.3f}" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra,message", [
    (["--target-speedup", "0.5"], "--target-speedup must be a number >= 1"),
    (["--target-speedup", "500"], "is above the largest reachable FLOP bound"),
    (["--target-speedup", "500"], "(keeping in every layer the 3 rows each example of at most 8 tokens "
     "(--min-rows-max-length) keeps at least (--min-rows)); ask for at most"),
    (["--target-speedup", "500", "--min-rows-max-length", "all"],
     "(keeping in every layer the 3 rows each example keeps at least (--min-rows)); ask for at most"),
    (["--target-speedup", "500", "--min-rows", "1"], "(keeping one row in every layer); ask for at most"),
    (["--target-speedup", "500", "--min-rows-max-length", "3"],
     "(keeping in every layer the 3 rows each example of at most 3 tokens (--min-rows-max-length) keeps at least "
     "(--min-rows)); ask for at most"),
    (["--target-speedups", "2,x"], "--target-speedups must be comma-separated numbers >= 1; 'x'"),
    (["--target-speedup", "2", "--lambda", "1e-3"], "not both"),
])
def test_bad_targets_refused_before_training(workdir, tmp_path, capsys, extra, message):
    assert cli.main(_target_args(workdir, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_finetune_alone_does_not_check_the_target(workdir, tmp_path):
    """Stage 1 does not depend on the target: `finetune` runs under a target no search could
    reach (the search refuses it when it is asked for)."""
    args = _target_args(workdir, tmp_path / "o", "--target-speedup", "500", "--max-steps", "1")
    assert cli.main(["finetune", *args[1:]]) == 0
    assert cli.main(["search", *args[1:]]) == 2


def test_interrupted_stage_with_other_settings_says_how_to_start_it_again(workdir, tmp_path, monkeypatch, capsys):
    """A search stopped before it finished, run again with another --min-rows: refused, naming the
    stage folder to remove to start it again with these settings; removing it runs them, and the
    finished stage 1 is reused."""
    out = tmp_path / "o"
    args = _target_args(workdir, out, "--target-speedup", "1.6")

    def interrupt(self, a, state, control, **kw):
        if (out / "finetune" / "stage.json").exists():
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.StopOnNonFiniteLoss, "on_save", interrupt, raising=False)
    assert cli.main(args) == 130
    monkeypatch.undo()
    stamp = (out / "finetune" / "stage.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main([*args, "--min-rows", "2"]) == 2
    err = capsys.readouterr().err
    assert f"stage 'search' in {out / 'search'} was started with other settings and did not finish" in err
    assert f"to start it again with these, remove {out / 'search'}" in err and "--min-rows 3" in err
    shutil.rmtree(out / "search")
    assert cli.main([*args, "--min-rows", "2"]) == 0
    assert (out / "finetune" / "stage.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "report.json").read_text())["min_rows"] == 2


def test_resumed_search_continues_the_controller(workdir, tmp_path, monkeypatch):
    """A search stopped after its first checkpoint and resumed ends exactly where an uninterrupted
    search ends: the controller's integral and history come back from the checkpoint."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert cli.main(_target_args(workdir, whole, "--target-speedup", "1.6")) == 0
    cut.mkdir()  # stage 1 copied: the searches are what is compared
    shutil.copytree(whole / "finetune", cut / "finetune")
    shutil.copy(whole / "run_config.json", cut / "run_config.json")

    def interrupt(self, a, state, control, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.StopOnNonFiniteLoss, "on_save", interrupt, raising=False)
    assert cli.main(["search", *_target_args(workdir, cut, "--target-speedup", "1.6")[1:]]) == 130
    ckpts = list((cut / "search" / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 1
    saved = json.loads((ckpts[0] / "trainer_state.json").read_text())["stateful_callbacks"]["TargetController"]
    assert 0 < len(saved["attributes"]["history"]) and saved["attributes"]["integral"] != 0
    monkeypatch.undo()
    assert cli.main(_target_args(workdir, cut, "--target-speedup", "1.6")) == 0
    a = json.loads((whole / "search" / "target.json").read_text())
    b = json.loads((cut / "search" / "target.json").read_text())
    assert b["steps"] == a["steps"], "the history goes on from the checkpoint"
    assert b["u_final"] == pytest.approx(a["u_final"], rel=1e-4, abs=1e-6)
    assert b["soft_bound_final"] == pytest.approx(a["soft_bound_final"], rel=1e-4)
    assert json.loads((cut / "search" / "retention.json").read_text()) == \
        json.loads((whole / "search" / "retention.json").read_text())


def test_relative_target_is_against_real_lengths(workdir, tmp_path):
    """The default, relative retention: the target is the bound over the training data's real
    lengths (report's target_bound); the report gives the bucketed and the padded bound."""
    from power_bert_ops.modeling import PowerBertForSequenceClassification

    out = tmp_path / "rel"
    assert cli.main(_target_args(workdir, out, "--target-speedup", "1.5")) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["retention_scale"] == "relative"
    assert abs(r["target_bound"] / 1.5 - 1) <= 0.03, r["retention"]
    model = PowerBertForSequenceClassification.from_pretrained(out / "retrain" / "model")
    assert model.config.retention_scale == "relative" and model.retention == r["retention"]
    assert r["padded"]["flop_bound"] == pytest.approx(flop_bound(model.config, r["retention"], 16))
    assert r["padded"]["flop_bound"] > r["flop_bound"] >= 1.0  # padding inflates the padded figure


# -- a search that ends at its target, stages that stop on the dev metric -----------------------
def test_search_step_plan_has_a_floor_independent_of_data_size():
    from types import SimpleNamespace

    from power_bert_ops.training import PipelineConfig
    from power_bert_ops.training.stages import SEARCH_EXTEND, search_steps

    def plan(n, **kw):
        cfg = PipelineConfig(model="m", output_dir="o", batch_size=32, target_speedup=3.0, **kw)
        return search_steps(cfg, SimpleNamespace(train=range(n)))

    floor = PipelineConfig.search_min_steps
    small = plan(100)  # 4 steps per epoch
    assert (small["requested"], small["planned"], small["cap"]) == (4, floor, math.ceil(SEARCH_EXTEND * floor))
    big = plan(100_000, search_epochs=2.0)  # above the floor: its own epochs, and room to hold
    assert (big["requested"], big["planned"], big["cap"]) == (6250, 6250, math.ceil(SEARCH_EXTEND * 6250))
    assert plan(100, search_min_steps=0)["cap"] == 4  # off: the epochs as given
    assert plan(100, max_steps=10)["cap"] == plan(100, max_steps=10)["planned"] == 10


def _fake_trainer(curve, global_step, max_steps):
    from types import SimpleNamespace

    log = [{"loss": 1.0}] + [{"epoch": e, "eval_accuracy": v} for e, v in curve]
    state = SimpleNamespace(log_history=log, epoch=curve[-1][0], global_step=global_step, max_steps=max_steps)
    return SimpleNamespace(state=state, args=SimpleNamespace(load_best_model_at_end=True))


def test_training_record_says_epoch_kept_and_whether_dev_still_rose():
    from power_bert_ops.training.stages import describe_training, training_record

    rising = training_record(_fake_trainer([(1.0, 0.5), (2.0, 0.6), (3.0, 0.7)], 30, 30), "accuracy", 3.0, 2)
    assert rising["epoch_kept"] == 3.0 and rising["still_rising"] is True and rising["stopped_early"] is False
    assert "still rising at the end: a higher --finetune-epochs may help" in describe_training("finetune", rising)
    assert "still rising at the end (--retrain-epochs sets the cap" in describe_training("retrain", rising)
    stopped = training_record(_fake_trainer([(1.0, 0.5), (2.0, 0.7), (3.0, 0.65), (4.0, 0.6)], 40, 60),
                              "accuracy", 6.0, 2)
    assert stopped["epoch_kept"] == 2.0 and stopped["still_rising"] is False and stopped["stopped_early"] is True
    assert stopped["dev_curve"] == [[1.0, 0.5], [2.0, 0.7], [3.0, 0.65], [4.0, 0.6]]
    assert describe_training("retrain", stopped).startswith("retrain: kept epoch 2 of 4 run (cap 6), stopped")


def test_search_floor_extends_records_and_reports(workdir, tmp_path, capsys):
    """The default run: stage 1 and 3 stop on the dev metric (record in stage.json), the target
    search extends to its floor and says so, target.json records the soft bound, the steps and the
    projection's jump, and report.md / report.json show them; a search too short to reach the
    target warns about the jump."""
    out = tmp_path / "floor"
    args = _target_args(workdir, out, "--target-speedup", "1.6", "--patience", "1")[:-2]
    assert cli.main(args + ["--search-min-steps", "40"]) == 0
    printed = capsys.readouterr().out
    assert "search: 24 steps (--search-epochs 2) are under the floor of 40; extending to 40 steps" in printed
    search = json.loads((out / "search" / "target.json").read_text())
    assert search["requested_steps"] == 24 and search["planned_steps"] == 40 and search["max_steps"] == 60
    assert 40 <= search["steps"] <= 60 and search["extended_steps"] == search["steps"] - 24
    assert search["steps"] == 60 or search["held"] is True
    assert search["projection_jump"] == pytest.approx(search["projected_bound"] / search["soft_bound_final"])
    # the pipeline's search is SPEC 1.3's soft mode (r in the box, [CLS] ranked by significance)
    searched = json.loads((out / "search" / "model" / "config.json").read_text())
    assert searched["soft_like_hard"] is False and search["retention_shape"] == "box"
    report = json.loads((out / "report.json").read_text())
    assert report["search"]["projection_jump"] == search["projection_jump"]
    for stage in ("finetune", "retrain"):
        rec = json.loads((out / stage / "stage.json").read_text())["training"]
        assert rec == report["training"][stage] and rec["patience"] == 1
        values = [v for _, v in rec["dev_curve"]]
        assert rec["epoch_kept"] == rec["dev_curve"][values.index(max(values))][0]
        if rec["stopped_early"]:  # one evaluation without a better score after the best, then the stop
            assert values.index(max(values)) == len(values) - 2
        assert f"{stage}: kept epoch {rec['epoch_kept']:g} of" in printed
    md = (out / "report.md").read_text()
    assert f"soft FLOP bound reached **{search['soft_bound_final']:.2f}x** in {search['steps']} steps" in md
    assert f"(jump **x{search['projection_jump']:.2f}**)" in md and "| finetune | " in md
    # a 2-step search (no floor) does not settle at 2x: the projection jumps, and the run says so
    short = tmp_path / "short"
    short.mkdir()
    shutil.copytree(out / "finetune", short / "finetune")
    shutil.copy(out / "run_config.json", short / "run_config.json")
    assert cli.main(["search", *_target_args(workdir, short, "--target-speedup", "2", "--search-epochs", "0.1")[1:],
                     "--patience", "1"]) == 0
    jump = json.loads((short / "search" / "target.json").read_text())["projection_jump"]
    printed = capsys.readouterr().out
    assert abs(jump - 1) > 0.1 and "WARNING: the search ended at a soft FLOP bound of" in printed
    assert "give the search more steps (it ran " in printed  # a search under the floor: more steps may help


def test_jump_warning_names_the_remedy_by_the_search_length():
    """More steps help a search shorter than the default floor; past it the soft bound stalls short
    of high targets whatever the length, and the warning says so instead of asking for more."""
    short = stages.jump_warning(1.5, [30, 20, 10], 2.0, steps=12)
    assert "x1.33" in short and "give the search more steps (it ran 12; --search-epochs" in short
    long_ = stages.jump_warning(3.63, [88, 53, 27, 8, 6, 1], 5.99, steps=stages.SEARCH_MIN_STEPS)
    assert "x1.65" in long_ and "more search steps do not close it (120 ran)" in long_
    assert "--target-speedup" in long_ and "give the search more steps" not in long_
    over = stages.jump_warning(5.0, [40, 20, 10], 4.0, steps=150)  # a search past its target: no remedy to name
    assert over.endswith("(x0.80); stage 3 has to recover from that jump: expect a larger accuracy loss")
