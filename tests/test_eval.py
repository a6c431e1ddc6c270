"""dualobj eval end to end: files with complete recipes, headline scores in summary.json, generation."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from dualobj import config
from dualobj.errors import ConfigError
from dualobj.evaluate import train_and_evaluate
from dualobj.evaluate.benchmarks import resolve_benchmark_dir
from dualobj.evaluate.evaluator import evaluate
from dualobj.train import train

RECIPE_KEYS = {"mode", "estimator", "samples", "seed", "limit", "prompt_format", "attention", "code_version",
               "checkpoint_step", "tokenizer_sha256", "precision"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    from conftest import MICRO

    out = tmp_path_factory.mktemp("run") / "r"
    train(config.load([*MICRO, f"data.cache_dir={cache_dir}", "train.tokens=10240", f"out={out}"]))
    return out


def test_eval_writes_task_files_with_full_recipes(trained):
    tasks = ["val", "probe_mc", "probe_cloze"]
    have_bench = resolve_benchmark_dir(config.EvalConfig().benchmark_dir).joinpath("blimp").is_dir()
    if have_bench:
        tasks += ["blimp", "piqa", "lambada"]
    res = evaluate(trained, [f"eval.tasks=[{','.join(tasks)}]", "eval.limit=12", "eval.probe_items=12",
                             "eval.md_samples=2", "eval.val_windows=8"], say=lambda m: None)
    assert res["tasks"] == tasks
    for name in tasks:
        d = json.loads((trained / "eval" / f"{name}.json").read_text())
        assert set(d["results"]) == ({"ar", "md"} if name == "val" else {"ar", "md", "prefix"})
        for mode, r in d["results"].items():
            assert RECIPE_KEYS <= set(r["recipe"]), (name, mode)
            assert r["recipe"]["mode"] == mode and r["recipe"]["checkpoint_step"] == 40
            assert r["items_per_s"] > 0
            if name != "val":
                assert -100 <= r["score"] <= 100 and r["n"] == d["n_items"]
                assert r["acc_se"] == pytest.approx(math.sqrt(r["acc"] * (1 - r["acc"]) / r["n"]))
                assert r["score_se"] == pytest.approx(100 * r["acc_se"] / (1 - r["chance"]))
        if name in ("probe_mc", "piqa", "lambada", "probe_cloze"):
            assert d["n_items"] == 12
    md = json.loads((trained / "eval" / "val.json").read_text())["results"]["md"]
    assert md["recipe"]["estimator"] == "mc" and md["recipe"]["samples"] == 2
    assert math.isfinite(md["elbo"]) and md["elbo_se"] > 0 and md["bpb"] > 0
    summary = json.loads((trained / "summary.json").read_text())
    # the average covers the named task set only: these tasks are not all of `builtin`, so there is none
    assert summary["eval/task_set"] == "builtin" and "eval/avg/ar" not in summary
    assert "arc_challenge" in summary["eval/task_set_missing"]
    assert summary["eval_se/probe_mc/ar"] > 0 and summary["eval_n/probe_mc"] == 12
    assert summary["eval/val/ar_bpb"] > 0


@pytest.mark.skipif(not resolve_benchmark_dir().joinpath("blimp").is_dir(),
                    reason="the benchmark files (../shared/data/benchmarks) are absent")
def test_the_average_covers_exactly_the_named_task_set(tmp_path, micro):
    from dualobj.evaluate.registry import TASK_SETS

    out = tmp_path / "r"
    train(config.load([*micro, "train.tokens=1024", f"out={out}"]))
    res = evaluate(out, ["eval.tasks=[builtin,probe_mc]", "eval.limit=6", "eval.probe_items=6", "eval.modes=[ar]"],
                   say=lambda m: None)
    members = TASK_SETS["builtin"]
    assert sorted(res["tasks"]) == sorted([*members, "probe_mc"])
    h = res["headline"]
    assert h["eval/avg/ar"] == pytest.approx(sum(h[f"eval/{t}/ar"] for t in members) / len(members))
    se = math.sqrt(sum(h[f"eval_se/{t}/ar"] ** 2 for t in members)) / len(members)
    assert h["eval_se/avg/ar"] == pytest.approx(se) and h["eval/task_set_missing"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval/avg/ar"] == h["eval/avg/ar"] and summary["eval/task_set"] == "builtin"


def test_scores_made_with_another_recipe_are_never_replaced_silently(trained):
    args = ["eval.tasks=[probe_cloze]", "eval.probe_items=6", "eval.modes=[ar]"]
    evaluate(trained, [*args, "eval.limit=6"], say=lambda m: None, overwrite=True)  # another test used limit=12
    path = trained / "eval" / "probe_cloze.json"
    before = path.read_text()
    with pytest.raises(ConfigError, match=r"another recipe, e.g. eval/probe_cloze.json \(ar: limit=6\).*--overwrite"):
        evaluate(trained, [*args, "eval.limit=3"], say=lambda m: None)
    assert path.read_text() == before
    evaluate(trained, [*args, "eval.limit=6"], say=lambda m: None)  # the same recipe again: fine
    evaluate(trained, [*args, "eval.limit=3"], say=lambda m: None, overwrite=True)
    assert json.loads(path.read_text())["results"]["ar"]["recipe"]["limit"] == 3


def test_unknown_task_names_are_refused_before_anything_runs(trained):
    with pytest.raises(ConfigError, match="unknown task 'blimpp'"):
        evaluate(trained, ["eval.tasks=[blimpp]"])
    with pytest.raises(ConfigError, match="eval.task_set='paper10' is not one of paper9, builtin"):
        evaluate(trained, ["eval.task_set=paper10"])


def test_eval_refuses_overrides_that_would_change_the_model(trained):
    with pytest.raises(ConfigError, match="only eval"):
        evaluate(trained, ["model.d_model=64"])
    with pytest.raises(ConfigError, match="eval.modes"):
        evaluate(trained, ["eval.modes=[ar,sideways]"])


def test_evaluation_runs_at_the_end_of_training(tmp_path, micro):
    out = tmp_path / "r"
    summary = train_and_evaluate(config.load([*micro, "train.tokens=2048", f"out={out}", "eval.at_end=true",
                                 "eval.tasks=[val,probe_cloze]", "eval.limit=8", "eval.probe_items=8",
                                 "eval.md_samples=2", "eval.val_windows=4"]))
    assert "eval/probe_cloze/ar" in summary and "eval_se/probe_cloze/md" in summary
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["eval/probe_cloze/prefix"] == summary["eval/probe_cloze/prefix"]
    assert json.loads((out / "status.json").read_text())["state"] == "done"


@pytest.mark.parametrize("mode", ["ar", "md", "prefix"])
def test_generate_in_each_mode(trained, mode):
    cmd = [sys.executable, "-m", "dualobj.cli", "generate", str(trained), "--mode", mode, "--prompt", "The river",
           "-n", "8", "--steps", "4", "--seed", "1"]
    a = subprocess.run(cmd, capture_output=True, text=True)
    b = subprocess.run(cmd, capture_output=True, text=True)
    assert a.returncode == 0, a.stderr
    assert a.stdout.startswith("The river") and len(a.stdout.strip()) > len("The river")
    assert a.stdout == b.stdout  # seeded


def test_generate_rejects_a_bad_mode(trained):
    res = subprocess.run([sys.executable, "-m", "dualobj.cli", "generate", str(trained), "--mode", "sideways"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--mode 'sideways' is not one of ar, md, prefix" in res.stderr


def _task_files(run_dir) -> dict:
    """eval/*.json without what differs between two evaluations of the same recipe (speed, time written)."""
    out = {}
    for p in sorted((run_dir / "eval").glob("*.json")):
        d = json.loads(p.read_text())
        d.pop("written")
        for r in d["results"].values():
            r.pop("items_per_s")
        out[p.name] = d
    return out


def test_per_mode_runs_accumulate_to_the_files_of_one_run_of_all_modes(trained, tmp_path):
    import shutil

    one, seq = tmp_path / "one", tmp_path / "seq"
    for d in (one, seq):
        shutil.copytree(trained, d, ignore=shutil.ignore_patterns("eval"))
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if not k.startswith("eval")}))
    args = ["eval.tasks=[val,probe_mc,probe_cloze]", "eval.limit=5", "eval.probe_items=9", "eval.md_samples=2",
            "eval.val_windows=4"]
    evaluate(one, [*args, "eval.modes=[ar,md,prefix]"], say=lambda m: None)
    for mode in ("md", "ar", "prefix"):
        evaluate(seq, [*args, f"eval.modes=[{mode}]"], say=lambda m: None)
    assert _task_files(seq) == _task_files(one)
    for name in ("probe_mc", "probe_cloze"):
        assert (seq / "eval" / f"{name}.items.jsonl").read_text() == (one / "eval" / f"{name}.items.jsonl").read_text()
    s_one, s_seq = (json.loads((d / "summary.json").read_text()) for d in (one, seq))
    assert {k: v for k, v in s_seq.items() if k.startswith("eval")} == \
        {k: v for k, v in s_one.items() if k.startswith("eval")}
    assert {"eval/probe_mc/ar", "eval/probe_mc/md", "eval/probe_mc/prefix"} <= set(s_seq)
    # another recipe for one mode is refused whatever the other modes are, and changes nothing
    before = (seq / "eval" / "probe_mc.json").read_text()
    for modes in ("[prefix]", "[ar,prefix]"):
        with pytest.raises(ConfigError, match=r"probe_mc.json \((ar|prefix): limit=5\)"):
            evaluate(seq, ["eval.tasks=[probe_mc]", "eval.limit=4", "eval.probe_items=9", f"eval.modes={modes}"],
                     say=lambda m: None)
    assert (seq / "eval" / "probe_mc.json").read_text() == before
    # with --overwrite only that mode is replaced; the others keep their scores and their own recipe
    evaluate(seq, ["eval.tasks=[probe_mc]", "eval.limit=4", "eval.probe_items=9", "eval.modes=[prefix]"],
             say=lambda m: None, overwrite=True)
    res = json.loads((seq / "eval" / "probe_mc.json").read_text())["results"]
    assert [res[m]["recipe"]["limit"] for m in ("ar", "md", "prefix")] == [5, 5, 4]
    assert [res[m]["n"] for m in ("ar", "md", "prefix")] == [5, 5, 4]


def test_every_item_is_kept_with_its_source_index(trained, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("eval"))
    base = ["eval.tasks=[probe_mc,probe_cloze]", "eval.probe_items=20", "eval.md_samples=2"]
    evaluate(run, [*base, "eval.limit=6", "eval.subset=first"], say=lambda m: None)
    d = json.loads((run / "eval" / "probe_mc.json").read_text())
    assert all(r["indices"] == [0, 1, 2, 3, 4, 5] and r["recipe"]["subset"] == "first" for r in d["results"].values())
    rows = [json.loads(x) for x in (run / "eval" / "probe_mc.items.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["ar"] * 6 + ["md"] * 6 + ["prefix"] * 6
    for mode in ("ar", "md", "prefix"):
        mine = [r for r in rows if r["mode"] == mode]
        assert [r["index"] for r in mine] == list(range(6))
        assert sum(r["correct"] for r in mine) / 6 == pytest.approx(d["results"][mode]["acc"])
        assert sum(r["correct_norm"] for r in mine) / 6 == pytest.approx(d["results"][mode]["acc_norm"])
        for r in mine:
            lp = [q["logprob"] for q in r["requests"]]
            assert r["pred"] == lp.index(max(lp)) and r["correct"] == (r["pred"] == r["gold"])
            assert all(q["n_tokens"] > 0 and q["bytes"] > 0 for q in r["requests"])
            assert all(("se" in q) == (mode == "md") for q in r["requests"])
    cloze = [json.loads(x) for x in (run / "eval" / "probe_cloze.items.jsonl").read_text().splitlines()]
    assert all(r["pred"] is None and r["correct"] == r["requests"][0]["greedy"] for r in cloze if r["mode"] == "ar")
    # the seeded subset records which items it drew; a re-run with the other subset is another recipe
    evaluate(run, [*base[:2], "eval.limit=6", "eval.modes=[ar]"], say=lambda m: None, overwrite=True)
    idx = json.loads((run / "eval" / "probe_mc.json").read_text())["results"]["ar"]["indices"]
    assert len(idx) == 6 and idx == sorted(idx) and idx != list(range(6))
    ar = [json.loads(x) for x in (run / "eval" / "probe_mc.items.jsonl").read_text().splitlines()]
    assert [r["index"] for r in ar if r["mode"] == "ar"] == idx and sum(r["mode"] == "md" for r in ar) == 6


def test_the_scores_table_shows_the_accuracies_and_what_its_average_covers():
    from rich.console import Console

    from dualobj.views import scores_table

    headline = {"eval/hellaswag/ar": 12.0, "eval_se/hellaswag/ar": 3.0, "eval_acc/hellaswag/ar": 0.34,
                "eval_acc_norm/hellaswag/ar": 0.36, "eval_n/hellaswag": 300, "eval/avg/ar": 5.0,
                "eval_se/avg/ar": 1.0, "eval/task_set": "builtin", "eval/task_set_missing": "blimp"}
    console = Console(record=True, width=240)
    console.print(scores_table(headline))
    text = console.export_text()
    assert "12.0 ± 3.0" in text and "0.340 / 0.360" in text and "300" in text
    assert "avg of builtin (arc_easy, arc_challenge, blimp, copa, openbookqa, piqa, winogrande, wsc)" in text
    assert "blimp not scored there" in text
