"""The paper's tables over the runs: its targets (:func:`find_targets`), Table 2 (:func:`table2`: the best
mix 0<α<1 per R against pure AR and pure MD), over-fitting at the highest R (:func:`overfit_summary`,
:func:`plot_overfit_curves`) and α schedules against the best constant α (:func:`schedule_section`).

    from dualobj.report import load_runs, load_curves, table2, fit_gp, paper_checks
    runs = load_runs("runs/mini")
    t = table2(runs, "val/ar_bpb")          # per R: best mix α, its value, pure AR / MD, gains, beats both
    gp = fit_gp(runs, "val/ar_bpb")         # GP surface, R², best α per R, P(α optimal | R)
    checks = paper_checks(runs)             # F1–F4 as dicts: name, claim, holds (True/False/None), numbers

Targets (as the paper, one AR-mode and one MD-mode target; see :func:`find_targets`):
``ar`` = val/ar_bpb (else val/ar_nll), ``md`` = val/md_bpb (else val/md_elbo), and where the runs have
them ``eval_ar`` = eval/avg/ar and ``eval_md`` = eval/avg/md (downstream scores, higher is better).
"Gain" is always signed so that positive means the run named (the best mix, a schedule) is better than
the reference (:func:`dualobj.report.tables.gain`), in Table 2, the R×α tables and the schedules alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dualobj.fmt import format_alpha, format_number
from dualobj.report.plots import count_axis, new_figure, plot_title, save_figure
from dualobj.report.tables import best_mix, column_values, gain, pivot, se_metric
from dualobj.stats.frame import default_lower_is_better, done_values, r_level, select_model
from dualobj.stats.seeds import SeedGrid, gain_verdict

# (target name, candidate metrics in order of preference, inference mode)
TARGET_CANDIDATES: list[tuple[str, tuple[str, ...], str]] = [
    ("ar", ("val/ar_bpb", "val/ar_nll"), "ar"),
    ("md", ("val/md_bpb", "val/md_elbo"), "md"),
    ("eval_ar", ("eval/avg/ar",), "ar"),
    ("eval_md", ("eval/avg/md",), "md"),
]
TABLE2_COLUMNS = ["best α", "best", "AR (α=1)", "MD (α=0)", "gain vs AR", "gain vs MD", "beats both",
                  "gain vs AR se", "gain vs MD se", "beyond noise"]


# ----------------------------------------------------------------------------- targets
def has_metric(df: pd.DataFrame, metric: str, model: str | None = None) -> bool:
    """Whether some done run of ``model`` has a finite value of ``metric``."""
    sub, _ = select_model(df, model)
    return len(done_values(sub, metric)) > 0


def signal(df: pd.DataFrame, metric: str, model: str | None = None) -> bool | None:
    """Whether the values of ``metric`` can be told from chance.

    True for metrics without a chance level (losses) and for a chance-normalised score (0 = chance) when
    some done run scores beyond two standard errors of 0 (|s| > 2·se, with se from ``eval_se/...``);
    False ("no signal") when every done run's score is within two standard errors of chance; None
    (significance unknown) when the runs stored no standard errors for it.
    """
    se_col = se_metric(metric)
    if se_col is None:
        return True
    sub, _ = select_model(df, model)
    done = sub[sub["state"] == "done"] if "state" in sub else sub
    v, se = column_values(done, metric), column_values(done, se_col)
    known = v.notna() & se.notna()
    if (v[known].abs() > 2 * se[known]).any():
        return True
    return None if (v.notna() & se.isna()).any() or not known.any() else False


@dataclass(frozen=True)
class Target:
    """One analysis target: ``name`` (ar, md, eval_ar, eval_md), the metric, its direction, the mode, and
    whether its values can be told from chance (:func:`signal`: True, False = no signal, None = unknown)."""

    name: str
    metric: str
    lower_is_better: bool
    mode: str  # "ar" or "md": which inference mode the target measures
    signal: bool | None = True

    @property
    def kind(self) -> str:
        return "downstream" if self.name.startswith("eval") else "validation"

    @property
    def label(self) -> str:
        better = "lower" if self.lower_is_better else "higher"
        return f"{self.mode.upper()}-mode {self.kind} target ({self.metric}, {better} is better)"


def find_targets(df: pd.DataFrame, model: str | None = None, metrics: list[str] | None = None) -> list[Target]:
    """The targets the runs of ``model`` have values for, in the order ar, md, eval_ar, eval_md.

    For each, the first metric of its candidates with a finite value among the done runs is used:
    ar: val/ar_bpb, val/ar_nll; md: val/md_bpb, val/md_elbo; eval_ar: eval/avg/ar; eval_md: eval/avg/md.
    With ``metrics``, only those candidates are considered (the targets a report was asked for).
    """
    found = []
    for name, candidates, mode in TARGET_CANDIDATES:
        allowed = [m for m in candidates if metrics is None or m in metrics]
        metric = next((m for m in allowed if has_metric(df, m, model)), None)
        if metric is not None:
            found.append(Target(name, metric, default_lower_is_better(metric), mode, signal(df, metric, model)))
    return found


def target_metrics() -> set[str]:
    """Every metric that can be a target of the paper's analysis."""
    return {m for _, candidates, _ in TARGET_CANDIDATES for m in candidates}


def applicable(df: pd.DataFrame, model: str | None = None) -> bool:
    """The paper analysis needs done runs at ≥ 2 R levels that include α = 0 and α = 1."""
    sub, _ = select_model(df, model)
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
    (:func:`dualobj.report.tables.gain`: positive = the mix is better), ``beats both`` (nullable boolean:
    both gains > 0; ``<NA>`` when a gain is NaN, e.g. α=0 was not run or failed at that R), each gain's
    standard error over seeds (``gain vs AR se``, ``gain vs MD se``: paired by seed, :mod:`dualobj.stats.seeds`)
    and ``beyond noise``: holds / fails / unresolved (both gains positive beyond their noise, one negative
    beyond it, or neither; two-sided at 95%, Bonferroni over the two). The same best mix and gains as the
    R×α table's ``best mix α`` and ``mix gain`` columns. ``attrs`` holds metric, model and lower_is_better.
    """
    p = pivot(df, metric, model, lower_is_better)
    lower = p.lower_is_better
    g = SeedGrid(df, metric, p.model, lower)
    rows = []
    for r in p.mean.index:
        row = p.mean.loc[r]
        best_a, best = best_mix(row, lower)
        ar = float(row[1.0]) if 1.0 in row.index else np.nan
        md = float(row[0.0]) if 0.0 in row.index else np.nan
        g_ar, g_md = gain(best, ar, lower), gain(best, md, lower)
        beats = pd.NA if (math.isnan(g_ar) or math.isnan(g_md)) else bool(g_ar > 0 and g_md > 0)
        noisy = [g.gain(r, best_a, ref) for ref in (1.0, 0.0)] if beats is not pd.NA else []
        se = [d.se for d in noisy] or [np.nan, np.nan]
        rows.append([best_a, best, ar, md, g_ar, g_md, beats, *se, gain_verdict(noisy)[0] if noisy else ""])
    out = pd.DataFrame(rows, index=pd.Index(list(p.mean.index), name="R"), columns=TABLE2_COLUMNS)
    for c in TABLE2_COLUMNS[:6] + TABLE2_COLUMNS[7:9]:
        out[c] = out[c].astype(float)
    out["beats both"] = out["beats both"].astype("boolean")
    out.attrs.update(metric=metric, model=p.model, lower_is_better=lower)
    return out


def table2_markdown(df: pd.DataFrame, metric: str | None = None, model: str | None = None,
                    lower_is_better: bool | None = None, digits: int = 4) -> str:
    """Markdown of :func:`table2`. Pass a runs frame and ``metric``, or a :func:`table2` result alone."""
    t = df if metric is None else table2(df, metric, model, lower_is_better)
    head = ["R", "best mix α", "best mix", "AR (α=1)", "MD (α=0)", "gain vs AR", "gain vs MD", "beats both",
            "beyond noise"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for r, row in t.iterrows():
        a = "—" if pd.isna(row["best α"]) else format_alpha(row["best α"])
        beats = "—" if pd.isna(row["beats both"]) else ("yes" if row["beats both"] else "no")
        cells = [str(r), a, format_number(row["best"], digits) or "—", format_number(row["AR (α=1)"], digits) or "—",
                 format_number(row["MD (α=0)"], digits) or "—",
                 _with_se(row["gain vs AR"], row.get("gain vs AR se"), digits),
                 _with_se(row["gain vs MD"], row.get("gain vs MD se"), digits), beats, row.get("beyond noise") or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _with_se(value, se, digits: int) -> str:
    """A signed gain, with ``± se`` when its noise is known; "—" when there is no gain."""
    text = format_number(value, digits, signed=True)
    if not text:
        return "—"
    return text + (f" ± {format_number(se, digits)}" if se is not None and not pd.isna(se) else "")


# ----------------------------------------------------------------------------- over-fitting
def overfit_summary(curves: pd.DataFrame, metric: str = "val/ar_nll", model: str | None = None,
                    repetitions: float | None = None) -> pd.DataFrame:
    """Per run at the highest R (or ``repetitions``): α, seed, the minimum of ``metric`` over training,
    its final value and the rise after the minimum (final − min for a loss; min − final for a score)."""
    cols = ["run_id", "alpha", "seed", "min", "final", "rise"]
    sub, _ = select_model(curves, model)
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
    out.attrs.update(repetitions=r_level(r), metric=metric)
    return out


def plot_overfit_curves(curves_df: pd.DataFrame, path: str | Path, metric: str = "val/ar_nll",
                        model: str | None = None, best_alpha: float | None = None) -> Path:
    """Validation ``metric`` vs tokens seen (epochs, then steps, when tokens are not logged) at the highest
    R for pure AR (α=1), the best mix (``best_alpha``, default: the mix 0<α<1 with the best final value
    averaged over seeds) and pure MD (α=0) for reference; a dot marks each curve's best point, so AR's
    over-fitting shows as the rise after it. Returns ``path``."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    summ = overfit_summary(curves_df, metric, model)
    sub, model = select_model(curves_df, model)
    if summ.empty:
        ax.text(0.5, 0.5, f"no validation curves for {metric}", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return save_figure(fig, path)
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
    if xcol == "tokens_seen":
        count_axis(ax.xaxis)
    ax.set_ylabel(metric)
    ax.set_title(f"{plot_title(metric, model)} at R={r}: over-fitting of pure AR vs the best mix", fontsize=9)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- α schedules
def schedule_section(runs: pd.DataFrame,
                     metrics: tuple[str, ...] | list[str] = ("val/ar_bpb", "val/md_bpb")) -> list[str]:
    """Markdown comparing each α-schedule variant ("tiny+cosine(1->0)") with the constant α runs of its base
    model at the same R only: the best constant α there, and the schedule's gain over it (positive = the
    schedule is better), per metric (mean over seeds of done runs)."""
    done = runs[runs["state"] == "done"] if "state" in runs else runs
    variants = sorted({m for m in done["model"] if isinstance(m, str) and "+" in m})
    if not variants:
        return []
    lines = ["## α schedules vs the best constant α", "",
             "Each schedule against the constant α runs of the same model at the same R; in brackets its gain over "
             "the best of them (positive = the schedule is better).", ""]
    for metric in metrics:
        if metric in done:
            lines += _schedule_table(done, variants, metric)
    return lines


def _schedule_table(done: pd.DataFrame, variants: list[str], metric: str) -> list[str]:
    lower = default_lower_is_better(metric)
    rows = []
    rs = sorted({r for r in done[done["model"].isin(variants)]["repetitions"].dropna()})
    for base in sorted({v.split("+", 1)[0] for v in variants}):
        vs = [v for v in variants if v.startswith(base + "+")]
        best = {}
        for r in rs:
            const = done[(done["model"] == base) & (done["repetitions"] == r)]
            means = pd.to_numeric(const[metric], errors="coerce").groupby(const["alpha"]).mean().dropna()
            if len(means):
                a = means.idxmin() if lower else means.idxmax()
                best[r] = (a, means[a])
        rows.append([f"{base}, best constant α"] + [
            f"{format_number(best[r][1])} (α={format_alpha(best[r][0])})" if r in best else "—" for r in rs])
        for v in vs:
            mine = done[done["model"] == v]
            cell = pd.to_numeric(mine[metric], errors="coerce").groupby(mine["repetitions"]).mean()
            rows.append([v] + [
                (format_number(cell[r]) + (f" ({format_number(gain(cell[r], best[r][1], lower), 4, True)})"
                                           if r in best else "")) if r in cell and not pd.isna(cell[r]) else "—"
                for r in rs])
    header = ["run"] + [f"R={r:g}" for r in rs]
    return [f"{metric} ({'lower' if lower else 'higher'} is better)", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows], ""]
