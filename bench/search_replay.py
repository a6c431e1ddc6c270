"""Replay the adaptive search on a finished grid, with no training: how many cells does it need to find the
best α at each R, against the full grid and against random search with the same budget?

    python bench/record_grid.py runs/mini > bench/data/mini_grid.json     # once, after the grid has run
    python bench/search_replay.py bench/data/mini_grid.json               # prints the table, updates RESULTS.md

The grid record is the oracle. The search may only "train" cells of the grid; reading a cell returns its
recorded metric, and where the grid has several seeds of a cell, the value of one of them drawn at random
(the search's seed noise). The search is the one `dualobj sweep` runs (dualobj/sweep/search.py: the
report's GP over all conditions, knowledge-gradient batches, the same initial design), each round of
``--batch`` cells. After every round its recommended α at each R is the best posterior mean; R is resolved
from the first round after which the recommended α stays within ``--tol`` (0.01 bits per byte) of the grid's
best cell at that R (best by the mean over seeds) to the end of the replay, which runs until every cell of
the grid has been tried. Random search tries the grid's cells in a random order, in the same rounds, and
recommends the best value it has read at each R (and, as a second baseline, the GP's best posterior mean).
Each of ``--seeds`` search seeds draws its own seed noise and random order.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dualobj.budget import ar_share
from dualobj.config import parse_number
from dualobj.fmt import format_alpha
from dualobj.run import write_json
from dualobj.stats.frame import default_lower_is_better
from dualobj.sweep.search import Problem, assess, next_cells, to_alpha

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402

SECTION = "## Adaptive search: replay on a finished grid"
SECTION_KEY = "bench/search_replay.py"  # one section per grid record: "bench/search_replay.py: mini_grid"


@dataclass
class Grid:
    """A recorded grid as an oracle: per (R, x) the values of its seeds, and the best cell per R."""

    metric: str
    lower: bool
    space: str
    scale: float
    samples: dict = field(default_factory=dict)  # (R, x) -> [value of each seed]
    n_cells: int = 0  # runs in the grid, seeds counted

    @property
    def levels(self) -> list[float]:
        return sorted({r for r, _ in self.samples})

    @property
    def values(self) -> list[float]:
        return sorted({x for _, x in self.samples})

    def truth(self, r: float, x: float) -> float:
        return float(np.mean(self.samples[r, x]))

    def best(self, r: float) -> tuple[float, float]:
        """The best cell at ``r`` (by the mean over seeds): its x and value."""
        cells = [(self.truth(r, x), x) for rr, x in self.samples if rr == r]
        v, x = min(cells) if self.lower else max(cells)
        return x, v

    def runner_up(self, r: float) -> tuple[float, float]:
        """The second-best cell at ``r``: its x and how much worse it is than the best (by the means over seeds)."""
        cells = sorted(((self.truth(r, x), x) for rr, x in self.samples if rr == r), reverse=not self.lower)
        return cells[1][1], abs(cells[1][0] - cells[0][0])

    def seed_sd(self) -> tuple[float, int] | None:
        """The standard deviation of one run's value between seeds, pooled over the cells run with several seeds
        (and their number); None where no cell was."""
        multi = [np.asarray(v, float) for v in self.samples.values() if len(v) > 1]
        if not multi:
            return None
        ss = sum(float(((v - v.mean()) ** 2).sum()) for v in multi)
        return math.sqrt(ss / sum(len(v) - 1 for v in multi)), len(multi)

    def ok(self, r: float, x: float | None, tol: float) -> bool:
        return x is not None and abs(self.truth(r, x) - self.best(r)[1]) <= tol + 1e-12

    def problem(self, seed: int, delta: float = 0.01, confidence: float = 0.9) -> Problem:
        """The search's problem on this grid: only its cells, each with at most the seeds it has."""
        return Problem(levels=tuple(self.levels), values=tuple(self.values), lower=self.lower, seed=seed,
                       allowed=frozenset(self.samples), delta=delta, confidence=confidence,
                       max_seeds={p: len(v) for p, v in self.samples.items()})

    def alpha(self, x: float) -> float:
        return to_alpha(x, self.space, self.scale)


def load_grid(path: Path, metric: str, model: str | None, space: str) -> Grid:
    """The grid of ``model`` (the only one when None) in a record written by bench/record_grid.py."""
    cells = json.loads(Path(path).read_text())["cells"]
    models = sorted({c["model"] for c in cells})
    if model is None and len(models) > 1:
        sys.exit(f"the grid holds several models ({', '.join(models)}); pick one with --model")
    cells = [c for c in cells if c["model"] == (model or models[0]) and metric in c["metrics"]]
    if not cells:
        sys.exit(f"no cell of {path} has {metric}")
    scales = {c["ar_loss_scale"] for c in cells}
    if len(scales) > 1:
        sys.exit(f"the grid mixes objective.ar_loss_scale values {sorted(scales)}; record one grid at a time")
    grid = Grid(metric, default_lower_is_better(metric), space, scales.pop(), n_cells=len(cells))
    for c in cells:
        x = round(c["alpha"] if space == "alpha" else ar_share(c["alpha"], grid.scale), 12)
        grid.samples.setdefault((float(c["R"]), x), []).append(float(c["metrics"][metric]))
    return grid


# ----------------------------------------------------------------------------- one replay
@dataclass
class Step:
    """The state after one round: runs so far, the recommended x per R, and the R the search calls resolved."""

    runs: int
    rec: dict
    resolved: set
    runs_by_r: dict = field(default_factory=dict)


class Oracle:
    """"Training" a cell of the grid: the value of one of its seeds, each seed drawn once, in a random order."""

    def __init__(self, grid: Grid, rng: np.random.Generator):
        self.grid = grid
        self.order = {p: list(rng.permutation(len(v))) for p, v in grid.samples.items()}

    def read(self, points) -> list[dict]:
        out = []
        for r, x in points:
            k = self.order[r, x].pop(0)
            out.append({"R": r, "x": x, "seed": int(k), "value": float(self.grid.samples[r, x][k])})
        return out


def _best_read(grid: Grid, obs: list[dict]) -> dict:
    """Per R, the x with the best mean of the values read so far (None where nothing was read)."""
    rec = {}
    frame = pd.DataFrame(obs, columns=["R", "x", "value"])
    for r in grid.levels:
        means = frame[frame["R"] == r].groupby("x")["value"].mean()
        rec[r] = None if means.empty else float(means.idxmin() if grid.lower else means.idxmax())
    return rec


def _step(grid: Grid, problem: Problem, obs: list[dict]):
    """The posterior, its summary and the step (the best read value per R where no GP can be fitted yet)."""
    post, summary = assess(problem, pd.DataFrame(obs, columns=["R", "x", "seed", "value"]))
    by_r = Counter(o["R"] for o in obs)
    if summary is None:
        return post, summary, Step(len(obs), _best_read(grid, obs), set(), by_r)
    return post, summary, Step(len(obs), {row["R"]: row["x"] for row in summary},
                               {row["R"] for row in summary if row["resolved"]}, by_r)


def replay_search(grid: Grid, seed: int, batch: int, initial: list[float], budget: int,
                  delta: float = 0.01, confidence: float = 0.9) -> list[Step]:
    """The adaptive search with its stopping rule, until every R is resolved or ``budget`` runs are spent."""
    problem, oracle = grid.problem(seed, delta, confidence), Oracle(grid, np.random.default_rng(1000 + seed))
    points = [(r, x) for r in grid.levels for x in initial if (r, x) in grid.samples][:budget]
    obs: list[dict] = []
    runs: Counter = Counter()
    history = []
    while points:
        obs += oracle.read(points)
        runs.update(points)
        post, summary, step = _step(grid, problem, obs)
        history.append(step)
        n = min(batch, budget - len(obs))
        points = next_cells(problem, post, runs, n, summary)[0] if n > 0 else []
    return history


def replay_random(grid: Grid, seed: int, batch: int, gp: bool) -> list[Step]:
    """Random search over the grid's runs (every seed of every cell) in a random order, in rounds of ``batch``,
    to the whole grid: it recommends the best mean read (or, with ``gp``, the GP's best posterior mean)."""
    problem, rng = grid.problem(seed), np.random.default_rng(2000 + seed)
    runs = [(r, x) for (r, x), v in grid.samples.items() for _ in v]
    order = [runs[i] for i in rng.permutation(len(runs))]
    oracle = Oracle(grid, np.random.default_rng(3000 + seed))
    obs: list[dict] = []
    history = []
    for k in range(0, len(order), batch):
        obs += oracle.read(order[k:k + batch])
        history.append(_step(grid, problem, obs)[2] if gp else Step(len(obs), _best_read(grid, obs), set()))
    return history


def cells_needed(grid: Grid, history: list[Step], r: float, tol: float) -> int | None:
    """Runs tried when R's recommendation came within ``tol`` of the best cell for good (and stayed so to the
    end of the history); None if it is not so at the end."""
    needed = None
    for step in history:
        if grid.ok(r, step.rec.get(r), tol):
            needed = step.runs if needed is None else needed
        else:
            needed = None
    return needed


def correct_at(grid: Grid, history: list[Step], runs: int, tol: float) -> dict:
    """Per R, whether the recommendation after the last round with at most ``runs`` runs is within ``tol``."""
    step = [s for s in history if s.runs <= runs][-1]
    return {r: grid.ok(r, step.rec.get(r), tol) for r in grid.levels}


# ----------------------------------------------------------------------------- the measures
@dataclass
class Outcome:
    """What the replays of one metric measured (the fields of ``--json``)."""

    metric: str
    grid_runs: int  # runs in the grid, seeds counted
    budget: int  # the search's budget in runs (a third of the grid's runs, or --target)
    cells_median: float  # runs the adaptive search trained before it stopped, median over replay seeds
    random_cells_median: float | None  # runs random search needs until every R is right for good (None: never)
    seeds_within_target: float  # share of replay seeds in which the search called every R resolved within budget
    correct_selection_rate: dict  # per R (and "all": every R at once), share of replay seeds whose final
    # recommendation is within delta of the best cell by the mean over the grid's seeds
    random_correct_selection_rate: dict  # the same for random search after as many runs as the search used
    false_resolutions: int  # (replay seed, R) pairs called resolved whose recommendation was not within delta
    runs_by_r: dict  # per R, the median runs the search spent there
    replay_seeds: int

    def as_dict(self) -> dict:
        return {k: (v if not isinstance(v, dict) else {str(r): x for r, x in v.items()})
                for k, v in self.__dict__.items()}


def _median(ns: list) -> float | None:
    """Median of counts where None ("never") counts as worse than any; None when the median is never."""
    big = 10**9
    med = statistics.median_low(sorted(big if n is None else n for n in ns))
    return None if med == big else med


def measure(grid: Grid, search: list[list[Step]], random: list[list[Step]], budget: int, tol: float) -> Outcome:
    """The measures of ``search`` (one history per replay seed) against ``random`` (same seeds)."""
    n = len(search)
    final = [h[-1] for h in search]
    right = [{r: grid.ok(r, s.rec.get(r), tol) for r in grid.levels} for s in final]
    rand = [correct_at(grid, h, s.runs, tol) for h, s in zip(random, final, strict=True)]
    rate = lambda rows: {**{r: sum(x[r] for x in rows) / n for r in grid.levels},  # noqa: E731
                         "all": sum(all(x.values()) for x in rows) / n}
    until = [None if any(cells_needed(grid, h, r, tol) is None for r in grid.levels)
             else max(cells_needed(grid, h, r, tol) for r in grid.levels) for h in random]
    runs_at = {r: statistics.median(h[-1].runs_by_r.get(r, 0) for h in search) for r in grid.levels}
    return Outcome(metric=grid.metric, grid_runs=grid.n_cells, budget=budget,
                   cells_median=statistics.median(s.runs for s in final), random_cells_median=_median(until),
                   seeds_within_target=sum(len(s.resolved) == len(grid.levels) for s in final) / n,
                   correct_selection_rate=rate(right), random_correct_selection_rate=rate(rand),
                   false_resolutions=sum(r in s.resolved and not x[r] for s, x in zip(final, right, strict=True)
                                         for r in grid.levels),
                   runs_by_r=runs_at, replay_seeds=n)


# ----------------------------------------------------------------------------- the table
def table(grid: Grid, out: Outcome) -> str:
    """Markdown: per R the grid's best α and runner-up, the search's correctness, claims and runs, and random
    search's correctness after as many runs."""
    head = ["R", "grid's best α (mean of its seeds)", "next best α (how much worse)", "adaptive: correct",
            "adaptive: runs at R, median", "random search, same runs: correct"]
    rows = []
    for r in grid.levels:
        (x, v), (x2, gap) = grid.best(r), grid.runner_up(r)
        rows.append([f"{r:g}", f"{format_alpha(grid.alpha(x))} ({v:.4f})",
                     f"{format_alpha(grid.alpha(x2))} (+{gap:.4f})", f"{out.correct_selection_rate[r]:.2f}",
                     f"{out.runs_by_r[r]:g}",
                     f"{out.random_correct_selection_rate[r]:.2f}"])
    rows.append(["all", "every R at once", "", f"{out.correct_selection_rate['all']:.2f}",
                 f"{out.cells_median:g} in all", f"{out.random_correct_selection_rate['all']:.2f}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def verdict(out: Outcome) -> str:
    """The issue's targets, checked: correct selection ≥ 0.9 at every R, median runs ≤ the budget, and no more
    runs than random search for the same correctness."""
    worst = min(out.correct_selection_rate[r] for r in out.correct_selection_rate if r != "all")
    rand = "never (not right at every R for good even with the whole grid)" if out.random_cells_median is None \
        else f"{out.random_cells_median:g}"
    ok = worst >= 0.9 and out.cells_median <= out.budget and (
        out.random_cells_median is None or out.cells_median <= out.random_cells_median
        or min(out.random_correct_selection_rate.values()) >= worst)
    return (f"Targets (correct selection ≥ 0.9 at every R, median runs ≤ {out.budget}, no more runs than random "
            f"search for the same correctness): **{'met' if ok else 'missed'}**. Lowest per-R correct-selection "
            f"rate {worst:.2f} over {out.replay_seeds} replay seeds; every R right at once in "
            f"{out.correct_selection_rate['all']:.2f}. The search stopped after {out.cells_median:g} runs (median), "
            f"calling every R resolved in {out.seeds_within_target:.2f} of the seeds "
            f"({out.false_resolutions} resolved R whose recommendation was wrong). Random search needs {rand} runs "
            "(median) until its best-read α is right at every R for good; after as many runs as the search used "
            f"it is right at every R in {out.random_correct_selection_rate['all']:.2f} of the seeds.")


def target_text(a: argparse.Namespace, grid: Grid) -> str:
    """The budget in runs and where it comes from."""
    return f"{a.target} runs (--target)" if a.target else f"{grid.n_cells // 3} runs, a third of the grid's"


def peak_rss_mib() -> float | None:
    """VmHWM of this process (Linux), MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def metric_part(a: argparse.Namespace, metric: str) -> tuple[str, Outcome]:
    """The table and the verdict for one metric, and its measures."""
    grid = load_grid(a.grid, metric, a.model, a.space)
    initial = [round(v if a.space == "alpha" else ar_share(v, grid.scale), 12)
               for v in (parse_number(t) for t in a.initial.split(","))]
    budget = a.target or grid.n_cells // 3
    t0 = time.perf_counter()
    search = [replay_search(grid, s, a.batch, initial, budget, a.tol, a.confidence) for s in range(a.seeds)]
    random = [replay_random(grid, s, a.batch, gp=False) for s in range(a.seeds)]
    out = measure(grid, search, random, budget, a.tol)
    text = "\n".join([
        f"**{metric}** ({'lower' if grid.lower else 'higher'} is better; replays took "
        f"{time.perf_counter() - t0:.0f} s):", "", table(grid, out), "", verdict(out), "", noise_line(grid, a.tol), ""])
    return text, out


def noise_line(grid: Grid, tol: float) -> str:
    """How the grid's seed noise compares with the tolerance and with each R's margin between its two best cells
    (a cell's value is the mean of its n seeds, so a difference of two cells has sd·√(1/n₁ + 1/n₂) from noise)."""
    sd = grid.seed_sd()
    if sd is None:
        return "The grid has one seed per cell: its seed noise is unknown."
    close = []
    for r in grid.levels:
        (x1, _), (x2, gap) = grid.best(r), grid.runner_up(r)
        noise = sd[0] * math.sqrt(1 / len(grid.samples[r, x1]) + 1 / len(grid.samples[r, x2]))
        if gap < noise:
            close.append(f"R={r:g} (by {gap:.4f}, noise {noise:.4f})")
    return (f"Seed noise: one run's value varies by {sd[0]:.4f} between seeds (standard deviation, pooled over the "
            f"{sd[1]} cells run with several seeds), against a tolerance of {tol:g}. "
            + (f"The best cell leads the next by less than the noise of that difference at {', '.join(close)}: which "
               "α is best there is not settled by the grid itself." if close
               else "Every R's best cell leads the next by more than the noise of that difference."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="a record written by bench/record_grid.py")
    ap.add_argument("--metric", action="append", help="repeatable; default val/ar_bpb and val/md_bpb")
    ap.add_argument("--model", default=None)
    ap.add_argument("--space", choices=("alpha", "ar_share"), default="alpha")
    ap.add_argument("--seeds", type=int, default=20, help="replay seeds")
    ap.add_argument("--batch", type=int, default=2, help="cells per round (sweeps/adaptive.yaml: 2)")
    ap.add_argument("--initial", default="1/2,1", help="initial design: these α at every R (as sweeps/adaptive.yaml)")
    ap.add_argument("--target", type=int, default=None,
                    help="the search's budget in runs (default: a third of the grid's runs)")
    ap.add_argument("--tol", type=float, default=0.01,
                    help="delta: right when within this of the best cell (bits per byte); the search's delta too")
    ap.add_argument("--confidence", type=float, default=0.9, help="the search's stopping probability")
    ap.add_argument("--json", type=Path, default=None, help="also write the measures, one object per metric")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    a = ap.parse_args()
    metrics = a.metric or ["val/ar_bpb", "val/md_bpb"]
    t0 = time.perf_counter()
    parts = [metric_part(a, m) for m in metrics]
    grid = load_grid(a.grid, metrics[0], a.model, a.space)
    text = "\n".join([
        f"{SECTION} ({a.grid.name})", "",
        f"`python bench/search_replay.py {a.grid}{f' --target {a.target}' if a.target else ''}`: the search of "
        f"`dualobj sweep` replayed on a recorded grid ({a.space} space, initial design "
        f"{{{a.initial.replace(',', ', ')}}} at every R, rounds of {a.batch}, delta {a.tol:g}, confidence "
        f"{a.confidence:g}, {a.seeds} replay seeds). The grid has {grid.n_cells} runs ({len(grid.samples)} cells); "
        f"the search's budget is {target_text(a, grid)}. Each time the search trains a cell it reads one of the "
        "cell's seeds not read before (so a cell takes at most as many runs as the grid has seeds of it); it stops "
        "when it calls every R resolved or the budget is spent. Correct = the final recommendation within delta "
        "of the grid's best cell by the mean over its seeds. Random search reads the grid's runs in a random "
        "order and recommends the α with the best mean read.", "",
        *(t for t, _ in parts),
        f"All replays: {time.perf_counter() - t0:.0f} s wall time, peak memory (VmHWM) "
        f"{peak_rss_mib() or float('nan'):.0f} MiB.", ""])
    print(text)
    if a.json is not None:
        write_json(a.json, [o.as_dict() for _, o in parts])
    if not a.no_write:
        write_section(a.out, f"{SECTION_KEY}: {a.grid.stem}", text)


if __name__ == "__main__":
    main()
