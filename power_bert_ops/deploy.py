"""Deployable artifacts of a PoWER-BERT (hard mode) or plain Hugging Face sequence classifier.

:func:`export` writes one file that serves every batch size and every sequence length up to the
trained N (``max_length``):

* ``format="onnx"``: ``torch.onnx.export(..., dynamo=True)``. The power_bert ops are written in
  standard ONNX operators (onnxscript translations below, registered through the exporter's
  ``custom_translation_table``), so the graph runs in stock ``onnxruntime`` with no custom-op
  library. ``quantize="int8"`` adds ONNX Runtime's dynamic quantisation (int8 weights of the
  MatMuls). Needs the ``export`` extra: ``pip install -e .[export]``.
* ``format="pt2"``: ``torch.export`` + ``torch._inductor.aoti_compile_and_package`` (an
  AOTInductor package); load it with :func:`load_pt2` or ``torch._inductor.aoti_load_package``.
  The attention with significance stays our C++ kernel (``power_bert_ops`` must be imported
  before loading); the selection is written in plain PyTorch.

Dynamic length: layer j keeps ``min(ℓ_j, rows in)`` rows, computed inside the graph
(``power_encoder_loop`` uses ``torch.sym_min`` on a symbolic length), so one artifact serves
N = 1 .. max_length. ``torch.ops.power_bert.extract_scored`` takes a plain ``int k``, which
``torch.export`` would specialise; while exporting, the model's calls to the power_bert ops are
routed (a ``TorchFunctionMode``) to export-only ops of the ``power_bert_export`` namespace whose
``k`` is a ``SymInt`` (ONNX) or to plain-PyTorch selection (pt2).

Inputs of the artifacts: ``input_ids`` and ``attention_mask`` int64 [B, N] (right padding) and,
for models with token types (BERT, ALBERT, ELECTRA), ``token_type_ids`` int64 [B, N]; output
``logits`` float32 [B, num_labels]. A length above ``max_length``: :class:`OnnxClassifier` and
:func:`load_pt2` raise ValueError; a bare ONNX Runtime session fails in the graph's length check
(a Gather named ``power_bert_length_check``: "indices element out of data bounds").
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import _library  # noqa: F401  (registers torch.ops.power_bert)
from . import ops as _ops  # noqa: F401  (fake kernels of the ops)

__all__ = ["FORMATS", "QUANTIZE", "OnnxClassifier", "export", "load_pt2", "onnx_translation_table"]

FORMATS = ("onnx", "pt2")
QUANTIZE = (None, "int8")
ORT_OPTIMIZATION = ("disable", "basic", "extended", "all")
_EXTRA_HINT = "pip install -e .[export]  (or: pip install onnx onnxscript onnxruntime)"
_META_KEY = "power_bert"


# ---------------------------------------------------------------------------------------------
# Export-only ops: the same computations as torch.ops.power_bert.*, with a SymInt k, so that
# torch.export keeps the number of kept rows symbolic. Eager kernels call the real ops.
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("power_bert_export::extract_scored", mutates_args=())
def _x_extract_scored(hidden: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor,
                      k: int, row_k: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(t.clone() for t in torch.ops.power_bert.extract_scored(hidden, scores, mask, int(k), row_k))


@_x_extract_scored.register_fake
def _(hidden, scores, mask, k, row_k=None):
    B, _, D = hidden.shape
    return hidden.new_empty((B, k, D)), hidden.new_empty((B, k), dtype=torch.int64), mask.new_empty((B, k))


@torch.library.custom_op("power_bert_export::extract", mutates_args=())
def _x_extract(hidden: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor, k: int,
               exclude_self: bool = True, row_k: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(t.clone() for t in torch.ops.power_bert.extract(hidden, attn, mask, int(k), exclude_self, row_k))


@_x_extract.register_fake
def _(hidden, attn, mask, k, exclude_self=True, row_k=None):
    B, _, D = hidden.shape
    return hidden.new_empty((B, k, D)), hidden.new_empty((B, k), dtype=torch.int64), mask.new_empty((B, k))


@torch.library.custom_op("power_bert_export::attention", mutates_args=())
def _x_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout_p: float,
                 need_significance: bool, exclude_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    out, sig = torch.ops.power_bert.attention(q, k, v, mask, dropout_p, need_significance, exclude_self)
    return out.contiguous().clone(), sig.clone()


@_x_attention.register_fake
def _(q, k, v, mask, dropout_p, need_significance, exclude_self):
    B, H, N, _ = q.shape
    sig = q.new_empty((B, N) if need_significance else (0,), dtype=torch.float32)
    return torch.empty_like(q, memory_format=torch.contiguous_format), sig


# ---------------------------------------------------------------------------------------------
# Plain-PyTorch selection for pt2 (SPEC 1.2, symbolic k): the reference, which has static shapes.
# ---------------------------------------------------------------------------------------------
def _extract_torch(hidden, attn, mask, k, exclude_self=True, row_k=None):
    from .reference import extract_scored

    return extract_scored(hidden, torch.ops.power_bert.significance(attn, mask, exclude_self), mask, k, row_k)


def _op_name(func) -> str | None:
    """'attention', 'extract_scored', ... for a torch.ops.power_bert op (packet or overload)."""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", "")
    schema = getattr(func, "_schema", None)
    if schema is not None:
        name = schema.name
    elif hasattr(func, "_qualified_op_name"):
        name = func._qualified_op_name
    else:
        return None
    ns, _, op = str(name).partition("::")
    return op.split(".")[0] if ns == "power_bert" else None


class _ExportRouting(TorchFunctionMode):
    """Routes the model's torch.ops.power_bert calls while tracing for export: ``onnx`` to the
    power_bert_export ops (translated to ONNX below), ``pt2`` to plain-PyTorch selection (the
    attention stays the C++ op, called by the AOTInductor package)."""

    def __init__(self, fmt: str):
        super().__init__()
        self.fmt = fmt

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func)
        if name is None:
            return func(*args, **kwargs)
        if name == "soft_extract":
            raise ValueError("export: soft mode (soft_extract) cannot be exported; export hard mode only")
        if self.fmt == "onnx":
            target = {"extract_scored": torch.ops.power_bert_export.extract_scored,
                      "extract": torch.ops.power_bert_export.extract,
                      "attention": torch.ops.power_bert_export.attention}.get(name)
        else:
            from .reference import extract_scored

            target = {"extract_scored": extract_scored, "extract": _extract_torch}.get(name)
        return (target or func)(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# ONNX translations (standard ONNX operators only, opset 18).
# ---------------------------------------------------------------------------------------------
def _onnx():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"export(format='onnx') needs onnx and onnxscript (missing: {e.name}): {_EXTRA_HINT}") from e
    from onnxscript import opset18 as op

    return op


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"power_bert_ops.deploy: ONNX Runtime is not installed: {_EXTRA_HINT}") from e
    return onnxruntime


def onnx_translation_table() -> dict:
    """{op overload: onnxscript function} for ``torch.onnx.export(custom_translation_table=...)``:
    the power_bert ops (public names, the internal ``_attention_forward`` and the export-only
    ``power_bert_export`` ops) in standard ONNX. Float32 in, as the model exports it."""
    op = _onnx()
    import onnx
    from onnx import TensorProto

    FLOAT, BOOL, INT64 = TensorProto.FLOAT, TensorProto.BOOL, TensorProto.INT64

    def const_f(x, like):
        return op.CastLike(op.Constant(value_float=float(x)), like)

    def const_d(x):
        return op.Constant(value=onnx.helper.make_tensor("c", TensorProto.DOUBLE, [], [float(x)]))

    def ints(*v):
        return op.Constant(value_ints=list(v))

    def significance_of(probs, real, exclude_self):
        # SPEC 1.1: sum over heads and real query rows, leaving out the diagonal. Heads are
        # summed first (one pass over [B, H, n, n]); padded query rows (finite probabilities)
        # and, for exclude_self, the diagonal are then zeroed in the [B, n, n] sum: skipped, not
        # subtracted, so a non-finite diagonal cannot make its column inf - inf = NaN.
        s = op.ReduceSum(op.Cast(probs, to=FLOAT), ints(1), keepdims=0)  # [B, n, n]
        s = op.Where(op.Unsqueeze(real, ints(2)), s, const_f(0.0, s))
        if exclude_self:
            n = op.Shape(real, start=1, end=2)
            diagonal = op.Cast(op.EyeLike(op.ConstantOfShape(op.Concat(n, n, axis=0))), to=BOOL)  # [n, n]
            s = op.Where(diagonal, const_f(0.0, s), s)
        sig = op.ReduceSum(s, ints(1), keepdims=0)  # [B, n]
        return op.Where(real, sig, const_f(float("-inf"), sig))

    def attention_core(q, k, v, mask, need_significance, exclude_self, want_lse=False):
        real = op.Cast(mask, to=BOOL)
        d = q.shape[3] if q.shape is not None and isinstance(q.shape[3], int) else None
        if d is not None:
            scale = const_f(d ** -0.5, q)
        else:
            scale = op.CastLike(op.Reciprocal(op.Sqrt(op.Cast(op.Shape(q, start=3, end=4), to=FLOAT))), q)
        logits = op.MatMul(op.Mul(q, scale), op.Transpose(k, perm=[0, 1, 3, 2]))  # scaling q: fewer elements
        logits = op.Where(op.Unsqueeze(real, ints(1, 2)), logits, const_f(float("-inf"), logits))
        probs = op.Softmax(logits, axis=-1)
        out = op.MatMul(probs, v)
        if need_significance:
            sig = significance_of(probs, real, exclude_self)
        else:
            sig = op.Cast(op.ConstantOfShape(ints(0)), to=FLOAT)
        if want_lse:
            return out, sig, op.Cast(op.ReduceLogSumExp(logits, ints(-1), keepdims=0), to=FLOAT)
        return out, sig

    def attention(q, k, v, mask, dropout_p: float = 0.0, need_significance: bool = True, exclude_self: bool = True):
        return attention_core(q, k, v, mask, need_significance, exclude_self)

    def attention_forward(q, k, v, mask, dropout_p: float, need_significance: bool, exclude_self: bool, seed):
        return attention_core(q, k, v, mask, need_significance, exclude_self, want_lse=True)

    def significance(attn, mask, exclude_self: bool = True):
        return significance_of(attn, op.Cast(mask, to=BOOL), exclude_self)

    def extract_scored(hidden, scores, mask, k, row_k=None):
        # SPEC 1.2 selection with ONNX TopK, which breaks ties toward the lower index. Keys in
        # float64 keep the reference order exactly: position 0 first (+inf), then real numbers
        # descending (a real -inf maps to -1e300, below every float32), then real NaN (-2e300),
        # then padding (-inf).
        real = op.Cast(mask, to=BOOL)
        s = op.Cast(scores, to=TensorProto.DOUBLE)
        s = op.Where(op.IsInf(s, detect_positive=0, detect_negative=1), const_d(-1e300), s)
        s = op.Where(op.IsNaN(s), const_d(-2e300), s)
        s = op.Where(real, s, const_d(float("-inf")))
        n = op.Shape(scores, start=1, end=2)
        pos = op.Range(op.Constant(value_int=0), op.Squeeze(n), op.Constant(value_int=1))
        s = op.Where(op.Equal(pos, op.Constant(value_int=0)), const_d(float("inf")), s)
        kk = op.Constant(value_ints=[int(k)]) if isinstance(k, int) else op.Reshape(op.Cast(k, to=INT64), ints(1))
        _, ranked = op.TopK(s, kk, axis=-1, largest=1, sorted=1)  # positions by rank
        if row_k is None:
            index, _ = op.TopK(ranked, kk, axis=-1, largest=0, sorted=1)  # ascending positions
            return gather_rows(hidden, mask, index, None)
        # Per-row k: slots at or beyond row_k[b] (by rank) sort after the kept ones (offset N).
        slots = op.Range(op.Constant(value_int=0), op.Squeeze(kk), op.Constant(value_int=1))
        dropped = op.GreaterOrEqual(op.Unsqueeze(slots, ints(0)), op.Unsqueeze(row_k, ints(1)))
        keyed = op.Add(ranked, op.Mul(op.Cast(dropped, to=INT64), n))
        index, _ = op.TopK(keyed, kk, axis=-1, largest=0, sorted=1)
        index = op.Mod(index, n)
        kept = op.Less(op.Unsqueeze(slots, ints(0)), op.Unsqueeze(row_k, ints(1)))
        return gather_rows(hidden, mask, index, kept)

    def gather_rows(hidden, mask, index, kept):
        shape = op.Concat(op.Shape(index), op.Shape(hidden, start=2, end=3), axis=0)
        out = op.GatherElements(hidden, op.Expand(op.Unsqueeze(index, ints(2)), shape), axis=1)
        out_mask = op.GatherElements(mask, index, axis=1)
        if kept is not None:
            out_mask = op.Where(kept, out_mask, op.CastLike(op.Constant(value_int=0), out_mask))
        return out, index, out_mask

    def extract(hidden, attn, mask, k, exclude_self: bool = True, row_k=None):
        return extract_scored(hidden, significance(attn, mask, exclude_self), mask, k, row_k)

    table = {
        torch.ops.power_bert.significance.default: significance,
        torch.ops.power_bert.extract_scored.default: extract_scored,
        torch.ops.power_bert.extract.default: extract,
        torch.ops.power_bert.attention.default: attention,
        torch.ops.power_bert._attention_forward.default: attention_forward,
        torch.ops.power_bert_export.extract_scored.default: extract_scored,
        torch.ops.power_bert_export.extract.default: extract,
        torch.ops.power_bert_export.attention.default: attention,
    }
    return table


# ---------------------------------------------------------------------------------------------
# Loading and checking the model
# ---------------------------------------------------------------------------------------------
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


def _is_power(model) -> bool:
    from .modeling import PowerBertPreTrainedModel

    return isinstance(model, PowerBertPreTrainedModel)


def _load_model(model_dir_or_model):
    """(model in eval mode, is_power) from a folder or a model object; clear errors."""
    if isinstance(model_dir_or_model, nn.Module):
        model = model_dir_or_model
    elif isinstance(model_dir_or_model, (str, os.PathLike)):
        path = Path(model_dir_or_model)
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ValueError(f"export: model_dir_or_model={str(path)!r} is not a model folder (no config.json there)")
        from transformers import AutoConfig, AutoModelForSequenceClassification

        from . import modeling  # noqa: F401  (registers power_bert with the Auto classes)

        try:
            config = AutoConfig.from_pretrained(path)
        except Exception as e:
            raise ValueError(f"export: model_dir_or_model={str(path)!r}: its config.json cannot be read ({e})") from e
        if getattr(config, "model_type", None) == "power_bert":
            from .modeling import PowerBertForSequenceClassification

            model = PowerBertForSequenceClassification.from_pretrained(path)
        else:
            try:
                model = AutoModelForSequenceClassification.from_pretrained(path)
            except Exception as e:
                raise ValueError(f"export: model_dir_or_model={str(path)!r} is not a sequence classification "
                                 f"checkpoint Hugging Face can load ({type(e).__name__}: {e})") from e
    else:
        raise TypeError(f"export: model_dir_or_model must be a model folder or a torch.nn.Module, got "
                        f"{type(model_dir_or_model).__name__}")
    power = _is_power(model)
    if power:
        from .modeling import PowerBertForSequenceClassification

        if not isinstance(model, PowerBertForSequenceClassification):
            raise ValueError(f"export: model_dir_or_model is a {type(model).__name__}; only sequence classification "
                             "(PowerBertForSequenceClassification) is exported")
        if model.config.mode == "soft":
            raise ValueError("export: model_dir_or_model is in soft mode (stage 2 of training); only hard mode is "
                             "exported: call model.set_mode('hard') (derives ℓ_j from the retention parameters) "
                             "and save it first")
    elif not hasattr(model, "config") or "ForSequenceClassification" not in type(model).__name__:
        raise ValueError(f"export: model_dir_or_model is a {type(model).__name__}; export takes a PoWER-BERT "
                         "model or a Hugging Face *ForSequenceClassification model")
    return model.eval(), power


def _accepts_token_types(model, power: bool) -> bool:
    hf = model.model if power else model
    if "token_type_ids" not in inspect.signature(hf.forward).parameters:
        return False
    return int(getattr(hf.config, "type_vocab_size", 0) or 0) > 1


def _default_max_length(model, power: bool) -> int:
    if power:
        return int(model.config.sequence_length)
    from .modeling.configuration_power_bert import max_positions

    try:
        return int(max_positions(model.config))
    except Exception:
        return int(getattr(model.config, "max_position_embeddings", 512))


def _check_output(output, fmt: str) -> Path:
    if not isinstance(output, (str, os.PathLike)) or str(output) == "":
        raise ValueError(f"export: output must be a file path, got {output!r}")
    out = Path(output)
    if out.is_dir():
        raise ValueError(f"export: output={str(out)!r} is a directory; give a file path (e.g. model.{fmt})")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"export: output={str(out)!r} cannot be written: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"export: output={str(out)!r} cannot be written (no write permission)")
    return out


def _sample_inputs(model, power: bool, batch: int, n: int, token_types: bool, seed: int = 0):
    """Random token ids (right padding: row b has n - b % (n // 2 + 1) real tokens)."""
    g = torch.Generator().manual_seed(seed)
    hf = model.model if power else model
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


def _metadata(model, power: bool, max_length: int, token_types: bool, fmt: str, quantize) -> dict:
    hf = model.model if power else model
    return {
        "kind": "power_bert" if power else "huggingface",
        "format": fmt,
        "quantize": quantize or "none",
        "max_length": int(max_length),
        "retention": list(model.config.retention) if power and model.config.mode == "hard" else None,
        "mode": model.config.mode if power else None,
        "inputs": ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else []),
        "num_labels": int(hf.config.num_labels),
        "model_type": hf.config.model_type,
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
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
    """
    if format not in FORMATS:
        raise ValueError(f"export: format must be one of {FORMATS}, got {format!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"export: quantize must be one of {QUANTIZE}, got {quantize!r}")
    if quantize is not None and format != "onnx":
        raise ValueError(f"export: quantize={quantize!r} is for format='onnx' only (pt2 packages are fp32)")
    if ort_optimization not in ORT_OPTIMIZATION:
        raise ValueError(f"export: ort_optimization must be one of {ORT_OPTIMIZATION}, got {ort_optimization!r}")
    out = _check_output(output, format)
    if format == "onnx":
        _onnx()
        _ort()
        if quantize:
            importlib.import_module("onnxruntime.quantization")
    model, power = _load_model(model_dir_or_model)
    limit = _default_max_length(model, power)
    if max_length is None:
        max_length = limit
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= max(limit, 2):
        raise ValueError(f"export: max_length must be an int in [2, {limit}], got {max_length!r}")
    param = next(model.parameters())
    if param.dtype != torch.float32:
        raise ValueError(f"export: model_dir_or_model has {param.dtype} weights; export takes float32 models")
    if param.device.type != "cpu":
        model = model.cpu()
    token_types = _accepts_token_types(model, power)
    wrapper = _Logits(model, token_types, max_length).eval()
    meta = _metadata(model, power, max_length, token_types, format, quantize)

    sample = _sample_inputs(model, power, 2, max_length, token_types)
    batch = torch.export.Dim("batch", min=1, max=65536)
    seq = torch.export.Dim("sequence", min=2, max=max_length)
    dyn = tuple({0: batch, 1: seq} for _ in sample)
    routing = _ExportRouting(format) if power else contextlib.nullcontext()
    with torch.no_grad():
        if format == "onnx":
            _export_onnx(wrapper, sample, dyn, routing, out, meta, quantize, ort_optimization)
        else:
            _export_pt2(wrapper, sample, dyn, routing, out, meta)
    if check:
        _check_artifact(out, format, wrapper, model, power, token_types, max_length, quantize, atol)
    return out


def _export_onnx(wrapper, sample, dyn, routing, out: Path, meta: dict, quantize, ort_optimization: str):
    import onnx

    ort = _ort()
    names = ["input_ids", "attention_mask", "token_type_ids"][: len(sample)]
    with routing:
        program = torch.onnx.export(wrapper, sample, dynamic_shapes=dyn, dynamo=True, input_names=names,
                                    output_names=["logits"], custom_translation_table=onnx_translation_table(),
                                    optimize=True, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "exported.onnx"
        program.save(str(raw))
        src = raw
        if ort_optimization != "disable":
            opts = ort.SessionOptions()
            opts.graph_optimization_level = {
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            }[ort_optimization]
            opt = Path(tmp) / "optimized.onnx"
            opts.optimized_model_filepath = str(opt)
            ort.InferenceSession(str(raw), opts, providers=["CPUExecutionProvider"])
            src = opt
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q = Path(tmp) / "quantized.onnx"
            quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8)
            src = q
        proto = onnx.load(str(src))
        for node in proto.graph.node:  # name the length check so ONNX Runtime's error names it
            if node.op_type == "Gather" and "length_check" in node.input[0]:
                node.name = "power_bert_length_check"
        meta = dict(meta, ort_optimization=ort_optimization)
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = _META_KEY, json.dumps(meta)
        try:
            onnx.save(proto, str(out))
        except OSError as e:
            raise ValueError(f"export: output={str(out)!r} cannot be written ({e})") from e


def _export_pt2(wrapper, sample, dyn, routing, out: Path, meta: dict):
    with routing:
        ep = torch.export.export(wrapper, sample, dynamic_shapes=dyn, strict=False)
    meta = {_META_KEY: json.dumps(meta)}
    try:
        torch._inductor.aoti_compile_and_package(ep, package_path=str(out),
                                                 inductor_configs={"aot_inductor.metadata": meta})
    except OSError as e:
        raise ValueError(f"export: output={str(out)!r} cannot be written ({e})") from e


# ---------------------------------------------------------------------------------------------
# Running the artifacts
# ---------------------------------------------------------------------------------------------
def _check_length(n: int, max_length: int, path) -> None:
    if n > max_length:
        raise ValueError(f"{path}: the input has {n} tokens per row but this artifact takes at most "
                         f"max_length = {max_length} (the trained N); truncate the input")


class OnnxClassifier:
    """An ONNX Runtime session of an exported model: ``clf(input_ids, attention_mask[,
    token_type_ids])`` (int64 arrays or tensors [B, N]) -> float32 numpy logits [B, num_labels].
    Raises ValueError for a length above the artifact's max_length. ``optimization``: ONNX
    Runtime's graph optimisation level at load ("disable", "basic", "extended", "all")."""

    def __init__(self, path, optimization: str = "all", threads: int | None = None):
        if optimization not in ORT_OPTIMIZATION:
            raise ValueError(f"OnnxClassifier: optimization must be one of {ORT_OPTIMIZATION}, got {optimization!r}")
        ort = _ort()
        self.path = str(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        raw = self.session.get_modelmeta().custom_metadata_map.get(_META_KEY)
        self.metadata = json.loads(raw) if raw else {}
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.max_length = int(self.metadata.get("max_length", 1 << 62))

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        import numpy as np

        def arr(x):
            return x.detach().cpu().numpy().astype(np.int64) if isinstance(x, torch.Tensor) else np.asarray(x, np.int64)

        ids, mask = arr(input_ids), arr(attention_mask)
        _check_length(ids.shape[1], self.max_length, self.path)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = arr(token_type_ids) if token_type_ids is not None else np.zeros_like(ids)
        return self.session.run(["logits"], feeds)[0]


class _Pt2Classifier:
    def __init__(self, path):
        self.path = str(path)
        self.runner = torch._inductor.aoti_load_package(self.path)
        raw = self.runner.get_metadata().get(_META_KEY)
        self.metadata = json.loads(raw) if raw else {}
        self.max_length = int(self.metadata.get("max_length", 1 << 62))
        self.input_names = self.metadata.get("inputs", ["input_ids", "attention_mask"])

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        _check_length(input_ids.shape[1], self.max_length, self.path)
        args = [input_ids.long(), attention_mask.long()]
        if "token_type_ids" in self.input_names:
            args.append(token_type_ids.long() if token_type_ids is not None else torch.zeros_like(args[0]))
        return self.runner(*args)


def load_pt2(path):
    """An exported AOTInductor package: ``clf(input_ids, attention_mask[, token_type_ids])``
    (int64 tensors [B, N]) -> logits tensor [B, num_labels]; ValueError above max_length."""
    return _Pt2Classifier(path)


def _check_artifact(out: Path, fmt, wrapper, model, power, token_types, max_length, quantize, atol):
    shapes = [(3, max_length), (2, max(2, max_length // 2 + 1))]
    run = OnnxClassifier(out) if fmt == "onnx" else load_pt2(out)
    for i, (b, n) in enumerate(shapes):
        args = _sample_inputs(model, power, b, n, token_types, seed=100 + i)
        with torch.no_grad():
            want = wrapper(*args).float()
        got = torch.as_tensor(run(*args)).float()
        if got.shape != want.shape or not torch.isfinite(got).all():
            raise RuntimeError(f"export: the artifact {str(out)!r} gave logits of shape {tuple(got.shape)} "
                               f"(expected {tuple(want.shape)}) or non-finite values")
        if quantize is None and not torch.allclose(got, want, atol=atol, rtol=0):
            err = (got - want).abs().max().item()
            raise RuntimeError(f"export: the artifact {str(out)!r} differs from PyTorch by {err:.3g} at B={b}, "
                               f"N={n} (atol {atol})")
