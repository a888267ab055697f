"""power_bert_ops.export (power_bert_ops/export/): ONNX (stock onnxruntime, no custom-op library) and
AOTInductor pt2 artifacts of PoWER-BERT (hard mode) and plain Hugging Face classifiers, one file
for every batch size and length up to the trained N, logits equal to eager PyTorch.

Needs the ``export`` extra (onnx, onnxscript, onnxruntime): ``pip install -e .[export]``."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="pip install -e .[export]")
pytest.importorskip("onnxscript", reason="pip install -e .[export]")
ort = pytest.importorskip("onnxruntime", reason="pip install -e .[export]")
import onnx  # noqa: E402

from power_bert_ops import reference  # noqa: E402
from power_bert_ops.export import ExportError, OnnxClassifier, export, load_pt2, onnx_translation_table  # noqa: E402

N = 16  # the trained N of the tiny models
RETENTION = [12, 7, 3]
ATOL = 1e-4
# (B, n): n below every ℓ_j, between them, equal to ℓ_1, the trained N, and the shortest input.
SHAPES = [(1, 16), (3, 16), (4, 12), (2, 9), (5, 5), (3, 3), (2, 2)]


def tiny_hf(model_type: str = "bert", seed: int = 0, layers: int = 3):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.for_model(model_type, vocab_size=120, hidden_size=32, num_hidden_layers=layers,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=72,
                               num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                               **({"type_vocab_size": 1} if model_type == "roberta" else {}))
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def tiny_power(model_type: str = "bert", seed: int = 0, **kw):
    from power_bert_ops import PowerBertForSequenceClassification

    return PowerBertForSequenceClassification.from_hf_model(tiny_hf(model_type, seed), retention=RETENTION,
                                                            sequence_length=N, **kw).eval()


def batch(b: int, n: int, seed: int, token_types: bool = True, vocab: int = 120):
    """Random ids, right padding with a different real length per row (row 0 full)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, n), generator=g)
    lengths = [n] + torch.randint(1, n + 1, (b - 1,), generator=g).tolist()
    mask = (torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    tt = ((torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None] // 2).long() * mask) if token_types else None
    return ids, mask, tt


def eager_logits(model, ids, mask, tt):
    kwargs = {"token_type_ids": tt} if tt is not None else {}
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, **kwargs).logits


def assert_matches(run, model, shapes=SHAPES, token_types=True, atol=ATOL):
    for i, (b, n) in enumerate(shapes):
        ids, mask, tt = batch(b, n, seed=i, token_types=token_types)
        want = eager_logits(model, ids, mask, tt)
        got = torch.as_tensor(run(ids, mask, tt))
        assert got.shape == want.shape, (b, n)
        err = (got.float() - want).abs().max().item()
        assert err <= atol, f"B={b} n={n}: max |ORT - eager| = {err}"
        # the same rows as a slice of a wider padded batch (strides (n + 5, 1)), as a length-sorted
        # batch cut to its longest row is
        wide = [None if t is None else torch.nn.functional.pad(t, (0, 5))[:, :n] for t in (ids, mask, tt)]
        assert b == 1 or not wide[0].is_contiguous()
        err = (torch.as_tensor(run(*wide)).float() - want).abs().max().item()
        assert err <= atol, f"B={b} n={n}, sliced inputs: max |ORT - eager| = {err}"


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def power_onnx(tmp_path_factory):
    model = tiny_power(seed=1)
    path = export(model, tmp_path_factory.mktemp("onnx") / "power.onnx", format="onnx")
    return model, path


def test_onnx_power_matches_eager_across_batches_and_lengths(power_onnx):
    model, path = power_onnx
    proto = onnx.load(str(path))
    domains = {node.domain for node in proto.graph.node}
    assert domains <= {"", "ai.onnx"}, f"non-standard ONNX domains in the graph: {domains}"
    ops = {node.op_type for node in proto.graph.node}
    assert "TopK" in ops and "Softmax" in ops  # the selection and the attention are in the graph
    clf = OnnxClassifier(path)
    assert clf.metadata["kind"] == "power_bert" and clf.metadata["max_length"] == N
    assert clf.metadata["retention"] == RETENTION
    assert clf.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert_matches(clf, model)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_onnx_every_ort_optimization_level_matches(power_onnx, level):
    model, path = power_onnx
    assert_matches(OnnxClassifier(path, optimization=level), model, shapes=[(3, 16), (2, 7)])


def test_onnx_length_above_trained_n(power_onnx):
    model, path = power_onnx
    ids, mask, tt = batch(2, N + 1, seed=0)
    with pytest.raises(ValueError, match=r"17 tokens per row .* max_length = 16"):
        OnnxClassifier(path)(ids, mask, tt)
    # A bare ONNX Runtime session fails in the graph's named length check, not silently.
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": tt.numpy()}
    with pytest.raises(Exception, match="power_bert_length_check"):
        sess.run(None, feeds)


def test_onnx_baseline_from_folder_and_eager_attention_path(tmp_path):
    """A plain Hugging Face folder exports (the baseline), with a chosen max_length; a PoWER
    RoBERTa (no token types) with power_attention='eager' exports through the significance op."""
    hf = tiny_hf(seed=2)
    hf.save_pretrained(tmp_path / "hf")
    path = export(tmp_path / "hf", tmp_path / "hf.onnx", max_length=24, ort_optimization="disable", check=False)
    clf = OnnxClassifier(path)
    assert clf.metadata["kind"] == "huggingface" and clf.max_length == 24
    assert_matches(clf, hf, shapes=[(2, 24), (3, 11), (1, 2)])

    model = tiny_power("roberta", seed=3, power_attention="eager")
    path = export(model, tmp_path / "roberta.onnx", check=False)
    clf = OnnxClassifier(path)
    assert clf.input_names == ["input_ids", "attention_mask"]
    assert_matches(lambda ids, mask, tt: clf(ids, mask), model, token_types=False, shapes=[(3, 16), (2, 10), (4, 4)])


def test_onnx_int8_saved_power_folder(tmp_path, caplog):
    model = tiny_power(seed=4)
    model.save_pretrained(tmp_path / "power")
    with caplog.at_level("WARNING"):
        int8 = export(tmp_path / "power", tmp_path / "int8.onnx", quantize="int8")
    assert not [r.getMessage() for r in caplog.records if "pre-processing" in r.getMessage()]  # the quantizer's advice
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}, ops
    clf = OnnxClassifier(int8)
    assert clf.metadata["quantize"] == "int8"
    for b, n in [(4, N), (3, 6)]:
        ids, mask, tt = batch(b, n, seed=9)
        got, want = clf(ids, mask, tt), eager_logits(model, ids, mask, tt).numpy()
        assert np.isfinite(got).all() and got.shape == want.shape
        assert np.abs(got - want).max() < 0.1 * max(1.0, np.abs(want).max())  # int8 weights: close, not equal
        assert not np.array_equal(got, want)


def test_onnx_selection_translation_matches_reference_on_ties_nan_inf_and_padding():
    """The ONNX extract_scored keeps the reference's order: position 0 first, ties toward the
    lower position, real -inf and NaN scores below real numbers, padding last."""

    class Select(torch.nn.Module):
        def forward(self, hidden, scores, mask):
            return torch.ops.power_bert.extract_scored(hidden, scores, mask, 5)

    inf, nan = float("inf"), float("nan")
    h = torch.randn(4, 9, 3)
    s = torch.tensor([[0.0, 1, 1, 1, 2, 2, 0, 1, 1], [nan, -inf, 1, nan, -inf, 0, 3, 3, -1],
                      [5, 1, 1, 1, 1, 1, 1, 1, 1], [1, inf, 2, nan, 2, 2, 2, 2, 2]])
    m = torch.ones(4, 9, dtype=torch.int64)
    m[0, 7:] = 0
    m[1, 8:] = 0
    m[2, 3:] = 0
    m[3, 2:5] = 0
    program = torch.onnx.export(Select(), (h, s, m), dynamo=True, custom_translation_table=onnx_translation_table())
    sess = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), (h, s, m))})
    for g, w in zip(got, reference.extract_scored(h, s, m, 5)):
        np.testing.assert_array_equal(g, w.numpy())


@pytest.mark.slow
def test_onnx_packaged_minilm(tmp_path):
    """The packaged all-MiniLM-L6-v2 (6 layers, hidden 384) with the benchmark's retention."""
    from power_bert_ops import PowerBertForSequenceClassification
    from power_bert_ops.assets import packaged_model_dir

    try:
        d = packaged_model_dir()
    except RuntimeError as e:
        pytest.skip(f"packaged model unavailable: {e}")
    model = PowerBertForSequenceClassification.from_pretrained(d, num_labels=2, retention=[42, 32, 23, 10, 6, 4],
                                                               sequence_length=64)
    path = export(model, tmp_path / "minilm.onnx", check=False)
    assert_matches(OnnxClassifier(path), model, shapes=[(4, 64), (3, 37), (2, 8)])


# ---------------------------------------------------------------------------------------------
# pt2 (AOTInductor)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def power_pt2(tmp_path_factory):
    model = tiny_power(seed=5)
    return model, export(model, tmp_path_factory.mktemp("pt2") / "power.pt2", format="pt2")


@pytest.mark.slow  # an AOTInductor compile: about a minute on 2 cores
def test_pt2_power_matches_eager_across_batches_and_lengths(power_pt2):
    model, path = power_pt2
    run = load_pt2(path)
    assert run.metadata["kind"] == "power_bert" and run.max_length == N
    assert_matches(run, model)
    ids, mask, tt = batch(2, N + 1, seed=0)
    with pytest.raises(ValueError, match="max_length = 16"):
        run(ids, mask, tt)
    # The package also loads with torch's own loader (positional inputs).
    raw = torch._inductor.aoti_load_package(str(path))
    ids, mask, tt = batch(3, 11, seed=7)
    torch.testing.assert_close(raw(ids, mask, tt), eager_logits(model, ids, mask, tt), atol=ATOL, rtol=0)


@pytest.mark.slow  # builds the op library and the example with CMake
def test_pt2_cpp_loader_example_matches_python(power_pt2, tmp_path):
    """examples/aoti_classify: torch::inductor::AOTIModelPackageLoader plus the op library built
    by CMake classifies token ids read from a file; its logits equal eager PyTorch's."""
    import os
    import shutil
    import subprocess

    if shutil.which("cmake") is None:
        if os.environ.get("POWER_BERT_REQUIRE_BUILD_TOOLS") == "1":
            pytest.fail("cmake not found but POWER_BERT_REQUIRE_BUILD_TOOLS=1")
        pytest.skip("cmake not found")
    model, path = power_pt2
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = tmp_path / "build"
    prefix = torch.utils.cmake_prefix_path
    for cmd in (["cmake", "-S", os.path.join(root, "examples", "aoti_classify"), "-B", str(build),
                 f"-DCMAKE_PREFIX_PATH={prefix}"],
                ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", "classify"]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    rows = [[2, 17, 40, 99, 3], [2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3], [2, 3]]
    (tmp_path / "ids.txt").write_text("\n".join(" ".join(map(str, r)) for r in rows) + "\n")
    res = subprocess.run([str(build / "classify"), str(path), str(tmp_path / "ids.txt")], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    got = torch.tensor([[float(x) for x in line.split()] for line in res.stdout.strip().splitlines()])
    n = max(map(len, rows))
    ids = torch.tensor([r + [0] * (n - len(r)) for r in rows])
    mask = (ids != 0).long()
    torch.testing.assert_close(got, eager_logits(model, ids, mask, torch.zeros_like(ids)), atol=ATOL, rtol=0)
    # A length above the trained N: a clear error, no logits.
    (tmp_path / "long.txt").write_text(" ".join(["5"] * (N + 1)) + "\n")
    res = subprocess.run([str(build / "classify"), str(path), str(tmp_path / "long.txt")], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "takes at most 16" in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------
# Bad input: each error names the argument, before any long work.
# ---------------------------------------------------------------------------------------------
def test_bad_format_and_quantize(tmp_path):
    model = tiny_power()
    with pytest.raises(ValueError, match="format must be one of"):
        export(model, tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ValueError, match="quantize must be one of"):
        export(model, tmp_path / "m.onnx", quantize="int4")
    with pytest.raises(ValueError, match="quantize='int8' is for format='onnx' only"):
        export(model, tmp_path / "m.pt2", format="pt2", quantize="int8")
    for bad in (N + 1, 1, 2, 3):  # at least [CLS], [SEP] and words: what predict runs at
        with pytest.raises(ValueError, match=rf"max_length must be an int in \[4, {N}\].*got {bad}"):
            export(model, tmp_path / "m.onnx", max_length=bad)
    with pytest.raises(ValueError, match="ort_optimization must be"):
        export(model, tmp_path / "m.onnx", ort_optimization="max")
    # the error names its argument apart from the rest, as the command maps it to a flag
    with pytest.raises(ExportError) as info:
        export(model, tmp_path / "m.pt2", format="pt2", quantize="int8")
    assert (info.value.argument, info.value.detail) == ("quantize", "='int8' is for format='onnx' only (pt2 packages "
                                                                    "are fp32)")


def test_unreadable_artifact_is_a_clear_error(tmp_path):
    """A truncated or foreign file given to the runtimes: ValueError naming the file, not the
    runtime's own error (nor, for pt2, torch's warning about an old package format)."""
    import zipfile

    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a model")
    with pytest.raises(ValueError, match=r"junk.onnx: cannot be loaded as an ONNX model \(.*Protobuf"):
        OnnxClassifier(tmp_path / "junk.onnx")
    (tmp_path / "junk.pt2").write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(ValueError, match=r"junk.pt2: cannot be loaded as an AOTInductor package \(not a whole zip"):
        load_pt2(tmp_path / "junk.pt2")
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as z:  # a whole zip archive that is no package
        z.writestr("notes.txt", "hello")
    with pytest.raises(ValueError, match=r"other.pt2: cannot be loaded as an AOTInductor package \(\w+"):
        load_pt2(tmp_path / "other.pt2")
    for load in (OnnxClassifier, load_pt2):  # nothing there: said so, not blamed on the format
        with pytest.raises(ValueError, match=r"missing: cannot be read \(No such file"):
            load(tmp_path / "missing")


def test_export_error_survives_pickling():
    """ExportError crosses a process pool (pickle) and copy with both parts."""
    import copy
    import pickle

    e = ExportError("output", "='x.txt' is a directory")
    for back in (pickle.loads(pickle.dumps(e)), copy.copy(e)):
        assert (back.argument, back.detail, str(back)) == ("output", "='x.txt' is a directory",
                                                           "output='x.txt' is a directory")


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model_dir_or_model=.* is not a model folder"):
        export(tmp_path / "empty", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="model_dir_or_model=.* is not a model folder"):
        export(tmp_path / "missing", tmp_path / "m.onnx")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="model_dir_or_model=.*config.json cannot be read"):
        export(tmp_path / "junk", tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="model_dir_or_model must be"):
        export(42, tmp_path / "m.onnx")


def test_soft_mode_refused(tmp_path):
    model = tiny_power().set_mode("soft")
    with pytest.raises(ValueError, match="soft mode.*only hard mode is exported"):
        export(model, tmp_path / "m.onnx")
    model.save_pretrained(tmp_path / "soft")
    with pytest.raises(ValueError, match="soft mode"):
        export(tmp_path / "soft", tmp_path / "m.pt2", format="pt2")


def test_threshold_rule_refused(tmp_path):
    model = tiny_power()
    model.set_thresholds([0.1] + [None] * (model.num_power_layers - 1))
    with pytest.raises(ValueError, match="threshold rule.*eager PyTorch only"):
        export(model, tmp_path / "m.onnx")
    model.save_pretrained(tmp_path / "thr")
    with pytest.raises(ValueError, match="threshold rule"):
        export(tmp_path / "thr", tmp_path / "m.pt2", format="pt2")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.pt2").exists()


def test_unwritable_output(tmp_path):
    model = tiny_power()
    with pytest.raises(ValueError, match="output=.*does not exist"):
        export(model, tmp_path / "no" / "such" / "m.onnx")
    with pytest.raises(ValueError, match="output=.* is a directory"):
        export(model, tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="output=.*does not exist"):
        export(model, tmp_path / "file" / "m.onnx")


def test_missing_export_extra_names_it(tmp_path, monkeypatch):
    for name in ("onnxruntime", "onnxscript"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, name, None)  # what `import name` sees when it is not installed
            with pytest.raises(ImportError, match=r"pip install -e \.\[export\]"):
                export(tiny_power(), tmp_path / "m.onnx")


# ---------------------------------------------------------------------------------------------
# Relative retention (per-example row counts through extract_scored's per-row k)
# ---------------------------------------------------------------------------------------------
def test_onnx_relative_model_matches_eager(tmp_path):
    model = tiny_power(seed=3, retention_scale="relative")
    path = export(model, tmp_path / "relative.onnx", format="onnx")
    assert_matches(OnnxClassifier(path), model)


@pytest.mark.parametrize("short", [None, 5])
def test_onnx_relative_model_with_a_floor_of_rows_matches_eager(tmp_path, short):
    """min_rows = 4 (every example keeps at least 4 rows, all of a shorter one; with ``short``,
    every example of at most that many tokens) in the exported graph: equal to eager at every
    shape (eager runs a batch of long rows at its own widths), and the floor changes the logits of
    these batches."""
    model = tiny_power(seed=5, retention_scale="relative", min_rows=4, min_rows_max_length=short)
    no_floor = tiny_power(seed=5, retention_scale="relative")
    with torch.no_grad():  # logits large enough that a graph without the floor misses ATOL
        for m in (model, no_floor):
            m.model.classifier.weight.mul_(1000.0)
    ids, mask, tt = batch(4, 12, seed=1)
    assert (eager_logits(model, ids, mask, tt) - eager_logits(no_floor, ids, mask, tt)).abs().max() > 100 * ATOL
    path = export(model, tmp_path / "floor.onnx", format="onnx")
    assert_matches(OnnxClassifier(path), model)


@pytest.mark.slow  # an AOTInductor compile
def test_pt2_relative_model_matches_eager(tmp_path):
    model = tiny_power(seed=4, retention_scale="relative")
    assert_matches(load_pt2(export(model, tmp_path / "relative.pt2", format="pt2")), model)
