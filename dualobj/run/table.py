"""Run directories → DataFrames: one row per run (:func:`load_runs`), one row per validation point
(:func:`load_curves`).

The runs are those of :func:`dualobj.run.status.folder_runs`, the same list `dualobj status` shows:
every run directory at or under the path and the cells a sweep.json plans that have not started
(pending). A run's state and reason come from :func:`dualobj.run.run_info` (the one place that decides
them), its model, R, α and seed from its own config.yaml (a pending cell's from sweep.json; summary.json
values only fill gaps), and its metrics from summary.json when, and only when, the run is done. Only plain
files are read; a missing or damaged file never raises: the run is listed with its state (``damaged`` and
the reason in ``note``) and NaN metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dualobj.budget import ar_share
from dualobj.fmt import format_alpha
from dualobj.run import RunInfo
from dualobj.run.status import folder_runs

META_COLUMNS = ["run_id", "path", "state", "model", "alpha", "repetitions", "seed", "tokens"]
STATUS_COLUMNS = ["step", "total_steps", "attempts", "heartbeat", "error", "note"]
CURVE_COLUMNS = ["run_id", "model", "alpha", "repetitions", "seed", "state", "step", "tokens_seen", "epochs"]


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
    """Runs with a non-constant α schedule get their own label, e.g. "tiny+cosine(1->0)" next to "tiny"."""
    kind = objective.get("alpha_schedule", "constant") if isinstance(objective, dict) else "constant"
    if model is None or kind in (None, "constant"):
        return model

    def g(key: str) -> str:
        x = _number(objective.get(key))
        if x is None:
            return "?"
        return format_alpha(x) if key in ("alpha", "alpha_start") else f"{x:g}"

    detail = {
        "linear": f"{g('alpha_start')}->{g('alpha')}", "cosine": f"{g('alpha_start')}->{g('alpha')}",
        "step": f"{g('alpha_start')}->{g('alpha')}@{g('alpha_step_epoch')}ep",
        "ar_epochs_capped": f"cap {g('ar_epochs_cap')}",
    }.get(kind, "")
    return f"{model}+{kind}({detail})"


def _run_record(info: RunInfo) -> dict:
    """One row of :func:`load_runs` for a run of :func:`dualobj.run.status.folder_runs`; never raises on
    damaged files."""
    s, st = info.summary() or {}, info.status
    alpha = _as_float(_first(info.alpha, _number(s.get("alpha"))))
    record = {
        "run_id": info.run_id,
        "path": str(info.path),
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
        "ar_share": _ar_share(info, s),
    }
    for key, value in s.items():
        if key not in META_COLUMNS and _number(value) is not None:
            record[key] = value
    return record


def _ar_share(info: RunInfo, s: dict) -> float | None:
    """The AR share of the gradient weight: summary.json's, else from config.yaml (runs older than the field)."""
    if _number(s.get("ar_share")) is not None:
        return s["ar_share"]
    constant = info.get("objective.alpha_schedule") in (None, "constant")
    a = info.alpha if constant else _number(s.get("alpha_mean"))
    scale = _number(info.get("objective.ar_loss_scale"))
    return None if a is None or scale is None else ar_share(a, scale)


def _scan(path: str | Path) -> list[tuple[Path, dict]]:
    """Every run directory at/under ``path`` once per run id: the same run id is the same run (its semantic
    config), so a copy in another sweep folder (an adaptive search reusing a grid's cells) is not counted
    twice; a done copy is kept over an unfinished one, else the first by path."""
    scanned = [(info.path, _run_record(info)) for info, _ in folder_runs(path)]
    keep: dict[str, int] = {}
    for i, (_, rec) in enumerate(scanned):
        rid = rec.get("run_id")
        if rid is None:
            continue
        j = keep.get(rid)
        if j is None or (scanned[j][1].get("state") != "done" and rec.get("state") == "done"):
            keep[rid] = i
    return [x for i, x in enumerate(scanned) if x[1].get("run_id") is None or keep[x[1]["run_id"]] == i]


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
