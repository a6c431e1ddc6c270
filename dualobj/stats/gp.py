"""The Gaussian-process surface of one metric over (log2 R, α), as the paper's optimal-α analysis:
:func:`fit_gp` (posterior, R², optimum per R, P(α optimal | R)); its figure is the report's
(:func:`dualobj.report.gp.plot_gp_surface`).

The paper's GP details beyond "anisotropic Matérn ν=1.5 + white noise" are unknown; the choices made
here (inputs log2 R and the warped α of :func:`alpha_axis`, normalised targets, a constant amplitude, a
white-noise level bounded below by the replicate seeds) are documented in :func:`fit_gp`.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dualobj.fmt import format_alpha, format_number
from dualobj.stats.frame import default_lower_is_better, done_values, r_level, select_model

MIN_GP_RUNS = 4
ALPHA_EPS = 1 / 64  # the α axis's resolution next to pure AR: 63/64 lies one unit of alpha_axis from α = 1


def alpha_axis(alpha):
    """The GP's α coordinate: u = −log2(1 − α + 1/64), the number of halvings of the distance to pure AR.

    α = 0, 1/2, 3/4, 15/16, 63/64, 1 map to −0.02, 0.96, 1.93, 3.68, 5, 6: the mixes next to α = 1, where the
    metrics change slope (a model with no masked-diffusion weight is a poor MD scorer; 15/16 and 63/64 are
    the paper's best α at low R), get as much room as the coarse mixes, so one stationary kernel fits both
    the slow change over small α and the kink next to pure AR. The offset 1/64 keeps α = 1 finite and was
    chosen a priori (the paper's finest mix); bench/RESULTS.md reports the calibration it gives."""
    return -np.log2(1.0 - np.asarray(alpha, float) + ALPHA_EPS)


def features(r, alpha) -> np.ndarray:
    """The GP's inputs for repetitions ``r`` and AR weights ``alpha`` (1-D, same length): (log2 R, u(α))."""
    return np.column_stack([np.log2(np.asarray(r, float)), alpha_axis(alpha)])


@dataclass
class GPFit:
    """A Gaussian-process fit of one metric over (log2 R, α); see :func:`fit_gp`.

    ``mean``/``std``: the latent (noise-free) posterior on the grid, index R (the levels run), columns
    ``alpha_grid``. ``best_alpha_by_r``/``best_value_by_r``: the optimum of the posterior mean per R on
    that grid. ``p_optimal``: per R, a Series (index: the α values run at that R plus the dense optimum,
    ascending) of the posterior probability that each is the best of them; each sums to 1.
    ``p_optimal_dense``: the same over the whole ``alpha_grid`` (R × α), for the figure.
    """

    metric: str
    model: str | None
    lower_is_better: bool
    kernel: object
    r2: float
    r2_loo: float | None
    n_obs: int
    r_levels: list
    alpha_grid: np.ndarray
    mean: pd.DataFrame
    std: pd.DataFrame
    best_alpha_by_r: pd.Series
    best_value_by_r: pd.Series
    p_optimal: dict
    p_optimal_dense: pd.DataFrame
    observations: pd.DataFrame
    regressor: object
    latent: object
    n_samples: int
    notes: list[str] = field(default_factory=list)

    def predict(self, r, alpha, return_std: bool = False):
        """Latent posterior mean (and std) at repetitions ``r`` and AR weight ``alpha`` (broadcast)."""
        r, a = np.broadcast_arrays(np.asarray(r, float), np.asarray(alpha, float))
        x = features(r.ravel(), a.ravel())
        if return_std:
            m, s = self.latent.predict(x, return_std=True)
            return m.reshape(r.shape), s.reshape(r.shape)
        return self.latent.predict(x).reshape(r.shape)

    def p_optimal_frame(self) -> pd.DataFrame:
        """Long form of ``p_optimal``: R, alpha, p, run (whether α was run at that R), gp_best."""
        rows = []
        for r, s in self.p_optimal.items():
            ran = set(self.observations.loc[self.observations["R"] == float(r), "alpha"])
            for a, p in s.items():
                rows.append({"R": r, "alpha": a, "p": float(p), "run": a in ran,
                             "gp_best": bool(np.isclose(a, self.best_alpha_by_r[r]))})
        return pd.DataFrame(rows, columns=["R", "alpha", "p", "run", "gp_best"])

    def summary_line(self) -> str:
        loo = "" if self.r2_loo is None else f", leave-one-out R² = {self.r2_loo:.4f}"
        return (f"GP on (log2 R, α) → {self.metric} ({'lower' if self.lower_is_better else 'higher'} is "
                f"better): R² = {self.r2:.4f}{loo} on {self.n_obs} runs; kernel `{self.kernel}`")

    def markdown(self, digits: int = 4) -> str:
        """The summary line and a table: per R the GP optimum, its predicted value and P(α optimal)."""
        alphas = sorted({float(a) for a in self.observations["alpha"]})
        head = ["R", "GP best α", "predicted", *[f"P({format_alpha(a)})" for a in alphas], "P(GP best α)"]
        lines = [self.summary_line(), "", "| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
        for r in self.r_levels:
            s, b = self.p_optimal[r], float(self.best_alpha_by_r[r])
            ran = set(self.observations.loc[self.observations["R"] == float(r), "alpha"])
            probs = [f"{s[a]:.3f}" if a in ran and a in s.index else "" for a in alphas]
            pb = s[b] if b in s.index else np.nan
            lines.append("| " + " | ".join([str(r), f"{b:.3g}", format_number(self.best_value_by_r[r], digits), *probs,
                                            f"{pb:.3f}"]) + " |")
        return "\n".join(lines)


def _latent(gpr):
    """A shallow copy of a fitted regressor whose kernel drops the WhiteKernel term, so that predict and
    sample_y give the noise-free function (sklearn adds the white noise to predicted covariances)."""
    from sklearn.gaussian_process.kernels import Sum, WhiteKernel

    lat = copy.copy(gpr)
    k = gpr.kernel_
    if isinstance(k, Sum) and isinstance(k.k2, WhiteKernel):
        lat.kernel_ = k.k1
    return lat


def _p_optimal(lat, r: float, alphas: np.ndarray, n_samples: int, seed: int, lower: bool) -> np.ndarray:
    x = features(np.full(len(alphas), r), alphas)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-singular covariances of close grid points
        samples = lat.sample_y(x, n_samples=n_samples, random_state=seed)  # (n_points, n_samples)
    samples = np.asarray(samples).reshape(len(alphas), n_samples)
    idx = samples.argmin(axis=0) if lower else samples.argmax(axis=0)
    return np.bincount(idx, minlength=len(alphas)) / n_samples


def _loo_r2(gpr, X: np.ndarray, y: np.ndarray) -> float | None:
    """Closed-form leave-one-out R² with the fitted hyper-parameters (Rasmussen & Williams eq. 5.12)."""
    try:
        K = gpr.kernel_(X) + np.eye(len(X)) * gpr.alpha
        Kinv = np.linalg.inv(K)
        y_std = float(np.atleast_1d(getattr(gpr, "_y_train_std", np.std(y) or 1.0))[0])
        resid = np.ravel(gpr.alpha_) / np.diag(Kinv) * y_std
        ss = float(np.sum((y - y.mean()) ** 2))
        return None if ss == 0 else 1.0 - float(np.sum(resid ** 2)) / ss
    except (np.linalg.LinAlgError, ValueError, AttributeError):
        return None


def fit_gp(df: pd.DataFrame, metric: str, model: str | None = None, lower_is_better: bool | None = None,
           n_alpha: int = 101, n_samples: int = 2000, seed: int = 0, n_restarts: int = 2) -> GPFit:
    """Fit a GP to ``metric`` of the done runs over (R, α), as the paper's optimal-α analysis.

    Inputs: x = (log2 R, u(α)) (:func:`features`). R enters as log2 because the grid is geometric (1, 2,
    4, …, 256) and over-fitting grows with the number of epochs multiplicatively; α enters through
    :func:`alpha_axis`, which spreads the mixes next to pure AR where the metrics change slope (untransformed
    α left the MD target's leave-one-cell-out 90% intervals holding 82% of cells on the three-seed mini grid;
    the warp gives 89%, and 86% for the AR target: bench/RESULTS.md). The paper leaves both unspecified.
    Every done run with a finite value is one observation (seeds are separate points, so the white-noise
    term absorbs seed variance). Target: the metric itself, with ``normalize_y=True``.

    Kernel: ConstantKernel × Matern(ν=1.5, anisotropic, length_scale=[1, 1] on (log2 R, u), bounds
    [0.05, 100] each) + WhiteKernel bounded below by the replicate seeds (:func:`noise_floor`);
    hyper-parameters by maximum marginal likelihood with ``n_restarts`` random restarts (seeded).

    Reported: R² of the posterior mean on the training points, the closed-form leave-one-out R², the
    latent (noise-free) posterior mean/std on R levels × ``n_alpha`` α values in [0, 1], the optimum of
    the mean per R, and P(α optimal | R): ``n_samples`` joint draws of the latent function (sample_y)
    over the α values run at that R plus the dense optimum; each draw votes for its argmin (argmax when
    higher is better). Raises ValueError with fewer than 4 observations or when every value is the same
    (a constant has no surface, and sklearn would only warn). BLAS runs single-threaded
    during the fit (the matrices are tiny; thread hand-offs made it ~20× slower on a 2-core machine).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit_gp(df, metric, model, lower_is_better, n_alpha, n_samples, seed, n_restarts)


def _fit_gp(df: pd.DataFrame, metric: str, model: str | None, lower_is_better: bool | None,
            n_alpha: int, n_samples: int, seed: int, n_restarts: int) -> GPFit:
    if lower_is_better is None:
        lower_is_better = default_lower_is_better(metric)
    sub, model = select_model(df, model)
    obs = done_values(sub, metric)
    if len(obs) < MIN_GP_RUNS:
        raise ValueError(f"{len(obs)} done runs with {metric}; the GP needs at least {MIN_GP_RUNS}")
    X = features(obs["R"], obs["alpha"])
    y = obs["value"].to_numpy(float)
    if np.ptp(y) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        raise ValueError(f"all {len(y)} values of {metric} are equal ({y[0]:g}); there is no surface to fit")
    floor = noise_floor(sub, metric, y)
    gpr, notes = _fit_regressor(X, y, seed, n_restarts, floor)

    pred = gpr.predict(X)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else float("nan")
    lat = _latent(gpr)
    r_levels = [r_level(r) for r in sorted(obs["R"].unique())]
    grid = np.linspace(0.0, 1.0, n_alpha)
    mean, std, best_alpha, best_value = _posterior_grid(lat, r_levels, grid, lower_is_better)
    p_opt, dense = _p_optimal_by_r(lat, obs, r_levels, grid, best_alpha, n_samples, seed, lower_is_better)
    return GPFit(metric=metric, model=model, lower_is_better=lower_is_better, kernel=gpr.kernel_, r2=r2,
                 r2_loo=_loo_r2(gpr, X, y), n_obs=len(obs), r_levels=r_levels, alpha_grid=grid, mean=mean,
                 std=std, best_alpha_by_r=best_alpha, best_value_by_r=best_value, p_optimal=p_opt,
                 p_optimal_dense=dense, observations=obs, regressor=gpr, latent=lat, n_samples=n_samples,
                 notes=notes)


def noise_floor(runs: pd.DataFrame, metric: str, y: np.ndarray) -> float | None:
    """The lower bound of the GP's white-noise level, in the units of the normalised target (the variance
    of one run between seeds over the target's variance): the one-sided 95% lower confidence limit of the
    pooled seed variance (:class:`dualobj.stats.seeds.Noise`: ``run_sd``), so that the GP cannot believe
    the runs more precise than their replicate seeds show. None when no cell has two seeds."""
    from scipy import stats

    from dualobj.stats.seeds import SeedGrid

    noise = SeedGrid(runs, metric).noise
    if not noise.run_df or not np.isfinite(noise.run_sd) or np.var(y) <= 0:
        return None
    low = noise.run_sd ** 2 * noise.run_df / float(stats.chi2.isf(0.05, noise.run_df))
    return float(min(max(low / np.var(y), 1e-8), 0.5))


def _fit_regressor(X: np.ndarray, y: np.ndarray, seed: int, n_restarts: int, floor: float | None = None):
    """The fitted GaussianProcessRegressor (kernel: see :func:`fit_gp`; the white noise bounded below by
    ``floor`` when given, :func:`noise_floor`) and its optimiser's warnings."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = (ConstantKernel(1.0, (1e-3, 1e3))
              * Matern(length_scale=[1.0, 1.0], length_scale_bounds=[(0.05, 100.0), (0.05, 100.0)], nu=1.5)
              + WhiteKernel(noise_level=max(1e-2, 2 * (floor or 0)), noise_level_bounds=(floor or 1e-8, 1.0)))
    gpr = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=n_restarts,
                                   random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        gpr.fit(X, y)
    notes = sorted({str(w.message).split(".")[0] for w in caught if issubclass(w.category, ConvergenceWarning)})
    return gpr, notes


def _posterior_grid(lat, r_levels: list, grid: np.ndarray, lower: bool):
    """Latent posterior mean and std on R levels × ``grid`` (frames), and per R the optimum's α and value."""
    xg = features(np.repeat(np.asarray(r_levels, float), len(grid)), np.tile(grid, len(r_levels)))
    m, s = lat.predict(xg, return_std=True)
    idx = pd.Index(r_levels, name="R")
    mean = pd.DataFrame(m.reshape(len(r_levels), len(grid)), index=idx, columns=pd.Index(grid, name="α"))
    std = pd.DataFrame(s.reshape(len(r_levels), len(grid)), index=idx, columns=pd.Index(grid, name="α"))
    best_pos = mean.to_numpy().argmin(axis=1) if lower else mean.to_numpy().argmax(axis=1)
    best_alpha = pd.Series(grid[best_pos], index=idx, name="best α")
    best_value = pd.Series(mean.to_numpy()[np.arange(len(r_levels)), best_pos], index=idx, name="best")
    return mean, std, best_alpha, best_value


def _p_optimal_by_r(lat, obs: pd.DataFrame, r_levels: list, grid: np.ndarray, best_alpha: pd.Series,
                    n_samples: int, seed: int, lower: bool) -> tuple[dict, pd.DataFrame]:
    """P(α optimal | R) over the α values run at each R plus the dense optimum, and over the whole grid."""
    p_opt: dict = {}
    dense = np.zeros((len(r_levels), len(grid)))
    for i, r in enumerate(r_levels):
        ran = sorted(set(obs.loc[obs["R"] == float(r), "alpha"]))
        b = float(best_alpha[r])
        coarse = np.array(sorted(set(ran) | ({b} if not np.isclose(ran, b).any() else set())))
        p_opt[r] = pd.Series(_p_optimal(lat, r, coarse, n_samples, seed + i, lower),
                             index=pd.Index(coarse, name="α"), name="P(optimal)")
        dense[i] = _p_optimal(lat, r, grid, n_samples, seed + 1000 + i, lower)
    idx = pd.Index(r_levels, name="R")
    return p_opt, pd.DataFrame(dense, index=idx, columns=pd.Index(grid, name="α"))


def loo_cell_coverage(df: pd.DataFrame, metric: str, model: str | None = None, level: float = 0.9,
                      seed: int = 0, n_restarts: int = 2, floor: bool = True) -> pd.DataFrame:
    """Leave-one-cell-out calibration of the GP: per (R, α) cell, the GP fitted on every other cell's runs
    predicts the cell's mean over its seeds with a ``level`` interval (latent posterior mean ± z·√(latent
    variance + fitted white noise / seeds)). Columns R, alpha, n_seeds, mean, predicted, half_width,
    inside; ``attrs['coverage']`` is the share of cells inside (a calibrated GP gives about ``level``).
    ``floor=False`` fits without the seed-noise floor (:func:`noise_floor`), for comparison."""
    from scipy import stats
    from threadpoolctl import threadpool_limits

    sub, _ = select_model(df, model)
    obs = done_values(sub, metric)
    z = float(stats.norm.isf((1 - level) / 2))
    rows = []
    with threadpool_limits(limits=1):
        for (r, a), cell in obs.groupby(["R", "alpha"]):
            rest = obs.drop(cell.index)
            X = features(rest["R"], rest["alpha"])
            y = rest["value"].to_numpy(float)
            lb = noise_floor(sub[~((sub["repetitions"] == r) & (sub["alpha"] == a))], metric, y) if floor else None
            gpr, _ = _fit_regressor(X, y, seed, n_restarts, lb)
            m, s = _latent(gpr).predict(features([r], [a]), return_std=True)
            white = float(gpr.kernel_.k2.noise_level) * float(np.var(y))
            half = z * math.sqrt(float(s[0]) ** 2 + white / len(cell))
            mean = float(cell["value"].mean())
            rows.append({"R": r_level(r), "alpha": float(a), "n_seeds": len(cell), "mean": mean,
                         "predicted": float(m[0]), "half_width": half, "inside": abs(mean - float(m[0])) <= half})
    out = pd.DataFrame(rows, columns=["R", "alpha", "n_seeds", "mean", "predicted", "half_width", "inside"])
    out.attrs.update(coverage=float(out["inside"].mean()) if len(out) else math.nan, level=level, metric=metric)
    return out
