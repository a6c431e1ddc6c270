"""The prepared-corpus format on disk, and opening a prepared folder with every check it needs.

A prepared folder (a cache entry, or one written by ``dualobj data prepare --out DIR``) holds

    train.bin, val.bin   flat token ids (uint16, or uint32 for vocabularies over 65,536), every document
                         <s> + its tokens, documents in the fixed order
    train.idx, val.idx   int64 little-endian document offsets into the .bin, one per document plus the count
    tokenizer.json       the tokenizer that made the ids
    meta.json            format, dtype, counts, special ids, tokenizer sha256, the inputs it was made from

meta.json is written last: a folder without it is unfinished. Token files are memory-mapped, offsets read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from dualobj.data.tokenizer import vocab_size_of
from dualobj.errors import DataError

FORMAT_VERSION = 2
SPLITS = ("train", "val")
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
COUNT_KEYS = ("train_docs", "val_docs", "train_tokens", "val_tokens", "vocab_size", "bos_id", "mask_id")


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


def dtype_for(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def tokens_path(folder: Path, split: str) -> Path:
    return folder / f"{split}.bin"


def index_path(folder: Path, split: str) -> Path:
    return folder / f"{split}.idx"


Bad = Callable[[str], DataError]


def read_meta(folder: Path, bad: Bad) -> dict:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise bad("no meta.json: the preparation did not finish") from None
    except (OSError, ValueError) as e:
        raise bad(f"meta.json is unreadable: {' '.join(str(e).split())[:160]}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise bad(f"meta.json has format {got}, this version reads format {FORMAT_VERSION}")
    missing = [k for k in (*COUNT_KEYS, "dtype", "special_ids") if k not in meta]
    if missing or not all(isinstance(meta[k], int) and meta[k] >= 0 for k in COUNT_KEYS):
        raise bad(f"meta.json lacks or garbles {', '.join(missing) or 'a count'}")
    if meta["dtype"] not in DTYPES:
        raise bad(f"meta.json names dtype {meta['dtype']!r}, not one of {', '.join(DTYPES)}")
    return meta


def _open_split(folder: Path, split: str, meta: dict, bad: Bad) -> tuple[np.ndarray, np.ndarray]:
    """(token memmap, offsets) of a split, with the sizes and offsets checked against meta.json."""
    dtype = np.dtype(DTYPES[meta["dtype"]])
    n_tok, n_docs = meta[f"{split}_tokens"], meta[f"{split}_docs"]
    tok_file, idx_file = tokens_path(folder, split), index_path(folder, split)
    for f, want in ((tok_file, n_tok * dtype.itemsize), (idx_file, (n_docs + 1) * 8)):
        have = f.stat().st_size if f.is_file() else None
        if have != want:
            what = "missing" if have is None else f"{have:,} bytes"
            raise bad(f"{f.name} is {what}, meta.json implies {want:,} bytes (truncated or replaced)")
    starts = np.fromfile(idx_file, dtype="<i8")
    if n_docs < 1 or starts[0] != 0 or starts[-1] != n_tok:
        raise bad(f"{idx_file.name}: document offsets end at {starts[-1]:,}, not at the token count {n_tok:,}")
    if (starts[1:] <= starts[:-1]).any():
        raise bad(f"{idx_file.name}: document offsets are not increasing")
    tokens = np.memmap(tok_file, dtype=dtype, mode="r") if n_tok else np.zeros(0, dtype)
    return tokens, starts


def open_tokenizer(folder: Path, meta: dict, bad: Bad) -> Tokenizer:
    try:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:
        raise bad(f"tokenizer.json is missing or unreadable: {' '.join(str(e).split())[:120]}") from None
    vocab = vocab_size_of(tok)
    if vocab != meta["vocab_size"]:
        raise bad(f"tokenizer.json has {vocab:,} tokens, meta.json says {meta['vocab_size']:,}")
    if vocab > np.iinfo(DTYPES[meta["dtype"]]).max + 1:
        raise bad(f"ids are stored as {meta['dtype']}, too small for the tokenizer's {vocab:,} tokens; "
                  "a vocabulary over 65,536 needs uint32")
    return tok


def check_ids(max_id: int, vocab: int, where: str, bad: Bad) -> None:
    if max_id >= vocab:
        raise bad(f"token id {max_id:,} in {where} is outside the tokenizer's vocabulary of {vocab:,}")


def open_prepared(folder: Path, bad: Bad, key: str = "") -> TokenizedCorpus:
    """Open a finished prepared folder; every size, offset and id bound is checked against meta.json."""
    meta = read_meta(folder, bad)
    if key and meta.get("key") != key:
        raise bad(f"meta.json key {meta.get('key')} != {key}")
    open_tokenizer(folder, meta, bad)
    check_ids(int(meta.get("max_id", 0)), meta["vocab_size"], "meta.json's max_id", bad)
    (train, train_starts), (val, val_starts) = (_open_split(folder, s, meta, bad) for s in SPLITS)
    return TokenizedCorpus(
        train=train, train_starts=train_starts, val=val, val_starts=val_starts,
        tokenizer_path=str(folder / "tokenizer.json"), bos_id=meta["bos_id"], mask_id=meta["mask_id"],
        special_ids=list(meta["special_ids"]), vocab_size=meta["vocab_size"], key=str(meta.get("key", "")),
        bytes_per_token_val=float(meta.get("bytes_per_token_val", 0.0)), cache_path=str(folder),
    )
