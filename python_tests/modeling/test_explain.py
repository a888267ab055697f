"""power_bert_ops.explain reads the kept rows from the encoder's own record, so it gives the same
answer whichever implementation the selection runs: the registered kernel, the plain-PyTorch
reference swapped in as the kernel, or a plain-PyTorch selection that never calls the op."""
import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoTokenizer  # noqa: E402

from power_bert_ops import reference  # noqa: E402
from power_bert_ops.explain import explain  # noqa: E402
from power_bert_ops.modeling import PowerBertForSequenceClassification  # noqa: E402
from power_bert_ops.modeling import encoder as encoder_module  # noqa: E402
from power_bert_ops.testing import OPS, force_kernels, kernel_of  # noqa: E402

from tiny_models import tiny_bert_checkpoint  # noqa: E402

TEXT = "the movie was good and the ending was very long and boring"


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    path = tiny_bert_checkpoint(tmp_path_factory.mktemp("tiny") / "bert", layers=3)
    model = PowerBertForSequenceClassification.from_pretrained(path, retention=[9, 5, 5], sequence_length=16)
    return model, AutoTokenizer.from_pretrained(path)


def _check(exp, retention):
    n = len(exp.tokens)
    assert len(exp.kept) == len(retention)
    previous = list(range(n))
    for j, positions in enumerate(exp.kept):
        assert len(positions) == min(retention[j], len(previous))
        assert positions[0] == 0 and positions == sorted(positions) and set(positions) <= set(previous)
        previous = positions


def test_explain_kept_rows(model_and_tokenizer):
    model, tok = model_and_tokenizer
    encoder = model.power_encoder()
    before = {name: id(value) for name, value in vars(encoder).items()}
    exp = explain(model, tok, TEXT)
    _check(exp, model.retention)
    assert len(exp.tokens) == 14 and len(exp.kept[0]) == 9 and exp.kept[1] == exp.kept[2]
    # the record travels with the call: explain leaves no state on the encoder
    assert {name: id(value) for name, value in vars(encoder).items()} == before


def test_explain_says_when_the_text_was_truncated(model_and_tokenizer):
    model, tok = model_and_tokenizer
    exp = explain(model, tok, TEXT)
    assert not exp.truncated and exp.as_text().startswith("input (14 tokens): [CLS]")
    long = explain(model, tok, " ".join([TEXT] * 3))
    assert long.truncated and len(long.tokens) == 16 and long.input_tokens == 38
    assert long.as_text().startswith("input (16 tokens, truncated from 38): [CLS]")


def test_explain_with_the_reference_as_the_selection_kernel(model_and_tokenizer):
    model, tok = model_and_tokenizer
    want = explain(model, tok, TEXT)
    with force_kernels("reference", "cpu", OPS["extract_scored"]):
        assert kernel_of("extract_scored", "cpu") == "reference"
        got = explain(model, tok, TEXT)
    assert got.kept == want.kept and got.prediction == want.prediction


class _OpsWithPlainSelection:
    """torch.ops.power_bert, except extract_scored: plain PyTorch that never calls the op."""

    extract_scored = staticmethod(reference.extract_scored)

    def __getattr__(self, name):
        return getattr(torch.ops.power_bert, name)


def test_explain_when_the_selection_is_not_the_op(model_and_tokenizer, monkeypatch):
    # A record keyed on the op's name (a dispatch mode catching power_bert::extract_scored) finds
    # nothing here; the encoder's own record still has every layer.
    model, tok = model_and_tokenizer
    want = explain(model, tok, TEXT)
    monkeypatch.setattr(encoder_module, "_ops_ns", _OpsWithPlainSelection())
    got = explain(model, tok, TEXT)
    assert got.kept == want.kept and got.prediction == want.prediction


def test_explain_keeps_an_empty_second_segment_as_predict_does(model_and_tokenizer):
    model, tok = model_and_tokenizer
    exp = explain(model, tok, "good", "")
    # [CLS] good [SEP] [SEP]: the empty pair keeps its separator, as a batch (predict) tokenizes it
    assert exp.tokens == tok.convert_ids_to_tokens(tok(["good"], [""])["input_ids"][0])
    assert exp.tokens[-2:] == ["[SEP]", "[SEP]"] and exp.input_tokens == 4
    assert explain(model, tok, "good").tokens == ["[CLS]", "good", "[SEP]"]
