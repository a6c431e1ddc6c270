"""Does the best α transfer across sizes: the rule fit (dualobj/stats/rule.py) on exact and planted answers,
the report's section on a synthetic folder of three sizes (dualobj/report/transfer.py), and sweep variants."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dualobj.errors import ConfigError
from dualobj.report import write_report
from dualobj.stats.rule import Points, SizeBest, fit_rule, leave_one_size_out, predict, rule_draws
from dualobj.sweep import load_spec
from dualobj.sweep.spec import cell_overrides

ROOT = Path(__file__).resolve().parents[1]
SHARES = [0, 1 / 32, 1 / 16, 3 / 32, 1 / 8, 3 / 16, 1 / 4, 5 / 16, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 15 / 16, 1]
SIZES = (1e5, 4e5, 8e5)
LEVELS = (1, 4, 16, 32, 64)


def exact_points(theta, sizes=SIZES, levels=LEVELS) -> Points:
    """The rule's own answers (capped at 1), with the censoring bounds of the SHARES grid."""
    rows = [(math.log2(r), math.log2(n / 1e6), float(predict(np.array(theta), r, n)), math.log2(1 / 64),
             math.log2(31 / 32)) for n in sizes for r in levels]
    return Points(*np.array(rows).T)


def test_fit_rule_recovers_exact_answers_with_censored_ends():
    theta = (0.5, -0.7, -0.4)
    p = exact_points(theta)
    assert (p.share == 1).sum() >= 3  # pure AR wins at low R: censored answers are part of the case
    got, identified = fit_rule(p)
    assert identified and np.allclose(got, theta, atol=1e-6)
    # an answer of 0 says "below the floor": a rule predicting well below it pays nothing, above it pays
    share = np.array([0.5, 0.25, 0.125, 0.0])  # log2: -1, -2, -3 at log2 R = 0, 2, 4: a = -1, b = -1/2
    p0 = Points(np.array([0.0, 2.0, 4.0, 6.0]), np.zeros(4), share, np.full(4, -3.5), np.full(4, 0.0))
    t0, ok = fit_rule(p0, size_term=False)  # the line gives -4 at log2 R = 6, below the floor -3.5: no penalty
    assert ok and np.allclose(t0, [-1.0, -0.5, 0.0], atol=1e-6)
    t1, _ = fit_rule(Points(p0.log_r, p0.log_n, share, np.full(4, -5.0), p0.ceiling), size_term=False)
    assert t1[1] < -0.5 - 0.01  # -4 is above the floor -5: the answer 0 pulls the line down


def test_fit_rule_says_when_interior_answers_cannot_identify_it():
    p = Points(np.array([0.0, 2.0, 4.0, 6.0]), np.zeros(4), np.array([1.0, 1.0, 0.0, 0.0]), np.full(4, -5.0),
               np.full(4, -0.05))
    theta, identified = fit_rule(p, size_term=False)
    assert not identified
    pred = p.design @ theta  # still a rule on the right side of every censored answer
    assert pred[0] >= -0.05 - 1e-6 and pred[1] >= -0.05 - 1e-6 and pred[2] <= -5 + 1e-6 and pred[3] <= -5 + 1e-6


def size_best(model, n, best, means, draws) -> SizeBest:
    levels = np.array([1.0, 16.0])
    return SizeBest(model, n, levels, [np.array([0.5, 1.0])] * 2, [np.array(m) for m in means], np.array(best),
                    np.array(draws, float), np.array([4, 4]))


def test_leave_one_size_out_cost_is_the_posterior_gap_at_the_prediction():
    # sizes agree on 1 at R=1 and 1/2 at R=16, except the last, whose best at R=16 is 1 (worse by 0.03 at 1/2)
    a = size_best("a", 1e5, [1.0, 0.5], [[2.1, 2.0], [2.5, 2.6]], [[1.0, 0.5]])
    b = size_best("b", 4e5, [1.0, 0.5], [[2.1, 2.0], [2.4, 2.5]], [[1.0, 0.5]])
    c = size_best("c", 8e5, [1.0, 1.0], [[2.0, 1.9], [2.33, 2.30]], [[1.0, 1.0]])
    rows = leave_one_size_out([a, b, c], size_term=False)
    assert [r["model"] for r in rows] == ["a", "b", "c"]
    assert rows[2]["predicted"][1] == pytest.approx(0.5)  # fitted to a and b: 1/2 at R=16
    assert rows[2]["cost"].tolist() == pytest.approx([0.0, 0.03])
    assert rows[2]["mean_cost"] == pytest.approx(0.015) and rows[2]["max_cost"] == pytest.approx(0.03)


# ----------------------------------------------------------------------------- a planted rule in a folder
def make_run(root: Path, name: str, *, model: str, n: float, R: float, alpha: float, seed: int, value: float):
    d = root / model / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        f"# dualobj 0.1.0\nrun_id: {name}\nmodel:\n  name: {model}\n  vocab_size: 512\n  d_model: 32\n"
        f"data:\n  source: wiki\n  repetitions: {R}\nobjective:\n  alpha: {alpha}\n  ar_loss_scale: 1.0\n"
        f"train:\n  tokens: 100000\n  batch_size: 8\nlogger:\n  kind: local\nseed: {seed}\nout: null\n")
    (d / "status.json").write_text(json.dumps({"state": "done", "step": 10, "total_steps": 10, "attempts": 1,
                                               "heartbeat": 1.0e9, "run_id": name, "error": None}))
    (d / "summary.json").write_text(json.dumps({
        "run_id": name, "model": model, "alpha": alpha, "repetitions": R, "seed": seed, "ar_share": alpha,
        "params_non_embedding": n, "tokens_seen": 100000, "val/ar_bpb": value, "val/ar_nll": value * 2,
        "val/md_elbo": value * 2 + 0.1}))


def planted_folder(root: Path, theta, noise: float = 0.003) -> Path:
    """Three sizes x five R x the SHARES grid x two seeds; val/ar_bpb = a bowl around the planted rule's best
    share, plus seed noise."""
    rng = np.random.default_rng(0)
    k = 0
    for n in SIZES:
        model = f"m{int(n / 1000)}k"
        for r in LEVELS:
            best = float(predict(np.array(theta), r, n))
            for a in SHARES:
                for seed in (0, 1):
                    value = 2 + 0.05 * math.log2(r) + 3 * (a - best) ** 2 + rng.normal(0, noise)
                    make_run(root, f"{k:06x}", model=model, n=n, R=r, alpha=a, seed=seed, value=value)
                    k += 1
    return root


@pytest.mark.slow
@pytest.mark.parametrize("theta", [(0.5, -0.7, -0.4), (0.5, -0.7, 0.0)])
def test_report_recovers_a_planted_rule_within_its_intervals(tmp_path, theta):
    folder = planted_folder(tmp_path / "sweep", theta)
    files = write_report(folder, metrics=["val/ar_bpb"], formats=["md", "csv"])
    rule = pd.read_csv(folder / "report" / "alpha_rule.csv")
    fit = rule[rule["form"] == "with size"].set_index("coefficient")
    for name, planted in zip("abc", theta, strict=True):
        assert fit.loc[name, "lo"] <= planted <= fit.loc[name, "hi"], (name, fit.loc[name].to_dict())
        assert fit.loc[name, "hi"] - fit.loc[name, "lo"] < 0.6  # an interval that says something
    assert bool(fit["identified"].all())
    best = pd.read_csv(folder / "report" / "alpha_best.csv")
    assert len(best) == 15
    assert (best["lo"] <= best["best_ar_share"]).all() and (best["best_ar_share"] <= best["hi"]).all()
    assert set(best.loc[best["R"] == 1, "best_ar_share"]) == {1.0}  # pure AR wins at R = 1 at every size
    loso = pd.read_csv(folder / "report" / "alpha_loso.csv")
    assert list(loso["left_out"]) == ["m100k", "m400k", "m800k"] and (loso["max_cost"] >= 0).all()
    text = files.markdown
    assert "## Does the best α transfer?" in text and (folder / "report" / "alpha_rule.png").is_file()
    if theta[2] == 0:
        assert "**c is within seed noise of 0**" in text
    else:
        assert fit.loc["c", "hi"] < 0 and "**The best AR share depends on size**" in text
        assert loso["mean_cost"].sum() < loso["size_blind_mean_cost"].sum()  # the size term earns its place
        assert "the size term carries over to a size it has not seen" in text


def test_rule_draws_interval_holds_the_fit_to_the_recommendations():
    sizes = [size_best(m, n, [1.0, 0.5], [[2.1, 2.0], [2.5, 2.6]], [[1.0, 0.5], [1.0, 1.0], [1.0, 0.5]])
             for m, n in (("a", 1e5), ("b", 8e5))]
    fit = rule_draws(sizes, size_term=False)
    lo, hi = fit.interval()
    assert len(fit.draws) == 3 and fit.n_points == 4 and fit.n_sizes == 2
    assert fit.draws[:, 2].tolist() == [0, 0, 0]  # size-blind: c is 0 in every draw
    assert np.all(lo <= fit.theta + 1e-9) and np.all(fit.theta - 1e-9 <= hi)
    assert np.all(lo <= fit.median) and np.all(fit.median <= hi)


def test_report_has_no_transfer_section_for_one_size(tmp_path):
    folder = tmp_path / "one"
    for k, (r, a) in enumerate([(r, a) for r in (1, 16) for a in (0, 0.5, 1)]):
        make_run(folder, f"{k:06x}", model="tiny", n=8e5, R=r, alpha=a, seed=0, value=2 + (a - 0.5) ** 2 + r / 100)
    text = write_report(folder, metrics=["val/ar_bpb"], formats=["md"], plots=False).markdown
    assert "Does the best α transfer" not in text and not (folder / "report" / "alpha_rule.csv").exists()


# ----------------------------------------------------------------------------- sweep variants
def test_transfer_sweep_file_holds_three_sizes_spanning_8x_at_one_tokens_per_parameter():
    from dualobj import config as C
    from dualobj.budget import param_counts

    spec = load_spec(ROOT / "sweeps" / "transfer.yaml")
    assert list(spec.variants) == ["nano", "micro", "tiny"] and spec.search.conditions[:2] == [1, 4]
    ratios, params = [], []
    for overrides in spec.variants.values():
        cfg = C.load([*spec.fixed, *overrides])
        n = param_counts(cfg.model)[1]
        steps = cfg.train.tokens // (cfg.train.batch_size * cfg.model.seq_len)
        params.append(n)
        ratios.append(steps * cfg.train.batch_size * cfg.model.seq_len / n)
        assert 120 <= steps <= 128
    assert params[-1] / params[0] >= 8
    assert max(ratios) / min(ratios) < 1.01  # the same tokens per non-embedding parameter


def write_spec(tmp_path, body: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(body)
    return p


def test_grid_variants_multiply_the_cells(tmp_path):
    spec = load_spec(write_spec(tmp_path, "name: v\nfixed: [train.tokens=4096]\nvariants:\n  a: [model=tiny]\n"
                                          "  b: {model: small, train.batch_size: 4}\naxes:\n"
                                          "  objective.alpha: [0, 1]\n"))
    cells = cell_overrides(spec)
    assert cells == [["train.tokens=4096", "model=tiny", "objective.alpha=0"],
                     ["train.tokens=4096", "model=tiny", "objective.alpha=1"],
                     ["train.tokens=4096", "model=small", "train.batch_size=4", "objective.alpha=0"],
                     ["train.tokens=4096", "model=small", "train.batch_size=4", "objective.alpha=1"]]


@pytest.mark.parametrize(("body", "message"), [
    ("variants: [model=tiny]", "'variants' must map names to overrides"),
    ("variants: {'a b': [model=tiny]}", "variant name 'a b' must be a simple name"),
    ("variants: {a: [model]}", "variant 'a' must be a list of key=value overrides"),
    ("variants: {a: [hydra.run.dir=x]}", "may not be set by a sweep file"),
    ("variants: {a: [objective.alpha=0.5]}\nsearch: {metric: val/ar_bpb, values: [0, 1], "
     "conditions: {data.repetitions: [1]}, budget: 4}", "'fixed' or 'variants' set ['objective.alpha']"),
])
def test_bad_variants_are_one_line_errors(tmp_path, body, message):
    with pytest.raises(ConfigError, match=None) as e:
        load_spec(write_spec(tmp_path, f"name: v\naxes: {{objective.alpha: [0]}}\n{body}\n"
                             if "search" not in body else f"name: v\n{body}\n"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_search_variants_dry_run_plans_one_search_per_variant(tmp_path, capsys):
    from dualobj.sweep import run_sweep

    spec = load_spec(write_spec(tmp_path, "name: v\nfixed: [train.tokens=8192]\nvariants:\n"
                                          "  a: [model=nano, train.batch_size=4]\n  b: [model=tiny]\n"
                                          "search: {metric: val/ar_bpb, values: [0, 1/2, 1], "
                                          "conditions: {data.repetitions: [1, 4]}, initial: [1], budget: 6}\n"
                                          "throughput: {nano: 1000, tiny: 500}\nlauncher: {name: joblib, jobs: 2}\n"))
    said, tables = [], []
    run_sweep(spec, tmp_path / "out", [], dry_run=True, say=said.append, show=lambda x: None,
              plan_table=lambda cells, where: tables.append((len(cells), where)))
    text = "\n".join(said)
    assert "variant a (model=nano train.batch_size=4)" in text and "variant b (model=tiny)" in text
    assert tables == [(2, tmp_path / "out" / "a"), (2, tmp_path / "out" / "b")]  # each plan names its own folder
    # nano: 8192 tokens at 1000 tokens/s + 15 s, 3 rounds of 2 -> 69.6 s at most; tiny: 16.4 + 15 s -> 94.2 s
    assert "takes at most ~1m09s (training, and ~15 s a run to start and validate)" in text
    assert "takes at most ~1m34s (training" in text
    assert "2 searches, one after the other: at most ~2m43s in all" in text
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_recorded_transfer_grid_gives_the_readme_answers(tmp_path):
    """bench/data/transfer_grid.json (sweeps/transfer.yaml's 120 runs) through bench/transfer_fit.py: the best
    shares, the size term and the leave-one-size-out verdict the README quotes."""
    from conftest import bench_module

    body = bench_module("transfer_fit").report(ROOT / "bench" / "data" / "transfer_grid.json", out=tmp_path)
    assert "| nano | 97.6k | 1 [13/16, 1] (7) | 1 [3/4, 1] (9) | 7/8 [11/16, 7/8] (9) | 5/8 [5/8, 3/4] (6) | " \
           "9/16 [1/2, 5/8] (9) |" in body
    assert "| tiny | 804k | 1 [15/16, 1] (5) | 1 [1, 1] (5) | 5/8 [1/2, 11/16] (12) | 5/16 [1/4, 3/8] (13) | " \
           "0 [0, 0] (5) |" in body
    rule = pd.read_csv(tmp_path / "alpha_rule.csv").set_index(["form", "coefficient"])
    c = rule.loc[("with size", "c")]
    assert c["hi"] < 0 and c["estimate"] == pytest.approx(-0.47, abs=0.01)
    assert "the size-blind rule costs no more than the rule with the size term (summed mean cost 0.1267 against " \
           "0.1690)" in body
