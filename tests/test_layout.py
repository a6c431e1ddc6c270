"""The package's shape: no import cycle inside dualobj/, and no function too long to read at once."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "dualobj"
MAX_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """dualobj modules that ``name`` imports anywhere in its source (lazy imports inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:  # `from pkg import mod` imports the module pkg.mod when there is one
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_sees_lazy_and_package_imports():
    graph = import_graph()
    assert "dualobj.config" in graph["dualobj.train"]
    assert "dualobj.run.dir" in graph["dualobj.run"]  # a package's __init__ importing its modules


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def part_of(module: str) -> str:
    """The part a module belongs to: its top-level package (dualobj.report) or module (dualobj.train)."""
    return ".".join(module.split(".")[:2])


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imports between parts: importing any module of a package runs that package's __init__, so a cycle
    between packages is real even where the modules involved never import each other in a circle."""
    parts: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        parts.setdefault(part_of(mod), set()).update(part_of(d) for d in deps if part_of(d) != part_of(mod))
    for deps in list(parts.values()):
        for d in deps:
            parts.setdefault(d, set())
    return parts


def test_part_graph_finds_a_planted_package_cycle():
    """report.search -> sweep.search and sweep.search -> report.gp: no module cycle, but a package cycle."""
    modules_graph = {"dualobj.report.search": {"dualobj.sweep.search"}, "dualobj.sweep.search": {"dualobj.report.gp"},
                     "dualobj.report.gp": set(), "dualobj.train": {"dualobj.config"}, "dualobj.config": set()}
    assert find_cycle(modules_graph) is None
    assert find_cycle(part_graph(modules_graph)) == ["dualobj.report", "dualobj.sweep", "dualobj.report"]


def test_no_import_cycle_between_the_parts():
    cycle = find_cycle(part_graph(import_graph()))
    assert cycle is None, "import cycle between parts: " + " -> ".join(cycle)


def test_the_shared_statistics_import_neither_report_nor_sweep():
    parts = part_graph(import_graph())
    assert not parts["dualobj.stats"] & {"dualobj.report", "dualobj.sweep"}, parts["dualobj.stats"]
    assert "dualobj.report" not in parts["dualobj.sweep"], "the sweep (upstream) imports the report"


def test_train_does_not_import_evaluate_and_report_imports_no_private_names():
    graph = import_graph()
    assert not any(m.startswith("dualobj.evaluate") for m in graph["dualobj.train"])
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dualobj"):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{name} imports private names {private} from {node.module}"


def long_functions(limit: int = MAX_LINES) -> list[tuple[str, int]]:
    out = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append((f"{name}.{node.name}", n))
    return sorted(out, key=lambda x: -x[1])


def test_every_function_reads_at_once():
    assert long_functions() == []
