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
        if name in ("probe_mc", "piqa", "lambada", "probe_cloze"):
            assert d["n_items"] == 12
    md = json.loads((trained / "eval" / "val.json").read_text())["results"]["md"]
    assert md["recipe"]["estimator"] == "mc" and md["recipe"]["samples"] == 2
    assert math.isfinite(md["elbo"]) and md["elbo_se"] > 0 and md["bpb"] > 0
    summary = json.loads((trained / "summary.json").read_text())
    for mode in ("ar", "md", "prefix"):
        scores = [summary[f"eval/{t}/{mode}"] for t in tasks if t != "val"]
        assert summary[f"eval/avg/{mode}"] == pytest.approx(sum(scores) / len(scores))
    assert summary["eval/val/ar_bpb"] > 0


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
    assert "eval/probe_cloze/ar" in summary and "eval/avg/md" in summary
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
