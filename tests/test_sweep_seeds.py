"""Seeds as an axis of a sweep file (`seeds: N` or `seeds: [..]`): parsing and its one-line errors, the
expansion into runs and their run ids, the plan's count, and the status grouping runs by cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dualobj import cli, views
from dualobj import sweep as S
from dualobj.errors import ConfigError
from dualobj.run.status import status_cells, status_rows

ROOT = Path(__file__).resolve().parent.parent
GRID = """name: g
fixed: [model=tiny, train.tokens=65536, train.batch_size=16]
axes:
  objective.alpha: [0, 1/2]
throughput: {tiny: 65536}            # one second per run
"""


def spec_file(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def load(tmp_path: Path, text: str, name: str = "s.yaml") -> S.SweepSpec:
    return S.load_spec(spec_file(tmp_path, text, name))


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("value, seeds", [("3", [0, 1, 2]), ("1", [0]), ("[0, 1, 2]", [0, 1, 2]), ("[7, 2]", [7, 2])])
def test_seeds_is_a_count_or_a_list(tmp_path, value, seeds):
    assert load(tmp_path, GRID + f"seeds: {value}\n").seeds == seeds


def test_without_seeds_nothing_changes(tmp_path):
    spec = load(tmp_path, GRID)
    assert spec.seeds is None
    assert S.cell_overrides(spec) == [["model=tiny", "train.tokens=65536", "train.batch_size=16", "objective.alpha=0"],
                                      ["model=tiny", "train.tokens=65536", "train.batch_size=16",
                                       "objective.alpha=0.5"]]


FIX = "use a whole number N >= 1 (seeds 0 .. N-1) or a list of distinct whole numbers >= 0 like [0, 1, 2]"


@pytest.mark.parametrize("value, fragment", [
    ("0", "seeds: 0 must be at least 1 (the number of seeds); " + FIX),
    ("-2", "seeds: -2 must be at least 1 (the number of seeds); " + FIX),
    ("true", "seeds: True is not a number of seeds or a list of seeds; " + FIX),
    ("2.5", "seeds: 2.5 is not a number of seeds or a list of seeds; " + FIX),
    ("three", "seeds: 'three' is not a number of seeds or a list of seeds; " + FIX),
    ("'3'", "seeds: '3' is not a number of seeds or a list of seeds; " + FIX),
    ("{a: 1}", "seeds: {'a': 1} is not a number of seeds or a list of seeds; " + FIX),
    ("[]", "seeds: [] lists no seed; " + FIX),
    ("", "seeds: is empty; " + FIX + ", or remove the key"),
    ("[0, -1]", "seeds [-1] are not whole numbers >= 0; " + FIX),
    ("[0, 1.5]", "seeds [1.5] are not whole numbers >= 0; " + FIX),
    ("[0, true]", "seeds [True] are not whole numbers >= 0; " + FIX),
    ("[0, x]", "seeds ['x'] are not whole numbers >= 0; " + FIX),
    ("[0, 1, 1, 0]", "seeds [0, 1, 1, 0] lists seed(s) [0, 1] more than once; list each seed once"),
])
def test_bad_seeds_get_one_line_naming_the_problem_and_the_fix(tmp_path, value, fragment):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, GRID + f"seeds: {value}\n")
    msg = str(e.value)
    assert msg == f"sweep file {tmp_path / 's.yaml'}: {fragment}"
    assert "\n" not in msg


@pytest.mark.parametrize("where, text", [
    ("fixed", "name: g\nfixed: [model=tiny, seed=4]\naxes: {objective.alpha: [0, 1]}\n"),
    ("fixed", "name: g\nfixed: {model: tiny, seed: 4}\naxes: {objective.alpha: [0, 1]}\n"),
    ("axes", "name: g\nfixed: [model=tiny]\naxes: {objective.alpha: [0, 1], seed: [0, 1]}\n"),
    ("cells", "name: g\nfixed: [model=tiny]\ncells:\n  - {objective.alpha: 0}\n  - {objective.alpha: 1, seed: 1}\n"),
    ("variants", "name: g\nvariants: {a: [model=tiny, seed=3]}\naxes: {objective.alpha: [0, 1]}\n"),
])
def test_seeds_and_seed_elsewhere_in_the_file_are_refused(tmp_path, where, text):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text + "seeds: 2\n")
    assert str(e.value) == (f"sweep file {tmp_path / 's.yaml'}: 'seeds' and seed in '{where}' both set the seed; "
                            "remove one of them")


def test_a_seed_override_on_the_command_line_is_refused_with_seeds(tmp_path):
    spec = load(tmp_path, GRID + "seeds: 2\n")
    with pytest.raises(ConfigError, match=r"sets the seeds \('seeds: ...'\); drop seed= from the command line"):
        S.cell_overrides(spec, ["seed=5"])
    assert len(S.cell_overrides(load(tmp_path, GRID, "plain.yaml"), ["seed=5"])) == 2  # as before without seeds


def test_an_adaptive_search_takes_no_seeds(tmp_path):
    text = """name: a
fixed: [model=tiny, train.tokens=65536]
search:
  metric: val/ar_bpb
  values: [0, 1/2, 1]
  conditions: {data.repetitions: [1, 4]}
  budget: 8
seeds: 3
"""
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    assert str(e.value) == (f"sweep file {tmp_path / 's.yaml'}: the adaptive search chooses its own seeds; "
                            "remove 'seeds'")


# ----------------------------------------------------------------------------- expansion and run ids
def test_every_cell_runs_once_per_seed_seed_by_seed(tmp_path):
    spec = load(tmp_path, GRID + "cells: [{data.repetitions: 1}, {data.repetitions: 4}]\nseeds: [0, 1, 2]\n")
    runs = S.cell_overrides(spec, ["train.lr=0.001"])
    assert len(runs) == 2 * 2 * 3
    assert runs[0] == ["model=tiny", "train.tokens=65536", "train.batch_size=16", "objective.alpha=0",
                       "data.repetitions=1", "seed=0", "train.lr=0.001"]  # the seed last, before the extra ones
    assert [r[-2] for r in runs] == ["seed=0"] * 4 + ["seed=1"] * 4 + ["seed=2"] * 4  # the whole grid per seed
    assert runs[4][:-2] == runs[0][:-2] and runs[8][:-2] == runs[0][:-2]


def test_run_ids_differ_per_seed_and_seed_zero_is_the_run_without_seeds(tmp_path):
    plain = S.plan(load(tmp_path, GRID, "plain.yaml"), tmp_path / "out")
    three = S.plan(load(tmp_path, GRID + "seeds: 3\n", "three.yaml"), tmp_path / "out")
    one = S.plan(load(tmp_path, GRID + "seeds: 1\n", "one.yaml"), tmp_path / "out")
    assert not [c.error for c in plain + three + one if c.error]
    assert len(plain) == 2 and len(three) == 6 and len({c.run_id for c in three}) == 6
    assert [c.semantic["seed"] for c in three] == [0, 0, 1, 1, 2, 2]
    assert [c.run_id for c in three[:2]] == [c.run_id for c in plain] == [c.run_id for c in one]
    assert [(c.semantic["alpha"], c.semantic["R"]) for c in three] == [(0.0, 1), (0.5, 1)] * 3


def test_the_shipped_three_seed_mini_grid_holds_the_mini_grid(tmp_path):
    spec = S.load_spec(ROOT / "sweeps" / "mini_3seeds.yaml")
    assert spec.seeds == [0, 1, 2] and len(S.cell_overrides(spec)) == 84
    three = {c.run_id for c in S.plan(spec, tmp_path)}
    mini = {c.run_id for c in S.plan(S.load_spec(ROOT / "sweeps" / "mini.yaml"), tmp_path)}
    assert len(three) == 84 and len(mini) == 36 and mini <= three  # its seed 1 cells at α = 1/2 and 1 included


# ----------------------------------------------------------------------------- the plan
def render(renderable) -> str:
    console = Console(width=250, record=True)
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()


def test_the_plan_counts_cells_times_seeds_and_totals_every_run(tmp_path):
    spec = load(tmp_path, GRID + "seeds: 3\n")
    cells = S.plan(spec, tmp_path / "out")
    text = render(views.plan_table(spec.name, tmp_path / "out", cells, spec.seeds))
    assert f"sweep g: 2 cells × 3 seeds = 6 runs -> {tmp_path / 'out'}" in text.replace("\n", " ").replace("  ", " ")
    total = next(line for line in text.splitlines() if "total" in line)
    assert "0m06s" in total  # six runs of one second each at the file's throughput
    assert "393.2k" in total and "  192 " in total  # 6 x 65,536 tokens, 6 x 32 steps
    assert views.plan_title("g", Path("o"), cells[:2]) == "sweep g: 2 cells -> o"  # without seeds: as before
    assert views.plan_title("g", Path("o"), cells[:2], [0]) == "sweep g: 2 cells × 1 seed = 2 runs -> o"


def test_dry_run_prints_the_seed_count(tmp_path, cache_dir):
    f = spec_file(tmp_path, GRID.replace("train.batch_size=16]", f"train.batch_size=16, data.cache_dir={cache_dir}]")
                  + "seeds: [0, 1, 2]\n")
    res = CliRunner().invoke(cli.app, ["sweep", str(f), "--dry-run", "--out", str(tmp_path / "sw")])
    assert res.exit_code == 0, res.output
    assert "sweep g: 2 cells × 3 seeds = 6 runs" in res.stdout
    assert sum(" pending" in line for line in res.stdout.splitlines()) == 6
    assert not (tmp_path / "sw" / "sweep.json").exists()  # a dry run writes nothing


# ----------------------------------------------------------------------------- status: runs grouped by cell
def make_run(root: Path, name: str, *, R=1, alpha=0.5, seed=0, state="done", schedule: str | None = None) -> Path:
    """A run directory as `dualobj train` leaves it (config.yaml, status.json, summary.json when done)."""
    d = root / name
    d.mkdir(parents=True)
    objective = f"  alpha: {alpha}\n" + (f"  alpha_schedule: {schedule}\n" if schedule else "")
    (d / "config.yaml").write_text(f"run_id: {name}\nmodel:\n  name: tiny\ndata:\n  repetitions: {R}\n"
                                   f"objective:\n{objective}train:\n  tokens: 4096\n  threads: {seed + 1}\n"
                                   f"seed: {seed}\n")  # threads: not semantic, so no part of the cell
    (d / "status.json").write_text(json.dumps({"state": state, "step": 4, "total_steps": 8, "attempts": 1,
                                               "heartbeat": 1.0e9, "run_id": name, "error": "boom"}))
    if state == "done":
        (d / "summary.json").write_text(json.dumps({"val/ar_nll": 3.0 + alpha}))
    return d


def three_seed_sweep(root: Path) -> None:
    """sweep.json of two cells at seeds 0, 1, 2; cell (R=1, α=1/2): 2 done, 1 pending; (R=4, α=1): 1 done,
    1 failed, 1 pending."""
    cells = []
    for seed in range(3):
        for R, alpha, states in ((1, 0.5, ["done", "done", None]), (4, 1.0, ["done", "failed", None])):
            rid = f"r{R}s{seed}"
            ov = ["model=tiny", f"data.repetitions={R}", f"objective.alpha={alpha}", f"seed={seed}"]
            cells.append({"run_id": rid, "overrides": ov, "model": "tiny", "R": R, "alpha": alpha, "seed": seed,
                          "tokens": 4096, "steps": 8, "flops": 1e9, "est_s": 60.0})
            if states[seed]:
                make_run(root, rid, R=R, alpha=alpha, seed=seed, state=states[seed])
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps({"name": root.name, "cells": cells}))


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]


def test_status_groups_the_seeds_of_each_cell(tmp_path):
    root = tmp_path / "sw"
    three_seed_sweep(root)
    cells = status_cells(status_rows(root))
    assert [(c["R"], c["alpha"], c["seeds"], c["run_ids"], c["counts"], c["all_done"]) for c in cells] == [
        (1, 0.5, [0, 1, 2], ["r1s0", "r1s1", "r1s2"], {"done": 2, "pending": 1}, False),
        (4, 1.0, [0, 1, 2], ["r4s0", "r4s1", "r4s2"], {"done": 1, "failed": 1, "pending": 1}, False)]
    res = CliRunner().invoke(cli.app, ["status", str(root)])
    assert res.exit_code == 1, res.output
    assert "2 cells (runs that differ only in their seed)" in res.stdout
    rows = [r[1:] for r in table_rows(res.stdout) if len(r) == 6]
    assert rows == [["tiny", "1", "1/2", "0,1,2", "2 done, 1 pending"],
                    ["tiny", "4", "1", "0,1,2", "1 done, 1 failed, 1 pending"]]
    assert "6 runs: 3 done, 1 failed, 0 running, 2 pending" in res.stdout  # the counts line as before


def test_status_json_keeps_the_runs_and_adds_the_cells(tmp_path):
    root = tmp_path / "sw"
    three_seed_sweep(root)
    res = CliRunner().invoke(cli.app, ["status", "--json", str(root)])
    doc = json.loads(res.stdout)
    assert {"path", "counts", "all_done", "flops_left", "est_s_left", "runs", "cells"} <= set(doc)
    assert doc["counts"] == {"done": 3, "failed": 1, "running": 0, "pending": 2}
    runs = {r["run_id"]: r for r in doc["runs"]}
    assert len(runs) == 6 and (runs["r4s1"]["state"], runs["r4s1"]["R"], runs["r4s1"]["seed"]) == ("failed", 4, 1)
    assert len({runs[f"r1s{s}"]["cell"] for s in range(3)}) == 1 and runs["r1s0"]["cell"] != runs["r4s0"]["cell"]
    assert [(c["cell"], c["seeds"], c["counts"]) for c in doc["cells"]] == [
        (runs["r1s0"]["cell"], [0, 1, 2], {"done": 2, "pending": 1}),
        (runs["r4s0"]["cell"], [0, 1, 2], {"done": 1, "failed": 1, "pending": 1})]


def test_without_a_plan_runs_group_by_their_config_less_the_seed(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, f"const{seed}", R=4, alpha=0.5, seed=seed)
    make_run(root, "sched", R=4, alpha=0.5, seed=2, schedule="linear")  # same model, R, α: another cell
    make_run(root, "other", R=16, alpha=0.5, seed=0)
    cells = status_cells(status_rows(root))
    assert sorted((c["R"], c["seeds"], c["run_ids"]) for c in cells) == [
        (4, [0, 1], ["const0", "const1"]), (4, [2], ["sched"]), (16, [0], ["other"])]
    res = CliRunner().invoke(cli.app, ["status", str(root)])
    assert "3 cells (runs that differ only in their seed)" in res.stdout
    assert ["tiny", "4", "1/2", "0,1", "2 done"] in [r[1:] for r in table_rows(res.stdout) if len(r) == 6]


def test_no_cells_table_when_every_cell_has_one_seed(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a", R=1, alpha=0.0)
    make_run(root, "b", R=1, alpha=1.0, seed=1)  # another cell: a seed of its own is no group
    res = CliRunner().invoke(cli.app, ["status", str(root)])
    assert res.exit_code == 0, res.output
    assert "differ only in their seed" not in res.stdout and "2 runs: 2 done" in res.stdout
    assert [len(c["run_ids"]) for c in json.loads(
        CliRunner().invoke(cli.app, ["status", "--json", str(root)]).stdout)["cells"]] == [1, 1]
