"""The runs table's conventions, shared by the report and the adaptive search: which direction is better
for a metric, R as an index, the done runs' values of a metric, and the rows of one model size."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dualobj.errors import DualObjError

_LOWER_HINTS = ("nll", "elbo", "loss", "bpb", "ppl")


def default_lower_is_better(metric: str) -> bool:
    """True for losses (names containing nll, elbo, loss, bpb, ppl); False for scores (accuracies, ...)."""
    return any(h in metric.lower() for h in _LOWER_HINTS)


def r_level(r) -> float | int:
    """R as tables index it: an int when integral (1, 4, 16), else a float."""
    r = float(r)
    return int(r) if r.is_integer() else r


def done_values(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Done runs with a finite ``metric``, R > 0 and α: columns R, alpha, value (one row per run/seed)."""
    if metric not in df or df.empty:
        return pd.DataFrame(columns=["R", "alpha", "value"], dtype=float)
    done = df[df["state"] == "done"]
    v = pd.to_numeric(done[metric], errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)
    out = pd.DataFrame({"R": pd.to_numeric(done["repetitions"], errors="coerce").astype(float),
                        "alpha": pd.to_numeric(done["alpha"], errors="coerce").astype(float), "value": v})
    out = out.dropna()
    return out[out["R"] > 0].reset_index(drop=True)


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
