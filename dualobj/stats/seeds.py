"""Seed noise and paired comparisons of one metric over the (R, α) grid: which α is best at each R, and
which α a second seed could still put first.

Runs with the same seed share their initialisation and their data order across α (both are functions of
the seed), so at one R the values follow an additive model with a seed effect:

    value(α, seed) = μ_α + b_seed + ε,    ε ~ N(0, σ²) independent

fitted per R by least squares; σ² (the *paired* noise) is pooled over the R levels. The difference of two
α at one R is the contrast μ_a − μ_b, whose standard error comes from the fit: with seeds in common it is
paired (the seed effect cancels), and a cell with one seed is compared through the same model with the
grid's pooled noise, never as if noise-free. When the design leaves no residual degrees of freedom (no α
has seeds in common with another), the comparison falls back to the pooled spread of one run between
seeds (:attr:`Noise.run_sd`), unpaired. With no replicate seed anywhere the noise is unknown and nothing
is called resolved.

Tests: two-sided t tests on the pooled degrees of freedom, corrected for the number of comparisons with
Holm's step-down method (:func:`holm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dualobj.stats.frame import default_lower_is_better, r_level, select_model

LEVEL = 0.05  # the family-wise error rate of every "within noise" decision
HOLDS, FAILS, UNRESOLVED = "holds", "fails", "unresolved"
MAX_SEEDS = 100  # "more than this many" seeds per cell is reported as such


def seed_values(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Done runs with a finite ``metric``, R > 0 and α: columns R, alpha, seed, value (one row per run)."""
    cols = ["R", "alpha", "seed", "value"]
    if metric not in df or df.empty:
        return pd.DataFrame(columns=cols, dtype=float)
    done = df[df["state"] == "done"] if "state" in df else df
    out = pd.DataFrame({
        "R": pd.to_numeric(done["repetitions"], errors="coerce").astype(float),
        "alpha": pd.to_numeric(done["alpha"], errors="coerce").astype(float),
        "seed": pd.to_numeric(done["seed"], errors="coerce") if "seed" in done else 0,
        "value": pd.to_numeric(done[metric], errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)})
    out = out.dropna()
    out = out[out["R"] > 0]
    return out.assign(seed=out["seed"].astype(int)).reset_index(drop=True)[cols]


@dataclass(frozen=True)
class Noise:
    """The seed noise of one metric on a grid.

    ``run_sd``: the spread of one run between seeds, the within-cell standard deviation pooled over every
    cell with ≥ 2 seeds (``run_df`` degrees of freedom). ``pair_sd``: the residual standard deviation of
    the additive (α + seed) model, pooled over R (``pair_df``): the noise left in a difference of two α
    at one shared seed is ``pair_sd·√2``. NaN (and 0 df) when the grid cannot tell."""

    run_sd: float
    run_df: int
    pair_sd: float
    pair_df: int

    @property
    def known(self) -> bool:
        return self.pair_df > 0 or self.run_df > 0


@dataclass(frozen=True)
class Diff:
    """``value`` = mean(a) − mean(b) at one R, its standard error ``se`` on ``df`` degrees of freedom,
    whether it is ``paired`` by seed, and the fewest seeds a cell has among the two (``n``)."""

    value: float
    se: float
    df: int
    paired: bool
    n: int

    @property
    def p(self) -> float:
        """Two-sided p-value of "no difference" (1.0 when the noise is unknown)."""
        from scipy import stats

        if not (self.df > 0 and self.se > 0 and math.isfinite(self.se)):
            return 1.0 if self.value == 0 or not self.df else 0.0
        return float(2 * stats.t.sf(abs(self.value) / self.se, self.df))

    def resolved(self, level: float = LEVEL) -> bool:
        return self.p <= level

    def seeds_needed(self, level: float = LEVEL) -> int:
        """About how many seeds per cell would make a difference this large significant at ``level``
        (the standard error shrinks as 1/√seeds); ``MAX_SEEDS + 1`` when it is near 0 or the noise is unknown."""
        from scipy import stats

        if not (self.df > 0 and math.isfinite(self.se)) or abs(self.value) < 1e-15:
            return MAX_SEEDS + 1
        crit = float(stats.norm.isf(level / 2))
        need = math.ceil(self.n * (crit * self.se / abs(self.value)) ** 2)
        return min(max(need, self.n + 1 if not self.resolved(level) else self.n), MAX_SEEDS + 1)


def gain_verdict(gains: list[Diff], level: float = LEVEL) -> tuple[str, int]:
    """Whether every gain is positive beyond its noise (holds), one is negative beyond it (fails), or neither
    (unresolved), two-sided tests with Bonferroni over ``gains``; and about how many seeds per cell would
    decide the undecided ones (0 when decided)."""
    lv = level / max(len(gains), 1)
    if any(d.value < 0 and d.resolved(lv) for d in gains):
        return FAILS, 0
    if all(d.value > 0 and d.resolved(lv) for d in gains):
        return HOLDS, 0
    return UNRESOLVED, max(d.seeds_needed(lv) for d in gains if not d.resolved(lv))


def holm(pvalues: list[float], level: float = LEVEL) -> list[bool]:
    """Holm's step-down test: which hypotheses are rejected at family-wise error ``level``."""
    order = sorted(range(len(pvalues)), key=pvalues.__getitem__)
    rejected = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > level / (len(pvalues) - rank):
            break
        rejected[i] = True
    return rejected


@dataclass
class _Fit:
    """The least-squares fit of the additive model at one R."""

    alphas: list[float]
    seeds: list[int]
    coef: np.ndarray  # μ_α for each α, then b_seed for every seed but the first
    xtx_inv: np.ndarray
    rss: float
    df: int
    connected: bool  # every contrast of two α is estimable


def _fit(vals: pd.DataFrame) -> _Fit:
    alphas, seeds = sorted(vals["alpha"].unique()), sorted(vals["seed"].unique())
    ai = {a: i for i, a in enumerate(alphas)}
    si = {s: i for i, s in enumerate(seeds)}
    X = np.zeros((len(vals), len(alphas) + len(seeds) - 1))
    for row, (a, s) in enumerate(zip(vals["alpha"], vals["seed"], strict=True)):
        X[row, ai[a]] = 1.0
        if si[s] > 0:
            X[row, len(alphas) + si[s] - 1] = 1.0
    y = vals["value"].to_numpy(float)
    rank = int(np.linalg.matrix_rank(X)) if len(X) else 0
    xtx_inv = np.linalg.pinv(X.T @ X)
    coef = xtx_inv @ X.T @ y
    rss = float(np.sum((y - X @ coef) ** 2))
    return _Fit(alphas, seeds, coef, xtx_inv, rss, len(y) - rank, rank == X.shape[1])


@dataclass
class Best:
    """The best α at one R and the α that noise cannot separate from it."""

    R: float | int
    best_alpha: float
    mean: float
    se: float
    n_seeds: int
    within_noise: list[float]
    diffs: dict = field(default_factory=dict)  # α -> Diff(α − best)
    noise_known: bool = True

    @property
    def resolved(self) -> bool:
        return self.noise_known and not self.within_noise

    @property
    def plausible(self) -> list[float]:
        """The α values that may be the best: the best and those within noise of it."""
        return sorted([self.best_alpha, *self.within_noise])

    def seeds_needed(self, level: float = LEVEL) -> int:
        """About how many seeds per cell would separate the best from every α now within noise of it."""
        return max((self.diffs[a].seeds_needed(level / max(len(self.diffs), 1)) for a in self.within_noise),
                   default=self.n_seeds)


class SeedGrid:
    """One metric's done runs over (R, α, seed) of one model size: cell means, the seed noise, paired
    differences and the best α per R with what is within noise of it."""

    def __init__(self, df: pd.DataFrame, metric: str, model: str | None = None,
                 lower_is_better: bool | None = None):
        sub, self.model = select_model(df, model)
        self.metric = metric
        self.lower_is_better = default_lower_is_better(metric) if lower_is_better is None else lower_is_better
        self.values = seed_values(sub, metric)
        self._fits = {r: _fit(v) for r, v in self.values.groupby("R")}
        self.noise = self._noise()

    # ------------------------------------------------------------------ noise
    def _noise(self) -> Noise:
        g = self.values.groupby(["R", "alpha"])["value"]
        n, var = g.count(), g.var(ddof=1)
        run_df = int((n[n > 1] - 1).sum())
        run_ss = float(((n - 1) * var)[n > 1].sum())
        pair_df = sum(f.df for f in self._fits.values())
        pair_ss = sum(f.rss for f in self._fits.values())
        return Noise(math.sqrt(run_ss / run_df) if run_df else math.nan, run_df,
                     math.sqrt(pair_ss / pair_df) if pair_df else math.nan, pair_df)

    @property
    def r_levels(self) -> list:
        return [r_level(r) for r in sorted(self.values["R"].unique())]

    # ------------------------------------------------------------------ cells
    def cells(self) -> pd.DataFrame:
        """Per (R, α): n_seeds, seeds, mean (seed-adjusted: :meth:`mean`), raw_mean and se (pooled run noise
        over √n_seeds; NaN when unknown)."""
        rows = []
        for (r, a), c in self.values.groupby(["R", "alpha"]):
            n = len(c)
            rows.append({"R": r_level(r), "alpha": float(a), "n_seeds": n,
                         "seeds": ",".join(str(s) for s in sorted(c["seed"])), "mean": self.mean(r, a),
                         "raw_mean": float(c["value"].mean()), "se": self.noise.run_sd / math.sqrt(n)})
        return pd.DataFrame(rows, columns=["R", "alpha", "n_seeds", "seeds", "mean", "raw_mean", "se"])

    def mean(self, r, alpha) -> float:
        """The cell's mean over seeds, adjusted for the seed effects when cells at this R have different
        seeds (equal to the plain mean when every α has the same seeds)."""
        f, a = self._fits[float(r)], float(alpha)
        if not f.connected or f.df == 0:
            v = self.values
            return float(v[(v["R"] == float(r)) & (v["alpha"] == a)]["value"].mean())
        seed_effects = np.concatenate([[0.0], f.coef[len(f.alphas):]])
        return float(f.coef[f.alphas.index(a)] + seed_effects.mean())

    def alphas(self, r) -> list[float]:
        """The α values run at R=``r``, ascending."""
        return sorted(float(a) for a in self.values[self.values["R"] == float(r)]["alpha"].unique())

    def n_seeds(self, r, alpha) -> int:
        v = self.values
        return int(((v["R"] == float(r)) & (v["alpha"] == float(alpha))).sum())

    # ------------------------------------------------------------------ differences
    def diff(self, r, a, b) -> Diff:
        """mean(a) − mean(b) at R=``r``: paired through the seed model when it has residual degrees of
        freedom, else unpaired with the pooled spread of one run (NaN se when no noise is known)."""
        f, a, b = self._fits[float(r)], float(a), float(b)
        na, nb = self.n_seeds(r, a), self.n_seeds(r, b)
        value = self.mean(r, a) - self.mean(r, b)
        if f.connected and self.noise.pair_df > 0 and f.df > 0:
            c = np.zeros(len(f.coef))
            c[f.alphas.index(a)], c[f.alphas.index(b)] = 1.0, -1.0
            se = self.noise.pair_sd * math.sqrt(float(c @ f.xtx_inv @ c))
            return Diff(value, se, self.noise.pair_df, True, min(na, nb))
        se = self.noise.run_sd * math.sqrt(1 / na + 1 / nb) if self.noise.run_df else math.nan
        return Diff(value, se, self.noise.run_df, False, min(na, nb))

    def gain(self, r, a, b) -> Diff:
        """How much better α=``a`` is than α=``b`` at R (positive = better), as a :class:`Diff`."""
        d = self.diff(r, a, b)
        return d if not self.lower_is_better else Diff(-d.value, d.se, d.df, d.paired, d.n)

    # ------------------------------------------------------------------ best α
    def best(self, r, alphas: list[float] | None = None, level: float = LEVEL) -> Best | None:
        """The best α at R (among ``alphas``, default every α run there) by the seed-adjusted mean, and the
        α whose paired difference from it is not significant (Holm over the comparisons, at ``level``)."""
        cand = [a for a in self.alphas(r) if alphas is None or any(np.isclose(a, x) for x in alphas)]
        if not cand:
            return None
        means = {a: self.mean(r, a) for a in cand}
        best = (min if self.lower_is_better else max)(cand, key=means.__getitem__)
        others = [a for a in cand if a != best]
        diffs = {a: self.diff(r, a, best) for a in others}
        rejected = holm([diffs[a].p for a in others], level)
        within = [a for a, rej in zip(others, rejected, strict=True) if not rej]
        n = self.n_seeds(r, best)
        return Best(r_level(r), best, means[best], self.noise.run_sd / math.sqrt(n), n, within, diffs,
                    self.noise.known)

    def best_table(self, level: float = LEVEL) -> pd.DataFrame:
        """``best_alpha.csv``: per R the best α, its mean and se, its seeds, the α within noise of it
        (``;``-separated), whether it is resolved, and about how many seeds per cell would resolve it."""
        from dualobj.fmt import format_alpha

        rows = []
        for r in self.r_levels:
            b = self.best(r, level=level)
            rows.append({"metric": self.metric, "R": r, "best_alpha": b.best_alpha, "mean": b.mean, "se": b.se,
                         "n_seeds": b.n_seeds, "within_noise": ";".join(format_alpha(a) for a in b.within_noise),
                         "resolved": b.resolved, "seeds_to_resolve": "" if b.resolved else b.seeds_needed(level)})
        return pd.DataFrame(rows, columns=BEST_COLUMNS)


BEST_COLUMNS = ["metric", "R", "best_alpha", "mean", "se", "n_seeds", "within_noise", "resolved",
                "seeds_to_resolve"]
