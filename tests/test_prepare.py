"""Out-of-core preparation: streamed sources, the prepared format, resume after a kill, already-tokenized
corpora, the bounded BPE sample, and the bad input of each."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import zstandard
from tokenizers import Tokenizer, models

from dualobj.config import DataConfig
from dualobj.data import (
    BOS,
    MASK,
    order_documents,
    prepare_corpus,
    prepare_to,
    read_documents,
    sources,
    split_documents,
    stream_documents,
    train_bpe,
)
from dualobj.data import prepare as prepare_mod
from dualobj.data import tokens as tokens_mod
from dualobj.data.corpus import fixed_order, unit_hash, val_mask
from dualobj.data.tokenizer import BpeSample
from dualobj.errors import DataError

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def synthetic_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 40)))) + f" doc{i}." for i in range(n)]


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    lines = "".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)).encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(lines))
    elif path.name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(lines))
    else:
        path.write_bytes(lines)
    return path


def write_parquet(path: Path, docs: list, field: str = "text", row_group_size: int = 64) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({field: docs, "n": list(range(len(docs)))}), path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return synthetic_docs(400)


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory, docs) -> Path:
    p = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe(docs, 400).save(str(p))
    return p


def cfg(tmp_path: Path, source: str, path: Path, **kw) -> DataConfig:
    return DataConfig(source=source, path=str(path), cache_dir=str(tmp_path / "cache"), val_fraction=0.1, **kw)


def arrays(c) -> tuple:
    return tuple(np.asarray(getattr(c, n)).tolist() for n in ("train", "train_starts", "val", "val_starts"))


# --------------------------------------------------------------------------- streamed text


def test_blank_line_split_from_pieces_equals_one_split():
    rng = random.Random(0)
    alphabet = ["a", "b", " ", "\t", "\n", "\n", "\n \n", "\v", "\u2028", "é"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 8))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert list(sources.split_blank_lines(iter(pieces))) == sources._BLANK_LINES.split(text), repr(text)


def test_text_file_read_in_tiny_chunks_equals_whole_file(tmp_path, monkeypatch):
    text = "\ufeffFirst doc\r\nline two é\r\n\r\n\r\n  second  \n \t \nthird 日本語\r\n\r\nfourth\r"
    p = tmp_path / "a.txt"
    p.write_bytes(text.encode())
    whole = read_documents("text", str(p))
    assert whole == ["First doc\nline two é", "second", "third 日本語", "fourth"]
    for chunk in (1, 2, 3, 5, 7):  # CRLF pairs and multi-byte characters split between reads
        monkeypatch.setattr(sources, "_CHUNK", chunk)
        assert read_documents("text", str(p)) == whole


def test_streamed_errors_give_absolute_offsets(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_CHUNK", 4)
    (tmp_path / "nul.txt").write_bytes(b"abcdefgh\0ij")
    with pytest.raises(DataError, match="NUL byte at offset 8"):
        read_documents("text", str(tmp_path / "nul.txt"))
    (tmp_path / "l1.txt").write_bytes(b"abcdefg caf\xe9 ok")
    with pytest.raises(DataError, match="not UTF-8 \\(bad byte at offset 11\\)"):
        read_documents("text", str(tmp_path / "l1.txt"))


def test_jsonl_compressed_sharded_and_parquet_read_the_same_documents(tmp_path, docs):
    plain = write_jsonl(tmp_path / "c.jsonl", docs)
    want = read_documents("jsonl", str(plain))
    assert want == docs
    assert read_documents("jsonl", str(write_jsonl(tmp_path / "c.jsonl.gz", docs))) == want
    assert read_documents("jsonl", str(write_jsonl(tmp_path / "c.jsonl.zst", docs))) == want
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(0, 400, 150):  # shard names sort in reading order
        write_jsonl(shards / f"part-{i:04d}.jsonl.zst", docs[i:i + 150])
    assert read_documents("jsonl", str(shards)) == want
    assert read_documents("parquet", str(write_parquet(tmp_path / "c.parquet", docs))) == want
    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    write_parquet(pq_dir / "0.parquet", docs[:200])
    write_parquet(pq_dir / "1.parquet", [*docs[200:], None, "  "])  # nulls and blanks are skipped
    assert read_documents("parquet", str(pq_dir)) == want


def test_reader_progress_counts_to_the_total(tmp_path, docs):
    for path, source in [(write_jsonl(tmp_path / "c.jsonl.zst", docs), "jsonl"),
                         (write_parquet(tmp_path / "c.parquet", docs), "parquet")]:
        it, counter = stream_documents(source, str(path))
        assert counter.done == 0 and counter.total > 0
        assert len(list(it)) == len(docs) and counter.done == counter.total


def test_source_errors_are_one_line(tmp_path):
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    (tmp_path / "bad.jsonl.zst").write_bytes(b"not zstd at all")
    (tmp_path / "empty_dir").mkdir()
    p = write_parquet(tmp_path / "p.parquet", ["a", "b"])
    write_parquet(tmp_path / "ints.parquet", [1, 2], field="text")
    cases = [
        ("jsonl", tmp_path / "bad.jsonl.gz", "text", ["cannot be read", ".gz, .zst"]),
        ("jsonl", tmp_path / "bad.jsonl.zst", "text", ["cannot be read", ".gz, .zst"]),
        ("jsonl", tmp_path / "empty_dir", "text", ["holds no", "folder of shards"]),
        ("parquet", p, "body", ["no column 'body'", "'text', 'n'", "data.text_field"]),
        ("parquet", tmp_path / "ints.parquet", "text", ["holds int64, not text"]),
        ("parquet", tmp_path / "bad.jsonl.gz", "text", ["not a readable parquet file"]),
    ]
    for source, path, field, words in cases:
        with pytest.raises(DataError) as e:
            read_documents(source, str(path), field)
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


# --------------------------------------------------------------------------- the prepared corpus


def test_every_source_kind_prepares_the_same_tokens(tmp_path, docs):
    plain = prepare_corpus(cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs)), 400)
    text = tmp_path / "c.txt"
    text.write_text("\n\n".join(docs))
    for source, path in [("jsonl", write_jsonl(tmp_path / "c.jsonl.zst", docs)),
                         ("parquet", write_parquet(tmp_path / "c.parquet", docs)), ("text", text)]:
        other = prepare_corpus(cfg(tmp_path, source, path), 400)
        assert other.key != plain.key and arrays(other) == arrays(plain)


def test_prepared_layout_matches_the_in_memory_rules(tmp_path, docs):
    c = prepare_corpus(cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs)), 400)
    folder = Path(c.cache_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["meta.json", "tokenizer.json", "train.bin", "train.idx", "val.bin", "val.idx"])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["format"] == 2 and meta["train_tokens"] == len(c.train)
    assert np.array_equal(np.fromfile(folder / "train.idx", dtype="<i8"), c.train_starts)
    train_docs, val_docs = split_documents(order_documents(docs, 1234), 0.1)
    tok = Tokenizer.from_file(c.tokenizer_path)
    tok.encode_special_tokens = True
    want = [[BOS, *e.ids] for e in tok.encode_batch(train_docs, add_special_tokens=False)]
    assert c.train.tolist() == [t for d in want for t in d]
    assert c.val_starts[-1] == len(c.val) and len(c.val_starts) == len(val_docs) + 1
    assert c.bytes_per_token_val == pytest.approx(
        sum(len(d.encode()) for d in val_docs) / (len(c.val) - len(val_docs)))


def test_large_vocabularies_are_stored_as_uint32(tmp_path, docs):
    words = sorted({w for d in docs for w in d.split()})
    vocab = {"<unk>": 0, "<s>": 1, "<mask>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    vocab["zzz-last"] = 70_000  # ids above 65,535
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    from tokenizers import pre_tokenizers

    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "big.json"))
    c = prepare_corpus(cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs),
                           tokenizer=str(tmp_path / "big.json")), 70_001)
    assert c.train.dtype == np.uint32 and c.vocab_size == 70_001 and c.bos_id == 1 and c.mask_id == 2
    out = tmp_path / "copy"
    shutil.copytree(c.cache_path, out)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "dtype": "uint16"}))
    with pytest.raises(DataError, match="ids are stored as uint16, too small for the tokenizer's 70,001 tokens"):
        prepare_corpus(DataConfig(source="tokens", path=str(out), val_fraction=0.1), 70_001)


def test_given_tokenizer_skips_the_sample_pass(tmp_path, docs, tok_file, monkeypatch):
    monkeypatch.setattr(prepare_mod, "_sample", lambda job: pytest.fail("sampled text for a given tokenizer"))
    c = prepare_corpus(cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs), tokenizer=str(tok_file)), 400)
    assert c.vocab_size == 400


def test_batches_bound_the_text_in_memory(tmp_path, docs, monkeypatch):
    seen = []
    real = prepare_mod._encode

    def spy(tok, batch, dtype, start):
        seen.append(sum(map(len, batch)))
        return real(tok, batch, dtype, start)

    monkeypatch.setattr(prepare_mod, "_encode", spy)
    monkeypatch.setattr(prepare_mod, "BATCH_CHARS", 2000)
    monkeypatch.setattr(prepare_mod, "GATHER_TOKENS", 16)  # most documents longer: copied in slices
    small = prepare_corpus(cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs)), 400)
    longest = max(map(len, docs))
    assert len(seen) > 10 and max(seen) < 2000 + longest
    monkeypatch.setattr(prepare_mod, "BATCH_CHARS", 1 << 22)
    monkeypatch.setattr(prepare_mod, "GATHER_TOKENS", 1 << 22)
    whole = prepare_corpus(cfg(tmp_path / "b", "jsonl", tmp_path / "c.jsonl"), 400)
    assert arrays(small) == arrays(whole)


# --------------------------------------------------------------------------- the BPE sample


def test_bpe_sample_is_order_free_bounded_and_whole_when_it_fits(docs):
    def sample(order, max_bytes):
        s = BpeSample(max_bytes, 0.1)
        for i in order:
            raw = docs[i].encode()
            s.offer(i, docs[i], raw, prepare_mod.unit_hash(raw))
        return s

    train, _ = split_documents(docs, 0.1)
    whole = sample(range(len(docs)), 10**9)
    assert whole.documents() == train and not whole.truncated
    capped = sample(range(len(docs)), 3000)
    assert capped.truncated and sum(len(d) for d in capped.documents()) <= 3000
    assert set(capped.documents()) < set(train)
    shuffled = list(range(len(docs)))
    random.Random(1).shuffle(shuffled)
    assert sorted(sample(shuffled, 3000).documents()) == sorted(capped.documents())


def test_sample_size_changes_the_tokenizer_only_when_it_cuts(tmp_path, docs):
    path = write_jsonl(tmp_path / "c.jsonl", docs)
    full = prepare_corpus(cfg(tmp_path, "jsonl", path), 400)
    same = prepare_corpus(cfg(tmp_path, "jsonl", path, tokenizer_sample_bytes=10**6), 400)
    cut = prepare_corpus(cfg(tmp_path, "jsonl", path, tokenizer_sample_bytes=2000), 400)
    assert arrays(same) == arrays(full) and same.key != full.key
    assert Path(same.tokenizer_path).read_bytes() == Path(full.tokenizer_path).read_bytes()
    assert Path(cut.tokenizer_path).read_bytes() != Path(full.tokenizer_path).read_bytes()


# --------------------------------------------------------------------------- resume after a kill


def _die_at(fault: str, target, *args) -> int:
    """Run target(*args) in a forked child that SIGKILLs itself at the named fault point; its exit code."""
    from dualobj import faults

    def child():
        prepare_mod.BATCH_CHARS = 3000
        faults._SPEC = fault
        target(*args)

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join()
    return p.exitcode


@pytest.mark.parametrize("fault", ["prepare_batch@3", "prepare_train_written"])
def test_killed_preparation_resumes_where_it_stopped(tmp_path, docs, monkeypatch, fault):
    data = cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs))
    assert _die_at(fault, prepare_corpus, data, 400, False) == -9
    partial = next((tmp_path / "cache").glob("*.partial"))
    state = json.loads((partial / "progress.json").read_text())
    assert 0 < state["docs"] <= len(docs)
    encoded = []
    real = prepare_mod._encode
    monkeypatch.setattr(prepare_mod, "_encode", lambda tok, b, *a: encoded.append(len(b)) or real(tok, b, *a))
    monkeypatch.setattr(prepare_mod, "train_bpe", lambda *a: pytest.fail("the BPE was trained again"))
    resumed = prepare_corpus(data, 400)
    assert sum(encoded) == len(docs) - state["docs"]  # only the documents not yet flushed
    assert not partial.exists()
    monkeypatch.undo()
    fresh = prepare_corpus(cfg(tmp_path / "fresh", "jsonl", tmp_path / "c.jsonl"), 400)
    assert arrays(resumed) == arrays(fresh)
    assert Path(resumed.tokenizer_path).read_bytes() == Path(fresh.tokenizer_path).read_bytes()


def test_half_prepared_folder_of_another_tokenizer_is_refused(tmp_path, docs, tok_file):
    data = cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs))
    out = tmp_path / "prepared"
    assert _die_at("prepare_batch@1", prepare_to, out, data, 400, False) == -9
    other = DataConfig(**{**vars(data), "tokenizer": str(tok_file)})
    with pytest.raises(DataError, match="half-finished preparation made with another tokenizer.*delete"):
        prepare_to(out, other, 400)
    with pytest.raises(DataError, match="half-finished preparation made with another tokenizer"):
        prepare_to(out, data, 512)  # a BPE of another size is another tokenizer too
    assert arrays(prepare_to(out, data, 400)) == arrays(prepare_corpus(data, 400))


def test_waits_for_another_process_holding_the_lock(tmp_path, docs, monkeypatch):
    import fcntl

    data = cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs))
    key, _ = tokens_mod.cache_key(data, 400)
    (tmp_path / "cache").mkdir(exist_ok=True)
    waiting = threading.Event()
    real_log = tokens_mod.PrepareUI.log
    monkeypatch.setattr(tokens_mod.PrepareUI, "log",
                        lambda self, msg: (waiting.set() if "waiting" in msg else None, real_log(self, msg)))
    result = {}
    with open(tmp_path / "cache" / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: result.update(c=prepare_corpus(data, 400)))
        t.start()
        assert waiting.wait(60)
        assert "c" not in result  # still waiting while the lock is held
        fcntl.flock(lock, fcntl.LOCK_UN)
    t.join(120)
    assert len(result["c"].train) > 0


# --------------------------------------------------------------------------- already tokenized


def test_prepared_folder_is_used_in_place(tmp_path, docs):
    data = cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs))
    out = tmp_path / "prepared"
    made = prepare_to(out, data, 400)
    assert Path(made.cache_path) == out and (out / "meta.json").is_file() and not (out / "progress.json").exists()
    used = prepare_corpus(DataConfig(source="tokens", path=str(out), cache_dir=str(tmp_path / "c2"), val_fraction=0.1),
                          400)
    assert arrays(used) == arrays(made) and used.cache_path == str(out)
    assert arrays(prepare_to(out, data, 400)) == arrays(made)  # prepared already: nothing to do
    with pytest.raises(DataError, match="data.order_seed=7 but .* was prepared with 1234; set data.order_seed=1234"):
        prepare_corpus(DataConfig(source="tokens", path=str(out), order_seed=7, val_fraction=0.1), 400)
    with pytest.raises(DataError, match="already holds a prepared corpus of other inputs"):
        prepare_to(out, DataConfig(**{**vars(data), "order_seed": 7}), 400)


def nanogpt_file(tmp_path: Path, docs: list[str], tok_file: Path, sep: int, trailing: bool) -> tuple[Path, list]:
    """A flat uint16 file as nanoGPT writes it (separator after each document) or before each one."""
    tok = Tokenizer.from_file(str(tok_file))
    ids = [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]
    flat = [t for d in ids for t in ((*d, sep) if trailing else (sep, *d))]
    path = tmp_path / f"train_{trailing}.bin"
    np.array(flat, dtype=np.uint16).tofile(path)
    return path, ids


@pytest.mark.parametrize("trailing", [True, False])
def test_nanogpt_flat_file(tmp_path, docs, tok_file, trailing):
    sep = Tokenizer.from_file(str(tok_file)).token_to_id("</s>")
    path, ids = nanogpt_file(tmp_path, docs, tok_file, sep, trailing)
    data = DataConfig(source="bin", path=str(path), separator_id=sep, tokenizer=str(tok_file),
                      cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    c = prepare_corpus(data, 400)
    assert c.bos_id == sep and c.mask_id == MASK and sep in c.special_ids
    docs_out = [c.train[a:b].tolist() for a, b in zip(c.train_starts[:-1], c.train_starts[1:], strict=True)]
    docs_out += [c.val[a:b].tolist() for a, b in zip(c.val_starts[:-1], c.val_starts[1:], strict=True)]
    assert sorted(docs_out) == sorted([sep, *d] for d in ids)  # every document once, <s> = the separator
    is_val = val_mask(np.array([unit_hash(np.array(d, dtype="<u2").tobytes()) for d in ids]), 0.1)
    order = fixed_order(len(ids), 1234)
    assert docs_out[:len(c.train_starts) - 1] == [[sep, *ids[i]] for i in order if not is_val[i]]
    assert 3.0 < c.bytes_per_token_val < 8.0


def test_nanogpt_file_without_mask_token_gets_one(tmp_path, docs):
    vocab = {"<unk>": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.save(str(tmp_path / "gpt.json"))
    np.array([2, 3, 1, 4, 5, 6, 1, 7, 1, 8, 9], dtype=np.uint16).tofile(tmp_path / "t.bin")
    data = DataConfig(source="bin", path=str(tmp_path / "t.bin"), separator_id=1, tokenizer=str(tmp_path / "gpt.json"),
                      cache_dir=str(tmp_path / "cache"), val_fraction=0.3)
    c = prepare_corpus(data, 64)
    assert c.mask_id == len(vocab) and c.vocab_size == len(vocab) + 1 and c.bos_id == 1
    got = [a.tolist() for a in (*np.split(c.train, c.train_starts[1:-1]), *np.split(c.val, c.val_starts[1:-1]))]
    assert sorted(got) == [[1, 2, 3], [1, 4, 5, 6], [1, 7], [1, 8, 9]]
    assert Tokenizer.from_file(c.tokenizer_path).token_to_id("<mask>") == c.mask_id


# --------------------------------------------------------------------------- bad input


def test_bad_prepared_folders(tmp_path, docs):
    out = tmp_path / "prepared"
    prepare_to(out, cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs)), 400)
    use = DataConfig(source="tokens", path=str(out), cache_dir=str(tmp_path / "c2"), val_fraction=0.1)
    good = {f: (out / f).read_bytes() for f in ("train.bin", "train.idx", "meta.json")}

    def expect(words):
        with pytest.raises(DataError) as e:
            prepare_corpus(use, 400)
        msg = str(e.value)
        assert "\n" not in msg and "dualobj data prepare --out" in msg and all(w in msg for w in words), msg
        for f, b in good.items():
            (out / f).write_bytes(b)

    (out / "train.bin").write_bytes(good["train.bin"][:-6])
    expect(["train.bin is", "truncated"])
    idx = np.fromfile(out / "train.idx", dtype="<i8")
    idx[-1] -= 1
    idx.tofile(out / "train.idx")
    expect(["train.idx", "not at the token count"])
    meta = json.loads(good["meta.json"])
    (out / "meta.json").write_text(json.dumps({**meta, "dtype": "uint8"}))
    expect(["dtype 'uint8'"])
    assert len(prepare_corpus(use, 400).train) > 0
    bad_ids = tmp_path / "bad_ids"  # a fresh copy: the id check is remembered under the files' stamps
    shutil.copytree(out, bad_ids)
    ids = np.fromfile(bad_ids / "train.bin", dtype=np.uint16)
    ids[5] = 450
    ids.tofile(bad_ids / "train.bin")
    with pytest.raises(DataError, match="token id 450 .* outside the tokenizer's vocabulary of 400"):
        prepare_corpus(DataConfig(**{**vars(use), "path": str(bad_ids)}), 400)


def test_bad_token_files(tmp_path, docs, tok_file):
    sep = 2
    path, _ = nanogpt_file(tmp_path, docs, tok_file, sep, True)
    base = dict(source="bin", separator_id=sep, tokenizer=str(tok_file), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "odd.bin").write_bytes(path.read_bytes()[:-1])
    ids = np.fromfile(path, dtype=np.uint16)
    ids[100] = 999
    ids.tofile(tmp_path / "big.bin")
    cases = [
        ({"path": str(tmp_path / "odd.bin")}, 400, ["not a whole number of uint16", "truncated"]),
        ({"path": str(tmp_path / "big.bin")}, 400,
         ["token id 999 at position 100", "vocabulary of data.tokenizer (400"]),
        ({"path": str(path), "separator_id": 400}, 400, ["data.separator_id=400 is not a token id"]),
        ({"path": str(path), "tokenizer": None}, 400, ["needs data.tokenizer"]),
        ({"path": str(path)}, 300, ["tokenizer has 400 tokens but model.vocab_size=300"]),
    ]
    for change, vocab, words in cases:
        with pytest.raises(DataError) as e:
            prepare_corpus(DataConfig(**{**base, **change}), vocab)
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_dtype_too_small_for_the_tokenizer(tmp_path):
    vocab = {"<unk>": 0, "<s>": 1, "<mask>": 2, "x": 70_000}
    Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")).save(str(tmp_path / "big.json"))
    np.array([3, 1, 4], dtype=np.uint16).tofile(tmp_path / "t.bin")
    data = DataConfig(source="bin", path=str(tmp_path / "t.bin"), separator_id=1,
                      tokenizer=str(tmp_path / "big.json"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="70,001 tokens but a uint16 token file holds ids below 65,536"):
        prepare_corpus(data, 80_000)


def test_split_texts_of_a_prepared_folder_equal_the_text_split(tmp_path, docs):
    from dualobj.data.tokens import split_texts

    data = cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs))
    out = tmp_path / "prepared"
    prepare_to(out, data, 400)
    as_text = split_texts(data, 400)
    assert as_text == split_documents(order_documents(docs, 1234), 0.1)
    assert split_texts(DataConfig(source="tokens", path=str(out), val_fraction=0.1,
                                  cache_dir=str(tmp_path / "c2")), 400) == as_text


def test_default_corpus_gives_the_tokens_and_windows_of_the_earlier_pipeline(cache_dir):
    """sha256 prefixes of the wiki corpus at vocabulary 512 and of windows drawn from it, as the earlier
    in-memory preparation and materialising stream produced them: run ids of the built-in corpus keep
    meaning the same training data."""
    import hashlib

    from dualobj.data import RepeatedStream

    def h(a) -> str:
        return hashlib.sha256(np.asarray(a).astype(np.int64).tobytes()).hexdigest()[:16]

    c = prepare_corpus(DataConfig(cache_dir=str(cache_dir)), 512)
    assert [h(c.train), h(c.train_starts), h(c.val), h(c.val_starts)] == [
        "bf9080406719fdcd", "7d7d7845ef3ef6fb", "cf4bea6ece769f29", "06c0df09cfed834d"]
    assert round(c.bytes_per_token_val, 12) == 2.057369942197
    rs = RepeatedStream(c.train, c.train_starts, len(c.train) // 4, 128, seed=0)
    assert h(rs.get(np.arange(0, 3 * rs.windows_per_epoch, 997))) == "fddffa4c9476bafa"


def test_tokens_source_needs_a_finished_folder(tmp_path, docs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no prepared corpus .*`dualobj data prepare --out DIR`"):
        prepare_corpus(DataConfig(source="tokens", path=str(empty)), 400)
    with pytest.raises(DataError, match="is not a folder; data.source=tokens needs a folder"):
        prepare_corpus(DataConfig(source="tokens", path=str(tmp_path / "nope")), 400)
    data = cfg(tmp_path, "jsonl", write_jsonl(tmp_path / "c.jsonl", docs))
    half = tmp_path / "half"
    assert _die_at("prepare_batch@1", prepare_to, half, data, 400, False) == -9
    with pytest.raises(DataError, match="holds an unfinished preparation; finish it"):
        prepare_corpus(DataConfig(source="tokens", path=str(half)), 400)
    with pytest.raises(DataError, match="is not empty and holds no preparation"):
        prepare_to(tmp_path, data, 400)  # a folder with other files in it
