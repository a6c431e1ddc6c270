"""The one answer to "what state is this run in, and what is it?", used by sweep, status and report.

States: ``pending`` (never started), ``running`` (a live process holds its lock), ``dead`` (status says
running but no process holds the lock), ``interrupted`` (stopped by a signal after a checkpoint),
``failed`` (an error, recorded), ``damaged`` (status.json or a done run's summary.json cannot be trusted)
and ``done``. Every state but pending, running and done carries a one-line reason.

The run's facts (model, R, α, seed, ...) come from its own config.yaml, so they are known for any run
directory, in a sweep folder or not. Nothing here raises on a damaged file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dualobj.errors import DualObjError
from dualobj.run.dir import RunDir
from dualobj.run.files import read_json

STATES = ("running", "dead", "failed", "damaged", "interrupted", "pending", "done")


@dataclass
class RunInfo:
    """A run directory's state (with its reason) and the facts of its config."""

    path: Path
    run_id: str
    state: str
    reason: str | None = None
    status: dict = field(default_factory=dict)  # status.json ({} when missing or damaged)
    config: dict = field(default_factory=dict)  # config.yaml ({} when missing or damaged)

    def get(self, dotted: str) -> Any:
        """A config value by dotted key (``objective.alpha``), or None."""
        node: Any = self.config
        for key in dotted.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    @property
    def model(self) -> str | None:
        return self.get("model.name")

    @property
    def repetitions(self) -> int | float | None:
        r = _number(self.get("data.repetitions"))
        return int(r) if isinstance(r, float) and r.is_integer() else r

    @property
    def alpha(self) -> float | None:
        return _number(self.get("objective.alpha"))

    @property
    def seed(self) -> int | None:
        return _number(self.get("seed"))

    def summary(self) -> dict | None:
        """summary.json of a done run; None for any other state (an old attempt's summary is not a result)."""
        if self.state != "done":
            return None
        try:
            s = read_json(self.path / "summary.json")
        except (OSError, DualObjError):
            return None
        return s if isinstance(s, dict) else None


def _number(x) -> float | int | None:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def read_config(path: Path) -> dict:
    """config.yaml of a run as a plain dict (safe loader; {} when missing or damaged)."""
    try:
        obj = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _state(rd: RunDir) -> tuple[str, str | None, dict]:
    if not rd.status_path.exists():
        return "pending", None, {}
    try:
        st = rd.status()
    except DualObjError as e:
        return "damaged", str(e), {}
    except OSError as e:
        return "damaged", f"{rd.status_path} cannot be read ({e.strerror})", {}
    state = str(st.get("state") or "pending")
    if state == "done":
        try:
            problem = rd.summary_problem(st)
        except OSError as e:
            problem = f"summary.json cannot be read ({e.strerror})"
        return ("damaged", problem, st) if problem else ("done", None, st)
    if state == "running":
        try:
            locked = rd.is_locked()
        except OSError:
            locked = False
        if locked:
            return "running", None, st
        return "dead", "status says running but no live process holds the run (killed?); re-run to resume", st
    return state, st.get("error"), st


def run_info(path: str | Path) -> RunInfo:
    """State, reason and config facts of the run directory at ``path``."""
    rd = RunDir(path)
    state, reason, st = _state(rd)
    cfg = read_config(rd.config_path)
    rid = st.get("run_id") or cfg.get("run_id") or rd.path.name
    return RunInfo(path=rd.path, run_id=str(rid), state=state, reason=reason, status=st, config=cfg)


def run_state(path: str | Path) -> str:
    """Just the state of :func:`run_info`."""
    return run_info(path).state
