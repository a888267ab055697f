"""export(): one deployable file of a PoWER-BERT (hard mode) or plain Hugging Face sequence
classifier, serving every batch size and every length up to ``max_length``.

What is exported is described once (:class:`_Plan`): the model wrapped as
``forward(input_ids, attention_mask[, token_type_ids]) -> logits`` with the artifact's length
check, the sample inputs, the dynamic batch and length dimensions and the metadata. The
power_bert ops keep their own schemas under ``torch.export`` (``k`` is a ``SymInt``, so a
layer's kept rows ``min(ℓ_j, n)`` stay symbolic):

* ``onnx``: ``torch.onnx.export(..., dynamo=True)`` with the ops written in standard ONNX
  (:mod:`.translations`), then ONNX Runtime's graph optimisation and, for ``quantize="int8"``,
  dynamic quantisation of the MatMul weights.
* ``pt2``: ``torch.export`` + ``torch._inductor.aoti_compile_and_package``; the package calls
  the ops' C++ kernels (``power_bert_ops`` must be imported before loading it).
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import ops as _ops  # noqa: F401  (registers torch.ops.power_bert with its fake kernels)
from .._paths import is_read_only
from .._quiet import quiet_export
from .runtime import EXTRA_HINT, META_KEY, ORT_OPTIMIZATION, OnnxClassifier, load_pt2, onnxruntime, ort_level

__all__ = ["FORMATS", "QUANTIZE", "ExportError", "export"]

FORMATS = ("onnx", "pt2")
QUANTIZE = (None, "int8")


class ExportError(ValueError):
    """An argument or model :func:`export` cannot use; raised before any long work.

    Args:
        argument: the name of the argument at fault (``output``, ``max_length``, ...), or None.
        detail: the rest of the message, read after the argument's name (``"='x.txt': ..."`` or
            ``" must be ..."``); with no argument, the whole message.
    """

    def __init__(self, argument: str | None, detail: str):
        self.argument, self.detail = argument, detail
        super().__init__(f"{argument or ''}{detail}")

    def __reduce__(self):  # pickling and copy (a process pool sends it back) rebuild it from both parts
        return type(self), (self.argument, self.detail)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"export(format='onnx') needs onnx and onnxscript (missing: {e.name}): {EXTRA_HINT}") from e
    onnxruntime()


class _Logits(nn.Module):
    """forward(input_ids, attention_mask[, token_type_ids]) -> logits; the length check of the
    artifact (a gather from a [max_length + 1] buffer at index N: out of bounds above it)."""

    def __init__(self, model: nn.Module, token_types: bool, max_length: int):
        super().__init__()
        self.model = model
        self.token_types = token_types
        self.register_buffer("length_check", torch.zeros(max_length + 1, dtype=torch.int64), persistent=False)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"token_type_ids": token_type_ids} if self.token_types else {}
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        # 0, or an out-of-bounds gather when the length exceeds max_length (ONNX Runtime fails)
        return logits + self.length_check[input_ids.shape[1]].to(logits.dtype)


# ---------------------------------------------------------------------------------------------
# The model: a folder (through the application's checkpoint loader) or a model object
# ---------------------------------------------------------------------------------------------
def _load_folder(path: Path) -> nn.Module:
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ExportError("model_dir_or_model", f"={str(path)!r} is not a model folder (no config.json there)")
    from ..training.artifacts import check_weights, load_classifier, read_config
    from ..training.errors import PowerBertError

    try:
        cfg = read_config(path)
    except PowerBertError as e:
        raise ExportError("model_dir_or_model", f"={str(path)!r}: its config.json cannot be read ({e})") from None
    try:
        check_weights(path)
        return load_classifier(path, cfg)
    except PowerBertError as e:
        raise ExportError(None, str(e)) from None
    except Exception as e:
        raise ExportError("model_dir_or_model", f"={str(path)!r} is not a sequence classification checkpoint Hugging "
                          f"Face can load ({type(e).__name__}: {e})") from e


def _load_model(model_dir_or_model):
    """(model in eval mode, is_power) from a folder or a model object."""
    from ..modeling import PowerBertForSequenceClassification, PowerBertPreTrainedModel

    if isinstance(model_dir_or_model, nn.Module):
        model = model_dir_or_model
    elif isinstance(model_dir_or_model, (str, os.PathLike)):
        model = _load_folder(Path(model_dir_or_model))
    else:
        raise TypeError(f"export: model_dir_or_model must be a model folder or a torch.nn.Module, got "
                        f"{type(model_dir_or_model).__name__}")
    power = isinstance(model, PowerBertPreTrainedModel)
    if power and not isinstance(model, PowerBertForSequenceClassification):
        raise ExportError("model_dir_or_model", f" is a {type(model).__name__}; only sequence classification "
                          "(PowerBertForSequenceClassification) is exported")
    if power and model.config.mode == "soft":
        raise ExportError("model_dir_or_model", " is in soft mode (stage 2 of training); only hard mode is exported: "
                          "export the retrain stage's model, or call model.set_mode('hard') (derives ℓ_j from the "
                          "retention parameters) and save it first")
    if power and model.config.mode == "hard" and model.config.thresholds is not None:
        raise ExportError("model_dir_or_model", " uses the threshold rule (config.thresholds), whose widths are read on "
                          "the host: it runs in eager PyTorch only; export a model retrained with top-k retention "
                          "(power-bert retrain --retention-rule top-k)")
    if not power and (not hasattr(model, "config") or "ForSequenceClassification" not in type(model).__name__):
        raise ExportError("model_dir_or_model", f" is a {type(model).__name__}; export takes a PoWER-BERT model or a "
                          "Hugging Face *ForSequenceClassification model")
    return model.eval(), power


def _hf(model, power: bool):
    return model.model if power else model


def _accepts_token_types(model, power: bool) -> bool:
    hf = _hf(model, power)
    if "token_type_ids" not in inspect.signature(hf.forward).parameters:
        return False
    return int(getattr(hf.config, "type_vocab_size", 0) or 0) > 1


def _position_limit(model, power: bool) -> int:
    if power:
        return int(model.config.sequence_length)
    from ..modeling.configuration_power_bert import max_positions

    try:
        return int(max_positions(model.config))
    except Exception:
        return int(getattr(model.config, "max_position_embeddings", 512))


def _sample_inputs(model, power: bool, batch: int, n: int, token_types: bool, seed: int = 0):
    """Random token ids (right padding: row b has n - b % (n // 2 + 1) real tokens)."""
    g = torch.Generator().manual_seed(seed)
    hf = _hf(model, power)
    vocab = int(hf.config.vocab_size)
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, n), generator=g)
    mask = torch.ones(batch, n, dtype=torch.int64)
    for b in range(batch):
        real = max(1, n - (b * 3) % max(1, n // 2 + 1))
        mask[b, real:] = 0
    ids = ids.masked_fill(mask == 0, int(getattr(hf.config, "pad_token_id", 0) or 0))
    args = [ids, mask]
    if token_types:
        tt = torch.zeros(batch, n, dtype=torch.int64)
        tt[:, n // 2:] = 1
        args.append(tt * mask)
    return tuple(args)


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------
def _check_output(output, fmt: str) -> Path:
    if not isinstance(output, (str, os.PathLike)) or str(output) == "":
        raise ExportError("output", f" must be a file path, got {output!r}")
    out = Path(output)
    if out.is_dir():
        raise ExportError("output", f"={str(out)!r} is a directory; give a file path (e.g. model.{fmt})")
    if out.suffix != f".{fmt}":
        raise ExportError("output", f"={str(out)!r}: the file name of the {fmt} artifact must end in .{fmt} (what "
                                    f"reads it, such as power-bert predict --artifact, tells the format by it)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError("output", f"={str(out)!r} cannot be written: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError("output", f"={str(out)!r} cannot be written (no write permission)")
    if is_read_only(out):
        raise ExportError("output", f"={str(out)!r} is read-only; give another file or make it writable")
    return out


def _check_options(fmt: str, quantize, ort_optimization: str) -> None:
    if fmt not in FORMATS:
        raise ExportError("format", f" must be one of {FORMATS}, got {fmt!r}")
    if quantize not in QUANTIZE:
        raise ExportError("quantize", f" must be one of {QUANTIZE}, got {quantize!r}")
    if quantize is not None and fmt != "onnx":
        raise ExportError("quantize", f"={quantize!r} is for format='onnx' only (pt2 packages are fp32)")
    if ort_optimization not in ORT_OPTIMIZATION:
        raise ExportError("ort_optimization", f" must be one of {ORT_OPTIMIZATION}, got {ort_optimization!r}")


def _check_model(model, max_length):
    """(the model on the CPU, max_length) or ExportError."""
    from ..training.artifacts import MIN_MAX_LENGTH

    model, power = model
    limit = _position_limit(model, power)
    if max_length is None:
        max_length = limit
    if (isinstance(max_length, bool) or not isinstance(max_length, int)
            or not MIN_MAX_LENGTH <= max_length <= max(limit, MIN_MAX_LENGTH)):
        raise ExportError("max_length", f" must be an int in [{MIN_MAX_LENGTH}, {limit}] ([CLS], [SEP] and words), "
                                        f"got {max_length!r}")
    param = next(model.parameters())
    if param.dtype != torch.float32:
        raise ExportError("model_dir_or_model", f" has {param.dtype} weights; export takes float32 models")
    return model.cpu() if param.device.type != "cpu" else model, max_length


# ---------------------------------------------------------------------------------------------
# What is exported
# ---------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """The module traced, its sample inputs and dynamic dimensions, and the artifact's metadata."""

    model: nn.Module
    power: bool
    token_types: bool
    max_length: int
    wrapper: nn.Module
    sample: tuple
    dynamic_shapes: tuple
    metadata: dict

    @classmethod
    def of(cls, model, power: bool, max_length: int, fmt: str, quantize) -> _Plan:
        from ..training.artifacts import label_names

        token_types = _accepts_token_types(model, power)
        sample = _sample_inputs(model, power, 2, max_length, token_types)
        batch = torch.export.Dim("batch", min=1, max=65536)
        seq = torch.export.Dim("sequence", min=2, max=max_length)
        hf = _hf(model, power)
        metadata = {
            "kind": "power_bert" if power else "huggingface",
            "format": fmt,
            "quantize": quantize or "none",
            "max_length": int(max_length),
            "retention": list(model.config.retention) if power and model.config.mode == "hard" else None,
            "mode": model.config.mode if power else None,
            "retention_scale": model.config.retention_scale if power else None,
            "min_rows": int(model.config.min_rows) if power else None,
            "min_rows_max_length": model.config.min_rows_max_length if power else None,
            "inputs": ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else []),
            "num_labels": int(hf.config.num_labels),
            "labels": label_names(hf),
            "model_type": hf.config.model_type,
            "torch": torch.__version__,
        }
        return cls(model, power, token_types, max_length, _Logits(model, token_types, max_length).eval(), sample,
                   tuple({0: batch, 1: seq} for _ in sample), metadata)

    @property
    def input_names(self) -> list[str]:
        return self.metadata["inputs"]


def export(model_dir_or_model, output, format: str = "onnx", quantize: str | None = None, *,
           max_length: int | None = None, ort_optimization: str = "basic", check: bool = True,
           atol: float = 1e-4) -> Path:
    """Writes a deployable artifact of a sequence classifier and returns its path.

    ``model_dir_or_model``: a saved PoWER-BERT folder (hard or full mode; soft mode is refused), a
    plain Hugging Face ``*ForSequenceClassification`` folder (the baseline), or such a model
    object. ``output``: the file to write (``.onnx`` / ``.pt2``). ``format``: ``"onnx"`` or
    ``"pt2"``. ``quantize``: ``None`` or ``"int8"`` (ONNX only: dynamic quantisation of the
    weights). ``max_length``: the largest sequence length the artifact takes (default: the PoWER
    model's trained N, ``config.sequence_length``; a Hugging Face model's position limit); batch
    and length (1..max_length) are dynamic. ``ort_optimization`` (ONNX, fp32 only): the ONNX
    Runtime graph optimisation level whose result is saved (``"disable"`` saves the exporter's
    graph as is; ``"basic"``, the default, saves the portable constant-folded graph; ``"extended"``
    and ``"all"`` save ORT-specific fused ops). ``check``: run the artifact once on random
    right-padded inputs and raise RuntimeError unless its logits match eager PyTorch within
    ``atol`` (int8: only that it runs and gives finite logits of the right shape).

    Raises :class:`ExportError` (a ValueError) for an argument or model it cannot use, before
    any long work; ImportError naming the ``export`` extra when it is missing.
    """
    _check_options(format, quantize, ort_optimization)
    out = _check_output(output, format)
    if format == "onnx":
        _require_onnx()
        if quantize:
            importlib.import_module("onnxruntime.quantization")
    loaded = _load_model(model_dir_or_model)
    model, max_length = _check_model(loaded, max_length)
    plan = _Plan.of(model, loaded[1], max_length, format, quantize)
    with torch.no_grad():
        if format == "onnx":
            _export_onnx(plan, out, quantize, ort_optimization)
        else:
            _export_pt2(plan, out)
    if check:
        _check_artifact(plan, out, format, quantize, atol)
    return out


def _save(save, out: Path) -> None:
    try:
        save()
    except OSError as e:
        raise ExportError("output", f"={str(out)!r} cannot be written ({e})") from e


def _optimize_onnx(raw: Path, tmp: Path, quantize, ort_optimization: str) -> Path:
    """The exporter's graph after ONNX Runtime's optimisation at ``ort_optimization`` and, for
    int8, dynamic quantisation."""
    ort = onnxruntime()
    src = raw
    if ort_optimization != "disable":
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort_level(ort_optimization)
        src = tmp / "optimized.onnx"
        opts.optimized_model_filepath = str(src)
        ort.InferenceSession(str(raw), opts, providers=["CPUExecutionProvider"])
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = tmp / "quantized.onnx"
        with quiet_export():
            quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8)
        src = q
    return src


def _export_onnx(plan: _Plan, out: Path, quantize, ort_optimization: str) -> None:
    import onnx

    from .translations import onnx_translation_table

    with quiet_export():
        program = torch.onnx.export(plan.wrapper, plan.sample, dynamic_shapes=plan.dynamic_shapes, dynamo=True,
                                    input_names=plan.input_names, output_names=["logits"],
                                    custom_translation_table=onnx_translation_table(), optimize=True, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "exported.onnx"
        program.save(str(raw))
        proto = onnx.load(str(_optimize_onnx(raw, Path(tmp), quantize, ort_optimization)))
    for node in proto.graph.node:  # name the length check so ONNX Runtime's error names it
        if node.op_type == "Gather" and "length_check" in node.input[0]:
            node.name = "power_bert_length_check"
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(dict(plan.metadata, ort_optimization=ort_optimization))
    _save(lambda: onnx.save(proto, str(out)), out)


def _export_pt2(plan: _Plan, out: Path) -> None:
    configs = {"aot_inductor.metadata": {META_KEY: json.dumps(plan.metadata)}}
    with quiet_export():
        ep = torch.export.export(plan.wrapper, plan.sample, dynamic_shapes=plan.dynamic_shapes, strict=False)
        _save(lambda: torch._inductor.aoti_compile_and_package(ep, package_path=str(out), inductor_configs=configs),
              out)


def _check_artifact(plan: _Plan, out: Path, fmt: str, quantize, atol: float) -> None:
    shapes = [(3, plan.max_length), (2, max(2, plan.max_length // 2 + 1))]
    run = OnnxClassifier(out) if fmt == "onnx" else load_pt2(out)
    for i, (b, n) in enumerate(shapes):
        args = _sample_inputs(plan.model, plan.power, b, n, plan.token_types, seed=100 + i)
        with torch.no_grad():
            want = plan.wrapper(*args).float()
        got = torch.as_tensor(run(*args)).float()
        if got.shape != want.shape or not torch.isfinite(got).all():
            raise RuntimeError(f"export: the artifact {str(out)!r} gave logits of shape {tuple(got.shape)} "
                               f"(expected {tuple(want.shape)}) or non-finite values")
        if quantize is None and not torch.allclose(got, want, atol=atol, rtol=0):
            err = (got - want).abs().max().item()
            raise RuntimeError(f"export: the artifact {str(out)!r} differs from PyTorch by {err:.3g} at B={b}, "
                               f"N={n} (atol {atol})")
