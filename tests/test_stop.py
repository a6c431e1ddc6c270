"""Stopping is prompt in every phase: SIGTERM during the end-of-training evaluation, to a cell, to a sweep
alone, to its whole process group, and a cell that will not stop is killed after the sweep's grace.

Every test synchronises through an explicit handshake (``DUALOBJ_HOLD=eval@1``: a run pauses before its
second evaluation task, after writing the first, and says so in a file), never through the clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_S, MICRO, group_alive

from dualobj.run.status import status_rows

EVAL = ["eval.at_end=true", "eval.tasks=[val,probe_cloze]", "eval.limit=6", "eval.probe_items=6",
        "eval.md_samples=2", "eval.val_windows=4", "eval.modes=[ar,md]"]


def _micro(cache_dir) -> list[str]:
    return [*[a for a in MICRO if not a.startswith("eval.at_end")], f"data.cache_dir={cache_dir}", *EVAL]


def _wait_for(pred, proc, what: str) -> None:
    deadline = time.time() + HANG_S
    while not pred():
        assert proc.poll() is None and time.time() < deadline, f"the process ended before {what}"
        time.sleep(0.02)


def _alive(pids) -> list[int]:
    alive = []
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(p)
    return alive


def _wait_gone(pgid: int) -> None:
    deadline = time.time() + HANG_S
    while group_alive(pgid):
        assert time.time() < deadline, f"processes live on: {group_alive(pgid)}"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_in_evaluation_stops_the_cell_keeps_finished_tasks_and_the_rerun_scores_the_rest(cache_dir,
                                                                                                  tmp_path):
    out, hold = tmp_path / "run", tmp_path / "hold"
    argv = [sys.executable, "-m", "dualobj.cli", "train", *_micro(cache_dir), "train.tokens=2560", f"out={out}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "DUALOBJ_HOLD": "eval@1", "DUALOBJ_HOLD_DIR": str(hold)})
    _wait_for(lambda: any(hold.glob("*.eval.held")), proc, "it paused in its evaluation")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG_S)
    stop_s = time.monotonic() - t0
    _wait_gone(proc.pid)
    assert not (hold / "release").exists()  # it stopped on the request: the pause was never released
    assert proc.returncode == 2 and "during the evaluation, 1 task(s) kept" in err, err[-2000:]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and status["phase"] == "eval", status
    kept = out / "eval" / "val.json"
    assert kept.is_file() and not (out / "eval" / "probe_cloze.json").exists()
    stamp = json.loads(kept.read_text())["written"]
    print(f"stopped {stop_s:.2f} s after SIGTERM")

    again = subprocess.run([sys.executable, "-m", "dualobj.cli", "train", *_micro(cache_dir), "train.tokens=2560",
                            f"out={out}"], capture_output=True, text=True, timeout=HANG_S)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(kept.read_text())["written"] == stamp  # the finished task was kept, not scored again
    summary = json.loads((out / "summary.json").read_text())
    assert {"eval/val/ar_bpb", "eval/val/md_bpb", "eval/probe_cloze/ar", "eval/probe_cloze/md"} <= set(summary)
    assert json.loads((out / "status.json").read_text())["state"] == "done"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # nothing trained twice


def _sweep_file(tmp_path: Path, grace: float = 60) -> Path:
    p = tmp_path / "stop.yaml"
    p.write_text("name: stop\nfixed: [model=tiny]\naxes:\n  objective.alpha: [0, 1/2, 1]\n"
                 f"launcher: {{name: joblib, jobs: 2}}\nretries: 1\ngrace: {grace}\n")
    return p


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sweep", "group"])
def test_sigterm_to_a_sweep_in_evaluation_stops_every_cell_and_the_rerun_finishes(cache_dir, tmp_path, target):
    """SIGTERM to the sweep process alone (as `kill PID` or a job manager sends it), or to its whole group
    (Ctrl-C in a terminal, `scancel`): both cells paused in evaluation stop, keep their first task, are
    marked interrupted, no process remains, and a re-run scores only the missing task of each."""
    out, hold = tmp_path / "sweep", tmp_path / "hold"
    args = [str(_sweep_file(tmp_path)), "--out", str(out), *_micro(cache_dir), "train.tokens=2560"]
    proc = subprocess.Popen([sys.executable, "-m", "dualobj.cli", "sweep", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "DUALOBJ_HOLD": "eval@1", "DUALOBJ_HOLD_DIR": str(hold)})
    _wait_for(lambda: len(list(hold.glob("*.eval.held"))) >= 2, proc, "two cells paused in evaluation")
    if target == "sweep":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=HANG_S)
    _wait_gone(proc.pid)
    held = [p.name.split(".")[0] for p in hold.glob("*.eval.held")]
    states = {r.run_id: r.state for r in status_rows(out)}
    assert all(states[k] == "interrupted" for k in held), states
    stamps = {k: json.loads((out / k / "eval" / "val.json").read_text())["written"] for k in held}
    assert not any((out / k / "eval" / "probe_cloze.json").exists() for k in held)

    again = subprocess.run([sys.executable, "-m", "dualobj.cli", "sweep", *args], capture_output=True, text=True,
                           timeout=HANG_S)
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(r.state == "done" for r in status_rows(out)) and len(status_rows(out)) == 3
    for k in held:
        assert json.loads((out / k / "eval" / "val.json").read_text())["written"] == stamps[k]
        assert (out / k / "eval" / "probe_cloze.json").is_file()


@pytest.mark.slow
def test_a_cell_that_does_not_stop_is_killed_after_the_grace_and_marked_interrupted(cache_dir, tmp_path):
    """Cells that ignore the stop request (DUALOBJ_HOLD_DEAF: the pause does not listen) are killed once the
    sweep file's grace has passed: the sweep ends, no process remains, their runs say interrupted, and a
    re-run finishes them."""
    out, hold = tmp_path / "sweep", tmp_path / "hold"
    args = [str(_sweep_file(tmp_path, grace=1)), "--out", str(out), *_micro(cache_dir), "train.tokens=2560"]
    proc = subprocess.Popen([sys.executable, "-m", "dualobj.cli", "sweep", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "DUALOBJ_HOLD": "eval@1", "DUALOBJ_HOLD_DIR": str(hold),
                                 "DUALOBJ_HOLD_DEAF": "1"})
    _wait_for(lambda: len(list(hold.glob("*.eval.held"))) >= 2, proc, "two cells paused in evaluation")
    cells = [int(p.read_text()) for p in hold.glob("*.eval.held")]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=HANG_S)
    _wait_gone(proc.pid)
    assert not _alive(cells) and not (hold / "release").exists()
    held = [p.name.split(".")[0] for p in hold.glob("*.eval.held")]
    status = {k: json.loads((out / k / "status.json").read_text()) for k in held}
    assert all(s["state"] == "interrupted" and "grace" in s["error"] for s in status.values()), status
    again = subprocess.run([sys.executable, "-m", "dualobj.cli", "sweep", *args], capture_output=True, text=True,
                           timeout=HANG_S)
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(r.state == "done" for r in status_rows(out))
