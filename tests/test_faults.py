"""Fault injection: kill -9 at chosen points, corrupt files, kill whole sweeps; nothing is lost or run twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import HANG_S
from safetensors.torch import load_file

from dualobj.run.status import status_rows

ROOT = Path(__file__).resolve().parent.parent
STEP_TOKENS = 8 * 32


def cli(*args, env=None, timeout=HANG_S):
    return subprocess.run([sys.executable, "-m", "dualobj.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(sorted((run / "checkpoints").glob("step_*"))[-1] / "model.safetensors")


def metric_rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def results(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    return {k: v for k, v in s.items() if k.startswith(("val/", "eval/", "train/"))}


@pytest.fixture(scope="module")
def args(cache_dir):
    from conftest import MICRO

    return [*[a for a in MICRO if not a.startswith("eval.at_end")], f"data.cache_dir={cache_dir}",
            f"train.tokens={STEP_TOKENS * 20}", "data.repetitions=4", "objective.alpha=0.5",
            "train.checkpoint_every=5", "train.log_every=2", "eval.at_end=true", "eval.tasks=[val,probe_cloze]",
            "eval.limit=6", "eval.probe_items=6", "eval.md_samples=2", "eval.val_windows=4", "eval.modes=[ar,md]"]


@pytest.fixture(scope="module")
def reference(args, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    res = cli("train", *args, f"out={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    return out


# before the first checkpoint, mid-epoch (5 steps per epoch), while a checkpoint is being written,
# after summary.json but before "done", and in the middle of the end-of-training evaluation
KILL_POINTS = ["step@3", "step@12", "checkpoint_write@15", "summary_write", "eval"]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_minus_9_then_rerun_equals_an_uninterrupted_run(point, args, reference, tmp_path):
    out = tmp_path / "run"
    killed = cli("train", *args, f"out={out}", env={"DUALOBJ_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert json.loads((out / "status.json").read_text())["state"] == "running"
    again = cli("train", *args, f"out={out}")
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = final_weights(reference), final_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ after a kill at {point}"
    assert metric_rows(reference) == metric_rows(out)
    assert results(reference) == results(out)
    assert not list((out / "checkpoints").glob(".tmp_*"))  # a half-written checkpoint is cleaned up
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["attempts"] == 2


@pytest.mark.slow
def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(args, reference, tmp_path):
    out = tmp_path / "run"
    assert cli("train", *args, f"out={out}", env={"DUALOBJ_FAULT": "step@13"}).returncode == -signal.SIGKILL
    newest = sorted((out / "checkpoints").glob("step_*"))[-1]
    assert newest.name == "step_0000010"
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    again = cli("train", *args, f"out={out}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "step_0000010 is damaged (model.safetensors does not match its checksum)" in again.stderr
    assert "resuming" in again.stderr and "from step 5/20" in again.stderr
    a, b = final_weights(reference), final_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_damaged_summary_is_reported_and_recomputed(args, reference, tmp_path):
    import shutil

    out = tmp_path / "sweep" / "run"
    shutil.copytree(reference, out)
    text = (out / "summary.json").read_text()
    (out / "summary.json").write_text(text.replace('"val/ar_nll": ', '"val/ar_nll": 1'))  # valid JSON, wrong
    rows = status_rows(out.parent)
    assert [r.state for r in rows] == ["damaged"]
    status = cli("status", str(out.parent))
    assert status.returncode == 1 and "damaged" in status.stdout
    again = cli("train", *args, f"out={out}")
    assert again.returncode == 0 and "summary.json does not match its checksum" in again.stderr
    assert results(out) == results(reference)
    assert [r.state for r in status_rows(out.parent)] == ["done"]


MICRO_SWEEP = ["model.vocab_size=512", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64",
               "model.seq_len=32", "train.batch_size=8", "eval.at_end=false", "train.checkpoint_every=3"]


@pytest.mark.slow
def test_a_sweep_killed_again_and_again_finishes_every_cell_once(cache_dir, tmp_path):
    out = tmp_path / "sweep"
    spec = tmp_path / "three.yaml"  # two cells at once and one waiting: every kill lands in a running cell
    spec.write_text("name: three\nfixed: [model=tiny, data.repetitions=8]\naxes:\n  objective.alpha: [0, 1/2, 1]\n"
                    "launcher: {name: joblib, jobs: 2}\nretries: 1\n")
    argv = [sys.executable, "-m", "dualobj.cli", "sweep", str(spec), "--out", str(out),
            *MICRO_SWEEP, f"train.tokens={STEP_TOKENS * 16}", f"data.cache_dir={cache_dir}"]
    rng = random.Random(7)
    kills = 0
    for attempt in range(3):  # kill the parent and its joblib workers inside a cell, at a step drawn at random
        at, hold = rng.randint(4, 12), tmp_path / f"hold{attempt}"
        proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "DUALOBJ_HOLD": f"step@{at}", "DUALOBJ_HOLD_DIR": str(hold)})
        deadline = time.time() + HANG_S  # a cell that reaches step `at` pauses there until the kill
        while not any(hold.glob("*.step.held")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills == 3
    final = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_S)
    assert final.returncode == 0, final.stderr[-2000:]
    rows = status_rows(out)
    assert len(rows) == 3 and all(r.state == "done" for r in rows)  # no cell lost
    for r in rows:  # no cell trained twice: every step logged once, in order
        steps = [json.loads(line)["step"] for line in (out / r.run_id / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)) and steps[-1] == 16
    assert max(r.attempts for r in rows) >= 2  # the status history shows the interrupted attempts


@pytest.mark.slow
def test_a_diverging_cell_fails_with_its_reason_and_the_sweep_goes_on(cache_dir, tmp_path):
    spec = tmp_path / "nan.yaml"
    spec.write_text("name: nan\nfixed: [train.grad_clip=0, train.warmup=0]\n"
                    "cells:\n  - {train.lr: 0.001}\n  - {train.lr: 1.0e+8}\n  - {train.lr: 0.002}\n"
                    "launcher: basic\nretries: 0\n")
    res = cli("sweep", str(spec), "--out", str(tmp_path / "runs"), *MICRO_SWEEP, f"train.tokens={STEP_TOKENS * 40}",
              f"data.cache_dir={cache_dir}")
    assert res.returncode == 1
    states = {r.state: r for r in status_rows(tmp_path / "runs")}
    assert sorted(r.state for r in status_rows(tmp_path / "runs")) == ["done", "done", "failed"]
    assert "loss became nan at step" in states["failed"].reason
    again = cli("sweep", str(spec), "--out", str(tmp_path / "runs"), *MICRO_SWEEP, f"train.tokens={STEP_TOKENS * 40}",
                f"data.cache_dir={cache_dir}")
    assert again.returncode == 1 and "gave up" in again.stderr  # retries: 0, so it is not run again
