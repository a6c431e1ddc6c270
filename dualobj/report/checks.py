"""The paper's findings F1–F4 checked on the runs (empirical means over seeds, no GP): :func:`paper_checks`
returns one dict per finding (name, claim, holds, the numbers behind it), :func:`check_line` writes one
as a markdown bullet."""

from __future__ import annotations

import math

import pandas as pd

from dualobj.fmt import format_alpha, format_number
from dualobj.report.analysis import Target, find_targets, has_metric, table2
from dualobj.report.tables import pivot
from dualobj.stats.frame import select_model

NO_SIGNAL = "no signal (every score within two standard errors of chance)"
UNKNOWN_SIGNIFICANCE = "significance unknown: no standard errors stored"


def _combine(values: list[bool | None]) -> bool | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return all(vals)


def _verdict(per: dict) -> bool | None:
    """The finding over its targets: False if a target with signal fails, None if none is computable;
    targets with no signal never decide it."""
    return _combine([v["holds"] for v in per.values() if v.get("signal") is not False])


def _best_sequence(df: pd.DataFrame, t: Target, model: str | None) -> list[tuple]:
    """(R, best α over every α run, incl. the pure objectives) for each R that has a value."""
    p = pivot(df, t.metric, model, t.lower_is_better)
    return [(r, float(a)) for r, a in p.best["best α"].items() if not pd.isna(a)]


def _f1(df, targets, model) -> dict:
    per = {}
    for t in targets:
        tab = table2(df, t.metric, model, t.lower_is_better)
        by_r = {r: {"best α": row["best α"], "gain vs AR": row["gain vs AR"], "gain vs MD": row["gain vs MD"],
                    "beats both": None if pd.isna(row["beats both"]) else bool(row["beats both"])}
                for r, row in tab.iterrows()}
        flags = [v["beats both"] for v in by_r.values()]
        holds = None if all(f is None for f in flags) else all(f for f in flags if f is not None)
        per[t.name] = {"metric": t.metric, "label": t.label, "signal": t.signal, "holds": holds, "by_R": by_r,
                       "not computable at R": [r for r, v in by_r.items() if v["beats both"] is None]}
    return {"name": "F1", "claim": "at every R some mix 0<α<1 beats both α=0 and α=1",
            "holds": _verdict(per), "targets": per}


def _f2(df, targets, model) -> dict:
    per = {}
    for t in targets:
        seq = _best_sequence(df, t, model)
        holds = None if len(seq) < 2 else all(b[1] <= a[1] + 1e-12 for a, b in zip(seq, seq[1:], strict=False))
        per[t.name] = {"metric": t.metric, "label": t.label, "signal": t.signal, "holds": holds, "sequence": seq}
    return {"name": "F2", "claim": "the best α (over all α run) does not increase with R",
            "holds": _verdict(per), "targets": per}


def _f3(df, model) -> dict:
    claim = "pure AR's validation loss worsens with R more than pure MD's"
    pairs = [("val/ar_bpb", "val/md_bpb"), ("val/ar_nll", "val/md_elbo")]
    for ar_m, md_m in pairs:
        if not (has_metric(df, ar_m, model) and has_metric(df, md_m, model)):
            continue
        ar = pivot(df, ar_m, model).mean
        md = pivot(df, md_m, model).mean
        ar_v = ar[1.0].dropna() if 1.0 in ar.columns else pd.Series(dtype=float)
        md_v = md[0.0].dropna() if 0.0 in md.columns else pd.Series(dtype=float)
        common = sorted(set(ar_v.index) & set(md_v.index))
        if len(common) < 2:
            continue
        lo, hi = common[0], common[-1]
        inc_ar, inc_md = float(ar_v[hi] - ar_v[lo]), float(md_v[hi] - md_v[lo])
        return {"name": "F3", "claim": claim, "holds": bool(inc_ar > inc_md), "ar_metric": ar_m,
                "md_metric": md_m, "R_low": lo, "R_high": hi, "ar": (float(ar_v[lo]), float(ar_v[hi])),
                "md": (float(md_v[lo]), float(md_v[hi])), "ar_increase": inc_ar, "md_increase": inc_md,
                "ar_relative_increase": inc_ar / abs(float(ar_v[lo])) if ar_v[lo] else math.nan,
                "md_relative_increase": inc_md / abs(float(md_v[lo])) if md_v[lo] else math.nan}
    return {"name": "F3", "claim": claim, "holds": None,
            "reason": "needs α=1 with val/ar_bpb (or val/ar_nll) and α=0 with val/md_bpb (or val/md_elbo) "
                      "at ≥ 2 common R"}


def _log2_odds(a: float) -> float:
    return math.log2(a / (1 - a)) if 0 < a < 1 else (math.inf if a >= 1 else -math.inf)


def _f4(df, targets, model, alpha_tol: float, max_steps: int) -> dict:
    claim = (f"the best α for the AR-mode and the MD-mode target are close "
             f"(|Δα| ≤ {alpha_tol:g} or at most {max_steps} step(s) apart on the α grid run at that R)")
    by_name = {t.name: t for t in targets}
    per = {}
    sub, model = select_model(df, model)
    for a_name, m_name in (("ar", "md"), ("eval_ar", "eval_md")):
        if a_name not in by_name or m_name not in by_name:
            continue
        ta, tm = by_name[a_name], by_name[m_name]
        sa, sm = dict(_best_sequence(sub, ta, model)), dict(_best_sequence(sub, tm, model))
        pa, pm = pivot(sub, ta.metric, model).mean, pivot(sub, tm.metric, model).mean
        rows = {}
        for r in sorted(set(sa) & set(sm)):
            grid = sorted({float(a) for a in pa.columns if not pd.isna(pa.loc[r, a])}
                          | {float(a) for a in pm.columns if not pd.isna(pm.loc[r, a])})
            a, b = sa[r], sm[r]
            steps = abs(grid.index(a) - grid.index(b))
            d_odds = abs(_log2_odds(a) - _log2_odds(b))
            rows[r] = {"ar α": a, "md α": b, "|Δα|": abs(a - b), "grid steps": steps,
                       "|Δ log2-odds|": None if math.isnan(d_odds) or math.isinf(d_odds) else d_odds,
                       "close": bool(abs(a - b) <= alpha_tol + 1e-12 or steps <= max_steps)}
        holds = None if not rows else all(v["close"] for v in rows.values())
        sig = False if False in (ta.signal, tm.signal) else None if None in (ta.signal, tm.signal) else True
        per[f"{a_name}~{m_name}"] = {"metrics": (ta.metric, tm.metric), "signal": sig, "holds": holds, "by_R": rows}
    return {"name": "F4", "claim": claim, "holds": _verdict(per), "pairs": per,
            "alpha_tol": alpha_tol, "max_steps": max_steps}


def paper_checks(df: pd.DataFrame, model: str | None = None, alpha_tol: float = 0.25,
                 max_steps: int = 1, metrics: list[str] | None = None) -> list[dict]:
    """The paper's findings checked on the runs (empirical means over seeds; no GP), one dict each with
    ``name``, ``claim``, ``holds`` (True / False / None when not computable) and the numbers behind it,
    per target (:func:`find_targets`, limited to ``metrics`` when given).

    F1: at every R the best mix 0<α<1 beats both pure objectives, for every target;
        per target and R: best α, gains, beats both. R levels where α=0 or α=1 has no value are listed
        under "not computable at R" and do not decide the outcome.
    F2: the best α over all α run (pure objectives included) is non-increasing in R, for every target;
        the (R, α) sequence is reported.
    F3: from the lowest to the highest R where both exist, pure AR's val/ar_bpb (α=1) rises more than
        pure MD's val/md_bpb (α=0); val/ar_nll vs val/md_elbo (both nats/token) when bpb is not logged.
    F4: per R the best α for the AR-mode target and the MD-mode target (ar vs md, and eval_ar vs eval_md
        when present) are close: |Δα| ≤ ``alpha_tol`` or at most ``max_steps`` positions apart on the
        sorted α values run at that R. |Δ log2-odds| is reported too (None when one is 0 or 1).
    ``holds`` of F1, F2, F4 is False if any target/pair with signal fails, None if none is computable. A
    target whose scores cannot be told from chance (``signal`` False: :func:`dualobj.report.analysis.signal`)
    is reported as "no signal" and never decides the verdict; ``signal`` None means its significance is
    unknown (no standard errors stored), and it counts.
    """
    sub, model = select_model(df, model)
    targets = find_targets(sub, model, metrics)
    return [_f1(sub, targets, model), _f2(sub, targets, model), _f3(sub, model),
            _f4(sub, targets, model, alpha_tol, max_steps)]


def _mark(holds: bool | None) -> str:
    return {True: "holds", False: "FAILS", None: "not computable"}[holds]


def _target_status(v: dict) -> str:
    if v.get("signal") is False:
        return NO_SIGNAL
    return _mark(v["holds"]) + (f" ({UNKNOWN_SIGNIFICANCE})" if v.get("signal") is None else "")


def _f1_detail(v: dict) -> str:
    return ", ".join(
        f"R={r}: α={format_alpha(x['best α']) if not pd.isna(x['best α']) else '—'} "
        f"({format_number(x['gain vs AR'], 3, True) or '—'} vs AR, "
        f"{format_number(x['gain vs MD'], 3, True) or '—'} vs MD)"
        for r, x in v["by_R"].items())


def _f3_detail(check: dict) -> str:
    if check["holds"] is None:
        return check["reason"]
    return (f"R {check['R_low']} → {check['R_high']}: pure AR {check['ar_metric']} "
            f"{format_number(check['ar'][0])} → {format_number(check['ar'][1])} "
            f"({format_number(check['ar_increase'], 4, True)}), "
            f"pure MD {check['md_metric']} {format_number(check['md'][0])} → {format_number(check['md'][1])} "
            f"({format_number(check['md_increase'], 4, True)})")


def _f4_detail(v: dict) -> str:
    return ", ".join(f"R={r}: {format_alpha(x['ar α'])} vs {format_alpha(x['md α'])} "
                     f"({x['grid steps']} step{'s' if x['grid steps'] != 1 else ''})" for r, x in v["by_R"].items())


def check_line(check: dict) -> str:
    """A markdown bullet for a :func:`paper_checks` entry: the verdict, then one sub-bullet per target (or
    target pair) with its own status (holds, FAILS, not computable, no signal) and numbers."""
    name = check["name"]
    head = f"- **{name}** ({check['claim']}): **{_mark(check['holds'])}**"
    subs = []
    if name in ("F1", "F2"):
        for v in check["targets"].values():
            detail = _f1_detail(v) if name == "F1" else " → ".join(
                f"{format_alpha(a)} (R={r})" for r, a in v["sequence"])
            subs.append(f"{v['label']}: {_target_status(v)}" + (f": {detail}" if v.get("signal") is not False else ""))
    elif name == "F3":
        subs.append(_f3_detail(check))
    else:
        for pn, v in check["pairs"].items():
            subs.append(f"{' vs '.join(v['metrics'])} ({pn}): {_target_status(v)}"
                        + (f": {_f4_detail(v)}" if v.get("signal") is not False else ""))
        if not check["pairs"]:
            subs.append("needs both an AR-mode and an MD-mode target")
    return "\n".join([head, *(f"  - {s}" for s in subs)])
