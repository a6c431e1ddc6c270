"""What the command line shows: rich tables and text for the config, scores, sweep plans and run status.
Pure presentation: each function turns data into something to print and prints nothing itself."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from dualobj.fmt import format_alpha, hms, si

if TYPE_CHECKING:
    from dualobj.run.status import StatusRow


def yaml_value(v) -> str:
    """A value as YAML flow text: null, true, 1.0e-06, [0.9, 0.95], '~' quoted where YAML needs it."""
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, width=10**9, allow_unicode=True).removesuffix("...\n").strip()


def config_lines(cfg, base=None) -> list[str]:
    """The config as commented YAML lines; with ``base``, only the fields that differ from it."""
    from dataclasses import fields, is_dataclass

    from dualobj import config

    lines = []
    for section in fields(cfg):
        value = getattr(cfg, section.name)
        if is_dataclass(value):
            docs, default = config.field_docs(type(value)), getattr(base, section.name, None)
            rows = [(f.name, getattr(value, f.name), getattr(default, f.name, None)) for f in fields(value)]
            rows = [r for r in rows if base is None or r[1] != r[2]]
            lines += [f"{section.name}:"] * bool(rows)
            lines += [config_line(f"  {n}", v, docs.get(n, ""), d, base is not None) for n, v, d in rows]
        elif base is None or value != getattr(base, section.name):
            doc = config.field_docs(type(cfg)).get(section.name, "")
            lines.append(config_line(section.name, value, doc, getattr(base, section.name, None), base is not None))
    return lines


def config_line(name: str, value, doc: str, default, show_default: bool) -> str:
    text = f"{name}: {yaml_value(value)}"
    note = f"default {yaml_value(default)}; {doc}" if show_default else doc
    return f"{text:<36} # {note}" if note else text


def scores_table(headline: dict):
    """Scores per task and mode: the chance-normalised score ± its standard error (* = within 2 SE of chance),
    then the accuracies it comes from (acc, and acc_norm where the task has one); the avg row names its tasks."""
    from rich.table import Table

    from dualobj.evaluate.registry import TASK_SETS

    keys = [k for k in headline if k.startswith("eval/") and not k.startswith(("eval/val/", "eval/task_set"))]
    modes = sorted({k.rsplit("/", 1)[1] for k in keys})
    tasks = sorted({k.split("/")[1] for k in keys}, key=lambda t: (t == "avg", t))
    table = Table(title="chance-normalised score ± standard error (0 = chance, 100 = perfect; * = within 2 SE of "
                        "chance), then acc / acc_norm")
    table.add_column("task")
    table.add_column("n", justify="right")
    for m in modes:
        table.add_column(m, justify="right")
        table.add_column(f"{m} acc", justify="right")

    def cell(t: str, m: str) -> str:
        v, se = headline.get(f"eval/{t}/{m}"), headline.get(f"eval_se/{t}/{m}")
        if v is None:
            return "-"
        if se is None:
            return f"{v:.1f}"
        return f"{v:.1f} ± {se:.1f}" + ("*" if abs(v) <= 2 * se else "")

    def acc(t: str, m: str) -> str:
        a, n = headline.get(f"eval_acc/{t}/{m}"), headline.get(f"eval_acc_norm/{t}/{m}")
        return "" if a is None else f"{a:.3f}" + ("" if n is None else f" / {n:.3f}")

    for t in tasks:
        label = t
        if t == "avg" and (name := headline.get("eval/task_set")):
            label = f"avg of {name} ({', '.join(TASK_SETS.get(name, ()))})"
        table.add_row(label, str(headline.get(f"eval_n/{t}", "")), *(x for m in modes for x in (cell(t, m), acc(t, m))))
    if missing := headline.get("eval/task_set_missing"):
        table.caption = f"no avg of {headline.get('eval/task_set')} in some mode: {missing} not scored there"
    return table


def plan_title(name: str, folder: Path, cells: list, seeds: list[int] | None = None) -> str:
    """E.g. ``sweep mini: 36 cells -> runs/mini``; with a ``seeds:`` axis ``28 cells × 3 seeds = 84 runs``."""
    if not seeds:
        return f"sweep {name}: {len(cells)} cells -> {folder}"
    distinct = {tuple(o for o in c.overrides if o.split("=", 1)[0].strip().lstrip("+~") != "seed") for c in cells}
    return (f"sweep {name}: {len(distinct)} cells × {len(seeds)} seed{'s' * (len(seeds) != 1)} = "
            f"{len(cells)} runs -> {folder}")


def plan_table(name: str, folder: Path, cells: list, seeds: list[int] | None = None):
    """The sweep plan as a table: one row per valid run, then the totals (of every run, all seeds)."""
    from rich.table import Table

    table = Table(title=plan_title(name, folder, cells, seeds), show_lines=False)
    for col in ("run id", "model", "params", "R", "α", "seed", "tokens", "unique", "epochs", "AR-epochs", "steps",
                "FLOPs", "est. time", "state"):
        table.add_column(col, justify="right")
    good = [c for c in cells if c.cfg is not None and not c.error]
    for c in good:
        m = c.semantic
        table.add_row(c.run_id, m["model"], si(c.params), str(m["R"]), format_alpha(m["alpha"]), str(m["seed"]),
                      si(m["tokens"]), si(m["unique_tokens"]), f"{m['epochs']:g}", f"{m['ar_epochs']:.3g}",
                      f"{c.steps:,}", f"{c.flops:.2e}", hms(c.est_s), c.state)
    done = sum(c.state == "done" for c in good)
    table.add_section()
    table.add_row("total", "", "", "", "", "", si(sum(c.semantic["tokens"] for c in good)), "", "", "",
                  f"{sum(c.steps for c in good):,}", f"{sum(c.flops for c in good):.2e}",
                  hms(sum(c.est_s for c in good)), f"{done} done")
    return table


def status_view(folder: Path, rows: list[StatusRow]):
    """The status table, the counts line (the report's status line) and the reasons, as one renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from dualobj.run.status import counts_line

    table = Table(title=f"{folder}")
    for col in ("run id", "model", "R", "α", "seed", "state", "step", "last loss", "heartbeat", "attempts", "left"):
        table.add_column(col, justify="right")
    colour = {"done": "green", "running": "cyan", "failed": "red", "dead": "yellow", "damaged": "red"}
    for r in rows:
        st = r.state
        table.add_row(r.run_id, str(r.model or "-"), str(r.R or "-"), format_alpha(r.alpha), str(r.seed),
                      f"[{colour.get(st, 'white')}]{st}[/]", f"{r.step}/{r.total_steps or '?'}",
                      f"{r.last_loss:.4f}" if r.last_loss is not None else "-",
                      hms(r.heartbeat_age_s) + " ago" if r.heartbeat_age_s is not None else "-",
                      str(r.attempts), hms(r.est_s_left) if st != "done" else "")
    left = sum(r.flops_left for r in rows)
    lines = [counts_line(r.state for r in rows) + f"; compute left {left:.2e} FLOPs"
             + f" (~{hms(sum(r.est_s_left for r in rows))})"]
    lines += [f"  {r.run_id} ({r.state}): {r.reason}" for r in rows if r.reason and r.state != "done"]
    cells = cells_table(rows)
    return Group(table, *([cells] if cells else []), *(Text(line) for line in lines))  # a reason may hold [brackets]


def seeds_text(seeds: list) -> str:
    """E.g. ``0,1,2`` (``?`` for a run whose seed is not known)."""
    return ",".join("?" if s is None else str(s) for s in seeds)


def cells_table(rows: list[StatusRow]):
    """The runs grouped by cell (model, R, α and all but the seed), one row per cell with its seeds and states;
    None when no cell has more than one seed."""
    from rich.table import Table

    from dualobj.run.status import status_cells

    cells = status_cells(rows)
    if not any(len(set(c["seeds"])) > 1 for c in cells):
        return None
    table = Table(title=f"{len(cells)} cells (runs that differ only in their seed)")
    for col in ("cell", "model", "R", "α", "seeds", "states"):
        table.add_column(col, justify="right")
    for c in cells:
        states = ", ".join(f"{n} {s}" for s, n in c["counts"].items())
        table.add_row(c["cell"], str(c["model"] or "-"), str(c["R"] or "-"), format_alpha(c["alpha"]),
                      seeds_text(c["seeds"]), states)
    return table


def status_json(folder: Path, rows: list[StatusRow]) -> str:
    """One JSON object: path, counts per state, all_done, compute left, the runs (NaN as null) and the cells
    (the runs grouped by all but their seed: :func:`dualobj.run.status.status_cells`)."""
    import json
    import math

    from dualobj.run.status import state_counts, status_cells

    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps({
        "path": str(folder), "counts": state_counts(r.state for r in rows),
        "all_done": all(r.state == "done" for r in rows), "flops_left": sum(r.flops_left for r in rows),
        "est_s_left": sum(r.est_s_left for r in rows),
        "runs": [{k: clean(v) for k, v in asdict(r).items()} for r in rows],
        "cells": [{k: clean(v) for k, v in c.items()} for c in status_cells(rows)],
    })
