"""Tables over the (R, α) grid: :func:`pivot` (mean/std/n over seeds, best α per row, the best mix's gain
over pure AR and pure MD) and its exports :func:`to_markdown`, :func:`to_latex`, :func:`to_csv`, :func:`cells_frame`.

Numbers are written by :func:`dualobj.fmt.format_number` and α by :func:`dualobj.fmt.format_alpha`; the
done runs' values of a metric come from :func:`dualobj.stats.frame.done_values`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dualobj.fmt import format_alpha, format_number
from dualobj.stats.frame import default_lower_is_better, r_level, select_model
from dualobj.stats.seeds import SeedGrid

BEST_COLUMNS = ["best α", "best", "best mix α", "mix gain vs AR", "mix gain vs MD"]
SIGN_CONVENTION = ("Sign convention: every gain is positive when the run named is better than the one it is "
                   "compared with (for a loss: reference − value; for a score: value − reference).")
CHANCE_MARK = "°"


def gain(value, reference, lower_is_better: bool):
    """How much better ``value`` is than ``reference`` (positive = better), for a loss or a score alike."""
    return (reference - value) if lower_is_better else (value - reference)


def se_metric(metric: str) -> str | None:
    """The standard-error column of a chance-normalised score (``eval/<task>/<mode>`` ->
    ``eval_se/<task>/<mode>``); None for other metrics (losses have no chance level)."""
    if metric.startswith("eval/") and not metric.startswith("eval/val/"):
        return "eval_se/" + metric[len("eval/"):]
    return None


def best_mix(row: pd.Series, lower_is_better: bool) -> tuple[float, float]:
    """(α, value) of the best mix 0 < α < 1 in a row of means over α; (nan, nan) when no mix has a value."""
    m = row[[a for a in row.index if 0.0 < float(a) < 1.0]].dropna()
    if m.empty:
        return np.nan, np.nan
    a = float(m.idxmin() if lower_is_better else m.idxmax())
    return a, float(m[a])


# ----------------------------------------------------------------------------- pivot tables
@dataclass
class Pivot:
    """One metric over the (R, α) grid of one model size.

    ``mean``, ``std`` (sample std over seeds; NaN for one seed), ``n`` (done runs with a value) and ``se``
    (the standard error of a chance-normalised score's mean, from the runs' ``eval_se/...``; NaN when not
    stored or not such a score) are R × α frames (index ``R``, columns α ascending). ``best`` has the
    columns ``best α`` and ``best`` (the best of all α), and, when the grid has α=1 / α=0, ``best mix α``
    (the best 0 < α < 1), ``mix gain vs AR`` and ``mix gain vs MD`` (how much better the best mix is than
    α=1 / α=0, positive = better: :func:`gain`). ``table`` is mean and best side by side.
    """

    metric: str
    model: str | None
    lower_is_better: bool
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    best: pd.DataFrame
    states: dict  # (R, α) -> sorted states of the runs in that cell that are not done
    se: pd.DataFrame | None = None
    run_sd: float = float("nan")  # the spread of one run between seeds, pooled over the grid (stats.seeds.Noise)

    @property
    def seed_se(self) -> pd.DataFrame:
        """The standard error of each cell's mean over seeds: the pooled ``run_sd`` / √seeds (NaN when no cell
        has two seeds): a cell with one seed gets the grid's noise, never none."""
        return self.run_sd / np.sqrt(self.n.where(self.n > 0))

    @property
    def table(self) -> pd.DataFrame:
        return pd.concat([self.mean, self.best], axis=1)

    @property
    def alphas(self) -> list[float]:
        return list(self.mean.columns)

    @property
    def several_seeds(self) -> bool:
        return bool((self.n > 1).to_numpy().any())

    @property
    def chance_scored(self) -> bool:
        """Whether the metric is a chance-normalised score (0 = chance), whose cells may be marked."""
        return se_metric(self.metric) is not None

    def is_best(self, r, a) -> bool:
        """Whether α=``a`` is the best value of row R=``r``."""
        b = self.best.loc[r, "best α"]
        return not pd.isna(b) and float(b) == float(a)

    def near_chance(self, r, a) -> bool | None:
        """Whether the cell's mean is within two standard errors of chance (0); None when unknown."""
        if self.se is None or pd.isna(self.se.loc[r, a]) or pd.isna(self.mean.loc[r, a]):
            return None
        return bool(abs(self.mean.loc[r, a]) <= 2 * self.se.loc[r, a])


def _int_if_integral(values: Iterable[float]) -> list:
    values = list(values)
    if all(float(v).is_integer() for v in values):
        return [int(v) for v in values]
    return values


def column_values(frame: pd.DataFrame, column: str | None) -> pd.Series:
    """A column as finite floats (NaN for missing, non-numeric or infinite values; all NaN when absent)."""
    if column is None or column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)


def pivot(df: pd.DataFrame, metric: str, model: str | None = None,
          lower_is_better: bool | None = None) -> Pivot:
    """Mean/std/n (and standard error, for chance-normalised scores) of ``metric`` over seeds of done runs
    per (R, α) cell, and the best α and best mix per row.

    Rows and columns span every R and α that any run of ``model`` has (failed, running, pending, missing
    or damaged cells are NaN). ``model`` may be omitted when the runs hold a single model size.
    ``lower_is_better`` defaults to :func:`default_lower_is_better`.
    """
    if lower_is_better is None:
        lower_is_better = default_lower_is_better(metric)
    sub, model = select_model(df, model)
    sub = sub[sub["repetitions"].notna() & sub["alpha"].notna()]
    grid_r = _int_if_integral(sorted(sub["repetitions"].unique()))
    grid_a = sorted(float(a) for a in sub["alpha"].unique())

    done = sub[sub["state"] == "done"]
    cells = pd.DataFrame({"R": done["repetitions"], "α": done["alpha"], "v": column_values(done, metric),
                          "se": column_values(done, se_metric(metric))}).dropna(subset=["v"])
    mean = pd.DataFrame(np.nan, index=pd.Index(grid_r, name="R"), columns=pd.Index(grid_a, name="α"))
    std, se, n = mean.copy(), mean.copy(), mean.copy().fillna(0).astype(int)
    for (r, a), c in cells.groupby(["R", "α"]):
        at = (r_level(r), float(a))
        mean.loc[at], n.loc[at] = c["v"].mean(), len(c)
        std.loc[at] = c["v"].std(ddof=1) if len(c) > 1 else np.nan
        se.loc[at] = np.sqrt((c["se"] ** 2).sum()) / len(c) if c["se"].notna().all() else np.nan
    return Pivot(metric, model, lower_is_better, mean, std, n, _best_columns(mean, lower_is_better),
                 _cell_states(sub), se if se_metric(metric) else None, SeedGrid(sub, metric).noise.run_sd)


def _cell_states(sub: pd.DataFrame) -> dict:
    """(R, α) -> sorted states of the cell's runs that are not done."""
    states: dict = {}
    for _, row in sub[sub["state"] != "done"].iterrows():
        states.setdefault((r_level(row["repetitions"]), float(row["alpha"])), set()).add(str(row["state"]))
    return {k: sorted(v) for k, v in states.items()}


def _best_columns(mean: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    best = pd.DataFrame(index=mean.index, columns=["best α", "best"], dtype=float)
    refs = [(ref, col) for ref, col in ((1.0, "mix gain vs AR"), (0.0, "mix gain vs MD")) if ref in mean.columns]
    if refs:
        best["best mix α"] = np.nan
    for r, row in mean.iterrows():
        present = row.dropna()
        if present.empty:
            continue
        a = present.idxmin() if lower_is_better else present.idxmax()
        best.loc[r, "best α"], best.loc[r, "best"] = a, present[a]
        if refs:
            best.loc[r, "best mix α"], value = best_mix(row, lower_is_better)
            for ref, col in refs:
                best.loc[r, col] = gain(value, row[ref], lower_is_better)
    return best


# ----------------------------------------------------------------------------- exports
def _value_cell(p: Pivot, r, a, digits: int, bold, pm: str, missing: str) -> str:
    """One α cell: mean (± its standard error over seeds, :attr:`Pivot.seed_se`), the chance mark, bold when
    best; the runs' states when empty."""
    m = p.mean.loc[r, a]
    if pd.isna(m):
        st = p.states.get((r, float(a)))
        return ", ".join(st) if st else missing
    text = format_number(m, digits)
    se = p.seed_se.loc[r, a]
    if not pd.isna(se):
        text += f"{pm}{format_number(se, digits)}"
    if p.near_chance(r, a):
        text += CHANCE_MARK
    return bold(text) if p.is_best(r, a) else text


def _cells(p: Pivot, digits: int, bold, pm: str, missing: str) -> list[list[str]]:
    """Row-major cell strings (α cells, then the best columns) with the best cell wrapped by ``bold``."""
    rows = []
    for r in p.mean.index:
        cells = [_value_cell(p, r, a, digits, bold, pm, missing) for a in p.mean.columns]
        for col in ("best α", "best mix α"):
            if col in p.best:
                b = p.best.loc[r, col]
                cells.append(missing if pd.isna(b) else format_alpha(b))
            if col == "best α":
                cells.append(format_number(p.best.loc[r, "best"], digits) or missing)
        for col in ("mix gain vs AR", "mix gain vs MD"):
            if col in p.best:
                cells.append(format_number(p.best.loc[r, col], digits, signed=True) or missing)
        rows.append(cells)
    return rows


def _headers(p: Pivot) -> list[str]:
    return [format_alpha(a) for a in p.mean.columns] + [c for c in BEST_COLUMNS if c in p.best.columns]


def legend(p: Pivot) -> str:
    """What the table's columns and marks mean, in one line (for the report under each table)."""
    parts = [f"best α: the best of all α ({'lower' if p.lower_is_better else 'higher'} is better), in bold"]
    if "best mix α" in p.best:
        parts.append("best mix α: the best 0<α<1; mix gain vs AR / MD: how much better it is than α=1 / α=0 "
                     "(positive = the mix is better)")
    if not np.isnan(p.run_sd):
        parts.append(f"a ± b: mean over seeds ± its standard error (one run's seed sd {format_number(p.run_sd)}, "
                     "pooled over the grid's cells with several seeds, / √seeds)")
    if p.chance_scored:
        known = p.se is not None and p.se.notna().to_numpy().any()
        parts.append(f"{CHANCE_MARK}: within two standard errors of chance (0)" if known else
                     "significance unknown: these runs stored no standard errors (eval_se/...)")
    return "; ".join(parts) + "."


def to_markdown(table: Pivot, digits: int = 4) -> str:
    """A Markdown table: R rows, α columns (mean ± standard error when the seed noise is known), best cell in
    bold."""
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
    extra = [{"best α": r"best $\alpha$", "best": "best", "best mix α": r"best mix $\alpha$",
              "mix gain vs AR": "mix gain vs AR", "mix gain vs MD": "mix gain vs MD"}[c]
             for c in _headers(table)[len(alphas):]]
    spec = "r" + "c" * len(alphas) + "r" * len(extra)
    caption = (f"% {_latex_escape(table.metric)} ({'lower' if table.lower_is_better else 'higher'} is better)"
               f"{'' if table.model is None else ', model ' + _latex_escape(str(table.model))}")
    lines = [caption, f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join([r"$R \backslash \alpha$", *alphas, *extra]) + r" \\", r"\midrule"]
    for r, cells in zip(table.mean.index, _cells(table, digits, lambda s: f"\\textbf{{{s}}}", r" $\pm$ ", "--"),
                        strict=True):
        cells = [(c if c.startswith("\\textbf") or "$" in c else _latex_escape(c)).replace(CHANCE_MARK, r"$^\circ$")
                 for c in cells]
        lines.append(" & ".join([str(r), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Pivot, path: str | Path) -> Path:
    """Write the mean table (one row per R; one column per α, named by its float value; then best α,
    best, best mix α and the mix gain columns) as CSV; std, n and se are in :func:`cells_frame`. Returns
    ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = table.table.copy()
    t.columns = [repr(float(c)) if not isinstance(c, str) else c for c in t.columns]
    t.to_csv(path, index_label="R")
    return path


def cells_frame(table: Pivot) -> pd.DataFrame:
    """Long form of a pivot: one row per (R, α) with mean, std, n, seed_se (the mean's standard error over
    seeds: :attr:`Pivot.seed_se`), se (standard error of a chance-normalised score's mean over its items,
    else NaN), near_chance (within two standard errors of 0; None when unknown) and whether it is the row's
    best."""
    rows = [{"R": r, "alpha": a, "mean": table.mean.loc[r, a], "std": table.std.loc[r, a],
             "n": int(table.n.loc[r, a]), "seed_se": table.seed_se.loc[r, a],
             "se": np.nan if table.se is None else table.se.loc[r, a],
             "near_chance": table.near_chance(r, a), "best": table.is_best(r, a)}
            for r in table.mean.index for a in table.mean.columns]
    return pd.DataFrame(rows, columns=["R", "alpha", "mean", "std", "n", "seed_se", "se", "near_chance", "best"])
