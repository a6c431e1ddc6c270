"""The results report on hand-made run directories (no training, no torch): 3 R × 4 α with damage."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from dualobj.errors import RunDirError
from dualobj.fmt import format_alpha
from dualobj.report import (
    cells_frame,
    find_run_dirs,
    load_curves,
    load_runs,
    pivot,
    plot_curves,
    plot_heatmap,
    plot_vs_alpha,
    status_counts,
    status_line,
    to_csv,
    to_latex,
    to_markdown,
    write_report,
)
from dualobj.report.tables import SIGN_CONVENTION, legend

PNG = b"\x89PNG\r\n\x1a\n"
ALPHAS = [0.0, 0.25, 0.5, 1.0]

# val/ar_nll per (R, α): a list = one value per seed; "failed"/"corrupt" = such a run; absent = no run.
GRID = {
    (1, 0.0): [3.50], (1, 0.25): [3.30], (1, 0.5): [3.20], (1, 1.0): [3.00],
    (4, 0.0): [3.40], (4, 0.25): [3.05, 3.15], (4, 0.5): "failed", (4, 1.0): [3.60],
    (16, 0.25): "corrupt", (16, 0.5): [3.25], (16, 1.0): [3.90, 4.10],
}


def make_run(root: Path, name: str, *, R, alpha, seed=0, state="done", nll=None, model="tiny",
             summary=True, status=True, metrics=None) -> Path:
    """A run directory as `dualobj train` leaves it; ``summary="corrupt"`` writes a damaged summary.json."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        f"# dualobj 0.1.0\nrun_id: {name}\nmodel:\n  name: {model}\n  vocab_size: 512\n  d_model: 32\n"
        f"data:\n  source: wiki\n  repetitions: {R}\nobjective:\n  alpha: {alpha}\n  ar_loss_scale: 1.0\n"
        f"train:\n  tokens: 100000\n  batch_size: 8\nlogger:\n  kind: local\nseed: {seed}\nout: null\n")
    if status:
        (d / "status.json").write_text(json.dumps({
            "state": state, "step": 10, "total_steps": 10, "attempts": 1, "heartbeat": 1.0e9, "run_id": name,
            "error": "RuntimeError: loss is nan" if state == "failed" else None}))
    if summary == "corrupt":
        (d / "summary.json").write_text('{"run_id": "' + name + '", "val/ar_nll": 3.')
    elif summary and state == "done":
        (d / "summary.json").write_text(json.dumps({
            "run_id": name, "model": model, "alpha": alpha, "repetitions": R, "seed": seed,
            "tokens_seen": 100000, "epochs": float(R), "val/ar_nll": nll, "val/md_elbo": nll + 1.0,
            "eval/avg/ar": nll / 10, "precision": "fp32", "flag": True}))
    if metrics is not None:
        (d / "metrics.jsonl").write_text(metrics)
    return d


def curve(nlls: list[float], tail: str = "") -> str:
    lines = []
    for i, v in enumerate(nlls, 1):
        lines.append(json.dumps({"step": 5 * i, "tokens_seen": 1000 * i, "epochs": 0.5 * i, "train/loss": v + 0.1}))
        lines.append(json.dumps({"step": 5 * i, "tokens_seen": 1000 * i, "epochs": 0.5 * i, "train/loss": v,
                                 "val/ar_nll": v, "val/md_elbo": v + 1}))
    return "\n".join(lines) + "\n" + tail


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    k = 0
    for (R, a), cell in GRID.items():
        base = root / "deep" / "er" if R == 16 else root  # run dirs at any depth
        if cell == "failed":
            make_run(base, f"run{k:02d}", R=R, alpha=a, state="failed")
            k += 1
        elif cell == "corrupt":
            make_run(base, f"run{k:02d}", R=R, alpha=a, state="done", summary="corrupt")
            k += 1
        else:
            for seed, v in enumerate(cell):
                metrics = curve([v + 0.3, v, v + 0.2]) if R == 4 or (R, a) == (1, 1.0) else None
                if (R, a) == (1, 1.0):
                    metrics = curve([v + 0.3, v, v + 0.2], tail='{"step": 20, "tokens_seen": 4000, "val/ar_nll": 3.')
                make_run(base, f"run{k:02d}", R=R, alpha=a, seed=seed, nll=v, metrics=metrics)
                k += 1
    # a running second seed and a config-only (pending) third seed: neither counts in the table
    make_run(root, "running", R=1, alpha=0.5, seed=1, state="running")
    make_run(root, "pending", R=1, alpha=0.0, seed=2, status=False, summary=False)
    # noise a sweep folder may hold: hidden hydra dirs, checkpoints inside a run dir
    (root / ".hydra").mkdir()
    (root / ".hydra" / "config.yaml").write_text("a: 1\n")
    (root / "run00" / "checkpoints" / "step_0000010").mkdir(parents=True)
    return root


def test_load_runs_rows_states_and_columns(sweep):
    df = load_runs(sweep)
    assert len(df) == 15
    # the "running" run holds no lock: no live process trains it, so it is dead (dualobj.run.run_info)
    assert status_counts(df) == {"done": 11, "failed": 1, "running": 0, "pending": 1, "dead": 1, "damaged": 1}
    assert status_line(df) == "15 runs: 11 done, 1 failed, 0 running, 1 pending, 1 dead, 1 damaged"
    assert list(df.columns[:8]) == ["run_id", "path", "state", "model", "alpha", "repetitions", "seed", "tokens"]
    assert {"val/ar_nll", "val/md_elbo", "eval/avg/ar", "tokens_seen", "epochs"} <= set(df.columns)
    assert "flag" not in df and "precision" not in df  # only numeric summary keys
    assert list(df["repetitions"]) == sorted(df["repetitions"])  # sorted by model, R, α, seed
    assert (df["tokens"] == 100000).all() and (df["model"] == "tiny").all()
    failed = df[df["state"] == "failed"].iloc[0]
    assert (failed["repetitions"], failed["alpha"]) == (4, 0.5)  # from config.yaml, no summary
    assert math.isnan(failed["val/ar_nll"]) and "nan" in failed["error"]
    damaged = df[df["state"] == "damaged"].iloc[0]
    assert (damaged["repetitions"], damaged["alpha"]) == (16, 0.25)
    assert math.isnan(damaged["val/ar_nll"]) and damaged["note"] == "summary.json is not valid JSON"
    assert df.loc[df["run_id"] == "pending", "state"].item() == "pending"
    dead = df[df["run_id"] == "running"].iloc[0]
    assert dead["state"] == "dead" and "no live process" in dead["note"]
    assert (dead["repetitions"], dead["alpha"], dead["seed"]) == (1, 0.5, 1)  # from config.yaml


def test_single_run_dir_and_empty_folder(sweep, tmp_path):
    assert len(find_run_dirs(sweep)) == 15
    one = load_runs(sweep / "run00")
    assert len(one) == 1 and one["state"].item() == "done" and one["val/ar_nll"].item() == 3.5
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (empty, tmp_path / "does-not-exist"):
        with pytest.raises(RunDirError) as e:
            load_runs(path)
        msg = str(e.value)
        assert "\n" not in msg
        assert msg in (f"no runs or sweep plan under {path}; run `dualobj sweep SWEEP.yaml` first, or give a "
                       "sweep folder or run directory",
                       f"{path} does not exist; give a sweep folder or run directory such as runs/smoke")


def test_pivot_numbers(sweep):
    p = pivot(load_runs(sweep), "val/ar_nll")
    assert p.lower_is_better and p.model == "tiny"
    assert list(p.mean.index) == [1, 4, 16] and p.alphas == ALPHAS
    assert p.mean.loc[4, 0.25] == pytest.approx(3.10)
    assert p.std.loc[4, 0.25] == pytest.approx(0.1 / math.sqrt(2))  # sample std of 3.05, 3.15
    assert p.n.loc[4, 0.25] == 2 and p.n.loc[16, 1.0] == 2 and p.n.loc[1, 0.5] == 1  # running seed excluded
    assert p.mean.loc[16, 1.0] == pytest.approx(4.0) and math.isnan(p.std.loc[1, 0.0])
    for cell in [(4, 0.5), (16, 0.25), (16, 0.0)]:  # failed, corrupt summary, missing
        assert math.isnan(p.mean.loc[cell]) and p.n.loc[cell] == 0
    assert p.states[(4, 0.5)] == ["failed"] and p.states[(16, 0.25)] == ["damaged"]
    b = p.best
    assert list(b["best α"]) == [1.0, 0.25, 0.5]
    assert list(b["best"]) == pytest.approx([3.00, 3.10, 3.25])
    # the best mix 0<α<1 and how much better it is than pure AR / pure MD (positive = the mix is better)
    assert list(b["best mix α"]) == [0.5, 0.25, 0.5]
    assert list(b["mix gain vs AR"]) == pytest.approx([-0.20, 0.50, 0.75])
    assert b.loc[1, "mix gain vs MD"] == pytest.approx(0.30) and b.loc[4, "mix gain vs MD"] == pytest.approx(0.30)
    assert math.isnan(b.loc[16, "mix gain vs MD"])  # α=0 missing at R=16
    assert list(p.table.columns) == ALPHAS + ["best α", "best", "best mix α", "mix gain vs AR", "mix gain vs MD"]


def test_higher_is_better_and_unknown_metric(sweep):
    df = load_runs(sweep)
    p = pivot(df, "eval/avg/ar")  # accuracy-like: nll / 10, so the max sits where the NLL is worst
    assert not p.lower_is_better
    assert list(p.best["best α"]) == [0.0, 1.0, 1.0]
    assert p.best.loc[1, "best"] == pytest.approx(0.35)
    assert p.best.loc[1, "best mix α"] == 0.25 and p.best.loc[1, "mix gain vs AR"] == pytest.approx(0.03)
    forced = pivot(df, "val/ar_nll", lower_is_better=False)
    assert list(forced.best["best α"]) == [0.0, 1.0, 1.0]
    nothing = pivot(df, "val/not_logged")
    assert nothing.mean.isna().all().all() and nothing.best["best α"].isna().all()


def test_exports(sweep, tmp_path):
    p = pivot(load_runs(sweep), "val/ar_nll")
    md = to_markdown(p)
    # every cell ± the pooled seed noise (two 2-seed cells: variances 0.005 and 0.02 -> sd 0.1118) / √seeds
    assert "**3.0000 ± 0.1118**" in md and "**3.1000 ± 0.0791**" in md and "**3.2500 ± 0.1118**" in md
    assert md.count("**") == 6  # one bold cell per row
    assert "failed" in md and "damaged" in md
    assert md.splitlines()[0] == ("| R \\ α | 0 | 1/4 | 1/2 | 1 | best α | best | best mix α | mix gain vs AR | "
                                  "mix gain vs MD |")
    assert ("| 1 | 3.5000 ± 0.1118 | 3.3000 ± 0.1118 | 3.2000 ± 0.1118 | **3.0000 ± 0.1118** | 1 | 3.0000 | 1/2 | "
            "-0.2000 | +0.3000 |") in md
    tex = to_latex(p)
    assert r"\textbf{3.1000 $\pm$ 0.0791}" in tex and tex.count(r"\textbf") == 3
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex
    back = pd.read_csv(to_csv(p, tmp_path / "t.csv"), index_col=0)
    assert back.shape == (3, 4 + 5)
    assert list(back.index) == [1, 4, 16]
    assert back.loc[4, "0.25"] == pytest.approx(3.10) and math.isnan(back.loc[4, "0.5"])
    assert list(back["best α"]) == [1.0, 0.25, 0.5]
    cells = cells_frame(p)
    assert len(cells) == 12 and cells["best"].sum() == 3
    row = cells[(cells["R"] == 4) & (cells["alpha"] == 0.25)].iloc[0]
    assert (row["n"], row["mean"]) == (2, pytest.approx(3.10))
    assert row["seed_se"] == pytest.approx(0.1118 / 2 ** 0.5, abs=1e-4)


def test_curves_skip_truncated_lines(sweep):
    c = load_curves(sweep)
    r1 = c[c["run_id"] == "run03"]  # R=1, α=1, whose metrics.jsonl ends in a cut line
    assert len(r1) == 3 and list(r1["step"]) == [5, 10, 15]
    assert list(r1["val/ar_nll"]) == pytest.approx([3.3, 3.0, 3.2])
    assert {"tokens_seen", "epochs", "val/md_elbo", "alpha", "repetitions", "seed"} <= set(c.columns)
    assert "train/loss" not in c
    assert len(c) == 3 * (1 + 4)  # run03 + the four done runs at R=4
    assert set(c["repetitions"]) == {1.0, 4.0}


def _is_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG


def test_plots(sweep, tmp_path):
    df, c = load_runs(sweep), load_curves(sweep)
    assert _is_png(plot_vs_alpha(df, tmp_path / "a.png", "val/ar_nll"))
    assert _is_png(plot_heatmap(df, tmp_path / "h.png", "eval/avg/ar"))
    assert _is_png(plot_curves(c, tmp_path / "c.png", "val/ar_nll"))
    assert _is_png(plot_curves(c.iloc[0:0], tmp_path / "empty.png", "val/ar_nll"))  # nothing to draw


def test_write_report(sweep, tmp_path):
    files = write_report(sweep, metrics=None, formats=["md", "csv", "tex"], out_dir=None)
    out = sweep / "report"
    assert all(Path(f).parent == out and Path(f).exists() for f in files)
    names = {Path(f).name for f in files}
    assert {"report.md", "tiny_val_ar_nll.csv", "tiny_val_md_elbo.tex", "tiny_val_ar_nll_heatmap.png",
            "tiny_val_ar_nll_vs_alpha.png", "tiny_val_md_elbo_curves.png", "tiny_eval_avg_ar.md"} <= names
    assert "tiny_eval_avg_md.md" not in names  # eval/avg/md is in no summary
    assert all(_is_png(Path(f)) for f in files if str(f).endswith(".png"))
    text = files.markdown
    assert "15 runs: 11 done, 1 failed, 0 running, 1 pending, 1 dead, 1 damaged" in text
    assert "## tiny — val/ar_nll (lower is better)" in text and "eval/avg/ar (higher is better)" in text
    assert "**3.1000 ± 0.0791**" in text and "RuntimeError: loss is nan" in text
    assert (out / "report.md").read_text() == text
    assert load_runs(sweep).shape[0] == 15  # the report folder is not mistaken for a run

    only = write_report(sweep, metrics=["val/md_elbo"], formats=["csv"], out_dir=tmp_path / "r", plots=False)
    assert sorted(Path(f).name for f in only) == ["best_alpha.csv", "checks.csv", "tiny_val_md_elbo.csv",
                                                  "tiny_val_md_elbo_cells.csv"]  # the analysis of the target asked
    assert only.markdown.count("## tiny") == 1
    with pytest.raises(Exception, match="val/typo"):
        write_report(sweep, metrics=["val/typo"], formats=["md"], out_dir=tmp_path / "x")
    with pytest.raises(Exception, match="unknown report format"):
        write_report(sweep, formats=["pdf"], out_dir=tmp_path / "x")


def test_two_models_damaged_status_and_tiny_alphas(tmp_path):
    root = tmp_path / "s"
    make_run(root, "a", R=2, alpha=1 / 256, nll=3.0, model="small")
    make_run(root, "b", R=2, alpha=0.0, nll=3.2, model="small")
    make_run(root, "c", R=2, alpha=1.0, nll=2.5, model="tiny")
    d = make_run(root, "d", R=2, alpha=0.5, state="running", model="tiny", metrics="")
    (d / "status.json").write_text("{not json")
    df = load_runs(root)
    d_row = df.set_index("run_id").loc["d"]
    assert d_row["state"] == "damaged" and "status.json is damaged" in d_row["note"]
    with pytest.raises(Exception, match="several model sizes"):
        pivot(df, "val/ar_nll")
    p = pivot(df, "val/ar_nll", model="small")
    assert p.alphas == [0.0, 1 / 256] and p.best.loc[2, "best α"] == 1 / 256 and "mix gain vs AR" not in p.best
    assert "| R \\ α | 0 | 1/256 | best α | best | best mix α | mix gain vs MD |" in to_markdown(p)
    files = write_report(root, formats=["md"], out_dir=tmp_path / "out", plots=False)
    assert {"small_val_ar_nll.md", "tiny_val_ar_nll.md"} <= {Path(f).name for f in files}
    assert "1 damaged" in files.markdown and "1 unknown" not in files.markdown and "- unknown" not in files.markdown


def test_a_run_whose_lock_is_held_is_running(tmp_path):
    from dualobj.run import RunDir

    d = make_run(tmp_path / "s", "live", R=2, alpha=0.5, state="running")
    with RunDir(d).lock():
        row = load_runs(d).iloc[0]
        assert row["state"] == "running" and row["note"] is None
    assert load_runs(d)["state"].item() == "dead"


def test_format_alpha_uses_the_papers_fractions():
    assert [format_alpha(a) for a in (0, 1 / 256, 1 / 8, 0.25, 0.5, 0.75, 15 / 16, 63 / 64, 255 / 256, 1)] == [
        "0", "1/256", "1/8", "1/4", "1/2", "3/4", "15/16", "63/64", "255/256", "1"]
    assert format_alpha(0.3) == "0.3" and format_alpha(1 / 3) == "0.333333"


def test_the_header_states_one_sign_convention(sweep, tmp_path):
    text = write_report(sweep, formats=["md"], out_dir=tmp_path / "r", plots=False).markdown
    assert text.splitlines()[4] == SIGN_CONVENTION
    assert "Sign convention: every gain is positive when the run named is better" in SIGN_CONVENTION
    assert ("best mix α: the best 0<α<1; mix gain vs AR / MD: how much better it is than α=1 / α=0 "
            "(positive = the mix is better)") in text
    assert "Δ" not in text


def test_report_into_an_existing_file_is_refused(sweep, tmp_path):
    f = tmp_path / "taken.md"
    f.write_text("x")
    with pytest.raises(RunDirError, match=r"report folder .*taken.md is a file; give --out a folder"):
        write_report(sweep, out_dir=f)
    assert f.read_text() == "x"


def test_scores_within_two_standard_errors_of_chance_are_marked(tmp_path):
    root = tmp_path / "s"
    for i, (r, a, score, se) in enumerate([(1, 0.0, 1.0, 2.0), (1, 1.0, 30.0, 2.0), (4, 0.0, -3.0, 1.0),
                                           (4, 1.0, 4.0, 2.0)]):
        d = make_run(root, f"r{i}", R=r, alpha=a, nll=3.0)
        s = json.loads((d / "summary.json").read_text())
        s.update({"eval/avg/ar": score, "eval_se/avg/ar": se})
        (d / "summary.json").write_text(json.dumps(s))
    p = pivot(load_runs(root), "eval/avg/ar")
    assert p.chance_scored and [p.near_chance(1, 0.0), p.near_chance(1, 1.0), p.near_chance(4, 0.0)] == [
        True, False, False]
    assert p.near_chance(4, 1.0) is True  # |4| <= 2 * 2
    md = to_markdown(p)
    assert "| 1 | 1.0000° | **30.0000** |" in md and "| 4 | -3.0000 | **4.0000°** |" in md
    text = write_report(root, metrics=["eval/avg/ar"], formats=["md"], out_dir=tmp_path / "o", plots=False).markdown
    assert "°: within two standard errors of chance (0)" in text
    cells = cells_frame(p)
    assert list(cells["se"]) == [2.0, 2.0, 1.0, 2.0] and list(cells["near_chance"]) == [True, False, False, True]
    old = pivot(load_runs(tmp_path / "s").drop(columns=["eval_se/avg/ar"]), "eval/avg/ar")
    assert old.near_chance(1, 0.0) is None and "°" not in to_markdown(old)
    assert "significance unknown: these runs stored no standard errors" in legend(old)


def test_schedule_runs_are_compared_only_with_the_constant_alpha_of_their_R(tmp_path):
    root = tmp_path / "s"
    for i, (a, v) in enumerate([(0.0, 3.0), (0.5, 2.5), (1.0, 2.8)]):
        make_run(root, f"c{i}", R=4, alpha=a, nll=v)
    make_run(root, "c9", R=16, alpha=0.5, nll=9.0)  # another R: never compared with R=4
    d = make_run(root, "sched", R=4, alpha=0.0, nll=2.4)
    cfg = (d / "config.yaml").read_text().replace("  alpha: 0.0\n", "  alpha: 0.0\n  alpha_schedule: cosine\n"
                                                                        "  alpha_start: 1.0\n")
    (d / "config.yaml").write_text(cfg)
    text = write_report(root, metrics=["val/ar_nll"], formats=["md"], out_dir=tmp_path / "o", plots=False).markdown
    assert "## tiny — val/ar_nll" in text and "## tiny+cosine" not in text  # no R×α table of its own
    assert "| tiny, best constant α | 2.5000 (α=1/2) |" in text
    assert "| tiny+cosine(1->0) | 2.4000 (+0.1000) |" in text  # better than α=1/2 at R=4 by 0.1


def test_curve_plots_have_readable_ticks_and_visible_lines():
    from matplotlib.colors import to_rgb

    from dualobj.report.plots import count_axis, new_figure, series_colors

    fig = new_figure(3, 2)
    ax = fig.add_subplot()
    ax.plot([25_000, 200_000], [1, 2])
    count_axis(ax.xaxis)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    labels = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert 3 <= len(labels) <= 6 and all(re.fullmatch(r"[\d.]+k", s) for s in labels), labels  # 40k, not 40000
    colors = series_colors([0, 1 / 16, 1 / 4, 1 / 2, 3 / 4, 15 / 16, 1], "plasma")
    for c in colors.values():  # no line (α=1/2 included) close to white
        assert sum(to_rgb(c)) / 3 < 0.8, c


def test_a_run_id_in_two_sweep_folders_counts_once(tmp_path):
    """An adaptive search reuses a grid's run ids: a report over both folders must not average a cell with
    itself (a done copy wins over an unfinished one)."""
    make_run(tmp_path / "grid", "aaa", R=1, alpha=0.5, nll=3.0, metrics=curve([4.0, 3.5, 3.0]))
    make_run(tmp_path / "grid", "bbb", R=1, alpha=1.0, nll=2.0)
    make_run(tmp_path / "search", "aaa", R=1, alpha=0.5, nll=3.0, metrics=curve([4.0, 3.5, 3.0]))
    make_run(tmp_path / "search", "bbb", R=1, alpha=1.0, state="running")
    make_run(tmp_path / "search", "ccc", R=1, alpha=0.0, nll=4.0)
    df = load_runs(tmp_path)
    assert sorted(df["run_id"]) == ["aaa", "bbb", "ccc"]
    assert df.set_index("run_id").loc["bbb", "state"] == "done"
    curves = load_curves(tmp_path)
    assert (curves["run_id"] == "aaa").sum() == 3  # one copy's three validation points, not six



def _items(run: Path, task: str, mode: str, correct: list[bool], start: int = 0) -> None:
    rows = [{"mode": mode, "position": k, "index": start + k, "gold": 0, "pred": 0 if c else 1, "correct": c,
             "requests": []} for k, c in enumerate(correct)]
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / f"{task}.items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_paired_difference_is_the_mean_and_standard_error_of_the_item_differences():
    from dualobj.report.items import paired_difference

    a = {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0, 4: 0.0, 9: 1.0}
    b = {0: 1.0, 1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0, 5: 1.0}
    p = paired_difference([(a, b)])
    d = [0.0, 1.0, 0.0, 0.0, 0.0]  # items 0-4, the ones both scored
    mean = sum(d) / 5
    assert p.n == 5 and p.diff == pytest.approx(0.2)
    assert p.se == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in d) / 4 / 5))
    assert p.unpaired_se == pytest.approx(math.sqrt((0.6 * 0.4 + 0.4 * 0.6) / 5))
    assert not p.resolved and paired_difference([({0: 1.0}, {0: 0.0})]) is None


def test_the_report_compares_the_best_alpha_with_the_next_item_by_item(tmp_path):
    import random

    root, rng = tmp_path / "s", random.Random(0)
    base = [rng.random() < 0.5 for _ in range(400)]  # which items are easy: shared by every run
    for i, (a, fixed) in enumerate([(0.0, 0), (0.5, 40), (1.0, 4)]):  # each α also gets its first `fixed` right
        d = make_run(root, f"r{i}", R=4, alpha=a, nll=3.0)
        correct = [c or k < fixed for k, c in enumerate(base)]
        s = json.loads((d / "summary.json").read_text())
        s.update({"eval/piqa/ar": 100 * (2 * sum(correct) / 400 - 1), "eval_se/piqa/ar": 5.0})
        (d / "summary.json").write_text(json.dumps(s))
        _items(d, "piqa", "ar", correct)
    text = write_report(root, metrics=["eval/piqa/ar"], formats=["md"], out_dir=tmp_path / "o", plots=False).markdown
    assert "Item by item (paired" in text
    row = next(line for line in text.splitlines() if line.startswith("| 4 | 1/2 |"))
    best, nxt = sum(c or k < 40 for k, c in enumerate(base)), sum(c or k < 4 for k, c in enumerate(base))
    gained = best - nxt  # items α=1/2 gets right and α=1 does not: the only differences
    p = gained / 400
    assert f"| +{100 * p:.1f} | {100 * math.sqrt(p * (1 - p) / 399):.1f} |" in row and "beyond noise" in row
    assert "| 1 |" in row  # the runner-up is α=1
