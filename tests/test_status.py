"""`dualobj status` and `dualobj report` read one story from a folder: the same runs (pending cells of a sweep
plan included), the same states with the same reasons, the same facts from config.yaml. Hand-made run
directories; no training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualobj import cli
from dualobj.report import load_runs, status_line, write_report
from dualobj.run.status import counts_line, folder_runs, status_rows


def make_run(root: Path, name: str, *, R=1, alpha=0.5, seed=0, state="done", summary: str | dict | None = None,
             error: str | None = None, schedule: str | None = None) -> Path:
    """A run directory as `dualobj train` leaves it (config.yaml, status.json, summary.json when done)."""
    d = root / name
    d.mkdir(parents=True)
    objective = f"  alpha: {alpha}\n" + (f"  alpha_schedule: {schedule}\n  alpha_start: 1.0\n" if schedule else "")
    (d / "config.yaml").write_text(f"run_id: {name}\nmodel:\n  name: tiny\n  seq_len: 32\ndata:\n  repetitions: {R}\n"
                                   f"objective:\n{objective}train:\n  tokens: 4096\nseed: {seed}\n")
    if state is not None:
        (d / "status.json").write_text(json.dumps({"state": state, "step": 4, "total_steps": 8, "attempts": 1,
                                                   "heartbeat": 1.0e9, "run_id": name, "error": error}))
    if state == "done":
        body = summary if isinstance(summary, str) else json.dumps(summary or {"val/ar_nll": 3.0 + alpha})
        (d / "summary.json").write_text(body)
    return d


def plan(root: Path, cells: list[dict]) -> None:
    """sweep.json as `dualobj sweep` writes it (only the keys status and report read)."""
    full = [{"model": "tiny", "seed": 0, "tokens": 4096, "steps": 8, "flops": 1e9, "est_s": 60.0, "overrides": [],
             **c} for c in cells]
    (root / "sweep.json").write_text(json.dumps({"name": root.name, "cells": full}))


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "sweep"
    make_run(root, "done1", R=1, alpha=0.0)
    make_run(root, "done2", R=1, alpha=1.0)
    make_run(root, "dmg", R=4, alpha=1.0, summary='{"val/ar_nll": 3.')  # a summary cut short
    make_run(root, "dead", R=4, alpha=0.5, state="running")  # no process holds its lock
    make_run(root, "fail", R=4, alpha=0.0, state="failed", error="RuntimeError: loss became nan at step 3")
    plan(root, [{"run_id": rid, "R": r, "alpha": a} for rid, r, a in
                [("done1", 1, 0.0), ("done2", 1, 1.0), ("dmg", 4, 1.0), ("dead", 4, 0.5), ("fail", 4, 0.0),
                 ("todo", 1, 0.5)]])
    return root


def test_status_and_report_list_the_same_runs_with_the_same_states_reasons_and_facts(folder):
    rows = {r.run_id: r for r in status_rows(folder)}
    runs = load_runs(folder).set_index("run_id")
    assert set(rows) == set(runs.index) == {"done1", "done2", "dmg", "dead", "fail", "todo"}  # pending included
    for rid, r in rows.items():
        row = runs.loc[rid]
        assert r.state == row["state"], rid
        assert r.reason == (row["note"] if isinstance(row["note"], str) else None), rid
        assert (r.model, float(r.R), r.alpha, r.seed) == (
            row["model"], row["repetitions"], row["alpha"], row["seed"]), rid
    assert rows["dmg"].state == "damaged" and rows["dmg"].reason == "summary.json is not valid JSON"
    assert rows["dead"].state == "dead" and "no live process holds the run" in rows["dead"].reason
    assert rows["fail"].reason == "RuntimeError: loss became nan at step 3"
    assert rows["todo"].state == "pending" and (rows["todo"].R, rows["todo"].alpha) == (1, 0.5)
    assert status_line(load_runs(folder)) == counts_line(r.state for r in rows.values()) == (
        "6 runs: 2 done, 1 failed, 0 running, 1 pending, 1 dead, 1 damaged")


def test_the_report_shows_pending_cells_and_the_reasons(folder, tmp_path):
    text = write_report(folder, formats=["md"], out_dir=tmp_path / "r", plots=False).markdown
    assert "6 runs: 2 done, 1 failed, 0 running, 1 pending, 1 dead, 1 damaged" in text
    assert "| 1 | **3.0000** | pending | 4.0000 |" in text  # R=1: α=1/2 is planned, not started
    assert "- pending: todo (tiny, R=1, α=1/2, seed=0)" in text
    assert "- damaged: dmg (tiny, R=4, α=1, seed=0): summary.json is not valid JSON" in text


def test_status_prints_the_reasons_and_the_report_counts(folder):
    res = CliRunner().invoke(cli.app, ["status", str(folder)])
    assert res.exit_code == 1, res.output  # not all done
    out = res.stdout
    assert "6 runs: 2 done, 1 failed, 0 running, 1 pending, 1 dead, 1 damaged; compute left" in out
    assert "dmg (damaged): summary.json is not valid JSON" in out
    assert "fail (failed): RuntimeError: loss became nan at step 3" in out
    assert "dead (dead): status says running but no live process holds the run" in out


def test_without_sweep_json_the_facts_come_from_config_yaml(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "a", "r1", R=16, alpha=0.25, seed=3)  # any depth, no sweep.json anywhere
    make_run(root, "r2", R=4, alpha=1.0, state="failed", error="boom")
    rows = {r.run_id: r for r in status_rows(root)}
    assert (rows["r1"].model, rows["r1"].R, rows["r1"].alpha, rows["r1"].seed) == ("tiny", 16, 0.25, 3)
    assert (rows["r2"].R, rows["r2"].alpha, rows["r2"].reason) == (4, 1.0, "boom")
    res = CliRunner().invoke(cli.app, ["status", str(root)])
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in res.stdout.splitlines() if "│" in line]
    assert ["r1", "tiny", "16", "1/4", "3", "done"] in [c[:6] for c in cells], res.stdout


def test_a_single_run_directory_is_accepted(tmp_path):
    run = make_run(tmp_path, "demo", R=4, alpha=0.5)
    res = CliRunner().invoke(cli.app, ["status", str(run)])
    assert res.exit_code == 0, res.output
    assert "1 run: 1 done, 0 failed, 0 running, 0 pending" in res.stdout
    assert [r.run_id for r in status_rows(run)] == ["demo"] and [i.run_id for i, _ in folder_runs(run)] == ["demo"]
    assert len(load_runs(run)) == 1


def test_status_json_for_scripts(folder):
    res = CliRunner().invoke(cli.app, ["status", "--json", str(folder)])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"done": 2, "failed": 1, "running": 0, "pending": 1, "dead": 1, "damaged": 1}
    assert doc["all_done"] is False and doc["flops_left"] == pytest.approx(1e9 + 3 * 0.5e9)
    runs = {r["run_id"]: r for r in doc["runs"]}
    assert runs["dmg"]["reason"] == "summary.json is not valid JSON"
    assert (runs["todo"]["state"], runs["todo"]["R"], runs["todo"]["alpha"], runs["todo"]["step"]) == (
        "pending", 1, 0.5, 0)
    assert runs["done1"]["last_loss"] is None


def _watch(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "DUALOBJ_MALLOC": "off"}
    return subprocess.Popen([sys.executable, "-m", "dualobj.cli", "status", "--watch", "--json", "--interval", "0.05",
                             str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_watch_exits_at_once_when_every_run_is_done(tmp_path):
    root = tmp_path / "sw"
    make_run(root, "a", alpha=0.0)
    make_run(root, "b", alpha=1.0)
    env = {**os.environ, "DUALOBJ_MALLOC": "off"}
    res = subprocess.run([sys.executable, "-m", "dualobj.cli", "status", "--watch", "--interval", "3600", str(root)],
                         capture_output=True, text=True, env=env, timeout=120)  # an hour's wait would time out
    assert res.returncode == 0, res.stderr
    assert "2 runs: 2 done" in res.stdout


def test_watch_follows_a_pending_cell_until_it_is_done(tmp_path):
    root = tmp_path / "sw"
    make_run(root, "a", alpha=0.0)
    plan(root, [{"run_id": "a", "R": 1, "alpha": 0.0}, {"run_id": "b", "R": 1, "alpha": 1.0}])
    proc = _watch(root)
    try:
        first = json.loads(proc.stdout.readline())  # the first look: b is pending
        assert first["counts"]["pending"] == 1 and not first["all_done"]
        make_run(root, "b", alpha=1.0)  # the cell finishes
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["all_done"] and last["counts"]["done"] == 2
