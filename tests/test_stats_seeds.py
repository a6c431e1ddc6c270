"""Seed noise and paired comparisons (dualobj/stats/seeds.py) on synthetic grids with planted effects and
known noise, and the report's verdicts built on them (best_alpha.csv, checks.csv)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dualobj.report.analysis import table2
from dualobj.report.checks import checks_frame, paper_checks
from dualobj.stats.seeds import FAILS, HOLDS, UNRESOLVED, Diff, SeedGrid, gain_verdict, holm

ALPHAS = [0.0, 1 / 16, 1 / 4, 1 / 2, 3 / 4, 15 / 16, 1.0]
LEVELS = [1, 4, 16, 64]


def grid(surface, seeds=3, noise=0.02, seed_sd=0.0, rng=None, metric="val/ar_bpb") -> pd.DataFrame:
    """Runs of a synthetic grid: value = surface(R, α) + a shared effect per (R, seed) + independent noise."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for r in LEVELS:
        shared = rng.normal(0, seed_sd, seeds)
        for a in ALPHAS:
            for s in range(seeds):
                rows.append({"state": "done", "model": "tiny", "repetitions": r, "alpha": a, "seed": s,
                             metric: surface(r, a) + shared[s] + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def planted(lead):
    """Per R a different best α, ahead of every other α by at least ``lead``."""
    best = {1: 15 / 16, 4: 3 / 4, 16: 1 / 4, 64: 1 / 16}
    return lambda r, a: 2.0 + (0.0 if a == best[r] else lead * (1 + abs(ALPHAS.index(a) - ALPHAS.index(best[r]))))


# ----------------------------------------------------------------------------- exact answers
def test_a_paired_difference_is_the_paired_t_test():
    vals = {0.0: [1.0, 1.2, 1.7], 1.0: [1.1, 1.5, 1.75]}
    df = pd.DataFrame([{"state": "done", "repetitions": 1, "alpha": a, "seed": s, "m": v}
                       for a, vs in vals.items() for s, v in enumerate(vs)])
    d = SeedGrid(df, "m").diff(1, 1.0, 0.0)
    ref = stats.ttest_rel(vals[1.0], vals[0.0])
    diffs = np.subtract(vals[1.0], vals[0.0])
    assert d.paired and d.df == 2 and d.value == pytest.approx(diffs.mean())
    assert d.se == pytest.approx(diffs.std(ddof=1) / math.sqrt(3))
    assert d.p == pytest.approx(ref.pvalue)


def test_pooled_noise_and_a_one_seed_cell_compared_with_it():
    rows = [(0.0, 0, 1.0), (0.0, 1, 1.2), (0.5, 0, 0.9), (0.5, 1, 1.0), (1.0, 0, 1.5)]  # α=1 has one seed
    df = pd.DataFrame([{"state": "done", "repetitions": 4, "alpha": a, "seed": s, "m": v} for a, s, v in rows])
    g = SeedGrid(df, "m")
    # within-cell variances 0.02 and 0.005 on 1 df each -> run sd sqrt(0.0125)
    assert g.noise.run_df == 2 and g.noise.run_sd == pytest.approx(math.sqrt(0.0125))
    # additive model: 5 runs, 3 α + 1 seed effect -> 1 residual df; the paired differences 0.2 and 0.1
    # the paired differences 0.1 and 0.2: residual sd sqrt(((0.1 - 0.15)^2 + (0.2 - 0.15)^2) / 2)
    assert g.noise.pair_df == 1 and g.noise.pair_sd == pytest.approx(0.05)
    d = g.diff(4, 1.0, 0.5)  # the one-seed cell is compared through the seed model, never as noise-free
    assert d.paired and d.n == 1 and math.isfinite(d.se) and d.se > g.diff(4, 0.0, 0.5).se
    # seed-adjusted means: α=0.5's mean over seeds 0, 1; α=1 at seed 0 lifted by half the seed effect
    assert g.mean(4, 0.5) == pytest.approx(0.95)
    assert g.mean(4, 1.0) == pytest.approx(1.5 + 0.15 / 2)


def test_holm_steps_down():
    assert holm([0.001, 0.02, 0.04], 0.05) == [True, True, True]  # 0.001<0.05/3, 0.02<0.05/2, 0.04<0.05
    assert holm([0.001, 0.03, 0.04], 0.05) == [True, False, False]  # 0.03 > 0.025 stops it
    assert holm([0.2, 0.01], 0.05) == [False, True]


def test_gain_verdicts_and_seeds_to_resolve():
    sure = Diff(0.10, 0.02, 40, True, 3)
    assert gain_verdict([sure, sure]) == (HOLDS, 0)
    assert gain_verdict([sure, Diff(-0.10, 0.02, 40, True, 3)])[0] == FAILS
    verdict, need = gain_verdict([sure, Diff(0.02, 0.02, 40, True, 3)])
    # z(0.05 / 2 / 2) = 2.241: n = 3 * (2.241 * 0.02 / 0.02)^2 = 15.07 -> 16
    assert verdict == UNRESOLVED and need == 16


def test_one_seed_everywhere_resolves_nothing():
    df = grid(planted(0.2), seeds=1, noise=0.0)
    g = SeedGrid(df, "val/ar_bpb")
    assert not g.noise.known
    t = g.best_table()
    assert list(t["best_alpha"]) == [15 / 16, 3 / 4, 1 / 4, 1 / 16]  # the means still point at the best
    assert not t["resolved"].any()


# ----------------------------------------------------------------------------- planted effects, known noise
def test_a_lead_of_three_noise_sds_is_found_and_resolved():
    """Three seeds, independent noise σ = 0.02 per run (the hardest case for pairing), best α ahead of the
    runner-up by 3σ. The runner-up's paired difference is 3σ / (σ·√(2/3)) = 3.67 standard errors; Holm tests
    it last, at 5%, so it is resolved with probability P(t_48 > 2.01 - 3.67) ≈ 0.95 per R."""
    rng = np.random.default_rng(7)
    found = resolved = 0
    trials = 60
    for _ in range(trials):
        t = SeedGrid(grid(planted(0.06), seeds=3, noise=0.02, rng=rng), "val/ar_bpb").best_table()
        found += int((t["best_alpha"].to_numpy() == [15 / 16, 3 / 4, 1 / 4, 1 / 16]).sum())
        resolved += int(t["resolved"].sum())
    assert found == 4 * trials  # the right α at every R
    assert resolved / (4 * trials) >= 0.88  # expected ≈ 0.95


def test_shared_seed_effects_cancel_in_the_paired_comparison():
    """A seed effect 5x the independent noise, shared by every α at one seed: pairing removes it."""
    rng = np.random.default_rng(3)
    df = grid(planted(0.06), seeds=3, noise=0.02, seed_sd=0.1, rng=rng)
    g = SeedGrid(df, "val/ar_bpb")
    assert g.noise.run_sd > 0.06 and g.noise.pair_sd == pytest.approx(0.02, rel=0.3)
    assert g.best_table()["resolved"].all()


def test_no_effect_is_unresolved():
    """Every α equal: 'resolved' needs all six comparisons significant, which a family-wise 5% test allows
    in at most 5% of the R levels."""
    rng = np.random.default_rng(11)
    resolved = 0
    trials = 60
    for _ in range(trials):
        resolved += int(SeedGrid(grid(lambda r, a: 2.0, seeds=3, noise=0.02, rng=rng), "val/ar_bpb")
                        .best_table()["resolved"].sum())
    assert resolved / (4 * trials) <= 0.05


# ----------------------------------------------------------------------------- the report's verdicts
def two_targets(lead_ar, lead_md, noise, seeds=3, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    ar = grid(planted(lead_ar), seeds=seeds, noise=noise, rng=rng)
    md = grid(planted(lead_md), seeds=seeds, noise=noise, rng=rng, metric="val/md_bpb")
    ar["val/md_bpb"] = md["val/md_bpb"].to_numpy() + ar["repetitions"].map({1: 0, 4: 0, 16: 0.1, 64: 0.2})
    ar["val/ar_bpb"] += ar["repetitions"].map({1: 0, 4: 0.1, 16: 0.4, 64: 0.9}) * (ar["alpha"] == 1.0)
    return ar


def test_checks_hold_beyond_noise_and_are_unresolved_in_it(tmp_path):
    clear = by_name(paper_checks(two_targets(0.06, 0.06, noise=0.005)))
    assert {c: clear[c]["verdict"] for c in clear} == {"F1": HOLDS, "F2": HOLDS, "F3": HOLDS, "F4": HOLDS}
    noisy = by_name(paper_checks(two_targets(0.06, 0.06, noise=0.2)))
    assert noisy["F1"]["holds"] is True and noisy["F1"]["verdict"] == UNRESOLVED  # the means alone agree ...
    ev = noisy["F1"]["targets"]["ar"]
    assert ev["seeds_to_resolve"] > 3 and "seeds per cell would resolve it" in ev["evidence"]  # ... noise doesn't
    frame = checks_frame(list(noisy.values()))
    assert list(frame.columns) == ["check", "metric", "verdict", "evidence"]
    assert set(frame["verdict"]) <= {HOLDS, FAILS, UNRESOLVED, "no signal", "not computable"}
    assert frame[frame["check"] == "F3"]["metric"].iloc[0] == "val/ar_bpb~val/md_bpb"


def test_a_finding_fails_only_beyond_noise():
    df = two_targets(0.06, 0.06, noise=0.005)
    df.loc[(df["repetitions"] == 16) & (df["alpha"] == 1.0), "val/ar_bpb"] = 1.9  # pure AR best at R=16
    c = by_name(paper_checks(df))
    assert c["F1"]["verdict"] == FAILS and c["F1"]["targets"]["ar"]["verdict"] == FAILS
    t2 = table2(df, "val/ar_bpb")
    assert t2.loc[16, "beyond noise"] == FAILS and t2.loc[1, "beyond noise"] == HOLDS
    assert t2.loc[16, "gain vs AR se"] == pytest.approx(SeedGrid(df, "val/ar_bpb").diff(16, 1 / 4, 1.0).se)


def by_name(checks):
    return {c["name"]: c for c in checks}


# ----------------------------------------------------------------------------- the GP knows the noise
def test_the_gp_noise_floor_is_the_lower_confidence_limit_of_the_seed_variance():
    from dualobj.stats.gp import noise_floor

    df = grid(planted(0.06), seeds=3, noise=0.02, rng=np.random.default_rng(5))
    g = SeedGrid(df, "val/ar_bpb")
    y = df["val/ar_bpb"].to_numpy()
    low = g.noise.run_sd ** 2 * g.noise.run_df / stats.chi2.isf(0.05, g.noise.run_df)  # 56 df
    assert g.noise.run_df == 56 and noise_floor(df, "val/ar_bpb", y) == pytest.approx(low / np.var(y))
    assert noise_floor(grid(planted(0.06), seeds=1), "val/ar_bpb", y) is None  # no replicate: no floor


@pytest.mark.slow
def test_the_gp_is_calibrated_on_three_seed_grids():
    """Leave one cell out: the GP fitted on the other 27 cells' runs predicts the left-out cell's mean. On
    smooth surfaces with known noise, the 90% intervals of four grids (112 cells) hold the left-out mean in
    about 90% of cells (binomial sd of the share: 0.028); no interval is narrower than the seed noise of a
    3-seed mean allows."""
    from dualobj.stats.gp import loo_cell_coverage

    smooth = lambda r, a: 2.0 + 0.3 * (a - 1 / (1 + math.log2(r))) ** 2 + 0.05 * math.log2(r)  # noqa: E731
    covs = [loo_cell_coverage(grid(smooth, seeds=3, noise=0.02, rng=np.random.default_rng(k)), "val/ar_bpb",
                              n_restarts=1) for k in range(4)]
    assert all(len(c) == 28 and (c["n_seeds"] == 3).all() for c in covs)
    assert 0.85 <= np.mean([c.attrs["coverage"] for c in covs]) <= 0.97
    assert min(c["half_width"].min() for c in covs) >= 0.7 * 1.645 * 0.02 / math.sqrt(3)


def test_grid_stats_reads_a_record_and_writes_the_verdicts(tmp_path):
    """bench/grid_stats.py on a recorded grid (bench/record_grid.py's format): the tables ± se, the best α
    per R, the verdicts and the GP's calibration, with best_alpha.csv and checks.csv."""
    import json

    from conftest import bench_module

    rng = np.random.default_rng(1)
    cells = [{"run_id": f"r{i}", "model": "tiny", "R": r, "alpha": a, "seed": s,
              "metrics": {"val/ar_bpb": planted(0.06)(r, a) + rng.normal(0, 0.005),
                          "val/md_bpb": planted(0.06)(r, a) + 0.1 + rng.normal(0, 0.005)}}
             for i, (r, a, s) in enumerate((r, a, s) for r in LEVELS for a in ALPHAS for s in range(2))]
    record = tmp_path / "grid.json"
    record.write_text(json.dumps({"source": "synthetic", "cells": cells}))
    text = bench_module("grid_stats").report(record, tmp_path / "out")
    assert "56 runs, 28 cells, 2 seed(s) per cell" in text and "| 1 | 15/16 | 2.00" in text
    best = pd.read_csv(tmp_path / "out" / "best_alpha.csv")
    assert list(best["best_alpha"][:4]) == [15 / 16, 3 / 4, 1 / 4, 1 / 16] and best["resolved"].all()
    checks = pd.read_csv(tmp_path / "out" / "checks.csv")
    assert list(checks.columns) == ["check", "metric", "verdict", "evidence"] and len(checks) == 6
    assert "### GP calibration" in text
