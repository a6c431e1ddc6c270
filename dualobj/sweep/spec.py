"""Sweep files: a YAML file of cells, parsed and checked, and expanded into each cell's overrides.

A sweep file (``sweeps/*.yaml``)::

    name: smoke
    fixed: [model=tiny, train.tokens=65536]        # overrides for every cell
    axes:                                           # full product of these ...
      data.repetitions: [1, 4]
      objective.alpha: [0, 1/2, 1]
    cells:                                          # ... times each explicit cell (optional)
      - {data.repetitions: 16, objective.alpha: 63/64}
    launcher: {name: joblib, jobs: 2}     # basic | joblib | submitit_local | submitit_slurm | conf/hydra/launcher/*
    retries: 1                                      # a failed cell is tried 1 + retries times
    throughput: {tiny: 9000}                        # tokens/s per model, for the plan's time estimate
    seeds: 3                                        # every cell once per seed 0, 1, 2 (or a list: [0, 1, 2])
    grace: 60                                       # seconds a stopped sweep gives its cells (default 60)

With ``variants:`` (optional: a mapping name -> overrides) the file is run once per variant, each with its
overrides after ``fixed``: a grid sweep takes the product (every cell of every variant, in one folder); a
search runs one search per variant, in ``<sweep dir>/<name>/``. Settings that go together (a model size with
its token budget and batch) are one variant where a product of axes would pair them wrongly::

    variants:
      nano: [model=nano, train.batch_size=4, train.tokens=63488]
      tiny: [model=tiny, train.tokens=524288]

``grace:`` bounds a stopped sweep's shutdown: SIGTERM or SIGHUP to the sweep passes SIGTERM on to its cells,
which stop within seconds in any phase (training saves a checkpoint; an evaluation keeps the tasks it
finished); cells still alive after ``grace`` seconds are killed and marked interrupted. A cluster kills a
job some time after its SIGTERM (SLURM's grace, KillWait, is 30-120 s at most sites); ask SLURM for the
signal early enough, e.g. ``sbatch --signal=B:TERM@90`` with the default 60.

With ``seeds:`` (optional) every cell of the file is run once per seed, with the override ``seed=<s>``:
``N`` means seeds 0 .. N-1, a list names them (distinct whole numbers >= 0). The whole grid is listed
seed by seed, so a sweep stopped halfway leaves whole one-seed grids. The seed is then set by ``seeds:``
alone (``seed`` in ``fixed``, ``axes`` or a cell is refused), and a ``search:`` block takes no ``seeds:``.
Without it, the cells run at the config's seed (0) as before, with the same run ids.

Each cell's run id hashes its semantic config, so its directory ``<sweep dir>/<run id>/`` is
stable: re-running a sweep skips done cells, resumes dead ones and retries failed ones. Each
run holds an OS file lock while it trains, so two sweeps on one folder never train a cell twice.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dualobj import config as C
from dualobj.errors import ConfigError

SPEC_KEYS = {"name", "description", "fixed", "axes", "cells", "launcher", "retries", "throughput", "search", "seeds",
             "grace", "variants"}
SEARCH_KEYS = {"metric", "goal", "axis", "space", "values", "range", "step", "conditions", "initial", "budget",
               "batch", "seed", "delta", "confidence"}
LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm")


@dataclass
class SweepSpec:
    name: str
    path: Path
    fixed: list[str] = field(default_factory=list)
    axes: dict[str, list] = field(default_factory=dict)
    cells: list[dict] = field(default_factory=list)
    launcher: dict = field(default_factory=lambda: {"name": "basic"})
    retries: int = 1
    throughput: dict[str, float] = field(default_factory=dict)
    search: SearchSpec | None = None  # the adaptive search of a `search:` block (dualobj/sweep/search.py)
    seeds: list[int] | None = None  # `seeds:`: every cell runs once per seed; None: at the config's seed
    grace: float = 60.0  # seconds a stopped sweep waits for its cells to stop before killing them
    variants: dict[str, list[str]] = field(default_factory=dict)  # `variants:`: name -> overrides after `fixed`


@dataclass
class SearchSpec:
    """A sweep file's ``search:`` block: which α is best at each R, found with a handful of cells."""

    metric: str  # the summary metric to optimise, e.g. val/ar_bpb or eval/avg/ar
    goal: str  # min or max (default: min for losses, i.e. names with nll, elbo, loss, bpb or ppl; else max)
    values: list[float]  # the allowed values of the searched axis, ascending (`values:`, or `range:` with `step:`)
    conditions: list[float]  # the data.repetitions levels held as conditions: the best value is sought at each
    initial: dict[float, list[float]]  # the initial design: per condition level, the values trained first
    budget: int  # cells the search may train in all, the initial design included
    batch: int  # cells proposed per round (default: the launcher's parallel jobs)
    axis: str = "objective.alpha"  # the searched config key (objective.alpha is the only one for now)
    space: str = "alpha"  # alpha: values are objective.alpha; ar_share: values are the AR share of the gradient
    seed: int = 0  # random state of the GP fit and of its posterior samples
    delta: float = 0.01  # an R is resolved when its recommendation is within delta of the best (metric units) ...
    confidence: float = 0.9  # ... with at least this posterior probability; the search ends when every R is

    @property
    def design_size(self) -> int:
        """Cells in the initial design."""
        return sum(len(v) for v in self.initial.values())


def value_text(v: Any) -> str:
    """An override value in Hydra syntax: '63/64' style fractions as floats, lists as [a,b], None as null. A
    fraction that is no number (1/0) stays as written, for the config to refuse in one line."""
    if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*/\s*\d+\s*", v) and C.parse_number(v) is not None:
        return repr(C.parse_number(v))
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _underscore_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every mapping key starting with '_' in a nested YAML value."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            if str(k).startswith("_"):
                found.append(path)
            found += _underscore_keys(v, path + ".")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _underscore_keys(v, f"{prefix}{i}.")
    return found


def _launcher_value_problems(v: Any) -> list[str]:
    """Keys starting with '_' or interpolations hidden in a launcher value once Hydra parses it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    text = value_text(v)
    if "${" in text:
        return ["an ${...} interpolation"]
    try:
        parsed = OverridesParser.create().parse_overrides([f"hydra.launcher.x={text}"])[0].value()
    except Exception:
        return []  # not parseable: Hydra refuses it later with its own message
    return _underscore_keys(parsed)


def _unsafe_key(key: str) -> bool:
    k = key.strip().lstrip("+~")
    return k.startswith("hydra") or any(part.startswith("_") for part in re.split(r"[./]", k))


def _read_yaml(p: Path) -> dict:
    if not p.is_file():
        raise ConfigError(f"sweep file {p} does not exist; see sweeps/ for examples")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"sweep file {p} is not valid YAML{at}; fix its syntax") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep file {p} must be a mapping with at least 'name' and 'axes' or 'cells'")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"sweep file {p}: unknown key(s) {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    return raw


def _overrides(p: Path, what: str, x: Any) -> list[str]:
    """A list of key=value overrides (or a mapping key: value), or a one-line ConfigError naming ``what``."""
    if isinstance(x, dict):
        x = [f"{k}={value_text(v)}" for k, v in x.items()]
    if not isinstance(x, list) or not all(isinstance(o, str) and "=" in o for o in x):
        raise ConfigError(f"sweep file {p}: {what} must be a list of key=value overrides")
    return x


def _variants(p: Path, raw: dict) -> dict[str, list[str]]:
    """``variants:``: simple names mapped to their overrides, checked."""
    v = raw.get("variants") or {}
    if not isinstance(v, dict):
        raise ConfigError(f"sweep file {p}: 'variants' must map names to overrides, e.g. "
                          "{nano: [model=nano, train.tokens=63488], tiny: [model=tiny]}")
    if bad := [k for k in v if not re.fullmatch(r"[\w.-]+", str(k))]:
        raise ConfigError(f"sweep file {p}: variant name {bad[0]!r} must be a simple name (letters, digits, _ . -)")
    return {str(k): _overrides(p, f"variant {k!r}", ov or []) for k, ov in v.items()}


def _grid(p: Path, raw: dict, varied: list[str]) -> tuple[list[str], dict, list[dict]]:
    """The fixed overrides, the axes and the explicit cells, checked (with the variants' overrides ``varied``)."""
    fixed = _overrides(p, "'fixed'", raw.get("fixed") or [])
    axes = raw.get("axes") or {}
    if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
        raise ConfigError(f"sweep file {p}: 'axes' must map config keys to non-empty lists of values")
    cells = raw.get("cells") or []
    if not isinstance(cells, list) or not all(isinstance(c, dict) and c for c in cells):
        raise ConfigError(f"sweep file {p}: 'cells' must be a list of mappings like {{objective.alpha: 0.5}}")
    if not axes and not cells and "search" not in raw:
        raise ConfigError(f"sweep file {p} has neither 'axes' nor 'cells'; add at least one")
    keys = [o.split("=", 1)[0] for o in fixed + varied] + [str(k) for k in axes] + [str(k) for c in cells for k in c]
    if bad := sorted({k for k in keys if _unsafe_key(k)}):
        raise ConfigError(f"sweep file {p}: key(s) {bad} may not be set by a sweep file (hydra settings and "
                          "keys starting with '_'); use the 'launcher' section or hydra.launcher.*= "
                          "on the command line")
    for k in dict.fromkeys(keys):
        try:
            C.schema_key(k)
        except ConfigError as e:
            raise ConfigError(f"sweep file {p}: {e}") from e
    return fixed, axes, cells


def _launcher(p: Path, raw: dict) -> dict:
    """The launcher section, refused if it could make Hydra import or run code."""
    launcher = raw.get("launcher") or {"name": "basic"}
    if isinstance(launcher, str):
        launcher = {"name": launcher}
    if not isinstance(launcher, dict):
        raise ConfigError(f"sweep file {p}: 'launcher' must be a mapping like {{name: joblib, jobs: 2}}")
    # No Hydra/OmegaConf special keys (_target_, _partial_, ...) anywhere, no interpolations.
    hidden = _underscore_keys(launcher)
    for k, v in launcher.items():
        if k not in ("name", "jobs"):
            hidden += [f"{k} ({part})" for part in _launcher_value_problems(v)]
    if hidden:
        raise ConfigError(f"sweep file {p}: launcher key(s) {hidden} are not allowed (keys starting with '_' "
                          "could make the launcher import and run code); remove them")
    lname = launcher.get("name", "basic")
    known = sorted({*LAUNCHERS, *(f.stem for f in (C.CONF_DIR / "hydra" / "launcher").glob("*.yaml"))})
    if lname not in known:
        raise ConfigError(f"sweep file {p}: unknown launcher {lname!r}; use one of {', '.join(known)}")
    jobs = launcher.get("jobs", 2)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"sweep file {p}: launcher jobs={jobs!r} must be a whole number >= 1 "
                          "(parallel processes); e.g. {name: joblib, jobs: 2}")
    return launcher


def _numbers(p: Path, what: str, x: Any) -> list[float]:
    """A YAML list of numbers (fractions such as 1/16 allowed), or a one-line ConfigError naming ``what``."""
    vals = [None if isinstance(v, bool) else C.parse_number(str(v)) for v in x] if isinstance(x, list) else [None]
    if any(v is None for v in vals):
        raise ConfigError(f"sweep file {p}: search {what} must be a list of numbers such as [0, 1/2, 1], got {x!r}")
    return [round(v, 12) for v in vals]


def _search_domain(p: Path, s: dict) -> list[float]:
    """The allowed values of the searched axis: ``values: [...]``, or ``range: [low, high]`` every ``step``."""
    if ("values" in s) == ("range" in s):
        raise ConfigError(f"sweep file {p}: the search block needs exactly one of 'values: [0, 1/2, 1]' and "
                          "'range: [0, 1]' (with 'step: 1/16')")
    if "values" in s:
        vals = _numbers(p, "values", s["values"])
    else:
        ends, step = _numbers(p, "range", s["range"]), C.parse_number(str(s.get("step", "1/16")))
        if len(ends) != 2 or step is None or step <= 0:
            raise ConfigError(f"sweep file {p}: search range must be [low, high] with step > 0, e.g. range: [0, 1] "
                              "and step: 1/16")
        n = int((ends[1] - ends[0]) / step + 1e-9) + 1 if ends[1] >= ends[0] else 0
        vals = [round(ends[0] + k * step, 12) for k in range(n)] + ends[1:] * (n > 0)
    vals = sorted(set(vals))
    if not vals:
        raise ConfigError(f"sweep file {p}: the search domain is empty; list values (values: [0, 1/2, 1]) or give "
                          "a range with low <= high (range: [0, 1])")
    if vals[0] < 0 or vals[-1] > 1:
        raise ConfigError(f"sweep file {p}: search values must lie in [0, 1] (an AR weight or AR share); "
                          f"got {vals[0]:g} .. {vals[-1]:g}")
    return vals


def _search_design(p: Path, s: dict, values: list[float], levels: list[float]) -> dict[float, list[float]]:
    """The initial design: one list for every condition level, or a mapping level -> list (default: the
    domain's ends and middle value at every level)."""
    init = s.get("initial", [values[0], values[len(values) // 2], values[-1]])
    per = {lv: init for lv in levels} if isinstance(init, list) else init
    if not isinstance(per, dict):
        raise ConfigError(f"sweep file {p}: search initial must be a list of values (used at every condition) or "
                          "a mapping like {1: [0, 1], 64: [0, 1/2]}")
    design = {}
    for key, got in per.items():
        lv = C.parse_number(str(key))
        if lv not in levels:
            raise ConfigError(f"sweep file {p}: search initial names data.repetitions={key} which is not among the "
                              f"conditions {levels}; use one of them")
        vals = _numbers(p, "initial", got)
        if off := [v for v in vals if v not in values]:
            raise ConfigError(f"sweep file {p}: search initial value(s) {off} are not in the search domain; pick "
                              "them from its values (or its range at its step)")
        design[lv] = sorted(set(vals))
    return design


def _search_checks(p: Path, raw: dict, s: Any, fixed: list[str]) -> None:
    """A search block is a mapping of known keys, and nothing else in the file sets what it searches."""
    if not isinstance(s, dict):
        raise ConfigError(f"sweep file {p}: 'search' must be a mapping like {{metric: val/ar_bpb, values: [0, 1/2, 1], "
                          "conditions: {data.repetitions: [1, 4]}, budget: 8}")
    if unknown := sorted(set(s) - SEARCH_KEYS):
        raise ConfigError(f"sweep file {p}: unknown search key(s) {unknown}; allowed: {sorted(SEARCH_KEYS)}")
    if raw.get("axes") or raw.get("cells"):
        raise ConfigError(f"sweep file {p}: a search takes its cells from the search block; remove 'axes' and "
                          "'cells' (fixed settings go in 'fixed')")
    if set_here := sorted({o.split("=", 1)[0] for o in fixed} & {"objective.alpha", "data.repetitions"}):
        raise ConfigError(f"sweep file {p}: 'fixed' or 'variants' set {set_here}, which the search chooses; "
                          "remove them")
    if s.get("axis", "objective.alpha") != "objective.alpha":
        raise ConfigError(f"sweep file {p}: search axis {s.get('axis')!r} cannot be searched; use objective.alpha")
    if s.get("space", "alpha") not in ("alpha", "ar_share"):
        raise ConfigError(f"sweep file {p}: search space {s.get('space')!r} must be alpha (objective.alpha) or "
                          "ar_share (the AR share of the gradient weight)")
    if not isinstance(s.get("metric"), str) or not s["metric"]:
        raise ConfigError(f"sweep file {p}: the search needs a metric to optimise, e.g. metric: val/ar_bpb")
    if s.get("goal", "min") not in ("min", "max"):
        raise ConfigError(f"sweep file {p}: search goal {s.get('goal')!r} must be min or max")


def _whole(p: Path, what: str, x: Any, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < low:
        raise ConfigError(f"sweep file {p}: search {what}={x!r} must be a whole number >= {low}")
    return x


def _search(p: Path, raw: dict, fixed: list[str], launcher: dict) -> SearchSpec:
    """The ``search:`` block, checked: every problem is one line, before anything trains."""
    from dualobj.stats.frame import default_lower_is_better

    s = raw["search"]
    _search_checks(p, raw, s, fixed)
    cond = s.get("conditions")
    if not isinstance(cond, dict) or list(cond) != ["data.repetitions"]:
        raise ConfigError(f"sweep file {p}: search conditions must be {{data.repetitions: [1, 4, 16, 64]}} "
                          "(the only condition axis for now)")
    levels = sorted(set(_numbers(p, "conditions", cond["data.repetitions"])))
    if not levels or levels[0] < 1:
        raise ConfigError(f"sweep file {p}: search conditions need at least one data.repetitions level >= 1")
    values = _search_domain(p, s)
    design = _search_design(p, s, values, levels)
    size = sum(len(v) for v in design.values())
    budget = _whole(p, "budget", s.get("budget"), 1)
    if budget < size:
        raise ConfigError(f"sweep file {p}: search budget {budget} is below the initial design's {size} cells; "
                          "raise the budget or shorten 'initial'")
    jobs = launcher.get("jobs", 2) if launcher.get("name", "basic") == "joblib" else launcher.get("jobs", 1)
    goal = s.get("goal") or ("min" if default_lower_is_better(s["metric"]) else "max")
    return SearchSpec(metric=s["metric"], goal=goal, values=values, conditions=levels, initial=design,
                      budget=budget, batch=_whole(p, "batch", s.get("batch", jobs), 1),
                      space=s.get("space", "alpha"), seed=_whole(p, "seed", s.get("seed", 0), 0),
                      **_resolution(p, s))


def _resolution(p: Path, s: dict) -> dict:
    """``delta`` (> 0, the metric's units) and ``confidence`` (in (0.5, 1)) of the per-R stopping rule."""
    delta = C.parse_number(str(s.get("delta", 0.01)))
    conf = C.parse_number(str(s.get("confidence", 0.9)))
    if isinstance(s.get("delta"), bool) or delta is None or not delta > 0:
        raise ConfigError(f"sweep file {p}: search delta={s.get('delta')!r} must be a number > 0 in the metric's "
                          "units, e.g. delta: 0.01 (bits per byte)")
    if isinstance(s.get("confidence"), bool) or conf is None or not 0.5 < conf < 1:
        raise ConfigError(f"sweep file {p}: search confidence={s.get('confidence')!r} must lie between 0.5 and 1, "
                          "e.g. confidence: 0.9")
    return {"delta": float(delta), "confidence": float(conf)}


SEEDS_FIX = "use a whole number N >= 1 (seeds 0 .. N-1) or a list of distinct whole numbers >= 0 like [0, 1, 2]"


def _is_seed_key(key: Any) -> bool:
    """Whether an override key (``seed``, ``+seed``, ``~seed``) sets the run's seed."""
    return str(key).strip().lstrip("+~") == "seed"


def _seed_list(p: Path, x: Any) -> list[int]:
    """The value of ``seeds:`` as the list of seeds, checked."""
    if isinstance(x, bool) or not isinstance(x, (int, list)):
        raise ConfigError(f"sweep file {p}: seeds: {x!r} is not a number of seeds or a list of seeds; {SEEDS_FIX}")
    if isinstance(x, int):
        if x < 1:
            raise ConfigError(f"sweep file {p}: seeds: {x} must be at least 1 (the number of seeds); {SEEDS_FIX}")
        return list(range(x))
    if not x:
        raise ConfigError(f"sweep file {p}: seeds: [] lists no seed; {SEEDS_FIX}")
    if bad := [s for s in x if isinstance(s, bool) or not isinstance(s, int) or s < 0]:
        raise ConfigError(f"sweep file {p}: seeds {bad!r} are not whole numbers >= 0; {SEEDS_FIX}")
    if twice := sorted({s for s in x if x.count(s) > 1}):
        raise ConfigError(f"sweep file {p}: seeds {x} lists seed(s) {twice} more than once; list each seed once")
    return list(x)


def _seeds(p: Path, raw: dict, fixed: list[str], varied: list[str], axes: dict,
           cells: list[dict]) -> list[int] | None:
    """The ``seeds:`` axis, or None without one; refused where something else sets the seed too."""
    if raw.get("seeds") is None:
        if "seeds" in raw:
            raise ConfigError(f"sweep file {p}: seeds: is empty; {SEEDS_FIX}, or remove the key")
        return None
    seeds = _seed_list(p, raw["seeds"])
    if "search" in raw:
        raise ConfigError(f"sweep file {p}: the adaptive search chooses its own seeds; remove 'seeds'")
    keys = {"fixed": [o.split("=", 1)[0] for o in fixed], "variants": [o.split("=", 1)[0] for o in varied],
            "axes": list(axes), "cells": [k for c in cells for k in c]}
    if where := [name for name, ks in keys.items() if any(map(_is_seed_key, ks))]:
        raise ConfigError(f"sweep file {p}: 'seeds' and seed in '{where[0]}' both set the seed; remove one of them")
    return seeds


def parallel_jobs(text: str) -> int:
    """The value of ``hydra.launcher.n_jobs=`` on the command line, checked: a whole number >= 1."""
    n = C.parse_number(text)
    if n is None or not n.is_integer() or n < 1:
        raise ConfigError(f"hydra.launcher.n_jobs={text!r} must be a whole number >= 1 (parallel processes); "
                          "e.g. hydra.launcher.n_jobs=2")
    return int(n)


def load_spec(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file; every problem is a one-line ConfigError."""
    p = Path(path)
    raw = _read_yaml(p)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"sweep file {p}: 'name' must be a simple name (letters, digits, _ . -), got {name!r}")
    variants = _variants(p, raw)
    varied = [o for ov in variants.values() for o in ov]
    fixed, axes, cells = _grid(p, raw, varied)
    launcher = _launcher(p, raw)
    search = _search(p, raw, fixed + varied, launcher) if "search" in raw else None
    retries = raw.get("retries", 1)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"sweep file {p}: 'retries' must be a whole number >= 0")
    throughput = raw.get("throughput") or {}
    if not isinstance(throughput, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in throughput.values()):
        raise ConfigError(f"sweep file {p}: 'throughput' must map model names to tokens/s > 0")
    grace = raw.get("grace", 60)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 < grace <= 3600:
        raise ConfigError(f"sweep file {p}: 'grace' must be a number of seconds in (0, 3600], got {grace!r}")
    return SweepSpec(name=name, path=p, fixed=fixed, axes=axes, cells=cells, launcher=launcher,
                     retries=retries, throughput=throughput, search=search,
                     seeds=_seeds(p, raw, fixed, varied, axes, cells), grace=float(grace), variants=variants)


def cell_overrides(spec: SweepSpec, extra: list[str] | None = None) -> list[list[str]]:
    """Every run's overrides: fixed (+ one variant's) + one point of the axes product (+ one explicit cell)
    (+ seed=<s> for each seed of ``seeds:``, the whole grid seed by seed), + extra."""
    if spec.seeds is not None and any(_is_seed_key(o.split("=", 1)[0]) for o in extra or []):
        raise ConfigError(f"sweep file {spec.path} sets the seeds ('seeds: ...'); drop seed= from the command line "
                          "or 'seeds' from the file")
    keys = list(spec.axes)
    product = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*spec.axes.values())] or [{}]
    explicit = spec.cells or [{}]
    out = []
    for seed in spec.seeds if spec.seeds is not None else [None]:
        for varied in spec.variants.values() or [[]]:
            for point in product:
                for cell in explicit:
                    merged = {**point, **cell}
                    out.append([*spec.fixed, *varied, *(f"{k}={value_text(v)}" for k, v in merged.items()),
                                *([f"seed={seed}"] * (seed is not None)), *(extra or [])])
    return out
