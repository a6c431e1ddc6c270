"""Out-of-core preparation of a corpus into a prepared folder (format: ``layout.py``).

Three phases, each with memory bounded whatever the corpus size:

1. **sample** (only when a BPE is trained here): one pass over the documents keeps the BPE's training
   sample, at most ``data.tokenizer_sample_bytes`` of text (``BpeSample``); the BPE learns from it.
2. **tokenize**: documents stream through ``encode_batch`` (every core) a batch at a time into
   ``docs.bin`` (ids, source order) and ``docs.tab`` (per document: start, length, split hash, UTF-8
   bytes), while a reader thread reads and hashes the next batch; ``progress.json`` is rewritten after
   every flushed batch, and a killed preparation resumes from there. An already-tokenized flat file
   (``data.source=bin``) is scanned for its separators instead, and never copied.
3. **order**: the fixed document order and the train/val split are decided from ``docs.tab`` alone
   (O(documents) memory), then ``train.bin``/``val.bin`` and their offsets are written by gathering the
   documents (pread) a million tokens at a time. ``meta.json`` comes last.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from dualobj.config import DataConfig
from dualobj.data.corpus import empty_corpus, fixed_order, unit_hash, val_mask
from dualobj.data.layout import FORMAT_VERSION, SPLITS, dtype_for, index_path, tokens_path
from dualobj.data.progress import PrepareUI
from dualobj.data.sources import batches, stream_documents
from dualobj.data.tokenizer import (
    BpeSample,
    TokenizerInfo,
    load_id_tokenizer,
    load_tokenizer,
    tokenizer_info,
    train_bpe,
)
from dualobj.errors import DataError, RunDirError
from dualobj.faults import maybe_die
from dualobj.run.files import read_json, sha256_file, write_json

TABLE = np.dtype([("start", "<i8"), ("n", "<i8"), ("h", "<f8"), ("bytes", "<i8")])
WORK_FILES = ("docs.bin", "docs.tab", "progress.json")
BATCH_CHARS = 2 << 20  # text per encode_batch call: bounds the memory of the Encoding objects
BATCH_DOCS = 16384
GATHER_TOKENS = 1 << 20  # tokens gathered into the ordered files at a time
BPB_SAMPLE_TOKENS = 4 << 20  # val tokens decoded to measure bytes per token of an id-only corpus


@dataclass
class Job:
    """One preparation: what to read, where to write, what the result depends on."""

    data: DataConfig
    vocab_size: int
    folder: Path
    key: str
    inputs: dict
    ui: PrepareUI
    state: dict = field(default_factory=dict)  # progress.json
    id_limit: int = 0  # ids an already-tokenized file may hold (its tokenizer's size)

    def path(self, name: str) -> Path:
        return self.folder / name

    def save_state(self) -> None:
        write_json(self.path("progress.json"), self.state)


# --------------------------------------------------------------------------- resume


def _describe(spec: dict) -> str:
    if "file_sha256" in spec:
        return f"data.tokenizer with sha256 {str(spec['file_sha256'])[:12]}"
    return f"a BPE of {spec.get('bpe_vocab_size')} tokens from at most {spec.get('sample_bytes') or 0:,} bytes of text"


def resume_state(job: Job) -> dict | None:
    """progress.json of a half-finished preparation of the same inputs, or None to start afresh."""
    p = job.path("progress.json")
    if not p.is_file():
        return None
    try:
        state = read_json(p)
    except (OSError, RunDirError):
        return None  # unreadable: start afresh
    spec, mine = state.get("tokenizer"), job.inputs["tokenizer"]
    tok_file = job.path("tokenizer.json")
    if spec != mine or not tok_file.is_file() or sha256_file(tok_file) != state.get("tokenizer_sha256"):
        theirs = _describe(spec) if isinstance(spec, dict) else "an unknown tokenizer"
        raise DataError(f"{job.folder} holds a half-finished preparation made with another tokenizer ({theirs}, "
                        f"not {_describe(mine)}); delete {job.folder} or prepare into another folder")
    if state.get("key") != job.key:
        raise DataError(f"{job.folder} holds a half-finished preparation of other inputs (corpus, order or split); "
                        f"delete {job.folder} or prepare into another folder")
    return state


# --------------------------------------------------------------------------- tokenizer


def _sample(job: Job) -> list[str]:
    d = job.data
    docs, counter = stream_documents(d.source, d.path, d.text_field)
    sample = BpeSample(d.tokenizer_sample_bytes, d.val_fraction)
    job.ui.phase("sampling text for the tokenizer", counter.total)
    n = 0
    for n, doc in enumerate(docs, start=1):
        raw = doc.encode("utf-8")
        sample.offer(n, doc, raw, unit_hash(raw))
        if n % 4096 == 0:
            job.ui.update(counter.done, n, 0)
    job.ui.end_phase()
    if n == 0:
        raise empty_corpus(d.source, d.path)
    kept = sample.documents()
    job.ui.log(f"BPE sample: {len(kept):,} documents, {sum(map(len, kept)):,} characters"
               + (" (capped by data.tokenizer_sample_bytes)" if sample.truncated else " (the whole training split)"))
    return kept


def _load_or_make_tokenizer(job: Job, saved: Path | None) -> tuple[Tokenizer, TokenizerInfo]:
    d = job.data
    if d.source == "bin":  # always the given file: its sha256 is part of the inputs, and it bounds the ids
        tok, info, job.id_limit = load_id_tokenizer(d.tokenizer, job.vocab_size, d.separator_id)
        return tok, info
    if saved is not None or d.tokenizer:
        tok = load_tokenizer(str(saved or d.tokenizer), job.vocab_size)
    else:
        tok = train_bpe(_sample(job), job.vocab_size)
        job.ui.log(f"trained a byte-level BPE of {tok.get_vocab_size():,} tokens")
    return tok, tokenizer_info(tok)


def tokenizer_for(job: Job) -> tuple[Tokenizer, TokenizerInfo]:
    """The tokenizer: the saved one when resuming, else loaded or trained now and saved with progress.json."""
    if job.state:
        return _load_or_make_tokenizer(job, job.path("tokenizer.json"))
    tok, info = _load_or_make_tokenizer(job, None)
    tok.save(str(job.path("tokenizer.json")))
    job.state = {"key": job.key, "tokenizer": job.inputs["tokenizer"], "format": FORMAT_VERSION,
                 "tokenizer_sha256": sha256_file(job.path("tokenizer.json")),
                 "docs": 0, "tokens": 0, "max_id": 0, "tokenized": False}
    job.save_state()
    return tok, info


# --------------------------------------------------------------------------- tokenize


def _described(batches_: Iterator[list[str]]) -> Iterator[tuple[list[str], np.ndarray]]:
    """Each batch with its docs.tab rows begun: split hash and UTF-8 bytes of every document."""
    for batch in batches_:
        rows = np.empty(len(batch), dtype=TABLE)
        raws = [doc.encode("utf-8") for doc in batch]
        rows["h"] = [unit_hash(r) for r in raws]
        rows["bytes"] = [len(r) for r in raws]
        yield batch, rows


def _ahead(items: Iterator, depth: int = 2) -> Iterator:
    """items made by a background thread up to `depth` ahead: reading and hashing the next batch overlaps
    encode_batch, which releases the GIL. The thread's exceptions come out here, in order; the thread
    stops when the consumer does."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.5)
                return True
            except queue.Full:
                pass
        return False

    def run() -> None:
        try:
            for x in items:
                if not put((x, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer as is
            put((None, e))
            return
        put((end, None))

    threading.Thread(target=run, daemon=True, name="prepare-reader").start()
    try:
        while True:
            x, err = q.get()
            if err is not None:
                raise err
            if x is end:
                return
            yield x
    finally:
        stop.set()


def _encode(tok: Tokenizer, batch: list[str], dtype: type, start: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids of the batch's documents end to end, the document lengths)."""
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # skips offsets when available
    ids = [e.ids for e in encode(batch, add_special_tokens=False)]
    n = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    return np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(n.sum())), n


def _open_work(job: Job, itemsize: int):
    """docs.bin and docs.tab opened for appending, cut back to what progress.json says was flushed."""
    files = []
    for name, size in (("docs.bin", job.state["tokens"] * itemsize), ("docs.tab", job.state["docs"] * TABLE.itemsize)):
        f = open(job.path(name), "ab+")  # noqa: SIM115 - closed by the caller
        f.truncate(size)
        f.seek(size)
        files.append(f)
    return files


def _flush(job: Job, files, flat: np.ndarray, rows: np.ndarray) -> None:
    for f, arr in zip(files, (flat, rows), strict=True):
        f.write(arr.tobytes())
        f.flush()
        os.fsync(f.fileno())
    s = job.state
    s["docs"] += len(rows)
    s["tokens"] += len(flat)
    s["max_id"] = max(s["max_id"], int(flat.max()) if len(flat) else 0)
    job.save_state()  # only now is the batch part of the preparation


def tokenize(job: Job, tok: Tokenizer, info: TokenizerInfo) -> None:
    """Phase 2 for text sources; resumes after the last batch progress.json counts."""
    d, s = job.data, job.state
    tok.encode_special_tokens = True  # a literal "<s>" in a document is text, not a document boundary
    dtype = dtype_for(info.vocab_size)
    docs, counter = stream_documents(d.source, d.path, d.text_field)
    todo = itertools.islice(docs, s["docs"], None)  # documents already written are read again, not encoded
    job.ui.phase("tokenizing" + (f" (resuming after {s['docs']:,} documents)" if s["docs"] else ""),
                 counter.total, tokens=s["tokens"])
    files = _open_work(job, np.dtype(dtype).itemsize)
    try:
        for i, (batch, rows) in enumerate(_ahead(_described(batches(todo, BATCH_CHARS, BATCH_DOCS))), start=1):
            flat, rows["n"] = _encode(tok, batch, dtype, s["tokens"])
            rows["start"] = s["tokens"] + np.cumsum(rows["n"]) - rows["n"]
            _flush(job, files, flat, rows)
            job.ui.update(counter.done, s["docs"], s["tokens"])
            maybe_die("prepare_batch", i)
    finally:
        for f in files:
            f.close()
    job.ui.end_phase()
    s["tokenized"] = True
    job.save_state()


# --------------------------------------------------------------------------- already-tokenized flat files


def _bin_tokens(path: Path) -> int:
    if not path.is_file():
        raise DataError(f"data.path={path} is not a file; point data.path at a flat uint16 token file")
    size = path.stat().st_size
    if size % 2 or size == 0:
        raise DataError(f"data.path={path} has {size:,} bytes, not a whole number of uint16 token ids "
                        "(truncated?); give a complete flat uint16 file")
    return size // 2


def _doc_hash(h) -> float:
    return int.from_bytes(h.digest(), "big") / 2.0**64


def _scan_chunk(chunk: np.ndarray, a: int, sep: int, cur: dict, rows: list) -> None:
    """Documents ended inside one chunk of the flat file; cur carries the one still open."""
    raw = chunk.tobytes()
    prev = 0
    for p in np.flatnonzero(chunk == sep).tolist():
        cur["h"].update(raw[2 * prev:2 * p])
        if a + p > cur["start"]:
            rows.append((cur["start"], a + p - cur["start"], _doc_hash(cur["h"]), 0))
        cur["start"], cur["h"], prev = a + p + 1, hashlib.blake2b(digest_size=8), p + 1
    cur["h"].update(raw[2 * prev:])


def scan_bin(job: Job, info: TokenizerInfo) -> None:
    """Phase 2 for a flat uint16 file whose documents are separated by data.separator_id: the document
    table only (the file itself is read where it is), with every id checked against the tokenizer."""
    path = Path(job.data.path or "").expanduser()
    n_tokens, sep, limit = _bin_tokens(path), job.data.separator_id, job.id_limit
    job.ui.phase("scanning the token file", n_tokens * 2)
    cur, total = {"start": 0, "h": hashlib.blake2b(digest_size=8)}, 0
    with open(path, "rb") as f, open(job.path("docs.tab"), "wb") as tab:
        for a in range(0, n_tokens, GATHER_TOKENS):
            chunk = np.fromfile(f, dtype="<u2", count=GATHER_TOKENS)
            bad = np.flatnonzero(chunk >= limit)
            if bad.size:
                raise DataError(f"{path}: token id {int(chunk[bad[0]]):,} at position {a + int(bad[0]):,} is outside "
                                f"the vocabulary of data.tokenizer ({limit:,} tokens); "
                                "give the tokenizer that made the file")
            rows: list = []
            _scan_chunk(chunk, a, sep, cur, rows)
            if a + len(chunk) == n_tokens and n_tokens > cur["start"]:
                rows.append((cur["start"], n_tokens - cur["start"], _doc_hash(cur["h"]), 0))
            tab.write(np.array(rows, dtype=TABLE).tobytes())
            total += len(rows)
            job.ui.update(2 * (a + len(chunk)), total, a + len(chunk))
    job.ui.end_phase()
    job.state.update(docs=total, tokens=n_tokens, max_id=limit - 1, tokenized=True)
    job.save_state()


# --------------------------------------------------------------------------- order, split, gather


def _table_column(job: Job, name: str, dtype: type) -> np.ndarray:
    """One column of docs.tab, read a block at a time (the table itself is never all in memory)."""
    n = job.state["docs"]
    out = np.empty(n, dtype=dtype)
    block = 1 << 20
    with open(job.path("docs.tab"), "rb") as f:
        for a in range(0, n, block):
            out[a:a + block] = np.fromfile(f, dtype=TABLE, count=min(block, n - a))[name]
    return out


def _gather(fd: int, src_dtype, starts: np.ndarray, lens: np.ndarray, bos: int, out_dtype, f) -> None:
    """Write <s> + tokens of the given documents (offsets into the open file fd) to f, end to end.

    Read with pread, document by document: a memory map would fault in the pages around each (randomly
    placed) document too, and count them all in the RSS."""
    item = np.dtype(src_dtype).itemsize
    head = np.array([bos], dtype=out_dtype)
    parts: list[np.ndarray] = []
    held = 0
    for s, n in zip(starts.tolist(), lens.tolist(), strict=True):
        parts.append(head)
        for a in range(s, s + n, GATHER_TOKENS):  # a long document in slices
            want = (min(a + GATHER_TOKENS, s + n) - a) * item
            raw = os.pread(fd, want, a * item)
            if len(raw) != want:
                raise DataError(f"the corpus file shrank while it was being prepared (token {a:,}); "
                                "prepare it again once nothing writes to it")
            parts.append(np.frombuffer(raw, dtype=src_dtype).astype(out_dtype, copy=False))
            held += want // item
            if held >= GATHER_TOKENS:
                np.concatenate(parts).tofile(f)
                parts, held = [], 0
    if parts:
        np.concatenate(parts).tofile(f)


def _chunks(offsets: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) ranges of documents of at most GATHER_TOKENS output tokens each, a longer document alone."""
    out, a, n = [], 0, len(offsets) - 1
    while a < n:
        b = max(int(np.searchsorted(offsets, offsets[a] + GATHER_TOKENS, "right")) - 1, a + 1)
        out.append((a, b))
        a = b
    return out


def write_split(job: Job, split: str, ids: np.ndarray, starts: np.ndarray, lens: np.ndarray,
                src: tuple[Path, type], info: TokenizerInfo, done: int = 0, done_docs: int = 0) -> int:
    """train.bin/val.bin and .idx for the documents ids (source indices, in the fixed order)."""
    out_dtype = dtype_for(info.vocab_size)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)  # <s> + tokens of each document
    np.cumsum(lens[ids] + 1, dtype=np.int64, out=offsets[1:])
    offsets.astype("<i8").tofile(index_path(job.folder, split))
    fd = os.open(src[0], os.O_RDONLY)
    try:
        with open(tokens_path(job.folder, split), "wb") as f:
            for a, b in _chunks(offsets):
                chunk = ids[a:b]
                _gather(fd, src[1], starts[chunk], lens[chunk], info.bos_id, out_dtype, f)
                job.ui.update(done + int(offsets[b]), done_docs + b, done + int(offsets[b]))
    finally:
        os.close(fd)
    return int(offsets[-1])


def _val_bytes(job: Job, tok: Tokenizer, info: TokenizerInfo, is_val: np.ndarray) -> tuple[int, int]:
    """(UTF-8 bytes, tokens without <s>) of the val documents, for bits per byte: counted while tokenizing,
    or for an id-only corpus decoded from its first val documents (about BPB_SAMPLE_TOKENS tokens)."""
    if job.data.source != "bin":
        return int(_table_column(job, "bytes", np.int64)[is_val].sum()), -1
    offsets = np.fromfile(index_path(job.folder, "val"), dtype="<i8")
    k = max(1, int(np.searchsorted(offsets, BPB_SAMPLE_TOKENS, "right")) - 1)
    mm = np.memmap(tokens_path(job.folder, "val"), dtype=dtype_for(info.vocab_size), mode="r")
    ids = [mm[offsets[i] + 1:offsets[i + 1]].tolist() for i in range(k)]
    texts = tok.decode_batch(ids)
    return sum(len(t.encode("utf-8")) for t in texts), sum(map(len, ids))


def order(job: Job, tok: Tokenizer, info: TokenizerInfo) -> dict:
    """Phase 3: the fixed order and the split, the ordered files; returns meta.json's content."""
    d, st = job.data, job.state
    if st["docs"] == 0:
        raise empty_corpus(d.source, d.path)
    is_val = val_mask(_table_column(job, "h", np.float64), d.val_fraction)
    val_bytes, _ = _val_bytes(job, tok, info, is_val) if d.source != "bin" else (0, 0)
    starts, lens = _table_column(job, "start", np.int64), _table_column(job, "n", np.int32)
    perm = fixed_order(st["docs"], d.order_seed).astype(np.int32 if st["docs"] < 2**31 else np.int64)
    src = ((Path(d.path or "").expanduser(), np.dtype("<u2")) if d.source == "bin"
           else (job.path("docs.bin"), np.dtype(dtype_for(info.vocab_size))))
    job.ui.phase("ordering and splitting", st["tokens"] + st["docs"])
    counts: dict[str, int] = {}
    for split, mask in (("train", ~is_val), ("val", is_val)):
        ids = perm[mask[perm]]
        done = sum(counts.get(f"{x}_tokens", 0) for x in SPLITS)
        counts[f"{split}_tokens"] = write_split(job, split, ids, starts, lens, src, info, done,
                                                counts.get("train_docs", 0))
        counts[f"{split}_docs"] = len(ids)
        maybe_die(f"prepare_{split}_written")
    job.ui.end_phase()
    if d.source == "bin":
        val_bytes, val_tokens = _val_bytes(job, tok, info, is_val)
    else:
        val_tokens = counts["val_tokens"] - counts["val_docs"]
    return _meta(job, info, counts, val_bytes / max(val_tokens, 1))


def _meta(job: Job, info: TokenizerInfo, counts: dict, bytes_per_token_val: float) -> dict:
    files = [job.path("tokenizer.json"), *(f(job.folder, s) for s in SPLITS for f in (tokens_path, index_path))]
    return {
        **job.inputs, "key": job.key, "format": FORMAT_VERSION, "dtype": np.dtype(dtype_for(info.vocab_size)).name,
        "vocab_size": info.vocab_size, "bos_id": info.bos_id, "mask_id": info.mask_id,
        "special_ids": info.special_ids, "tokenizer_sha256": job.state["tokenizer_sha256"],
        "max_id": int(job.state["max_id"]), **counts, "bytes_per_token_val": bytes_per_token_val,
        "files": {f.name: f.stat().st_size for f in files},
    }


def prepare_folder(job: Job) -> dict:
    """Prepare (or finish preparing) job.folder; returns its meta.json, written last."""
    job.folder.mkdir(parents=True, exist_ok=True)
    job.state = resume_state(job) or {}
    tok, info = tokenizer_for(job)
    if not job.state["tokenized"]:
        if job.data.source == "bin":
            scan_bin(job, info)
        else:
            tokenize(job, tok, info)
    meta = order(job, tok, info)
    write_json(job.path("meta.json"), meta)
    remove_work_files(job.folder)
    return meta


def remove_work_files(folder: Path) -> None:
    for name in WORK_FILES:
        (folder / name).unlink(missing_ok=True)
