"""Running exported artifacts: :class:`OnnxClassifier` (an ONNX Runtime session) and
:func:`load_pt2` (an AOTInductor package), each taking ``input_ids``, ``attention_mask`` and,
when the model has token types, ``token_type_ids`` (int64 [B, N], right padding) and returning
the logits; a length above the artifact's ``max_length`` raises ValueError."""
from __future__ import annotations

import json
import zipfile

import torch

from .._checks import LEFT_PADDED

__all__ = ["EXTRA_HINT", "META_KEY", "ORT_OPTIMIZATION", "OnnxClassifier", "load_pt2", "ort_level"]

EXTRA_HINT = "pip install -e .[export]  (or: pip install onnx onnxscript onnxruntime)"
# The artifact's metadata entry (ONNX metadata_props / AOTInductor metadata): a JSON object.
META_KEY = "power_bert"
# ONNX Runtime graph optimisation levels by name.
ORT_OPTIMIZATION = ("disable", "basic", "extended", "all")


def onnxruntime():
    """The onnxruntime module; ImportError naming the ``export`` extra when it is missing."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"power_bert_ops.export: ONNX Runtime is not installed: {EXTRA_HINT}") from e
    return ort


def ort_level(name: str):
    """The ``onnxruntime.GraphOptimizationLevel`` of one of :data:`ORT_OPTIMIZATION`."""
    level = onnxruntime().GraphOptimizationLevel
    return {"disable": level.ORT_DISABLE_ALL, "basic": level.ORT_ENABLE_BASIC,
            "extended": level.ORT_ENABLE_EXTENDED, "all": level.ORT_ENABLE_ALL}[name]


def check_length(n: int, max_length: int, path) -> None:
    if n > max_length:
        raise ValueError(f"{path}: the input has {n} tokens per row but this artifact takes at most "
                         f"max_length = {max_length} (the trained N); truncate the input")


def check_first_position(attention_mask, metadata: dict, path) -> None:
    """Refuses, for a PoWER-BERT artifact (its metadata has a retention), a row whose position 0 is
    padding: the graph keeps position 0 as [CLS] in every layer, so a left-padded row would be
    scored wrongly (the PyTorch model refuses it the same way)."""
    if metadata.get("retention") is None or attention_mask.shape[-1] == 0:
        return
    first = attention_mask[..., 0]
    if not bool((first != 0).all()):
        raise ValueError(f"{path}: {LEFT_PADDED}")


def _metadata(raw, path) -> dict:
    """The artifact's power-bert metadata (a JSON object; {} when it has none)."""
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: its {META_KEY!r} metadata is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its {META_KEY!r} metadata is a JSON {type(meta).__name__}, not an object")
    return meta


def _unreadable(path, kind: str, error: Exception) -> ValueError:
    """The error for a file its runtime cannot load (truncated, not an artifact at all, or
    written by a newer runtime), with the first line of the runtime's own reason."""
    first = (str(error).strip().splitlines() or [""])[0]
    return ValueError(f"{path}: cannot be loaded as an {kind} ({type(error).__name__}: {first})")


def _check_readable(path: str) -> None:
    """ValueError naming ``path`` when it cannot be opened (missing, a directory, no permission)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None


class OnnxClassifier:
    """An ONNX Runtime session of an exported model: ``clf(input_ids, attention_mask[,
    token_type_ids])`` (int64 arrays or tensors [B, N]) -> float32 numpy logits [B, num_labels].
    Raises ValueError for a file ONNX Runtime cannot load and for a length above the artifact's
    max_length. ``optimization``: ONNX Runtime's graph optimisation level at load (one of
    :data:`ORT_OPTIMIZATION`)."""

    def __init__(self, path, optimization: str = "all", threads: int | None = None):
        if optimization not in ORT_OPTIMIZATION:
            raise ValueError(f"OnnxClassifier: optimization must be one of {ORT_OPTIMIZATION}, got {optimization!r}")
        ort = onnxruntime()
        self.path = str(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort_level(optimization)
        if threads:
            opts.intra_op_num_threads = int(threads)
        _check_readable(self.path)
        try:
            self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own error types: a corrupt or foreign file, a newer opset
            raise _unreadable(self.path, "ONNX model", e) from e
        self.metadata = _metadata(self.session.get_modelmeta().custom_metadata_map.get(META_KEY), self.path)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.max_length = int(self.metadata.get("max_length", 1 << 62))

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        import numpy as np

        def arr(x):
            return x.detach().cpu().numpy().astype(np.int64) if isinstance(x, torch.Tensor) else np.asarray(x, np.int64)

        ids, mask = arr(input_ids), arr(attention_mask)
        check_length(ids.shape[1], self.max_length, self.path)
        check_first_position(mask, self.metadata, self.path)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = arr(token_type_ids) if token_type_ids is not None else np.zeros_like(ids)
        return self.session.run(["logits"], feeds)[0]


class _Pt2Classifier:
    def __init__(self, path):
        from .. import ops  # noqa: F401  (the package calls torch.ops.power_bert kernels)

        self.path = str(path)
        _check_readable(self.path)
        if not zipfile.is_zipfile(self.path):  # checked first: torch would log a warning about an old format
            raise ValueError(f"{self.path}: cannot be loaded as an AOTInductor package (not a whole zip archive)")
        try:
            self.runner = torch._inductor.aoti_load_package(self.path)
        except Exception as e:
            raise _unreadable(self.path, "AOTInductor package", e) from e
        self.metadata = _metadata(self.runner.get_metadata().get(META_KEY), self.path)
        self.max_length = int(self.metadata.get("max_length", 1 << 62))
        self.input_names = self.metadata.get("inputs", ["input_ids", "attention_mask"])

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        check_length(input_ids.shape[1], self.max_length, self.path)
        check_first_position(attention_mask, self.metadata, self.path)
        args = [input_ids.long(), attention_mask.long()]
        if "token_type_ids" in self.input_names:
            args.append(token_type_ids.long() if token_type_ids is not None else torch.zeros_like(args[0]))
        # the compiled graph indexes its inputs as dense row-major [B, N]: a slice of a wider batch
        # (strides (N', 1)) would be read at the wrong offsets
        return self.runner(*(a.contiguous() for a in args))


def load_pt2(path):
    """An exported AOTInductor package: ``clf(input_ids, attention_mask[, token_type_ids])``
    (int64 tensors [B, N], any strides: they are made contiguous, which the bare
    ``aoti_load_package`` runner needs) -> logits tensor [B, num_labels]; ValueError above
    max_length, and for a file that cannot be loaded as a package."""
    return _Pt2Classifier(path)
