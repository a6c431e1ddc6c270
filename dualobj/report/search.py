"""The report's "Adaptive search" section: the trace of a search folder (dualobj/sweep/search.py) as tables
(which α was tried in which round; after each round, the posterior of the best α at each R) and a figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualobj.fmt import format_alpha
from dualobj.report.plots import new_figure, save_figure
from dualobj.sweep.search import TRACE_FILE, read_trace, to_alpha, trace_cells


def search_folders(path: str | Path) -> list[tuple[Path, str | None]]:
    """The folders under ``path`` with a search trace and their labels: ``path`` itself (no label), or its
    sub-folders named after the variants of a sweep file's ``variants:`` (one search each)."""
    path = Path(path)
    if not path.is_dir():
        return []
    if (path / TRACE_FILE).is_file():
        return [(path, None)]
    return [(d, d.name) for d in sorted(path.iterdir()) if (d / TRACE_FILE).is_file()]


def search_section(path: str | Path, out: Path, plots: bool = True,
                   label: str | None = None) -> tuple[list[str], list[Path]]:
    """The section's markdown lines and files (``search_trace.png``, ``search_trace_<label>.png``) for a
    folder holding a search trace; nothing for any other folder."""
    trace = read_trace(path) if Path(path).is_dir() else None
    if not trace or not trace["rounds"]:
        return [], []
    s = trace["settings"]
    cells = trace_cells(trace)
    lines = [f"## Adaptive search{' — ' + label if label else ''}", "",
             f"{s['metric']} ({'lower' if s['goal'] == 'min' else 'higher'} is better), searched over "
             f"{_space_name(s['space'])} at R ∈ {{{', '.join(f'{r:g}' for r in s['conditions'])}}}: {len(cells)} cells "
             f"in {len(trace['rounds'])} rounds. AR share = s·α / (s·α + 1 − α) with objective.ar_loss_scale "
             f"s = {s['ar_loss_scale']:g}. After each round the GP over all finished cells gives, per R, the "
             "recommended value (best posterior mean) and the posterior of the best value (mean ± std over joint "
             "posterior draws). An R is resolved when P(its recommendation is within delta of the best) ≥ "
             f"{s.get('confidence', 0.9):g} and the recommendation has two runs and its neighbours one each; the "
             "search stops when every R is resolved or its budget is spent.", "",
             *_tried_table(trace), "", *_posterior_table(trace), ""]
    final = next((r["posterior"] for r in reversed(trace["rounds"]) if r.get("posterior")), None)
    if final:
        lines += ["**Recommendation**", "", *_recommendation_table(final, cells, s), ""]
    name = f"search_trace{'_' + label if label else ''}.png"
    files = [plot_search_trace(trace, out / name)] if plots else []
    if files:
        lines += [f"![search trace]({files[0].name})", ""]
    return lines, files


def _space_name(space: str) -> str:
    return "α (objective.alpha)" if space == "alpha" else "the AR share of the gradient weight"


def _value(v) -> str:
    return "—" if v is None else f"{v:.4f}"


def _tried_table(trace: dict) -> list[str]:
    """One row per round: how its cells were chosen and each cell with its result."""
    rows = ["| round | chosen by | cells tried (R: α, AR share, seed → metric) |", "|---:|---|---|"]
    for rnd in trace["rounds"]:
        tried = "; ".join(f"R={c['R']:g}: α={format_alpha(c['alpha'])}, {c['ar_share']:.3f}, seed {c.get('seed', 0)} "
                          f"→ {_value(c.get('value'))}" for c in rnd["cells"])
        rows.append(f"| {rnd['round']} | {rnd['kind']} | {tried} |")
    return rows


def _posterior_table(trace: dict) -> list[str]:
    """After each round, per R: the posterior mean ± std of the best value, and the recommended α."""
    levels = trace["settings"]["conditions"]
    rows = ["| after round | cells | " + " | ".join(f"R={r:g}: best (mean ± std) → recommended α" for r in levels)
            + " |", "|---:|---:|" + "---:|" * len(levels)]
    n = 0
    for rnd in trace["rounds"]:
        n += len(rnd["cells"])
        post = {p["R"]: p for p in rnd.get("posterior") or []}
        cols = [f"{post[r]['best_mean']:.3f} ± {post[r]['best_std']:.3f} → {format_alpha(post[r]['alpha'])}"
                if r in post else "—" for r in levels]
        rows.append(f"| {rnd['round']} | {n} | " + " | ".join(cols) + " |")
    return rows


def _recommendation_table(final: list[dict], cells: list[dict], s: dict) -> list[str]:
    """Per R: the recommendation, P(within delta of the best), resolved or not, the α it could not separate,
    and the cells (distinct α) and runs (seeds counted) spent there."""
    delta = s.get("delta")
    rows = [f"| R | recommended α | AR share | predicted {s['metric']} | P(within {_num(delta)} of the best) | "
            "answer | not separated from α | cells | runs |", "|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for p in final:
        here = [c for c in cells if c["R"] == p["R"]]
        n_cells = len({c["x"] for c in here})
        others = ", ".join(format_alpha(to_alpha(x, s["space"], s["ar_loss_scale"]))
                           for x in p.get("not_separated", []))
        if "p_within" in p:
            prob, answer = f"{p['p_within']:.2f}", "resolved" if p["resolved"] else "unresolved"
        else:  # a trace written before the search had a stopping rule
            prob, answer = "—", f"P(best) {p['p_best']:.2f}"
        rows.append(f"| {p['R']:g} | {format_alpha(p['alpha'])} | {p['ar_share']:.3f} | {p['predicted']:.4f} ± "
                    f"{p['predicted_std']:.4f} | {prob} | {answer} | {others or '—'} | {n_cells} | {len(here)} |")
    return rows


def _num(v) -> str:
    return "delta" if v is None else f"{v:g}"


def plot_search_trace(trace: dict, path: str | Path) -> Path:
    """One panel per R: the values tried in each round (dots, coloured by the metric), the posterior mean
    ± std of the best value after each round (line and band) and the recommended value (stars)."""
    s = trace["settings"]
    levels = s["conditions"]
    fig = new_figure(2.4 * len(levels) + 0.8, 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(levels), sharey=True))
    values = [c["value"] for c in trace_cells(trace) if c.get("value") is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    cmap = "viridis_r" if s["goal"] == "min" else "viridis"
    sc = None
    for ax, r in zip(axes, levels, strict=True):
        for rnd in trace["rounds"]:
            for c in (c for c in rnd["cells"] if c["R"] == r):
                sc = ax.scatter(rnd["round"], c["x"], c=[c.get("value") if c.get("value") is not None else np.nan],
                                cmap=cmap, vmin=lo, vmax=hi, s=40, edgecolors="black", linewidths=0.5, zorder=3)
        post = [(rnd["round"], p) for rnd in trace["rounds"] for p in rnd.get("posterior") or [] if p["R"] == r]
        if post:
            xs = np.array([k for k, _ in post], float)
            mean = np.array([p["best_mean"] for _, p in post])
            sd = np.array([p["best_std"] for _, p in post])
            ax.fill_between(xs, mean - sd, mean + sd, color="tab:red", alpha=0.15, lw=0)
            ax.plot(xs, mean, color="tab:red", lw=1.2, label="best (posterior mean ± std)")
            ax.plot(xs, [p["x"] for _, p in post], "*", color="tab:red", ms=9, markeredgecolor="black",
                    label="recommended")
        ax.set_title(f"R = {r:g}", fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylim(-0.05, 1.05)
    axes[0].set_ylabel("α" if s["space"] == "alpha" else "AR share")
    axes[0].legend(fontsize=6, loc="lower left")
    if sc is not None:
        fig.colorbar(sc, ax=list(axes), label=s["metric"])
    fig.suptitle(f"adaptive search: {s['metric']}, tried values per round", fontsize=9)
    return save_figure(fig, path)
