"""Tasks declared in YAML: the shipped declarations read small files in the public layouts of their data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualobj.errors import ConfigError, DataError
from dualobj.evaluate.declared import get_path, load_declaration
from dualobj.evaluate.registry import DECLARED_TASKS, TASK_SETS, check_task_names, expand_tasks, get_task

HELLASWAG = [{"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
              "ctx_b": "then", "ctx": "Then, the man writes over the snow. then",
              "endings": [", the man continues removing the snow.", ", a woman drives.", " he stops.", " it rains."],
              "label": 2, "split": "val"},
             {"activity_label": "Baking", "ctx": "She mixes the flour", "endings": ["a", "b", "c", "d"], "label": 0}]
CSQA = [{"answerKey": "B", "id": "q1", "question": {"question_concept": "river", "stem": "Where does a river go?",
         "choices": [{"label": "A", "text": "desert"}, {"label": "B", "text": "sea"}, {"label": "C", "text": "sky"},
                     {"label": "D", "text": "bank"}, {"label": "E", "text": "town"}]}}]
SIQA = [{"context": "Tracy didn't go home that evening.", "question": "What does Tracy need to do before this?",
         "answerA": "make a new plan", "answerB": "Go home and see Riley", "answerC": "Find somewhere to go",
         "label": "3"}]
MMLU = [{"question": "What is 2 + 2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"],
         "answer": 1},
        {"question": "Which gas do plants absorb?", "subject": "biology", "choices": ["O2", "CO2", "N2", "H2"],
         "answer": 1}]
FILES = {"hellaswag": ("hellaswag/hellaswag_val.jsonl", HELLASWAG), "commonsense_qa":
         ("commonsense_qa/dev_rand_split.jsonl", CSQA), "siqa": ("siqa/dev.jsonl", SIQA),
         "mmlu": ("mmlu/test.jsonl", MMLU)}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def bench(tmp_path) -> Path:
    for rel, rows in FILES.values():
        write_jsonl(tmp_path / rel, rows)
    return tmp_path


def test_the_paper_tasks_missing_from_the_shared_files_are_declared():
    assert {"hellaswag", "commonsense_qa", "siqa", "mmlu"} <= set(DECLARED_TASKS)
    assert set(TASK_SETS["paper9"]) <= {"arc_easy", "arc_challenge", "blimp", "openbookqa", "piqa", *DECLARED_TASKS}
    assert expand_tasks(["val", "paper9", "piqa"])[:3] == ["val", "arc_easy", "arc_challenge"]
    assert expand_tasks(["paper9", "piqa"]).count("piqa") == 1


def test_shipped_declarations_read_their_public_layouts(bench):
    hs = get_task("hellaswag", bench)
    item = hs.items()[0]
    assert item.gold == 2 and len(item.requests) == 4
    assert item.requests[0].context == "Removing ice from car: Then, the man writes over the snow. then"
    assert item.requests[2].continuation == " he stops."
    assert hs.chance == 0.25 and hs.recipe()["declaration"].endswith("hellaswag.yaml")
    q = get_task("commonsense_qa", bench).items()[0]
    assert q.gold == 1 and [r.continuation for r in q.requests][:2] == [" desert", " sea"]
    assert q.requests[0].context == "Question: Where does a river go?\nAnswer:"
    s = get_task("siqa", bench).items()[0]
    assert s.gold == 2 and s.requests[2].continuation == " Find somewhere to go"  # label "3" is 1-based
    m = get_task("mmlu", bench)
    assert len(m) == 2 and [it.gold for it in m.items()] == [1, 1] and m.items()[1].requests[1].continuation == " CO2"


def test_task_files_point_a_declaration_at_any_file(tmp_path):
    f = write_jsonl(tmp_path / "elsewhere" / "my_mmlu.jsonl", MMLU[:1])
    task = get_task("mmlu", tmp_path / "no-bench", task_files={"mmlu": str(f)})
    assert len(task) == 1 and task.items()[0].gold == 1
    with pytest.raises(DataError, match="not found"):
        get_task("mmlu", tmp_path / "no-bench")  # skipped at the end of training, like a missing benchmark


def test_a_declaration_given_as_a_path_scores_its_own_layout(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", [{"ok": "The cats sleep.", "no": "The cats sleeps."}])
    write_jsonl(tmp_path / "cloze.jsonl", [{"text": "The sun rises in the", "word": "east"}])
    # YAML reads a bare no as false
    (tmp_path / "pairs.yaml").write_text("kind: pairs\nfile: pairs.jsonl\ngood: ok\nbad: 'no'\n")
    (tmp_path / "cloze.yaml").write_text("kind: cloze\nfile: cloze.jsonl\ncontext: text\ncontinuation: word\n")
    pairs = get_task(str(tmp_path / "pairs.yaml"), tmp_path)
    assert pairs.name == "pairs" and pairs.chance == 0.5
    assert [r.continuation for r in pairs.items()[0].requests] == ["The cats sleep.", "The cats sleeps."]
    cloze = get_task(str(tmp_path / "cloze.yaml"), tmp_path)
    assert cloze.items()[0].requests[0].continuation == " east" and cloze.chance == 0.0
    check_task_names([str(tmp_path / "pairs.yaml")], "builtin")


@pytest.mark.parametrize("text, fragment", [
    ("kind: quiz\nfile: x.jsonl\n", "kind='quiz' is not one of choice, cloze, pairs, partial"),
    ("kind: choice\nfile: x.jsonl\ncontext: q\n",
     "a choice task needs the key(s) choices, gold; add choices: ... and gold: ... to the declaration"),
    ("kind: pairs\nfile: x.jsonl\ngood: a\nbad: b\nanswer: c\n", "unknown key(s) ['answer']"),
    ("kind: pairs\nfile: x.jsonl\ngood: a\nbad: b\nchance: 2\n", "chance=2 must be a number in [0, 1)"),
    ("- a list\n", "must be a mapping"),
])
def test_bad_declarations_get_one_line(tmp_path, text, fragment):
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_declaration(tmp_path / "t.yaml")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_a_line_without_the_declared_field_names_the_line_and_the_field(bench):
    write_jsonl(bench / "mmlu" / "test.jsonl", [*MMLU, {"question": "q", "choices": ["a", "b"]}])
    with pytest.raises(DataError, match=r"line 3: no field answer .*fix the declaration's field names"):
        get_task("mmlu", bench)
    write_jsonl(bench / "siqa" / "dev.jsonl", [{**SIQA[0], "label": "7"}])
    with pytest.raises(DataError, match=r"line 1: field label = 7 names none of its 3 choices"):
        get_task("siqa", bench)


def test_a_declared_task_without_its_file_names_the_simplest_fix(tmp_path, bench):
    (tmp_path / "hs.yaml").write_text("kind: choice\nfile: hellaswag/val.jsonl\ncontext: ctx\nchoices: endings\n"
                                      "gold: label\n")
    for folder in (bench, tmp_path / "absent"):
        with pytest.raises(DataError) as e:
            get_task(str(tmp_path / "hs.yaml"), folder)
        msg = str(e.value)
        assert "hellaswag/val.jsonl" in msg and "set eval.task_files.hs=<path of the file>" in msg, msg
        assert "\n" not in msg


def test_field_paths():
    obj = {"a": {"b": [{"c": 1}, {"c": 2}]}, "x": ["p", "q"]}
    assert get_path(obj, "a.b[].c") == [1, 2] and get_path(obj, "x[1]") == "q" and get_path(obj, "a.b[0].c") == 1


def test_dualobj_eval_scores_a_declared_task(tmp_path, micro, bench):
    from dualobj import config
    from dualobj.evaluate.evaluator import evaluate
    from dualobj.train import train

    out = tmp_path / "r"
    train(config.load([*micro, "train.tokens=1024", f"out={out}"]))
    mine = write_jsonl(tmp_path / "mine.jsonl", MMLU)
    res = evaluate(out, ["eval.tasks=[commonsense_qa,mmlu]", f"eval.benchmark_dir={bench}", "eval.modes=[ar,md]",
                         f"eval.task_files.mmlu={mine}"], say=lambda m: None)
    assert res["tasks"] == ["commonsense_qa", "mmlu"]
    d = json.loads((out / "eval" / "mmlu.json").read_text())
    assert d["n_items"] == 2 and d["task_recipe"]["source"] == str(mine) and d["results"]["md"]["chance"] == 0.25
    assert res["headline"]["eval_n/commonsense_qa"] == 1
