"""The nested unique subset of the training stream, repeated and re-packed every epoch.

Everything is a pure function of (tokens, unique_tokens, seq_len, seed, sequence index), which is
what makes a resumed run see exactly the sequences an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np

from dualobj.errors import DataError


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([k % 2**64 for k in key])  # SeedSequence needs non-negative ints


class RepeatedStream:
    """Windows of seq_len + 1 tokens over the first unique_tokens train tokens, repeated.

    The unique data is the prefix of the fixed-order train stream (whole docs, the last one cut),
    so a larger R gives a prefix of a smaller R's data. Each epoch shuffles the docs, cuts the
    stream into windows with stride seq_len and shuffles the windows.
    """

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, unique_tokens: int, seq_len: int, seed: int,
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
        self.unique_tokens = u
        n_docs = int(np.searchsorted(starts, u, side="left"))  # docs that start inside the prefix
        self.doc_starts = np.asarray(starts[:n_docs], dtype=np.int64)
        self.doc_lens = np.diff(np.append(self.doc_starts, u))
        self.windows_per_epoch = (u - 1) // self.seq_len
        self.tokens_per_epoch = self.windows_per_epoch * self.seq_len
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def epoch_of(self, s: int) -> int:
        return int(s) // self.windows_per_epoch

    def unique_data(self) -> np.ndarray:
        """The unique tokens in the fixed doc order (what every epoch re-shuffles)."""
        return np.asarray(self.tokens[: self.unique_tokens])

    def _epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(stream of this epoch's shuffled docs, window permutation); the last two epochs are kept."""
        if e not in self._epochs:
            order = _rng(self.seed, e).permutation(len(self.doc_starts))
            lens = self.doc_lens[order]
            new_starts = np.cumsum(lens) - lens
            # Token j of the new stream comes from old offset j + (old start - new start) of its doc.
            src = np.arange(self.unique_tokens) + np.repeat(self.doc_starts[order] - new_starts, lens)
            stream = np.asarray(self.tokens[src])
            if len(self._epochs) >= 2:
                self._epochs.pop(min(self._epochs))
            self._epochs[e] = (stream, _rng(self.seed, e, 1).permutation(self.windows_per_epoch))
        return self._epochs[e]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Windows [n, seq_len + 1] (int64) for global sequence indices (may span epochs)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and idx.min() < 0:
            raise ValueError("sequence indices must be >= 0")
        out = np.empty((idx.size, self.seq_len + 1), dtype=np.int64)
        epochs = idx // self.windows_per_epoch
        offsets = np.arange(self.seq_len + 1)
        for e in np.unique(epochs):
            sel = epochs == e
            stream, perm = self._epoch(int(e))
            first = perm[idx[sel] % self.windows_per_epoch] * self.seq_len
            out[sel] = stream[first[:, None] + offsets]
        return out


def val_windows(val: np.ndarray, seq_len: int, n: int) -> np.ndarray:
    """The first min(n, available) windows of the val stream in its fixed order, int64."""
    m = min(int(n), (len(val) - 1) // seq_len)
    if m < 1:
        raise DataError(f"the validation split has {len(val)} tokens, under one window of seq_len+1 = "
                        f"{seq_len + 1}; raise data.val_fraction or use a larger corpus")
    return np.asarray(val[np.arange(m)[:, None] * seq_len + np.arange(seq_len + 1)], dtype=np.int64)
