"""Running a sweep file: the grid of cells (:func:`run_grid`) or, when the file has a ``search:`` block, the
adaptive search (:func:`dualobj.sweep.search.run_search`); :func:`run_sweep` picks. Both print through the
callbacks they are given and return a :class:`SweepResult` whose exit code the command line passes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dualobj.errors import ConfigError
from dualobj.fmt import hms
from dualobj.run.status import status_rows
from dualobj.sweep import launch as L
from dualobj.sweep.outcome import CellOutcome, Outcome, SweepResult
from dualobj.sweep.plan import Cell, check_data, plan, write_manifest
from dualobj.sweep.spec import SweepSpec, parallel_jobs


def run_sweep(spec: SweepSpec, folder: Path, args: list[str], dry_run: bool = False, say: Callable = print,
              show: Callable = print, plan_table: Callable | None = None) -> SweepResult:
    """Run every cell of ``spec`` that is not done (or the adaptive search), into ``folder``.

    ``args``: hydra/launcher=... and hydra.launcher.* go to the launcher, the rest are overrides of every
    cell. ``say`` prints a line, ``show`` a renderable, ``plan_table(cells, folder)`` makes the plan's table."""
    hydra_args = [a for a in args if a.startswith(("hydra/", "hydra."))]
    extra = [a for a in args if a not in hydra_args]
    if spec.search is not None:
        from dualobj.sweep.search import run_search

        return run_search(spec, folder, extra, hydra_args, dry_run=dry_run, say=say, show=show, plan_table=plan_table)
    return run_grid(spec, folder, extra, hydra_args, dry_run, say, show, plan_table)


def run_grid(spec: SweepSpec, folder: Path, extra: list[str], hydra_args: list[str], dry_run: bool = False,
             say: Callable = print, show: Callable = print, plan_table: Callable | None = None) -> SweepResult:
    """Plan the grid, check its data, show the plan, then launch the cells not done yet."""
    launcher_ov, threads = L.launcher_overrides(spec, hydra_args)
    cells = plan(spec, folder, extra)
    check_data(cells)
    good = [c for c in cells if c.cfg is not None and not c.error]
    todo = [c for c in good if c.state != "done"]
    if plan_table is not None:
        show(plan_table(cells, folder))
    show(launcher_line(launcher_ov, threads, good, todo))
    if dry_run:
        show(f"launcher config ({' '.join(launcher_ov)}):")
        show(L.launcher_config(spec, folder, hydra_args).rstrip())
    bad = [c for c in cells if c.error]
    for c in bad:
        say(f"invalid cell {' '.join(c.overrides)}: {c.error}")
    if bad:
        raise ConfigError(f"{len(bad)} of {len(cells)} cells are invalid (listed above); fix the sweep file")
    if dry_run:
        return SweepResult()
    write_manifest(spec, folder, good)
    if not todo:
        say("nothing to do: every cell is done")
        return SweepResult()
    say(f"running {len(todo)} cell(s) ...")
    try:
        outcomes = L.launch(todo, spec, folder, hydra_args)
    except KeyboardInterrupt:
        outcomes = None
    return report_outcomes(outcomes, folder, len(good), say)


def report_outcomes(outcomes: list[CellOutcome] | None, folder: Path, n_cells: int, say: Callable) -> SweepResult:
    """Say how the launched cells ended and how many of the sweep's cells are left."""
    left = sum(r.state != "done" for r in status_rows(folder))
    if outcomes is None:
        say(f"stopped: {left} cell(s) not done; finished work is kept, re-run to continue")
        return SweepResult(None, left)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome.value] = counts.get(o.outcome.value, 0) + 1
    say("results: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    for o in outcomes:
        if o.outcome is not Outcome.DONE:
            say(f"  {o.run_id}: {o.outcome.value} {o.error or ''}")
    say(f"{n_cells - left}/{n_cells} cells done" + (f"; re-run to continue ({left} left)" if left else ""))
    return SweepResult(outcomes, left)


def launcher_line(launcher_ov: list[str], threads: int, good: list[Cell], todo: list[Cell]) -> str:
    """The launcher, its jobs x threads, where the time estimate comes from and the wall time it implies."""
    given = next((a.split("=", 1)[1] for a in launcher_ov if a.startswith("hydra.launcher.n_jobs=")), None)
    jobs = parallel_jobs(given) if given is not None else None
    name = next((a.split("=", 1)[1] for a in launcher_ov if a.startswith("hydra/launcher=")), "?")
    return (f"launcher: {name}" + (f" ({jobs} jobs x {threads} threads)" if jobs else "")
            + f"; time estimate from {', '.join(sorted({c.throughput_source for c in good})) or '-'}"
            + (f"; wall time with {jobs} parallel jobs ~{hms(sum(c.est_s for c in todo) / jobs)}" if jobs else ""))
