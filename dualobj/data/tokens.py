"""Tokenize a corpus once and cache it as memory-mapped arrays keyed by (corpus, tokenizer).

The key never includes data.repetitions or the run seed, so a sweep over R tokenizes once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from dualobj.config import DataConfig
from dualobj.data.corpus import corpus_fingerprint, order_documents, read_documents, split_documents
from dualobj.data.tokenizer import load_tokenizer, tokenizer_info, train_bpe
from dualobj.errors import DataError
from dualobj.run.files import sha256_file

FORMAT_VERSION = 1
ARRAYS = ("train", "train_starts", "val", "val_starts")


@dataclass
class TokenizedCorpus:
    train: np.ndarray  # memmap: every train doc prefixed by <s>, in the fixed order
    train_starts: np.ndarray  # int64 doc offsets into train, plus a final len(train)
    val: np.ndarray
    val_starts: np.ndarray
    tokenizer_path: str
    bos_id: int
    mask_id: int
    special_ids: list[int]
    vocab_size: int  # actual tokenizer size (<= model.vocab_size)
    key: str
    bytes_per_token_val: float  # UTF-8 bytes of val docs / val tokens without <s>, for bits-per-byte
    cache_path: str = ""


def cache_key(data: DataConfig, vocab_size: int) -> tuple[str, dict]:
    """(short key, the inputs it hashes): corpus content, split/order settings and tokenizer spec."""
    if data.tokenizer:
        load_tokenizer(data.tokenizer, vocab_size)  # fail early on a bad file, before any hashing
        tok_spec = {"file_sha256": sha256_file(Path(data.tokenizer).expanduser())}
    else:
        tok_spec = {"bpe_vocab_size": vocab_size}
    inputs = {
        "fingerprint": corpus_fingerprint(data.source, data.path),
        "source": data.source,
        "text_field": data.text_field,
        "order_seed": data.order_seed,
        "val_fraction": data.val_fraction,
        "tokenizer": tok_spec,
        "format": FORMAT_VERSION,
    }
    blob = json.dumps(inputs, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16], inputs


def _encode(tok: Tokenizer, docs: list[str], bos_id: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """One stream of <s> + doc tokens per doc, and the doc start offsets with a final sentinel."""
    tok.encode_special_tokens = True  # a literal "<s>" in a document is text, not a document boundary
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # skips offsets when available
    ids = [e.ids for e in encode(docs, add_special_tokens=False)]
    starts = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(x) + 1 for x in ids], out=starts[1:])
    stream = np.empty(int(starts[-1]), dtype=dtype)
    for s, x in zip(starts[:-1], ids, strict=True):
        stream[s] = bos_id
        stream[s + 1 : s + 1 + len(x)] = x
    return stream, starts


def _build(data: DataConfig, vocab_size: int, tmp: Path, inputs: dict, log) -> dict:
    """Read, order, split, tokenize and write every file of a cache entry into tmp; return its meta."""
    t0 = time.perf_counter()
    docs = order_documents(read_documents(data.source, data.path, data.text_field), data.order_seed)
    train_docs, val_docs = split_documents(docs, data.val_fraction)
    log(f"read {len(docs)} documents ({len(train_docs)} train, {len(val_docs)} val) "
        f"in {time.perf_counter() - t0:.1f}s")
    if data.tokenizer:
        tok = load_tokenizer(data.tokenizer, vocab_size)
    else:
        tok = train_bpe(train_docs, vocab_size)
        log(f"trained byte-level BPE ({tok.get_vocab_size()} tokens) in {time.perf_counter() - t0:.1f}s")
    info = tokenizer_info(tok)
    tok.save(str(tmp / "tokenizer.json"))
    dtype = np.uint16 if info.vocab_size <= 1 << 16 else np.uint32
    train, train_starts = _encode(tok, train_docs, info.bos_id, dtype)
    val, val_starts = _encode(tok, val_docs, info.bos_id, dtype)
    for name, arr in zip(ARRAYS, (train, train_starts, val, val_starts), strict=True):
        np.save(tmp / f"{name}.npy", arr)
    val_bytes = sum(len(d.encode("utf-8")) for d in val_docs)
    meta = {
        **inputs,
        "dtype": np.dtype(dtype).name,
        "vocab_size": info.vocab_size,
        "bos_id": info.bos_id,
        "mask_id": info.mask_id,
        "special_ids": info.special_ids,
        "train_docs": len(train_docs),
        "val_docs": len(val_docs),
        "train_tokens": len(train),
        "val_tokens": len(val),
        "bytes_per_token_val": val_bytes / (len(val) - len(val_docs)),
        "files": {f.name: f.stat().st_size for f in sorted(tmp.iterdir())},
    }
    log(f"tokenized {len(train)} train and {len(val)} val tokens in {time.perf_counter() - t0:.1f}s")
    return meta


def _load(path: Path, key: str, vocab_size: int) -> TokenizedCorpus:
    """Open a finished cache entry, checking it against its meta.json."""
    def bad(why: str) -> DataError:
        return DataError(f"token cache {path} is damaged ({why}); delete that folder and run again")

    try:
        meta = json.loads((path / "meta.json").read_text())
        for name, size in meta["files"].items():
            actual = (path / name).stat().st_size if (path / name).is_file() else None
            if actual != size:
                raise bad(f"{name} is {actual} bytes, meta.json says {size}")
        arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in ARRAYS}
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise bad(" ".join(str(e).split())[:200]) from None
    if meta.get("key") != key or meta.get("format") != FORMAT_VERSION:
        raise bad(f"meta.json key/format {meta.get('key')}/{meta.get('format')} != {key}/{FORMAT_VERSION}")
    for n, count in [("train", meta["train_tokens"]), ("val", meta["val_tokens"]),
                     ("train_starts", meta["train_docs"] + 1), ("val_starts", meta["val_docs"] + 1)]:
        if arrays[n].shape != (count,):
            raise bad(f"{n}.npy has shape {arrays[n].shape}, expected ({count},)")
    starts = {n: np.asarray(arrays[n]) for n in ("train_starts", "val_starts")}  # small: load into memory
    if starts["train_starts"][-1] != meta["train_tokens"] or starts["val_starts"][-1] != meta["val_tokens"]:
        raise bad("doc offsets do not end at the token count")
    if meta["vocab_size"] > vocab_size:
        raise DataError(f"tokenizer has {meta['vocab_size']} tokens but model.vocab_size={vocab_size}; "
                        f"use a model with vocab_size >= {meta['vocab_size']} or another tokenizer")
    return TokenizedCorpus(
        train=arrays["train"], train_starts=starts["train_starts"], val=arrays["val"],
        val_starts=starts["val_starts"], tokenizer_path=str(path / "tokenizer.json"),
        bos_id=meta["bos_id"], mask_id=meta["mask_id"], special_ids=list(meta["special_ids"]),
        vocab_size=meta["vocab_size"], key=key, bytes_per_token_val=meta["bytes_per_token_val"],
        cache_path=str(path),
    )


def prepare_corpus(data: DataConfig, vocab_size: int, progress: bool = False) -> TokenizedCorpus:
    """The tokenized corpus for data, from the cache or built (and cached) now."""
    def log(msg: str) -> None:
        if progress:
            print(f"[data] {msg}", file=sys.stderr, flush=True)

    key, inputs = cache_key(data, vocab_size)
    root = Path(data.cache_dir).expanduser()
    final = root / key
    if final.is_dir():
        return _load(final, key, vocab_size)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
    except OSError as e:
        raise DataError(f"data.cache_dir={data.cache_dir} is not writable ({e.strerror}); "
                        "set data.cache_dir to a writable folder") from None
    try:
        meta = _build(data, vocab_size, tmp, {"key": key, **inputs}, log)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)  # atomic: readers see a whole entry or none
        except OSError as e:
            if not final.is_dir():  # not a lost race with another process: a real failure
                raise DataError(f"cannot create token cache {final} ({e.strerror}); "
                                "set data.cache_dir to a writable folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"cached in {final}")
    return _load(final, key, vocab_size)
