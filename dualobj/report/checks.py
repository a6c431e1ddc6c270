"""The paper's findings F1–F4 checked on the runs (no GP): :func:`paper_checks` returns one dict per finding
(name, claim, ``holds`` on the means alone, the noise-aware ``verdict`` with its evidence, the numbers behind
it), :func:`check_line` writes one as a markdown bullet and :func:`checks_frame` as the rows of checks.csv.

A verdict is ``holds`` or ``fails`` only when the differences it rests on exceed their seed noise
(:mod:`dualobj.stats.seeds`: paired by seed, two-sided tests at 95%, Bonferroni over the comparisons of one
check and target; the best α per R with Holm's method); otherwise ``unresolved``, with about how many seeds
per cell would resolve it. A target whose scores cannot be told from chance is ``no signal``."""

from __future__ import annotations

import math

import pandas as pd

from dualobj.fmt import format_alpha, format_number
from dualobj.report.analysis import Target, find_targets, has_metric, table2
from dualobj.report.tables import pivot
from dualobj.stats.frame import select_model
from dualobj.stats.seeds import FAILS, HOLDS, LEVEL, MAX_SEEDS, UNRESOLVED, Diff, SeedGrid, gain_verdict

NO_SIGNAL = "no signal (every score within two standard errors of chance)"
UNKNOWN_SIGNIFICANCE = "significance unknown: no standard errors stored"


NO_SIGNAL_VERDICT, NOT_COMPUTABLE = "no signal", "not computable"


def _pm(d: Diff) -> str:
    """A difference with its standard error, e.g. ``+0.0123 ± 0.0040``."""
    return format_number(d.value, 4, True) + ("" if math.isnan(d.se) else f" ± {format_number(d.se, 4)}")


def _seeds_text(n: int) -> str:
    return f"more than {MAX_SEEDS}" if n > MAX_SEEDS else f"about {n}"


def _overall(verdicts: list[str]) -> str:
    """One verdict over the R levels (or targets): fails if any fails, holds if all hold."""
    known = [v for v in verdicts if v not in (NOT_COMPUTABLE, NO_SIGNAL_VERDICT)]
    if not known:
        return NO_SIGNAL_VERDICT if NO_SIGNAL_VERDICT in verdicts else NOT_COMPUTABLE
    if FAILS in known:
        return FAILS
    return HOLDS if all(v == HOLDS for v in known) else UNRESOLVED


def _noise_note(g: SeedGrid) -> str:
    n = g.noise
    if not n.known:
        return "noise unknown: no cell has two seeds"
    what = (f"paired by seed, residual sd {format_number(n.pair_sd)} on {n.pair_df} df" if n.pair_df
            else f"unpaired, run sd {format_number(n.run_sd)} on {n.run_df} df")
    sizes = g.values.groupby(["R", "alpha"]).size()
    lo, hi = int(sizes.min()), int(sizes.max())
    return f"{what}; {lo if lo == hi else f'{lo}-{hi}'} seed(s) per cell"


def _f1_verdict(g: SeedGrid, level: float) -> dict:
    """F1 for one target with its noise: per R the best mix's gains over α=1 and α=0."""
    per_r, parts, need = {}, [], 0
    levels = [r for r in g.r_levels if {0.0, 1.0} <= set(g.alphas(r))]
    m = 2 * len(levels)
    for r in levels:
        mixes = [a for a in g.alphas(r) if 0 < a < 1]
        if not mixes:
            continue
        b = g.best(r, alphas=mixes, level=level).best_alpha
        gains = [g.gain(r, b, 1.0), g.gain(r, b, 0.0)]
        verdict, n = gain_verdict(gains, level / max(len(levels), 1))
        per_r[r], need = verdict, max(need, n)
        parts.append(f"R={r}: mix {format_alpha(b)} vs AR {_pm(gains[0])}, vs MD {_pm(gains[1])} ({verdict})")
    verdict = _overall(list(per_r.values())) if per_r else NOT_COMPUTABLE
    return _with_seeds({"verdict": verdict, "evidence": "; ".join(parts) + f" [{_noise_note(g)}; {m} comparisons]"},
                       need, verdict, g.noise.known)


def _with_seeds(out: dict, need: int, verdict: str, known: bool = True) -> dict:
    """The evidence, with about how many seeds per cell would resolve an unresolved verdict (when the noise
    is known: with no replicate seed there is no estimate)."""
    if verdict == UNRESOLVED and need and known:
        out["seeds_to_resolve"] = need
        out["evidence"] += f"; {_seeds_text(need)} seeds per cell would resolve it"
    return out


def _plausible(g: SeedGrid, level: float) -> dict:
    """Per R the α that may be best (the best and those within noise of it), and the seeds to resolve it."""
    return {r: g.best(r, level=level) for r in g.r_levels}


def _set_text(b) -> str:
    return format_alpha(b.best_alpha) + (f" (within noise: {', '.join(format_alpha(a) for a in b.within_noise)})"
                                         if b.within_noise else "")


def _f2_verdict(g: SeedGrid, level: float) -> dict:
    """F2 for one target: the best α's plausible sets never rise with R (holds), some surely rises (fails)."""
    best = _plausible(g, level)
    rs = list(best)
    rises = any(min(best[hi].plausible) > max(best[lo].plausible) for i, lo in enumerate(rs) for hi in rs[i + 1:])
    sure = all(max(best[hi].plausible) <= min(best[lo].plausible) for lo, hi in zip(rs, rs[1:], strict=False))
    verdict = NOT_COMPUTABLE if len(rs) < 2 else FAILS if rises else HOLDS if sure else UNRESOLVED
    need = max((b.seeds_needed(level) for b in best.values() if not b.resolved), default=0)
    evidence = " → ".join(f"{_set_text(b)} (R={r})" for r, b in best.items()) + f" [{_noise_note(g)}]"
    return _with_seeds({"verdict": verdict, "evidence": evidence}, need, verdict, g.noise.known)


def _f3_verdict(ar: SeedGrid, md: SeedGrid, lo, hi, level: float) -> dict:
    """F3 with its noise: (AR's rise) − (MD's rise), from four cells of independent runs (unpaired)."""
    cells = [(ar, lo, 1.0), (ar, hi, 1.0), (md, lo, 0.0), (md, hi, 0.0)]
    var = sum(g.noise.run_sd ** 2 / g.n_seeds(r, a) for g, r, a in cells)
    value = (ar.mean(hi, 1.0) - ar.mean(lo, 1.0)) - (md.mean(hi, 0.0) - md.mean(lo, 0.0))
    df = min(ar.noise.run_df, md.noise.run_df)
    d = Diff(value, math.sqrt(var) if df else math.nan, df, False, min(g.n_seeds(r, a) for g, r, a in cells))
    verdict, need = gain_verdict([d], level)
    return _with_seeds({"verdict": verdict, "evidence": f"AR's rise − MD's rise = {_pm(d)} (unpaired; run sd "
                        f"{format_number(ar.noise.run_sd)} and {format_number(md.noise.run_sd)})"}, need, verdict,
                       bool(df))


def _close(a: float, b: float, grid: list[float], alpha_tol: float, max_steps: int) -> bool:
    return abs(a - b) <= alpha_tol + 1e-12 or abs(grid.index(a) - grid.index(b)) <= max_steps


def _f4_verdict(ga: SeedGrid, gm: SeedGrid, alpha_tol: float, max_steps: int, level: float) -> dict:
    """F4 for one pair of targets: per R, every plausible pair of best α close (holds), none (fails)."""
    ba, bm = _plausible(ga, level), _plausible(gm, level)
    per_r, parts = {}, []
    for r in sorted(set(ba) & set(bm)):
        grid = sorted(set(ga.alphas(r)) | set(gm.alphas(r)))
        pairs = [_close(a, b, grid, alpha_tol, max_steps) for a in ba[r].plausible for b in bm[r].plausible]
        per_r[r] = HOLDS if all(pairs) else FAILS if not any(pairs) else UNRESOLVED
        parts.append(f"R={r}: {_set_text(ba[r])} vs {_set_text(bm[r])} ({per_r[r]})")
    verdict = _overall(list(per_r.values())) if per_r else NOT_COMPUTABLE
    need = max((b.seeds_needed(level) for bs in (ba, bm) for b in bs.values() if not b.resolved), default=0)
    known = ga.noise.known and gm.noise.known
    note = "" if known else " [noise unknown: no cell has two seeds]"
    return _with_seeds({"verdict": verdict, "evidence": "; ".join(parts) + note}, need, verdict, known)


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


def _target_verdict(v: dict, found: dict) -> dict:
    """The target's verdict: "no signal" for a target at chance, else the noise-aware one found."""
    return {"verdict": NO_SIGNAL_VERDICT, "evidence": NO_SIGNAL} if v.get("signal") is False else found


def _check_verdict(per: dict) -> str:
    return _overall([v["verdict"] for v in per.values()])


def _f1(df, targets, model, level: float = LEVEL) -> dict:
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
        per[t.name].update(_target_verdict(per[t.name], _f1_verdict(_grid(df, t, model), level)))
    return {"name": "F1", "claim": "at every R some mix 0<α<1 beats both α=0 and α=1",
            "holds": _verdict(per), "verdict": _check_verdict(per), "targets": per}


def _grid(df, t: Target, model) -> SeedGrid:
    return SeedGrid(df, t.metric, model, t.lower_is_better)


def _f2(df, targets, model, level: float = LEVEL) -> dict:
    per = {}
    for t in targets:
        seq = _best_sequence(df, t, model)
        holds = None if len(seq) < 2 else all(b[1] <= a[1] + 1e-12 for a, b in zip(seq, seq[1:], strict=False))
        per[t.name] = {"metric": t.metric, "label": t.label, "signal": t.signal, "holds": holds, "sequence": seq}
        per[t.name].update(_target_verdict(per[t.name], _f2_verdict(_grid(df, t, model), level)))
    return {"name": "F2", "claim": "the best α (over all α run) does not increase with R",
            "holds": _verdict(per), "verdict": _check_verdict(per), "targets": per}


def _f3(df, model, level: float = LEVEL) -> dict:
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
        noise = _f3_verdict(SeedGrid(df, ar_m, model), SeedGrid(df, md_m, model), lo, hi, level)
        return {"name": "F3", "claim": claim, "holds": bool(inc_ar > inc_md), **noise, "ar_metric": ar_m,
                "md_metric": md_m, "R_low": lo, "R_high": hi, "ar": (float(ar_v[lo]), float(ar_v[hi])),
                "md": (float(md_v[lo]), float(md_v[hi])), "ar_increase": inc_ar, "md_increase": inc_md,
                "ar_relative_increase": inc_ar / abs(float(ar_v[lo])) if ar_v[lo] else math.nan,
                "md_relative_increase": inc_md / abs(float(md_v[lo])) if md_v[lo] else math.nan}
    return {"name": "F3", "claim": claim, "holds": None, "verdict": NOT_COMPUTABLE,
            "reason": "needs α=1 with val/ar_bpb (or val/ar_nll) and α=0 with val/md_bpb (or val/md_elbo) "
                      "at ≥ 2 common R"}


def _log2_odds(a: float) -> float:
    return math.log2(a / (1 - a)) if 0 < a < 1 else (math.inf if a >= 1 else -math.inf)


def _f4(df, targets, model, alpha_tol: float, max_steps: int, level: float = LEVEL) -> dict:
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
        found = _f4_verdict(_grid(sub, ta, model), _grid(sub, tm, model), alpha_tol, max_steps, level)
        per[f"{a_name}~{m_name}"].update(_target_verdict(per[f"{a_name}~{m_name}"], found))
    return {"name": "F4", "claim": claim, "holds": _verdict(per), "verdict": _check_verdict(per), "pairs": per,
            "alpha_tol": alpha_tol, "max_steps": max_steps}


def paper_checks(df: pd.DataFrame, model: str | None = None, alpha_tol: float = 0.25,
                 max_steps: int = 1, metrics: list[str] | None = None, level: float = LEVEL) -> list[dict]:
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

    ``verdict`` (per check, and per target or pair) weighs the same comparisons against their seed noise
    (:mod:`dualobj.stats.seeds`, family-wise error ``level``): holds, fails, unresolved (with
    ``seeds_to_resolve``: about how many seeds per cell would decide it), no signal or not computable;
    ``evidence`` is the numbers it rests on, each difference ± its standard error.
    """
    sub, model = select_model(df, model)
    targets = find_targets(sub, model, metrics)
    return [_f1(sub, targets, model, level), _f2(sub, targets, model, level), _f3(sub, model, level),
            _f4(sub, targets, model, alpha_tol, max_steps, level)]


def _mark(holds: bool | None) -> str:
    return {True: "holds", False: "FAILS", None: "not computable"}[holds]


def _head_verdict(check: dict) -> str:
    """The verdict in bold, and what the means alone say when that differs."""
    v = check.get("verdict", _mark(check["holds"]))
    alone = _mark(check["holds"]).lower()
    return f"**{v}**" + (f" (on the means alone: {alone})" if v not in (alone, NO_SIGNAL_VERDICT) else "")


def _target_status(v: dict) -> str:
    if v.get("signal") is False:
        return NO_SIGNAL
    return v.get("verdict", _mark(v["holds"])) + (f" ({UNKNOWN_SIGNIFICANCE})" if v.get("signal") is None else "")


def check_line(check: dict) -> str:
    """A markdown bullet for a :func:`paper_checks` entry: the noise-aware verdict (and the means-alone one
    when it differs), then one sub-bullet per target (or target pair) with its verdict and evidence."""
    name = check["name"]
    head = f"- **{name}** ({check['claim']}): {_head_verdict(check)}"
    subs = []
    if name in ("F1", "F2"):
        for v in check["targets"].values():
            subs.append(f"{v['label']}: {_target_status(v)}"
                        + (f": {v['evidence']}" if v.get("signal") is not False and v.get("evidence") else ""))
    elif name == "F3":
        subs.append(check["reason"] if check["holds"] is None else f"{_f3_detail(check)}; {check['evidence']}")
    else:
        for pn, v in check["pairs"].items():
            subs.append(f"{' vs '.join(v['metrics'])} ({pn}): {_target_status(v)}"
                        + (f": {v['evidence']}" if v.get("signal") is not False and v.get("evidence") else ""))
        if not check["pairs"]:
            subs.append("needs both an AR-mode and an MD-mode target")
    return "\n".join([head, *(f"  - {s}" for s in subs)])


def _f3_detail(check: dict) -> str:
    return (f"R {check['R_low']} → {check['R_high']}: pure AR {check['ar_metric']} "
            f"{format_number(check['ar'][0])} → {format_number(check['ar'][1])} "
            f"({format_number(check['ar_increase'], 4, True)}), "
            f"pure MD {check['md_metric']} {format_number(check['md'][0])} → {format_number(check['md'][1])} "
            f"({format_number(check['md_increase'], 4, True)})")


CHECK_COLUMNS = ["check", "metric", "verdict", "evidence"]


def checks_frame(checks: list[dict]) -> pd.DataFrame:
    """checks.csv: one row per check and target (F3: per metric pair), columns check, metric, verdict,
    evidence (a pair of targets is written ``ar_metric~md_metric``)."""
    rows = []
    for c in checks:
        if c["name"] == "F3":
            metric = f"{c['ar_metric']}~{c['md_metric']}" if c["holds"] is not None else ""
            rows.append([c["name"], metric, c["verdict"], c.get("evidence", c.get("reason", ""))])
        for v in (c.get("targets") or {}).values():
            rows.append([c["name"], v["metric"], v["verdict"], v.get("evidence", "")])
        for v in (c.get("pairs") or {}).values():
            rows.append([c["name"], "~".join(v["metrics"]), v["verdict"], v.get("evidence", "")])
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)
