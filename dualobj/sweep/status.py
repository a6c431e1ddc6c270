"""`dualobj status`: the state of every cell of a sweep folder, and the compute still to do.

States and their reasons come from :func:`dualobj.run.run_info`, the same function the sweep and
the report use; model, R, α and seed from each run's own config.yaml (the sweep plan's for cells
that have not started).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dualobj.errors import RunDirError
from dualobj.run import STATES, RunDir, RunInfo, run_info


def _last_loss(rd: RunDir) -> float | None:
    for row in reversed(rd.metrics()):
        if "train/loss" in row:
            return row["train/loss"]
    return None


def _planned(folder: Path) -> dict[str, dict]:
    """Cells of sweep.json by run id, plus any other run directory found in the folder."""
    planned = []
    manifest = folder / "sweep.json"
    if manifest.exists():
        try:
            planned = json.loads(manifest.read_text())["cells"]
        except (ValueError, KeyError) as e:
            raise RunDirError(f"{manifest} is damaged; re-run `dualobj sweep` to rewrite it") from e
    by_id = {c["run_id"]: c for c in planned}
    for st in folder.glob("*/status.json"):
        by_id.setdefault(st.parent.name, {"run_id": st.parent.name})
    return by_id


def _row(info: RunInfo, cell: dict, now: float) -> dict:
    st, state = info.status, info.state
    total = st.get("total_steps") or cell.get("steps") or 0
    step = total if state == "done" else int(st.get("step", 0))
    frac_left = 0.0 if state == "done" else (1 - step / total if total else 1.0)

    def fact(value, key):
        return value if value is not None else cell.get(key)

    return {
        "run_id": info.run_id, "model": fact(info.model, "model"),
        "R": fact(info.repetitions, "R"), "alpha": fact(info.alpha, "alpha"), "seed": fact(info.seed, "seed"),
        "state": state, "reason": info.reason, "step": step, "total_steps": total,
        "last_loss": _last_loss(RunDir(info.path)),
        "heartbeat_age_s": now - st["heartbeat"] if st.get("heartbeat") else None,
        "attempts": st.get("attempts", 0), "error": info.reason,
        "flops_left": frac_left * cell.get("flops", 0.0), "est_s_left": frac_left * cell.get("est_s", 0.0),
    }


def sweep_rows(folder: str | Path) -> list[dict]:
    """One dict per cell: planned cells from sweep.json plus any other run directory found."""
    folder = Path(folder)
    if not folder.exists():
        raise RunDirError(f"{folder} does not exist; give a sweep folder such as runs/smoke")
    if not folder.is_dir():
        raise RunDirError(f"{folder} is not a folder; give a sweep folder such as runs/smoke")
    if (folder / "status.json").exists() and not (folder / "sweep.json").exists():  # a single run directory
        by_id, paths = {folder.name: {"run_id": folder.name}}, {folder.name: folder}
    else:
        by_id = _planned(folder)
        paths = {rid: folder / rid for rid in by_id}
    if not by_id:
        raise RunDirError(f"no runs or sweep plan under {folder}; run `dualobj sweep SWEEP.yaml` first")
    now = time.time()
    rows = [_row(run_info(paths[rid]), c, now) for rid, c in by_id.items()]
    order = {s: i for i, s in enumerate(STATES)}
    rows.sort(key=lambda r: (order.get(r["state"], 9), str(r["model"]), r["R"] or 0, r["alpha"] or 0, r["seed"] or 0))
    return rows
