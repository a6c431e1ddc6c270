"""Sweeps: a YAML file of cells (spec) -> a checked plan (plan) -> jobs through Hydra's launchers (launch),
run as a grid (grid) or an adaptive search (search), each cell ending in a typed outcome (outcome).

:func:`run_sweep` runs a sweep file either way. A sweep folder is read back by :mod:`dualobj.run.status`.
"""

from dualobj.sweep.grid import run_grid, run_sweep
from dualobj.sweep.outcome import CellOutcome, Outcome, SweepResult
from dualobj.sweep.plan import Cell, check_data, plan, write_manifest
from dualobj.sweep.spec import SweepSpec, cell_overrides, load_spec

__all__ = ["Cell", "CellOutcome", "Outcome", "SweepResult", "SweepSpec", "cell_overrides", "check_data",
           "load_spec", "plan", "run_grid", "run_sweep", "write_manifest"]
