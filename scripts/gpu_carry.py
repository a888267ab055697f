#!/usr/bin/env python3
"""What travels to the GPU machine beside the repository: the git-ignored folder
``.gpu_carry/`` described by the committed manifest ``scripts/gpu_carry_manifest.json``.

The GPU machine reaches no package registry. Its image already holds every runtime dependency
of the package (KINDS.md's package list: accelerate, scikit-learn, scipy, matplotlib,
safetensors, tqdm, onnx, onnxscript, onnxruntime, pytest-benchmark, pytest-xdist,
pytest-timeout, ninja, ...); the manifest lists

- ``wheels``: small pure-Python wheels the image lacks or may lack (expecttest from the test
  extra; pytest-timeout and pytest-xdist + execnet in case the image's are gone). On the device
  only those whose module is missing are installed, with ``pip --target`` into a private folder
  (never over the image's own packages);
- ``files``: the packaged model and corpus laid out as ``$POWER_BERT_CACHE`` expects them
  (power_bert_ops/assets.py, power_bert_ops/data/corpora.py), so nothing is downloaded there.
  The model's weights travel rounded to float16 (45 MB instead of 91 MB: the device tool carries
  64 MiB at most, repository included; relative error 2e-4, far under bf16 training's own
  rounding) and are written back as float32 ``model.safetensors`` on the device.

    python3 scripts/gpu_carry.py fetch            # here (network): fill .gpu_carry/, check hashes, print its size
    python3 scripts/gpu_carry.py verify           # hashes of the files present; --require-files: all present
    python3 scripts/gpu_carry.py setup --site DIR --cache DIR [--report FILE]   # on the device
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "scripts" / "gpu_carry_manifest.json"

# The device image: CPython 3.12 on x86-64, glibc 2.39 (KINDS.md, H200.md).
TARGET_PYTHON = (3, 12)
TARGET_GLIBC = (2, 39)
DEVICE_TOOL_LIMIT_BYTES = 64 << 20  # the working tree that travels, carried paths included
FP16_SUFFIX = ".fp16.safetensors"


def _fetch_module():
    """power_bert_ops/_fetch.py loaded by its path (standard library only), so this script runs
    before the package is built: importing power_bert_ops would load its compiled extension."""
    spec = importlib.util.spec_from_file_location("_power_bert_fetch", ROOT / "power_bert_ops" / "_fetch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sha256_of = _fetch_module().sha256_of


def load_manifest(path: Path = MANIFEST) -> dict:
    with open(path) as f:
        return json.load(f)


def carry_dir(manifest: dict, root: Path = ROOT) -> Path:
    return root / manifest["carry_dir"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


# ---------------------------------------------------------------------------------------------
# Checks (used by the dry run: no network, no files needed)
# ---------------------------------------------------------------------------------------------
def wheel_tag_problem(filename: str, python: tuple[int, int] = TARGET_PYTHON,
                      glibc: tuple[int, int] = TARGET_GLIBC) -> str | None:
    """None when pip on CPython ``python`` / x86-64 Linux / ``glibc`` can install the wheel
    ``filename``; else why not."""
    if not filename.endswith(".whl"):
        return "is not a .whl file"
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return "is not named NAME-VERSION[-BUILD]-PYTHON-ABI-PLATFORM.whl"
    pys, abis, plats = (p.split(".") for p in parts[-3:])
    major, minor = python
    cp = f"cp{major}{minor}"

    def py_ok(tag: str) -> bool:
        if tag in (f"py{major}", f"py{major}{minor}", cp):
            return True
        m = re.fullmatch(rf"cp{major}(\d+)", tag)
        return bool(m) and int(m.group(1)) <= minor and "abi3" in abis

    if not any(py_ok(t) for t in pys):
        return f"python tag {parts[-3]!r} does not run on CPython {major}.{minor}"
    if not any(a in ("none", "abi3", cp) for a in abis):
        return f"ABI tag {parts[-2]!r} does not match CPython {major}.{minor} ({cp}, abi3 or none)"

    def plat_ok(tag: str) -> bool:
        if tag in ("any", "linux_x86_64", "manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"):
            return True
        m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", tag)
        return bool(m) and (int(m.group(1)), int(m.group(2))) <= glibc

    if not any(plat_ok(t) for t in plats):
        return f"platform tag {parts[-1]!r} is not x86-64 Linux with glibc <= {glibc[0]}.{glibc[1]} (or any)"
    return None


def manifest_problems(manifest: dict) -> list[str]:
    """Everything wrong with the manifest itself (structure, wheel tags, duplicates)."""
    probs: list[str] = []
    for key in ("carry_dir", "wheels", "files"):
        if key not in manifest:
            probs.append(f"manifest: no {key!r} key")
    if probs:
        return probs
    if not re.fullmatch(r"\.?[A-Za-z0-9_-]+", manifest["carry_dir"]):
        probs.append(f"manifest: carry_dir {manifest['carry_dir']!r} must be one folder name at the repository root")
    seen: dict[str, str] = {}
    for w in manifest["wheels"]:
        name = w.get("file", "")
        missing = [k for k in ("file", "requirement", "module", "sha256", "bytes") if k not in w]
        if missing:
            probs.append(f"manifest: wheel {name or w!r} lacks {', '.join(missing)}")
            continue
        why = wheel_tag_problem(name)
        if why:
            probs.append(f"manifest: wheel {name}: {why}")
        dist, _, version = w["requirement"].partition("==")
        parts = name[:-4].split("-") if name.endswith(".whl") else ["", ""]
        if _norm(parts[0]) != _norm(dist) or parts[1] != version:
            probs.append(f"manifest: wheel {name} does not match its requirement {w['requirement']!r} "
                         "(pin NAME==VERSION)")
        if _norm(dist) in seen:
            probs.append(f"manifest: two wheels of {dist} ({seen[_norm(dist)]}, {name}): pip stops on two versions")
        seen[_norm(dist)] = name
        if not re.fullmatch(r"[0-9a-f]{64}", w["sha256"]):
            probs.append(f"manifest: wheel {name}: sha256 is not 64 hex digits")
    paths = set()
    for f in manifest["files"]:
        p = f.get("path", "")
        if not p or not re.fullmatch(r"[A-Za-z0-9_./-]+", p) or p.startswith("/") or ".." in p.split("/"):
            probs.append(f"manifest: file path {p!r} must be relative, inside the carry folder")
        if not re.fullmatch(r"[0-9a-f]{64}", f.get("sha256", "")) or not isinstance(f.get("bytes"), int):
            probs.append(f"manifest: file {p}: needs sha256 (64 hex digits) and bytes")
        if p in paths:
            probs.append(f"manifest: file {p} listed twice")
        paths.add(p)
    return probs


def carried_bytes(manifest: dict) -> int:
    return sum(w["bytes"] for w in manifest["wheels"]) + sum(f["bytes"] for f in manifest["files"])


def cache_paths(manifest: dict) -> dict[str, dict]:
    """Manifest files under ``cache/``, keyed by their path inside $POWER_BERT_CACHE as the
    device will lay it out (``*.fp16.safetensors`` becomes ``*.safetensors``)."""
    out = {}
    for f in manifest["files"]:
        if f["path"].startswith("cache/"):
            rel = f["path"][len("cache/"):]
            if rel.endswith(FP16_SUFFIX):
                rel = rel[: -len(FP16_SUFFIX)] + ".safetensors"
            out[rel] = f
    return out


def file_problems(manifest: dict, root: Path = ROOT, require: bool = False) -> list[str]:
    """Hashes and sizes of the carried files that are present (all of them with ``require``)."""
    base = carry_dir(manifest, root)
    probs = []
    entries = [(f"wheels/{w['file']}", w) for w in manifest["wheels"]] + [(f["path"], f) for f in manifest["files"]]
    for rel, entry in entries:
        path = base / rel
        if not path.is_file():
            if require:
                probs.append(f"carry: {path} is missing (run scripts/fetch_gpu_carry.sh)")
            continue
        if path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
            probs.append(f"carry: {path} differs from the manifest (size {path.stat().st_size}, manifest "
                         f"{entry['bytes']}); run scripts/fetch_gpu_carry.sh again")
    if base.is_dir():
        listed = {rel for rel, _ in entries}
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = path.relative_to(base).as_posix()
            if rel not in listed:
                probs.append(f"carry: {path} is not in the manifest (it would travel and might be installed)")
    return probs


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


# ---------------------------------------------------------------------------------------------
# fetch: here, with PyPI
# ---------------------------------------------------------------------------------------------
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any"]


def _pip_download(args: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gpu_carry: `{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _fp16_safetensors(src: Path, dst: Path, note: str) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    tensors = {k: (v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in load_file(str(src)).items()}
    save_file(tensors, str(dst), metadata={"format": "pt", "power_bert_carry": note})


def fetch(manifest: dict, root: Path = ROOT, update: bool = False) -> int:
    """Fills the carry folder from PyPI, checks every file against the manifest (``update``:
    rewrites the manifest's hashes and sizes instead), prints the folder's size."""
    base = carry_dir(manifest, root)
    (base / "wheels").mkdir(parents=True, exist_ok=True)
    for w in manifest["wheels"]:
        if not (base / "wheels" / w["file"]).is_file():
            plat = [a for p in PLATFORMS for a in ("--platform", p)]
            _pip_download(["--python-version", "3.12", "--implementation", "cp", *plat, w["requirement"]],
                          base / "wheels")
    by_source: dict[str, list[dict]] = {}
    for f in manifest["files"]:
        by_source.setdefault(f["from"]["requirement"], []).append(f)
    with tempfile.TemporaryDirectory() as tmp:
        for requirement, files in by_source.items():
            if all((base / f["path"]).is_file() for f in files) and not update:
                continue
            dl = Path(tmp) / _norm(requirement)
            _pip_download([requirement], dl)
            wheel = next(dl.glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                for f in files:
                    out = base / f["path"]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    member = f["from"]["member"]
                    if f.get("transform") == "float16":
                        raw = Path(tmp) / "fp32.safetensors"
                        with zf.open(member) as src, open(raw, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        if f["from"].get("sha256") and sha256_of(raw) != f["from"]["sha256"] and not update:
                            raise SystemExit(f"gpu_carry: {member} in {wheel.name} has changed upstream")
                        f["from"]["sha256"] = sha256_of(raw)
                        _fp16_safetensors(raw, out, f"float16 rounding of {requirement} {member} "
                                                    f"(sha256 {f['from']['sha256']})")
                    else:
                        with zf.open(member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
    entries = [(base / "wheels" / w["file"], w) for w in manifest["wheels"]] + \
              [(base / f["path"], f) for f in manifest["files"]]
    if update:
        for path, entry in entries:
            entry["sha256"], entry["bytes"] = sha256_of(path), path.stat().st_size
        MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"gpu_carry: manifest updated: {MANIFEST}")
    probs = file_problems(manifest, root, require=True)
    for p in probs:
        print(p, file=sys.stderr)
    size = dir_bytes(base)
    repo = _tracked_bytes(root)
    print(f"gpu_carry: {base} holds {size} bytes ({size / 2**20:.1f} MiB); tracked repository files "
          f"{repo / 2**20:.1f} MiB; together {(size + repo) / 2**20:.1f} MiB of the device tool's 64 MiB")
    if size + repo > DEVICE_TOOL_LIMIT_BYTES * 0.9:
        print("gpu_carry: that is too close to the 64 MiB the device tool carries", file=sys.stderr)
        return 1
    return 1 if probs else 0


def _tracked_bytes(root: Path) -> int:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((root / n).stat().st_size for n in names if n and (root / n).is_file())


# ---------------------------------------------------------------------------------------------
# setup: on the device, no network
# ---------------------------------------------------------------------------------------------
def install_missing(manifest: dict, site: Path, root: Path = ROOT) -> dict:
    """Installs, with ``pip --target site``, each carried wheel whose module this Python cannot
    import; returns {module: "present" | "installed" | "missing (not carried)"}."""
    base = carry_dir(manifest, root)
    report, todo = {}, []
    for w in manifest["wheels"]:
        if importlib.util.find_spec(w["module"]) is not None:
            report[w["module"]] = "present"
        elif (base / "wheels" / w["file"]).is_file():
            todo.append(w)
        else:
            report[w["module"]] = f"missing, and {w['file']} was not carried"
    if todo:
        site.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(site),
               *(str(base / "wheels" / w["file"]) for w in todo)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for w in todo:
            report[w["module"]] = "installed" if proc.returncode == 0 else f"pip failed: {proc.stderr[-500:]}"
    return report


def prepare_cache(manifest: dict, cache: Path, root: Path = ROOT) -> dict:
    """Lays the carried model and corpus files out in ``cache`` ($POWER_BERT_CACHE): copies, and
    writes ``X.safetensors`` in float32 from ``X.fp16.safetensors``. Idempotent."""
    base = carry_dir(manifest, root)
    done = {}
    for rel, entry in cache_paths(manifest).items():
        src, dst = base / entry["path"], cache / rel
        if dst.is_file():
            done[rel] = "present"
            continue
        if not src.is_file():
            done[rel] = f"missing: {src} was not carried"
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".partial")
        if entry["path"].endswith(FP16_SUFFIX):
            import numpy as np
            from safetensors.numpy import load_file, save_file

            tensors = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in load_file(str(src)).items()}
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            done[rel] = "written as float32 from the carried float16 weights"
        else:
            shutil.copyfile(src, tmp)
            done[rel] = "copied"
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    return done


def setup(manifest: dict, site: Path, cache: Path, report_path: Path | None, root: Path = ROOT) -> int:
    probs = file_problems(manifest, root, require=False)
    report = {"site": str(site), "cache": str(cache), "wheels": install_missing(manifest, site, root),
              "cache_files": prepare_cache(manifest, cache, root), "problems": probs,
              "carried_bytes": dir_bytes(carry_dir(manifest, root))}
    text = json.dumps(report, indent=1)
    print(text)
    if report_path:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(text + "\n")
    # Fatal: a cache file missing or a carried file that differs (the model and corpus steps need
    # them). A wheel that could not be installed only warns: the test step adapts to its plugins.
    fatal = [p for p in probs if "differs from the manifest" in p] + \
        [f"{k}: {v}" for k, v in report["cache_files"].items() if not v.startswith(("present", "copied", "written"))]
    warn = [p for p in probs if p not in fatal] + \
        [f"{k}: {v}" for k, v in report["wheels"].items() if not v.startswith(("present", "installed"))]
    for w in warn:
        print(f"gpu_carry: warning: {w}", file=sys.stderr)
    for b in fatal:
        print(f"gpu_carry: {b}", file=sys.stderr)
    return 1 if fatal else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fill the carry folder from PyPI (here, with network)")
    f.add_argument("--update-manifest", action="store_true", help="record new hashes and sizes in the manifest")
    v = sub.add_parser("verify", help="check the manifest and the carried files that are present")
    v.add_argument("--require-files", action="store_true")
    s = sub.add_parser("setup", help="on the device: install missing wheels, lay out $POWER_BERT_CACHE")
    s.add_argument("--site", type=Path, required=True)
    s.add_argument("--cache", type=Path, required=True)
    s.add_argument("--report", type=Path, default=None)
    a = ap.parse_args(argv)
    manifest = load_manifest(a.manifest)
    probs = manifest_problems(manifest)
    if probs:
        print("\n".join(probs), file=sys.stderr)
        return 1
    if a.cmd == "fetch":
        return fetch(manifest, update=a.update_manifest)
    if a.cmd == "verify":
        probs = file_problems(manifest, require=a.require_files)
        print("\n".join(probs) if probs else f"gpu_carry: manifest and {carry_dir(manifest)} agree "
              f"({carried_bytes(manifest) / 2**20:.1f} MiB listed)")
        return 1 if probs else 0
    return setup(manifest, a.site, a.cache, a.report)


if __name__ == "__main__":
    sys.exit(main())
