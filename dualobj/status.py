"""`dualobj status`: the state of every cell of a sweep folder, and the compute still to do."""

from __future__ import annotations

import json
import time
from pathlib import Path

from dualobj.errors import RunDirError
from dualobj.rundir import RunDir
from dualobj.sweep import cell_state


def _last_loss(rd: RunDir) -> float | None:
    for row in reversed(rd.metrics()):
        if "train/loss" in row:
            return row["train/loss"]
    return None


def sweep_rows(folder: str | Path) -> list[dict]:
    """One dict per cell: planned cells from sweep.json plus any other run directory found."""
    folder = Path(folder)
    if not folder.exists():
        raise RunDirError(f"{folder} does not exist; give a sweep folder such as runs/smoke")
    if not folder.is_dir():
        raise RunDirError(f"{folder} is not a folder; give a sweep folder such as runs/smoke")
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
    if not by_id:
        raise RunDirError(f"no runs or sweep plan under {folder}; run `dualobj sweep SWEEP.yaml` first")
    rows, now = [], time.time()
    for rid, c in by_id.items():
        rd = RunDir(folder / rid)
        state = cell_state(rd)
        st = {}
        if rd.status_path.exists() and state != "damaged":
            st = rd.status()
        total = st.get("total_steps") or c.get("steps") or 0
        step = total if state == "done" else int(st.get("step", 0))
        frac_left = 0.0 if state == "done" else (1 - step / total if total else 1.0)
        rows.append({
            "run_id": rid, "model": c.get("model"), "R": c.get("R"), "alpha": c.get("alpha"), "seed": c.get("seed"),
            "state": state, "step": step, "total_steps": total, "last_loss": _last_loss(rd),
            "heartbeat_age_s": now - st["heartbeat"] if st.get("heartbeat") else None,
            "attempts": st.get("attempts", 0), "error": st.get("error"),
            "flops_left": frac_left * c.get("flops", 0.0), "est_s_left": frac_left * c.get("est_s", 0.0),
        })
    order = {"running": 0, "dead": 1, "failed": 2, "damaged": 3, "interrupted": 4, "pending": 5, "done": 6}
    rows.sort(key=lambda r: (order.get(r["state"], 9), str(r["model"]), r["R"] or 0, r["alpha"] or 0, r["seed"] or 0))
    return rows
