"""Sweeps: spec parsing, grid expansion, the plan, run-id stability, states, retries and locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_S, group_alive, kill_group_when

from dualobj import config
from dualobj import sweep as S
from dualobj.errors import ConfigError
from dualobj.run import RunDir, RunDirLocked, run_state, write_json
from dualobj.run.status import status_rows
from dualobj.sweep import launch as L
from dualobj.sweep.outcome import CellOutcome, Outcome

ROOT = Path(__file__).resolve().parent.parent


def spec_file(tmp_path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, fragment", [
    ("name: x\naxes: {seed: [0]\n", "is not valid YAML at line"),
    ("- a\n- b\n", "must be a mapping"),
    ("name: x\naxes: {seed: [0]}\nlaunch: basic\n", "unknown key(s) ['launch']"),
    ("name: 'a b'\naxes: {seed: [0]}\n", "'name' must be a simple name"),
    ("name: x\n", "has neither 'axes' nor 'cells'"),
    ("name: x\naxes: {seed: []}\n", "non-empty lists"),
    ("name: x\ncells: [1, 2]\n", "'cells' must be a list of mappings"),
    ("name: x\naxes: {seed: [0]}\nretries: -1\n", "'retries' must be a whole number"),
    ("name: x\naxes: {seed: [0]}\nfixed: [model]\n", "'fixed' must be a list of key=value"),
    ("name: x\naxes: {seed: [0]}\ngrace: 0\n", "'grace' must be a number of seconds in (0, 3600]"),
    ("name: x\naxes: {seed: [0]}\ngrace: soon\n", "'grace' must be a number of seconds in (0, 3600]"),
])
def test_bad_sweep_files_get_one_clear_line(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as e:
        S.load_spec(spec_file(tmp_path, text))
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_missing_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        S.load_spec(tmp_path / "nope.yaml")


def test_grid_and_explicit_cells_expand(tmp_path):
    spec = S.load_spec(spec_file(tmp_path, """
name: g
fixed: [model=tiny]
axes: {seed: [0, 1], objective.alpha: [0, 63/64]}
cells:
  - {data.repetitions: 1}
  - {data.repetitions: 4, train.lr: 0.001}
"""))
    cells = S.cell_overrides(spec, ["train.tokens=99999"])
    assert len(cells) == 2 * 2 * 2
    assert cells[0] == ["model=tiny", "seed=0", "objective.alpha=0", "data.repetitions=1", "train.tokens=99999"]
    assert "objective.alpha=0.984375" in cells[-1] and "train.lr=0.001" in cells[-1]


def test_plan_derives_quantities_and_stable_run_ids(tmp_path):
    spec = S.load_spec(ROOT / "sweeps" / "smoke.yaml")
    a = S.plan(spec, tmp_path)
    b = S.plan(spec, tmp_path)
    assert [c.run_id for c in a] == [c.run_id for c in b]
    assert len({c.run_id for c in a}) == len(a) == 6
    for c in a:
        assert c.run_id == config.run_id(c.cfg) and c.cfg.out == str(tmp_path / c.run_id)
        m = c.semantic
        assert m["unique_tokens"] == m["tokens"] // m["R"] and m["ar_epochs"] == pytest.approx(m["alpha"] * m["R"])
        assert c.steps == 65536 // (16 * 128) and c.state == "pending" and c.flops > 0 and c.est_s > 0


def test_run_id_ignores_launcher_and_logging_settings(tmp_path):
    spec = S.load_spec(ROOT / "sweeps" / "smoke.yaml")
    plain = [c.run_id for c in S.plan(spec, tmp_path)]
    noisy = [c.run_id for c in S.plan(spec, tmp_path, ["logger=wandb", "train.threads=1", "train.progress=false"])]
    changed = [c.run_id for c in S.plan(spec, tmp_path, ["train.lr=0.001"])]
    assert plain == noisy and set(plain).isdisjoint(changed)


def test_invalid_cells_are_all_reported_before_anything_runs(tmp_path):
    spec = S.load_spec(spec_file(tmp_path, """
name: bad
fixed: [train.tokens=65536]
cells:
  - {objective.alpha: 2}
  - {data.repetitions: 4096}
  - {objective.alpha: 0.5}
"""))
    cells = S.plan(spec, tmp_path)
    errors = [c.error for c in cells if c.error]
    assert len(errors) == 2
    assert "outside [0, 1]" in errors[0] and "under one sequence" in errors[1]


def test_paper_grid_plans_with_the_papers_numbers(tmp_path):
    spec = S.load_spec(ROOT / "sweeps" / "paper.yaml")
    cells = S.plan(spec, tmp_path)
    assert not [c.error for c in cells if c.error]
    assert len(cells) == 54
    by_r = {c.semantic["R"]: c.semantic["unique_tokens"] for c in cells}
    assert by_r[1] == 34_359_738_368 and by_r[256] == 134_217_728
    assert sorted(by_r) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert all(c.steps == 8192 and c.params == 468_700_160 for c in cells)
    total = sum(c.flops for c in cells)
    assert 5e21 < total < 6.5e21  # 54 x ~1.07e20 (6 N D incl. head + attention)
    launcher = L.launcher_config(spec, tmp_path, [])
    assert "SlurmLauncher" in launcher and "timeout_min: 1440" in launcher


def _status(rd: RunDir, **fields):
    rd.create()
    write_json(rd.status_path, {"heartbeat": time.time(), "attempts": 1, **fields})


def test_cell_states_from_run_directories(tmp_path):
    done, running, dead, failed, damaged = (RunDir(tmp_path / n) for n in ("d", "r", "x", "f", "z"))
    _status(done, state="done")
    write_json(done.summary_path, {"val/ar_nll": 1.0})
    _status(running, state="running")
    _status(dead, state="running")
    _status(failed, state="failed", error="boom")
    _status(damaged, state="done")
    damaged.summary_path.write_text("{not json")
    assert run_state(tmp_path / "none") == "pending"
    with running.lock():
        assert running.is_locked()
        assert run_state(running.path) == "running"
        with pytest.raises(RunDirLocked):
            running.lock().__enter__()  # a second holder is refused while the first lives
    assert run_state(running.path) == "dead"  # its holder is gone: a re-run resumes it
    assert [run_state(r.path) for r in (done, dead, failed, damaged)] == ["done", "dead", "failed", "damaged"]
    rows = {r.run_id: r for r in status_rows(tmp_path)}
    assert rows["z"].state == "damaged" and rows["f"].reason == "boom"


def test_a_failed_cell_is_retried_up_to_the_limit(tmp_path, micro):
    cfg = config.load([*micro, "train.tokens=512", f"out={tmp_path / 'r'}"])
    from omegaconf import OmegaConf

    node = OmegaConf.structured(cfg)
    _status(RunDir(tmp_path / "r"), state="failed", attempts=2, error="earlier crash")
    out = L.run_cell(node, max_attempts=2)
    assert out.outcome is Outcome.GAVE_UP and "failed 2 times" in out.error
    _status(RunDir(tmp_path / "r"), state="failed", attempts=1, error="earlier crash")
    assert L.run_cell(node, max_attempts=2) == CellOutcome(config.run_id(cfg), Outcome.DONE)
    assert json.loads((tmp_path / "r" / "status.json").read_text())["attempts"] == 2


MICRO_CLI = ["model.vocab_size=512", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64",
             "model.seq_len=32", "train.batch_size=8", "eval.at_end=false"]


def three_cells(tmp_path) -> Path:
    """smoke.yaml's α axis at one R: enough for two cells running at once and one waiting (kill tests)."""
    return spec_file(tmp_path, "name: three\nfixed: [model=tiny, data.repetitions=8]\n"
                               "axes:\n  objective.alpha: [0, 1/2, 1]\nlauncher: {name: joblib, jobs: 2}\nretries: 1\n")


def sweep_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "dualobj.cli", "sweep", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_smoke_sweep_runs_through_hydra_launchers(tmp_path, cache_dir, launcher):
    out = tmp_path / "sweep"
    args = [str(ROOT / "sweeps" / "smoke.yaml"), f"hydra/launcher={launcher}", "--out", str(out),
            *MICRO_CLI, "train.tokens=2048", f"data.cache_dir={cache_dir}"]
    res = sweep_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = status_rows(out)
    assert len(rows) == 6 and all(r.state == "done" and r.attempts == 1 for r in rows)
    again = sweep_cli(*args)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    status = subprocess.run([sys.executable, "-m", "dualobj.cli", "status", str(out)], capture_output=True, text=True)
    assert status.returncode == 0 and "6 done" in status.stdout


def _freeze_inside_a_cell(proc: subprocess.Popen, out: Path) -> str:
    """Stop ``proc``'s process group (SIGSTOP) while one of its cells is training; return that cell's id.

    The check that decides runs with the group frozen, so the cell cannot finish in between: the frozen
    sweep holds that cell's lock for as long as the caller likes, however loaded the machine is.
    """
    import signal

    def training() -> list[str]:
        return [st.parent.name for st in out.glob("*/status.json")
                if json.loads(st.read_text()).get("state") == "running"]

    deadline = time.time() + HANG_S
    while True:
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before it was seen training"
        if training():
            os.killpg(proc.pid, signal.SIGSTOP)
            if held := training():
                return held[0]
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.02)


@pytest.mark.slow
def test_two_sweeps_on_one_folder_train_each_cell_once(tmp_path, cache_dir):
    import signal

    out = tmp_path / "sweep"
    args = [str(three_cells(tmp_path)), "hydra/launcher=basic", "--out", str(out), *MICRO_CLI,
            "train.tokens=2560", f"data.cache_dir={cache_dir}"]
    # The first sweep is frozen inside a cell; the second runs whole meanwhile and must leave that cell
    # alone ("running elsewhere"); then the first goes on, finishes its cell and finds the rest done.
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "dualobj.cli", "sweep", *args], start_new_session=True,
                                 env={**os.environ, "DUALOBJ_STEP_DELAY": "0.05"}, stdout=log, stderr=log)
    try:
        held = _freeze_inside_a_cell(first, out)
        second = sweep_cli(*args, timeout=HANG_S)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert first.wait(timeout=HANG_S) == 0, (tmp_path / "first.log").read_text()[-2000:]
    outs = [((tmp_path / "first.log").read_text(), ""), (second.stdout, second.stderr)]
    rows = status_rows(out)
    assert len(rows) == 3 and all(r.state == "done" for r in rows), outs
    assert all(r.attempts == 1 for r in rows), [(r.run_id, r.attempts) for r in rows]
    assert f"{held}: running elsewhere" in second.stderr, second.stderr[-2000:]
    for r in rows:
        steps = [json.loads(line)["step"] for line in (out / r.run_id / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)), "a cell was trained twice"


@pytest.mark.slow
def test_killed_sweep_finishes_on_rerun_without_training_a_cell_twice(tmp_path, cache_dir):

    out = tmp_path / "sweep"
    args = [str(three_cells(tmp_path)), "--out", str(out), *MICRO_CLI, "train.tokens=5120",
            "train.checkpoint_every=4", f"data.cache_dir={cache_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "dualobj.cli", "sweep", *args], start_new_session=True,
                            env={**os.environ, "DUALOBJ_STEP_DELAY": "0.05"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill while some cell is half-way (a checkpoint at step 8 of 20, no summary yet). The whole process
    # group is frozen (SIGSTOP) before the check that decides, so no cell can finish in between.
    def half_way():
        return [c.parent.parent.name for c in out.glob("*/checkpoints/step_0000008")
                if not (c.parent.parent / "summary.json").exists()]

    midway = kill_group_when(proc, half_way, "the sweep")
    # The workers die a moment after the parent: wait until none holds a run's lock any more.
    deadline = time.time() + HANG_S
    while any(RunDir(d).is_locked() for d in out.iterdir() if d.is_dir()):
        assert time.time() < deadline, "killed workers still hold their runs"
        time.sleep(0.02)
    before = {r.run_id: r for r in status_rows(out)}
    finished = {k for k, r in before.items() if r.state == "done"}
    stamps = {k: (out / k / "status.json").read_text() for k in finished}
    assert all(before[k].state == "dead" for k in midway), {k: before[k].state for k in midway}

    res = sweep_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    after = status_rows(out)
    assert all(r.state == "done" for r in after) and len(after) == 3
    for k in finished:  # finished cells were skipped, not re-run
        assert (out / k / "status.json").read_text() == stamps[k]
    for r in after:
        steps = [json.loads(line)["step"] for line in (out / r.run_id / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps))
        assert r.attempts == (1 if r.run_id in finished or before[r.run_id].state == "pending" else 2)


@pytest.mark.slow
def test_report_cli_writes_tables_and_plots_for_a_sweep(tmp_path, cache_dir):
    out = tmp_path / "sweep"
    res = sweep_cli(str(ROOT / "sweeps" / "smoke.yaml"), "--out", str(out), *MICRO_CLI, "train.tokens=1024",
                    f"data.cache_dir={cache_dir}")
    assert res.returncode == 0, res.stderr[-2000:]
    rep = subprocess.run([sys.executable, "-m", "dualobj.cli", "report", str(out), "--format", "csv,md",
                          "--out", str(tmp_path / "rep")], capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert "| R \\ α |" in rep.stdout and "**" in rep.stdout  # the markdown table, best cell marked
    import pandas as pd

    table = pd.read_csv(tmp_path / "rep" / "tiny_val_ar_nll.csv")
    assert len(table) == 2  # one row per R
    assert {"0.0", "0.5", "1.0"} <= set(table.columns) and "best α" in table.columns
    assert len(list((tmp_path / "rep").glob("*.png"))) >= 4


def test_status_and_report_on_an_empty_folder_fail_clearly(tmp_path):
    for cmd in ("status", "report"):
        res = subprocess.run([sys.executable, "-m", "dualobj.cli", cmd, str(tmp_path)], capture_output=True, text=True)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "no runs" in res.stderr


@pytest.mark.slow
def test_submitit_timeout_signal_checkpoints_then_hands_over_to_the_requeue_handler(tmp_path, micro):
    out = tmp_path / "r"
    args = [*micro, "train.tokens=51200", f"out={out}"]
    hold = tmp_path / "hold"
    script = f"""
import json, os, signal, threading, time
from pathlib import Path
calls = []
def requeue(signum, frame):  # stands in for submitit's checkpoint-and-requeue handler
    calls.append(sorted(p.name for p in Path({str(out)!r}, "checkpoints").glob("step_*")))
signal.signal(signal.SIGUSR2, requeue)
from omegaconf import OmegaConf
from dualobj import config
from dualobj.sweep import launch
cfg = config.load({args!r})
def fire():  # the run holds before step 20 until it is signalled (DUALOBJ_HOLD)
    while not list(Path({str(hold)!r}).glob("*.step.held")):
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGUSR2)
threading.Thread(target=fire, daemon=True).start()
res = launch.run_cell(OmegaConf.structured(cfg))
print(json.dumps({{"res": res.to_json(), "calls": calls}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "DUALOBJ_HOLD": "step@20", "DUALOBJ_HOLD_DIR": str(hold)}, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["res"]["outcome"] == "interrupted"
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and 0 < status["step"] < 200
    # The requeue handler ran once, after the checkpoint at the stopping step was written.
    assert got["calls"] == [[f"step_{status['step']:07d}"]]


@pytest.mark.slow
def test_a_cell_process_killed_by_the_os_fails_that_cell_and_the_sweep_goes_on(tmp_path, cache_dir):
    """joblib workers train each cell in a fresh process: one killed with SIGKILL (as the OOM killer does)
    is a failed cell, reported in one line, not a lost worker that ends the sweep; a re-run finishes it."""
    out = tmp_path / "sweep"
    args = [str(three_cells(tmp_path)), "hydra/launcher=joblib", "--out", str(out),
            *MICRO_CLI, "train.tokens=2048", f"data.cache_dir={cache_dir}"]
    killed = sweep_cli(*args, env={"DUALOBJ_FAULT": "step@2"}, timeout=HANG_S)
    assert "Traceback" not in killed.stderr and "TerminatedWorkerError" not in killed.stderr, killed.stderr[-3000:]
    assert killed.stderr.count("ended with exit code -9 (killed: out of memory?)") == 3, killed.stderr[-3000:]
    assert "0/3 cells done" in killed.stderr
    again = sweep_cli(*args, timeout=HANG_S)
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(r.state == "done" for r in status_rows(out))


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_file_loads_and_plans_without_errors(tmp_path, path):
    spec = S.load_spec(path)
    cells = S.plan(spec, tmp_path)
    assert not [c.error for c in cells if c.error]
    assert cells or spec.search is not None  # a search plans its cells round by round


def test_the_second_seed_grid_shares_the_mini_grids_seed_one_cells(tmp_path):
    mini = {c.run_id: c.semantic for c in S.plan(S.load_spec(ROOT / "sweeps" / "mini.yaml"), tmp_path)}
    seeds = {c.run_id: c.semantic for c in S.plan(S.load_spec(ROOT / "sweeps" / "mini_seeds.yaml"), tmp_path)}
    assert len(mini) == 36 and len(seeds) == 28
    shared = set(mini) & set(seeds)  # seed 1 at α = 1/2 and 1: the same runs, trained once
    assert len(shared) == 8 and {seeds[r]["alpha"] for r in shared} == {0.5, 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_sweep_killed_alone_leaves_no_process_and_its_cells_resume(tmp_path, cache_dir, sig):
    """A signal to the sweep's own process (not its group, as `kill PID` or a job manager sends): its joblib
    workers and their cell processes do not train on. The cells checkpoint and stop (interrupted), every
    process of the sweep ends, and a re-run finishes each cell from its checkpoint."""
    out, hold = tmp_path / "sweep", tmp_path / "hold"
    args = [str(three_cells(tmp_path)), "hydra/launcher=joblib", "--out", str(out), *MICRO_CLI,
            "train.tokens=5120", "train.checkpoint_every=4", f"data.cache_dir={cache_dir}"]
    # Both running cells pause before step 8 (checkpoint at 4 written) until they are told to stop: the
    # signal reaches a sweep whose two cells are mid-way, however slow or busy the machine.
    proc = subprocess.Popen([sys.executable, "-m", "dualobj.cli", "sweep", *args], start_new_session=True,
                            env={**os.environ, "DUALOBJ_HOLD": "step@8", "DUALOBJ_HOLD_DIR": str(hold)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + HANG_S
    while len(list(hold.glob("*.step.held"))) < 2:
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before two cells were held"
        time.sleep(0.02)
    proc.send_signal(getattr(signal, sig))
    code = proc.wait(timeout=HANG_S)
    while group_alive(proc.pid):  # the workers and cells end on their own, without being waited for
        assert time.time() < deadline, f"processes of the killed sweep live on: {group_alive(proc.pid)}"
        time.sleep(0.05)
    assert code == (130 if sig == "SIGTERM" else -signal.SIGKILL)
    states = {r.run_id: r.state for r in status_rows(out)}
    held = [k for k in states if (out / k / "checkpoints").is_dir() and states[k] != "done"]
    assert len(held) == 2 and all(states[k] == "interrupted" for k in held), states
    again = sweep_cli(*args, timeout=HANG_S)
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(r.state == "done" for r in status_rows(out))
    for k in held:  # the re-run's attempt is the run's second: the same run directory, picked up again
        assert json.loads((out / k / "status.json").read_text())["attempts"] == 2


def test_grace_defaults_to_60_seconds_and_is_read_from_the_file(tmp_path):
    assert S.load_spec(ROOT / "sweeps" / "smoke.yaml").grace == 60.0
    assert S.load_spec(spec_file(tmp_path, "name: x\naxes: {seed: [0]}\ngrace: 90\n")).grace == 90.0


def test_a_joblib_sweep_with_one_job_trains_its_cells(tmp_path, cache_dir):
    """joblib runs one job in the sweep's own process: the cell still gets its fresh process (this used to
    end the sweep silently, exit 0 with nothing trained, as if its parent were gone)."""
    spec = spec_file(tmp_path, "name: one\nfixed: [model=tiny]\naxes:\n  seed: [0, 1]\n"
                               "launcher: {name: joblib, jobs: 1}\n")
    res = sweep_cli(str(spec), "--out", str(tmp_path / "runs"), *MICRO_CLI, "train.tokens=512",
                    f"data.cache_dir={cache_dir}", timeout=HANG_S)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = status_rows(tmp_path / "runs")
    assert len(rows) == 2 and all(r.state == "done" for r in rows), [(r.run_id, r.state) for r in rows]
