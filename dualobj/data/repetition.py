"""The nested unique subset of the training stream, repeated and re-packed every epoch.

Everything is a pure function of (tokens, unique_tokens, seq_len, seed, sequence index), which is
what makes a resumed run see exactly the sequences an uninterrupted one would.

Nothing of the size of the corpus is built: an epoch is a permutation of the documents and the
cumulative lengths of the re-packed stream (O(documents)) plus a permutation of its windows
(O(windows)); a window's pieces of documents are found by binary search in the cumulative lengths and
read from the token file (pread, no pages mapped), so drawing a batch reads only that batch's tokens.
"""

from __future__ import annotations

import contextlib
import mmap
import os

import numpy as np

from dualobj.errors import DataError


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([k % 2**64 for k in key])  # SeedSequence needs non-negative ints


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 else np.int64


class _Epoch:
    """One epoch's layout: the document order, where each re-packed document ends, the window order."""

    def __init__(self, doc_lens: np.ndarray, windows: int, seed: int, e: int):
        n = len(doc_lens)
        self.order = _rng(seed, e).permutation(n).astype(_index_dtype(n))
        self.ends = np.cumsum(doc_lens[self.order], dtype=np.int64)  # end of each re-packed document
        self.windows = _rng(seed, e, 1).permutation(windows).astype(_index_dtype(windows))

    def segments(self, first: np.ndarray, span: int, doc_starts: np.ndarray,
                 doc_lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start in the token array, length) of the document pieces that make up the windows [first,
        first + span) of this epoch's stream, window after window: two binary searches per window."""
        k0 = np.searchsorted(self.ends, first, side="right")  # re-packed document of each window's start
        n_seg = np.searchsorted(self.ends, first + span - 1, side="right") - k0 + 1
        before = np.repeat(np.cumsum(n_seg) - n_seg, n_seg)
        k = np.repeat(k0, n_seg) + np.arange(int(n_seg.sum())) - before
        begin = np.repeat(first, n_seg)
        doc, end = self.order[k], self.ends[k]
        lo = np.maximum(end - doc_lens[doc], begin)  # the piece of document k inside its window
        hi = np.minimum(end, begin + span)
        return lo - (end - doc_lens[doc]) + doc_starts[doc], hi - lo


class _FileTokens:
    """Token ids read with pread from the file behind a memory map: a read maps no pages, so the windows a
    long run draws do not pile up in its RSS (the kernel's page cache still keeps the hot parts)."""

    def __init__(self, mm: np.memmap, offset: int):
        self.dtype, self.offset = mm.dtype, offset
        self.fd = os.open(mm.filename, os.O_RDONLY)

    @staticmethod
    def file_offset(a) -> int | None:
        """Where a 1-D contiguous view of a memory map starts in its file (None: not such a view)."""
        mp = getattr(a, "_mmap", None)
        if not isinstance(a, np.memmap) or mp is None or not a.filename or a.ndim != 1 or not a.flags.c_contiguous:
            return None
        base = np.frombuffer(mp, dtype=np.uint8).ctypes.data
        return a.offset - a.offset % mmap.ALLOCATIONGRANULARITY + (a.ctypes.data - base)

    def __del__(self):
        with contextlib.suppress(AttributeError, OSError):
            os.close(self.fd)

    def read(self, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The pieces [start, start + length) end to end, one pread each."""
        item = self.dtype.itemsize
        data = b"".join(os.pread(self.fd, n * item, self.offset + a * item)
                        for a, n in zip(starts.tolist(), lengths.tolist(), strict=True))
        if len(data) != int(lengths.sum()) * item:
            raise DataError("the token file shrank while training read it; prepare the corpus again")
        return np.frombuffer(data, dtype=self.dtype)


def _read_pieces(tokens, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The pieces [start, start + length) of an indexable token array end to end, in one indexing."""
    if isinstance(tokens, _FileTokens):
        return tokens.read(starts, lengths)
    offsets = np.cumsum(lengths) - lengths
    return np.asarray(tokens[np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))])


class RepeatedStream:
    """Windows of seq_len + 1 tokens over the first unique_tokens train tokens, repeated.

    The unique data is the prefix of the fixed-order train stream (whole docs, the last one cut),
    so a larger R gives a prefix of a smaller R's data. Each epoch shuffles the docs, cuts the
    stream into windows with stride seq_len and shuffles the windows.
    """

    def __init__(self, tokens, starts: np.ndarray, unique_tokens: int, seq_len: int, seed: int,
                 *, repetitions: float | None = None):
        u, n_train = int(unique_tokens), len(tokens)
        r = f"data.repetitions={repetitions:g} leaves D/R = {u}" if repetitions else f"{u}"
        if u > n_train:
            raise DataError(f"{r} unique tokens but the training split has only {n_train}; "
                            "raise data.repetitions or lower train.tokens")
        if u < seq_len + 1:
            raise DataError(f"{r} unique tokens, under one sequence of seq_len+1 = {seq_len + 1}; "
                            "lower data.repetitions or raise train.tokens")
        self.tokens, self.seq_len, self.seed = tokens, int(seq_len), int(seed)
        at = _FileTokens.file_offset(tokens)
        self._read = tokens if at is None else _FileTokens(tokens, at)
        self.unique_tokens = u
        n_docs = int(np.searchsorted(starts, u, side="left"))  # docs that start inside the prefix
        self.doc_starts = np.asarray(starts[:n_docs], dtype=np.int64)
        self.doc_lens = np.diff(self.doc_starts, append=u).astype(_index_dtype(u))
        self.windows_per_epoch = (u - 1) // self.seq_len
        self.tokens_per_epoch = self.windows_per_epoch * self.seq_len
        self._epochs: dict[int, _Epoch] = {}

    def epoch_of(self, s: int) -> int:
        return int(s) // self.windows_per_epoch

    def unique_data(self) -> np.ndarray:
        """The unique tokens in the fixed doc order (what every epoch re-shuffles); reads them all."""
        return np.asarray(self.tokens[: self.unique_tokens])

    def _epoch(self, e: int) -> _Epoch:
        """An epoch's layout; the last two are kept (a batch may span an epoch's end)."""
        if e not in self._epochs:
            if len(self._epochs) >= 2:
                self._epochs.pop(min(self._epochs))
            self._epochs[e] = _Epoch(self.doc_lens, self.windows_per_epoch, self.seed, e)
        return self._epochs[e]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Windows [n, seq_len + 1] (int64) for global sequence indices (may span epochs)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and idx.min() < 0:
            raise ValueError("sequence indices must be >= 0")
        out = np.empty((idx.size, self.seq_len + 1), dtype=np.int64)
        epochs = idx // self.windows_per_epoch
        for e in np.unique(epochs):
            sel = epochs == e
            ep = self._epoch(int(e))
            first = ep.windows[idx[sel] % self.windows_per_epoch].astype(np.int64) * self.seq_len
            pieces = ep.segments(first, self.seq_len + 1, self.doc_starts, self.doc_lens)
            out[sel] = _read_pieces(self._read, *pieces).reshape(len(first), self.seq_len + 1)
        return out


def val_windows(val: np.ndarray, seq_len: int, n: int) -> np.ndarray:
    """The first min(n, available) windows of the val stream in its fixed order, int64."""
    m = min(int(n), (len(val) - 1) // seq_len)
    if m < 1:
        raise DataError(f"the validation split has {len(val)} tokens, under one window of seq_len+1 = "
                        f"{seq_len + 1}; raise data.val_fraction or use a larger corpus")
    return np.asarray(val[np.arange(m)[:, None] * seq_len + np.arange(seq_len + 1)], dtype=np.int64)
