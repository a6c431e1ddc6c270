"""Which tasks exist and how to build one by name: the public benchmarks and the built-in probes.

Benchmark tasks (``BENCHMARK_TASKS``) are read from the benchmark folder (``dualobj.evaluate.benchmarks``);
probes (``PROBE_TASKS``, names starting with ``probe_``) are built from the training corpus's validation
documents (``dualobj.evaluate.probes``) and need no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualobj.errors import DataError
from dualobj.evaluate.benchmarks import LOADERS, load_blimp, locate, resolve_benchmark_dir
from dualobj.evaluate.probes import PROBES, build_probe
from dualobj.evaluate.tasks import ChoiceTask, ClozeTask, PairsTask, PartialTask, Task

_CLASSES: dict[str, type[Task]] = {cls.kind: cls for cls in (PairsTask, ChoiceTask, ClozeTask, PartialTask)}


@dataclass(frozen=True)
class TaskSpec:
    """Where a benchmark lives under the benchmark folder and how to read it."""

    kind: str
    path: str  # relative to the benchmark folder (also looked up without its first folder)
    description: str

    def build(self, name: str, benchmark_dir: Path) -> Task:
        path = locate(self.path, benchmark_dir)
        source = {"source": self.path, "description": self.description}
        if self.kind == "pairs":
            items, sha, n_files = load_blimp(path)
            return PairsTask(name, items, {**source, "sha256": sha, "n_paradigms": n_files,
                                           "sha256_of": "sha256 over '<file name>\\0<file sha256>\\0' in name order"})
        items, sha = LOADERS[self.kind](path)
        return _CLASSES[self.kind](name, items, {**source, "sha256": sha})


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
BENCHMARK_TASKS = tuple(TASKS)
PROBE_TASKS = tuple(PROBES)
KNOWN_TASKS = (*BENCHMARK_TASKS, *PROBE_TASKS)


def is_probe(name: str) -> bool:
    """Whether `name` names a probe (built from the corpus) rather than a benchmark (read from files)."""
    return name.startswith("probe_")


def get_task(name: str, benchmark_dir: Path | str | None = None, *, data: Any = None,
             n_items: int = 500, seed: int = 0) -> Task:
    """A task by name. Benchmarks are read from `benchmark_dir` (default: ``resolve_benchmark_dir()``: $DUALOBJ_BENCHMARKS,
    else ../shared/data/benchmarks); the probes (``probe_mc``, ``probe_cloze``) are built from the validation
    documents of `data` (a DataConfig, default the wiki corpus) with `n_items` items and `seed`, and ignore
    `benchmark_dir`."""
    if is_probe(name):
        from dualobj.config import DataConfig

        return build_probe(name, data if data is not None else DataConfig(), n_items, seed)
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(KNOWN_TASKS)}")
    return TASKS[name].build(name, resolve_benchmark_dir(benchmark_dir))
