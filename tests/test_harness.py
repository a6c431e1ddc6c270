"""lm-evaluation-harness: a run scored through lm-eval gets exactly the numbers `dualobj eval` gives it.

Offline: the task is a local JSON-lines file, declared once for dualobj (our YAML) and once for lm-eval
(``dataset_path: json``), both read from the same file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before datasets is imported: no hub look-ups
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dualobj import config  # noqa: E402
from dualobj.errors import ConfigError  # noqa: E402
from dualobj.evaluate.evaluator import evaluate  # noqa: E402
from dualobj.train import train  # noqa: E402

ITEMS = [  # question, choices, gold: plain words, so both tools see the same text
    ("The river flows into the", ["sea", "school", "king"], 0),
    ("He was born in a small", ["town", "film", "water"], 0),
    ("The film was directed by an American", ["director", "island", "river"], 0),
    ("The church was built in the", ["century", "music", "road"], 0),
    ("She studied music at the", ["university", "mountain", "war"], 0),
    ("The island lies off the coast of", ["France", "school", "music"], 0),
    ("The war ended with a peace", ["treaty", "river", "film"], 0),
    ("The album was released by the", ["band", "church", "island"], 0),
    ("The city is the capital of the", ["country", "film", "song"], 1),
    ("The road connects the two", ["towns", "songs", "kings"], 2),
    ("He played football for the national", ["team", "river", "church"], 1),
    ("The mountain is the highest in the", ["region", "album", "war"], 2),
]
OUR_TASK = """name: mini
kind: choice
file: {file}
context: "{{question}}"
choices: choices
gold: gold
"""
LM_EVAL_TASK = """task: mini
dataset_path: json
dataset_kwargs:
  data_files: {file}
test_split: train
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""
MODES = ("ar", "md", "prefix")


class Req:
    """The one thing the model reads of an lm-eval Instance: its arguments."""

    def __init__(self, *args):
        self.args = args


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "DUALOBJ_MALLOC": "off", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("DUALOBJ_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "dualobj.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> Path:
    from conftest import MICRO

    out = tmp_path_factory.mktemp("harness") / "run"
    train(config.load([*MICRO, f"data.cache_dir={cache_dir}", "train.tokens=10240", f"out={out}"]))
    return out


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """A folder with mini.jsonl, our declaration (mini.dualobj.yaml) and lm-eval's (lm_eval/mini.yaml)."""
    folder = tmp_path_factory.mktemp("task")
    data = folder / "mini.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "gold": g}) + "\n" for q, c, g in ITEMS))
    (folder / "mini.dualobj.yaml").write_text(OUR_TASK.format(file=data))
    (folder / "lm_eval").mkdir()
    (folder / "lm_eval" / "mini.yaml").write_text(LM_EVAL_TASK.format(file=data))
    return folder


@pytest.fixture(scope="module")
def ours(run, task) -> dict:
    """`dualobj eval` of the task in every mode: eval/mini.json's results."""
    evaluate(run, [f"eval.tasks=[{task / 'mini.dualobj.yaml'}]", "eval.modes=[ar,md,prefix]", "eval.limit=null"],
             say=lambda m: None)
    return json.loads((run / "eval" / "mini.json").read_text())["results"]


@pytest.fixture(scope="module")
def lm_ar(run):
    from dualobj.interop.harness import DualobjLM

    return DualobjLM(str(run), mode="ar")


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_lm_eval_gives_the_scores_and_accuracy_of_dualobj_eval(run, task, ours, mode):
    """ar and prefix are exact; md uses the run's eval.md_samples and eval.seed and gets the requests in the
    same order as `dualobj eval`, so its Monte-Carlo estimates are the same numbers, not just close."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from dualobj.interop.harness import DualobjLM

    lm = DualobjLM(str(run), mode=mode)
    tm = TaskManager(include_path=str(task / "lm_eval"), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=["mini"], task_manager=tm, log_samples=True)
    got = res["results"]["mini"]
    assert got["acc,none"] == ours[mode]["acc"] and got["acc_norm,none"] == ours[mode]["acc_norm"]
    assert ours[mode]["n"] == len(ITEMS) == got["sample_len"]

    samples = sorted(res["samples"]["mini"], key=lambda s: s["doc_id"])
    pairs = [tuple(a) for s in samples for a in s["arguments"]]
    assert pairs == [(q, " " + c) for q, cs, _ in ITEMS for c in cs]  # the very requests dualobj eval scores
    e = lm.ev.e
    docs = [s["doc_id"] for s in samples for _ in s["arguments"]]  # an item's choices share their MD masks
    want = lm.ev.scorer.score(pairs, mode, e.md_estimator, e.md_samples, e.seed, groups=docs)
    logprobs = [r[0][0] for s in samples for r in s["resps"]]
    assert logprobs == pytest.approx([w.logprob for w in want], abs=1e-6)
    assert res["config"]["dualobj_mode"] == mode and res["config"]["dualobj_recipe"]["checkpoint_step"] == lm.ev.step


def test_rolling_loglikelihood_predicts_every_token_once_after_s(lm_ar):
    ev = lm_ar.ev
    short = "The river flows into the sea."
    (got,) = lm_ar.loglikelihood_rolling([Req(short)])
    assert got == pytest.approx(ev.scorer.score([("", short)], "ar")[0].logprob, abs=1e-6)

    text = " ".join(q + " " + c[0] + "." for q, c, _ in ITEMS)  # several windows of the 32-token context
    ids = ev.tokenizer.encode(text, add_special_tokens=False).ids
    seq_len, bos = ev.cfg.model.seq_len, ev.corpus.bos_id
    windows = lm_ar.windows(text)
    assert len(windows) >= 3 and [t for _, cont in windows for t in cont] == ids
    full = [bos, *ids]
    start = 0
    for ctx, cont in windows:  # each window reads the tokens right before the ones it predicts
        assert len(ctx) + len(cont) <= seq_len and ctx == full[start + 1 - len(ctx): start + 1]
        start += len(cont)
    reference = 0.0
    with torch.no_grad(), ev.autocast or torch.autocast("cpu", enabled=False):
        for ctx, cont in windows:
            row = torch.tensor([ctx + cont])
            lp = ev.model(row, True).float().log_softmax(-1)[0, len(ctx) - 1: len(ctx) + len(cont) - 1]
            reference += float(lp.gather(1, torch.tensor(cont)[:, None]).sum())
    (got,) = lm_ar.loglikelihood_rolling([Req(text)])
    assert got == pytest.approx(reference, abs=1e-3)
    assert lm_ar.loglikelihood_rolling([Req("")]) == [0.0]


def test_rolling_loglikelihood_is_refused_in_md_mode(run):
    from dualobj.interop.harness import DualobjLM

    with pytest.raises(ConfigError, match="MD mode"):
        DualobjLM(str(run), mode="md").loglikelihood_rolling([Req("The river")])


def test_generate_until_is_greedy_and_stops_at_the_first_stop_string(lm_ar):
    from dualobj.evaluate.generate import generate

    prompt = "The river flows into the"
    full = generate(lm_ar.ev, prompt, mode="ar", max_tokens=12, temperature=0.0)
    assert len(full) > 4
    (got,) = lm_ar.generate_until([Req(prompt, {"until": [], "max_gen_toks": 12})])
    assert got == full  # temperature 0: the same text every time
    stop = full[2:4]
    (cut,) = lm_ar.generate_until([Req(prompt, {"until": ["never there", stop], "max_gen_toks": 12})])
    assert cut == full[: full.index(stop)]


def test_the_model_is_registered_with_lm_eval_and_bad_settings_are_refused(run):
    from lm_eval.api.registry import get_model

    from dualobj.interop.harness import DualobjLM, cut_at_stop

    assert get_model("dualobj") is DualobjLM
    with pytest.raises(ConfigError, match="not one of ar, md, prefix"):
        DualobjLM(str(run), mode="sideways")
    with pytest.raises(ConfigError, match="estimator='exact' is not one of mc, pll"):
        DualobjLM(str(run), mode="md", estimator="exact")
    with pytest.raises(ConfigError, match=r"model_args \['sample'\] mean nothing to dualobj"):
        DualobjLM(str(run), mode="md", sample=16)
    assert cut_at_stop("a. b\n\nc", ["\n\n", "."]) == "a" and cut_at_stop("abc", []) == "abc"


@pytest.mark.slow
def test_dualobj_harness_hands_its_arguments_to_lm_eval(run, task, ours, tmp_path):
    res = cli("harness", str(run), "--mode", "md", "--tasks", "mini", "--include_path", str(task / "lm_eval"),
              "--output_path", str(tmp_path / "out"), "--limit", "12", "--log_samples")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "|mini" in res.stdout
    (result,) = (tmp_path / "out").rglob("results_*.json")
    got = json.loads(result.read_text())
    assert got["results"]["mini"]["acc,none"] == ours["md"]["acc"]
    assert got["config"]["model"] == "dualobj" and got["config"]["dualobj_mode"] == "md"
    # lm-eval's own per-item log lines up with dualobj's eval/<task>.items.jsonl by source index
    (log,) = (tmp_path / "out").rglob("samples_mini_*.jsonl")
    theirs = {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in map(json.loads, log.read_text().splitlines())}
    rows = [json.loads(x) for x in (run / "eval" / "mini.items.jsonl").read_text().splitlines()]
    mine = {r["index"]: [q["logprob"] for q in r["requests"]] for r in rows if r["mode"] == "md"}
    assert sorted(theirs) == list(range(12)) and all(theirs[i] == pytest.approx(mine[i], abs=1e-6) for i in theirs)


def test_bad_input_is_one_line_and_exit_2(run, tmp_path):
    res = cli("harness", str(run), "--mode", "sideways", "--tasks", "mini")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "error: --mode 'sideways' is not one of ar, md, prefix" in res.stderr

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / "config.yaml", unfinished / "config.yaml")
    (unfinished / "status.json").write_text(json.dumps({"state": "failed", "error": "boom", "step": 3}))
    res = cli("harness", str(unfinished), "--mode", "ar", "--tasks", "mini")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert f"error: run {unfinished} is failed (boom), not done; finish it first" in res.stderr

    res = cli("harness", str(run), "--model", "hf", "--tasks", "mini")
    assert res.returncode == 2 and "dualobj harness sets lm-eval's --model itself" in res.stderr


def test_a_missing_extra_names_the_install_command():
    from dualobj.interop.runs import require_extra

    with pytest.raises(ConfigError, match=r"pip install 'dualobj\[harness\]'"):
        require_extra("no_such_module_for_dualobj", "harness", "lm-evaluation-harness")
