"""The paper's analysis (Table 2, GP surface, checks F1–F4, figures, the report section) on synthetic runs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dualobj.report import load_curves, load_runs, write_report
from dualobj.report.analysis import (
    applicable,
    find_targets,
    overfit_summary,
    plot_overfit_curves,
    schedule_section,
    table2,
    table2_markdown,
)
from dualobj.report.checks import check_line, paper_checks
from dualobj.report.gp import figure_title, plot_gp_surface
from dualobj.stats.gp import fit_gp

PNG = b"\x89PNG\r\n\x1a\n"
GRID_R = [1, 4, 16, 64]
GRID_A = [0.0, 1 / 16, 1 / 4, 1 / 2, 3 / 4, 15 / 16, 1.0]


def runs_frame(cells: dict, model: str = "tiny") -> pd.DataFrame:
    """A frame shaped like load_runs: ``cells`` maps (R, α) to {metric: value or [value per seed]}."""
    rows = []
    for (r, a), metrics in cells.items():
        n = max(len(v) if isinstance(v, list) else 1 for v in metrics.values())
        for seed in range(n):
            row = {"run_id": f"r{r}_a{a}_s{seed}", "path": "", "state": "done", "model": model, "alpha": float(a),
                   "repetitions": float(r), "seed": seed, "tokens": 1000}
            for m, v in metrics.items():
                row[m] = v[seed] if isinstance(v, list) else v
            rows.append(row)
    return pd.DataFrame(rows)


def is_png(path: Path) -> bool:
    path = Path(path)
    return path.exists() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------- GP with a known optimum
def alpha_star(r: float) -> float:
    return 0.9 if r <= 4 else 16 / r


@pytest.fixture(scope="module")
def known_gp():
    rng = np.random.default_rng(0)
    cells = {(r, a): {"val/ar_nll": [3 + (a - alpha_star(r)) ** 2 + rng.normal(0, 0.002) for _ in range(2)]}
             for r in GRID_R for a in GRID_A}
    df = runs_frame(cells)
    df.loc[0, "state"] = "failed"  # not done: not an observation
    return df, fit_gp(df, "val/ar_nll", n_samples=2000, seed=0)


def test_gp_recovers_known_optimum(known_gp):
    df, gp = known_gp
    assert gp.n_obs == len(df) - 1 and gp.lower_is_better and gp.model == "tiny"
    assert gp.r_levels == GRID_R
    assert gp.r2 > 0.9 and gp.r2_loo is not None and gp.r2_loo > 0.9
    assert gp.mean.shape == (4, 101) and gp.std.shape == (4, 101) and (gp.std.to_numpy() >= 0).all()
    for r in GRID_R:
        assert abs(gp.best_alpha_by_r[r] - alpha_star(r)) <= 0.15, r
        p = gp.p_optimal[r]
        assert p.sum() == pytest.approx(1.0)
        assert gp.p_optimal_dense.loc[r].sum() == pytest.approx(1.0)
        assert set(GRID_A) <= set(p.index) and gp.best_alpha_by_r[r] in p.index
        ran = p[p.index.isin(GRID_A)]
        closest = min(GRID_A, key=lambda a: abs(a - alpha_star(r)))
        assert ran.idxmax() == closest, r  # among the α values run, the one nearest α* is the likeliest
        assert p[np.abs(p.index - alpha_star(r)) <= 0.15].sum() > 0.9
    frame = gp.p_optimal_frame()
    assert frame.groupby("R")["p"].sum().to_numpy() == pytest.approx(np.ones(4))
    assert frame["gp_best"].sum() == 4
    assert gp.predict(64, alpha_star(64)) < gp.predict(64, 1.0)
    md = gp.markdown()
    assert "R² = " in md and "| R | GP best α | predicted | P(0) | P(1/16)" in md
    assert "Matern" in str(gp.kernel) and "WhiteKernel" in str(gp.kernel)


def test_gp_higher_is_better_and_too_few_runs():
    cells = {(r, a): {"eval/avg/ar": 20 - 40 * (a - 0.5) ** 2 + r * 0.01}
             for r in (1, 8) for a in (0, 0.25, 0.5, 0.75, 1)}
    gp = fit_gp(runs_frame(cells), "eval/avg/ar", n_samples=500)
    assert not gp.lower_is_better
    assert all(abs(gp.best_alpha_by_r[r] - 0.5) <= 0.1 for r in (1, 8))
    assert gp.p_optimal[1].idxmax() == pytest.approx(0.5, abs=0.1)
    few = runs_frame({(1, 0.0): {"val/ar_nll": 3.0}, (2, 1.0): {"val/ar_nll": 3.1}, (2, 0.0): {"val/ar_nll": 3.2}})
    with pytest.raises(ValueError, match="at least 4"):
        fit_gp(few, "val/ar_nll")


# ----------------------------------------------------------------------------- Table 2
def test_table2_exact_values():
    cells = {
        (1, 0.0): {"val/ar_bpb": 1.6, "eval/avg/ar": 10.0}, (1, 0.25): {"val/ar_bpb": 1.3, "eval/avg/ar": 14.0},
        (1, 0.5): {"val/ar_bpb": [1.0, 1.2], "eval/avg/ar": 12.0}, (1, 1.0): {"val/ar_bpb": 1.15, "eval/avg/ar": 13.0},
        (8, 0.25): {"val/ar_bpb": 1.25, "eval/avg/ar": 9.0}, (8, 0.5): {"val/ar_bpb": 1.35, "eval/avg/ar": 11.0},
        (8, 1.0): {"val/ar_bpb": 1.5, "eval/avg/ar": 12.0},
    }
    df = runs_frame(cells)
    extra = df.iloc[[0]].assign(state="failed", alpha=0.0, repetitions=8.0, **{"val/ar_bpb": 0.1})
    df = pd.concat([df, extra], ignore_index=True)  # a failed α=0 run at R=8: its value is ignored
    t = table2(df, "val/ar_bpb")
    assert list(t.index) == [1, 8] and t.attrs["lower_is_better"] and t.attrs["metric"] == "val/ar_bpb"
    assert t.loc[1, "best α"] == 0.5 and t.loc[1, "best"] == pytest.approx(1.1)  # mean of 1.0 and 1.2
    assert t.loc[1, "AR (α=1)"] == 1.15 and t.loc[1, "MD (α=0)"] == 1.6
    assert t.loc[1, "gain vs AR"] == pytest.approx(0.05) and t.loc[1, "gain vs MD"] == pytest.approx(0.5)
    assert bool(t.loc[1, "beats both"]) is True and t["beats both"].dtype == "boolean"
    assert t.loc[8, "best α"] == 0.25 and t.loc[8, "gain vs AR"] == pytest.approx(0.25)
    assert math.isnan(t.loc[8, "MD (α=0)"]) and math.isnan(t.loc[8, "gain vs MD"])
    assert pd.isna(t.loc[8, "beats both"])  # α=0 missing: unknown, not False
    md = table2_markdown(t)
    assert md == table2_markdown(df, "val/ar_bpb")
    # one cell has two seeds (sd 0.1414), no α pair shares a second seed: unpaired, 0.1414 * sqrt(1/2 + 1)
    assert "| 1 | 1/2 | 1.1000 | 1.1500 | 1.6000 | +0.0500 ± 0.1732 | +0.5000 ± 0.1732 | yes | unresolved |" in md
    assert "| 8 | 1/4 | 1.2500 | 1.5000 | — | +0.2500 | — | — |" in md

    s = table2(df, "eval/avg/ar")  # higher is better: the max mix, gains = best − reference
    assert not s.attrs["lower_is_better"]
    assert s.loc[1, "best α"] == 0.25 and s.loc[1, "best"] == 14.0
    assert s.loc[1, "gain vs AR"] == pytest.approx(1.0) and s.loc[1, "gain vs MD"] == pytest.approx(4.0)
    assert bool(s.loc[1, "beats both"])
    assert s.loc[8, "best α"] == 0.5 and s.loc[8, "gain vs AR"] == pytest.approx(-1.0)
    forced = table2(df, "val/ar_bpb", lower_is_better=False)
    assert forced.loc[1, "best α"] == 0.25 and forced.loc[1, "gain vs AR"] == pytest.approx(0.15)
    nothing = table2(df, "val/missing")
    assert nothing["best α"].isna().all() and nothing["beats both"].isna().all()


# ----------------------------------------------------------------------------- checks F1–F4
AR = {1: {0.0: 1.6, 0.25: 1.3, 0.5: 1.2, 0.75: 1.1, 1.0: 1.15},
      16: {0.0: 1.62, 0.25: 1.25, 0.5: 1.3, 0.75: 1.35, 1.0: 1.5}}
MD = {1: {0.0: 1.8, 0.25: 1.5, 0.5: 1.45, 0.75: 1.4, 1.0: 1.9},
      16: {0.0: 1.82, 0.25: 1.5, 0.5: 1.55, 0.75: 1.6, 1.0: 2.2}}


def checks_frame(ar=None, md=None, names=("val/ar_bpb", "val/md_bpb")) -> pd.DataFrame:
    ar, md = ar or AR, md or MD
    return runs_frame({(r, a): {names[0]: ar[r][a], names[1]: md[r][a]} for r in ar for a in ar[r]})


def patched(table: dict, r: int, a: float, v: float) -> dict:
    out = {k: dict(row) for k, row in table.items()}
    out[r][a] = v
    return out


def by_name(checks: list[dict]) -> dict:
    assert [c["name"] for c in checks] == ["F1", "F2", "F3", "F4"]
    return {c["name"]: c for c in checks}


def test_checks_all_hold():
    c = by_name(paper_checks(checks_frame()))
    assert all(x["holds"] is True for x in c.values())
    f1 = c["F1"]["targets"]
    assert set(f1) == {"ar", "md"} and f1["ar"]["metric"] == "val/ar_bpb"
    assert f1["ar"]["by_R"][1]["best α"] == 0.75 and f1["ar"]["by_R"][1]["gain vs AR"] == pytest.approx(0.05)
    assert f1["ar"]["by_R"][16]["gain vs MD"] == pytest.approx(0.37)
    assert c["F2"]["targets"]["ar"]["sequence"] == [(1, 0.75), (16, 0.25)]
    f3 = c["F3"]
    assert (f3["ar_metric"], f3["md_metric"], f3["R_low"], f3["R_high"]) == ("val/ar_bpb", "val/md_bpb", 1, 16)
    assert f3["ar_increase"] == pytest.approx(0.35) and f3["md_increase"] == pytest.approx(0.02)
    pair = c["F4"]["pairs"]["ar~md"]
    assert pair["holds"] and pair["by_R"][16] == {"ar α": 0.25, "md α": 0.25, "|Δα|": 0.0, "grid steps": 0,
                                                   "|Δ log2-odds|": 0.0, "close": True}
    lines = [check_line(x) for x in c.values()]
    # one seed per cell: the means agree with the paper, the noise is unknown, so nothing is decided
    assert all("**unresolved** (on the means alone: holds)" in line for line in lines[:2] + lines[3:])
    assert all(x["verdict"] == "unresolved" for x in c.values()) and "noise unknown" in lines[0]
    assert "3/4 (within noise: 0, 1/4, 1/2, 1) (R=1) → 1/4" in lines[1] and "seeds per cell" not in lines[1]


def test_check_f1_fails():
    c = by_name(paper_checks(checks_frame(ar=patched(AR, 16, 1.0, 1.2))))  # pure AR best at R=16
    assert c["F1"]["holds"] is False and c["F1"]["targets"]["md"]["holds"] is True
    r16 = c["F1"]["targets"]["ar"]["by_R"][16]
    assert r16["beats both"] is False and r16["gain vs AR"] == pytest.approx(-0.05)
    assert c["F2"]["targets"]["ar"]["sequence"] == [(1, 0.75), (16, 1.0)] and c["F2"]["holds"] is False
    assert "**unresolved** (on the means alone: fails)" in check_line(c["F1"])


def test_check_f2_fails_alone():
    ar = patched(patched(AR, 1, 0.25, 1.05), 16, 0.75, 1.2)
    md = patched(patched(MD, 1, 0.25, 1.35), 16, 0.75, 1.45)
    c = by_name(paper_checks(checks_frame(ar=ar, md=md)))
    assert c["F2"]["holds"] is False
    assert c["F2"]["targets"]["ar"]["sequence"] == [(1, 0.25), (16, 0.75)]
    assert c["F1"]["holds"] is True and c["F3"]["holds"] is True and c["F4"]["holds"] is True


def test_check_f3_fails_and_nll_fallback():
    c = by_name(paper_checks(checks_frame(md=patched(MD, 16, 0.0, 2.3))))
    assert c["F3"]["holds"] is False and c["F3"]["md_increase"] == pytest.approx(0.5)
    assert c["F1"]["holds"] is True
    nll = by_name(paper_checks(checks_frame(names=("val/ar_nll", "val/md_elbo"))))
    assert nll["F3"]["holds"] is True and nll["F3"]["ar_metric"] == "val/ar_nll"
    assert nll["F3"]["md_metric"] == "val/md_elbo"


def test_check_f4_fails():
    c = by_name(paper_checks(checks_frame(md=patched(MD, 16, 0.75, 1.45))))  # MD target best at 0.75 at R=16
    pair = c["F4"]["pairs"]["ar~md"]
    assert c["F4"]["holds"] is False and pair["by_R"][1]["close"] is True
    r16 = pair["by_R"][16]
    assert (r16["ar α"], r16["md α"], r16["grid steps"], r16["close"]) == (0.25, 0.75, 2, False)
    assert r16["|Δα|"] == pytest.approx(0.5) and r16["|Δ log2-odds|"] == pytest.approx(2 * math.log2(3))
    loose = by_name(paper_checks(checks_frame(md=patched(MD, 16, 0.75, 1.45)), alpha_tol=0.5))
    assert loose["F4"]["holds"] is True


def test_checks_not_computable():
    df = checks_frame()
    df = df[df["alpha"] != 0.0]  # no pure MD
    c = by_name(paper_checks(df))
    assert c["F1"]["holds"] is None and c["F3"]["holds"] is None and "reason" in c["F3"]
    assert c["F2"]["holds"] is True
    only_ar = by_name(paper_checks(checks_frame().drop(columns=["val/md_bpb"])))
    assert only_ar["F4"]["holds"] is None and only_ar["F4"]["pairs"] == {}
    assert "not computable" in check_line(only_ar["F4"])
    assert not applicable(df) and applicable(checks_frame())
    assert [t.name for t in find_targets(checks_frame())] == ["ar", "md"]


# ----------------------------------------------------------------------------- figures and the report
def make_run(root: Path, name: str, *, R, alpha, seed=0, ar=3.0, md=4.0, state="done", curve=None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        f"run_id: {name}\nmodel:\n  name: tiny\ndata:\n  repetitions: {R}\nobjective:\n  alpha: {alpha}\n"
        f"train:\n  tokens: 3000\nseed: {seed}\n")
    (d / "status.json").write_text(json.dumps({"state": state, "step": 3, "total_steps": 3, "run_id": name}))
    if state == "done":
        (d / "summary.json").write_text(json.dumps({
            "run_id": name, "model": "tiny", "alpha": alpha, "repetitions": R, "seed": seed,
            "val/ar_nll": ar, "val/md_elbo": md}))
    if curve is not None:
        (d / "metrics.jsonl").write_text("".join(
            json.dumps({"step": i, "tokens_seen": 1000 * i, "epochs": i * R / 3, "val/ar_nll": v,
                        "val/md_elbo": v + 1}) + "\n" for i, v in enumerate(curve, 1)))
    return d


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    k = 0
    for r in AR:
        for a in AR[r]:
            curve = None
            if r == 16 and a == 1.0:
                curve = [1.4, 1.3, 1.5]  # pure AR over-fits at the highest R
            elif r == 16 and a in (0.25, 0.5):
                curve = [1.5, 1.3, AR[r][a]]
            make_run(root, f"run{k:02d}", R=r, alpha=a, ar=AR[r][a], md=MD[r][a], curve=curve)
            k += 1
    make_run(root, "failed", R=16, alpha=0.75, seed=1, state="failed")
    return root


def test_figures_are_pngs(sweep, tmp_path, known_gp):
    _, gp = known_gp
    assert is_png(plot_gp_surface(gp, tmp_path / "gp.png"))
    curves = load_curves(sweep)
    s = overfit_summary(curves, "val/ar_nll")
    assert s.attrs["repetitions"] == 16 and len(s) == 3
    ar_row = s[s["alpha"] == 1.0].iloc[0]
    assert (ar_row["min"], ar_row["final"], ar_row["rise"]) == pytest.approx((1.3, 1.5, 0.2))
    assert is_png(plot_overfit_curves(curves, tmp_path / "o.png", "val/ar_nll"))
    assert is_png(plot_overfit_curves(curves, tmp_path / "o2.png", "val/ar_nll", best_alpha=0.5))
    assert is_png(plot_overfit_curves(curves.iloc[0:0], tmp_path / "empty.png"))


def test_write_report_paper_section(sweep, tmp_path):
    files = write_report(sweep, formats=["md"], out_dir=tmp_path / "out", analysis=True)
    names = {Path(f).name for f in files}
    assert {"gp_ar.png", "gp_md.png", "overfit_curves.png", "report.md"} <= names
    assert all(is_png(f) for f in files if str(f).endswith(".png"))
    text = files.markdown
    assert "## Paper analysis — tiny" in text
    assert "### Table 2 — AR-mode validation target (val/ar_nll, lower is better)" in text
    assert "### Table 2 — MD-mode validation target (val/md_elbo, lower is better)" in text
    assert "| 16 | 1/4 | 1.2500 | 1.5000 | 1.6200 | +0.2500 | +0.3700 | yes |" in text
    assert "GP on (log2 R, α) → val/ar_nll" in text and "P(GP best α)" in text
    for name in ("F1", "F2", "F3", "F4"):
        assert f"- **{name}** (" in text
    assert "![GP surface, val/ar_nll](gp_ar.png)" in text and "Over-fitting at R=16" in text
    assert (tmp_path / "out" / "report.md").read_text() == text

    quiet = write_report(sweep, formats=["csv"], out_dir=tmp_path / "q", plots=False, analysis=True)
    assert not any("gp_" in Path(f).name or "overfit" in Path(f).name for f in quiet)
    assert "## Paper analysis" in quiet.markdown


def test_report_gp_guard_and_not_applicable(tmp_path):
    few = tmp_path / "few"
    make_run(few, "a", R=1, alpha=0.0)
    make_run(few, "b", R=2, alpha=1.0)
    make_run(few, "c", R=2, alpha=0.0)
    text = write_report(few, formats=["md"], out_dir=tmp_path / "o1", analysis=True).markdown
    assert "## Paper analysis" in text and "GP fit skipped for val/ar_nll" in text and "at least 4" in text
    one_r = tmp_path / "one_r"
    for i, a in enumerate((0.0, 0.5, 1.0)):
        make_run(one_r, f"r{i}", R=4, alpha=a)
    assert "Paper analysis" not in write_report(one_r, formats=["md"], out_dir=tmp_path / "o2", analysis=True).markdown
    assert load_runs(one_r).shape[0] == 3


def test_schedule_section_compares_each_schedule_with_the_best_constant_alpha():
    rows = [
        {"model": "tiny", "state": "done", "repetitions": 16.0, "alpha": a, "val/ar_bpb": v, "val/md_bpb": v + 0.1}
        for a, v in ((0.0, 2.5), (0.25, 2.1), (1.0, 2.4))
    ] + [
        {"model": "tiny+cosine(1->0)", "state": "done", "repetitions": 16.0, "alpha": 0.0, "val/ar_bpb": 2.0,
         "val/md_bpb": 2.3},
        {"model": "tiny+cosine(1->0)", "state": "failed", "repetitions": 16.0, "alpha": 0.0, "val/ar_bpb": 1.0,
         "val/md_bpb": 1.0},
    ]
    text = "\n".join(schedule_section(pd.DataFrame(rows)))
    assert "| tiny, best constant α | 2.1000 (α=1/4) |" in text
    assert "| tiny+cosine(1->0) | 2.0000 (+0.1000) |" in text  # better by 0.1; the failed run is not counted
    assert "| tiny+cosine(1->0) | 2.3000 (-0.1000) |" in text  # md target: best constant 2.2 at α=1/4
    assert schedule_section(pd.DataFrame(rows[:3])) == []


# ----------------------------------------------------------------------------- targets with no signal
def noisy_frame(with_se: bool) -> pd.DataFrame:
    """The AR/MD grid where F1–F4 hold, plus downstream averages at chance whose best α rises with R."""
    df = checks_frame()
    noise = {1: {0.0: 1.0, 0.25: -0.5, 0.5: 0.2, 0.75: -1.0, 1.0: -0.8},
             16: {0.0: -1.0, 0.25: 0.1, 0.5: 0.3, 0.75: 0.2, 1.0: 1.5}}
    for mode in ("ar", "md"):
        df[f"eval/avg/{mode}"] = [noise[int(r)][a] for r, a in zip(df["repetitions"], df["alpha"], strict=True)]
        if with_se:
            df[f"eval_se/avg/{mode}"] = 2.0  # every score within two standard errors of chance (0)
    return df


def test_a_target_at_chance_is_no_signal_and_does_not_fail_a_finding():
    c = by_name(paper_checks(noisy_frame(with_se=True)))
    assert c["F2"]["targets"]["eval_ar"]["signal"] is False and c["F2"]["targets"]["ar"]["signal"] is True
    assert c["F2"]["targets"]["eval_ar"]["holds"] is False  # the noise "fails" ...
    assert c["F2"]["holds"] is True  # ... but does not decide the verdict
    assert c["F4"]["pairs"]["eval_ar~eval_md"]["signal"] is False and c["F4"]["holds"] is True
    line = check_line(c["F2"])
    assert line.startswith("- **F2** (the best α (over all α run) does not increase with R): **unresolved** (on "
                           "the means alone: holds)")
    assert ("  - AR-mode validation target (val/ar_bpb, lower is better): unresolved: 3/4 (within noise: 0, 1/4, "
            "1/2, 1) (R=1) → 1/4") in line
    assert ("  - AR-mode downstream target (eval/avg/ar, higher is better): no signal (every score within two "
            "standard errors of chance)") in line


def test_without_standard_errors_the_significance_is_unknown_and_counts():
    c = by_name(paper_checks(noisy_frame(with_se=False)))
    assert c["F2"]["targets"]["eval_ar"]["signal"] is None
    assert c["F2"]["holds"] is False  # not guessed away: unknown significance counts
    assert "unresolved (significance unknown: no standard errors stored)" in check_line(c["F2"])
    assert c["F2"]["targets"]["eval_ar"]["verdict"] == "unresolved"


def test_the_analysis_covers_only_the_targets_asked_for():
    df = noisy_frame(with_se=True)
    assert [t.name for t in find_targets(df, metrics=["val/ar_bpb", "val/md_bpb"])] == ["ar", "md"]
    assert [t.name for t in find_targets(df)] == ["ar", "md", "eval_ar", "eval_md"]
    c = by_name(paper_checks(df, metrics=["val/ar_bpb"]))
    assert set(c["F1"]["targets"]) == {"ar"} and c["F4"]["pairs"] == {}


def test_no_gp_on_constant_values(tmp_path):
    flat = runs_frame({(r, a): {"val/ar_nll": 3.0} for r in (1, 4) for a in (0.0, 0.5, 1.0)})
    with pytest.raises(ValueError, match="all 6 values of val/ar_nll are equal"):
        fit_gp(flat, "val/ar_nll")


def test_report_runs_the_analysis_only_when_asked(sweep, tmp_path):
    plain = write_report(sweep, formats=["md"], out_dir=tmp_path / "a", plots=False).markdown
    assert "Paper analysis" not in plain  # default metrics, no --analysis
    asked = write_report(sweep, metrics=["val/ar_nll"], formats=["md"], out_dir=tmp_path / "b", plots=False).markdown
    assert "## Paper analysis — tiny" in asked and "Table 2 — AR-mode validation target (val/ar_nll" in asked
    assert "Table 2 — MD-mode" not in asked and "GP on (log2 R, α) → val/md_elbo" not in asked
    off = write_report(sweep, metrics=["val/ar_nll"], formats=["md"], out_dir=tmp_path / "c", plots=False,
                       analysis=False).markdown
    assert "Paper analysis" not in off


def test_gp_figure_title_has_both_r2(known_gp):
    _, gp = known_gp
    assert re.fullmatch(r"tiny: val/ar_nll \(lower is better\); GP R² = \d\.\d{3} \(leave-one-out \d\.\d{3}\)",
                        figure_title(gp))
