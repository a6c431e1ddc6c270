"""Sweep files: a YAML file of cells, parsed and checked, and expanded into each cell's overrides.

A sweep file (``sweeps/*.yaml``)::

    name: smoke
    fixed: [model=tiny, train.tokens=65536]        # overrides for every cell
    axes:                                           # full product of these ...
      data.repetitions: [1, 4]
      objective.alpha: [0, 1/2, 1]
    cells:                                          # ... times each explicit cell (optional)
      - {data.repetitions: 16, objective.alpha: 63/64}
    launcher: {name: joblib, jobs: 2}               # basic | joblib | submitit_local | submitit_slurm | conf/hydra/launcher/*
    retries: 1                                      # a failed cell is tried 1 + retries times
    throughput: {tiny: 9000}                        # tokens/s per model, for the plan's time estimate

Each cell's run id hashes its semantic config, so its directory ``<sweep dir>/<run id>/`` is
stable: re-running a sweep skips done cells, resumes dead ones and retries failed ones. Each
run holds an OS file lock while it trains, so two sweeps on one folder never train a cell twice.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from dualobj import config as C
from dualobj.errors import ConfigError

SPEC_KEYS = {"name", "description", "fixed", "axes", "cells", "launcher", "retries", "throughput"}
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


def value_text(v: Any) -> str:
    """An override value: '63/64' style fractions become floats; lists/None in Hydra syntax."""
    if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*/\s*\d+\s*", v):
        return repr(float(Fraction(v.replace(" ", ""))))
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


def _grid(p: Path, raw: dict) -> tuple[list[str], dict, list[dict]]:
    """The fixed overrides, the axes and the explicit cells, checked."""
    fixed = raw.get("fixed") or []
    if isinstance(fixed, dict):
        fixed = [f"{k}={value_text(v)}" for k, v in fixed.items()]
    if not isinstance(fixed, list) or not all(isinstance(x, str) and "=" in x for x in fixed):
        raise ConfigError(f"sweep file {p}: 'fixed' must be a list of key=value overrides")
    axes = raw.get("axes") or {}
    if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
        raise ConfigError(f"sweep file {p}: 'axes' must map config keys to non-empty lists of values")
    cells = raw.get("cells") or []
    if not isinstance(cells, list) or not all(isinstance(c, dict) and c for c in cells):
        raise ConfigError(f"sweep file {p}: 'cells' must be a list of mappings like {{objective.alpha: 0.5}}")
    if not axes and not cells:
        raise ConfigError(f"sweep file {p} has neither 'axes' nor 'cells'; add at least one")
    keys = [o.split("=", 1)[0] for o in fixed] + [str(k) for k in axes] + [str(k) for c in cells for k in c]
    if bad := sorted({k for k in keys if _unsafe_key(k)}):
        raise ConfigError(f"sweep file {p}: key(s) {bad} may not be set by a sweep file (hydra settings and "
                          "keys starting with '_'); use the 'launcher' section or hydra.launcher.*= on the command line")
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
    return launcher


def load_spec(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file; every problem is a one-line ConfigError."""
    p = Path(path)
    raw = _read_yaml(p)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"sweep file {p}: 'name' must be a simple name (letters, digits, _ . -), got {name!r}")
    fixed, axes, cells = _grid(p, raw)
    launcher = _launcher(p, raw)
    retries = raw.get("retries", 1)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"sweep file {p}: 'retries' must be a whole number >= 0")
    throughput = raw.get("throughput") or {}
    if not isinstance(throughput, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in throughput.values()):
        raise ConfigError(f"sweep file {p}: 'throughput' must map model names to tokens/s > 0")
    return SweepSpec(name=name, path=p, fixed=fixed, axes=axes, cells=cells, launcher=launcher,
                     retries=retries, throughput=throughput)


def cell_overrides(spec: SweepSpec, extra: list[str] | None = None) -> list[list[str]]:
    """Every cell's overrides: fixed + one point of the axes product (+ one explicit cell), + extra."""
    keys = list(spec.axes)
    product = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*spec.axes.values())] or [{}]
    explicit = spec.cells or [{}]
    out = []
    for point in product:
        for cell in explicit:
            merged = {**point, **cell}
            out.append([*spec.fixed, *(f"{k}={value_text(v)}" for k, v in merged.items()), *(extra or [])])
    return out
