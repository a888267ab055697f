"""Stage 3's word-dropped copies (power_bert_ops.training.augment)."""
from __future__ import annotations

import numpy as np
import pytest
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from power_bert_ops.training.augment import WordDropCopies, drop_words, word_starts
from power_bert_ops.training.pipeline import AUTO_AUGMENT_COPIES

PIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "is", "charm", "##ing", "un", "##watch",
          "##able", "a", "bore", "plot"]


@pytest.fixture(scope="module")
def wordpiece():
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(PIECES)}, do_lower_case=True)


def _words(tok, ids):
    """The example's words as the tokenizer spells them, specials left out."""
    return tok.decode([i for i in ids if i not in tok.all_special_ids]).split()


def test_word_starts_wordpiece_sentencepiece_and_plain(wordpiece):
    starts = word_starts(wordpiece)
    assert not starts[PIECES.index("##ing")] and starts[PIECES.index("charm")] and starts[PIECES.index("[CLS]")]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = [("<unk>", 0.0), ("▁the", -1.0), ("▁film", -1.0), ("▁charm", -1.0), ("ing", -2.0), ("▁un", -1.0),
             ("watch", -2.0), ("able", -2.0)]
    sp = Tokenizer(models.Unigram(vocab, unk_id=0))
    sp.pre_tokenizer, sp.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    sp = PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>")
    marks = word_starts(sp)
    assert [marks[sp.convert_tokens_to_ids(t)] for t in ("▁charm", "ing", "▁un", "watch")] == [True, False, True, False]
    plain = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good"])})
    assert word_starts(plain).all()


def test_drop_words_removes_whole_words_and_keeps_specials_and_fields(wordpiece):
    enc = wordpiece("the film is charming", "unwatchable plot")  # a pair: token_type_ids 0 then 1
    ex = {k: list(v) for k, v in enc.items()} | {"labels": 1}
    original = {k: list(v) if isinstance(v, list) else v for k, v in ex.items()}
    starts, special = word_starts(wordpiece), set(wordpiece.all_special_ids)
    seen = set()
    for seed in range(200):
        out = drop_words(ex, starts, special, 0.4, np.random.default_rng(seed))
        assert ex == original, "the example is not changed"
        n = len(out["input_ids"])
        assert n == len(out["attention_mask"]) == len(out["token_type_ids"]) and out["labels"] == 1
        ids = out["input_ids"]
        assert ids.count(wordpiece.cls_token_id) == 1 and ids.count(wordpiece.sep_token_id) == 2
        words = _words(wordpiece, ids)
        assert words and set(words) <= {"the", "film", "is", "charming", "unwatchable", "plot"}  # no half words
        sep = ids.index(wordpiece.sep_token_id)
        assert set(out["token_type_ids"][:sep + 1]) == {0} and set(out["token_type_ids"][sep + 1:]) <= {1}
        seen.add(tuple(words))
    assert len(seen) > 20  # the draws differ
    again = drop_words(ex, starts, special, 0.4, np.random.default_rng(7))
    assert again == drop_words(ex, starts, special, 0.4, np.random.default_rng(7))


def test_drop_words_keeps_one_word_and_leaves_one_word_texts(wordpiece):
    starts, special = word_starts(wordpiece), set(wordpiece.all_special_ids)
    ex = {k: list(v) for k, v in wordpiece("the film is a bore").items()}
    for seed in range(50):
        out = drop_words(ex, starts, special, 0.999, np.random.default_rng(seed))
        assert len(_words(wordpiece, out["input_ids"])) == 1
    one = {k: list(v) for k, v in wordpiece("unwatchable").items()}  # one word of three pieces
    assert drop_words(one, starts, special, 0.999, np.random.default_rng(0)) == one
    assert drop_words(ex, starts, special, 0.0, np.random.default_rng(0)) == ex
    pair = {k: list(v) for k, v in wordpiece("the film is a bore", "unwatchable plot").items()}
    for seed in range(50):  # each text of a pair keeps a word, or a copy could lose the question or the hypothesis
        out = drop_words(pair, starts, special, 0.999, np.random.default_rng(seed))
        sep = out["input_ids"].index(wordpiece.sep_token_id)
        assert len(_words(wordpiece, out["input_ids"][:sep])) == 1 and len(_words(wordpiece, out["input_ids"][sep:])) == 1


def test_unknown_words_drop_and_arrays_cut_like_lists(wordpiece):
    ds = WordDropCopies([], wordpiece, copies=1, drop=0.5, seed=0)
    assert wordpiece.unk_token_id not in ds.special and wordpiece.cls_token_id in ds.special
    ex = {k: np.array(v) for k, v in wordpiece("the zzz film qqq").items()}  # two [UNK] words
    assert (ex["input_ids"] == wordpiece.unk_token_id).sum() == 2
    seen = set()
    for seed in range(40):
        out = drop_words(ex, ds.starts, ds.special, 0.5, np.random.default_rng(seed))
        assert isinstance(out["input_ids"], np.ndarray) and len(out["input_ids"]) == len(out["attention_mask"])
        seen.add(int((out["input_ids"] == wordpiece.unk_token_id).sum()))
    assert seen == {0, 1, 2}
    with pytest.raises(TypeError, match="per-token fields are 1-D"):
        drop_words(ex | {"features": np.zeros((len(ex["input_ids"]), 3))}, ds.starts, ds.special, 0.5,
                   np.random.default_rng(0))


def test_word_drop_copies_rows_epochs_and_seeds(wordpiece):
    texts = ["the film is charming", "a bore", "the plot is a bore", "unwatchable film", "the film"]
    base = [{k: list(v) for k, v in wordpiece(t).items()} | {"labels": i % 2} for i, t in enumerate(texts)]
    ds = WordDropCopies(base, wordpiece, copies=2, drop=0.5, seed=3)
    assert len(ds) == 15
    assert [ds[i] for i in range(5)] == base  # the originals first, unchanged
    for i in range(5, 15):
        assert ds[i]["labels"] == base[i % 5]["labels"]
        assert set(_words(wordpiece, ds[i]["input_ids"])) <= set(_words(wordpiece, base[i % 5]["input_ids"]))
    epoch0 = [ds[i] for i in range(15)]
    assert epoch0 == [ds[i] for i in range(15)], "the same epoch draws the same copies"
    draws = set()
    for epoch in range(1, 8):
        ds.epoch = epoch
        draws.add(tuple(tuple(ds[i]["input_ids"]) for i in range(5, 15)))
    assert len(draws) > 1, "each epoch draws new copies"
    other = WordDropCopies(base, wordpiece, copies=2, drop=0.5, seed=4)
    assert [other[i] for i in range(5, 15)] != epoch0[5:]
    with pytest.raises(IndexError):
        ds[15]


def test_copies_of_tokenized_rows_batch_like_the_originals(wordpiece):
    """The pipeline's rows (1-D tensors from tokenize_dataset, a 0-d label) through the
    pipeline's collator: every field of a copy loses the same positions, so each padded row's
    attention mask marks exactly its tokens and its [CLS] / [SEP] stay."""
    from transformers import DataCollatorWithPadding

    from power_bert_ops.data.encoding import tokenize_dataset
    from power_bert_ops.data.types import TextDataset

    texts = ["the film is charming", "a bore", "the plot is a bore", "unwatchable film"]
    pairs = ["a plot", "the film", "charming", "a bore"]
    rows = tokenize_dataset(TextDataset("t", texts, labels=[1, 0, 0, 1], label_names=["n", "p"], text_pairs=pairs),
                            wordpiece, max_length=16, padding=False)
    ds = WordDropCopies(rows, wordpiece, copies=3, drop=0.5, seed=0)
    batch = DataCollatorWithPadding(wordpiece)([ds[i] for i in range(len(ds))])
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    assert ids.shape == mask.shape == types.shape and batch["labels"].tolist() == [1, 0, 0, 1] * 4
    real = mask.bool()
    assert ((ids != wordpiece.pad_token_id) == real).all(), "the mask marks the copy's tokens, no more"
    assert (ids[:, 0] == wordpiece.cls_token_id).all() and ((ids == wordpiece.sep_token_id).sum(1) == 2).all()
    assert (real.sum(1)[4:] <= real.sum(1)[:4].repeat(3)).all() and (real.sum(1)[4:] < real.sum(1)[:4].repeat(3)).any()


@pytest.mark.xdist_group("pipeline")
def test_retrain_with_copies_trains_on_them_records_them_and_guards_the_folder(workdir, finished_run, tmp_path,
                                                                              capsys):
    """`retrain --augment-copies 1`: stage 3 takes twice the steps per epoch of the 384 training
    rows, its settings and the report name the copies, and the folder is not reused with the
    short texts' default of 2 (the flag to reuse it is named)."""
    import json
    import shutil

    from power_bert_ops import cli
    from tiny_models import retrain_args

    out = tmp_path / "aug"
    args = retrain_args(finished_run, workdir, out, "--augment-copies", "1")
    assert cli.main(args) == 0, capsys.readouterr().err
    rec = json.loads((out / "retrain" / "stage.json").read_text())["training"]
    assert rec["steps"] / rec["epochs_run"] == 2 * 384 / 32
    settings = json.loads((out / "retrain" / "settings.json").read_text())
    assert settings["augment_copies"] == 1 and settings["augment_drop"] == 0.3
    default = json.loads((finished_run / "retrain" / "settings.json").read_text())
    assert default["augment_copies"] == AUTO_AUGMENT_COPIES and default["augment_drop"] == 0.3  # short texts
    report = (out / "report.md").read_text()
    assert "stage 3 also trained on 1 word-dropped copy of each example (`--augment-copies`; each word left out " \
           "with probability 0.3)" in report
    capsys.readouterr()
    assert cli.main(args[:-2]) == 2
    err = capsys.readouterr().err
    assert "was run with other settings" in err and "--augment-copies 1" in err
    assert cli.main([*args[:-2], "--augment-copies", "0"]) == 2
    before = capsys.readouterr().err
    assert "to reuse it, give the settings it was run with (--augment-copies 1); or, to run it again with these, " \
           f"remove {out / 'retrain'} (its model; the stages before it are kept)" in before
    shutil.rmtree(out / "retrain")  # the advice for `retrain`, whose new folder would lack stages 1-2
    assert cli.main([*args[:-2], "--augment-copies", "0"]) == 0
    assert json.loads((out / "retrain" / "settings.json").read_text())["augment_copies"] == 0


def test_augment_drop_refused_where_there_are_no_copies():
    """By default multiple choice gets no copies: --augment-drop alone is refused there, saying why."""
    from types import SimpleNamespace

    from power_bert_ops.training.errors import PowerBertError
    from power_bert_ops.training.pipeline import PipelineConfig, resolve_auto
    from power_bert_ops.training.run import check_augment_flags

    choice = SimpleNamespace(train_lengths=[300], problem="multiple_choice")
    cfg = resolve_auto(PipelineConfig(model="m", output_dir="o", augment_drop=0.3), choice)
    with pytest.raises(PowerBertError, match=r"there are none \(stage 3 makes none for multiple choice\); add "
                                             r"--augment-copies K"):
        check_augment_flags(cfg, ("finetune", "search", "retrain"), ["--augment-drop"], choice)
    check_augment_flags(cfg, ("finetune", "search", "retrain"), [], choice)  # the default drop, no copies: fine
    long = resolve_auto(PipelineConfig(model="m", output_dir="o", augment_drop=0.3),
                        SimpleNamespace(train_lengths=[300], problem="classification"))
    assert long.augment_copies >= 1  # long texts get copies: --augment-drop has something to set


@pytest.mark.parametrize("extra, message", [
    (["--augment-copies", "-1"], "--augment-copies must be a whole number from 0 to 16, got -1"),
    (["--augment-copies", "17"], "--augment-copies must be a whole number from 0 to 16, got 17"),
    (["--augment-copies", "1", "--augment-drop", "1"], "--augment-drop must be a probability in (0, 1)"),
    (["--augment-copies", "1", "--augment-drop", "nan"], "--augment-drop must be a probability in (0, 1)"),
    (["--augment-copies", "0", "--augment-drop", "0.3"], "--augment-drop sets how stage 3's word-dropped copies are "
                                                         "drawn, and there are none (--augment-copies 0); add"),
])
def test_bad_augment_flags_refused_before_work(workdir, tmp_path, capsys, extra, message):
    from power_bert_ops import cli
    from tiny_models import run_args

    out = tmp_path / "run"
    assert cli.main(run_args(workdir, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_augment_flags_refused_where_stage_3_does_not_run_or_for_multiple_choice(workdir, tmp_path, capsys):
    from power_bert_ops import cli
    from tiny_models import run_args, synthetic_race

    out = tmp_path / "run"
    args = run_args(workdir, out, "--augment-copies", "2")
    args[0] = "finetune"
    assert cli.main(args) == 2
    assert "--augment-copies: word-dropped copies are stage 3's; this command runs finetune, so leave " \
           "--augment-copies out" in capsys.readouterr().err and not out.exists()
    race = synthetic_race(tmp_path / "RACE", {"train": 16, "dev": 8, "test": 8}, seed=0)
    assert cli.main(["run", "--task", "race", "--data-dir", str(race), "--model", str(workdir / "model"),
                     "--max-length", "24", "--output-dir", str(out), "--augment-copies", "1", "--no-progress"]) == 2
    assert "--augment-copies takes single texts and text pairs" in capsys.readouterr().err and not out.exists()


def test_the_flags_to_reuse_a_folder_name_the_copies_settings(tmp_path):
    """A folder's stage 3 with other copy settings is refused with every flag that reuses it: the
    switch alone where the drop meant nothing then, the switch and the drop where it did (and the
    same for logit distillation's alpha)."""
    from power_bert_ops.training.errors import StageSettingsError
    from power_bert_ops.training.pipeline import PipelineConfig, _write_stage_settings, check_stage_settings

    def refusal(then: dict, now: dict) -> str:
        out = tmp_path / "retrain"
        out.mkdir(exist_ok=True)
        (out / "stage.json").write_text("{}")
        none = {"augment_copies": 0}  # as resolve_auto leaves it where it makes no copies
        _write_stage_settings("retrain", PipelineConfig(model="m", output_dir=str(tmp_path), **(none | then)), out)
        with pytest.raises(StageSettingsError) as e:
            check_stage_settings("retrain", PipelineConfig(model="m", output_dir=str(tmp_path), **(none | now)), out)
        shown.append(str(e.value).split("(setting: (then, now) = ")[1].split("}")[0] + "}")
        return str(e.value).split("to reuse it, give the settings it was run with (")[1].split(")")[0]

    shown = []
    assert refusal({}, {"augment_copies": 1}) == "--augment-copies 0"
    assert shown[-1] == "{'augment_copies': (0, 1)}"  # not the drop, which meant nothing then
    assert refusal({"augment_copies": 2, "augment_drop": 0.2}, {}) == "--augment-copies 2 --augment-drop 0.2"
    assert refusal({"augment_copies": 2}, {}) == "--augment-copies 2"  # its drop is today's default
    assert refusal({"augment_copies": 2, "augment_drop": 0.2}, {"augment_copies": 1, "augment_drop": 0.2}) == \
        "--augment-copies 2"
    assert refusal({"distill": True, "distill_alpha": 0.9}, {"distill": False}) == "--distill --distill-alpha 0.9"
    assert shown[-1] == "{'distill': (True, False)}"
    assert refusal({"augment_copies": 1, "augment_drop": 0.2}, {"augment_copies": 2}) == \
        "--augment-copies 1 --augment-drop 0.2"
    assert shown[-1] == "{'augment_copies': (1, 2), 'augment_drop': (0.2, 0.3)}"
    assert isinstance(PipelineConfig(model="m", output_dir="o", augment_copies=2.0, seed=3.0).augment_copies, int)


def test_set_copies_epoch_follows_the_trainer_and_stage_3_draws_each_epoch(wordpiece, workdir, finished_run,
                                                                          tmp_path, monkeypatch):
    """SetCopiesEpoch gives the copies the Trainer's epoch (also after a resume mid-way, where the
    state's epoch is a fraction), and in a real stage 3 of 2 epochs the copies are drawn in
    epochs 0 and 1."""
    from transformers import TrainerControl, TrainerState

    from power_bert_ops import cli
    from power_bert_ops.training import augment
    from tiny_models import retrain_args

    ds = WordDropCopies([], wordpiece, copies=1, drop=0.5, seed=0)
    callback = augment.SetCopiesEpoch(ds)
    for epoch, want in ((0.0, 0), (1.0, 1), (1.5, 1), (2.0, 2)):
        callback.on_epoch_begin(None, TrainerState(epoch=epoch), TrainerControl())
        assert ds.epoch == want
    drawn = set()
    real = augment.drop_words

    def spy(example, starts, special, drop, rng):
        drawn.add(spy.dataset.epoch)
        return real(example, starts, special, drop, rng)

    original_init = WordDropCopies.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        spy.dataset = self

    monkeypatch.setattr(augment, "drop_words", spy)
    monkeypatch.setattr(WordDropCopies, "__init__", init)
    assert cli.main(retrain_args(finished_run, workdir, tmp_path / "aug", "--augment-copies", "1",
                                 "--patience", "0")) == 0
    assert drawn == {0, 1}
