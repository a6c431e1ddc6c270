"""Which tasks exist and how to build one by name: public benchmarks, declared tasks, probes, task sets.

Benchmark tasks (``BENCHMARK_TASKS``) are read from the benchmark folder (``dualobj.evaluate.benchmarks``);
declared tasks are YAML files (``conf/eval/tasks/<name>.yaml``, or a path ending in .yaml given as the name;
``dualobj.evaluate.declared``); probes (``PROBE_TASKS``, names starting with ``probe_``) are built from the
training corpus's validation documents (``dualobj.evaluate.probes``) and need no files.

Task sets (``TASK_SETS``) name fixed lists of tasks: ``eval.tasks`` may list a set, and ``eval/avg/<mode>``
averages exactly the tasks of ``eval.task_set``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualobj.errors import ConfigError, DataError
from dualobj.evaluate.benchmarks import LOADERS, load_blimp, locate, resolve_benchmark_dir
from dualobj.evaluate.declared import build_declared, load_declaration
from dualobj.evaluate.probes import PROBES, build_probe
from dualobj.evaluate.tasks import KINDS, PairsTask, Task


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
        return KINDS[self.kind](name, items, {**source, "sha256": sha})


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
DECLARED_DIR = Path(__file__).resolve().parents[2] / "conf" / "eval" / "tasks"
DECLARED_TASKS = tuple(sorted(p.stem for p in DECLARED_DIR.glob("*.yaml")))
KNOWN_TASKS = (*BENCHMARK_TASKS, *DECLARED_TASKS, *PROBE_TASKS)
TASK_SETS: dict[str, tuple[str, ...]] = {
    # the paper's nine zero-shot tasks, averaged after chance normalisation
    "paper9": ("arc_easy", "arc_challenge", "blimp", "commonsense_qa", "hellaswag", "mmlu", "openbookqa", "piqa",
               "siqa"),
    # the multiple-choice tasks whose public files ship beside this project (no LAMBADA: exact match, chance 0)
    "builtin": ("arc_easy", "arc_challenge", "blimp", "copa", "openbookqa", "piqa", "winogrande", "wsc"),
}


def expand_tasks(names: list[str]) -> list[str]:
    """``eval.tasks`` with task-set names replaced by their tasks (order kept, each task once)."""
    out: list[str] = []
    for name in names:
        for task in TASK_SETS.get(name, (name,)):
            if task not in out:
                out.append(task)
    return out


def check_task_names(names: list[str], task_set: str) -> None:
    """One-line ConfigError for an unknown task, set or declaration path."""
    if task_set not in TASK_SETS:
        raise ConfigError(f"eval.task_set={task_set!r} is not one of {', '.join(TASK_SETS)}; pick one of them")
    for name in expand_tasks(names):
        if name == "val" or name in KNOWN_TASKS or is_probe(name):
            continue
        if name.endswith((".yaml", ".yml")):
            if not Path(name).expanduser().is_file():
                raise ConfigError(f"eval.tasks: task declaration {name} does not exist; give a path to a YAML file")
            continue
        known = ", ".join(("val", *KNOWN_TASKS, *TASK_SETS))
        raise ConfigError(f"eval.tasks: unknown task {name!r}; use one of {known} or a task declaration .yaml")


def is_probe(name: str) -> bool:
    """Whether `name` names a probe (built from the corpus) rather than a benchmark (read from files)."""
    return name.startswith("probe_")


def get_task(name: str, benchmark_dir: Path | str | None = None, *, data: Any = None,
             n_items: int = 500, seed: int = 0, task_files: dict[str, str] | None = None) -> Task:
    """A task by name. Benchmarks and declared tasks are read from `benchmark_dir` (default:
    ``resolve_benchmark_dir()``: $DUALOBJ_BENCHMARKS, else ../shared/data/benchmarks), a declared task's file
    from `task_files[name]` when given; the probes (``probe_mc``, ``probe_cloze``) are built from the validation
    documents of `data` (a DataConfig, default the wiki corpus) with `n_items` items and `seed`."""
    if is_probe(name):
        from dualobj.config import DataConfig

        return build_probe(name, data if data is not None else DataConfig(), n_items, seed)
    folder = resolve_benchmark_dir(benchmark_dir)
    if name in TASKS:
        return TASKS[name].build(name, folder)
    if name in DECLARED_TASKS or name.endswith((".yaml", ".yml")):
        decl = load_declaration(DECLARED_DIR / f"{name}.yaml" if name in DECLARED_TASKS else name)
        return build_declared(decl, folder, (task_files or {}).get(decl.name))
    raise DataError(f"unknown task {name!r}; known tasks: {', '.join(KNOWN_TASKS)}")
