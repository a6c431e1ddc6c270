"""`dualobj data prepare` end to end, and its bad input: one line naming the problem and the fix, exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dualobj.data import train_bpe

pytestmark = pytest.mark.slow  # each case starts the real CLI in a subprocess

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "80", "DUALOBJ_MALLOC": "off", **(env or {})}
    full.pop("DUALOBJ_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "dualobj.cli", *args], capture_output=True, text=True, env=full,
                          timeout=300)


def error_line(res: subprocess.CompletedProcess) -> str:
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2, res.stderr
    assert lines and lines[-1].startswith("error:") and sum(x.startswith("error:") for x in lines) == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    return lines[-1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 40)))) + f" doc{i}." for i in range(300)]
    (d / "c.jsonl").write_text("".join(json.dumps({"text": x}) + "\n" for x in docs))
    train_bpe(docs, 400).save(str(d / "tok.json"))
    train_bpe(docs, 300).save(str(d / "tok300.json"))
    base = ["data=jsonl", f"data.path={d / 'c.jsonl'}", "model.vocab_size=400", "data.val_fraction=0.1",
            f"data.cache_dir={d / 'cache'}"]
    out = d / "prepared"
    res = run_cli("data", "prepare", *base, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return {"dir": d, "base": base, "out": out, "docs": docs}


def test_prepare_prints_what_it_made(corpus):
    res = run_cli("data", "prepare", *corpus["base"])
    assert res.returncode == 0, res.stderr
    assert "prepared corpus:" in res.stdout and "documents" in res.stdout and "uint16, vocabulary 400" in res.stdout
    assert "[data] tokenizing" in res.stderr  # phase lines when stderr is not a terminal
    again = run_cli("data", "prepare", *corpus["base"])
    assert "(prepared before; checked)" in again.stdout and "[data]" not in again.stderr


def _broken_copy(corpus: dict, name: str) -> Path:
    import shutil

    p = corpus["dir"] / name
    shutil.copytree(corpus["out"], p)
    return p


def _use(corpus: dict, folder: Path) -> list[str]:
    return ["data", "prepare", "data=tokens", f"data.path={folder}", "model.vocab_size=400", "data.val_fraction=0.1",
            f"data.cache_dir={corpus['dir'] / 'cache'}"]


def test_truncated_token_file(corpus):
    p = _broken_copy(corpus, "truncated")
    (p / "train.bin").write_bytes((p / "train.bin").read_bytes()[:-10])
    line = error_line(run_cli(*_use(corpus, p)))
    assert "train.bin is" in line and "truncated" in line and "dualobj data prepare --out" in line


def test_offsets_not_ending_at_the_token_count(corpus):
    p = _broken_copy(corpus, "offsets")
    idx = np.fromfile(p / "val.idx", dtype="<i8")
    idx[-1] += 3
    idx.tofile(p / "val.idx")
    line = error_line(run_cli(*_use(corpus, p)))
    assert "val.idx: document offsets end at" in line and "not at the token count" in line


def test_token_id_outside_the_vocabulary(corpus):
    p = _broken_copy(corpus, "ids")
    ids = np.fromfile(p / "val.bin", dtype=np.uint16)
    ids[3] = 60_000
    ids.tofile(p / "val.bin")
    line = error_line(run_cli(*_use(corpus, p)))
    assert "token id 60,000" in line and "outside the tokenizer's vocabulary of 400" in line


def test_dtype_too_small_for_the_tokenizer(corpus):
    from tokenizers import Tokenizer, models

    vocab = {"<unk>": 0, "<|endoftext|>": 1, "<mask>": 2, "x": 70_000}
    Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")).save(str(corpus["dir"] / "big.json"))
    np.array([3, 1, 4], dtype=np.uint16).tofile(corpus["dir"] / "t.bin")
    line = error_line(run_cli("data", "prepare", "data=bin", f"data.path={corpus['dir'] / 't.bin'}",
                              "data.separator_id=1", f"data.tokenizer={corpus['dir'] / 'big.json'}",
                              "model.vocab_size=80000", f"data.cache_dir={corpus['dir'] / 'cache'}"))
    assert "70,001 tokens but a uint16 token file holds ids below 65,536" in line


def test_half_prepared_folder_made_with_another_tokenizer(corpus):
    out = corpus["dir"] / "half"
    killed = run_cli("data", "prepare", *corpus["base"], f"data.tokenizer={corpus['dir'] / 'tok.json'}",
                     "--out", str(out), env={"DUALOBJ_FAULT": "prepare_train_written"})
    assert killed.returncode == -9 and (out / "progress.json").is_file()
    line = error_line(run_cli("data", "prepare", *corpus["base"], f"data.tokenizer={corpus['dir'] / 'tok300.json'}",
                              "--out", str(out)))
    assert "half-finished preparation made with another tokenizer" in line and f"delete {out}" in line
    done = run_cli("data", "prepare", *corpus["base"], f"data.tokenizer={corpus['dir'] / 'tok.json'}",
                   "--out", str(out))
    assert done.returncode == 0 and (out / "meta.json").is_file() and not (out / "progress.json").exists()


def test_bin_source_needs_its_settings(corpus):
    line = error_line(run_cli("data", "prepare", "data=bin", f"data.path={corpus['dir'] / 't.bin'}",
                              f"data.cache_dir={corpus['dir'] / 'cache'}"))
    assert "data.separator_id" in line or "data.tokenizer" in line
