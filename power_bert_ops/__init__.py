"""power_bert_ops: PoWER-BERT progressive word-vector elimination for PyTorch.

Ops (``torch.ops.power_bert.*``, wrapped here with argument checks and backend selection):
:func:`significance`, :func:`extract` (the fused one users call), :func:`extract_scored`,
:func:`soft_extract`, :func:`attention`. Plain-PyTorch definitions of each are in
:mod:`power_bert_ops.reference`.

Models (``power_bert_ops.PowerBertForSequenceClassification`` etc., from
:mod:`power_bert_ops.modeling`) are loaded on first use, so the ops need no transformers.
Importing this package registers the ``power_bert`` config and models with transformers' Auto
classes (``AutoConfig``, ``AutoModelForSequenceClassification``, ``AutoModelForMultipleChoice``,
so ``pipeline("text-classification", model=dir)`` works): at once when transformers is already
imported, else the moment it is.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from . import reference
from ._library import built_with_cuda, cuda_version
from .ops import (
    BACKENDS,
    ExtractOutput,
    attention,
    extract,
    extract_scored,
    significance,
    soft_extract,
    triton_available,
)

__version__ = "0.1.0"

# Names served by power_bert_ops.modeling and power_bert_ops.export, imported on first access
# (they need transformers; export's ONNX path also the `export` extra). ``export`` is the
# package power_bert_ops.export, which is callable: power_bert_ops.export(...) runs its export().
_MODELING = ("PowerBertConfig", "PowerBertForSequenceClassification", "PowerBertForMultipleChoice")
_EXPORT = ("export", "OnnxClassifier", "load_pt2")


def _register_with_transformers() -> None:
    try:
        importlib.import_module(".modeling", __name__)  # registers with the Auto classes on import
    except Exception as e:  # a broken transformers install must not break the ops
        warnings.warn(f"power_bert_ops: could not register the PoWER-BERT models with transformers: {e}",
                      stacklevel=2)


class _RegisterOnTransformersImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when ``transformers`` is imported, wraps its loader so the
    registration runs right after transformers has loaded, then steps out of sys.meta_path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                real.exec_module(module)
                _register_with_transformers()

        spec.loader = _Loader()
        return spec


if "transformers" in sys.modules:
    _register_with_transformers()
elif not any(isinstance(f, _RegisterOnTransformersImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnTransformersImport())


def __getattr__(name):
    if name in _MODELING:
        return getattr(importlib.import_module(".modeling", __name__), name)
    if name == "export":
        return importlib.import_module(".export", __name__)
    if name in _EXPORT:
        return getattr(importlib.import_module(".export", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_MODELING) + list(_EXPORT))


__all__ = [
    "BACKENDS",
    "ExtractOutput",
    "OnnxClassifier",
    "PowerBertConfig",
    "PowerBertForMultipleChoice",
    "PowerBertForSequenceClassification",
    "attention",
    "built_with_cuda",
    "cuda_version",
    "export",
    "extract",
    "extract_scored",
    "load_pt2",
    "reference",
    "significance",
    "soft_extract",
    "triton_available",
]
