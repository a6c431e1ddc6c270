"""Adaptive, GP-guided sweeps: the best α at each data-repetition level R with a handful of models, and
whether each answer is resolved beyond seed noise.

A sweep file with a ``search:`` block (:class:`dualobj.sweep.spec.SearchSpec`) trains its initial design,
then goes in rounds. Each round fits the report's Gaussian process (:func:`dualobj.stats.gp.fit_gp`: one
surface over (log2 R, x) for all conditions at once, x = α or the AR share of the gradient weight, each run
one observation, the white noise bounded below by the replicate seeds) to every finished run, decides which
R are resolved, and proposes the next ``batch`` runs, until every R is resolved or the budget is spent.

* **Recommendation.** At each R, the allowed value with the best posterior mean (tried or not).
* **Resolved.** P(the recommendation is within ``delta`` of the best allowed value) ≥ ``confidence`` over
  joint posterior draws at that R, and the recommendation is bracketed by measurements: it has two runs
  and its neighbouring allowed values one each (:func:`summarise`). A resolved R gets no more runs.
* **Seed noise.** The design runs each point once, so the round after it trains second seeds of the
  leading points (the noise is unknown until some point has two). From then on a point already run may be
  proposed again, at the next seed: the knowledge gradient values that where the noise is what keeps the
  leading values apart.
* **Acquisition.** The knowledge gradient of a candidate run is how much observing it is expected to
  improve the recommendations, summed over the unresolved conditions: Σ_R [best mean now − E best mean
  after]. The posterior mean moves linearly in the observation, so the expectation is that of the minimum
  of lines in one standard normal variable, computed exactly (:func:`expected_min`). A batch is picked
  greedily: after each pick the posterior covariance is updated as if that run had been observed at its
  mean, so the next pick goes where information is still missing. Before the GP can be fitted (under 4
  results, or all equal), cells are picked to fill the largest gaps instead.
* **Determinism and resumption.** Proposals are a pure function of the finished results (the GP's
  restarts and posterior draws are seeded by ``search.seed``). The trace ``search.json`` in the sweep
  folder is written atomically before a round trains; a re-run trains what the trace holds that is not
  done (resuming interrupted cells), then continues. Every run is an ordinary run directory, so a cell is
  never trained twice and `dualobj status` / `dualobj report` read the folder like any other.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from dualobj import config as C
from dualobj.budget import ar_share
from dualobj.errors import ConfigError, RunDirError
from dualobj.fmt import format_alpha, hms
from dualobj.run import read_json, write_json
from dualobj.run.table import load_runs
from dualobj.stats.gp import GPFit, features, fit_gp
from dualobj.sweep.launch import launch
from dualobj.sweep.outcome import Outcome, SweepResult, stuck
from dualobj.sweep.plan import Cell, check_data, plan, write_manifest
from dualobj.sweep.spec import SearchSpec, SweepSpec

TRACE_FILE = "search.json"
METRIC_PREFIXES = ("val/", "eval/", "train/")  # the summary.json metrics a search can optimise


# ----------------------------------------------------------------------------- the space searched
def to_alpha(x: float, space: str, ar_loss_scale: float) -> float:
    """objective.alpha for the search coordinate ``x``: x itself, or the α whose AR share is x."""
    if space == "alpha":
        return x
    return x / (x + ar_loss_scale * (1.0 - x))


# ----------------------------------------------------------------------------- the decision problem
@dataclass(frozen=True)
class Problem:
    """What a search chooses among: at each condition level R, one of the allowed values x; and when it
    may stop: an R is resolved once P(its recommendation is within ``delta`` of the best) ≥ ``confidence``."""

    levels: tuple[float, ...]  # the condition levels (data.repetitions), ascending
    values: tuple[float, ...]  # the allowed values of the search coordinate, ascending
    lower: bool = True  # whether a lower metric is better
    seed: int = 0  # random state of the GP fit and of the posterior draws
    allowed: frozenset | None = None  # the (R, x) pairs that may be tried; None = every pair
    delta: float = 0.01  # resolved: the recommended x within delta of the best x (the metric's units) ...
    confidence: float = 0.9  # ... with at least this posterior probability
    max_seeds: dict | None = field(default=None, compare=False)  # per (R, x), the most runs it may have; None: no limit

    @cached_property
    def points(self) -> list[tuple[float, float]]:
        """Every (R, x) pair the search may try or recommend, R-major."""
        return [(r, x) for r in self.levels for x in self.values if self.allowed is None or (r, x) in self.allowed]

    @cached_property
    def groups(self) -> list[tuple[float, np.ndarray]]:
        """Per level R, the indices of its points."""
        return [(r, np.array([i for i, p in enumerate(self.points) if p[0] == r])) for r in self.levels
                if any(p[0] == r for p in self.points)]

    def room(self, point: tuple[float, float], runs: int) -> bool:
        """Whether ``point`` may take another run after ``runs`` (the replay's grid has only its seeds)."""
        return self.max_seeds is None or runs < self.max_seeds.get(point, 0)


@dataclass
class Posterior:
    """The GP's latent (noise-free) posterior at the problem's points."""

    problem: Problem
    mean: np.ndarray
    cov: np.ndarray
    noise: float  # the variance of one observation (the fitted white noise, bounded below by replicate seeds)
    fit: GPFit


def fit_posterior(problem: Problem, obs: pd.DataFrame) -> Posterior | None:
    """Fit :func:`dualobj.stats.gp.fit_gp` to the results ``obs`` (columns R, x, value and seed; one row per
    finished run) and evaluate it at every point; None when the GP cannot be fitted (under 4 results, all
    equal). Replicate seeds bound the GP's noise from below (:func:`dualobj.stats.gp.noise_floor`)."""
    from threadpoolctl import threadpool_limits

    seeds = obs["seed"].to_numpy(int) if "seed" in obs else np.zeros(len(obs), int)
    frame = pd.DataFrame({"state": "done", "model": "search", "repetitions": obs["R"].to_numpy(float),
                          "alpha": obs["x"].to_numpy(float), "seed": seeds, "value": obs["value"].to_numpy(float)})
    frame = frame.sort_values(["repetitions", "alpha", "seed", "value"], kind="stable").reset_index(drop=True)
    try:
        gp = fit_gp(frame, "value", lower_is_better=problem.lower, n_alpha=3, n_samples=8, seed=problem.seed)
    except ValueError:
        return None
    r, x = np.array(problem.points, float).T
    with threadpool_limits(limits=1):
        mean, cov = gp.latent.predict(features(r, x), return_cov=True)
    noise = float(gp.regressor.kernel_.k2.noise_level) * float(gp.regressor._y_train_std) ** 2
    return Posterior(problem, np.asarray(mean, float), np.asarray(cov, float), max(noise, 1e-12), gp)


def summarise(post: Posterior, obs: pd.DataFrame | None = None, n_draws: int = 4000) -> list[dict]:
    """Per level R: the recommended x (best posterior mean) with its predicted metric ± std; from joint
    posterior draws at that R, P(the recommended x is best) (``p_best``) and P(it is within delta of the
    best) (``p_within``); the other x within delta of the best with probability ≥ 1 − confidence
    (``not_separated``: what the search could not tell from it); the posterior mean ± std of the best x;
    from ``obs`` the cells (distinct x) and runs (seeds counted) at R, and ``unmeasured``: the recommended x
    if it has under two runs and its neighbours among the allowed values at R if they have none (where the
    problem allows another run of them).

    ``resolved`` when p_within ≥ confidence and nothing is unmeasured: the GP's smooth surface alone may
    extrapolate a minimum past the last measured x (a lucky low seed at the edge of what was tried), so a
    recommendation counts only once it is bracketed by measured values."""
    pb = post.problem
    rng = np.random.default_rng(pb.seed)
    obs = pd.DataFrame(columns=["R", "x"]) if obs is None else obs
    out = []
    for r, idx in pb.groups:
        xs = np.array([pb.points[i][1] for i in idx])
        m, c = post.mean[idx], post.cov[np.ix_(idx, idx)]
        sign = 1.0 if pb.lower else -1.0
        b = int(np.argmin(sign * m))
        draws = sign * rng.multivariate_normal(m, c, size=n_draws, method="eigh", check_valid="ignore")
        within = (draws - draws.min(1, keepdims=True) <= pb.delta).mean(0)  # P(x within delta of the best)
        p = np.bincount(draws.argmin(1), minlength=len(idx)) / n_draws
        mu = float(p @ xs)
        here = obs[obs["R"] == r]
        ran = here["x"].astype(float).value_counts()
        need = {float(v): 2 if v == xs[b] else 1 for v in xs[max(b - 1, 0):b + 2]}
        unmeasured = [v for v, k in need.items() if ran.get(v, 0) < k and pb.room((r, v), ran.get(v, 0))]
        out.append({"R": r, "x": float(xs[b]), "predicted": float(m[b]), "predicted_std": math.sqrt(max(c[b, b], 0.0)),
                    "p_best": float(p[b]), "p_within": float(within[b]),
                    "resolved": bool(within[b] >= pb.confidence and not unmeasured), "unmeasured": unmeasured,
                    "not_separated": [float(v) for k, v in enumerate(xs) if k != b and within[k] >= 1 - pb.confidence],
                    "best_mean": mu, "best_std": math.sqrt(max(float(p @ (xs - mu) ** 2), 0.0)),
                    "cells": len(ran), "runs": len(here)})
    return out


def expected_min(a: np.ndarray, b: np.ndarray) -> float:
    """E[min_i (a_i + b_i Z)] for Z ~ N(0, 1), exactly: the lower envelope of the lines (slopes falling
    from left to right), then a(Φ(hi) − Φ(lo)) + b(φ(lo) − φ(hi)) summed over its pieces [lo, hi]."""
    from scipy.special import ndtr

    order = np.lexsort((a, -b))  # slope descending (the minimum at z → −∞ first), ties: the lower line
    a, b = a[order], b[order]
    keep = np.r_[True, b[1:] != b[:-1]]
    a, b = a[keep], b[keep]
    lines, starts = [0], [-np.inf]
    for i in range(1, len(a)):
        while True:  # where line i goes below the envelope's last line; drop that line if it never was lowest
            z = (a[i] - a[lines[-1]]) / (b[lines[-1]] - b[i])
            if z > starts[-1]:
                lines.append(i)
                starts.append(z)
                break
            lines.pop()
            starts.pop()
    lo, hi = np.array(starts), np.array([*starts[1:], np.inf])
    return float(np.sum(a[lines] * (ndtr(hi) - ndtr(lo)) + b[lines] * (_pdf(lo) - _pdf(hi))))


def _pdf(z: np.ndarray) -> np.ndarray:
    """The standard normal density, 0 at ±∞."""
    finite = np.isfinite(z)
    return np.exp(-0.5 * np.where(finite, z, 0.0) ** 2) / math.sqrt(2 * math.pi) * finite


def knowledge_gradient(mean: np.ndarray, cov: np.ndarray, noise: float, groups: list[np.ndarray],
                       cand: list[int], lower: bool) -> np.ndarray:
    """For each candidate point, Σ over groups of (best mean now − E[best mean once it is observed]): the
    means move by cov(·, c) / sd(y_c) per standard deviation of the observation y_c (exact expectation)."""
    m = mean if lower else -mean
    sd = np.sqrt(np.clip(np.diag(cov)[cand], 0.0, None) + noise)
    S = np.divide(cov[:, cand], sd, out=np.zeros((len(m), len(cand))), where=sd > 0)
    kg = np.zeros(len(cand))
    for j in range(len(cand)):
        for g in groups:
            if np.any(S[g, j] != 0):
                kg[j] += m[g].min() - expected_min(m[g], S[g, j])
    return np.maximum(kg, 0.0)


def propose(post: Posterior, runs: Counter, n: int, levels: set) -> list[tuple[float, float]]:
    """Up to ``n`` points at the levels ``levels``, picked greedily by the knowledge gradient over those
    levels, each pick "observed" at its posterior mean before the next. A point already run may be picked
    again (another seed): with the seed noise in the posterior, that is worth most where it is what
    separates the leading x. Ties: the lowest R, then the lowest x."""
    pb, cov = post.problem, post.cov.copy()
    groups = [idx for r, idx in pb.groups if r in levels]
    chosen: list[tuple[float, float]] = []
    for _ in range(n):
        cand = [i for i, p in enumerate(pb.points) if p[0] in levels and pb.room(p, runs[p] + chosen.count(p))]
        if not cand:
            break
        score = knowledge_gradient(post.mean, cov, post.noise, groups, cand, pb.lower)
        if score.max() <= 1e-12 * max(1.0, float(np.abs(post.mean).max())):
            score = np.diag(cov)[cand]  # nothing to gain anywhere: the most uncertain point
        i = cand[int(np.argmax(score))]
        chosen.append(pb.points[i])
        k = cov[:, i] / (cov[i, i] + post.noise)
        cov = cov - np.outer(k, cov[i])
    return chosen


def fill_gaps(problem: Problem, tried: set, n: int) -> list[tuple[float, float]]:
    """Up to ``n`` untried points without a GP: each the farthest in x from what its R has tried, at the R
    tried least (ties: the lowest R, then the lowest x)."""
    chosen: list[tuple[float, float]] = []
    for _ in range(n):
        done = [*tried, *chosen]
        free = [p for p in problem.points if p not in done]
        if not free:
            break
        chosen.append(max(free, key=lambda p, done=done: _gap(p, done)))
    return chosen


def _gap(p: tuple[float, float], done: list[tuple[float, float]]) -> tuple:
    """How much trying ``p`` fills a gap: fewer tries at its R first, then the distance to the nearest try."""
    near = [abs(p[1] - x) for r, x in done if r == p[0]]
    return (-len(near), min(near) if near else 2.0)


def replicate(problem: Problem, post: Posterior, runs: Counter, summary: list[dict],
              n: int) -> list[tuple[float, float]]:
    """Up to ``n`` second seeds, where no point has two yet (the seed noise is unknown): at each unresolved
    R, least resolved first, the tried point with the best posterior mean."""
    order = sorted((row for row in summary if not row["resolved"]), key=lambda row: (row["p_within"], row["R"]))
    sign = 1.0 if problem.lower else -1.0
    chosen = []
    for row in order:
        tried = [(sign * post.mean[i], problem.points[i]) for i in dict(problem.groups)[row["R"]]
                 if runs[problem.points[i]] and problem.room(problem.points[i], runs[problem.points[i]])]
        if tried:
            chosen.append(min(tried)[1])
    return chosen[:n]


def assess(problem: Problem, obs: pd.DataFrame) -> tuple[Posterior | None, list[dict] | None]:
    """The posterior after the results ``obs`` and its summary per R (None, None before a GP can be fitted)."""
    post = fit_posterior(problem, obs) if len(obs) else None
    return post, (summarise(post, obs) if post is not None else None)


def next_cells(problem: Problem, post: Posterior | None, runs: Counter, n: int,
               summary: list[dict] | None = None) -> tuple[list[tuple[float, float]], str]:
    """The next round's points and how they were chosen (a pure function of the finished results ``runs``:
    runs per point): gap filling until a GP can be fitted; then nothing once every R is resolved; a second
    seed of leading points while no point has two (the noise is unknown); the unmeasured neighbours of a
    recommendation the GP is already sure of (:func:`summarise`); else the knowledge gradient over the
    unresolved R."""
    if post is None:
        return fill_gaps(problem, set(runs), n), "gap filling"
    if summary is None:  # the runs per point stand in for the observations: summarise counts only R and x
        summary = summarise(post, pd.DataFrame([{"R": r, "x": x} for (r, x), k in runs.items() for _ in range(k)],
                                               columns=["R", "x"]))
    open_levels = {row["R"] for row in summary if not row["resolved"]}
    if not open_levels:
        return [], "every R resolved"
    if max(runs.values(), default=0) < 2 and (points := replicate(problem, post, runs, summary, n)):
        return points, "seed noise"
    bracket = [(row["R"], x) for row in summary if not row["resolved"] and row["p_within"] >= problem.confidence
               for x in row["unmeasured"]]
    if bracket:
        return bracket[:n], "bracket"
    return propose(post, runs, n, open_levels), "knowledge gradient"


def problem_of(s: SearchSpec) -> Problem:
    return Problem(levels=tuple(s.conditions), values=tuple(s.values), lower=s.goal == "min", seed=s.seed,
                   delta=s.delta, confidence=s.confidence)


def design_points(s: SearchSpec) -> list[tuple[float, float]]:
    """The initial design, R-major."""
    return [(r, x) for r in s.conditions for x in s.initial.get(r, [])]


# ----------------------------------------------------------------------------- the trace file
def read_trace(folder: str | Path) -> dict | None:
    """A sweep folder's search trace (``search.json``), or None when it has none; never executes anything."""
    p = Path(folder) / TRACE_FILE
    if not p.is_file():
        return None
    trace = read_json(p)
    if not isinstance(trace, dict) or not isinstance(trace.get("rounds"), list):
        raise RunDirError(f"{p} is not a search trace; delete it to restart the search (done cells are kept)")
    return trace


def trace_cells(trace: dict) -> list[dict]:
    """Every cell the search has proposed, in order."""
    return [c for rnd in trace["rounds"] for c in rnd["cells"]]


# ----------------------------------------------------------------------------- running a search
@dataclass
class _Search:
    """One search in one sweep folder: its spec, the cells' extra overrides, the launcher, the output."""

    spec: SweepSpec
    folder: Path
    extra: list[str]
    hydra_args: list[str]
    scale: float  # objective.ar_loss_scale of the cells
    say: Callable[[str], None]
    base_seed: int = 0  # the config's seed: a point's first run; its later runs take the next seeds

    @property
    def s(self) -> SearchSpec:
        return self.spec.search

    @cached_property
    def problem(self) -> Problem:
        return problem_of(self.s)

    def settings(self) -> dict:
        """What makes two searches the same search (budget and batch may change between runs)."""
        s = self.s
        return {"metric": s.metric, "goal": s.goal, "space": s.space, "values": s.values, "conditions": s.conditions,
                "initial": [[r, v] for r, v in sorted(s.initial.items())], "seed": s.seed, "delta": s.delta,
                "confidence": s.confidence, "ar_loss_scale": self.scale, "overrides": [*self.spec.fixed, *self.extra]}

    def entry(self, r: float, x: float, repeat: int = 0) -> dict:
        """A cell of the trace: its point, α, AR share and seed (the config's seed, plus ``repeat`` for the
        point's later runs)."""
        alpha = round(to_alpha(x, self.s.space, self.scale), 12)
        return {"R": r, "x": x, "alpha": alpha, "ar_share": ar_share(alpha, self.scale),
                "seed": self.base_seed + repeat}

    def plan(self, entries: list[dict]) -> list[Cell]:
        """The cells of ``entries`` composed and checked (run id, run directory, state); a cell at the config's
        seed has no seed override, so its run id is that of the same cell in a grid sweep."""
        cells = [{"data.repetitions": int(e["R"]) if float(e["R"]).is_integer() else e["R"],
                  "objective.alpha": e["alpha"],
                  **({"seed": e["seed"]} if e.get("seed", self.base_seed) != self.base_seed else {})} for e in entries]
        planned = plan(replace(self.spec, axes={}, cells=cells), self.folder, self.extra)
        if bad := [c for c in planned if c.error]:
            raise ConfigError(f"{len(bad)} search cell(s) are invalid, e.g. {' '.join(bad[0].overrides)}: "
                              f"{bad[0].error}; fix the sweep file")
        return planned


def _start(spec: SweepSpec, folder: Path, extra: list[str], hydra_args: list[str], say) -> tuple[_Search, dict]:
    """The search and its trace (read back, or new), checked before anything trains."""
    s = spec.search
    if not s.metric.startswith(METRIC_PREFIXES):
        raise ConfigError(f"search metric {s.metric!r} is not a run metric; use one from summary.json such as "
                          "val/ar_bpb, val/md_bpb or eval/avg/ar")
    cfg = C.load([*spec.fixed, *extra])
    run = _Search(spec, folder, extra, hydra_args, cfg.objective.ar_loss_scale, say, int(cfg.seed))
    trace = read_trace(folder)
    if trace is None:
        trace = {"name": spec.name, "settings": run.settings(), "rounds": []}
    elif trace.get("settings") != run.settings():
        old = trace.get("settings") if isinstance(trace.get("settings"), dict) else {}
        diff = sorted(k for k in run.settings() if old.get(k) != run.settings()[k])
        raise ConfigError(f"{folder} holds a search with other settings ({', '.join(diff)}); use another --out, "
                          "or the search block and overrides it was started with")
    _check_metric(run)
    probes = [run.entry(r, s.values[0]) for r in s.conditions]
    check = run.plan(probes)
    check_data(check)
    if bad := [c for c in check if c.error]:
        raise ConfigError(f"search condition data.repetitions={bad[0].semantic['R']}: {bad[0].error}")
    return run, trace


def _done_runs(folder: Path) -> pd.DataFrame:
    if not folder.is_dir():
        return pd.DataFrame(columns=["run_id", "state"])
    try:
        runs = load_runs(folder)
    except RunDirError:
        return pd.DataFrame(columns=["run_id", "state"])
    return runs[runs["state"] == "done"].drop_duplicates("run_id")


def _check_metric(run: _Search, done: pd.DataFrame | None = None) -> None:
    """A metric no finished run of the folder has is bad input (checked before anything more trains)."""
    done = _done_runs(run.folder) if done is None else done
    metric = run.s.metric
    if len(done) and (metric not in done or not pd.to_numeric(done[metric], errors="coerce").notna().any()):
        have = sorted(c for c in done.columns if c.startswith(METRIC_PREFIXES) and done[c].notna().any())
        raise ConfigError(f"search metric {metric!r}: no finished run in {run.folder} has it; use one of "
                          f"{', '.join(have[:10]) or 'the metrics in a run summary.json'}")


def _observe(run: _Search, trace: dict) -> pd.DataFrame:
    """The finished results of the trace's cells (columns R, x, value), written into the trace as well."""
    done = _done_runs(run.folder)
    _check_metric(run, done)
    values = {}
    if run.s.metric in done:
        col = pd.to_numeric(done[run.s.metric], errors="coerce")
        values = {rid: float(v) for rid, v in zip(done["run_id"], col, strict=True) if math.isfinite(v)}
    rows = []
    for c in trace_cells(trace):
        c["value"] = values.get(c["run_id"])
        if c["value"] is not None:
            rows.append({"R": c["R"], "x": c["x"], "seed": c.get("seed", run.base_seed), "value": c["value"]})
    return pd.DataFrame(rows, columns=["R", "x", "seed", "value"])


def _add_round(run: _Search, trace: dict, points: list[tuple[float, float]], kind: str) -> None:
    """Record a round's cells (with seeds and run ids) in the trace and the sweep manifest, atomically, before
    training. A point proposed again takes the next seed."""
    runs = Counter((c["R"], c["x"]) for c in trace_cells(trace))
    entries = []
    for r, x in points:
        entries.append(run.entry(r, x, runs[r, x]))
        runs[r, x] += 1
    for e, cell in zip(entries, run.plan(entries), strict=True):
        e["run_id"] = cell.run_id
    trace["rounds"].append({"round": len(trace["rounds"]), "kind": kind, "cells": entries, "posterior": None})
    write_manifest(run.spec, run.folder, run.plan(trace_cells(trace)))
    write_json(run.folder / TRACE_FILE, trace)
    tried = ", ".join(f"R={e['R']:g} α={format_alpha(e['alpha'])}" + (f" seed {e['seed']}" if e["seed"] != run.base_seed
                                                                      else "") for e in entries)
    run.say(f"round {len(trace['rounds']) - 1} ({kind}): {tried}")


def _train(run: _Search, trace: dict) -> SweepResult | None:
    """Train the trace's cells that are not done; a SweepResult when the search must stop, else None."""
    todo = [c for c in run.plan(trace_cells(trace)) if c.state != "done"]
    if not todo:
        return None
    run.say(f"training {len(todo)} cell(s) ...")
    try:
        results = launch(todo, run.spec, run.folder, run.hydra_args)
    except KeyboardInterrupt:
        results = None
    blocked = stuck(results) if results is not None else todo
    for r in results or []:
        if r.outcome is not Outcome.DONE:
            run.say(f"  {r.run_id}: {r.outcome.value} {r.error or ''}")
    if blocked:
        run.say(f"stopped: {len(blocked)} cell(s) not done; finished work is kept, re-run the same command to continue")
        return SweepResult(results, len(blocked))
    return None


def _record_posterior(run: _Search, trace: dict, summary: list[dict] | None) -> None:
    """The posterior after the last round, with α and AR share next to each recommended x."""
    if summary is not None:
        for row in summary:
            row.update({k: v for k, v in run.entry(row["R"], row["x"]).items() if k in ("alpha", "ar_share")})
    if trace["rounds"]:
        trace["rounds"][-1]["posterior"] = summary
    write_json(run.folder / TRACE_FILE, trace)
    for row in summary or []:
        others = ", ".join(format_alpha(to_alpha(x, run.s.space, run.scale)) for x in row["not_separated"])
        run.say(f"  R={row['R']:g}: best α {format_alpha(row['alpha'])} (AR share {row['ar_share']:.3f}), "
                f"{run.s.metric} {row['predicted']:.4f} ± {row['predicted_std']:.4f}; P(within {run.s.delta:g} of "
                f"the best) {row['p_within']:.2f}: {'resolved' if row['resolved'] else 'unresolved'}"
                + (f"; not separated from {others}" if others else "") + f" ({row['cells']} cells, {row['runs']} runs)")


def run_search(spec: SweepSpec, folder: Path, extra: list[str], hydra_args: list[str], dry_run: bool = False,
               say: Callable[[str], None] = print, show: Callable = print,
               plan_table: Callable | None = None) -> SweepResult:
    """Run (or resume) the adaptive search of ``spec`` in ``folder``; returns a SweepResult.

    ``say`` prints progress lines, ``show`` a renderable, ``plan_table(cells, folder)`` makes the plan table. A
    spec with ``variants:`` runs one search per variant, in ``folder/<variant>``, one after the other."""
    if spec.variants:
        return _run_variants(spec, Path(folder), extra, hydra_args, dry_run, say, show, plan_table)
    folder = Path(folder)
    run, trace = _start(spec, folder, list(extra), list(hydra_args), say)
    s = spec.search
    if not trace["rounds"] or dry_run:
        design = run.plan([run.entry(r, x) for r, x in design_points(s)])
        if plan_table is not None:
            show(plan_table(design, folder))
        say(f"search: {s.metric} ({s.goal}) over {s.space} ∈ {{{', '.join(format_alpha(v) for v in s.values)}}} at "
            f"R ∈ {{{', '.join(f'{r:g}' for r in s.conditions)}}}: the {s.design_size} cells above, then up to "
            f"{s.budget - s.design_size} more in rounds of {s.batch}; {len(trace_cells(trace))} proposed so far; "
            f"{_time_line(design, s)}")
        if dry_run:
            return SweepResult(est_s=budget_seconds(design, s))
        _add_round(run, trace, design_points(s), "design")
    while True:
        if (stopped := _train(run, trace)) is not None:
            return stopped
        post, summary = assess(run.problem, _observe(run, trace))
        say(f"after round {len(trace['rounds']) - 1}:" + ("" if summary else " too few results for the GP yet"))
        _record_posterior(run, trace, summary)
        n = min(s.batch, s.budget - len(trace_cells(trace)))
        runs = Counter((c["R"], c["x"]) for c in trace_cells(trace))
        points, kind = next_cells(run.problem, post, runs, n, summary) if n > 0 else ([], "budget spent")
        if not points:
            break
        _add_round(run, trace, points, kind)
    open_r = [f"{row['R']:g}" for row in summary or [] if not row["resolved"]]
    say(f"search done ({kind}): {len(trace_cells(trace))} runs; "
        + (f"unresolved at R = {', '.join(open_r)}" if open_r else "every R resolved")
        + f"; `dualobj report {folder}` shows the trace")
    return SweepResult()


RUN_OVERHEAD_S = 15.0  # a run's start-up, validation and checkpoints beyond its training (a small model, 2 cores)


def budget_seconds(design: list[Cell], s: SearchSpec) -> float:
    """Wall seconds of the whole budget, at most: every run as long as the design's longest estimate plus
    :data:`RUN_OVERHEAD_S`, in rounds of ``batch`` parallel runs."""
    longest = max((c.est_s for c in design), default=0.0)
    return math.ceil(s.budget / s.batch) * (longest + RUN_OVERHEAD_S)


def _time_line(design: list[Cell], s: SearchSpec) -> str:
    return (f"the whole budget ({s.budget} runs, {math.ceil(s.budget / s.batch)} rounds of {s.batch}) takes at "
            f"most ~{hms(budget_seconds(design, s))} (training, and ~{RUN_OVERHEAD_S:g} s a run to start and "
            "validate)")


def _run_variants(spec: SweepSpec, folder: Path, extra: list[str], hydra_args: list[str], dry_run: bool,
                  say: Callable, show: Callable, plan_table: Callable | None) -> SweepResult:
    """One search per variant of ``spec``, in ``folder/<name>``, in the file's order; stops at the first that
    stops (finished work is kept, a re-run goes on where it stopped)."""
    total = 0.0
    for name, overrides in spec.variants.items():
        say(f"variant {name} ({' '.join(overrides)}) in {folder / name}:")
        one = replace(spec, fixed=[*spec.fixed, *overrides], variants={})
        result = run_search(one, folder / name, extra, hydra_args, dry_run, say, show, plan_table)
        if result.exit_code:
            return result
        total += result.est_s
    if dry_run:
        say(f"{len(spec.variants)} searches, one after the other: at most ~{hms(total)} in all")
    return SweepResult()
