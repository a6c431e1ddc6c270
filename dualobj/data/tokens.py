"""The tokenized corpus of a config: from the cache (prepared once, keyed by corpus and tokenizer), from a
folder prepared elsewhere (``data.source=tokens``), or prepared now, out of core (``prepare.py``).

The key never includes data.repetitions or the run seed, so a sweep over R tokenizes once. Processes that
want the same entry at once (DDP ranks, sweep jobs) take turns on a file lock: one prepares, the others
wait and then read it. A killed preparation leaves ``<key>.partial/``, which the next attempt resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from dualobj.config import DataConfig
from dualobj.data.corpus import (
    ID_SOURCES,
    corpus_fingerprint,
    file_stamp,
    order_documents,
    read_documents,
    remembered,
    split_documents,
)
from dualobj.data.layout import (
    DTYPES,
    FORMAT_VERSION,
    SPLITS,
    TokenizedCorpus,
    check_ids,
    open_prepared,
    read_meta,
    tokens_path,
)
from dualobj.data.prepare import Job, prepare_folder, remove_work_files
from dualobj.data.progress import PrepareUI
from dualobj.data.tokenizer import load_id_tokenizer, load_tokenizer
from dualobj.errors import DataError
from dualobj.run.files import sha256_file

__all__ = ["FORMAT_VERSION", "TokenizedCorpus", "cache_key", "prepare_corpus", "prepare_to", "prepared_folder",
           "split_texts"]


def _tokenizer_spec(data: DataConfig, vocab_size: int) -> dict:
    if data.source == "bin":
        load_id_tokenizer(data.tokenizer, vocab_size, data.separator_id)  # fail early, before any hashing
    elif data.tokenizer:
        load_tokenizer(data.tokenizer, vocab_size)
    else:
        return {"bpe_vocab_size": vocab_size, "sample_bytes": data.tokenizer_sample_bytes}
    return {"file_sha256": sha256_file(Path(data.tokenizer).expanduser())}


def cache_key(data: DataConfig, vocab_size: int) -> tuple[str, dict]:
    """(short key, the inputs it hashes): corpus content, split/order settings and tokenizer spec."""
    if data.source == "tokens":
        raise DataError("data.source=tokens is used in place and has no cache key")
    inputs = {
        "fingerprint": corpus_fingerprint(data.source, data.path, data.cache_dir),
        "source": data.source,
        "text_field": data.text_field if data.source != "bin" else None,
        "separator_id": data.separator_id if data.source == "bin" else None,
        "order_seed": data.order_seed,
        "val_fraction": data.val_fraction,
        "tokenizer": _tokenizer_spec(data, vocab_size),
        "format": FORMAT_VERSION,
    }
    blob = json.dumps(inputs, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16], inputs


def _fits_model(c: TokenizedCorpus, vocab_size: int) -> TokenizedCorpus:
    if c.vocab_size > vocab_size:
        raise DataError(f"tokenizer has {c.vocab_size} tokens but model.vocab_size={vocab_size}; "
                        f"use a model with vocab_size >= {c.vocab_size} or another tokenizer")
    return c


def _load(path: Path, key: str, vocab_size: int) -> TokenizedCorpus:
    """Open a finished cache entry, checking it against its meta.json."""
    def bad(why: str) -> DataError:
        return DataError(f"token cache {path} is damaged ({why}); delete that folder and run again")

    return _fits_model(open_prepared(path, bad, key), vocab_size)


@contextlib.contextmanager
def _locked(lock: Path, ui: PrepareUI):
    """Hold an exclusive lock on a file or folder for a preparation (the kernel drops it if the process dies)."""
    fd = os.open(lock, os.O_RDONLY) if lock.is_dir() else os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            ui.log(f"waiting for another process preparing the same corpus (lock on {lock})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ui(progress: bool | None) -> PrepareUI:
    """None: a bar on a terminal and phase lines otherwise; False: silent; True: the same as None."""
    return PrepareUI(bar=None if progress is None else progress, verbose=progress is not False)


def _cache_root(data: DataConfig) -> Path:
    root = Path(data.cache_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise DataError(f"data.cache_dir={data.cache_dir} is not writable ({e.strerror}); "
                        "set data.cache_dir to a writable folder") from None
    return root


def prepare_corpus(data: DataConfig, vocab_size: int, progress: bool | None = None) -> TokenizedCorpus:
    """The tokenized corpus for data, from the cache or a prepared folder, or prepared (and cached) now."""
    if data.source == "tokens":
        return open_tokens_folder(data, vocab_size)
    key, inputs = cache_key(data, vocab_size)
    final = Path(data.cache_dir).expanduser() / key
    if final.is_dir():
        return _load(final, key, vocab_size)
    root, ui = _cache_root(data), _ui(progress)
    with ui, _locked(root / f"{key}.lock", ui):
        if not final.is_dir():  # another process may have finished it while this one waited
            work = root / f"{key}.partial"
            try:
                prepare_folder(Job(data, vocab_size, work, key, inputs, ui))
            except DataError:  # bad input: the corpus must change, and with it the key; nothing to resume
                shutil.rmtree(work, ignore_errors=True)
                raise
            try:
                os.rename(work, final)  # atomic: readers see a whole entry or none
            except OSError as e:
                if not final.is_dir():  # not a lost race with a process that ignored the lock
                    raise DataError(f"cannot create token cache {final} ({e.strerror}); "
                                    "set data.cache_dir to a writable folder") from None
                shutil.rmtree(work, ignore_errors=True)
            ui.log(f"cached in {final}")
    return _load(final, key, vocab_size)


# --------------------------------------------------------------------------- prepared folders


def _not_usable(folder: Path):
    def bad(why: str) -> DataError:
        return DataError(f"data.path={folder} is not a usable prepared corpus ({why}); "
                         f"prepare it again with `dualobj data prepare --out {folder}`")
    return bad


def _max_id(folder: Path, meta: dict) -> int:
    """The largest id in a folder's token files, read in chunks (never mapped whole)."""
    best = 0
    dtype = DTYPES[meta["dtype"]]
    for split in SPLITS:
        with open(tokens_path(folder, split), "rb") as f:
            while (chunk := np.fromfile(f, dtype=dtype, count=1 << 24)).size:
                best = max(best, int(chunk.max()))
    return best


def _check_settings(data: DataConfig, folder: Path, meta: dict, bad) -> None:
    for name in ("order_seed", "val_fraction"):
        if name in meta and meta[name] != getattr(data, name):
            raise DataError(f"data.{name}={getattr(data, name)} but {folder} was prepared with {meta[name]}; "
                            f"set data.{name}={meta[name]} (order and split are fixed when a corpus is prepared)")
    if data.tokenizer:
        given = sha256_file(Path(data.tokenizer).expanduser())
        made_with = {meta.get("tokenizer_sha256"), (meta.get("tokenizer") or {}).get("file_sha256")}
        if given not in made_with:
            raise DataError(f"data.tokenizer={data.tokenizer} is not the tokenizer {folder} was prepared with; "
                            "leave data.tokenizer empty (the folder has its own tokenizer.json)")


def open_tokens_folder(data: DataConfig, vocab_size: int) -> TokenizedCorpus:
    """A folder prepared by `dualobj data prepare --out DIR`, used in place. Its ids are checked against
    its tokenizer once (a full read, remembered in data.cache_dir under the files' sizes and mtimes)."""
    folder = Path(data.path or "").expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path={folder} is not a folder; data.source=tokens needs a folder made by "
                        "`dualobj data prepare --out DIR`")
    if not (folder / "meta.json").is_file():
        if (folder / "progress.json").is_file():
            raise DataError(f"data.path={folder} holds an unfinished preparation; finish it by running "
                            f"`dualobj data prepare --out {folder}` with the settings that started it")
        raise DataError(f"data.path={folder} holds no prepared corpus (no meta.json); give a folder made by "
                        "`dualobj data prepare --out DIR`")
    bad = _not_usable(folder)
    meta = read_meta(folder, bad)
    _check_settings(data, folder, meta, bad)
    c = open_prepared(folder, bad)
    files = [(s, tokens_path(folder, s)) for s in SPLITS]
    memo = Path(data.cache_dir).expanduser() / "verified" / f"{file_stamp('tokens', files)}.json"
    check_ids(int(remembered(memo, lambda: _max_id(folder, meta), folder=str(folder))), c.vocab_size,
              "its token files", bad)
    return _fits_model(c, vocab_size)


def _check_out(folder: Path, key: str) -> bool:
    """True when folder already holds this preparation finished; refuses folders holding something else."""
    if (folder / "meta.json").is_file():
        try:
            made = json.loads((folder / "meta.json").read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            made = None
        if made != key:
            raise DataError(f"{folder} already holds a prepared corpus of other inputs; "
                            "choose another --out folder or delete that one")
        return True
    ours = {"progress.json", "tokenizer.json", "docs.bin", "docs.tab"}
    if folder.is_dir() and not (folder / "progress.json").is_file() and set(os.listdir(folder)) - ours:
        raise DataError(f"{folder} is not empty and holds no preparation; choose a new or empty --out folder")
    return False


def prepared_folder(data: DataConfig, vocab_size: int, out: str | Path | None = None) -> Path:
    """Where the prepared corpus of data is (or will be): out, the cache entry, or data.path for tokens."""
    if data.source == "tokens":
        return Path(data.path or "").expanduser()
    if out:
        return Path(out).expanduser()
    return Path(data.cache_dir).expanduser() / cache_key(data, vocab_size)[0]


def prepare_to(out: str | Path, data: DataConfig, vocab_size: int, progress: bool | None = None) -> TokenizedCorpus:
    """Prepare data into the folder out (usable as data.source=tokens data.path=out); resumes a killed one."""
    if data.source == "tokens":
        return open_tokens_folder(data, vocab_size)
    key, inputs = cache_key(data, vocab_size)
    folder, ui = Path(out).expanduser(), _ui(progress)
    if not _check_out(folder, key):
        folder.mkdir(parents=True, exist_ok=True)
        with ui, _locked(folder, ui):
            if not (folder / "meta.json").is_file():
                prepare_folder(Job(data, vocab_size, folder, key, inputs, ui))
    remove_work_files(folder)
    return _fits_model(open_prepared(folder, _not_usable(folder), key), vocab_size)


def split_texts(data: DataConfig, vocab_size: int) -> tuple[list[str], list[str]]:
    """(train, val) documents as text, split and ordered exactly as training sees them: read and split for
    text sources, decoded from the prepared corpus for already-tokenized ones. All in memory (probes)."""
    if data.source not in ID_SOURCES:
        docs = read_documents(data.source, data.path, data.text_field)
        return split_documents(order_documents(docs, data.order_seed), data.val_fraction)
    c = prepare_corpus(data, vocab_size, progress=False)
    tok = Tokenizer.from_file(c.tokenizer_path)

    def texts(tokens: np.ndarray, starts: np.ndarray) -> list[str]:
        return [t.strip() for t in tok.decode_batch([tokens[a + 1:b].tolist() for a, b in itertools.pairwise(starts)])]

    return texts(c.train, c.train_starts), texts(c.val, c.val_starts)
