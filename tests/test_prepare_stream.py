"""The repeated stream against the reference algorithm it replaced, and its memory at scale.

``ReferenceStream`` is the earlier implementation (it materialised every epoch's whole stream), kept here
verbatim in behaviour: the current ``RepeatedStream`` must give exactly its windows, at every seed, R,
epoch and resume point, so no run's data changes.
"""

from __future__ import annotations

import numpy as np
import pytest

from dualobj.data import RepeatedStream


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([k % 2**64 for k in key])


class ReferenceStream:
    """The earlier algorithm: materialise each epoch's re-packed stream, then cut windows from it."""

    def __init__(self, tokens, starts, unique_tokens, seq_len, seed):
        self.tokens, self.seq_len, self.seed, self.u = tokens, seq_len, seed, unique_tokens
        n_docs = int(np.searchsorted(starts, unique_tokens, side="left"))
        self.doc_starts = np.asarray(starts[:n_docs], dtype=np.int64)
        self.doc_lens = np.diff(np.append(self.doc_starts, unique_tokens))
        self.windows_per_epoch = (unique_tokens - 1) // seq_len

    def epoch(self, e):
        order = _rng(self.seed, e).permutation(len(self.doc_starts))
        lens = self.doc_lens[order]
        new_starts = np.cumsum(lens) - lens
        src = np.arange(self.u) + np.repeat(self.doc_starts[order] - new_starts, lens)
        return np.asarray(self.tokens[src]), _rng(self.seed, e, 1).permutation(self.windows_per_epoch)

    def get(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((idx.size, self.seq_len + 1), dtype=np.int64)
        epochs = idx // self.windows_per_epoch
        for e in np.unique(epochs):
            sel = epochs == e
            stream, perm = self.epoch(int(e))
            first = perm[idx[sel] % self.windows_per_epoch] * self.seq_len
            out[sel] = stream[first[:, None] + np.arange(self.seq_len + 1)]
        return out


def random_corpus(n_tokens: int, n_docs: int, seed: int, vocab: int = 50_000):
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n_tokens), n_docs - 1, replace=False))
    starts = np.concatenate([[0], cuts, [n_tokens]]).astype(np.int64)
    return rng.integers(0, vocab, n_tokens).astype(np.uint16), starts


@pytest.mark.parametrize("seed", [0, 1, 12345, -3])
@pytest.mark.parametrize("r", [1, 2, 7, 32])
def test_windows_equal_the_reference_at_every_epoch(seed, r):
    tokens, starts = random_corpus(20_000, 150, seed=abs(seed) + r)
    for seq_len in (16, 33):
        u = 19_000 // r
        ref = ReferenceStream(tokens, starts, u, seq_len, seed)
        new = RepeatedStream(tokens, starts, u, seq_len, seed)
        w = ref.windows_per_epoch
        assert new.windows_per_epoch == w
        idx = np.arange(3 * w + 5)  # three whole epochs and the start of a fourth
        assert np.array_equal(new.get(idx), ref.get(idx))


def test_resume_at_arbitrary_indices_equals_the_reference():
    tokens, starts = random_corpus(30_000, 400, seed=9)
    ref = ReferenceStream(tokens, starts, 7_000, 64, seed=5)
    w = ref.windows_per_epoch
    rng = np.random.default_rng(0)
    for _ in range(20):  # a fresh stream (a resumed process) asked for a random batch anywhere
        idx = rng.integers(0, 40 * w, size=int(rng.integers(1, 50)))
        assert np.array_equal(RepeatedStream(tokens, starts, 7_000, 64, seed=5).get(idx), ref.get(idx))
    walked = RepeatedStream(tokens, starts, 7_000, 64, seed=5)
    for b in range(0, 6 * w, 13):  # the same stream walked batch by batch, across epoch ends
        idx = np.arange(b, b + 13)
        assert np.array_equal(walked.get(idx), ref.get(idx))


def test_prefix_cut_inside_a_document_and_single_document_corpora():
    tokens, starts = random_corpus(5_000, 3, seed=2)
    for u in (17, 1000, int(starts[1]), int(starts[1]) + 1, 4_999, 5_000):
        ref, new = ReferenceStream(tokens, starts, u, 16, 4), RepeatedStream(tokens, starts, u, 16, 4)
        idx = np.arange(4 * ref.windows_per_epoch)
        assert np.array_equal(new.get(idx), ref.get(idx))
    one = np.array([0, 5_000], dtype=np.int64)
    idx = np.arange(700)
    assert np.array_equal(RepeatedStream(tokens, one, 5_000, 16, 1).get(idx),
                          ReferenceStream(tokens, one, 5_000, 16, 1).get(idx))


def test_windows_are_read_without_touching_the_whole_corpus():
    """A batch reads only its own windows: the token array is never indexed in full."""

    class Counting:
        def __init__(self, a):
            self.a, self.read = a, 0

        def __len__(self):
            return len(self.a)

        def __getitem__(self, key):
            out = self.a[key]
            self.read += np.size(out)
            return out

    tokens, starts = random_corpus(200_000, 2_000, seed=3)
    counted = Counting(tokens)
    rs = RepeatedStream(counted, starts, 200_000, 32, seed=0)
    rs.get(np.arange(8))
    assert counted.read <= 8 * 33


def test_a_memory_mapped_token_file_is_read_without_mapping_and_gives_the_same_windows(tmp_path):
    tokens, starts = random_corpus(50_000, 500, seed=4)
    header = 4096 + 6  # the data need not start on a page boundary
    path = tmp_path / "tokens.bin"
    path.write_bytes(b"\0" * header + tokens.tobytes())
    mm = np.memmap(path, dtype=np.uint16, mode="r", offset=header)
    for view, base in [(mm, tokens), (mm[:30_000], tokens[:30_000]), (mm[1000:], tokens[1000:])]:
        s = (starts[starts <= len(base)] if view is not mm[1000:]
             else np.concatenate([[0], starts[starts > 1000] - 1000]))
        on_file = RepeatedStream(view, s, len(base) - 7, 64, seed=2)
        assert on_file._read is not view  # read with pread, not through the map
        idx = np.arange(3 * on_file.windows_per_epoch)
        assert np.array_equal(on_file.get(idx), RepeatedStream(base, s, len(base) - 7, 64, seed=2).get(idx))
    strided = RepeatedStream(mm[::2], np.array([0, 25_000]), 20_000, 64, seed=0)
    assert strided._read is not None and not isinstance(strided._read, type(on_file._read))
