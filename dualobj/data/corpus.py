"""Documents of a corpus in a fixed order, the content-hash train/val split, and the corpus fingerprint.

Preparation (``prepare.py``) streams the documents and applies the same order and split to a table of
document hashes; the list functions here are the same rules on documents held in memory (small corpora,
tests, probes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dualobj.data.sources import (
    TEXT_SOURCES,
    WIKI_FILE,
    check_file,
    check_source,
    source_files,
    stream_documents,
)
from dualobj.errors import DataError

ID_SOURCES = ("tokens", "bin")  # already tokenized: a prepared folder, a nanoGPT-style flat uint16 file
SOURCES = (*TEXT_SOURCES, *ID_SOURCES)


def _check_known(source: str, path: str | None) -> None:
    if source not in SOURCES:
        raise DataError(f"data.source={source!r} is unknown; use one of {', '.join(SOURCES)}")
    if source != "wiki" and not path:
        raise DataError(f"data.source={source} needs data.path=<file or folder>")


def read_documents(source: str, path: str | None, text_field: str = "text") -> list[str]:
    """Non-empty, stripped documents of a text corpus, in the source's own order, all in memory."""
    _check_known(source, path)
    if source in ID_SOURCES:
        raise DataError(f"data.source={source} holds token ids, not text; use a text source "
                        f"({', '.join(TEXT_SOURCES)}) where documents are needed")
    docs, _ = stream_documents(source, path, text_field)
    out = list(docs)
    if not out:
        raise empty_corpus(source, path)
    return out


def empty_corpus(source: str, path: str | None) -> DataError:
    where = "the default wiki corpus" if source == "wiki" else f"data.path={Path(path or '').expanduser()}"
    return DataError(f"{where} has no non-empty documents (empty corpus); give a corpus with text in it")


def order_documents(docs: list[str], order_seed: int) -> list[str]:
    """A fixed pseudo-random order, so nested repetition prefixes are not alphabetical."""
    perm = fixed_order(len(docs), order_seed)
    return [docs[i] for i in perm]


def fixed_order(n_docs: int, order_seed: int) -> np.ndarray:
    """Source indices of the documents in the fixed order."""
    return np.random.default_rng(order_seed).permutation(n_docs)


def unit_hash(raw: bytes) -> float:
    """A document's place in [0, 1) by a hash of its UTF-8 bytes (or token bytes): decides its split."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") / 2.0**64


def too_small(n_docs: int) -> DataError:
    return DataError(f"corpus too small: {n_docs} document(s), need at least 2 distinct ones "
                     "for a train/val split; add documents")


def val_mask(hashes: np.ndarray, val_fraction: float) -> np.ndarray:
    """Which documents are validation ones, by hash; both parts are never empty.

    Identical documents have identical hashes, so they always land on the same side.
    """
    if not len(hashes) or not (hashes != hashes[0]).any():  # fewer than 2 distinct documents
        raise too_small(len(hashes))
    is_val = hashes < val_fraction
    # Guarantee both parts: move the lowest-hash documents to val, or the highest-hash ones to train.
    if not is_val.any():
        is_val = hashes == hashes.min()
    elif is_val.all():
        is_val = hashes != hashes.max()
    return is_val


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) by a hash of each document's text: independent of order, R and seed."""
    is_val = val_mask(np.array([unit_hash(d.encode("utf-8")) for d in docs]), val_fraction)
    train = [d for d, v in zip(docs, is_val, strict=True) if not v]
    val = [d for d, v in zip(docs, is_val, strict=True) if v]
    return train, val


def _corpus_files(source: str, path: str | None) -> list[tuple[str, Path]]:
    if source == "wiki":
        return [(WIKI_FILE, source_files("wiki", None)[0])]
    p = Path(path or "").expanduser()
    if source == "bin":
        check_file(p)
        return [("", p)]
    files = source_files(source, p)
    if p.is_dir():
        return [(f.relative_to(p).as_posix(), f) for f in files]
    return [("", f) for f in files]


def file_stamp(tag: str, files: list[tuple[str, Path]]) -> str:
    """What identifies files without reading them: names, paths, sizes, modification times, inodes."""
    items = []
    for name, f in files:
        st = f.stat()
        items.append([name, str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ino])
    return hashlib.sha256(json.dumps([tag, items]).encode()).hexdigest()[:32]


def remembered(memo: Path | None, compute, **extra):
    """compute() once per memo file (a JSON {"value": ...} written atomically); no memo: compute()."""
    if memo is not None:
        try:
            return json.loads(memo.read_text())["value"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    value = compute()
    if memo is not None:
        try:
            from dualobj.run.files import write_json

            write_json(memo, {"value": value, **extra})
        except OSError:
            pass  # a read-only cache only costs the work again next time
    return value


def _content_hash(source: str, files: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256(source.encode())
    for name, f in files:
        h.update(name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def corpus_fingerprint(source: str, path: str | None, memo_dir: str | Path | None = None) -> str:
    """sha256 of the corpus bytes: the wiki JSON file, the file, or every file of a folder source (with its
    relative path). Content, not mtime, so a touched or copied corpus keeps its cache. With memo_dir the
    hash is remembered under the files' names, sizes and mtimes, so an unchanged corpus is read once."""
    _check_known(source, path)
    if source == "tokens":
        raise DataError("data.source=tokens is a prepared folder, used in place; it has no fingerprint")
    if source != "bin":
        check_source(source, path)
    files = _corpus_files(source, path)
    memo = (None if memo_dir is None
            else Path(memo_dir).expanduser() / "fingerprints" / f"{file_stamp(source, files)}.json")
    return remembered(memo, lambda: _content_hash(source, files), files=[str(f) for _, f in files])
