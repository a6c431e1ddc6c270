"""The public benchmark files: where their folder is, and how each file becomes ``Item``s.

The folder (``resolve_benchmark_dir``) is ``eval.benchmark_dir`` when set, else ``$DUALOBJ_BENCHMARKS``,
else ``../shared/data/benchmarks`` beside the project root; it holds ``blimp/<paradigm>.jsonl`` and
``gauntlet/<task>.jsonl`` (a flat folder works too).

Joining: wherever a context and a continuation are joined, trailing whitespace of the context and leading
whitespace of the continuation are dropped and exactly one space is put between them (PIQA queries end in
"\\n" and one LAMBADA continuation starts with "\\n\\n" in the public files).

Bad benchmark files raise ``DataError`` naming the file, the line and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from dualobj.errors import DataError
from dualobj.evaluate.types import Item, Request

ENV_VAR = "DUALOBJ_BENCHMARKS"
HOW_TO_SET = f"set eval.benchmark_dir=<folder with blimp/ and gauntlet/> or {ENV_VAR}=<that folder>"
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"


def resolve_benchmark_dir(configured: str | Path | None = None) -> Path:
    """`configured` (eval.benchmark_dir), else $DUALOBJ_BENCHMARKS, else ../shared/data/benchmarks beside the repo."""
    return Path(configured or os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()


def locate(rel: str, benchmark_dir: Path) -> Path:
    """The file or folder `rel` under `benchmark_dir` (or directly in it: a flat folder)."""
    if not benchmark_dir.is_dir():
        raise DataError(f"benchmark folder {benchmark_dir} not found (needed for {rel}); {HOW_TO_SET}")
    candidates = [benchmark_dir / rel, benchmark_dir / Path(rel).name]  # also accept a flat folder
    for c in candidates:
        if c.exists():
            return c
    raise DataError(f"benchmark file {rel} not found under {benchmark_dir}; {HOW_TO_SET}")


def join_pair(context: str, continuation: str) -> Request:
    """Request with exactly one space between a non-empty context and the continuation."""
    if not context.strip():
        return Request("", continuation.strip())
    return Request(context.rstrip(), " " + continuation.strip())


# --------------------------------------------------------------------------- reading the files


def _bad(path: Path, n: int, what: str, fix: str = "fix or remove that line") -> DataError:
    return DataError(f"benchmark file {path}, line {n}: {what}; {fix}")


def read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], str]:
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
    rows, sha = read_jsonl(path)
    items = []
    for n, obj in rows:
        query = _get_str(path, n, obj, "query", _CHOICE_FMT, allow_empty=True)
        choices = _get_options(path, n, obj, "choices", _CHOICE_FMT)
        gold = _get_gold(path, n, obj, len(choices), _CHOICE_FMT)
        items.append(Item([join_pair(query, c) for c in choices], gold, {"line": n}))
    return items, sha


def load_cloze(path: Path) -> tuple[list[Item], str]:
    rows, sha = read_jsonl(path)
    items = []
    for n, obj in rows:
        context = _get_str(path, n, obj, "context", _CLOZE_FMT)
        continuation = _get_str(path, n, obj, "continuation", _CLOZE_FMT)
        items.append(Item([join_pair(context, continuation)], 0, {"line": n}))
    return items, sha


def load_partial(path: Path) -> tuple[list[Item], str]:
    rows, sha = read_jsonl(path)
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
        raise DataError(f"benchmark folder {folder} has no <paradigm>.jsonl files; {HOW_TO_SET}")
    combined = hashlib.sha256()
    items = []
    for path in files:
        rows, sha = read_jsonl(path)
        combined.update(f"{path.name}\0{sha}\0".encode())
        for n, obj in rows:
            good = _get_str(path, n, obj, "sentence_good", _BLIMP_FMT)
            bad = _get_str(path, n, obj, "sentence_bad", _BLIMP_FMT)
            fld = _get_str(path, n, obj, "field", _BLIMP_FMT).replace("/", "_")
            uid = obj.get("UID", path.stem)
            if not isinstance(uid, str) or not uid:
                raise _bad(path, n, f"field 'UID' must be a non-empty string, got {uid!r}",
                           f"each line must be {_BLIMP_FMT}")
            meta = {"field": fld, "uid": uid, "pair_id": str(obj.get("pairID", n - 1)), "file": path.name, "line": n}
            items.append(Item([Request("", good.strip()), Request("", bad.strip())], 0, meta))
    return items, combined.hexdigest(), len(files)


LOADERS = {"choice": load_choice, "cloze": load_cloze, "partial": load_partial}  # pairs: load_blimp (a folder)
