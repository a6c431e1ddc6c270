"""Zero-shot benchmark tasks: read the public files, turn them into likelihood requests, score the answers.

A task yields ``Item``s; each item is a list of ``Request``s (log p(continuation | context) queries) and the
index of the correct one. The scorer answers every request with a ``Score``; ``Task.score`` turns those into
accuracies. Four kinds:

- ``pairs`` (BLiMP): ``[Request("", good), Request("", bad)]``; correct when good's total log-likelihood is
  strictly higher. Reported overall, per ``field`` and per paradigm (``UID``).
- ``choice`` (PIQA, ARC, COPA, OpenBookQA, probe_mc): ``Request(query, " " + choice)`` per choice; ``acc`` is
  the argmax of the summed log-likelihood, ``acc_norm`` the argmax of log-likelihood per UTF-8 byte of the
  choice text (without the joining space). Ties go to the lowest index (``numpy.argmax``).
- ``cloze`` (LAMBADA, probe_cloze): one ``Request(context, " " + continuation)``; correct when every
  continuation token is the model's argmax (``Score.greedy``). Also the mean log-likelihood and the per-token
  perplexity of the continuation.
- ``partial`` (WinoGrande, WSC): ``Request(option, " " + continuation)`` per context option; the option under
  which the shared continuation is most likely wins.

Joining: wherever a context and a continuation are joined, trailing whitespace of the context and leading
whitespace of the continuation are dropped and exactly one space is put between them (PIQA queries end in
"\\n" and one LAMBADA continuation starts with "\\n\\n" in the public files).

Scores are chance-normalised: ``score = 100 * (acc - chance) / (1 - chance)`` (0 = chance, 100 = perfect,
negative = below chance).

Bad benchmark files raise ``DataError`` naming the file, the line and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dualobj.errors import DataError

ENV_VAR = "DUALOBJ_BENCHMARKS"
PROBE_TASKS = ("probe_mc", "probe_cloze")
_HOW_TO_SET = f"set eval.benchmark_dir=<folder with blimp/ and gauntlet/> or {ENV_VAR}=<that folder>"


# --------------------------------------------------------------------------- the interface


@dataclass(frozen=True)
class Request:
    """One likelihood query: log p(continuation | context)."""

    context: str  # may be "" (the scorer always prepends the document-start token)
    continuation: str  # the scored part; for multiple choice this is " " + choice


@dataclass
class Item:
    """One benchmark question: its requests and which one is correct."""

    requests: list[Request]  # e.g. one per choice; BLiMP: [good, bad]
    gold: int  # index of the correct request (cloze: 0, a single request)
    meta: dict = field(default_factory=dict)  # e.g. {"field": ..., "uid": ...} for per-group accuracy


@dataclass
class Score:
    """The scorer's answer to one Request."""

    logprob: float  # summed log-likelihood of the continuation tokens (nats)
    n_tokens: int  # number of continuation tokens
    greedy: bool  # every continuation token is the model's argmax (exact-match decoding)


def chance_normalise(acc: float, chance: float) -> float:
    """100 * (acc - chance) / (1 - chance): 0 at chance, 100 when perfect, negative below chance."""
    if not 0.0 <= chance < 1.0:
        raise ValueError(f"chance={chance} must be in [0, 1)")
    return 100.0 * (acc - chance) / (1.0 - chance)


def join_pair(context: str, continuation: str) -> Request:
    """Request with exactly one space between a non-empty context and the continuation."""
    if not context.strip():
        return Request("", continuation.strip())
    return Request(context.rstrip(), " " + continuation.strip())


def choice_bytes(request: Request) -> int:
    """UTF-8 byte length of a choice's text (the continuation without the joining space), at least 1."""
    return max(1, len(request.continuation.lstrip().encode("utf-8")))


def _check_scores(items: list[Item], scores: list[list[Score]]) -> None:
    if not items:
        raise ValueError("no items to score")
    if len(scores) != len(items):
        raise ValueError(f"{len(scores)} score lists for {len(items)} items")
    for i, (item, s) in enumerate(zip(items, scores, strict=True)):
        if len(s) != len(item.requests):
            raise ValueError(f"item {i}: {len(s)} scores for {len(item.requests)} requests")


def _seeded_subset(n: int, limit: int | None, rng: np.random.Generator) -> list[int]:
    """Indices of `limit` of n items, without replacement, in their original order (all when limit >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(int(i) for i in rng.choice(n, size=limit, replace=False))


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be a positive number of items, or None for all of them")


class Task:
    """A zero-shot task: its items, how to score the scorer's answers, and the recipe that defines it."""

    name: str
    kind: str  # "pairs" | "choice" | "cloze" | "partial"
    prompt: str = ""  # how requests are built (for the recipe)
    scoring: str = ""  # how the answers become accuracies (for the recipe)

    def __init__(self, name: str, all_items: list[Item], source: dict[str, Any]):
        if not all_items:
            raise DataError(f"task {name} has no items ({source.get('source')}); give a non-empty benchmark file")
        self.name = name
        self._items = all_items
        self.source = source  # where the items came from (file + sha256, or corpus settings)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def chance(self) -> float:
        return self._chance(self._items)

    def _chance(self, items: list[Item]) -> float:
        return float(np.mean([1.0 / len(it.requests) for it in items]))

    def items(self, limit: int | None = None, seed: int = 0) -> list[Item]:
        """All items, or a seeded subsample of `limit` of them without replacement, kept in file order."""
        _check_limit(limit)
        idx = _seeded_subset(len(self._items), limit, np.random.default_rng(seed))
        return [self._items[i] for i in idx]

    def score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        raise NotImplementedError

    def recipe(self) -> dict[str, Any]:
        """Everything that defines the numbers: prompt format, scoring, normalisation, chance, source."""
        return {
            "task": self.name,
            "kind": self.kind,
            "n_items": len(self._items),
            "prompt": self.prompt,
            "scoring": self.scoring,
            "normalisation": "score = 100 * (acc - chance) / (1 - chance): 0 = chance, 100 = perfect",
            "chance": self.chance,
            "limit": "a seeded subsample (numpy default_rng(seed)) without replacement, kept in file order",
            **self.source,
        }


class PairsTask(Task):
    """Minimal pairs (BLiMP): the good sentence must be more likely than the bad one."""

    kind = "pairs"
    prompt = 'Request("", sentence_good) and Request("", sentence_bad): whole sentences after the document-start token'
    scoring = ("correct when logprob(good) > logprob(bad) (strictly; summed nats); acc overall, per field "
               "and per paradigm (UID); score = chance-normalised acc")

    def _chance(self, items: list[Item]) -> float:
        return 0.5

    def items(self, limit: int | None = None, seed: int = 0) -> list[Item]:
        """Stratified over paradigms: limit // P items each (at least 1), the remainder to seeded paradigms.

        With limit below the number of paradigms P every paradigm still gets one item (P items in all).
        """
        _check_limit(limit)
        if limit is None or limit >= len(self._items):
            return list(self._items)
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(self._items):
            groups.setdefault(it.meta.get("uid", ""), []).append(i)
        names = list(groups)
        rng = np.random.default_rng(seed)
        total = max(limit, len(names))
        quota = dict.fromkeys(names, total // len(names))
        for j in rng.choice(len(names), size=total % len(names), replace=False):
            quota[names[int(j)]] += 1
        chosen: list[int] = []
        for name in names:
            idx = groups[name]
            chosen += [idx[k] for k in _seeded_subset(len(idx), quota[name], rng)]
        return [self._items[i] for i in sorted(chosen)]

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), "limit": "stratified: about limit/P items per paradigm (at least 1), "
                "seeded (numpy default_rng(seed)), kept in file order"}

    def score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        _check_scores(items, scores)
        right = [s[it.gold].logprob > s[1 - it.gold].logprob for it, s in zip(items, scores, strict=True)]
        by_field: dict[str, list[bool]] = {}
        by_uid: dict[str, list[bool]] = {}
        for it, ok in zip(items, right, strict=True):
            by_field.setdefault(str(it.meta.get("field", "unknown")), []).append(ok)
            by_uid.setdefault(str(it.meta.get("uid", "unknown")), []).append(ok)
        acc = float(np.mean(right))
        return {
            "acc": acc,
            "score": chance_normalise(acc, 0.5),
            "n": len(items),
            "chance": 0.5,
            "per_field": {k: float(np.mean(v)) for k, v in sorted(by_field.items())},
            "per_paradigm": {k: float(np.mean(v)) for k, v in sorted(by_uid.items())},
            "n_per_field": {k: len(v) for k, v in sorted(by_field.items())},
        }


class ChoiceTask(Task):
    """Multiple choice: the gold continuation must be the most likely one."""

    kind = "choice"
    prompt = 'Request(query, " " + choice) per choice (query right-stripped, choice stripped)'
    scoring = ("acc = argmax of summed logprob (nats) over choices; acc_norm = argmax of logprob / UTF-8 bytes "
               "of the choice text; ties -> lowest index. score = chance-normalised acc, score_norm = "
               "chance-normalised acc_norm; chance = mean over items of 1/len(choices)")

    def score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        _check_scores(items, scores)
        right, right_norm = [], []
        for it, s in zip(items, scores, strict=True):
            lp = np.array([x.logprob for x in s], dtype=float)
            nb = np.array([choice_bytes(r) for r in it.requests], dtype=float)
            right.append(int(np.argmax(lp)) == it.gold)
            right_norm.append(int(np.argmax(lp / nb)) == it.gold)
        acc, acc_norm, chance = float(np.mean(right)), float(np.mean(right_norm)), self._chance(items)
        return {
            "acc": acc,
            "acc_norm": acc_norm,
            "score": chance_normalise(acc, chance),
            "score_norm": chance_normalise(acc_norm, chance),
            "n": len(items),
            "chance": chance,
        }


class ClozeTask(Task):
    """Cloze: the continuation must be the model's greedy (argmax) prediction, token by token."""

    kind = "cloze"
    prompt = 'Request(context, " " + continuation): context right-stripped, continuation stripped'
    scoring = ("acc = fraction of items whose every continuation token is the argmax (greedy exact match); "
               "logprob = mean summed logprob per item (nats); ppl = exp(-sum logprob / sum tokens); "
               "chance 0, so score = 100 * acc")

    def _chance(self, items: list[Item]) -> float:
        return 0.0

    def score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        _check_scores(items, scores)
        first = [s[it.gold] for it, s in zip(items, scores, strict=True)]
        acc = float(np.mean([x.greedy for x in first]))
        total_lp = float(sum(x.logprob for x in first))
        total_tok = int(sum(x.n_tokens for x in first))
        return {
            "acc": acc,
            "score": chance_normalise(acc, 0.0),
            "n": len(items),
            "chance": 0.0,
            "logprob": total_lp / len(items),
            "ppl": math.exp(-total_lp / total_tok) if total_tok else float("nan"),
            "n_tokens": total_tok,
        }


class PartialTask(Task):
    """Partial scoring: the shared continuation must be most likely under the gold context option."""

    kind = "partial"
    prompt = 'Request(option, " " + continuation) per context option (option right-stripped, continuation stripped)'
    scoring = ("acc = argmax over options of the continuation's summed logprob (nats), ties -> lowest "
               "index; score = chance-normalised acc; chance = mean over items of 1/len(options)")

    def score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        _check_scores(items, scores)
        right = [int(np.argmax([x.logprob for x in s])) == it.gold for it, s in zip(items, scores, strict=True)]
        acc, chance = float(np.mean(right)), self._chance(items)
        return {"acc": acc, "score": chance_normalise(acc, chance), "n": len(items), "chance": chance}


# --------------------------------------------------------------------------- reading the files


def _bad(path: Path, n: int, what: str, fix: str = "fix or remove that line") -> DataError:
    return DataError(f"benchmark file {path}, line {n}: {what}; {fix}")


def _read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], str]:
    """(line number, object) for every non-blank line, and the file's sha256."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise _bad(path, line, f"is not UTF-8 (bad byte at offset {e.start})", "re-encode the file as UTF-8") from None
    rows = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(path, n, f"is not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise _bad(path, n, f"is a JSON {type(obj).__name__}, not an object")
        rows.append((n, obj))
    if not rows:
        raise DataError(f"benchmark file {path} has no items (empty file); give the complete benchmark file")
    return rows, hashlib.sha256(raw).hexdigest()


def _get_str(path: Path, n: int, obj: dict, key: str, fmt: str, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        has = ", ".join(map(repr, obj)) or "no fields"
        problem = "is empty" if isinstance(value, str) else f"is missing or not a string (the line has {has})"
        raise _bad(path, n, f"field {key!r} {problem}", f"each line must be {fmt}")
    return value


def _get_options(path: Path, n: int, obj: dict, key: str, fmt: str) -> list[str]:
    value = obj.get(key)
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) and v.strip() for v in value):
        raise _bad(path, n, f"field {key!r} must be a list of at least 2 non-empty strings, got {value!r:.80}",
                   f"each line must be {fmt}")
    return value


def _get_gold(path: Path, n: int, obj: dict, n_options: int, fmt: str) -> int:
    gold = obj.get("gold")
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < n_options:
        raise _bad(path, n, f"gold={gold!r} is not an index into its {n_options} options (0..{n_options - 1})",
                   f"each line must be {fmt}")
    return gold


_CHOICE_FMT = '{"query": str, "choices": [str, ...], "gold": int}'
_CLOZE_FMT = '{"context": str, "continuation": str}'
_PARTIAL_FMT = '{"context_options": [str, ...], "continuation": str, "gold": int}'
_BLIMP_FMT = '{"sentence_good": str, "sentence_bad": str, "field": str, "UID": str, ...}'


def load_choice(path: Path) -> tuple[list[Item], str]:
    rows, sha = _read_jsonl(path)
    items = []
    for n, obj in rows:
        query = _get_str(path, n, obj, "query", _CHOICE_FMT, allow_empty=True)
        choices = _get_options(path, n, obj, "choices", _CHOICE_FMT)
        gold = _get_gold(path, n, obj, len(choices), _CHOICE_FMT)
        items.append(Item([join_pair(query, c) for c in choices], gold, {"line": n}))
    return items, sha


def load_cloze(path: Path) -> tuple[list[Item], str]:
    rows, sha = _read_jsonl(path)
    items = []
    for n, obj in rows:
        context = _get_str(path, n, obj, "context", _CLOZE_FMT)
        continuation = _get_str(path, n, obj, "continuation", _CLOZE_FMT)
        items.append(Item([join_pair(context, continuation)], 0, {"line": n}))
    return items, sha


def load_partial(path: Path) -> tuple[list[Item], str]:
    rows, sha = _read_jsonl(path)
    items = []
    for n, obj in rows:
        options = _get_options(path, n, obj, "context_options", _PARTIAL_FMT)
        continuation = _get_str(path, n, obj, "continuation", _PARTIAL_FMT)
        gold = _get_gold(path, n, obj, len(options), _PARTIAL_FMT)
        items.append(Item([join_pair(o, continuation) for o in options], gold, {"line": n}))
    return items, sha


def load_blimp(folder: Path) -> tuple[list[Item], str, int]:
    """All paradigm files of a BLiMP folder in name order: (items, combined sha256, number of paradigms).

    Field names are normalised: "syntax/semantics" (one paradigm's spelling) becomes "syntax_semantics".
    """
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise DataError(f"benchmark folder {folder} has no <paradigm>.jsonl files; {_HOW_TO_SET}")
    combined = hashlib.sha256()
    items = []
    for path in files:
        rows, sha = _read_jsonl(path)
        combined.update(f"{path.name}\0{sha}\0".encode())
        for n, obj in rows:
            good = _get_str(path, n, obj, "sentence_good", _BLIMP_FMT)
            bad = _get_str(path, n, obj, "sentence_bad", _BLIMP_FMT)
            fld = _get_str(path, n, obj, "field", _BLIMP_FMT).replace("/", "_")
            uid = obj.get("UID", path.stem)
            if not isinstance(uid, str) or not uid:
                raise _bad(path, n, f"field 'UID' must be a non-empty string, got {uid!r}", f"each line must be {_BLIMP_FMT}")
            meta = {"field": fld, "uid": uid, "pair_id": str(obj.get("pairID", n - 1)), "file": path.name, "line": n}
            items.append(Item([Request("", good.strip()), Request("", bad.strip())], 0, meta))
    return items, combined.hexdigest(), len(files)


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class TaskSpec:
    """Where a benchmark lives under the benchmark folder and how to read it."""

    kind: str
    path: str  # relative to the benchmark folder (also looked up without its first folder)
    description: str

    def build(self, name: str, benchmark_dir: Path) -> Task:
        path = _locate(self.path, benchmark_dir)
        source = {"source": self.path, "description": self.description}
        if self.kind == "pairs":
            items, sha, n_files = load_blimp(path)
            return PairsTask(name, items, {**source, "sha256": sha, "n_paradigms": n_files,
                                           "sha256_of": "sha256 over '<file name>\\0<file sha256>\\0' in name order"})
        loader: Callable[[Path], tuple[list[Item], str]] = _LOADERS[self.kind]
        items, sha = loader(path)
        cls = _CLASSES[self.kind]
        return cls(name, items, {**source, "sha256": sha})


_LOADERS = {"choice": load_choice, "cloze": load_cloze, "partial": load_partial}
_CLASSES: dict[str, type[Task]] = {"pairs": PairsTask, "choice": ChoiceTask, "cloze": ClozeTask,
                                   "partial": PartialTask}

TASKS: dict[str, TaskSpec] = {
    "blimp": TaskSpec("pairs", "blimp", "BLiMP, 67 paradigms x 1000 minimal pairs"),
    "piqa": TaskSpec("choice", "gauntlet/piqa.jsonl", "PIQA dev (2 choices)"),
    "arc_easy": TaskSpec("choice", "gauntlet/arc_easy.jsonl", "ARC-Easy test (4 choices)"),
    "arc_challenge": TaskSpec("choice", "gauntlet/arc_challenge.jsonl", "ARC-Challenge test (4 choices)"),
    "copa": TaskSpec("choice", "gauntlet/copa.jsonl", "COPA (2 choices)"),
    "openbookqa": TaskSpec("choice", "gauntlet/openbook_qa.jsonl", "OpenBookQA (4 choices)"),
    "lambada": TaskSpec("cloze", "gauntlet/lambada_openai.jsonl", "LAMBADA, OpenAI detokenised"),
    "winogrande": TaskSpec("partial", "gauntlet/winogrande.jsonl", "WinoGrande dev (partial scoring)"),
    "wsc": TaskSpec("partial", "gauntlet/winograd_wsc.jsonl", "WSC273 (partial scoring)"),
}
KNOWN_TASKS = (*TASKS, *PROBE_TASKS)


def default_benchmark_dir() -> Path:
    """$DUALOBJ_BENCHMARKS, else ../shared/data/benchmarks next to the project root."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"


def _locate(rel: str, benchmark_dir: Path) -> Path:
    if not benchmark_dir.is_dir():
        raise DataError(f"benchmark folder {benchmark_dir} not found (needed for {rel}); {_HOW_TO_SET}")
    candidates = [benchmark_dir / rel, benchmark_dir / Path(rel).name]  # also accept a flat folder
    for c in candidates:
        if c.exists():
            return c
    raise DataError(f"benchmark file {rel} not found under {benchmark_dir}; {_HOW_TO_SET}")


def get_task(name: str, benchmark_dir: Path | str | None = None, *, data: Any = None,
             n_items: int = 500, seed: int = 0) -> Task:
    """A task by name. Benchmarks are read from `benchmark_dir` (default: ``default_benchmark_dir()``);
    the probes (``probe_mc``, ``probe_cloze``) are built from the validation documents of `data` (a
    DataConfig, default the wiki corpus) with `n_items` items and `seed`, and ignore `benchmark_dir`."""
    if name in PROBE_TASKS:
        from dualobj.config import DataConfig
        from dualobj.evaluate.probes import build_probe

        return build_probe(name, data if data is not None else DataConfig(), n_items, seed)
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(KNOWN_TASKS)}")
    root = Path(benchmark_dir).expanduser() if benchmark_dir is not None else default_benchmark_dir()
    return TASKS[name].build(name, root)
