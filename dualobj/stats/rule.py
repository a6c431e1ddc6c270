"""Does the best α transfer across model sizes? The best AR share at each (model size N, repetition level R),
with its seed noise, and a rule fitted to them:

    log2 s* = a + b·log2 R + c·log2(N / 10^6)        (s* = the best AR share, capped at 1)

N counts non-embedding parameters. The paper's Remark 2 (α·R ≈ 16, one size) is b = −1 on its own α axis;
c = 0 says the best mix does not depend on size.

* **Best share per (N, R)** (:func:`best_shares`): each size's runs get the report's GP over (R, α)
  (:func:`dualobj.stats.gp.fit_gp`: every run one observation, the white noise bounded below by the
  replicate seeds). The recommendation at R is the tried α with the best posterior mean; the seed noise of
  that answer is the spread of the argmin over joint draws of the latent surface (all R and α of the size
  at once, so the draws keep the correlation between neighbouring R).
* **The pure objectives** enter as censored answers: a best α of 1 says only that the continuous optimum
  lies above the midpoint between 1 and the next lower tried value (the rule must predict at least that);
  α = 0 says it lies below half the smallest tried positive value (log 0 is no target). Interior answers
  are targets of least squares in log2; censored ones add a squared penalty only when the rule is on their
  wrong side (:func:`fit_rule`). The coefficients are identified only when the interior answers alone
  determine them (rank 3); otherwise the fit says so instead of reporting a number the data do not fix.
* **Intervals** (:func:`rule_draws`): the rule re-fitted to every joint posterior draw of the best shares,
  i.e. a parametric bootstrap over the seed noise the GPs measured; the 5th–95th percentiles are the
  reported 90% intervals.
* **Leave one size out** (:func:`leave_one_size_out`): the rule fitted to the other sizes predicts each R's
  best share for the left-out size; its cost is the left-out size's posterior mean at the predicted share
  (snapped to its nearest tried value) minus its best posterior mean, in the metric's units. The same with
  c fixed at 0 (a size-blind rule) says whether the size term earns its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dualobj.stats.gp import features, fit_gp

N_UNIT = 1e6  # N enters as log2(N / 10^6): a is log2 of the best share at R = 1 and one million parameters
COEFFICIENTS = ("a", "b", "c")


@dataclass
class SizeBest:
    """One model size's best AR share at each R: the recommendation, and joint posterior draws of it."""

    model: str
    params: float  # non-embedding parameters
    levels: np.ndarray  # the R levels, ascending
    shares: list[np.ndarray]  # per R, the tried AR shares, ascending
    mean: list[np.ndarray]  # per R, the latent posterior mean at those shares (the metric's units)
    best: np.ndarray  # per R, the recommended share (best posterior mean)
    draws: np.ndarray  # (n_draws, n_R): the best share of each joint posterior draw
    runs: np.ndarray  # per R, the runs behind it (seeds counted)
    lower: bool = True  # whether a lower metric is better

    def interval(self, q: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Per R, the central ``q`` interval of the best share over the draws."""
        lo, hi = np.quantile(self.draws, [(1 - q) / 2, (1 + q) / 2], axis=0, method="inverted_cdf")
        return lo, hi

    def regret(self, i: int, share: float) -> float:
        """The posterior cost of using ``share`` at the i-th R: the mean at the nearest tried share minus the
        best mean (>= 0, the metric's units)."""
        m = self.mean[i] if self.lower else -self.mean[i]
        k = int(np.argmin(np.abs(self.shares[i] - share)))
        return float(m[k] - m.min())


def best_shares(runs: pd.DataFrame, metric: str, lower: bool, n_draws: int = 1000, seed: int = 0) -> SizeBest:
    """:class:`SizeBest` of one model size's done runs (columns model, params_non_embedding, repetitions,
    alpha, ar_share, seed, state and ``metric``); at least 4 runs with a finite metric."""
    from threadpoolctl import threadpool_limits

    done = runs[(runs["state"] == "done") & np.isfinite(pd.to_numeric(runs[metric], errors="coerce"))]
    gp = fit_gp(done, metric, lower_is_better=lower, n_alpha=3, n_samples=8, seed=seed)
    share_of = done.groupby("alpha")["ar_share"].mean()
    levels = np.sort(done["repetitions"].unique())
    alphas = [np.sort(done.loc[done["repetitions"] == r, "alpha"].unique()) for r in levels]
    r = np.concatenate([np.full(len(a), lv) for lv, a in zip(levels, alphas, strict=True)])
    x = np.concatenate(alphas)
    with threadpool_limits(limits=1):
        mean, cov = gp.latent.predict(features(r, x), return_cov=True)
    sign = 1.0 if lower else -1.0
    draws = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n_draws, method="eigh",
                                                            check_valid="ignore")
    cuts = np.cumsum([0, *map(len, alphas)])
    shares = [share_of.loc[a].to_numpy(float) for a in alphas]
    best, drawn, means = [], [], []
    for i, s in enumerate(shares):
        m, d = mean[cuts[i]:cuts[i + 1]], draws[:, cuts[i]:cuts[i + 1]]
        means.append(np.asarray(m, float))
        best.append(s[int(np.argmin(sign * m))])
        drawn.append(s[np.argmin(sign * d, axis=1)])
    n_runs = np.array([int((done["repetitions"] == lv).sum()) for lv in levels])
    return SizeBest(str(done["model"].iloc[0]), float(done["params_non_embedding"].iloc[0]), levels, shares, means,
                    np.array(best), np.stack(drawn, axis=1), n_runs, lower)


# ----------------------------------------------------------------------------- the rule
@dataclass
class Points:
    """Best shares to fit a rule to: one row per (size, R), with the bounds that censor the pure ends."""

    log_r: np.ndarray
    log_n: np.ndarray
    share: np.ndarray
    floor: np.ndarray  # log2 of half the smallest positive tried share (an answer of 0 lies below it)
    ceiling: np.ndarray  # log2 of the midpoint between 1 and the next lower tried share (an answer of 1 lies above)

    @property
    def design(self) -> np.ndarray:
        return np.column_stack([np.ones_like(self.log_r), self.log_r, self.log_n])

    def with_share(self, share: np.ndarray) -> Points:
        return Points(self.log_r, self.log_n, share, self.floor, self.ceiling)


def points_of(sizes: list[SizeBest], share: list[np.ndarray] | None = None) -> Points:
    """The fit's rows for ``sizes`` (their recommendations, or ``share``: one array per size)."""
    rows = []
    for k, sb in enumerate(sizes):
        for i, lv in enumerate(sb.levels):
            pos = sb.shares[i][sb.shares[i] > 0]
            below_one = sb.shares[i][sb.shares[i] < 1]
            floor = math.log2(pos.min() / 2) if len(pos) else -np.inf
            ceiling = math.log2((1 + below_one.max()) / 2) if len(below_one) else np.inf
            s = sb.best[i] if share is None else share[k][i]
            rows.append((math.log2(lv), math.log2(sb.params / N_UNIT), s, floor, ceiling))
    a = np.array(rows, float).reshape(-1, 5)
    return Points(*a.T)


def _residuals(theta: np.ndarray, p: Points) -> np.ndarray:
    pred = p.design @ theta
    inner = (p.share > 0) & (p.share < 1)
    with np.errstate(divide="ignore"):
        target = np.log2(np.where(inner, p.share, 1.0))
    return np.where(inner, pred - target,
                    np.where(p.share >= 1, np.maximum(p.ceiling - pred, 0.0), np.maximum(pred - p.floor, 0.0)))


def fit_rule(p: Points, size_term: bool = True) -> tuple[np.ndarray, bool]:
    """(a, b, c) by least squares on the interior answers plus the censoring penalties, and whether the
    interior answers identify them (rank 3, or 2 without the size term, whose c is then 0)."""
    from scipy.optimize import least_squares

    cols = [0, 1, 2] if size_term else [0, 1]
    inner = (p.share > 0) & (p.share < 1)
    X = p.design[:, cols]
    identified = bool(np.linalg.matrix_rank(X[inner]) == len(cols)) if inner.sum() >= len(cols) else False
    start = np.zeros(len(cols))
    if inner.any():
        start = np.linalg.lstsq(X[inner], np.log2(p.share[inner]), rcond=None)[0]

    def res(t):
        return _residuals(np.r_[t, np.zeros(3 - len(cols))], p)

    theta = least_squares(res, start, method="trf").x
    return np.r_[theta, np.zeros(3 - len(cols))], identified


def predict(theta: np.ndarray, r, n) -> np.ndarray:
    """The rule's best AR share at repetition level(s) ``r`` and non-embedding parameter count(s) ``n``."""
    log = theta[0] + theta[1] * np.log2(np.asarray(r, float)) + theta[2] * np.log2(np.asarray(n, float) / N_UNIT)
    return np.minimum(1.0, np.exp2(log))


@dataclass
class RuleFit:
    """The rule fitted to the recommendations, and its coefficients over the posterior draws."""

    theta: np.ndarray  # (a, b, c) fitted to the recommended shares
    identified: bool
    draws: np.ndarray  # (n_draws, 3): the fit to each joint draw
    identified_share: float  # the fraction of draws whose interior answers identify the rule
    n_points: int
    n_sizes: int

    def interval(self, q: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.quantile(self.draws, [(1 - q) / 2, (1 + q) / 2], axis=0)
        return lo, hi

    @property
    def median(self) -> np.ndarray:
        """The coefficients' median over the draws: the reported estimate (the fit to the recommendations can
        sit at the edge of the draws, each recommendation being the edge of its own skewed spread)."""
        return np.median(self.draws, axis=0)


def rule_draws(sizes: list[SizeBest], size_term: bool = True, max_draws: int = 400) -> RuleFit:
    """The rule fitted to the recommendations and to each of the first ``max_draws`` joint posterior draws."""
    base = points_of(sizes)
    theta, identified = fit_rule(base, size_term)
    n = min(max_draws, min(len(sb.draws) for sb in sizes))
    fits, ok = [], 0
    for j in range(n):
        t, good = fit_rule(points_of(sizes, [sb.draws[j] for sb in sizes]), size_term)
        fits.append(t)
        ok += good
    return RuleFit(theta, identified, np.array(fits).reshape(-1, 3), ok / max(n, 1), len(base.share), len(sizes))


def leave_one_size_out(sizes: list[SizeBest], size_term: bool = True) -> list[dict]:
    """For each size: the rule fitted to the other sizes, its predicted share per R, and the cost of using it
    (mean and largest over R, the metric's units), next to the size's own recommendation."""
    out = []
    for k, sb in enumerate(sizes):
        others = [s for j, s in enumerate(sizes) if j != k]
        theta, identified = fit_rule(points_of(others), size_term)
        pred = predict(theta, sb.levels, sb.params)
        cost = np.array([sb.regret(i, s) for i, s in enumerate(pred)])
        out.append({"model": sb.model, "params": sb.params, "identified": identified, "predicted": pred,
                    "best": sb.best, "cost": cost, "mean_cost": float(cost.mean()), "max_cost": float(cost.max())})
    return out
