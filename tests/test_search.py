"""Adaptive, GP-guided sweeps: the search block, the knowledge gradient, the search loop on a known surface,
resumption, the trace in the report, the AR share of the gradient weight, and the replay benchmark's parts."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import bench_module, kill_group_when

from dualobj.budget import ar_share
from dualobj.run.status import status_rows
from dualobj.sweep import load_spec
from dualobj.sweep import search as Q

ROOT = Path(__file__).resolve().parent.parent
MICRO = ["model.vocab_size=512", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64",
         "model.seq_len=32", "train.batch_size=8", "eval.at_end=false", "train.threads=1"]
SEARCH = """\
name: s
fixed: [model=tiny]
search:
  metric: val/ar_bpb
  values: [0, 1/4, 1/2, 3/4, 1]
  conditions: {data.repetitions: [1, 2]}
  initial: [0, 1]
  budget: 6
  batch: 1
launcher: basic
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- the search block
def test_search_block_is_parsed_with_its_defaults(tmp_path):
    s = load_spec(write(tmp_path, SEARCH.replace("values: [0, 1/4, 1/2, 3/4, 1]", "range: [0, 1]\n  step: 1/8")
                        .replace("  batch: 1\n", "").replace("launcher: basic", "launcher: {name: joblib, jobs: 2}")))
    q = s.search
    assert q.values == [k / 8 for k in range(9)] and q.conditions == [1.0, 2.0]
    assert q.initial == {1.0: [0.0, 1.0], 2.0: [0.0, 1.0]} and q.design_size == 4
    assert (q.goal, q.batch, q.budget, q.space, q.axis) == ("min", 2, 6, "alpha", "objective.alpha")
    assert (q.delta, q.confidence) == (0.01, 0.9)
    tight = load_spec(write(tmp_path, SEARCH.replace("  budget: 6", "  delta: 1/200\n  confidence: 0.95\n  budget: 6")))
    assert (tight.search.delta, tight.search.confidence) == (0.005, 0.95)
    assert Q.problem_of(tight.search).delta == 0.005 and Q.problem_of(tight.search).confidence == 0.95
    score = load_spec(write(tmp_path, SEARCH.replace("val/ar_bpb", "eval/avg/ar").replace("initial: [0, 1]",
                                                                                           "initial: {2: [1/2]}")))
    assert score.search.goal == "max" and score.search.initial == {2.0: [0.5]} and score.search.batch == 1


BAD_SEARCH = {
    "empty domain": (SEARCH.replace("values: [0, 1/4, 1/2, 3/4, 1]", "values: []"), "the search domain is empty"),
    "range low above high": (SEARCH.replace("values: [0, 1/4, 1/2, 3/4, 1]", "range: [0.75, 0.25]")
                             .replace("initial: [0, 1]", "initial: []"), "the search domain is empty"),
    "budget below the design": (SEARCH.replace("budget: 6", "budget: 3"),
                                "search budget 3 is below the initial design's 4 cells; raise the budget"),
    "initial value off the domain": (SEARCH.replace("initial: [0, 1]", "initial: [0, 0.6]"),
                                     "search initial value(s) [0.6] are not in the search domain"),
    "unknown search key": (SEARCH.replace("budget: 6", "budget: 6\n  budjet: 6"), "unknown search key(s) ['budjet']"),
    "axes next to a search": (SEARCH + "axes: {seed: [0, 1]}\n", "a search takes its cells from the search block"),
    "condition other than R": (SEARCH.replace("data.repetitions: [1, 2]", "seed: [0, 1]"),
                               "search conditions must be {data.repetitions: [1, 4, 16, 64]}"),
    "values outside [0, 1]": (SEARCH.replace("values: [0, 1/4, 1/2, 3/4, 1]", "values: [0, 1, 2]"),
                              "search values must lie in [0, 1]"),
    "searched axis not alpha": (SEARCH.replace("  budget: 6", "  axis: train.lr\n  budget: 6"),
                                "search axis 'train.lr' cannot be searched; use objective.alpha"),
    "metric that is not a run metric": (SEARCH.replace("val/ar_bpb", "accuracy"),
                                        "search metric 'accuracy' is not a run metric"),
    "delta not above 0": (SEARCH.replace("  budget: 6", "  delta: 0\n  budget: 6"),
                          "search delta=0 must be a number > 0 in the metric's units"),
    "confidence outside (0.5, 1)": (SEARCH.replace("  budget: 6", "  confidence: 1.5\n  budget: 6"),
                                    "search confidence=1.5 must lie between 0.5 and 1"),
}


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dualobj.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "80", "DUALOBJ_MALLOC": "off", **(env or {})})


def invoke(*args: str) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    from dualobj import cli

    res = CliRunner().invoke(cli.app, list(args))
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stderr
    assert lines and lines[-1].startswith("error:") and sum(x.startswith("error:") for x in lines) == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    return lines[-1]


@pytest.mark.parametrize("case", BAD_SEARCH)
def test_bad_search_blocks_get_one_line_before_anything_trains(case, tmp_path):
    text, fragment = BAD_SEARCH[case]
    out = tmp_path / "out"
    line = one_error_line(invoke("sweep", str(write(tmp_path, text)), "--out", str(out)))
    assert fragment in line, line
    assert not out.exists() or not any(out.iterdir())


def fake_done_run(folder: Path, name: str, summary: dict, objective: dict | None = None) -> Path:
    """A run directory as far as its files go: config.yaml, a done status.json and summary.json."""
    d = folder / name
    d.mkdir(parents=True)
    obj = {"alpha": 0.5, "ar_loss_scale": 1.0, **(objective or {})}
    (d / "config.yaml").write_text(f"run_id: {name}\nmodel:\n  name: tiny\n  seq_len: 32\ndata:\n  repetitions: 1\n"
                                   f"objective: {json.dumps(obj)}\nseed: 0\ntrain:\n  tokens: 4096\n")
    (d / "status.json").write_text(json.dumps({"state": "done", "step": 1, "total_steps": 1, "attempts": 1}))
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_a_metric_no_finished_run_has_is_refused_before_anything_trains(tmp_path):
    out = tmp_path / "out"
    fake_done_run(out, "old", {"val/ar_nll": 3.0, "val/md_bpb": 4.0})
    res = invoke("sweep", str(write(tmp_path, SEARCH)), "--out", str(out))
    line = one_error_line(res)
    assert "search metric 'val/ar_bpb': no finished run in" in line and "use one of val/ar_nll, val/md_bpb" in line
    assert sorted(p.name for p in out.iterdir()) == ["old"]  # nothing planned, nothing trained


# ----------------------------------------------------------------------------- the AR share
def test_ar_share_and_its_inverse():
    assert ar_share(0.5, 2.0) == pytest.approx(2 / 3) and ar_share(0.25, 1.0) == 0.25
    assert ar_share(0.0, 2.0) == 0.0 and ar_share(1.0, 2.0) == 1.0
    for s in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert ar_share(Q.to_alpha(s, "ar_share", 2.0), 2.0) == pytest.approx(s)
        assert Q.to_alpha(s, "alpha", 2.0) == s


def test_budget_reports_the_ar_share_of_the_papers_objective():
    from dualobj import config
    from dualobj.budget import Budget

    b = Budget(config.load(["objective=paper", "objective.alpha=1/2", "train.tokens=65536"]))
    assert b.ar_share == pytest.approx(2 / 3)
    sched = Budget(config.load(["objective.alpha_schedule=linear", "objective.alpha_start=1", "objective.alpha=0",
                                "objective.ar_loss_scale=2", "train.tokens=65536"]))
    assert sched.ar_share == pytest.approx(ar_share(sched.alpha_mean(), 2.0))


def test_load_runs_computes_the_ar_share_of_older_summaries_from_the_config(tmp_path):
    from dualobj.report import load_runs

    fake_done_run(tmp_path, "old", {"val/ar_bpb": 3.0}, {"alpha": 0.5, "ar_loss_scale": 2.0})
    fake_done_run(tmp_path, "new", {"val/ar_bpb": 3.0, "ar_share": 0.123}, {"alpha": 0.25})
    df = load_runs(tmp_path).set_index("run_id")
    assert df.loc["old", "ar_share"] == pytest.approx(2 / 3) and df.loc["new", "ar_share"] == 0.123


# ----------------------------------------------------------------------------- the acquisition
def test_knowledge_gradient_matches_its_closed_form():
    """Two points, equal means, one known exactly: observing the other (variance σ², noise τ²) gains
    E[max(-sZ, 0)] = s/√(2π) with s = σ²/√(σ² + τ²)."""
    mean, groups = np.zeros(2), [np.array([0, 1])]
    for var, noise in ((1.0, 0.0), (1.0, 1.0), (4.0, 0.5)):
        cov = np.diag([var, 0.0])
        kg = Q.knowledge_gradient(mean, cov, noise, groups, [0, 1], lower=True)
        s = var / math.sqrt(var + noise)
        assert kg[0] == pytest.approx(s / math.sqrt(2 * math.pi), rel=1e-12) and kg[1] == 0.0
        assert Q.knowledge_gradient(-mean, cov, noise, groups, [0], lower=False)[0] == pytest.approx(kg[0])
    # A point far worse than the current best gains (almost) nothing; one at the best gains the most.
    kg = Q.knowledge_gradient(np.array([0.0, 0.0, 5.0]), np.diag([0.0, 1.0, 1.0]), 0.0, [np.arange(3)], [1, 2], True)
    assert kg[0] > 0.3 and kg[1] < 1e-6


def surface(r: float, x: float) -> float:
    """A known surface: at R = 1, 4, 16, 64 the best α is 1, 3/4, 1/2, 1/4 (α·R... falls with R)."""
    best = {1.0: 1.0, 4.0: 0.75, 16.0: 0.5, 64.0: 0.25}[r]
    return 2.0 + 0.1 * math.log2(r) + 0.8 * (x - best) ** 2


def noisy(r: float, x: float, seed: int) -> float:
    """The surface plus seed noise (sd 0.003), a fixed draw per (R, x, seed)."""
    rng = np.random.default_rng([int(r), int(round(x * 8)), seed])
    return surface(r, x) + rng.normal(0.0, 0.003)


def run_loop(problem: Q.Problem, design: list, budget: int, batch: int, seed: int = 0, f=None):
    """The search loop of `dualobj sweep` with ``f`` (default ``noisy``) as the oracle: each run of a point
    takes its next seed. Returns (the runs, the final summary, the kind of each round)."""
    f = f or noisy
    obs, runs, points, kinds = [], Counter(), list(design), []
    while True:
        for r, x in points:
            obs.append({"R": r, "x": x, "seed": runs[r, x], "value": f(r, x, runs[r, x] + 100 * seed)})
            runs[r, x] += 1
        post, summary = Q.assess(problem, pd.DataFrame(obs))
        n = min(batch, budget - len(obs))
        points, kind = Q.next_cells(problem, post, runs, n, summary) if n > 0 else ([], "budget")
        kinds.append(kind)
        if not points:
            return obs, summary, kinds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_resolves_every_r_of_a_known_surface_and_stops(seed):
    levels, values = (1.0, 4.0, 16.0, 64.0), tuple(k / 8 for k in range(9))
    problem = Q.Problem(levels, values, lower=True, seed=seed)
    design = [(r, x) for r in levels for x in (0.5, 1.0)]
    obs, summary, kinds = run_loop(problem, design, budget=36, batch=2, seed=seed)
    assert kinds[0] == "seed noise" and kinds[-1] == "every R resolved", kinds
    assert len(obs) < 36  # stopped before the budget: a third of the 9 x 4 cells would be 12
    got = {row["R"]: row["x"] for row in summary}
    assert got == {1.0: 1.0, 4.0: 0.75, 16.0: 0.5, 64.0: 0.25}
    for row in summary:  # resolved: confident, the recommendation run twice and its neighbours once
        assert row["resolved"] and row["p_within"] >= 0.9 and not row["unmeasured"]
        runs = Counter(o["x"] for o in obs if o["R"] == row["R"])
        assert runs[row["x"]] >= 2 and all(runs[x] >= 1 for x in values if abs(x - row["x"]) == 0.125)
        assert row["runs"] == sum(runs.values()) and row["cells"] == len(runs)


def test_an_r_the_budget_cannot_resolve_is_reported_unresolved_and_the_budget_ends_the_search():
    """At R=4 α = 1/4 leads the flat rest by 0.03 under seed noise of sd 0.03, with delta 0.002: the search
    keeps adding seeds (repeats), recommends 1/4 but calls R=4 unresolved with another α not separated, and
    stops at the budget; R=1 (a clear optimum, little noise) is resolved."""
    def f(r, x, seed):
        base = 2.0 + 0.8 * (x - 1.0) ** 2 if r == 1.0 else 2.0 + 0.03 * (x == 0.5) - 0.03 * (x == 0.25)
        return base + np.random.default_rng([int(r), int(x * 8), seed]).normal(0.0, 0.03 if r == 4.0 else 0.001)

    values = (0.0, 0.25, 0.5, 0.75, 1.0)
    problem = Q.Problem((1.0, 4.0), values, delta=0.002, seed=0)
    obs, summary, kinds = run_loop(problem, [(r, x) for r in (1.0, 4.0) for x in (0.0, 0.5, 1.0)], 30, 2, f=f)
    assert len(obs) == 30 and kinds[-1] == "budget"
    at = {row["R"]: row for row in summary}
    assert at[1.0]["resolved"] and at[1.0]["x"] == 1.0
    assert at[4.0]["x"] == 0.25 and not at[4.0]["resolved"] and at[4.0]["p_within"] < 0.9 and at[4.0]["not_separated"]
    cells = Counter((o["R"], o["x"]) for o in obs)
    assert max(cells.values()) >= 3  # seeds were added to points already run


def test_a_recommendation_is_resolved_only_when_bracketed_by_measurements():
    values = (0.0, 0.25, 0.5, 0.75, 1.0)
    problem = Q.Problem((1.0, 4.0), values, seed=0)
    obs = pd.DataFrame([{"R": r, "x": x, "seed": s, "value": surface(r, x) + 0.002 * s}
                        for r in (1.0, 4.0) for x in values for s in (0, 1)])
    post, summary = Q.assess(problem, obs)
    assert all(row["resolved"] for row in summary) and Q.next_cells(problem, post, Counter(), 2, summary) == \
        ([], "every R resolved")
    # With one run of R=4's best (3/4) the GP is as sure, but R=4 is not resolved until a second seed is in.
    part = obs[~((obs["R"] == 4.0) & (obs["x"] == 0.75) & (obs["seed"] == 1))]
    post, summary = Q.assess(problem, part)
    at = {row["R"]: row for row in summary}
    assert at[4.0]["x"] == 0.75 and at[4.0]["p_within"] >= 0.9 and at[4.0]["unmeasured"] == [0.75]
    assert not at[4.0]["resolved"] and at[1.0]["resolved"]
    runs = Counter(zip(part["R"], part["x"], strict=True))
    assert Q.next_cells(problem, post, runs, 2, summary) == ([(4.0, 0.75)], "bracket")
    # Without the runs of its neighbour 1/2 the GP is unsure, and the knowledge gradient works at R=4 alone.
    part = obs[~((obs["R"] == 4.0) & (obs["x"] == 0.5))]
    post, summary = Q.assess(problem, part)
    points, kind = Q.next_cells(problem, post, Counter(zip(part["R"], part["x"], strict=True)), 2, summary)
    assert kind == "knowledge gradient" and points and all(r == 4.0 for r, _ in points)


def test_proposals_are_a_pure_function_of_the_finished_results():
    levels, values = (1.0, 4.0, 16.0), (0.0, 0.25, 0.5, 0.75, 1.0)
    problem = Q.Problem(levels, values, seed=3)
    design = [(r, x) for r in levels for x in (0.0, 1.0)] + [(16.0, 0.5)]
    obs = pd.DataFrame([{"R": r, "x": x, "seed": 0, "value": noisy(r, x, 0)} for r, x in design])
    runs = Counter(design)
    first = Q.next_cells(problem, Q.assess(problem, obs)[0], runs, 3)
    shuffled = obs.sample(frac=1.0, random_state=7)
    again = Q.next_cells(problem, Q.assess(problem, shuffled)[0], runs, 3)
    assert first == again and first[1] == "seed noise"  # no point has two runs yet: second seeds first
    assert set(first[0]) <= set(design) and len(first[0]) == 3
    # With a replicate the noise is known and the knowledge gradient picks, again the same from any order.
    obs2 = pd.concat([obs, pd.DataFrame([{"R": 16.0, "x": 0.5, "seed": 1, "value": noisy(16.0, 0.5, 1)}])])
    runs2 = runs + Counter([(16.0, 0.5)])
    a = Q.next_cells(problem, Q.assess(problem, obs2)[0], runs2, 3)
    b = Q.next_cells(problem, Q.assess(problem, obs2.sample(frac=1.0, random_state=1))[0], runs2, 3)
    assert a == b and a[1] in ("knowledge gradient", "bracket") and len(a[0]) >= 1


def test_gaps_are_filled_until_the_gp_can_be_fitted():
    problem = Q.Problem((1.0, 4.0), (0.0, 0.25, 0.5, 0.75, 1.0))
    tried = {(1.0, 0.0), (1.0, 1.0), (4.0, 0.0)}
    post, summary = Q.assess(problem, pd.DataFrame([{"R": r, "x": x, "value": 1.0 + x} for r, x in tried]))
    assert post is None and summary is None  # 3 results: too few for the GP
    points, kind = Q.next_cells(problem, post, Counter(tried), 2)
    assert kind == "gap filling" and points == [(4.0, 1.0), (1.0, 0.5)]


# ----------------------------------------------------------------------------- end to end
def micro_search(tmp_path: Path, cache: Path, budget: int, name: str = "s.yaml") -> Path:
    fixed = ", ".join([*MICRO, "train.tokens=4096", f"data.cache_dir={cache}"])
    return write(tmp_path, SEARCH.replace("fixed: [model=tiny]", f"fixed: [{fixed}]")
                 .replace("budget: 6", f"budget: {budget}"), name)


def attempts_and_steps(out: Path) -> dict:
    res = {}
    for r in status_rows(out):
        steps = [json.loads(line)["step"] for line in (out / r.run_id / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)), f"{r.run_id} was trained twice"
        res[r.run_id] = (r.state, r.attempts)
    return res


@pytest.mark.slow
def test_search_runs_resumes_and_never_trains_a_cell_twice(tmp_path, cache_dir):
    out = tmp_path / "out"
    res = run_cli("sweep", str(micro_search(tmp_path, cache_dir, 5)), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    trace = Q.read_trace(out)
    cells = Q.trace_cells(trace)
    assert [r["kind"] for r in trace["rounds"]] == ["design", "seed noise"] and len(cells) == 5
    assert attempts_and_steps(out) == {c["run_id"]: ("done", 1) for c in cells}
    again = cells[4]  # a second seed of a design cell: its own run, with the seed in its config
    first = next(c for c in cells[:4] if (c["R"], c["x"]) == (again["R"], again["x"]))
    assert (first["seed"], again["seed"]) == (0, 1) and again["run_id"] != first["run_id"]
    assert "seed: 1" in (out / again["run_id"] / "config.yaml").read_text()
    summary = json.loads((out / cells[0]["run_id"] / "summary.json").read_text())
    assert summary["ar_share"] == summary["alpha"]  # ar_loss_scale 1
    assert all(c["value"] == json.loads((out / c["run_id"] / "summary.json").read_text())["val/ar_bpb"] for c in cells)
    assert run_cli("status", str(out)).returncode == 0

    # The next proposal, computed here from the finished results, is what a larger budget trains next.
    problem = Q.problem_of(load_spec(micro_search(tmp_path, cache_dir, 6)).search)
    obs = pd.DataFrame([{"R": c["R"], "x": c["x"], "seed": c["seed"], "value": c["value"]} for c in cells])
    expected = Q.next_cells(problem, Q.assess(problem, obs)[0], Counter((c["R"], c["x"]) for c in cells), 1)[0]
    stamps = {c["run_id"]: (out / c["run_id"] / "status.json").read_text() for c in cells}
    res = run_cli("sweep", str(micro_search(tmp_path, cache_dir, 6)), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    more = Q.trace_cells(Q.read_trace(out))
    assert more[:5] == [{**c, "value": c["value"]} for c in cells]
    assert [(c["R"], c["x"]) for c in more[5:]] == expected
    assert all((out / k / "status.json").read_text() == v for k, v in stamps.items())  # not touched again
    assert set(attempts_and_steps(out).values()) == {("done", 1)}

    rep = run_cli("report", str(out), "-m", "val/ar_bpb")
    assert rep.returncode == 0, rep.stderr[-3000:]
    text = (out / "report" / "report.md").read_text()
    kind = Q.read_trace(out)["rounds"][2]["kind"]
    assert "## Adaptive search" in text and f"| 2 | {kind} |" in text and "**Recommendation**" in text
    assert "| R | recommended α | AR share | predicted val/ar_bpb | P(within 0.01 of the best) | answer |" in text
    assert (out / "report" / "search_trace.png").stat().st_size > 0


@pytest.mark.slow
def test_a_killed_search_resumes_where_it_stopped_and_proposes_the_same_cells(tmp_path, cache_dir):
    """Kill the search (and its training) half-way through a cell; the re-run finishes that cell from its
    checkpoint and goes on exactly as an uninterrupted search of the same file did."""
    spec = micro_search(tmp_path, cache_dir, 6)
    whole = tmp_path / "whole"
    assert run_cli("sweep", str(spec), "--out", str(whole)).returncode == 0
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "dualobj.cli", "sweep", str(spec), "--out", str(out), "train.checkpoint_every=4"]
    env = {**os.environ, "DUALOBJ_STEP_DELAY": "0.05", "DUALOBJ_MALLOC": "off"}
    proc = subprocess.Popen(args, start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def half_way():  # a cell of a round after the design with a checkpoint at step 8 of 16 and no summary
        trace = Q.read_trace(out) if (out / Q.TRACE_FILE).is_file() else None
        later = {c["run_id"] for r in (trace or {"rounds": []})["rounds"][1:] for c in r["cells"]}
        return [k for k in later if (out / k / "checkpoints" / "step_0000008").is_dir()
                and not (out / k / "summary.json").exists()]

    midway = kill_group_when(proc, half_way, "the search")
    res = run_cli("sweep", str(spec), "--out", str(out), "train.checkpoint_every=4")
    assert res.returncode == 0, res.stderr[-3000:]
    got, want = Q.read_trace(out), Q.read_trace(whole)
    assert [[(c["R"], c["alpha"]) for c in r["cells"]] for r in got["rounds"]] == \
           [[(c["R"], c["alpha"]) for c in r["cells"]] for r in want["rounds"]]
    states = attempts_and_steps(out)
    assert all(s == "done" for s, _ in states.values()) and all(states[k][1] == 2 for k in midway)


# ----------------------------------------------------------------------------- the replay benchmark's parts
def synthetic_record(path: Path) -> Path:
    """A 4 x 5 grid with a known best α per R and a second seed (noise) for α = 1/2 and α = 1."""
    cells = []
    for r in (1, 4, 16, 64):
        for a in (0, 0.25, 0.5, 0.75, 1):
            for seed in ((0, 1) if a in (0.5, 1) else (0,)):
                v = surface(float(r), a) + (0.004 if seed else 0.0)
                cells.append({"run_id": f"{r}-{a}-{seed}", "model": "tiny", "R": r, "alpha": a, "seed": seed,
                              "ar_loss_scale": 1.0, "ar_share": a, "metrics": {"val/ar_bpb": v}})
    path.write_text(json.dumps({"cells": cells}))
    return path


def test_replay_counts_cells_until_each_r_is_resolved_for_good(tmp_path):
    B = bench_module("search_replay")
    grid = B.load_grid(synthetic_record(tmp_path / "g.json"), "val/ar_bpb", None, "alpha")
    assert grid.n_cells == 28 and len(grid.samples) == 20 and grid.best(16.0) == (0.5, pytest.approx(2.402))
    # Right for good: a recommendation that is right at 6 but wrong at 8 counts from 10.
    history = [B.Step(n, {16.0: x}, set()) for n, x in ((4, 0.0), (6, 0.5), (8, 0.25), (10, 0.5), (12, 0.5))]
    assert B.cells_needed(grid, history, 16.0, 0.01) == 10
    assert B.cells_needed(grid, history[:3], 16.0, 0.01) is None
    assert B.correct_at(grid, history, 9, 0.01) == {1.0: False, 4.0: False, 16.0: False, 64.0: False}
    hist = B.replay_search(grid, 0, 2, [0.5, 1.0], 28)
    last = hist[-1]
    assert [s.runs for s in hist][:2] == [8, 10] and last.runs <= 28
    assert all(grid.ok(r, last.rec[r], 0.01) for r in grid.levels)
    assert sum(last.runs_by_r.values()) == last.runs
    rand = B.replay_random(grid, 0, 2, gp=False)
    assert rand[-1].runs == 28 and all(grid.ok(r, rand[-1].rec[r], 0.01) for r in grid.levels)


def test_the_oracle_reads_each_seed_of_a_cell_once():
    B = bench_module("search_replay")
    grid = B.Grid("m", True, "alpha", 1.0, {(1.0, 0.0): [1.0, 2.0, 3.0]}, 3)
    oracle = B.Oracle(grid, np.random.default_rng(0))
    got = oracle.read([(1.0, 0.0)] * 3)
    assert sorted(o["value"] for o in got) == [1.0, 2.0, 3.0] and sorted(o["seed"] for o in got) == [0, 1, 2]
    assert grid.problem(0).room((1.0, 0.0), 2) and not grid.problem(0).room((1.0, 0.0), 3)


def test_replay_writes_its_measures_as_json(tmp_path):
    out = tmp_path / "r.json"
    record = synthetic_record(tmp_path / "g.json")
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "search_replay.py"), str(record), "--metric",
                          "val/ar_bpb", "--seeds", "2", "--target", "20", "--json", str(out), "--no-write"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    (m,) = json.loads(out.read_text())
    assert {"metric", "grid_runs", "cells_median", "random_cells_median", "seeds_within_target",
            "correct_selection_rate"} <= set(m)
    assert m["metric"] == "val/ar_bpb" and m["grid_runs"] == 28 and m["budget"] == 20 and m["cells_median"] <= 20
    assert set(m["correct_selection_rate"]) == {"1.0", "4.0", "16.0", "64.0", "all"}
    assert m["correct_selection_rate"]["all"] == 1.0 and 0 <= m["seeds_within_target"] <= 1
    assert "| R | grid's best α" in res.stdout and "Targets (correct selection" in res.stdout


def test_replay_writes_its_own_section_of_results(tmp_path):
    B = bench_module("search_replay")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Something else\n\nkept\n")
    B.write_section(results, B.SECTION_KEY, "## Adaptive search\n\nfirst\n")
    results.write_text(results.read_text() + "\n## Written after it\n\nalso kept\n")
    B.write_section(results, B.SECTION_KEY, "## Adaptive search\n\nsecond\n")
    text = results.read_text()
    assert "kept" in text and "second" in text and "first" not in text and text.count(f"<!-- {B.SECTION_KEY} -->") == 1
    assert text.index("kept") < text.index("second") < text.index("also kept")  # in place, the others untouched


def test_record_grid_keeps_config_and_final_metrics_only(tmp_path):
    R = bench_module("record_grid")
    fake_done_run(tmp_path / "grid", "a", {"val/ar_bpb": 2.5, "eval/avg/ar": 1.0, "eval_se/avg/ar": 0.5,
                                           "tokens_per_s": 9.0, "params_non_embedding": 97600},
                  {"alpha": 0.5, "ar_loss_scale": 2.0})
    rec = R.record(tmp_path / "grid")
    (cell,) = rec["cells"]
    assert cell["metrics"] == {"eval/avg/ar": 1.0, "val/ar_bpb": 2.5}
    assert cell["params_non_embedding"] == 97600  # the size, for the transfer analysis
    assert (cell["R"], cell["alpha"], cell["seed"], cell["ar_loss_scale"]) == (1.0, 0.5, 0, 2.0)
    assert cell["ar_share"] == pytest.approx(2 / 3)


def test_record_grid_joins_folders_once_per_run_id(tmp_path):
    R = bench_module("record_grid")
    fake_done_run(tmp_path / "one", "a", {"val/ar_bpb": 2.5})
    fake_done_run(tmp_path / "one", "b", {"val/ar_bpb": 2.4}, {"alpha": 1.0})
    fake_done_run(tmp_path / "two", "a", {"val/ar_bpb": 2.5})  # the same run, copied into the second folder
    fake_done_run(tmp_path / "two", "c", {"val/ar_bpb": 2.6}, {"alpha": 0.0})
    rec = R.record(tmp_path / "one", tmp_path / "two")
    assert [(c["run_id"], c["alpha"]) for c in rec["cells"]] == [("c", 0.0), ("a", 0.5), ("b", 1.0)]


def test_replay_reports_the_seed_noise_and_the_margin_of_each_best_cell(tmp_path):
    B = bench_module("search_replay")
    grid = B.load_grid(synthetic_record(tmp_path / "g.json"), "val/ar_bpb", None, "alpha")
    # Two seeds at α = 1/2 and 1 of every R, 0.004 apart: pooled variance (2 * 0.002²) / 1 per cell.
    sd, n = grid.seed_sd()
    assert n == 8 and sd == pytest.approx(0.004 / math.sqrt(2))
    x2, gap = grid.runner_up(16.0)
    assert gap == pytest.approx(abs(grid.truth(16.0, x2) - grid.best(16.0)[1])) and gap > 0
    line = B.noise_line(grid, 0.01)
    assert f"{sd:.4f}" in line and "8 cells" in line
    assert "Every R's best cell leads the next by more than the noise" in line
