"""Deployable artifacts of PoWER-BERT (hard mode) and plain Hugging Face sequence classifiers.

:func:`export` writes one file that serves every batch size and every sequence length up to the
trained N (``max_length``):

* ``format="onnx"``: the power_bert ops written in standard ONNX operators
  (:mod:`.translations`), so the graph runs in stock ``onnxruntime`` with no custom-op library.
  ``quantize="int8"`` adds ONNX Runtime's dynamic quantisation (int8 weights of the MatMuls).
  Needs the ``export`` extra: ``pip install -e .[export]``.
* ``format="pt2"``: an AOTInductor package (``torch.export`` +
  ``torch._inductor.aoti_compile_and_package``) that calls the ops' C++ kernels; load it with
  :func:`load_pt2` or ``torch._inductor.aoti_load_package`` after importing ``power_bert_ops``
  (the bare runner reads its inputs as contiguous: pass ``.contiguous()`` tensors, not slices of
  a wider batch, or its logits are wrong without an error; :func:`load_pt2` does it for you).

Dynamic length: layer j keeps ``min(ℓ_j, rows in)`` rows, computed inside the graph (the ops
take a ``SymInt k``), so one artifact serves N = 2 .. max_length.

Inputs of the artifacts: ``input_ids`` and ``attention_mask`` int64 [B, N] (right padding) and,
for models with token types (BERT, ALBERT, ELECTRA), ``token_type_ids`` int64 [B, N]; output
``logits`` float32 [B, num_labels]. A length above ``max_length``: :class:`OnnxClassifier` and
:func:`load_pt2` raise ValueError; a bare ONNX Runtime session fails in the graph's length check
(a Gather named ``power_bert_length_check``: "indices element out of data bounds").

Modules: :mod:`.driver` (:func:`export`), :mod:`.translations` (the ONNX form of each op),
:mod:`.runtime` (running the artifacts). Calling this package, ``power_bert_ops.export(...)``,
calls :func:`export`.
"""
from __future__ import annotations

import sys
import types

from .driver import FORMATS, QUANTIZE, ExportError, export
from .runtime import ORT_OPTIMIZATION, OnnxClassifier, load_pt2

__all__ = ["FORMATS", "ORT_OPTIMIZATION", "QUANTIZE", "ExportError", "OnnxClassifier", "export", "load_pt2",
           "onnx_translation_table"]


def onnx_translation_table() -> dict:
    """{op overload: onnxscript function} of every power_bert op, for
    ``torch.onnx.export(custom_translation_table=...)`` (needs onnx and onnxscript)."""
    from .translations import onnx_translation_table as table

    return table()


class _CallableModule(types.ModuleType):
    """``power_bert_ops.export`` is both this package and the function: importing the package
    makes it the attribute of ``power_bert_ops``, so calling it runs :func:`export`."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(export)


sys.modules[__name__].__class__ = _CallableModule
