"""Run directories → DataFrames: one row per run (:func:`load_runs`), one row per validation point
(:func:`load_curves`).

A run's state and reason come from :func:`dualobj.run.run_info` (the one place that decides them), its
model, R, α and seed from its own config.yaml (summary.json values only fill gaps), and its metrics from
summary.json when, and only when, the run is done. Only plain files are read; a missing or damaged file
never raises: the run is listed with its state (``damaged`` and the reason in ``note``) and NaN metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from dualobj.errors import DualObjError, RunDirError
from dualobj.run import run_info

META_COLUMNS = ["run_id", "path", "state", "model", "alpha", "repetitions", "seed", "tokens"]
STATUS_COLUMNS = ["step", "total_steps", "attempts", "heartbeat", "error", "note"]
CURVE_COLUMNS = ["run_id", "model", "alpha", "repetitions", "seed", "state", "step", "tokens_seen", "epochs"]
_RUN_MARKERS = ("status.json", "config.yaml")
_SKIP_DIRS = {"checkpoints", "wandb", "__pycache__"}


# ----------------------------------------------------------------------------- finding run directories
def find_run_dirs(path: str | Path) -> list[Path]:
    """Run directories (folders holding status.json or config.yaml) at ``path`` or anywhere below it."""
    root = Path(path)
    if not root.is_dir():
        return []
    if (root / "status.json").is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        here = Path(dirpath)
        if here != root and any(m in filenames for m in _RUN_MARKERS):
            found.append(here)
            dirnames[:] = []  # a run dir's sub-folders are its own (checkpoints, ...)
    if not found and (root / "config.yaml").is_file():
        return [root]  # a single run that has a config but no status yet
    return found


# ----------------------------------------------------------------------------- one run → one row
def _number(x) -> float | int | None:
    """``x`` if it is a real number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return x


def _first(*values):
    return next((v for v in values if v is not None), None)


def _as_float(x) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _variant(model, objective: dict) -> str | None:
    """Runs with a non-constant α schedule get their own tables, e.g. "tiny+cosine(1->0)" next to "tiny"."""
    kind = objective.get("alpha_schedule", "constant") if isinstance(objective, dict) else "constant"
    if model is None or kind in (None, "constant"):
        return model
    a, a0 = objective.get("alpha"), objective.get("alpha_start")
    detail = {
        "linear": f"{a0:g}->{a:g}", "cosine": f"{a0:g}->{a:g}",
        "step": f"{a0:g}->{a:g}@{objective.get('alpha_step_epoch', 0):g}ep",
        "ar_epochs_capped": f"cap {objective.get('ar_epochs_cap', 0):g}",
    }.get(kind, "")
    return f"{model}+{kind}({detail})"


def _run_record(run_dir: Path) -> dict:
    """One row of :func:`load_runs` for ``run_dir``; never raises on damaged files."""
    info = run_info(run_dir)
    s, st = info.summary() or {}, info.status
    alpha = _as_float(_first(info.alpha, _number(s.get("alpha"))))
    record = {
        "run_id": info.run_id,
        "path": str(run_dir),
        "state": info.state,
        "model": _variant(_first(info.model, s.get("model")), info.get("objective") or {}),
        "alpha": None if alpha is None else round(alpha, 12),
        "repetitions": _as_float(_first(info.repetitions, _number(s.get("repetitions")))),
        "seed": _first(info.seed, _number(s.get("seed"))),
        "tokens": _number(info.get("train.tokens")),
        "step": _number(st.get("step")),
        "total_steps": _number(st.get("total_steps")),
        "attempts": _number(st.get("attempts")),
        "heartbeat": _number(st.get("heartbeat")),
        "error": st.get("error"),
        "note": info.reason,
    }
    for key, value in s.items():
        if key not in META_COLUMNS and _number(value) is not None:
            record[key] = value
    return record


def _scan(path: str | Path) -> list[tuple[Path, dict]]:
    run_dirs = find_run_dirs(path)
    if not run_dirs:
        raise RunDirError(f"no runs under {path}; run `dualobj sweep ...` first or point to a sweep folder")
    return [(d, _run_record(d)) for d in run_dirs]


# ----------------------------------------------------------------------------- frames
def _runs_frame(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    for col in META_COLUMNS + STATUS_COLUMNS:
        if col not in df:
            df[col] = None
    for col in ("alpha", "repetitions"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df = df.sort_values(["model", "repetitions", "alpha", "seed"], na_position="last", kind="stable")
    return df.reset_index(drop=True)


def _curve_rows(run_dir: Path, rec: dict) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash mid-write
        if not isinstance(obj, dict):
            continue
        vals = {k: v for k, v in obj.items() if k.startswith("val/") and _number(v) is not None}
        if not vals:
            continue
        rows.append({**{k: rec.get(k) for k in CURVE_COLUMNS[:6]},
                     "step": _number(obj.get("step")), "tokens_seen": _number(obj.get("tokens_seen")),
                     "epochs": _number(obj.get("epochs")), **vals})
    return rows


def _curves_frame(scanned: list[tuple[Path, dict]]) -> pd.DataFrame:
    rows = [row for d, rec in scanned for row in _curve_rows(d, rec)]
    df = pd.DataFrame.from_records(rows, columns=None if rows else CURVE_COLUMNS)
    for col in ("alpha", "repetitions"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if rows:
        df = df.sort_values(["model", "repetitions", "alpha", "seed", "step"], na_position="last", kind="stable")
    return df.reset_index(drop=True)


def load_runs(path: str | Path) -> pd.DataFrame:
    """One row per run directory at/under ``path``, sorted by model, repetitions, alpha, seed.

    Columns: run_id, path, state, model, alpha, repetitions, seed, tokens (train.tokens), step,
    total_steps, attempts, heartbeat, error, note, then every numeric summary.json key (e.g.
    ``val/ar_nll``). ``state`` is :func:`dualobj.run.run_info`'s (one of :data:`dualobj.run.STATES`)
    and ``note`` its reason (why damaged, dead, failed or interrupted). Summary values are filled only
    for done runs. Raises :class:`RunDirError` when there are no runs.
    """
    return _runs_frame([rec for _, rec in _scan(path)])


def load_curves(path: str | Path) -> pd.DataFrame:
    """Tidy validation curves: one row per metrics.jsonl line carrying val/* metrics.

    Columns: run_id, model, alpha, repetitions, seed, state, step, tokens_seen, epochs, val/*.
    Unparseable lines (e.g. cut by a crash) are skipped. Raises :class:`RunDirError` when there are no runs.
    """
    return _curves_frame(_scan(path))


def load_sweep(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`load_runs` and :func:`load_curves` of ``path`` from a single scan of its run directories."""
    scanned = _scan(path)
    return _runs_frame([rec for _, rec in scanned]), _curves_frame(scanned)


# ----------------------------------------------------------------------------- picking one model size
def select_model(df: pd.DataFrame, model: str | None) -> tuple[pd.DataFrame, str | None]:
    """The rows of ``model`` in a runs or curves frame, and the model's name. With ``model=None`` the
    frame must hold a single model size (else :class:`DualObjError`), whose name is returned."""
    if "model" not in df or df.empty:
        return df, model
    if model is not None:
        return df[df["model"] == model], model
    models = sorted({m for m in df["model"] if isinstance(m, str)})
    if len(models) > 1:
        raise DualObjError(f"runs of several model sizes ({', '.join(models)}); pass model=NAME")
    return df, (models[0] if models else None)
