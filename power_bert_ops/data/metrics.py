"""Metrics as GLUE reports them (SPEC 1.5), from scikit-learn and SciPy.

``compute_metrics(task_or_kind, predictions, labels)`` takes a task name ("cola", "mrpc",
"stsb", "race", ...), a problem kind ("classification", "regression", "multiple_choice") or a
metric name / list of names, and returns ``{metric name: float}``. ``predictions`` may be class
ids, logits / scores (``[B, K]``: argmax is taken) or regression outputs (``[B]`` or ``[B, 1]``).

Metric names: ``accuracy``, ``f1`` (binary, positive class 1), ``f1_macro``,
``matthews_correlation``, ``pearson``, ``spearman``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .registry import canonical_name, get_task
from .types import DataError

__all__ = ["METRICS", "compute_metrics", "make_trainer_metrics", "metric_names", "primary_metric", "primary_score"]

_KINDS = {
    "classification": ("accuracy",),
    "multiple_choice": ("accuracy",),
    "regression": ("pearson", "spearman"),
}
_REGRESSION_METRICS = {"pearson", "spearman"}


def _accuracy(p, y):
    return accuracy_score(y, p)


def _f1(p, y):
    return f1_score(y, p, pos_label=1, average="binary", zero_division=0.0)


def _f1_macro(p, y):
    return f1_score(y, p, average="macro", zero_division=0.0)


def _matthews(p, y):
    return matthews_corrcoef(y, p)


def _constant(a) -> bool:
    return a.size < 2 or bool(np.all(a == a.flat[0]))


def _pearson(p, y):
    if _constant(p) or _constant(y):
        return float("nan")  # undefined; scipy would warn and return nan
    return pearsonr(p, y)[0]


def _spearman(p, y):
    if _constant(p) or _constant(y):
        return float("nan")
    return spearmanr(p, y)[0]


METRICS: dict[str, Callable] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "f1_macro": _f1_macro,
    "matthews_correlation": _matthews,
    "pearson": _pearson,
    "spearman": _spearman,
}
_METRIC_ALIASES = {"acc": "accuracy", "mcc": "matthews_correlation", "matthews": "matthews_correlation",
                   "matthews_corrcoef": "matthews_correlation", "pearsonr": "pearson", "spearmanr": "spearman",
                   "macro_f1": "f1_macro"}


def metric_names(task_or_kind) -> tuple[str, ...]:
    """The metrics reported for a task, problem kind, metric name or list of metric names."""
    if not isinstance(task_or_kind, str):
        names = tuple(_METRIC_ALIASES.get(str(m).lower(), str(m).lower()) for m in task_or_kind)
        bad = [m for m in names if m not in METRICS]
        if bad:
            raise DataError(f"unknown metrics {bad}; known: {list(METRICS)}")
        return names
    key = task_or_kind.strip().lower()
    if key in _KINDS:
        return _KINDS[key]
    key = _METRIC_ALIASES.get(key, key)
    if key in METRICS:
        return (key,)
    if canonical_name(key) is None:
        raise DataError(f"{task_or_kind!r} is neither a task, a problem kind {list(_KINDS)}, nor a metric "
                        f"{list(METRICS)}")
    return get_task(key).metrics


def primary_metric(task_or_kind) -> str:
    """The metric to select checkpoints by: the paper's (CoLA Matthews, MRPC / QQP F1, STS-B
    Spearman, otherwise accuracy); the first metric for a kind or metric list."""
    if isinstance(task_or_kind, str):
        if canonical_name(task_or_kind) is not None:
            return get_task(task_or_kind).primary_metric
        if task_or_kind.strip().lower() == "regression":
            return "spearman"
    return metric_names(task_or_kind)[0]


def primary_score(task_or_kind, metrics: dict) -> float:
    """``metrics[primary_metric(task)]``, also found under Trainer's ``eval_`` prefix."""
    name = primary_metric(task_or_kind)
    for key in (name, f"eval_{name}", f"test_{name}"):
        if key in metrics:
            return float(metrics[key])
    raise KeyError(f"{name!r} not in metrics {sorted(metrics)}")


def _as_array(x, what: str) -> np.ndarray:
    if isinstance(x, tuple) and x and hasattr(x[0], "shape"):
        x = x[0]  # a model-output tuple (logits, ...)
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object:
        raise DataError(f"{what}: cannot make a numeric array (ragged input?)")
    return a


def compute_metrics(task_or_kind, predictions, labels) -> dict[str, float]:
    """``{metric: value}`` for ``task_or_kind`` (see module docstring)."""
    names = metric_names(task_or_kind)
    regression = all(m in _REGRESSION_METRICS for m in names)
    p = _as_array(predictions, "predictions")
    y = _as_array(labels, "labels").reshape(-1)
    if regression:
        p = p.reshape(-1).astype(np.float64)
        y = y.astype(np.float64)
    else:
        if p.ndim == 2 and p.shape[-1] > 1:
            p = p.argmax(axis=-1)
        p = p.reshape(-1)
        if np.issubdtype(p.dtype, np.floating):
            if not np.all(np.isfinite(p)) or not np.all(p == np.round(p)):
                raise DataError("predictions for a classification metric must be class ids or [B, K] logits")
            p = p.astype(np.int64)
        if np.issubdtype(y.dtype, np.floating):
            y = y.astype(np.int64)
    if p.shape[0] != y.shape[0]:
        raise DataError(f"{p.shape[0]} predictions but {y.shape[0]} labels")
    if y.shape[0] == 0:
        raise DataError("no labels to score")
    return {name: float(METRICS[name](p, y)) for name in names}


def make_trainer_metrics(task_or_kind, metrics: Sequence[str] | None = None) -> Callable:
    """A ``compute_metrics`` for ``transformers.Trainer``: takes an ``EvalPrediction``."""
    what = metrics if metrics is not None else task_or_kind

    def fn(eval_pred) -> dict[str, float]:
        preds = getattr(eval_pred, "predictions", None)
        labels = getattr(eval_pred, "label_ids", None)
        if preds is None:
            preds, labels = eval_pred
        return compute_metrics(what, preds, labels)

    return fn
