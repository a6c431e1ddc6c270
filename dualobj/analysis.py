"""The paper's analysis over a sweep: Table 2, the Gaussian-process surface over (R, α), checks F1–F4.

    from dualobj.report import load_runs, load_curves
    from dualobj.analysis import table2, table2_markdown, fit_gp, paper_checks
    runs = load_runs("runs/mini")
    t = table2(runs, "val/ar_bpb")          # per R: best mix α, its value, pure AR / MD, gains, beats both
    gp = fit_gp(runs, "val/ar_bpb")         # GP surface, R², best α per R, P(α optimal | R)
    checks = paper_checks(runs)             # F1–F4 as dicts: name, claim, holds (True/False/None), numbers
    plot_gp_surface(gp, "gp_ar.png"); plot_overfit_curves(load_curves("runs/mini"), "overfit_curves.png")

Targets (as the paper, one AR-mode and one MD-mode target; see :func:`find_targets`):
``ar`` = val/ar_bpb (else val/ar_nll), ``md`` = val/md_bpb (else val/md_elbo), and where the runs have
them ``eval_ar`` = eval/avg/ar and ``eval_md`` = eval/avg/md (downstream scores, higher is better).
"Gain" is always signed so that positive means the best mix is better than the reference.

The paper's GP details beyond "anisotropic Matérn ν=1.5 + white noise" are unknown; the choices made
here (inputs log2 R and untransformed α, normalised targets, a constant amplitude) are documented in
:func:`fit_gp`. Plots use matplotlib's Agg canvas directly (no pyplot).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dualobj.report import (
    _figure,
    _fmt,
    _save,
    _select_model,
    _title,
    default_lower_is_better,
    format_alpha,
    pivot,
)

# (target name, candidate metrics in order of preference, inference mode)
TARGET_CANDIDATES: list[tuple[str, tuple[str, ...], str]] = [
    ("ar", ("val/ar_bpb", "val/ar_nll"), "ar"),
    ("md", ("val/md_bpb", "val/md_elbo"), "md"),
    ("eval_ar", ("eval/avg/ar",), "ar"),
    ("eval_md", ("eval/avg/md",), "md"),
]
TABLE2_COLUMNS = ["best α", "best", "AR (α=1)", "MD (α=0)", "gain vs AR", "gain vs MD", "beats both"]
MIN_GP_RUNS = 4


# ----------------------------------------------------------------------------- helpers
def _r_key(r) -> float | int:
    r = float(r)
    return int(r) if r.is_integer() else r


def _done_values(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Done runs with a finite ``metric``, R > 0 and α: columns R, alpha, value (one row per run/seed)."""
    if metric not in df or df.empty:
        return pd.DataFrame(columns=["R", "alpha", "value"], dtype=float)
    done = df[df["state"] == "done"]
    v = pd.to_numeric(done[metric], errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)
    out = pd.DataFrame({"R": pd.to_numeric(done["repetitions"], errors="coerce").astype(float),
                        "alpha": pd.to_numeric(done["alpha"], errors="coerce").astype(float), "value": v})
    out = out.dropna()
    return out[out["R"] > 0].reset_index(drop=True)


def has_metric(df: pd.DataFrame, metric: str, model: str | None = None) -> bool:
    """Whether some done run of ``model`` has a finite value of ``metric``."""
    sub, _ = _select_model(df, model)
    return len(_done_values(sub, metric)) > 0


@dataclass(frozen=True)
class Target:
    """One analysis target: ``name`` (ar, md, eval_ar, eval_md), the metric, its direction, the mode."""

    name: str
    metric: str
    lower_is_better: bool
    mode: str  # "ar" or "md": which inference mode the target measures

    @property
    def label(self) -> str:
        kind = "downstream" if self.name.startswith("eval") else "validation"
        return f"{self.mode.upper()}-mode {kind} target ({self.metric}, {'lower' if self.lower_is_better else 'higher'} is better)"


def find_targets(df: pd.DataFrame, model: str | None = None) -> list[Target]:
    """The targets the runs of ``model`` have values for, in the order ar, md, eval_ar, eval_md.

    For each, the first metric of its candidates with a finite value among the done runs is used:
    ar: val/ar_bpb, val/ar_nll; md: val/md_bpb, val/md_elbo; eval_ar: eval/avg/ar; eval_md: eval/avg/md.
    """
    found = []
    for name, candidates, mode in TARGET_CANDIDATES:
        metric = next((m for m in candidates if has_metric(df, m, model)), None)
        if metric is not None:
            found.append(Target(name, metric, default_lower_is_better(metric), mode))
    return found


def applicable(df: pd.DataFrame, model: str | None = None) -> bool:
    """The paper analysis needs done runs at ≥ 2 R levels that include α = 0 and α = 1."""
    sub, _ = _select_model(df, model)
    if sub.empty:
        return False
    done = sub[sub["state"] == "done"]
    reps = pd.to_numeric(done["repetitions"], errors="coerce").dropna()
    alphas = set(pd.to_numeric(done["alpha"], errors="coerce").dropna().astype(float))
    return reps.nunique() >= 2 and 0.0 in alphas and 1.0 in alphas


# ----------------------------------------------------------------------------- Table 2
def table2(df: pd.DataFrame, metric: str, model: str | None = None,
           lower_is_better: bool | None = None) -> pd.DataFrame:
    """The paper's Table 2 for ``metric``: one row per R (index ``R``).

    Columns: ``best α`` (the best mix, 0 < α < 1, by the mean over seeds of done runs), ``best`` (its
    mean), ``AR (α=1)`` and ``MD (α=0)`` (the pure objectives' means), ``gain vs AR`` and ``gain vs MD``
    (signed so that positive = the mix is better: reference − best for a loss, best − reference for a
    score), ``beats both`` (nullable boolean: both gains > 0; ``<NA>`` when a gain is NaN, e.g. α=0 was
    not run or failed at that R). ``attrs`` holds metric, model and lower_is_better.
    """
    p = pivot(df, metric, model, lower_is_better)
    lower = p.lower_is_better
    sign = -1.0 if lower else 1.0
    mixes = [a for a in p.alphas if 0.0 < a < 1.0]
    rows = []
    for r in p.mean.index:
        row = p.mean.loc[r]
        m = row[mixes].dropna() if mixes else pd.Series(dtype=float)
        best_a, best = (np.nan, np.nan)
        if len(m):
            best_a = float(m.idxmin() if lower else m.idxmax())
            best = float(m[best_a])
        ar = float(row[1.0]) if 1.0 in row.index else np.nan
        md = float(row[0.0]) if 0.0 in row.index else np.nan
        g_ar, g_md = sign * (best - ar), sign * (best - md)
        beats = pd.NA if (math.isnan(g_ar) or math.isnan(g_md)) else bool(g_ar > 0 and g_md > 0)
        rows.append([best_a, best, ar, md, g_ar, g_md, beats])
    out = pd.DataFrame(rows, index=pd.Index(list(p.mean.index), name="R"), columns=TABLE2_COLUMNS)
    for c in TABLE2_COLUMNS[:-1]:
        out[c] = out[c].astype(float)
    out["beats both"] = out["beats both"].astype("boolean")
    out.attrs.update(metric=metric, model=p.model, lower_is_better=lower)
    return out


def table2_markdown(df: pd.DataFrame, metric: str | None = None, model: str | None = None,
                    lower_is_better: bool | None = None, digits: int = 4) -> str:
    """Markdown of :func:`table2`. Pass a runs frame and ``metric``, or a :func:`table2` result alone."""
    t = df if metric is None else table2(df, metric, model, lower_is_better)
    head = ["R", "best mix α", "best mix", "AR (α=1)", "MD (α=0)", "gain vs AR", "gain vs MD", "beats both"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for r, row in t.iterrows():
        a = "—" if pd.isna(row["best α"]) else format_alpha(row["best α"])
        beats = "—" if pd.isna(row["beats both"]) else ("yes" if row["beats both"] else "no")
        cells = [str(r), a, _fmt(row["best"], digits) or "—", _fmt(row["AR (α=1)"], digits) or "—",
                 _fmt(row["MD (α=0)"], digits) or "—", _fmt(row["gain vs AR"], digits, signed=True) or "—",
                 _fmt(row["gain vs MD"], digits, signed=True) or "—", beats]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- GP surface
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
        x = np.column_stack([np.log2(r.ravel()), a.ravel()])
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
            lines.append("| " + " | ".join([str(r), f"{b:.3g}", _fmt(self.best_value_by_r[r], digits), *probs,
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
    x = np.column_stack([np.full(len(alphas), math.log2(r)), alphas])
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

    Inputs: x = (log2 R, α). R enters as log2 because the grid is geometric (1, 2, 4, …, 256) and
    over-fitting grows with the number of epochs multiplicatively; α is used untransformed in [0, 1]
    (no logit warp: it would send the pure objectives α = 0 and α = 1 to ±∞). The paper leaves both
    unspecified. Every done run with a finite value is one observation (seeds are separate points, so
    the white-noise term absorbs seed variance). Target: the metric itself, with ``normalize_y=True``.

    Kernel: ConstantKernel × Matern(ν=1.5, anisotropic, length_scale=[1, 0.3] on (log2 R, α), bounds
    [0.05, 100] and [0.01, 10]) + WhiteKernel; hyper-parameters by maximum marginal likelihood with
    ``n_restarts`` random restarts (seeded).

    Reported: R² of the posterior mean on the training points, the closed-form leave-one-out R², the
    latent (noise-free) posterior mean/std on R levels × ``n_alpha`` α values in [0, 1], the optimum of
    the mean per R, and P(α optimal | R): ``n_samples`` joint draws of the latent function (sample_y)
    over the α values run at that R plus the dense optimum; each draw votes for its argmin (argmax when
    higher is better). Raises ValueError with fewer than 4 observations. BLAS runs single-threaded
    during the fit (the matrices are tiny; thread hand-offs made it ~20× slower on a 2-core machine).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit_gp(df, metric, model, lower_is_better, n_alpha, n_samples, seed, n_restarts)


def _fit_gp(df: pd.DataFrame, metric: str, model: str | None = None, lower_is_better: bool | None = None,
           n_alpha: int = 101, n_samples: int = 2000, seed: int = 0, n_restarts: int = 2) -> GPFit:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    if lower_is_better is None:
        lower_is_better = default_lower_is_better(metric)
    sub, model = _select_model(df, model)
    obs = _done_values(sub, metric)
    if len(obs) < MIN_GP_RUNS:
        raise ValueError(f"{len(obs)} done runs with {metric}; the GP needs at least {MIN_GP_RUNS}")
    X = np.column_stack([np.log2(obs["R"].to_numpy(float)), obs["alpha"].to_numpy(float)])
    y = obs["value"].to_numpy(float)

    kernel = (ConstantKernel(1.0, (1e-3, 1e3))
              * Matern(length_scale=[1.0, 0.3], length_scale_bounds=[(0.05, 100.0), (0.01, 10.0)], nu=1.5)
              + WhiteKernel(noise_level=1e-2, noise_level_bounds=(1e-8, 1.0)))
    gpr = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=n_restarts,
                                   random_state=seed)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        gpr.fit(X, y)
    notes += sorted({str(w.message).split(".")[0] for w in caught if issubclass(w.category, ConvergenceWarning)})

    pred = gpr.predict(X)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else float("nan")
    lat = _latent(gpr)

    r_levels = [_r_key(r) for r in sorted(obs["R"].unique())]
    grid = np.linspace(0.0, 1.0, n_alpha)
    xg = np.array([[math.log2(r), a] for r in r_levels for a in grid])
    m, s = lat.predict(xg, return_std=True)
    idx = pd.Index(r_levels, name="R")
    mean = pd.DataFrame(m.reshape(len(r_levels), n_alpha), index=idx, columns=pd.Index(grid, name="α"))
    std = pd.DataFrame(s.reshape(len(r_levels), n_alpha), index=idx, columns=pd.Index(grid, name="α"))
    best_pos = mean.to_numpy().argmin(axis=1) if lower_is_better else mean.to_numpy().argmax(axis=1)
    best_alpha = pd.Series(grid[best_pos], index=idx, name="best α")
    best_value = pd.Series(mean.to_numpy()[np.arange(len(r_levels)), best_pos], index=idx, name="best")

    p_opt: dict = {}
    dense = np.zeros((len(r_levels), n_alpha))
    for i, r in enumerate(r_levels):
        ran = sorted(set(obs.loc[obs["R"] == float(r), "alpha"]))
        b = float(best_alpha[r])
        coarse = np.array(sorted(set(ran) | ({b} if not np.isclose(ran, b).any() else set())))
        p_opt[r] = pd.Series(_p_optimal(lat, r, coarse, n_samples, seed + i, lower_is_better),
                             index=pd.Index(coarse, name="α"), name="P(optimal)")
        dense[i] = _p_optimal(lat, r, grid, n_samples, seed + 1000 + i, lower_is_better)
    return GPFit(metric=metric, model=model, lower_is_better=lower_is_better, kernel=gpr.kernel_, r2=r2,
                 r2_loo=_loo_r2(gpr, X, y), n_obs=len(obs), r_levels=r_levels, alpha_grid=grid, mean=mean,
                 std=std, best_alpha_by_r=best_alpha, best_value_by_r=best_value, p_optimal=p_opt,
                 p_optimal_dense=pd.DataFrame(dense, index=idx, columns=pd.Index(grid, name="α")),
                 observations=obs, regressor=gpr, latent=lat, n_samples=n_samples, notes=notes)


# ----------------------------------------------------------------------------- figures
def plot_gp_surface(gp: GPFit, path: str | Path) -> Path:
    """Top: the GP posterior mean over (log2 R, α) as filled contours, the runs as dots and the optimum
    per R as red stars. Bottom: P(α optimal | R) over the dense α grid, with the run α values' (coarse)
    probabilities written in. Returns ``path``."""
    from matplotlib import colormaps

    fig = _figure(7.0, 7.6)
    top, bottom = fig.subplots(2, 1, height_ratios=[1.2, 1.0])
    lr = np.log2(np.array(gp.r_levels, float))
    lo, hi = (lr.min(), lr.max()) if lr.max() > lr.min() else (lr.min() - 0.5, lr.max() + 0.5)
    xs, ys = np.linspace(lo, hi, 60), np.linspace(0.0, 1.0, 61)
    XX, YY = np.meshgrid(xs, ys)
    Z = gp.predict(2.0 ** XX, YY)
    cmap = colormaps["viridis_r" if gp.lower_is_better else "viridis"]
    cs = top.contourf(XX, YY, Z, levels=20, cmap=cmap)
    fig.colorbar(cs, ax=top, label=gp.metric)
    pts = gp.observations.drop_duplicates(["R", "alpha"])
    top.scatter(np.log2(pts["R"]), pts["alpha"], s=14, c="white", edgecolors="black", linewidths=0.6,
                label="runs", zorder=3)
    top.plot(lr, gp.best_alpha_by_r.to_numpy(float), "-*", color="red", ms=12, markeredgecolor="black",
             label="GP optimum per R", zorder=4)
    top.set_xticks(lr, [str(r) for r in gp.r_levels])
    top.set_xlim(lo, hi)
    top.set_xlabel("repetitions R (log2 scale)")
    top.set_ylabel("α (AR weight)")
    top.legend(fontsize=7, loc="lower left")
    top.set_title(f"{_title(gp.metric, gp.model, gp.lower_is_better)}; GP R² = {gp.r2:.3f}", fontsize=9)

    n = len(gp.r_levels)
    im = bottom.imshow(gp.p_optimal_dense.to_numpy().T, origin="lower", aspect="auto", cmap="magma_r",
                       extent=(-0.5, n - 0.5, 0.0, 1.0), interpolation="nearest")
    fig.colorbar(im, ax=bottom, label="P(α optimal | R), per grid point")
    for i, r in enumerate(gp.r_levels):
        ran = set(gp.observations.loc[gp.observations["R"] == float(r), "alpha"])
        for a, p in gp.p_optimal[r].items():
            if p >= 0.05 and a in ran:
                bottom.text(i, a, f"{p:.2f}", ha="center", va="center", fontsize=7, color="tab:blue",
                            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.6, "lw": 0})
    bottom.plot(range(n), gp.best_alpha_by_r.to_numpy(float), "*", color="red", ms=10, markeredgecolor="black")
    bottom.set_xticks(range(n), [str(r) for r in gp.r_levels])
    bottom.set_xlabel("repetitions R")
    bottom.set_ylabel("α (AR weight)")
    bottom.set_title(f"posterior probability of the optimal α ({gp.n_samples} samples; numbers: run α values)",
                     fontsize=9)
    return _save(fig, path)


def _final_value(run: pd.DataFrame, metric: str) -> float:
    v = pd.to_numeric(run.sort_values("step")[metric], errors="coerce").dropna()
    return float(v.iloc[-1]) if len(v) else np.nan


def overfit_summary(curves: pd.DataFrame, metric: str = "val/ar_nll", model: str | None = None,
                    repetitions: float | None = None) -> pd.DataFrame:
    """Per run at the highest R (or ``repetitions``): α, seed, the minimum of ``metric`` over training,
    its final value and the rise after the minimum (final − min for a loss; min − final for a score)."""
    cols = ["run_id", "alpha", "seed", "min", "final", "rise"]
    sub, _ = _select_model(curves, model)
    if metric not in sub or sub.empty:
        return pd.DataFrame(columns=cols)
    sub = sub[pd.to_numeric(sub[metric], errors="coerce").notna() & sub["repetitions"].notna()]
    if sub.empty:
        return pd.DataFrame(columns=cols)
    r = float(sub["repetitions"].max()) if repetitions is None else float(repetitions)
    lower = default_lower_is_better(metric)
    rows = []
    for run_id, run in sub[sub["repetitions"] == r].groupby("run_id", sort=False):
        v = pd.to_numeric(run.sort_values("step")[metric], errors="coerce").dropna()
        best, final = (v.min() if lower else v.max()), float(v.iloc[-1])
        rows.append({"run_id": run_id, "alpha": float(run["alpha"].iloc[0]), "seed": run["seed"].iloc[0],
                     "min": float(best), "final": final, "rise": (final - best) if lower else (best - final)})
    out = pd.DataFrame(rows, columns=cols)
    out.attrs.update(repetitions=_r_key(r), metric=metric)
    return out


def plot_overfit_curves(curves_df: pd.DataFrame, path: str | Path, metric: str = "val/ar_nll",
                        model: str | None = None, best_alpha: float | None = None) -> Path:
    """Validation ``metric`` vs tokens seen (epochs, then steps, when tokens are not logged) at the highest
    R for pure AR (α=1), the best mix (``best_alpha``, default: the mix 0<α<1 with the best final value
    averaged over seeds) and pure MD (α=0) for reference; a dot marks each curve's best point, so AR's
    over-fitting shows as the rise after it. Returns ``path``."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    summ = overfit_summary(curves_df, metric, model)
    sub, model = _select_model(curves_df, model)
    if summ.empty:
        ax.text(0.5, 0.5, f"no validation curves for {metric}", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    r = summ.attrs["repetitions"]
    lower = default_lower_is_better(metric)
    sub = sub[(sub["repetitions"] == float(r)) & pd.to_numeric(sub[metric], errors="coerce").notna()]
    mixes = summ[(summ["alpha"] > 0) & (summ["alpha"] < 1)]
    if best_alpha is None and len(mixes):
        finals = mixes.groupby("alpha")["final"].mean()
        best_alpha = float(finals.idxmin() if lower else finals.idxmax())
    xcol = next((c for c in ("tokens_seen", "epochs", "step")
                 if c in sub and pd.to_numeric(sub[c], errors="coerce").notna().all()), "step")
    styles = [(1.0, "tab:red", "-", "pure AR (α=1)")]
    if best_alpha is not None:
        styles.append((float(best_alpha), "tab:green", "-", f"best mix (α={format_alpha(best_alpha)})"))
    styles.append((0.0, "tab:blue", "--", "pure MD (α=0)"))
    drawn = 0
    for a, color, ls, label in styles:
        runs = sub[np.isclose(sub["alpha"].astype(float), a)]
        for k, (_, run) in enumerate(runs.groupby("run_id", sort=False)):
            run = run.sort_values("step")
            x = pd.to_numeric(run[xcol], errors="coerce").to_numpy(float)
            y = pd.to_numeric(run[metric], errors="coerce").to_numpy(float)
            ax.plot(x, y, ls, marker=".", ms=3, lw=1.4, color=color, label=label if k == 0 else None)
            j = int(np.nanargmin(y) if lower else np.nanargmax(y))
            ax.plot([x[j]], [y[j]], "o", ms=6, color=color, markeredgecolor="black")
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no pure-AR or mix curves at this R", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel({"tokens_seen": "tokens seen", "epochs": "epochs", "step": "step"}[xcol])
    ax.set_ylabel(metric)
    ax.set_title(f"{_title(metric, model)} at R={r}: over-fitting of pure AR vs the best mix", fontsize=9)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return _save(fig, path)


# ----------------------------------------------------------------------------- checks F1–F4
def _combine(values: list[bool | None]) -> bool | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return all(vals)


def _best_sequence(df: pd.DataFrame, t: Target, model: str | None) -> list[tuple]:
    """(R, best α over every α run, incl. the pure objectives) for each R that has a value."""
    p = pivot(df, t.metric, model, t.lower_is_better)
    return [(r, float(a)) for r, a in p.best["best α"].items() if not pd.isna(a)]


def _f1(df, targets, model) -> dict:
    per = {}
    for t in targets:
        tab = table2(df, t.metric, model, t.lower_is_better)
        by_r = {r: {"best α": row["best α"], "gain vs AR": row["gain vs AR"], "gain vs MD": row["gain vs MD"],
                    "beats both": None if pd.isna(row["beats both"]) else bool(row["beats both"])}
                for r, row in tab.iterrows()}
        flags = [v["beats both"] for v in by_r.values()]
        holds = None if all(f is None for f in flags) else all(f for f in flags if f is not None)
        per[t.name] = {"metric": t.metric, "holds": holds, "by_R": by_r,
                       "not computable at R": [r for r, v in by_r.items() if v["beats both"] is None]}
    return {"name": "F1", "claim": "at every R some mix 0<α<1 beats both α=0 and α=1",
            "holds": _combine([v["holds"] for v in per.values()]), "targets": per}


def _f2(df, targets, model) -> dict:
    per = {}
    for t in targets:
        seq = _best_sequence(df, t, model)
        holds = None if len(seq) < 2 else all(b[1] <= a[1] + 1e-12 for a, b in zip(seq, seq[1:], strict=False))
        per[t.name] = {"metric": t.metric, "holds": holds, "sequence": seq}
    return {"name": "F2", "claim": "the best α (over all α run) does not increase with R",
            "holds": _combine([v["holds"] for v in per.values()]), "targets": per}


def _f3(df, model) -> dict:
    claim = "pure AR's validation loss worsens with R more than pure MD's"
    pairs = [("val/ar_bpb", "val/md_bpb"), ("val/ar_nll", "val/md_elbo")]
    for ar_m, md_m in pairs:
        if not (has_metric(df, ar_m, model) and has_metric(df, md_m, model)):
            continue
        ar = pivot(df, ar_m, model).mean
        md = pivot(df, md_m, model).mean
        ar_v = ar[1.0].dropna() if 1.0 in ar.columns else pd.Series(dtype=float)
        md_v = md[0.0].dropna() if 0.0 in md.columns else pd.Series(dtype=float)
        common = sorted(set(ar_v.index) & set(md_v.index))
        if len(common) < 2:
            continue
        lo, hi = common[0], common[-1]
        inc_ar, inc_md = float(ar_v[hi] - ar_v[lo]), float(md_v[hi] - md_v[lo])
        return {"name": "F3", "claim": claim, "holds": bool(inc_ar > inc_md), "ar_metric": ar_m,
                "md_metric": md_m, "R_low": lo, "R_high": hi, "ar": (float(ar_v[lo]), float(ar_v[hi])),
                "md": (float(md_v[lo]), float(md_v[hi])), "ar_increase": inc_ar, "md_increase": inc_md,
                "ar_relative_increase": inc_ar / abs(float(ar_v[lo])) if ar_v[lo] else math.nan,
                "md_relative_increase": inc_md / abs(float(md_v[lo])) if md_v[lo] else math.nan}
    return {"name": "F3", "claim": claim, "holds": None,
            "reason": "needs α=1 with val/ar_bpb (or val/ar_nll) and α=0 with val/md_bpb (or val/md_elbo) at ≥ 2 common R"}


def _log2_odds(a: float) -> float:
    return math.log2(a / (1 - a)) if 0 < a < 1 else (math.inf if a >= 1 else -math.inf)


def _f4(df, targets, model, alpha_tol: float, max_steps: int) -> dict:
    claim = (f"the best α for the AR-mode and the MD-mode target are close "
             f"(|Δα| ≤ {alpha_tol:g} or at most {max_steps} step(s) apart on the α grid run at that R)")
    by_name = {t.name: t for t in targets}
    per = {}
    sub, model = _select_model(df, model)
    for a_name, m_name in (("ar", "md"), ("eval_ar", "eval_md")):
        if a_name not in by_name or m_name not in by_name:
            continue
        ta, tm = by_name[a_name], by_name[m_name]
        sa, sm = dict(_best_sequence(sub, ta, model)), dict(_best_sequence(sub, tm, model))
        pa, pm = pivot(sub, ta.metric, model).mean, pivot(sub, tm.metric, model).mean
        rows = {}
        for r in sorted(set(sa) & set(sm)):
            grid = sorted({float(a) for a in pa.columns if not pd.isna(pa.loc[r, a])}
                          | {float(a) for a in pm.columns if not pd.isna(pm.loc[r, a])})
            a, b = sa[r], sm[r]
            steps = abs(grid.index(a) - grid.index(b))
            d_odds = abs(_log2_odds(a) - _log2_odds(b))
            rows[r] = {"ar α": a, "md α": b, "|Δα|": abs(a - b), "grid steps": steps,
                       "|Δ log2-odds|": None if math.isnan(d_odds) or math.isinf(d_odds) else d_odds,
                       "close": bool(abs(a - b) <= alpha_tol + 1e-12 or steps <= max_steps)}
        holds = None if not rows else all(v["close"] for v in rows.values())
        per[f"{a_name}~{m_name}"] = {"metrics": (ta.metric, tm.metric), "holds": holds, "by_R": rows}
    return {"name": "F4", "claim": claim, "holds": _combine([v["holds"] for v in per.values()]), "pairs": per,
            "alpha_tol": alpha_tol, "max_steps": max_steps}


def paper_checks(df: pd.DataFrame, model: str | None = None, alpha_tol: float = 0.25,
                 max_steps: int = 1) -> list[dict]:
    """The paper's findings checked on the runs (empirical means over seeds; no GP), one dict each with
    ``name``, ``claim``, ``holds`` (True / False / None when not computable) and the numbers behind it.

    F1: at every R the best mix 0<α<1 beats both pure objectives, for every target (:func:`find_targets`);
        per target and R: best α, gains, beats both. R levels where α=0 or α=1 has no value are listed
        under "not computable at R" and do not decide the outcome.
    F2: the best α over all α run (pure objectives included) is non-increasing in R, for every target;
        the (R, α) sequence is reported.
    F3: from the lowest to the highest R where both exist, pure AR's val/ar_bpb (α=1) rises more than
        pure MD's val/md_bpb (α=0); val/ar_nll vs val/md_elbo (both nats/token) when bpb is not logged.
    F4: per R the best α for the AR-mode target and the MD-mode target (ar vs md, and eval_ar vs eval_md
        when present) are close: |Δα| ≤ ``alpha_tol`` or at most ``max_steps`` positions apart on the
        sorted α values run at that R. |Δ log2-odds| is reported too (None when one is 0 or 1).
    ``holds`` of F1, F2, F4 is False if any target/pair fails, None if none is computable.
    """
    sub, model = _select_model(df, model)
    targets = find_targets(sub, model)
    return [_f1(sub, targets, model), _f2(sub, targets, model), _f3(sub, model),
            _f4(sub, targets, model, alpha_tol, max_steps)]


def _mark(holds: bool | None) -> str:
    return {True: "holds", False: "FAILS", None: "not computable"}[holds]


def check_line(check: dict) -> str:
    """One markdown bullet for a :func:`paper_checks` entry."""
    name, h = check["name"], check["holds"]
    head = f"- **{name}** ({check['claim']}): **{_mark(h)}**"
    parts = []
    if name == "F1":
        for tn, v in check["targets"].items():
            gains = ", ".join(
                f"R={r}: α={format_alpha(x['best α']) if not pd.isna(x['best α']) else '—'} "
                f"({_fmt(x['gain vs AR'], 3, True) or '—'} vs AR, {_fmt(x['gain vs MD'], 3, True) or '—'} vs MD)"
                for r, x in v["by_R"].items())
            parts.append(f"{tn} [{v['metric']}] {_mark(v['holds'])}: {gains}")
    elif name == "F2":
        for tn, v in check["targets"].items():
            seq = " → ".join(f"{format_alpha(a)} (R={r})" for r, a in v["sequence"])
            parts.append(f"{tn} [{v['metric']}] {_mark(v['holds'])}: {seq}")
    elif name == "F3":
        if h is None:
            parts.append(check["reason"])
        else:
            parts.append(f"R {check['R_low']} → {check['R_high']}: pure AR {check['ar_metric']} "
                         f"{_fmt(check['ar'][0])} → {_fmt(check['ar'][1])} ({_fmt(check['ar_increase'], 4, True)}), "
                         f"pure MD {check['md_metric']} {_fmt(check['md'][0])} → {_fmt(check['md'][1])} "
                         f"({_fmt(check['md_increase'], 4, True)})")
    elif name == "F4":
        for pn, v in check["pairs"].items():
            rows = ", ".join(f"R={r}: {format_alpha(x['ar α'])} vs {format_alpha(x['md α'])} "
                             f"({x['grid steps']} step{'s' if x['grid steps'] != 1 else ''})"
                             for r, x in v["by_R"].items())
            parts.append(f"{pn} {_mark(v['holds'])}: {rows}")
        if not check["pairs"]:
            parts.append("needs both an AR-mode and an MD-mode target")
    return head + ("; " + "; ".join(parts) if parts else "")


# ----------------------------------------------------------------------------- the report section
def paper_section(runs: pd.DataFrame, curves: pd.DataFrame | None, out_dir: str | Path | None,
                  model: str | None = None, plots: bool = True, prefix: str = "",
                  n_samples: int = 2000) -> tuple[list[str], list[Path]]:
    """The "Paper analysis" markdown lines for one model and the figures written to ``out_dir``
    (``{prefix}gp_<target>.png`` per target, ``{prefix}overfit_curves.png``; none when ``plots`` is False
    or ``out_dir`` is None). Returns ([] , []) when :func:`applicable` is False. A GP that cannot be fitted
    (fewer than 4 done runs, or an error) becomes a one-line note."""
    sub, model = _select_model(runs, model)
    if not applicable(sub, model):
        return [], []
    out = Path(out_dir) if out_dir is not None else None
    files: list[Path] = []
    targets = find_targets(sub, model)
    text = [f"## Paper analysis{' — ' + model if model else ''}", "",
            "Table 2 per target: the best mix 0<α<1 per R against pure AR (α=1) and pure MD (α=0); "
            "gains are positive when the mix is better.", ""]
    for t in targets:
        text += [f"### Table 2 — {t.label}", "", table2_markdown(sub, t.metric, model, t.lower_is_better), ""]
    for t in targets:
        text += [f"### GP surface — {t.label}", ""]
        try:
            gp = fit_gp(sub, t.metric, model, t.lower_is_better, n_samples=n_samples)
        except Exception as e:  # noqa: BLE001 - a failed fit is reported, never fatal to the report
            text += [f"GP fit skipped for {t.metric}: {type(e).__name__}: {e}", ""]
            continue
        text += [gp.markdown(), ""]
        if gp.notes:
            text += ["Optimiser notes: " + "; ".join(gp.notes), ""]
        if plots and out is not None:
            f = plot_gp_surface(gp, out / f"{prefix}gp_{t.name}.png")
            files.append(f)
            text += [f"![GP surface, {t.metric}]({f.name})", ""]
    text += ["### Checks of the paper's findings", "", *[check_line(c) for c in paper_checks(sub, model)], ""]
    if curves is not None and len(curves):
        csub, _ = _select_model(curves, model)
        ar_t = next((t for t in targets if t.name == "ar"), None)
        metric = next((m for m in ((ar_t.metric,) if ar_t else ()) + ("val/ar_bpb", "val/ar_nll")
                       if m in csub and pd.to_numeric(csub[m], errors="coerce").notna().any()), None)
        if metric is not None:
            summ = overfit_summary(csub, metric, model)
            if len(summ):
                lines = [f"- α={format_alpha(row['alpha'])} (seed {row['seed']}): best {_fmt(row['min'])}, "
                         f"final {_fmt(row['final'])}, rise after the best {_fmt(row['rise'], 4, True)}"
                         for _, row in summ.sort_values(["alpha", "seed"], ascending=[False, True]).iterrows()]
                text += [f"### Over-fitting at R={summ.attrs['repetitions']} ({metric} during training)", "", *lines, ""]
            if plots and out is not None:
                best = None
                if ar_t is not None and ar_t.metric == metric:
                    tab = table2(sub, metric, model)
                    r_hi = summ.attrs.get("repetitions") if len(summ) else None
                    if r_hi in tab.index and not pd.isna(tab.loc[r_hi, "best α"]):
                        best = float(tab.loc[r_hi, "best α"])
                f = plot_overfit_curves(csub, out / f"{prefix}overfit_curves.png", metric, model, best_alpha=best)
                files.append(f)
                text += [f"![validation curves]({f.name})", ""]
    return text, files


__all__ = [
    "GPFit", "Target", "applicable", "check_line", "find_targets", "fit_gp", "has_metric", "overfit_summary",
    "paper_checks", "paper_section", "plot_gp_surface", "plot_overfit_curves", "table2", "table2_markdown",
]


# --------------------------------------------------------------------------- α schedules

def schedule_section(runs: pd.DataFrame) -> list[str]:
    """Markdown comparing α-schedule variants ("tiny+cosine(1->0)") with the best constant α of their base
    model at the same R, for the AR- and MD-mode validation targets (mean over seeds of done runs)."""
    done = runs[runs["state"] == "done"] if "state" in runs else runs
    variants = sorted({m for m in done["model"] if isinstance(m, str) and "+" in m})
    if not variants:
        return []
    lines = ["## α schedules vs the best constant α", ""]
    for metric in ("val/ar_bpb", "val/md_bpb"):
        if metric not in done:
            continue
        rows = []
        base_models = sorted({v.split("+", 1)[0] for v in variants})
        for base in base_models:
            vs = [v for v in variants if v.startswith(base + "+")]
            rs = sorted({r for r in done[done["model"].isin(vs)]["repetitions"].dropna()})
            consts = done[(done["model"] == base) & done["repetitions"].isin(rs)]
            best = {}
            for r in rs:
                means = consts[consts["repetitions"] == r].groupby("alpha")[metric].mean().dropna()
                if len(means):
                    best[r] = (means.idxmin(), means.min())
            rows.append([f"{base}, best constant α"] + [
                f"{best[r][1]:.4f} (α={best[r][0]:g})" if r in best else "—" for r in rs])
            for v in vs:
                cell = done[done["model"] == v].groupby("repetitions")[metric].mean()
                rows.append([v] + [
                    (f"{cell[r]:.4f}" + (f" ({cell[r] - best[r][1]:+.4f})" if r in best else "")) if r in cell else "—"
                    for r in rs])
        header = ["run"] + [f"R={r:g}" for r in rs]
        lines += [f"{metric} (lower is better; in brackets: difference to the best constant α)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                  *["| " + " | ".join(r) + " |" for r in rows], ""]
    return lines
