"""Benchmark tasks and built-in probes: loading, request shapes, scoring, limits, bad files, train overlap."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from dualobj.config import DataConfig
from dualobj.errors import DataError
from dualobj.evaluate.probes import build_probe, validation_documents
from dualobj.evaluate.registry import TASKS, get_task
from dualobj.evaluate.tasks import ChoiceTask, ClozeTask, PairsTask, PartialTask, chance_normalise
from dualobj.evaluate.types import Item, Request, Score

BENCH = Path(os.environ.get("DUALOBJ_BENCHMARKS")
             or Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks")
needs_bench = pytest.mark.skipif(
    not BENCH.is_dir(), reason=f"benchmark files not found at {BENCH} (set DUALOBJ_BENCHMARKS to their folder)"
)

COUNTS = {"piqa": 1838, "arc_easy": 2376, "arc_challenge": 1172, "copa": 100, "openbookqa": 500,
          "lambada": 5153, "winogrande": 1267, "wsc": 273}


def S(lp: float, n: int = 1, greedy: bool = False) -> Score:
    return Score(logprob=lp, n_tokens=n, greedy=greedy)


@pytest.fixture(scope="module")
def blimp():
    return get_task("blimp", BENCH)


# --------------------------------------------------------------------------- real files


@needs_bench
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_real_task_counts_and_shapes(name):
    task = get_task(name, BENCH)
    items = task.items(None, 0)
    assert len(items) == COUNTS[name] == len(task)
    for it in items:
        assert 0 <= it.gold < len(it.requests)
        for r in it.requests:
            assert r.context and r.context == r.context.rstrip(), r
            # exactly one space between context and continuation
            assert r.continuation.startswith(" ") and not r.continuation[1:2].isspace(), r
            assert r.continuation == r.continuation.rstrip()
    kinds = {"lambada": "cloze", "winogrande": "partial", "wsc": "partial"}
    assert task.kind == kinds.get(name, "choice")
    if task.kind == "cloze":
        assert all(len(it.requests) == 1 and it.gold == 0 for it in items)
    if task.kind == "partial":  # the continuation is shared, the contexts differ
        assert all(len({r.continuation for r in it.requests}) == 1 for it in items)
        assert all(len({r.context for r in it.requests}) == 2 for it in items)
    rec = task.recipe()
    assert rec["source"] == TASKS[name].path and len(rec["sha256"]) == 64
    assert rec["chance"] == {"arc_easy": 0.25, "arc_challenge": 0.25, "openbookqa": 0.25, "lambada": 0.0}.get(name, 0.5)


@needs_bench
def test_real_request_text():
    piqa = get_task("piqa", BENCH).items()[1]  # query "Question: dresser\n" ends in a newline in the file
    assert piqa.requests[0] == Request("Question: dresser", " replace drawer with bobby pin")
    assert piqa.gold == 1
    copa = get_task("copa", BENCH).items()[0]
    assert copa.requests[1] == Request("The man turned on the faucet, therefore", " water flowed from the spout.")
    lam = get_task("lambada", BENCH).items()
    assert lam[0].requests[0].continuation == " signs"
    assert lam[0].requests[0].context.endswith("I don't care about")
    assert lam[4462].requests[0].continuation == " recorder"  # "\n\nrecorder" in the file
    wino = get_task("winogrande", BENCH).items()[0]
    assert wino.requests[1] == Request("Sarah was a much better surgeon than Maria so Maria",
                                       " always got the easier cases.")
    assert wino.gold == 1


@needs_bench
def test_blimp_loads_all_pairs(blimp):
    items = blimp.items()
    assert len(items) == 67_000 and blimp.recipe()["n_paradigms"] == 67
    assert all(it.gold == 0 and len(it.requests) == 2 and it.requests[0].context == "" for it in items)
    assert len({it.meta["uid"] for it in items}) == 67
    assert {it.meta["field"] for it in items} == {"morphology", "syntax", "semantics", "syntax_semantics"}
    first = items[0]
    assert first.meta["uid"] == "adjunct_island"
    assert first.requests[0].continuation == "Who should Derek hug after shocking Richard?"


@needs_bench
def test_blimp_limit_stratified(blimp):
    a = blimp.items(670, seed=1)
    assert len(a) == 670
    per = {}
    for it in a:
        per[it.meta["uid"]] = per.get(it.meta["uid"], 0) + 1
    assert len(per) == 67 and set(per.values()) == {10}
    assert [it.meta["pair_id"] for it in a] == [it.meta["pair_id"] for it in blimp.items(670, seed=1)]
    assert [id(x) for x in a] != [id(x) for x in blimp.items(670, seed=2)]
    small = blimp.items(100, seed=0)
    assert len(small) == 100 and len({it.meta["uid"] for it in small}) == 67
    assert len(blimp.items(5, seed=0)) == 67  # at least one per paradigm
    assert len(blimp.items(10**6, seed=0)) == 67_000


@needs_bench
def test_limit_deterministic_and_ordered():
    task = get_task("arc_easy", BENCH)
    a, b, c = task.items(50, 3), task.items(50, 3), task.items(50, 4)
    lines = [it.meta["line"] for it in a]
    assert len(a) == 50 and lines == [it.meta["line"] for it in b] and lines == sorted(lines)
    assert lines != [it.meta["line"] for it in c]
    assert len(task.items(2376, 0)) == len(task.items(5000, 0)) == 2376
    with pytest.raises(ValueError, match="limit"):
        task.items(0, 0)


# --------------------------------------------------------------------------- scoring on hand-made items


def _mc_item(gold: int, choices: list[str]) -> Item:
    return Item([Request("Q:", " " + c) for c in choices], gold, {})


def test_choice_scoring_acc_and_acc_norm():
    choices = ["a", "bbbbbbbbbb", "cc", "dd"]  # 1, 10, 2, 2 bytes
    items = [_mc_item(g, choices) for g in (0, 1, 2, 3)]
    scores = [
        [S(-1.0), S(-5.0), S(-6.0), S(-7.0)],  # acc right; per byte: -1, -0.5, -3, -3.5 -> 1 (wrong)
        [S(-3.0), S(-2.0), S(-6.0), S(-7.0)],  # acc right; per byte -3, -0.2 -> 1 right
        [S(-1.0), S(-9.0), S(-1.5), S(-8.0)],  # acc wrong (0); per byte -1, -0.9, -0.75 -> 2 right
        [S(-9.0), S(-9.0), S(-9.0), S(-1.0)],  # both right
    ]
    out = ChoiceTask("mc", items, {}).score(items, scores)
    assert out["acc"] == pytest.approx(0.75) and out["acc_norm"] == pytest.approx(0.75)
    assert out["n"] == 4 and out["chance"] == pytest.approx(0.25)
    assert out["score"] == pytest.approx(100 * (0.75 - 0.25) / 0.75)
    # drop the last item: acc 2/3, acc_norm 2/3 but on different items
    out3 = ChoiceTask("mc", items, {}).score(items[:2], scores[:2])
    assert out3["acc"] == 1.0 and out3["acc_norm"] == 0.5 and out3["score_norm"] == pytest.approx(100 / 3)


def test_choice_chance_is_mean_over_items():
    items = [_mc_item(0, ["x", "y"]), _mc_item(0, ["x", "y", "z", "w"])]
    task = ChoiceTask("mc", items, {})
    assert task.chance == pytest.approx((0.5 + 0.25) / 2)
    out = task.score(items, [[S(0), S(-1)], [S(-1), S(0), S(-2), S(-3)]])
    assert out["acc"] == 0.5 and out["chance"] == pytest.approx(0.375)


def test_chance_normalisation():
    assert chance_normalise(0.25, 0.25) == pytest.approx(0.0)
    assert chance_normalise(1.0, 0.25) == pytest.approx(100.0)
    assert chance_normalise(0.5, 0.25) == pytest.approx(33.333333)
    assert chance_normalise(0.4, 0.5) == pytest.approx(-20.0)
    assert chance_normalise(0.3, 0.0) == pytest.approx(30.0)


def test_pairs_scoring_per_field_and_paradigm():
    def pair(field, uid):
        return Item([Request("", "good"), Request("", "bad")], 0, {"field": field, "uid": uid})

    items = [pair("syntax", "a"), pair("syntax", "a"), pair("syntax", "b"), pair("morphology", "c")]
    scores = [[S(-1), S(-2)], [S(-3), S(-2)], [S(-1), S(-1)], [S(-1), S(-4)]]  # right, wrong, tie=wrong, right
    out = PairsTask("blimp", items, {}).score(items, scores)
    assert out["acc"] == 0.5 and out["score"] == 0.0 and out["n"] == 4
    assert out["per_field"] == {"morphology": 1.0, "syntax": pytest.approx(1 / 3)}
    assert out["per_paradigm"] == {"a": 0.5, "b": 0.0, "c": 1.0}


def test_cloze_scoring_greedy_and_perplexity():
    items = [Item([Request("ctx", " w")], 0, {}) for _ in range(4)]
    scores = [[S(-1.0, 1, True)], [S(-2.0, 2, False)], [S(-0.5, 1, True)], [S(-4.5, 2, True)]]
    out = ClozeTask("lambada", items, {}).score(items, scores)
    assert out["acc"] == 0.75 and out["score"] == 75.0 and out["chance"] == 0.0
    assert out["logprob"] == pytest.approx(-2.0)
    assert out["ppl"] == pytest.approx(2.718281828 ** (8.0 / 6.0))


def test_partial_scoring_picks_max():
    items = [Item([Request("A did it because A", " was tired."), Request("A did it because B", " was tired.")], g, {})
             for g in (0, 1, 1)]
    scores = [[S(-3), S(-4)], [S(-3), S(-4)], [S(-5), S(-1)]]
    out = PartialTask("wino", items, {}).score(items, scores)
    assert out["acc"] == pytest.approx(2 / 3) and out["score"] == pytest.approx(100 / 3)


def test_score_shape_mismatch_is_an_error():
    items = [_mc_item(0, ["x", "y"])]
    with pytest.raises(ValueError):
        ChoiceTask("mc", items, {}).score(items, [[S(0)]])


# --------------------------------------------------------------------------- registry and bad files


def _write(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def test_unknown_task_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="unknown task 'nope'.*piqa.*probe_mc"):
        get_task("nope", tmp_path)
    with pytest.raises(DataError, match=r"gauntlet/piqa.jsonl not found under .*DUALOBJ_BENCHMARKS"):
        get_task("piqa", tmp_path)
    with pytest.raises(DataError, match="benchmark folder .* not found"):
        get_task("piqa", tmp_path / "absent")
    (tmp_path / "blimp").mkdir()
    with pytest.raises(DataError, match="no <paradigm>.jsonl"):
        get_task("blimp", tmp_path)


GOOD_MC = {"query": "Q?", "choices": ["a", "b"], "gold": 1}


@pytest.mark.parametrize("bad, message", [
    ('{"query": "Q?", "choices": ["a", "b"], "gold": 2}', "gold=2 is not an index"),
    ('{"query": "Q?", "choices": ["a", "b"], "gold": true}', "gold=True"),
    ('{"query": "Q?", "choices": ["a"], "gold": 0}', "'choices' must be a list of at least 2"),
    ('{"choices": ["a", "b"], "gold": 0}', "'query' is missing"),
    ('{"query": "Q?", "choices": ["a", "b"], "gold": 0', "not valid JSON"),
    ('["Q?", "a", "b"]', "not an object"),
])
def test_bad_choice_file(tmp_path, bad, message):
    _write(tmp_path / "gauntlet" / "copa.jsonl", [GOOD_MC, GOOD_MC, bad])
    with pytest.raises(DataError) as e:
        get_task("copa", tmp_path)
    text = str(e.value)
    assert "copa.jsonl" in text and "line 3" in text and message in text and "\n" not in text


def test_bad_blimp_cloze_partial_files(tmp_path):
    good = {"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep.", "field": "morphology", "UID": "p1"}
    _write(tmp_path / "blimp" / "p1.jsonl", [good, "", {"sentence_bad": "x", "field": "syntax", "UID": "p1"}])
    with pytest.raises(DataError, match=r"p1.jsonl, line 3: field 'sentence_good' is missing"):
        get_task("blimp", tmp_path)
    _write(tmp_path / "gauntlet" / "lambada_openai.jsonl", [{"context": "a b", "continuation": "  "}])
    with pytest.raises(DataError, match=r"lambada_openai.jsonl, line 1: field 'continuation' is empty"):
        get_task("lambada", tmp_path)
    _write(tmp_path / "gauntlet" / "winogrande.jsonl",
           [{"context_options": ["a", "b"], "continuation": "c", "gold": -1}])
    with pytest.raises(DataError, match=r"winogrande.jsonl, line 1: gold=-1"):
        get_task("winogrande", tmp_path)
    _write(tmp_path / "gauntlet" / "winograd_wsc.jsonl", [])
    with pytest.raises(DataError, match="winograd_wsc.jsonl has no items"):
        get_task("wsc", tmp_path)
    (tmp_path / "gauntlet" / "piqa.jsonl").write_bytes(b'{"query": "Q", "choices": ["a", "b"], "gold": 0}\n\xff\xfe\n')
    with pytest.raises(DataError, match=r"piqa.jsonl, line 2: is not UTF-8"):
        get_task("piqa", tmp_path)


def test_own_benchmark_dir_flat_and_spacing(tmp_path):
    _write(tmp_path / "lambada_openai.jsonl", [{"context": "He said ", "continuation": "hello"},
                                               {"context": "He said", "continuation": "\n\nhello"}])
    items = get_task("lambada", tmp_path).items()
    assert [it.requests[0] for it in items] == [Request("He said", " hello")] * 2


# --------------------------------------------------------------------------- probes


@pytest.fixture(scope="module")
def corpus_split():
    return validation_documents(DataConfig())


@pytest.fixture(scope="module")
def probe_mc():
    return build_probe("probe_mc", DataConfig(), 60, seed=7)


@pytest.fixture(scope="module")
def probe_cloze():
    return build_probe("probe_cloze", DataConfig(), 60, seed=7)


def test_probe_mc_items(probe_mc, corpus_split):
    _, val = corpus_split
    items = probe_mc.items()
    assert len(items) == 60 and probe_mc.kind == "choice" and probe_mc.chance == 0.25
    golds = set()
    for it in items:
        assert len(it.requests) == 4 and len({r.context for r in it.requests}) == 1
        texts = [r.continuation for r in it.requests]
        assert all(t.startswith(" ") for t in texts) and len(set(texts)) == 4
        n = it.meta["n_words"]
        assert 10 <= n <= 20 and all(len(t.split()) == n for t in texts)
        doc = val[it.meta["doc"]]
        real = texts[it.gold]
        # the gold choice is the real next words of the document (modulo whitespace), the others are not
        ctx = it.requests[0].context
        assert doc.startswith(ctx)
        assert " ".join(doc[len(ctx):].split()[:n]) == real.strip()
        assert all(" ".join(doc.split()).find(ctx.split()[-1] + t) < 0 for i, t in enumerate(texts) if i != it.gold)
        assert len(ctx.split()) >= 15
        golds.add(it.gold)
    assert golds == {0, 1, 2, 3}
    rec = probe_mc.recipe()
    assert rec["val_fraction"] == 0.05 and rec["order_seed"] == 1234 and rec["n_items"] == 60 and rec["seed"] == 7


def test_probe_cloze_items(probe_cloze, corpus_split):
    _, val = corpus_split
    items = probe_cloze.items()
    assert len(items) == 60 and probe_cloze.kind == "cloze"
    for it in items:
        (r,) = it.requests
        word = r.continuation[1:]
        assert r.continuation.startswith(" ") and re.fullmatch(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", word)
        assert len(word) >= 2 and word[-1].isalpha()  # trailing punctuation left out
        assert len(r.context.split()) >= 20
        doc = val[it.meta["doc"]]
        assert doc.startswith(r.context) and doc[len(r.context):].lstrip().startswith(word)


def test_probes_never_overlap_train(probe_mc, probe_cloze, corpus_split):
    train, _ = corpus_split
    text = "\0".join(train)
    for task in (probe_mc, probe_cloze):
        for it in task.items():
            ctx = it.requests[0].context
            assert ctx[:60] not in text and ctx[-60:] not in text
            for r in it.requests:
                assert r.continuation.strip() not in text or task.kind == "cloze"  # one word may well occur
                assert (ctx + r.continuation)[-60:] not in text


def test_probes_deterministic(probe_mc):
    again = build_probe("probe_mc", DataConfig(), 60, seed=7).items()
    assert [it.requests for it in again] == [it.requests for it in probe_mc.items()]
    assert [it.gold for it in again] == [it.gold for it in probe_mc.items()]
    other = build_probe("probe_mc", DataConfig(), 60, seed=8).items()
    assert [it.requests for it in other] != [it.requests for it in again]


def test_probe_via_get_task_and_unknown():
    task = get_task("probe_cloze", None, data=DataConfig(), n_items=5, seed=0)
    assert len(task) == 5 and task.recipe()["n_built"] == 5
    with pytest.raises(DataError, match="unknown probe"):
        build_probe("probe_x", DataConfig(), 5, 0)
