"""Results report over a sweep: tables with rows = data repetitions R and columns = AR weight α.

    from dualobj.report import write_report
    files = write_report("runs/smoke", metrics=None, formats=["md", "csv", "tex"], out_dir=None)
    print(files.markdown)          # the tables, for the terminal; `files` is the list of written paths

Building blocks, each usable on its own:

    load_runs(path)     one row per run directory (state, model, α, R, seed, every numeric summary key)
    load_curves(path)   validation curves, one row per metrics.jsonl line with val/* metrics
    pivot(runs, metric) mean/std/n over seeds per (R, α) cell, best α per row, Δ vs pure AR and pure MD
    to_markdown / to_csv / to_latex, plot_vs_alpha / plot_heatmap / plot_curves

Only plain files are read (config.yaml, status.json, summary.json, metrics.jsonl); a missing or damaged
file never raises: the run is listed with its state and its cells are NaN. Plots use matplotlib's Agg
canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dualobj.errors import DualObjError, RunDirError

META_COLUMNS = ["run_id", "path", "state", "model", "alpha", "repetitions", "seed", "tokens"]
STATUS_COLUMNS = ["step", "total_steps", "attempts", "heartbeat", "error", "note"]
CURVE_COLUMNS = ["run_id", "model", "alpha", "repetitions", "seed", "state", "step", "tokens_seen", "epochs"]
DEFAULT_METRICS = ["val/ar_nll", "val/md_elbo"]
OPTIONAL_METRICS = ["eval/avg/ar", "eval/avg/md"]
FORMATS = ("md", "csv", "tex")
BEST_COLUMNS = ["best α", "best", "Δ vs AR", "Δ vs MD"]
_STATE_ORDER = ["done", "failed", "running", "pending", "interrupted", "damaged", "unknown"]
_LOWER_HINTS = ("nll", "elbo", "loss", "bpb", "ppl")
_RUN_MARKERS = ("status.json", "config.yaml")
_SKIP_DIRS = {"checkpoints", "wandb", "__pycache__"}


# ----------------------------------------------------------------------------- reading run directories
def find_run_dirs(path: str | Path) -> list[Path]:
    """Run directories (folders holding status.json or config.yaml) at ``path`` or anywhere below it."""
    root = Path(path)
    if not root.is_dir():
        return []
    if (root / "status.json").is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        here = Path(dirpath)
        if here != root and any(m in filenames for m in _RUN_MARKERS):
            found.append(here)
            dirnames[:] = []  # a run dir's sub-folders are its own (checkpoints, ...)
    if not found and (root / "config.yaml").is_file():
        return [root]  # a single run that has a config but no status yet
    return found


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _read_config(path: Path) -> dict | None:
    try:
        obj = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _get(d: dict | None, dotted: str):
    for key in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _number(x) -> float | int | None:
    """``x`` if it is a real number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return x


def _first(*values):
    return next((v for v in values if v is not None), None)


def _as_float(x) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _run_record(run_dir: Path) -> dict:
    """One row of :func:`load_runs` for ``run_dir``; never raises on damaged files."""
    status_file, summary_file = run_dir / "status.json", run_dir / "summary.json"
    status = _read_json(status_file)
    summary = _read_json(summary_file)
    cfg = _read_config(run_dir / "config.yaml") or {}
    note = None
    raw_state = status.get("state") if status else None
    if status is None:
        if summary is not None:
            state = "done"
        elif status_file.exists():
            state, note = "unknown", "status.json is damaged"
        else:
            state = "pending"
    elif raw_state == "done" and summary is None:
        state = "damaged"
        note = "status says done but summary.json is " + ("damaged" if summary_file.exists() else "missing")
    else:
        state = str(raw_state or "unknown")
    if state != "done":
        summary = None  # a stale summary from an earlier attempt is not this run's result

    s, st = summary or {}, status or {}
    alpha = _as_float(_first(_number(s.get("alpha")), _number(_get(cfg, "objective.alpha"))))
    record = {
        "run_id": str(_first(s.get("run_id"), st.get("run_id"), cfg.get("run_id"), run_dir.name)),
        "path": str(run_dir),
        "state": state,
        "model": _variant(_first(s.get("model"), _get(cfg, "model.name")), _get(cfg, "objective") or {}),
        "alpha": None if alpha is None else round(alpha, 12),
        "repetitions": _as_float(_first(_number(s.get("repetitions")), _number(_get(cfg, "data.repetitions")))),
        "seed": _first(_number(s.get("seed")), _number(cfg.get("seed"))),
        "tokens": _number(_get(cfg, "train.tokens")),
        "step": _number(st.get("step")),
        "total_steps": _number(st.get("total_steps")),
        "attempts": _number(st.get("attempts")),
        "heartbeat": _number(st.get("heartbeat")),
        "error": st.get("error"),
        "note": note,
    }
    for key, value in s.items():
        if key not in META_COLUMNS and _number(value) is not None:
            record[key] = value
    return record


def _scan(path: str | Path) -> list[tuple[Path, dict]]:
    run_dirs = find_run_dirs(path)
    if not run_dirs:
        raise RunDirError(f"no runs under {path}; run `dualobj sweep ...` first or point to a sweep folder")
    return [(d, _run_record(d)) for d in run_dirs]


def _variant(model, objective: dict) -> str | None:
    """Runs with a non-constant α schedule get their own tables, e.g. "tiny+cosine(1->0)" next to "tiny"."""
    kind = objective.get("alpha_schedule", "constant") if isinstance(objective, dict) else "constant"
    if model is None or kind in (None, "constant"):
        return model
    a, a0 = objective.get("alpha"), objective.get("alpha_start")
    detail = {
        "linear": f"{a0:g}->{a:g}", "cosine": f"{a0:g}->{a:g}",
        "step": f"{a0:g}->{a:g}@{objective.get('alpha_step_epoch', 0):g}ep",
        "ar_epochs_capped": f"cap {objective.get('ar_epochs_cap', 0):g}",
    }.get(kind, "")
    return f"{model}+{kind}({detail})"


def _runs_frame(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    for col in META_COLUMNS + STATUS_COLUMNS:
        if col not in df:
            df[col] = None
    for col in ("alpha", "repetitions"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df = df.sort_values(["model", "repetitions", "alpha", "seed"], na_position="last", kind="stable")
    return df.reset_index(drop=True)


def load_runs(path: str | Path) -> pd.DataFrame:
    """One row per run directory at/under ``path``, sorted by model, repetitions, alpha, seed.

    Columns: run_id, path, state, model, alpha, repetitions, seed, tokens (train.tokens), step,
    total_steps, attempts, heartbeat, error, note, then every numeric summary.json key (e.g.
    ``val/ar_nll``). State is status.json's, except ``damaged`` (status says done but summary.json is
    missing or unreadable), ``unknown`` (status.json unreadable) and ``pending`` (no status.json yet).
    Summary values are filled only for done runs. Raises :class:`RunDirError` when there are no runs.
    """
    return _runs_frame([rec for _, rec in _scan(path)])


def _curve_rows(run_dir: Path, rec: dict) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash mid-write
        if not isinstance(obj, dict):
            continue
        vals = {k: v for k, v in obj.items() if k.startswith("val/") and _number(v) is not None}
        if not vals:
            continue
        rows.append({**{k: rec.get(k) for k in CURVE_COLUMNS[:6]},
                     "step": _number(obj.get("step")), "tokens_seen": _number(obj.get("tokens_seen")),
                     "epochs": _number(obj.get("epochs")), **vals})
    return rows


def _curves_frame(scanned: list[tuple[Path, dict]]) -> pd.DataFrame:
    rows = [row for d, rec in scanned for row in _curve_rows(d, rec)]
    df = pd.DataFrame.from_records(rows, columns=None if rows else CURVE_COLUMNS)
    for col in ("alpha", "repetitions"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if rows:
        df = df.sort_values(["model", "repetitions", "alpha", "seed", "step"], na_position="last", kind="stable")
    return df.reset_index(drop=True)


def load_curves(path: str | Path) -> pd.DataFrame:
    """Tidy validation curves: one row per metrics.jsonl line carrying val/* metrics.

    Columns: run_id, model, alpha, repetitions, seed, state, step, tokens_seen, epochs, val/*.
    Unparseable lines (e.g. cut by a crash) are skipped. Raises :class:`RunDirError` when there are no runs.
    """
    return _curves_frame(_scan(path))


# ----------------------------------------------------------------------------- pivot tables
def default_lower_is_better(metric: str) -> bool:
    """True for losses (names containing nll, elbo, loss, bpb, ppl); False for scores (accuracies, ...)."""
    return any(h in metric.lower() for h in _LOWER_HINTS)


@dataclass
class Pivot:
    """One metric over the (R, α) grid of one model size.

    ``mean``, ``std`` (sample std over seeds; NaN for one seed) and ``n`` (done runs with a value) are
    R × α frames (index ``R``, columns α ascending). ``best`` has the columns ``best α``, ``best``,
    ``Δ vs AR`` (best − α=1 value) and ``Δ vs MD`` (best − α=0 value); the Δ columns exist only when
    the grid has α=1 / α=0. ``table`` is mean and best side by side.
    """

    metric: str
    model: str | None
    lower_is_better: bool
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    best: pd.DataFrame
    states: dict  # (R, α) -> sorted states of the runs in that cell that are not done

    @property
    def table(self) -> pd.DataFrame:
        return pd.concat([self.mean, self.best], axis=1)

    @property
    def alphas(self) -> list[float]:
        return list(self.mean.columns)

    @property
    def several_seeds(self) -> bool:
        return bool((self.n > 1).to_numpy().any())


def _select_model(df: pd.DataFrame, model: str | None) -> tuple[pd.DataFrame, str | None]:
    if "model" not in df or df.empty:
        return df, model
    if model is not None:
        return df[df["model"] == model], model
    models = sorted({m for m in df["model"] if isinstance(m, str)})
    if len(models) > 1:
        raise DualObjError(f"runs of several model sizes ({', '.join(models)}); pass model=NAME")
    return df, (models[0] if models else None)


def _int_if_integral(values: Iterable[float]) -> list:
    values = list(values)
    if all(float(v).is_integer() for v in values):
        return [int(v) for v in values]
    return values


def pivot(df: pd.DataFrame, metric: str, model: str | None = None,
          lower_is_better: bool | None = None) -> Pivot:
    """Mean/std/n of ``metric`` over seeds of done runs per (R, α) cell, and the best α per row.

    Rows and columns span every R and α that any run of ``model`` has (failed, running, missing or
    damaged cells are NaN). ``model`` may be omitted when the runs hold a single model size.
    ``lower_is_better`` defaults to :func:`default_lower_is_better`.
    """
    if lower_is_better is None:
        lower_is_better = default_lower_is_better(metric)
    sub, model = _select_model(df, model)
    sub = sub[sub["repetitions"].notna() & sub["alpha"].notna()]
    grid_r = _int_if_integral(sorted(sub["repetitions"].unique()))
    grid_a = sorted(float(a) for a in sub["alpha"].unique())

    done = sub[sub["state"] == "done"]
    values = (pd.to_numeric(done[metric], errors="coerce") if metric in done
              else pd.Series(np.nan, index=done.index, dtype=float))
    values = values.astype(float).replace([np.inf, -np.inf], np.nan)
    cells = pd.DataFrame({"R": done["repetitions"], "α": done["alpha"], "v": values}).dropna()
    mean = pd.DataFrame(np.nan, index=pd.Index(grid_r, name="R"), columns=pd.Index(grid_a, name="α"))
    std, n = mean.copy(), mean.copy().fillna(0).astype(int)
    for (r, a), v in cells.groupby(["R", "α"])["v"]:
        r = int(r) if float(r).is_integer() else r
        mean.loc[r, float(a)] = v.mean()
        std.loc[r, float(a)] = v.std(ddof=1) if len(v) > 1 else np.nan
        n.loc[r, float(a)] = len(v)

    states: dict = {}
    for _, row in sub[sub["state"] != "done"].iterrows():
        r = row["repetitions"]
        key = (int(r) if float(r).is_integer() else r, float(row["alpha"]))
        states.setdefault(key, set()).add(str(row["state"]))
    states = {k: sorted(v) for k, v in states.items()}
    return Pivot(metric, model, lower_is_better, mean, std, n, _best_columns(mean, lower_is_better), states)


def _best_columns(mean: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    best = pd.DataFrame(index=mean.index, columns=["best α", "best"], dtype=float)
    for r, row in mean.iterrows():
        row = row.dropna()
        if row.empty:
            continue
        a = row.idxmin() if lower_is_better else row.idxmax()
        best.loc[r, "best α"], best.loc[r, "best"] = a, row[a]
    if 1.0 in mean.columns:
        best["Δ vs AR"] = best["best"] - mean[1.0]
    if 0.0 in mean.columns:
        best["Δ vs MD"] = best["best"] - mean[0.0]
    return best


# ----------------------------------------------------------------------------- formatting
def format_alpha(a: float) -> str:
    """The paper's notation: 0, 1, and dyadic fractions (1/256, 1/2, 3/4, 63/64); other values as decimals."""
    a = float(a)
    if a in (0.0, 1.0):
        return str(int(a))
    f = Fraction(a).limit_denominator(1024)
    if float(f) == a and 0 < a < 1 and f.denominator & (f.denominator - 1) == 0:
        return f"{f.numerator}/{f.denominator}"
    return f"{a:g}"


def _fmt(v, digits: int = 4, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
        return f"{v:+.{digits}g}" if signed else f"{v:.{digits}g}"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _is_best(p: Pivot, r, a) -> bool:
    b = p.best.loc[r, "best α"]
    return not pd.isna(b) and float(b) == float(a)


def _cells(p: Pivot, digits: int, bold, pm: str, missing: str) -> list[list[str]]:
    """Row-major cell strings (α cells, then best α, best, Δ columns) with the best cell wrapped by ``bold``."""
    rows = []
    for r in p.mean.index:
        cells = []
        for a in p.mean.columns:
            m = p.mean.loc[r, a]
            if pd.isna(m):
                st = p.states.get((r, float(a)))
                cells.append(", ".join(st) if st else missing)
                continue
            text = _fmt(m, digits)
            if p.n.loc[r, a] > 1:
                text += f"{pm}{_fmt(p.std.loc[r, a], digits)}"
            cells.append(bold(text) if _is_best(p, r, a) else text)
        b = p.best.loc[r, "best α"]
        cells.append(missing if pd.isna(b) else format_alpha(b))
        cells.append(_fmt(p.best.loc[r, "best"], digits) or missing)
        for col in ("Δ vs AR", "Δ vs MD"):
            if col in p.best:
                cells.append(_fmt(p.best.loc[r, col], digits, signed=True) or missing)
        rows.append(cells)
    return rows


def _headers(p: Pivot) -> list[str]:
    return [format_alpha(a) for a in p.mean.columns] + [c for c in BEST_COLUMNS if c in p.best.columns]


def to_markdown(table: Pivot, digits: int = 4) -> str:
    """A Markdown table: R rows, α columns (mean ± std when several seeds), best cell in bold."""
    head = ["R \\ α"] + _headers(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for r, cells in zip(table.mean.index, _cells(table, digits, lambda s: f"**{s}**", " ± ", "—"), strict=True):
        lines.append("| " + " | ".join([str(r), *cells]) + " |")
    return "\n".join(lines)


def _latex_escape(s: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", s)


def to_latex(table: Pivot, digits: int = 4) -> str:
    """A LaTeX ``tabular`` (booktabs rules) with the best cell per row in ``\\textbf{}``."""
    alphas = [f"${format_alpha(a)}$" for a in table.mean.columns]
    extra = [{"best α": r"best $\alpha$", "best": "best", "Δ vs AR": r"$\Delta$ vs AR",
              "Δ vs MD": r"$\Delta$ vs MD"}[c] for c in _headers(table)[len(alphas):]]
    spec = "r" + "c" * len(alphas) + "r" * len(extra)
    caption = (f"% {_latex_escape(table.metric)} ({'lower' if table.lower_is_better else 'higher'} is better)"
               f"{'' if table.model is None else ', model ' + _latex_escape(str(table.model))}")
    lines = [caption, f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join([r"$R \backslash \alpha$", *alphas, *extra]) + r" \\", r"\midrule"]
    for r, cells in zip(table.mean.index, _cells(table, digits, lambda s: f"\\textbf{{{s}}}", r" $\pm$ ", "--"),
                        strict=True):
        cells = [c if c.startswith("\\textbf") or "$" in c else _latex_escape(c) for c in cells]
        lines.append(" & ".join([str(r), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Pivot, path: str | Path) -> Path:
    """Write the mean table (one row per R; one column per α, named by its float value; then best α,
    best and the Δ columns) as CSV; std and n are in :func:`cells_frame`. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = table.table.copy()
    t.columns = [repr(float(c)) if not isinstance(c, str) else c for c in t.columns]
    t.to_csv(path, index_label="R")
    return path


def cells_frame(table: Pivot) -> pd.DataFrame:
    """Long form of a pivot: one row per (R, α) with mean, std, n and whether it is the row's best."""
    rows = [{"R": r, "alpha": a, "mean": table.mean.loc[r, a], "std": table.std.loc[r, a],
             "n": int(table.n.loc[r, a]), "best": _is_best(table, r, a)}
            for r in table.mean.index for a in table.mean.columns]
    return pd.DataFrame(rows, columns=["R", "alpha", "mean", "std", "n", "best"])


# ----------------------------------------------------------------------------- plots
def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _title(metric: str, model: str | None, lower: bool | None = None) -> str:
    better = "" if lower is None else f" ({'lower' if lower else 'higher'} is better)"
    return f"{model + ': ' if model else ''}{metric}{better}"


def plot_vs_alpha(df: pd.DataFrame, path: str | Path, metric: str = "val/ar_nll", model: str | None = None) -> Path:
    """``metric`` against α (categorical axis, so 0, 1/256, ..., 1 are evenly spaced), one line per R;
    error bars are the std over seeds, a star marks each row's best α. Returns ``path``."""
    from matplotlib import colormaps

    p = pivot(df, metric, model)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(p.alphas))
    cmap = colormaps["viridis"]
    for i, r in enumerate(p.mean.index):
        color = cmap(i / max(len(p.mean.index) - 1, 1))
        y, e = p.mean.loc[r].to_numpy(float), p.std.loc[r].to_numpy(float)
        ok = ~np.isnan(y)
        ax.errorbar(x[ok], y[ok], yerr=np.nan_to_num(e[ok]), marker="o", ms=4, capsize=2, color=color, label=f"R={r}")
        b = p.best.loc[r, "best α"]
        if not pd.isna(b):
            j = p.alphas.index(float(b))
            ax.plot([x[j]], [y[j]], marker="*", ms=14, color=color, markeredgecolor="black", zorder=5)
    ax.set_xticks(x, [format_alpha(a) for a in p.alphas])
    ax.set_xlabel("α (AR weight: 0 = masked diffusion, 1 = autoregressive)")
    ax.set_ylabel(metric)
    ax.set_title(_title(metric, p.model, p.lower_is_better), fontsize=10)
    if len(p.mean.index):
        ax.legend(fontsize=8, title="repetitions", title_fontsize=8)
    if not p.n.to_numpy().any():
        ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", va="center")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_heatmap(df: pd.DataFrame, path: str | Path, metric: str = "val/ar_nll", model: str | None = None) -> Path:
    """Heatmap of ``metric`` over (R, α) with values written in; the best cell per row is boxed and bold,
    cells without a value show the state of their runs (failed, running, ...). Returns ``path``."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    p = pivot(df, metric, model)
    n_r, n_a = p.mean.shape
    fig = _figure(max(4.0, 1.0 + 0.9 * n_a), max(2.5, 1.2 + 0.55 * n_r))
    ax = fig.add_subplot()
    cmap = colormaps["viridis_r" if p.lower_is_better else "viridis"].with_extremes(bad="#dddddd")
    data = np.ma.masked_invalid(p.mean.to_numpy(float)) if p.mean.size else np.ma.zeros((1, 1))
    im = ax.imshow(data, cmap=cmap, aspect="auto")
    if p.mean.size and data.count():
        fig.colorbar(im, ax=ax, label=metric)
        lo, hi = float(data.min()), float(data.max())
        mid = (lo + hi) / 2
    for i, r in enumerate(p.mean.index):
        for j, a in enumerate(p.mean.columns):
            m = p.mean.iloc[i, j]
            if pd.isna(m):
                st = p.states.get((r, float(a)))
                ax.text(j, i, ", ".join(st) if st else "—", ha="center", va="center", fontsize=7, color="#555555")
                continue
            best = _is_best(p, r, a)
            dark = (m > mid) == p.lower_is_better if hi > lo else False
            ax.text(j, i, _fmt(m, 3), ha="center", va="center", fontsize=8,
                    fontweight="bold" if best else "normal", color="white" if dark else "black")
            if best:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(n_a), [format_alpha(a) for a in p.mean.columns])
    ax.set_yticks(range(n_r), [str(r) for r in p.mean.index])
    ax.set_xlabel("α (AR weight)")
    ax.set_ylabel("repetitions R")
    ax.set_title(_title(metric, p.model, p.lower_is_better), fontsize=10)
    return _save(fig, path)


def plot_curves(curves: pd.DataFrame, path: str | Path, metric: str = "val/ar_nll",
                model: str | None = None) -> Path:
    """Validation ``metric`` against tokens seen from :func:`load_curves`: one panel per R, one line per
    run coloured by α; a dot marks each run's minimum, so over-fitting shows as the rise after it."""
    from matplotlib import colormaps

    sub, model = _select_model(curves, model)
    if metric in sub:
        sub = sub[pd.to_numeric(sub[metric], errors="coerce").notna() & sub["repetitions"].notna()]
    else:
        sub = sub.iloc[0:0]
    reps = sorted(sub["repetitions"].unique()) if len(sub) else []
    ncols = min(max(len(reps), 1), 4)
    nrows = max(1, math.ceil(len(reps) / ncols))
    fig = _figure(3.4 * ncols + 0.8, 2.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True)).ravel()
    alphas = sorted(sub["alpha"].dropna().unique()) if len(sub) else []
    cmap = colormaps["coolwarm"]
    colors = {a: cmap(i / max(len(alphas) - 1, 1)) for i, a in enumerate(alphas)}
    for ax, r in zip(axes, reps, strict=False):
        seen = set()
        for _, run in sub[sub["repetitions"] == r].groupby("run_id", sort=False):
            run = run.sort_values("step")
            a = run["alpha"].iloc[0]
            x = pd.to_numeric(run["tokens_seen"], errors="coerce").to_numpy(float)
            y = pd.to_numeric(run[metric], errors="coerce").to_numpy(float)
            label = None if a in seen else f"α={format_alpha(a)}" if not pd.isna(a) else "α=?"
            seen.add(a)
            color = colors.get(a, "gray")
            ax.plot(x, y, marker=".", ms=3, lw=1.2, color=color, label=label)
            k = int(np.nanargmin(y) if default_lower_is_better(metric) else np.nanargmax(y))
            ax.plot([x[k]], [y[k]], "o", ms=6, color=color, markeredgecolor="black")
        ax.set_title(f"R={int(r) if float(r).is_integer() else r}", fontsize=9)
        ax.set_xlabel("tokens seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(reps):]:
        ax.set_axis_off()
        if not reps:
            ax.text(0.5, 0.5, f"no validation points for {metric}", ha="center", va="center")
    axes[0].set_ylabel(metric)
    fig.suptitle(_title(metric, model), fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- the whole report
def status_counts(df: pd.DataFrame) -> dict[str, int]:
    """Runs per state: done, failed, running, pending always; other states when present."""
    counts = df["state"].value_counts().to_dict() if len(df) else {}
    order = _STATE_ORDER + sorted(set(counts) - set(_STATE_ORDER))
    return {s: int(counts.get(s, 0)) for s in order if s in _STATE_ORDER[:4] or counts.get(s)}


def status_line(df: pd.DataFrame) -> str:
    """E.g. ``12 runs: 9 done, 1 failed, 1 running, 1 pending``."""
    return f"{len(df)} runs: " + ", ".join(f"{n} {s}" for s, n in status_counts(df).items())


class ReportFiles(list):
    """The files :func:`write_report` wrote (a plain list of Paths), plus ``markdown``: the report text."""

    markdown: str = ""


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(str(p) for p in parts if p is not None)).strip("_")


def _pick_metrics(runs: pd.DataFrame, metrics: list[str] | None) -> list[str]:
    if metrics is None:
        return DEFAULT_METRICS + [m for m in OPTIONAL_METRICS if m in runs]
    known = [c for c in runs.columns if "/" in c]
    if (runs["state"] == "done").any():
        unknown = [m for m in metrics if m not in runs]
        if unknown:
            raise DualObjError(f"no run has metric {', '.join(unknown)}; available: {', '.join(known) or 'none'}")
    return list(metrics)


def _not_done_lines(runs: pd.DataFrame, limit: int = 20) -> list[str]:
    bad = runs[runs["state"] != "done"]
    lines = []
    for _, r in bad.head(limit).iterrows():
        what = r["error"] if isinstance(r["error"], str) and r["error"] else r["note"]
        alpha = "?" if pd.isna(r["alpha"]) else format_alpha(r["alpha"])
        reps = "?" if pd.isna(r["repetitions"]) else f"{r['repetitions']:g}"
        lines.append(f"- {r['state']}: {r['run_id']} ({r['model']}, R={reps}, α={alpha}, seed={r['seed']})"
                     + (f": {what}" if isinstance(what, str) and what else "") + f" — {r['path']}")
    if len(bad) > limit:
        lines.append(f"- ... and {len(bad) - limit} more")
    return lines


def write_report(path: str | Path, metrics: list[str] | None = None, formats: Iterable[str] = FORMATS,
                 out_dir: str | Path | None = None, plots: bool = True) -> ReportFiles:
    """Tables and plots for every model size × metric of the runs under ``path``.

    ``metrics`` defaults to val/ar_nll and val/md_elbo, plus eval/avg/ar and eval/avg/md when present.
    ``formats`` is any of md, csv, tex; md also writes ``report.md`` with every table and the status
    counts. Plots (PNG: metric vs α, heatmap, validation curves for val/* metrics) are written unless
    ``plots=False``. Files go to ``out_dir`` (default ``<path>/report/``). Returns the written paths as
    a list whose ``markdown`` attribute is the report text (status line, tables, runs not done).

    When a model's done runs span ≥ 2 R levels and include α=0 and α=1, the report adds a "Paper
    analysis" section (:func:`dualobj.analysis.paper_section`): Table 2 for the AR- and MD-mode targets,
    the GP fit (R², optimum and P(α optimal) per R), checks F1–F4 and, with plots, ``gp_<target>.png``
    and ``overfit_curves.png`` (prefixed with the model name when the runs hold several model sizes).
    """
    formats = [f.lower().lstrip(".") for f in formats]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise DualObjError(f"unknown report format {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if not Path(path).exists():
        raise RunDirError(f"{path} does not exist; give a sweep folder or run directory such as runs/smoke")
    scanned = _scan(path)
    runs, curves = _runs_frame([rec for _, rec in scanned]), _curves_frame(scanned)
    metrics = _pick_metrics(runs, metrics)
    out = Path(out_dir) if out_dir is not None else Path(path) / "report"
    out.mkdir(parents=True, exist_ok=True)

    files = ReportFiles()
    text = [f"# dualobj report: {path}", "", status_line(runs), ""]
    models = sorted({m for m in runs["model"] if isinstance(m, str)}) or [None]
    for model in models:
        sub = runs[runs["model"] == model] if model is not None else runs
        csub = curves[curves["model"] == model] if model is not None and len(curves) else curves
        for metric in metrics:
            p = pivot(sub, metric, model)
            stem = _slug(model, metric)
            md = to_markdown(p)
            better = "lower" if p.lower_is_better else "higher"
            text += [f"## {model + ' — ' if model else ''}{metric} ({better} is better)", "", md, ""]
            if "md" in formats:
                files.append(_write(out / f"{stem}.md", f"# {_title(metric, model, p.lower_is_better)}\n\n{md}\n"))
            if "csv" in formats:
                files.append(to_csv(p, out / f"{stem}.csv"))
                cells = out / f"{stem}_cells.csv"
                cells_frame(p).to_csv(cells, index=False)
                files.append(cells)
            if "tex" in formats:
                files.append(_write(out / f"{stem}.tex", to_latex(p)))
            if plots:
                files.append(plot_vs_alpha(sub, out / f"{stem}_vs_alpha.png", metric, model))
                files.append(plot_heatmap(sub, out / f"{stem}_heatmap.png", metric, model))
                if metric.startswith("val/"):
                    files.append(plot_curves(csub, out / f"{stem}_curves.png", metric, model))
        prefix = _slug(model) + "_" if len(models) > 1 else ""
        lines, figs = _paper_analysis(sub, csub, out, model, plots, prefix)
        text += lines
        files += figs
    from dualobj.analysis import schedule_section

    text += schedule_section(runs)
    not_done = _not_done_lines(runs)
    if not_done:
        text += ["## Runs not done", "", *not_done, ""]
    files.markdown = "\n".join(text).rstrip() + "\n"
    if "md" in formats:
        files.insert(0, _write(out / "report.md", files.markdown))
    return files


def _paper_analysis(runs: pd.DataFrame, curves: pd.DataFrame, out: Path, model: str | None, plots: bool,
                    prefix: str) -> tuple[list[str], list[Path]]:
    """The "Paper analysis" section of :mod:`dualobj.analysis` (Table 2, GP, checks F1–F4, figures) when
    the runs span ≥ 2 R levels with α=0 and α=1; a failure becomes a note instead of a crash."""
    from dualobj import analysis

    try:
        return analysis.paper_section(runs, curves, out, model, plots=plots, prefix=prefix)
    except Exception as e:  # noqa: BLE001 - the analysis must never break the report
        title = f"## Paper analysis{' — ' + model if model else ''}"
        return [title, "", f"Paper analysis failed: {type(e).__name__}: {e}", ""], []


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


__all__ = [
    "Pivot", "ReportFiles", "cells_frame", "default_lower_is_better", "find_run_dirs", "format_alpha",
    "load_curves", "load_runs", "pivot", "plot_curves", "plot_heatmap", "plot_vs_alpha", "status_counts",
    "status_line", "to_csv", "to_latex", "to_markdown", "write_report",
]
