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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dualobj.budget import ar_share
from dualobj.config import parse_number
from dualobj.fmt import format_alpha
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

    def problem(self, seed: int) -> Problem:
        return Problem(levels=tuple(self.levels), values=tuple(self.values), lower=self.lower, seed=seed,
                       allowed=frozenset(self.samples))

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
def _read(grid: Grid, points, rng: np.random.Generator) -> list[dict]:
    """What "training" ``points`` gives: per point the value of one of its seeds, drawn at random."""
    return [{"R": r, "x": x, "value": float(grid.samples[r, x][rng.integers(len(grid.samples[r, x]))])}
            for r, x in points]


def _best_read(grid: Grid, obs: list[dict]) -> dict:
    """Per R, the x with the best value read so far (None where nothing was read)."""
    rec = {}
    for r in grid.levels:
        seen = [(o["value"], o["x"]) for o in obs if o["R"] == r]
        rec[r] = (min(seen) if grid.lower else max(seen))[1] if seen else None
    return rec


def _recommend(grid: Grid, problem: Problem, obs: list[dict]):
    """The GP posterior and its recommended x per R (the best read value where no GP can be fitted yet)."""
    post, summary = assess(problem, pd.DataFrame(obs, columns=["R", "x", "value"]))
    rec = {row["R"]: row["x"] for row in summary} if summary else _best_read(grid, obs)
    return post, rec


def replay_search(grid: Grid, seed: int, batch: int, initial: list[float]) -> list[tuple[int, dict]]:
    """The adaptive search until every grid cell is tried: after each round, (cells so far, x recommended per R)."""
    problem, rng = grid.problem(seed), np.random.default_rng(1000 + seed)
    points = [(r, x) for r in grid.levels for x in initial if (r, x) in grid.samples]
    obs: list[dict] = []
    tried: set = set()
    history = []
    while points:
        obs += _read(grid, points, rng)
        tried |= set(points)
        post, rec = _recommend(grid, problem, obs)
        history.append((len(tried), rec))
        points, _ = next_cells(problem, post, tried, min(batch, len(grid.samples) - len(tried)))
    return history


def replay_random(grid: Grid, seed: int, batch: int, gp: bool) -> list[tuple[int, dict]]:
    """Random search over the grid's cells in rounds of ``batch``: after each round, (cells so far, x per R)."""
    problem, rng = grid.problem(seed), np.random.default_rng(2000 + seed)
    order = [problem.points[i] for i in np.random.default_rng(3000 + seed).permutation(len(problem.points))]
    obs: list[dict] = []
    history = []
    for k in range(0, len(order), batch):
        obs += _read(grid, order[k:k + batch], rng)
        rec = _recommend(grid, problem, obs)[1] if gp else _best_read(grid, obs)
        history.append((k + len(order[k:k + batch]), rec))
    return history


def cells_needed(grid: Grid, history: list[tuple[int, dict]], r: float, tol: float) -> int | None:
    """Cells tried when R became resolved for good (its recommendation within ``tol`` of the best cell from
    then to the end); None if it is not resolved at the end."""
    needed = None
    for n, rec in history:
        if grid.ok(r, rec.get(r), tol):
            needed = n if needed is None else needed
        else:
            needed = None
    return needed


# ----------------------------------------------------------------------------- the table
def _needed(grid: Grid, histories: list, tol: float) -> dict:
    """Per R (and "all": every R at once), the cells needed in each seed's history."""
    out = {r: [cells_needed(grid, h, r, tol) for h in histories] for r in grid.levels}
    out["all"] = [None if any(out[r][i] is None for r in grid.levels) else max(out[r][i] for r in grid.levels)
                  for i in range(len(histories))]
    return out


def _spread(ns: list) -> str:
    """Median (min–max) of cells needed; '>' counts seeds never resolved as worse than any count."""
    big = 10**9
    vals = sorted(big if n is None else n for n in ns)
    med = statistics.median_low(vals)
    text = lambda v: "never" if v == big else str(v)  # noqa: E731
    return f"{text(med)} ({text(vals[0])}–{text(vals[-1])})"


def _within(ns: list, budget: int) -> str:
    return f"{sum(n is not None and n <= budget for n in ns)}/{len(ns)}"


def table(grid: Grid, results: dict, budget: int) -> str:
    """Markdown: per R the grid's best α, then per method the cells needed and the seeds resolved in budget."""
    methods = list(results)
    head = ["R", "grid's best α (value)", "next best α (how much worse)"]
    for m in methods:
        head += [f"{m}: cells needed, median (range)", f"{m}: seeds ≤ {budget}"]
    rows = []
    for r in [*grid.levels, "all"]:
        if r == "all":
            first, second = "every R at once", ""
        else:
            x, v = grid.best(r)
            x2, gap = grid.runner_up(r)
            first, second = f"{format_alpha(grid.alpha(x))} ({v:.4f})", f"{format_alpha(grid.alpha(x2))} (+{gap:.4f})"
        row = [f"{r:g}" if r != "all" else "all", first, second]
        for m in methods:
            row += [_spread(results[m][r]), _within(results[m][r], budget)]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def target_text(a: argparse.Namespace, grid: Grid) -> str:
    """The target's cell count and where it comes from."""
    return f"{a.target} cells (--target)" if a.target else f"{grid.n_cells // 3} cells, a third of the grid"


def verdict(results: dict, budget: int, n_seeds: int, what: str = "a third of the grid") -> str:
    """The issue's target, checked: every R resolved within a third of the grid in ≥ 9 of 10 seeds, and
    clearly better than random search."""
    ours = results["adaptive search"]["all"]
    rand = results["random search"]["all"]
    hit = sum(n is not None and n <= budget for n in ours)
    need = -(-9 * n_seeds // 10)
    ok = "met" if hit >= need else "missed"
    big = 10**9
    med = lambda ns: statistics.median_low(sorted(big if n is None else n for n in ns))  # noqa: E731
    show = lambda v: "never" if v == big else str(v)  # noqa: E731
    return (f"Target (every R resolved with at most {budget} cells, {what}, in at least {need} of "
            f"{n_seeds} seeds): **{ok}** ({hit}/{n_seeds}). Median cells until every R is resolved: adaptive "
            f"search {show(med(ours))}, random search {show(med(rand))} "
            f"(random search resolves every R within {budget} cells in "
            f"{sum(n is not None and n <= budget for n in rand)}/{n_seeds} seeds).")


def peak_rss_mib() -> float | None:
    """VmHWM of this process (Linux), MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_all(grid: Grid, seeds: int, batch: int, initial: list[float]) -> dict:
    """Every method's histories, one per seed."""
    return {
        "adaptive search": [replay_search(grid, s, batch, initial) for s in range(seeds)],
        "random search": [replay_random(grid, s, batch, gp=False) for s in range(seeds)],
        "random + GP": [replay_random(grid, s, batch, gp=True) for s in range(seeds)],
    }


def metric_part(a: argparse.Namespace, metric: str) -> str:
    """The table and the verdict for one metric."""
    grid = load_grid(a.grid, metric, a.model, a.space)
    initial = [round(v if a.space == "alpha" else ar_share(v, grid.scale), 12)
               for v in (parse_number(t) for t in a.initial.split(","))]
    t0 = time.perf_counter()
    results = {m: _needed(grid, h, a.tol) for m, h in run_all(grid, a.seeds, a.batch, initial).items()}
    wall = time.perf_counter() - t0
    budget = a.target or grid.n_cells // 3
    return "\n".join([
        f"**{metric}** ({'lower' if grid.lower else 'higher'} is better; replays took {wall:.0f} s):", "",
        table(grid, results, budget), "",
        verdict(results, budget, a.seeds, "--target" if a.target else "a third of the grid"), "",
        noise_line(grid, a.tol), ""])


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
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2, help="cells per round (sweeps/adaptive.yaml: 2)")
    ap.add_argument("--initial", default="1/2,1", help="initial design: these α at every R (as sweeps/adaptive.yaml)")
    ap.add_argument("--target", type=int, default=None,
                    help="the cells within which every R should be resolved (default: a third of the grid's runs)")
    ap.add_argument("--tol", type=float, default=0.01, help="resolved: within this of the best cell (bits per byte)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    a = ap.parse_args()
    metrics = a.metric or ["val/ar_bpb", "val/md_bpb"]
    t0 = time.perf_counter()
    parts = [metric_part(a, m) for m in metrics]
    grid = load_grid(a.grid, metrics[0], a.model, a.space)
    text = "\n".join([
        f"{SECTION} ({a.grid.name})", "",
        f"`python bench/search_replay.py {a.grid}{f' --target {a.target}' if a.target else ''}`: "
        "the search of `dualobj sweep` replayed on a recorded grid "
        f"({a.space} space, initial design {{{a.initial.replace(',', ', ')}}} at every R, rounds of {a.batch}, "
        f"{a.seeds} seeds, tolerance {a.tol:g}). The grid has {grid.n_cells} cells ({len(grid.samples)} distinct "
        f"(R, α){', the rest second seeds' * (grid.n_cells > len(grid.samples))}): the full grid needs all "
        f"{grid.n_cells}, the target is {target_text(a, grid)}. Cells needed = cells tried when R's recommended α "
        "came within the tolerance of the "
        "grid's best cell and stayed there until every cell was tried (\"never\": not so at the end). Random "
        "search tries the cells in a random order and recommends the best value read; \"random + GP\" recommends "
        "the GP's best posterior mean instead.", "",
        *parts,
        f"All replays: {time.perf_counter() - t0:.0f} s wall time, peak memory (VmHWM) "
        f"{peak_rss_mib() or float('nan'):.0f} MiB.", ""])
    print(text)
    if not a.no_write:
        write_section(a.out, f"{SECTION_KEY}: {a.grid.stem}", text)


if __name__ == "__main__":
    main()
