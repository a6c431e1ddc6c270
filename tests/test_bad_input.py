"""Bad input of every kind gets one line naming the problem and the fix, exit code 2 and no traceback.

Each case runs the real CLI as a subprocess (``python -m dualobj.cli``); the table in
docs/bad-input.md lists the same cases in the same order with their exact messages
(``pytest -s tests/test_bad_input.py | grep '^BADINPUT'`` prints them).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Tiny configs (no train.threads: the in-process test must not change this process's torch threads).
TINY = [
    "model.vocab_size=512", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64",
    "model.seq_len=32", "train.batch_size=8", "train.progress=false", "eval.at_end=false",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # COLUMNS=80: the error line must stay one line even on a narrow, non-terminal stderr (soft wrap).
    env = {**os.environ, "COLUMNS": "80", "DUALOBJ_MALLOC": "off"}
    env.pop("DUALOBJ_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "dualobj.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def error_line(stderr: str, stdout: str = "") -> str:
    """The single `error:` line, which must also be the last line of stderr."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr + stdout, stderr
    return errors[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache_dir) -> Path:
    """One micro run (8 steps) for the eval/generate cases."""
    out = tmp_path_factory.mktemp("trained") / "run"
    res = run_cli("train", *TINY, f"data.cache_dir={cache_dir}", "train.tokens=2048", f"out={out}")
    assert res.returncode == 0, res.stderr
    return out


@dataclass
class Ctx:
    tmp: Path
    cache: Path
    request: pytest.FixtureRequest

    used_run: bool = False

    @property
    def run(self) -> Path:
        self.used_run = True
        return self.request.getfixturevalue("trained_run")

    @property
    def tiny(self) -> list[str]:
        return [*TINY, f"data.cache_dir={self.cache}"]

    def train(self, *overrides: str) -> list[str]:
        return ["train", *self.tiny, *overrides, f"out={self.tmp / 'out'}"]

    def file(self, name: str, content: str | bytes) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
        return p

    def sweep(self, text: str) -> list[str]:
        return ["sweep", str(self.file("sweep.yaml", text)), "--dry-run", "--out", str(self.tmp / "sw")]


def _tokenizer(path: Path, tokens: list[str]) -> Path:
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.save(str(path))
    return path


def _run_dir(c: Ctx, name: str, status: str) -> Path:
    d = c.tmp / name
    d.mkdir()
    (d / "status.json").write_text(status)
    return d


def _fake_run(c: Ctx) -> Path:
    """A run directory as far as its files go (config.yaml, status.json), without a model."""
    d = c.tmp / "fake"
    if not d.exists():
        d.mkdir()
        (d / "config.yaml").write_text("run_id: fake\nmodel:\n  name: tiny\n  seq_len: 32\ndata:\n  repetitions: 1\n"
                                       "objective:\n  alpha: 0.5\nseed: 0\n")
        (d / "status.json").write_text(json.dumps({"state": "done", "step": 1, "total_steps": 1}))
        (d / "summary.json").write_text(json.dumps({"val/ar_nll": 3.0}))
    return d


def _no_checkpoint(c: Ctx) -> Path:
    d = c.tmp / "no_ckpt"
    d.mkdir()
    shutil.copy(c.run / "config.yaml", d / "config.yaml")
    return d


def _bad_piqa(c: Ctx) -> Path:
    c.file("bench/gauntlet/piqa.jsonl", '{"goal": "open a jar", "sol1": "twist", "sol2": "push", "label": 0}\n')
    return c.tmp / "bench"


BINARY = b"PK\x03\x04\x00\x00"  # a zip header
NOT_JSON = '{"text": "x"}\n{oops\n'
NO_FIELD = '{"body": "x"}\n'
DAMAGED = '{"state": "runn'  # cut short by a crash or a full disk

# (case id, what is wrong) -> (CLI arguments, fragments the one error line must contain: problem and fix)
CASES = {
    # ---------------------------------------------------------------- overrides
    "unknown config group option": lambda c: (c.train("model=huge"), [
        "unknown option 'huge' for config group 'model'", "available: base, micro, nano, paper_470m, small, tiny"]),
    "unknown config key": lambda c: (c.train("train.nonsense=1"), [
        "unknown config key 'train.nonsense'", "run `dualobj config` to list the valid keys"]),
    "alpha outside [0, 1]": lambda c: (c.train("objective.alpha=1.5"), [
        "objective.alpha=1.5 is outside [0, 1]", "set it to an AR weight in [0, 1]"]),
    "alpha not a number": lambda c: (c.train("objective.alpha=half"), [
        "objective.alpha='half' is not a number", "write a number (e.g. 0.5, 1e-3 or 63/64)"]),
    "alpha as a fraction over zero": lambda c: (c.train("objective.alpha=1/0"), [
        "objective.alpha='1/0' is not a number", "write a number (e.g. 0.5, 1e-3 or 63/64)"]),
    "budget not a whole number": lambda c: (c.train("train.tokens=1000.5"), [
        "train.tokens='1000.5' is not a whole number", "write a whole number (e.g. 1000000, 1e6 or 1_000_000)"]),
    "+key the schema lacks": lambda c: (c.train("+objective.alpah=0.9"), [
        "unknown config key 'objective.alpah' (did you mean objective.alpha?)",
        "run `dualobj config` to list the valid keys"]),
    "+key the schema has": lambda c: (c.train("+objective.alpha=0.9"), [
        "objective.alpha is already a config key, '+' adds new ones", "write objective.alpha=0.9"]),
    "eval.limit not a number": lambda c: (c.train("eval.limit=abc"), [
        "eval.limit='abc' is not a number", "write a whole number"]),
    "eval.tasks not a list": lambda c: (c.train("eval.tasks=blimp"), [
        "eval.tasks='blimp' is not a list", "write 'eval.tasks=[blimp]' (quoted"]),
    "config option given as --option": lambda c: (["train", "--model", "tiny"], [
        "No such option: --model", "config values are key=value overrides without dashes: write model=tiny"]),
    "config file that is not a mapping": lambda c: (["train", "--config", str(c.file("c.yaml", "- a\n"))], [
        "c.yaml must be a mapping of sections", "see `dualobj config`"]),
    "R < 1": lambda c: (c.train("data.repetitions=0"), [
        "data.repetitions=0.0 must be a whole number >= 1"]),
    "fractional R": lambda c: (c.train("data.repetitions=2.5"), [
        "data.repetitions=2.5 must be a whole number >= 1"]),
    "D/R under one sequence": lambda c: (c.train("train.tokens=2048", "data.repetitions=64"), [
        "leaves D/R = 32 unique tokens, under one sequence of seq_len+1 = 33",
        "lower data.repetitions or raise train.tokens"]),
    "D/R larger than the corpus": lambda c: (c.train("train.tokens=100000000"), [
        "D/R = 100000000 unique tokens but the training split has only",
        "raise data.repetitions or lower train.tokens"]),
    "budget below one optimizer step": lambda c: (c.train("train.tokens=100"), [
        "train.tokens=100 is below one optimizer step (8 x 32 = 256 tokens)",
        "raise train.tokens or lower train.batch_size"]),
    "bad choice value": lambda c: (c.train("train.optimizer=sgd"), [
        "train.optimizer='sgd' is not one of adamw, muon"]),
    "malformed override (no =)": lambda c: (c.train("model.d_model"), [
        "cannot apply override 'model.d_model'", "write overrides as key=value"]),
    # ---------------------------------------------------------------- corpora
    "empty text file": lambda c: (c.train("data=text", f"data.path={c.file('empty.txt', '')}"), [
        "has no non-empty documents (empty corpus)", "give a corpus with text in it"]),
    "missing corpus path": lambda c: (c.train("data=text", f"data.path={c.tmp / 'nope.txt'}"), [
        "nope.txt does not exist", "point data.path at an existing file"]),
    "folder given for data=text": lambda c: (c.train("data=text", f"data.path={c.tmp}"), [
        "is a folder but this source needs a file", "use data.source=textdir"]),
    "binary file": lambda c: (c.train("data=text", f"data.path={c.file('bin.txt', BINARY)}"), [
        "bin.txt looks binary (NUL byte at offset 4)", "give a UTF-8 text file"]),
    "non-UTF-8 (latin-1) file": lambda c: (c.train(
        "data=text", f"data.path={c.file('l1.txt', 'café'.encode('latin-1'))}"), [
        "l1.txt is not UTF-8 (bad byte at offset 3)", "re-encode it as UTF-8"]),
    "JSONL line not JSON": lambda c: (c.train("data=jsonl", f"data.path={c.file('a.jsonl', NOT_JSON)}"), [
        "JSONL line 2 is not valid JSON", "fix or remove that line"]),
    "JSONL line without the text field": lambda c: (c.train("data=jsonl", f"data.path={c.file('b.jsonl', NO_FIELD)}"), [
        "JSONL line 1 has no string field 'text' (it has 'body')", "set data.text_field="]),
    "empty JSONL": lambda c: (c.train("data=jsonl", f"data.path={c.file('c.jsonl', '')}"), [
        "c.jsonl has no non-empty documents (empty corpus)"]),
    # ---------------------------------------------------------------- tokenizers
    "tokenizer.json missing": lambda c: (c.train(f"data.tokenizer={c.tmp / 'tok.json'}"), [
        "tok.json is not a file", "give a tokenizer.json or leave it empty to train BPE"]),
    "tokenizer.json corrupt": lambda c: (c.train(f"data.tokenizer={c.file('tok.json', '{truncated')}"), [
        "tok.json is not a valid tokenizer.json", "give a file saved by HF tokenizers"]),
    "tokenizer without <mask>": lambda c: (c.train(
        f"data.tokenizer={_tokenizer(c.tmp / 't.json', ['<unk>', '<s>', 'a'])}"), [
        "lacks the token(s) <mask>", "add <mask> as special tokens"]),
    "tokenizer larger than model.vocab_size": lambda c: (c.train(
        f"data.tokenizer={_tokenizer(c.tmp / 't.json', ['<unk>', '<s>', '<mask>', *map(str, range(600))])}"), [
        "tokenizer has 603 tokens but model.vocab_size=512", "use a model with vocab_size >= 603"]),
    # ---------------------------------------------------------------- sweep files
    "sweep file missing": lambda c: (["sweep", str(c.tmp / "none.yaml"), "--dry-run"], [
        "none.yaml does not exist", "see sweeps/ for examples"]),
    "sweep file invalid YAML": lambda c: (c.sweep("name: x\naxes: {objective.alpha: [0, 1\n"), [
        "is not valid YAML at line 3", "fix its syntax"]),
    "sweep file unknown top-level key": lambda c: (c.sweep("name: x\naxes: {objective.alpha: [0]}\nlaunchr: basic\n"), [
        "unknown key(s) ['launchr']", "allowed: ['axes'"]),
    "sweep cell not a mapping": lambda c: (c.sweep("name: x\ncells: [objective.alpha=0.5]\n"), [
        "'cells' must be a list of mappings like {objective.alpha: 0.5}"]),
    "sweep launcher with _target_": lambda c: (c.sweep(
        "name: x\naxes: {objective.alpha: [0]}\nlauncher: {name: basic, _target_: os.system}\n"), [
        "launcher key(s) ['_target_'] are not allowed", "remove them"]),
    "sweep launcher with a nested _target_": lambda c: (c.sweep(
        "name: x\naxes: {objective.alpha: [0]}\nlauncher: {name: submitit_slurm, x: '{_target_: os.system}'}\n"), [
        "launcher key(s) ['x (_target_)'] are not allowed", "remove them"]),
    "sweep sets hydra.* in fixed": lambda c: (c.sweep(
        "name: x\nfixed: [hydra.job.chdir=true]\naxes: {objective.alpha: [0]}\n"), [
        "key(s) ['hydra.job.chdir'] may not be set by a sweep file", "use the 'launcher' section"]),
    "sweep unknown launcher": lambda c: (c.sweep("name: x\naxes: {objective.alpha: [0]}\nlauncher: {name: nope}\n"), [
        "unknown launcher 'nope'", "use one of basic, joblib, slurm, slurm_paper, submitit_local, submitit_slurm"]),
    "sweep launcher with 0 jobs": lambda c: (c.sweep(
        "name: x\naxes: {objective.alpha: [0]}\nlauncher: {name: joblib, jobs: 0}\n"), [
        "launcher jobs=0 must be a whole number >= 1", "e.g. {name: joblib, jobs: 2}"]),
    "sweep n_jobs not a number": lambda c: ([*c.sweep("name: x\naxes: {objective.alpha: [0]}\nlauncher: joblib\n"),
                                             "hydra.launcher.n_jobs=abc"], [
        "hydra.launcher.n_jobs='abc' must be a whole number >= 1", "e.g. hydra.launcher.n_jobs=2"]),
    "sweep key the schema lacks": lambda c: (c.sweep("name: x\naxes: {objective.alpah: [0, 1/2]}\n"), [
        "unknown config key 'objective.alpah' (did you mean objective.alpha?)"]),
    # ---------------------------------------------------------------- run directories
    "report on a folder with no runs": lambda c: (["report", str(c.tmp)], [
        "no runs or sweep plan under",
        "run `dualobj sweep SWEEP.yaml` first, or give a sweep folder or run directory"]),
    "report on a missing path": lambda c: (["report", str(c.tmp / "gone")], [
        "gone does not exist", "give a sweep folder or run directory such as runs/smoke"]),
    "report --out an existing file": lambda c: (["report", str(_fake_run(c)), "--out", str(c.file("r.md", "x"))], [
        "report folder", "r.md is a file; give --out a folder"]),
    "status on a folder with no runs": lambda c: (["status", str(c.tmp)], [
        "no runs or sweep plan under",
        "run `dualobj sweep SWEEP.yaml` first, or give a sweep folder or run directory"]),
    "status on a missing path": lambda c: (["status", str(c.tmp / "gone")], [
        "gone does not exist", "give a sweep folder or run directory such as runs/smoke"]),
    "eval on a folder that is not a run": lambda c: (["eval", str(c.tmp)], [
        "has no config.yaml: not a run directory", "give one written by `dualobj train`"]),
    "eval on a missing run directory": lambda c: (["eval", str(c.tmp / "gone")], [
        "run directory", "gone does not exist"]),
    "eval on a run with no checkpoint": lambda c: (["eval", str(_no_checkpoint(c))], [
        "has no intact checkpoint", "train it first"]),
    "train into a damaged status.json": lambda c: (
        ["train", *c.tiny, "train.tokens=2048", f"out={_run_dir(c, 'dmg', DAMAGED)}"], [
            "status.json is damaged (JSONDecodeError)", "delete it to let the run redo that part"]),
    "train into a run of another format version": lambda c: (
        ["train", *c.tiny, "train.tokens=2048", f"out={_run_dir(c, 'v999', json.dumps({'format_version': 999}))}"], [
            "was written by an incompatible dualobj version (format 999, this is 1)",
            "choose another out= or delete it"]),
    "out= inside a regular file": lambda c: (["train", *c.tiny, "train.tokens=2048", f"out={c.file('f', 'x')}/run"], [
        "cannot write to run directory", "(Not a directory); choose another out=DIR"]),
    "out= is a regular file": lambda c: (["train", *c.tiny, "train.tokens=2048", f"out={c.file('f', 'x')}"], [
        "cannot write to run directory", "(File exists); choose another out=DIR"]),
    # ---------------------------------------------------------------- benchmark files, eval, generate
    "benchmark file in the wrong format": lambda c: (
        ["eval", str(c.run), "eval.tasks=[piqa]", "eval.modes=[ar]", f"eval.benchmark_dir={_bad_piqa(c)}"], [
            "piqa.jsonl, line 1: field 'query'",
            'each line must be {"query": str, "choices": [str, ...], "gold": int}']),
    "benchmark dir missing for a requested task": lambda c: (
        ["eval", str(c.run), "eval.tasks=[piqa]", f"eval.benchmark_dir={c.tmp / 'nobench'}"], [
            "nobench not found (needed for gauntlet/piqa.jsonl)", "set eval.benchmark_dir="]),
    "generate with a bad --mode": lambda c: (["generate", str(c.run), "--mode", "sideways"], [
        "--mode 'sideways' is not one of ar, md, prefix"]),
    "generate with a negative temperature": lambda c: (["generate", str(_fake_run(c)), "--temperature", "-1"], [
        "--temperature -1 must be >= 0 (0 = greedy"]),
    "generate with --top-p above 1": lambda c: (["generate", str(_fake_run(c)), "--top-p", "2"], [
        "--top-p 2 must be in (0, 1] (1 = off)"]),
    "generate more tokens than the context": lambda c: (["generate", str(_fake_run(c)), "-n", "100000"], [
        "--max-tokens 100000 does not fit this model's context (model.seq_len=32", "use --max-tokens 31 or less"]),
    "eval with a non-eval override": lambda c: (["eval", str(c.run), "model.d_model=64"], [
        "dualobj eval takes only eval.* overrides, got ['model.d_model=64']", "the trained model is fixed"]),
}


def _doc_row(case: str, args: list[str], line: str, c: Ctx) -> str:
    """A table row with machine-specific paths replaced by short names (for docs/bad-input.md)."""
    cmd = " ".join(args).replace(" ".join(TINY), "$TINY")

    def short(s: str) -> str:
        if c.used_run:
            s = s.replace(str(c.run), "RUN")
        return s.replace(f"data.cache_dir={c.cache}", "").replace(str(c.cache), "CACHE").replace(str(c.tmp), "TMP")

    return f"BADINPUT| {case} | `dualobj {' '.join(short(cmd).split())}` | `{short(line)}` |"


# Errors raised before any data is read run in process (same `app`, same `friendly` wrapper) to keep
# this file fast; the others run the real CLI as a subprocess.
IN_PROCESS = {
    "unknown config group option", "unknown config key", "alpha outside [0, 1]", "alpha not a number", "R < 1",
    "fractional R", "budget below one optimizer step", "bad choice value", "malformed override (no =)",
    "sweep file invalid YAML", "sweep file unknown top-level key", "sweep cell not a mapping",
    "sweep launcher with _target_", "sweep launcher with a nested _target_", "sweep sets hydra.* in fixed",
    "sweep unknown launcher", "alpha as a fraction over zero", "budget not a whole number", "+key the schema lacks",
    "+key the schema has", "eval.limit not a number", "eval.tasks not a list", "config option given as --option",
    "config file that is not a mapping", "sweep launcher with 0 jobs", "sweep n_jobs not a number",
    "sweep key the schema lacks", "report --out an existing file", "generate with a negative temperature",
    "generate with --top-p above 1", "generate more tokens than the context",
}


def invoke(*args: str) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    from dualobj import cli

    res = CliRunner().invoke(cli.app, list(args))
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


SLOW = {"D/R under one sequence", "D/R larger than the corpus", "eval on a run with no checkpoint",
        "benchmark file in the wrong format"}  # they tokenize the corpus or train the micro run


@pytest.mark.parametrize("case", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k for k in CASES])
def test_bad_input_gets_one_line(case, tmp_path, cache_dir, request):
    c = Ctx(tmp_path, cache_dir, request)
    args, fragments = CASES[case](c)
    res = invoke(*args) if case in IN_PROCESS else run_cli(*args)
    assert res.returncode == 2, (res.returncode, res.stderr)
    line = error_line(res.stderr, res.stdout)
    for frag in fragments:
        assert frag in line, (frag, line)
    print(_doc_row(case, args, line, c))


def test_two_invalid_sweep_cells_are_listed_at_once(tmp_path):
    c = Ctx(tmp_path, tmp_path, None)  # type: ignore[arg-type]
    res = run_cli(*c.sweep("name: x\nfixed: [model.seq_len=32]\naxes: {objective.alpha: [2, -1, 0.5]}\n"))
    assert res.returncode == 2, res.stderr
    line = error_line(res.stderr, res.stdout)
    assert "2 of 3 cells are invalid (listed above); fix the sweep file" in line
    cells = [x for x in res.stderr.splitlines() if x.startswith("invalid cell")]
    assert len(cells) == 2, res.stderr
    assert "objective.alpha=2.0 is outside [0, 1]" in cells[0] and "objective.alpha=-1.0 is outside" in cells[1]
    print(f"BADINPUT| two invalid sweep cells | `dualobj sweep TMP/sweep.yaml --dry-run` | "
          f"`{cells[0]}` `{cells[1]}` `{line}` |")


def test_a_fraction_over_zero_in_a_sweep_axis_is_an_invalid_cell(tmp_path):
    c = Ctx(tmp_path, tmp_path, None)  # type: ignore[arg-type]
    res = invoke(*c.sweep("name: x\nfixed: [model.seq_len=32]\naxes: {objective.alpha: [0, 1/0]}\n"))
    assert res.returncode == 2, res.stderr
    line = error_line(res.stderr, res.stdout)
    assert "1 of 2 cells are invalid (listed above); fix the sweep file" in line
    cells = [x for x in res.stderr.splitlines() if x.startswith("invalid cell")]
    assert cells == ["invalid cell model.seq_len=32 objective.alpha=1/0: objective.alpha='1/0' is not a number; "
                     "write a number (e.g. 0.5, 1e-3 or 63/64)"], res.stderr
    print(f"BADINPUT| fraction over zero in a sweep axis | `dualobj sweep TMP/sweep.yaml --dry-run` | "
          f"`{cells[0]}` `{line}` |")


def test_disk_full_is_one_line(trained_run, cache_dir, tmp_path, monkeypatch):
    """In process: os.replace raises ENOSPC under tmp_path, as a full disk would."""
    from typer.testing import CliRunner

    from dualobj import cli
    from dualobj.run import files as rundir

    real_replace = os.replace

    def full(src, dst, *a, **k):
        if str(dst).startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(rundir.RunDirError, match="^disk full while writing .*x.json; free space and re-run"):
        rundir.atomic_write(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []  # the temp file is gone
    out = tmp_path / "r"
    res = CliRunner().invoke(cli.app, ["train", *TINY, f"data.cache_dir={cache_dir}", "train.tokens=2048",
                                       f"out={out}"])
    assert res.exit_code == 2, res.output
    line = error_line(res.stderr, res.stdout)
    assert line == (f"error: disk full while writing {out / 'config.yaml'}; "
                    "free space and re-run (finished work is kept)")
    # The friendly wrapper turns an OSError ENOSPC from anywhere else into the same kind of line.
    fail = cli.friendly(lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left", "/data/big.npy")))
    with pytest.raises(cli.typer.Exit) as e:
        fail()
    assert e.value.exit_code == 2
    print(f"BADINPUT| disk full while writing | `dualobj train $TINY train.tokens=2048 out=TMP/r` (os.replace "
          f"raises ENOSPC) | `{line.replace(str(tmp_path), 'TMP')}` |")


def test_debug_shows_the_traceback(tmp_path):
    res = run_cli("--debug", "train", "objective.alpha=1.5", f"out={tmp_path / 'x'}")
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "ConfigError" in res.stderr
