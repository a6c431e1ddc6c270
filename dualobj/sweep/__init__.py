"""Sweeps: a YAML file of cells (spec) -> a checked plan (plan) -> jobs through Hydra's launchers (launch).

``status`` reads a sweep folder back: every cell's state, progress and the compute still to do.
"""

from dualobj.sweep.plan import Cell, check_data, plan, write_manifest
from dualobj.sweep.spec import SweepSpec, cell_overrides, load_spec

__all__ = ["Cell", "SweepSpec", "cell_overrides", "check_data", "load_spec", "plan", "write_manifest"]
