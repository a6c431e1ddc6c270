"""Data parallelism: 2 gloo processes on CPU follow the single-process trajectory for the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import HANG_S

from dualobj.run import RunDir

STEP_TOKENS = 8 * 32


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "dualobj.cli", "train", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=HANG_S)


def rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def assert_same_trajectory(a, b, rtol=2e-4):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train/loss", "train/ar_loss", "train/md_loss", "train/grad_norm", "val/ar_nll", "val/md_elbo"):
            if ra.get(key) is not None:
                assert rb[key] == pytest.approx(ra[key], rel=rtol), (ra["step"], key)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_and_resume_across_world_sizes(micro, tmp_path):
    args = [*micro, "train.precision=fp32", f"train.tokens={STEP_TOKENS * 12}", "train.log_every=1",
            "objective.alpha=0.5", "data.repetitions=2", "train.checkpoint_every=4"]
    one, two, mixed = tmp_path / "one", tmp_path / "two", tmp_path / "mixed"
    r1 = run_cli(*args, f"out={one}")
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = run_cli(*args, "train.nproc=2", f"out={two}")
    assert r2.returncode == 0, r2.stderr[-3000:]
    status = json.loads((two / "status.json").read_text())
    assert status["state"] == "done" and status["world_size"] == 2
    assert rows(one)[0]["train/ar_rows"] == 4  # alpha=0.5 of the global batch of 8, split over both ranks
    assert_same_trajectory(rows(one), rows(two))

    # Start with 2 processes, kill -9 both after the checkpoint at step 4 (DUALOBJ_FAULT: each rank sends
    # itself SIGKILL after step 6, whatever the machine's load), finish with 1: same global batch, same run.
    killed = run_cli(*args, "train.nproc=2", f"out={mixed}", env={"DUALOBJ_FAULT": "step@6"})
    assert killed.returncode != 0
    status = json.loads((mixed / "status.json").read_text())
    assert status["state"] == "running" and status["world_size"] == 2
    assert sorted(p.name for p in (mixed / "checkpoints").iterdir()) == ["step_0000004"]
    # torchrun returns once its workers are gone, and the kernel drops a dead process's lock at once
    assert not RunDir(mixed).is_locked(), "a killed rank still holds the run"
    r3 = run_cli(*args, f"out={mixed}")
    assert r3.returncode == 0 and "resuming" in r3.stderr, r3.stderr[-3000:]
    assert_same_trajectory(rows(one), rows(mixed))
