"""Tasks declared in YAML: a file of JSON lines, field names or templates, a kind and a chance level; no code.

A declaration (``conf/eval/tasks/<name>.yaml``, or any path given as a task name)::

    name: commonsense_qa                       # default: the file's stem
    kind: choice                               # choice | cloze | pairs | partial (see dualobj.evaluate.tasks)
    file: commonsense_qa/dev_rand_split.jsonl  # absolute or under the benchmark folder (eval.task_files overrides)
    description: CommonsenseQA dev (5 choices)
    context: "Question: {question.stem}\\nAnswer:"     # choice, cloze: the prompt
    choices: question.choices[].text           # choice: a field holding a list, or a list of templates
    gold: answerKey                            # choice, partial: an index, a digit string or a label
    labels: question.choices[].label           # how gold labels name the choices (default A, B, C, ...)
    gold_base: 0                               # subtracted from a numeric gold (1 for 1-based labels)
    continuation: "{continuation}"             # cloze, partial: the scored text
    options: context_options                   # partial: the contexts the continuation is scored under
    good: "{sentence_good}"                    # pairs: the sentence that must be more likely ...
    bad: "{sentence_bad}"                      # ... than this one
    chance: 0.2                                # optional; default the mean of 1 / choices per item

Field paths are dotted (``question.stem``), with ``[i]`` to index a list and ``[]`` to take a field of every
element (``question.choices[].text``); ``{path}`` in a template is replaced by the field's text. Context and
continuation are joined with exactly one space, as for the built-in tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dualobj.errors import ConfigError, DataError
from dualobj.evaluate.benchmarks import join_pair, locate, read_jsonl
from dualobj.evaluate.tasks import KINDS, Task
from dualobj.evaluate.types import Item, Request

NEEDS = {"choice": ("context", "choices", "gold"), "cloze": ("context", "continuation"),
         "pairs": ("good", "bad"), "partial": ("options", "continuation", "gold")}
KEYS = {"name", "kind", "file", "description", "context", "choices", "gold", "labels", "gold_base",
        "continuation", "options", "good", "bad", "chance"}
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


class Missing(Exception):
    """A line lacks a declared field, or its gold value names no choice (the message says which)."""


def get_path(obj: Any, path: str) -> Any:
    """The value at a dotted field path (``a.b[0]``, ``a.list[].text``) of a JSON object."""
    head, sep, rest = path.partition("[]")
    value = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", head):
        try:
            value = value[int(part[1:-1])] if part.startswith("[") else value[part]
        except (KeyError, IndexError, TypeError):
            raise Missing(f"no field {path}") from None
    if not sep:
        return value
    if not isinstance(value, list):
        raise Missing(f"no list at {head}")
    rest = rest.lstrip(".")
    return [get_path(v, rest) if rest else v for v in value]


def fill(template: str, obj: dict) -> str:
    """A template with each ``{path}`` replaced by that field's text."""
    return _PLACEHOLDER.sub(lambda m: str(get_path(obj, m.group(1).strip())), template)


def _text(spec: str, obj: dict) -> str:
    """A template if it has placeholders, else a field path."""
    return fill(spec, obj) if "{" in spec else str(get_path(obj, spec))


def _texts(spec: str | list, obj: dict) -> list[str]:
    if isinstance(spec, list):
        return [_text(s, obj) for s in spec]
    value = get_path(obj, spec)
    if not isinstance(value, list):
        raise Missing(f"field {spec} is not a list")
    return [str(v) for v in value]


@dataclass
class Declaration:
    """A checked task declaration (see the module doc)."""

    name: str
    kind: str
    file: str
    source: Path  # the YAML it came from
    spec: dict = field(default_factory=dict)

    def gold(self, obj: dict, n: int) -> int:
        raw = get_path(obj, self.spec["gold"])
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            raw = int(raw)
        if isinstance(raw, int) and not isinstance(raw, bool):
            index = raw - int(self.spec.get("gold_base", 0))
        else:
            labels = (_texts(self.spec["labels"], obj) if "labels" in self.spec
                      else [chr(ord("A") + i) for i in range(n)])
            index = labels.index(str(raw).strip()) if str(raw).strip() in labels else -1
        if not 0 <= index < n:
            raise Missing(f"field {self.spec['gold']} = {raw!r} names none of its {n} choices")
        return index

    def item(self, obj: dict, line: int) -> Item:
        s = self.spec
        if self.kind == "pairs":
            return Item([Request("", _text(s["good"], obj).strip()), Request("", _text(s["bad"], obj).strip())], 0,
                        {"line": line})
        if self.kind == "cloze":
            return Item([join_pair(_text(s["context"], obj), _text(s["continuation"], obj))], 0, {"line": line})
        if self.kind == "choice":
            context, choices = _text(s["context"], obj), _texts(s["choices"], obj)
            return Item([join_pair(context, c) for c in choices], self.gold(obj, len(choices)), {"line": line})
        options, cont = _texts(s["options"], obj), _text(s["continuation"], obj)
        return Item([join_pair(o, cont) for o in options], self.gold(obj, len(options)), {"line": line})


def load_declaration(path: str | Path) -> Declaration:
    """Read and check a task declaration; every problem is a one-line ConfigError."""
    p = Path(path).expanduser()
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"task declaration {p} cannot be read ({e.__class__.__name__}); give a YAML file") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"task declaration {p} must be a mapping with kind, file and fields")
    if unknown := sorted(set(raw) - KEYS):
        raise ConfigError(f"task declaration {p}: unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"task declaration {p}: kind={kind!r} is not one of {', '.join(KINDS)}")
    if missing := [k for k in ("file", *NEEDS[kind]) if not raw.get(k)]:
        raise ConfigError(f"task declaration {p}: a {kind} task needs the key(s) {', '.join(missing)}; add "
                          f"{' and '.join(f'{k}: ...' for k in missing)} to the declaration (see the README, "
                          f"\"A task of your own\")")
    chance = raw.get("chance")
    if chance is not None and not (isinstance(chance, (int, float)) and 0 <= chance < 1):
        raise ConfigError(f"task declaration {p}: chance={chance!r} must be a number in [0, 1)")
    return Declaration(name=str(raw.get("name") or p.stem), kind=kind, file=str(raw["file"]), source=p, spec=raw)


def build_declared(decl: Declaration, benchmark_dir: Path, file_override: str | None = None) -> Task:
    """The task a declaration describes, read from its file (``file_override`` replaces the declared file)."""
    rel = file_override or decl.file
    simplest = f"eval.task_files.{decl.name}=<path of the file>"
    try:
        path = Path(rel).expanduser() if Path(rel).expanduser().is_absolute() else locate(rel, benchmark_dir)
    except DataError as e:
        raise DataError(f"{str(e).split('; ')[0]} (task {decl.name}); set {simplest}, or put it in the benchmark "
                        f"folder (eval.benchmark_dir=<folder>)") from None
    if not path.is_file():
        raise DataError(f"benchmark file {path} for task {decl.name} not found; put it there or set {simplest}")
    rows, sha = read_jsonl(path)
    items = []
    for n, obj in rows:
        try:
            items.append(decl.item(obj, n))
        except Missing as e:
            raise DataError(f"benchmark file {path}, line {n}: {e} (task declaration {decl.source}); "
                            "fix the declaration's field names or the file") from None
    source = {"source": str(rel), "description": decl.spec.get("description", ""), "sha256": sha,
              "declaration": str(decl.source)}
    return KINDS[decl.kind](decl.name, items, source, chance=decl.spec.get("chance"))
