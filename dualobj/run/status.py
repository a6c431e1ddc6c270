"""What is in a folder of runs: every run directory at or under a path, and the cells its sweep plans
(sweep.json) that have not started. `dualobj status` and `dualobj report` both read a folder through
:func:`folder_runs`, so they list the same runs with the same facts and states.

States and their reasons come from :func:`dualobj.run.run_info` alone; model, R, α and seed from each
run's own config.yaml, and for a cell that has not started from its entry in sweep.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from dualobj import config as C
from dualobj.errors import RunDirError
from dualobj.run import STATES, RunDir, RunInfo, run_info

_RUN_MARKERS = ("status.json", "config.yaml")
_SKIP_DIRS = {"checkpoints", "wandb", "__pycache__"}
ALWAYS_COUNTED = ("done", "failed", "running", "pending")  # shown in the counts even when 0


# ----------------------------------------------------------------------------- finding runs
def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """Run directories (holding status.json or config.yaml) and sweep.json files at or below ``root``."""
    if (root / "status.json").is_file():
        return [root], []
    runs: list[Path] = []
    manifests: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        here = Path(dirpath)
        if here != root and any(m in filenames for m in _RUN_MARKERS):
            runs.append(here)
            dirnames[:] = []  # a run dir's sub-folders are its own (checkpoints, ...)
        elif "sweep.json" in filenames:
            manifests.append(here / "sweep.json")
    if not runs and not manifests and (root / "config.yaml").is_file():
        return [root], []  # a single run that has a config but no status yet
    return runs, manifests


def find_run_dirs(path: str | Path) -> list[Path]:
    """Run directories (folders holding status.json or config.yaml) at ``path`` or anywhere below it."""
    root = Path(path)
    return _walk(root)[0] if root.is_dir() else []


def _planned_cells(manifest: Path) -> list[dict]:
    try:
        cells = json.loads(manifest.read_text())["cells"]
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{manifest} is damaged; re-run `dualobj sweep` to rewrite it") from e
    return [c for c in cells if isinstance(c, dict) and c.get("run_id")]


def _cell_config(cell: dict) -> dict:
    """The facts of a planned cell as a config dict: model, R, α, seed, tokens, its α schedule."""
    objective = {**asdict(C.ObjectiveConfig()), "alpha": cell.get("alpha")}
    for o in cell.get("overrides") or []:
        key, _, value = str(o).partition("=")
        if key.startswith("objective.") and key != "objective.alpha":
            number = C.parse_number(value)
            objective[key.split(".", 1)[1]] = value if number is None else number
    return {"run_id": cell["run_id"], "model": {"name": cell.get("model")}, "data": {"repetitions": cell.get("R")},
            "objective": objective, "train": {"tokens": cell.get("tokens")}, "seed": cell.get("seed")}


def folder_runs(path: str | Path) -> list[tuple[RunInfo, dict]]:
    """Every run at or under ``path`` with its planned cell ({} when no sweep.json plans it): the run
    directories found at any depth, then the planned cells that have no directory yet (state pending).
    Raises :class:`RunDirError` when ``path`` is missing or holds neither runs nor a sweep plan."""
    root = Path(path)
    if not root.exists():
        raise RunDirError(f"{root} does not exist; give a sweep folder or run directory such as runs/smoke")
    if not root.is_dir():
        raise RunDirError(f"{root} is not a folder; give a sweep folder or run directory such as runs/smoke")
    run_dirs, manifests = _walk(root)
    planned = {(m.parent / c["run_id"]).resolve(): c for m in manifests for c in _planned_cells(m)}
    out = []
    for d in run_dirs:
        info, cell = run_info(d), planned.pop(d.resolve(), {})
        if cell and not info.config:
            info.config = _cell_config(cell)
        out.append((info, cell))
    for p, cell in planned.items():
        out.append((RunInfo(path=p, run_id=str(cell["run_id"]), state="pending", config=_cell_config(cell)), cell))
    if not out:
        raise RunDirError(f"no runs or sweep plan under {root}; run `dualobj sweep SWEEP.yaml` first, "
                          "or give a sweep folder or run directory")
    return out


# ----------------------------------------------------------------------------- rows and counts
def state_counts(states: Iterable[str]) -> dict[str, int]:
    """Runs per state: done, failed, running, pending always; dead, damaged, interrupted when present."""
    counts: dict[str, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    order = ALWAYS_COUNTED + tuple(s for s in STATES if s not in ALWAYS_COUNTED)
    order += tuple(sorted(set(counts) - set(order)))
    return {s: counts.get(s, 0) for s in order if s in ALWAYS_COUNTED or counts.get(s)}


def counts_line(states: Iterable[str]) -> str:
    """E.g. ``12 runs: 9 done, 1 failed, 1 running, 1 pending, 1 dead``."""
    counts = state_counts(states)
    total = sum(counts.values())
    return f"{total} run{'s' * (total != 1)}: " + ", ".join(f"{n} {s}" for s, n in counts.items())


def _last_loss(rd: RunDir) -> float | None:
    for row in reversed(rd.metrics()):
        if "train/loss" in row:
            return row["train/loss"]
    return None


@dataclass
class StatusRow:
    """One run as `dualobj status` shows it (and ``--json`` prints it)."""

    run_id: str
    path: str
    model: str | None
    R: float | None  # data repetitions
    alpha: float | None
    seed: int | None
    state: str  # one of dualobj.run.STATES
    reason: str | None  # why dead, failed, damaged or interrupted
    step: int
    total_steps: int
    last_loss: float | None  # the newest train/loss in metrics.jsonl
    heartbeat_age_s: float | None  # seconds since the run last wrote its status
    attempts: int
    flops_left: float  # compute still to do, from the sweep plan (0 outside a sweep)
    est_s_left: float  # time still to go at the plan's throughput
    cell: str = ""  # what the run computes but its seed (a hash): runs of one cell at several seeds share it


def _seedless(overrides: list) -> dict[str, str]:
    """A cell's overrides as key -> value (the last one wins), without the seed."""
    pairs = (str(o).partition("=") for o in overrides)
    return {k.strip(): v for k, _, v in pairs if k.strip().lstrip("+~") != "seed"}


def _seedless_config(config: dict) -> dict | None:
    """The semantic sections of a run's config.yaml (as in its run id) without the seed; None if it has none."""
    sections = {s: config[s] for s in C.SEMANTIC_SECTIONS if s != "seed" and isinstance(config.get(s), dict)}
    if not sections:
        return None
    return {s: {k: v for k, v in d.items() if f"{s}.{k}" not in C.NON_SEMANTIC} for s, d in sections.items()}


def cell_key(info: RunInfo, cell: dict) -> str:
    """A short hash of what a run computes apart from its seed: its model, R and α with the sweep plan's
    overrides less seed=, else its config.yaml less the seed, else its run id alone (a cell of one run)."""
    if isinstance(cell.get("overrides"), list):
        rest: tuple = ("plan", sorted(_seedless(cell["overrides"]).items()))
    elif (config := _seedless_config(info.config)) is not None:
        rest = ("config", config)
    else:
        rest = ("run", info.run_id)
    facts = [info.model, *(None if x is None else float(x) for x in (info.repetitions, info.alpha))]
    blob = json.dumps([*facts, rest], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _row(info: RunInfo, cell: dict, now: float) -> StatusRow:
    st, state = info.status, info.state
    total = st.get("total_steps") or cell.get("steps") or 0
    step = total if state == "done" else int(st.get("step", 0))
    frac_left = 0.0 if state == "done" else (1 - step / total if total else 1.0)
    return StatusRow(
        run_id=info.run_id, path=str(info.path), model=info.model, R=info.repetitions, alpha=info.alpha,
        seed=info.seed, state=state, reason=info.reason, step=step, total_steps=total,
        last_loss=_last_loss(RunDir(info.path)) if info.path.is_dir() else None,
        heartbeat_age_s=now - st["heartbeat"] if isinstance(st.get("heartbeat"), (int, float)) else None,
        attempts=st.get("attempts", 0), flops_left=frac_left * cell.get("flops", 0.0),
        est_s_left=frac_left * cell.get("est_s", 0.0), cell=cell_key(info, cell),
    )


def status_rows(folder: str | Path) -> list[StatusRow]:
    """One row per run of :func:`folder_runs`, sorted by state (running first, done last), model, R, α, seed."""
    now = time.time()
    rows = [_row(info, cell, now) for info, cell in folder_runs(folder)]
    order = {s: i for i, s in enumerate(STATES)}
    rows.sort(key=lambda r: (order.get(r.state, 9), str(r.model), r.R or 0, r.alpha or 0, r.seed or 0, r.run_id))
    return rows


def status_cells(rows: list[StatusRow]) -> list[dict]:
    """The runs grouped by cell (runs that differ only in their seed), ordered by model, R and α: each with its
    model, R, α, seeds and run ids (by seed), runs per state (those present, in the counts' order) and whether
    all are done."""
    groups: dict[str, list[StatusRow]] = {}
    for r in rows:
        groups.setdefault(r.cell or r.run_id, []).append(r)
    out = []
    for key, runs in groups.items():
        runs = sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.run_id))
        first = runs[0]
        out.append({"cell": key, "model": first.model, "R": first.R, "alpha": first.alpha,
                    "seeds": [r.seed for r in runs], "run_ids": [r.run_id for r in runs],
                    "counts": {s: n for s, n in state_counts(r.state for r in runs).items() if n},
                    "all_done": all(r.state == "done" for r in runs)})
    out.sort(key=lambda c: (str(c["model"]), c["R"] or 0, c["alpha"] or 0, c["cell"]))
    return out
