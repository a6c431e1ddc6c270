"""Sweeps: a YAML file of cells -> a plan -> jobs launched through Hydra's launcher plugins.

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
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from dualobj import config as C
from dualobj.errors import ConfigError, DataError, DualObjError
from dualobj.rundir import RunDir, write_json

SPEC_KEYS = {"name", "description", "fixed", "axes", "cells", "launcher", "retries", "throughput"}
LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm")
DEFAULT_FLOPS_PER_S = {"cpu": 5e10, "cuda": 4e14}  # achieved FLOP/s guess when no throughput is known


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


def _value(v: Any) -> str:
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

    text = _value(v)
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


def load_spec(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file; every problem is a one-line ConfigError."""
    p = Path(path)
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
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"sweep file {p}: 'name' must be a simple name (letters, digits, _ . -), got {name!r}")
    fixed = raw.get("fixed") or []
    if isinstance(fixed, dict):
        fixed = [f"{k}={_value(v)}" for k, v in fixed.items()]
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
    launcher = raw.get("launcher") or {"name": "basic"}
    if isinstance(launcher, str):
        launcher = {"name": launcher}
    if not isinstance(launcher, dict):
        raise ConfigError(f"sweep file {p}: 'launcher' must be a mapping like {{name: joblib, jobs: 2}}")
    # A sweep file must never make the tool import or run code: no Hydra/OmegaConf special keys
    # (_target_, _partial_, ...) anywhere in the launcher section, and no hydra.* overrides in cells.
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
    keys = [o.split("=", 1)[0] for o in fixed] + [str(k) for k in axes] + [str(k) for c in cells for k in c]
    if bad := sorted({k for k in keys if _unsafe_key(k)}):
        raise ConfigError(f"sweep file {p}: key(s) {bad} may not be set by a sweep file (hydra settings and "
                          "keys starting with '_'); use the 'launcher' section or hydra.launcher.*= on the command line")
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
            out.append([*spec.fixed, *(f"{k}={_value(v)}" for k, v in merged.items()), *(extra or [])])
    return out


@dataclass
class Cell:
    overrides: list[str]
    cfg: C.Config | None = None
    run_id: str = ""
    error: str | None = None
    params: int = 0
    steps: int = 0
    flops: float = 0.0
    est_s: float = 0.0
    state: str = "pending"
    throughput_source: str = ""

    @property
    def semantic(self) -> dict:
        from dualobj.objective import alpha_prefix

        c = self.cfg
        unique = c.train.tokens // int(c.data.repetitions)
        step_tokens = c.train.batch_size * c.model.seq_len
        steps = c.train.tokens // step_tokens
        alpha_sum = (c.objective.alpha * steps if c.objective.alpha_schedule == "constant" else
                     alpha_prefix(c.objective, steps, lambda s: s * step_tokens / unique)[-1])
        return {"model": c.model.name, "R": int(c.data.repetitions), "alpha": c.objective.alpha, "seed": c.seed,
                "tokens": c.train.tokens, "unique_tokens": unique, "epochs": float(c.data.repetitions),
                "ar_epochs": alpha_sum * step_tokens / unique}  # Σα over the steps: any α schedule


def _params(m: C.ModelConfig) -> tuple[int, int]:
    import torch

    from dualobj.model import Transformer

    with torch.device("meta"):
        model = Transformer(m)
    return model.num_params(), model.num_params(non_embedding=True)


def _measured_throughput(out_dir: Path) -> dict[str, float]:
    """Median tokens/s of finished runs per model size, from earlier runs in this sweep folder."""
    import statistics

    seen: dict[str, list[float]] = {}
    for s in out_dir.glob("*/summary.json"):
        try:
            d = json.loads(s.read_text())
            seen.setdefault(d["model"], []).append(float(d["tokens_per_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {k: statistics.median(v) for k, v in seen.items()}


def plan(spec: SweepSpec, out_dir: Path, extra: list[str] | None = None, device: str = "cpu") -> list[Cell]:
    """Compose and check every cell (all problems at once), with derived quantities and state."""
    from dualobj.model import flops_per_token

    measured = _measured_throughput(out_dir)
    cells, seen = [], {}
    for ov in cell_overrides(spec, extra):
        cell = Cell(overrides=ov)
        try:
            cfg = C.load(ov)
        except ConfigError as e:
            cell.error = str(e)
            cells.append(cell)
            continue
        unique = cfg.train.tokens // int(cfg.data.repetitions)
        if unique < cfg.model.seq_len + 1:
            cell.error = (f"data.repetitions={int(cfg.data.repetitions)} leaves {unique} unique tokens, under one "
                          f"sequence of {cfg.model.seq_len + 1}; lower R or raise train.tokens")
        cell.cfg, cell.run_id = cfg, C.run_id(cfg)
        cfg.out = str(out_dir / cell.run_id)
        if cell.run_id in seen:
            continue  # the same run twice (e.g. an explicit cell repeating an axes point)
        seen[cell.run_id] = cell
        total, non_emb = _params(cfg.model)
        cell.params = total
        cell.steps = cfg.train.tokens // (cfg.train.batch_size * cfg.model.seq_len)
        tokens = cell.steps * cfg.train.batch_size * cfg.model.seq_len
        cell.flops = flops_per_token(cfg.model, non_emb) * tokens
        name = cfg.model.name
        if name in spec.throughput:
            tps, cell.throughput_source = spec.throughput[name], "sweep file"
        elif name in measured:
            tps, cell.throughput_source = measured[name], "measured"
        else:
            tps = DEFAULT_FLOPS_PER_S[device] / flops_per_token(cfg.model, non_emb)
            cell.throughput_source = f"assumed {DEFAULT_FLOPS_PER_S[device]:.0e} FLOP/s"
        cell.est_s = tokens / tps
        cell.state = cell_state(RunDir(cfg.out))
        cells.append(cell)
    return cells


def cell_state(rd: RunDir) -> str:
    """done | running | dead (its process is gone) | failed | interrupted | damaged | pending."""
    if not rd.status_path.exists():
        return "pending"
    try:
        st = rd.status()
    except DualObjError:
        return "damaged"
    state = st.get("state", "pending")
    if state == "done":
        return "damaged" if rd.summary_problem(st) else "done"
    if state == "running" and not rd.is_locked():
        return "dead"
    return state


def check_data(cells: list[Cell]) -> None:
    """Check D/R against the corpus for each distinct corpus that is available here."""
    from dualobj.data.tokens import prepare_corpus

    sizes: dict[tuple, int | str] = {}
    for c in cells:
        if c.error or c.cfg is None:
            continue
        d = c.cfg.data
        key = (d.source, d.path, d.text_field, d.tokenizer, d.val_fraction, d.order_seed, c.cfg.model.vocab_size)
        if key not in sizes:
            try:
                sizes[key] = len(prepare_corpus(d, c.cfg.model.vocab_size).train)
            except DataError as e:
                sizes[key] = str(e)
        have = sizes[key]
        unique = c.cfg.train.tokens // int(d.repetitions)
        if isinstance(have, int) and unique > have:
            c.error = (f"data.repetitions={int(d.repetitions)} needs {unique:,} unique tokens but the training split "
                       f"has {have:,}; raise R or lower train.tokens")


# ------------------------------------------------------------------------------------ launching

def launcher_overrides(spec: SweepSpec, hydra_args: list[str], n_cpus: int | None = None) -> tuple[list[str], int]:
    """Hydra overrides for the launcher, and the torch threads each job should use (0 = default)."""
    chosen = next((a.split("=", 1)[1] for a in hydra_args if a.startswith("hydra/launcher=")), None)
    name = chosen or spec.launcher.get("name", "basic")
    ov = [] if chosen else [f"hydra/launcher={name}"]
    threads = 0
    if name == "joblib":
        jobs = spec.launcher.get("jobs", 2)
        if not any(a.startswith("hydra.launcher.n_jobs=") for a in hydra_args):
            ov.append(f"hydra.launcher.n_jobs={jobs}")
        else:
            jobs = int(next(a for a in hydra_args if a.startswith("hydra.launcher.n_jobs=")).split("=")[1])
        # Two 1-thread jobs beat one 2-thread job on a 2-core machine; never oversubscribe.
        threads = max(1, (n_cpus or os.cpu_count() or 1) // max(1, jobs))
    for k, v in spec.launcher.items():
        if k not in ("name", "jobs") and not any(a.startswith(f"hydra.launcher.{k}=") for a in hydra_args):
            ov.append(f"hydra.launcher.{k}={_value(v)}")
    return [*ov, *hydra_args], threads


def _export_submitit_distributed() -> None:
    """Under a SLURM job of several tasks (nodes x tasks_per_node), give each task its torch.distributed
    rank: the tasks then train one cell together with DDP, exactly as under torchrun."""
    if not os.environ.get("SUBMITIT_EXECUTOR") or "WORLD_SIZE" in os.environ:
        return
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def run_cell(cfg, max_attempts: int = 2) -> dict:
    """The task function each launcher runs: train one cell into its run dir, never raising."""
    from dualobj.rundir import RunDirLocked
    from dualobj.train import GaveUp, Interrupted, train

    c = C.to_config(cfg)
    rid = C.run_id(c)
    _export_submitit_distributed()
    usr2 = signal.getsignal(signal.SIGUSR2)  # submitit's requeue handler, when under submitit
    try:
        s = train(c, c.out, console=None, max_attempts=max_attempts)
        return {"run_id": rid, "outcome": "done", "val/ar_nll": s.get("val/ar_nll")}
    except RunDirLocked:
        return {"run_id": rid, "outcome": "running elsewhere"}
    except GaveUp as e:
        return {"run_id": rid, "outcome": "gave up", "error": str(e)}
    except Interrupted as e:
        if e.signum == signal.SIGUSR2 and callable(usr2):
            usr2(e.signum, None)  # checkpoint saved: let submitit requeue the job now
        return {"run_id": rid, "outcome": "interrupted", "error": str(e)}
    except KeyboardInterrupt:
        return {"run_id": rid, "outcome": "interrupted"}
    except Exception as e:  # recorded in the run's status.json; the sweep goes on
        return {"run_id": rid, "outcome": "failed", "error": f"{e.__class__.__name__}: {e}"}
    finally:
        _release_memory()


def _release_memory() -> None:
    """A joblib worker trains cell after cell; hand freed memory back to the OS between cells (the tuned
    glibc settings never trim on their own, and a long sweep's workers grew to 8-9 GB each without this)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def _master(spec: SweepSpec, out_dir: Path, launcher_ov: list[str]):
    """Hydra itself and the multirun config that carries the launcher's settings."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    C.register_schemas()
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name="dualobj", config_search_path=create_config_search_path(str(C.CONF_DIR)))
    try:
        master = hydra.compose_config(
            "config",
            overrides=[*launcher_ov, "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
                       f"hydra.sweep.dir={Path(out_dir).resolve() / '.hydra'}", "hydra.sweep.subdir=${hydra.job.num}",
                       f"hydra.job.name={spec.name}"],
            run_mode=RunMode.MULTIRUN, with_log_configuration=False,
        )
    except Exception as e:
        raise ConfigError(C._explain_hydra_error(e, launcher_ov)) from e
    return hydra, master


def launcher_config(spec: SweepSpec, out_dir: Path, hydra_args: list[str]) -> str:
    """The launcher's resolved settings as YAML (shown by --dry-run)."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    launcher_ov, _ = launcher_overrides(spec, hydra_args)
    _, master = _master(spec, out_dir, launcher_ov)
    GlobalHydra.instance().clear()
    node = OmegaConf.to_container(master.hydra.launcher, resolve=False)
    return OmegaConf.to_yaml(node)


def launch(cells: list[Cell], spec: SweepSpec, out_dir: Path, hydra_args: list[str]) -> list[dict]:
    """Run ``cells`` through the Hydra launcher plugin chosen by the sweep file or hydra/launcher=..."""
    import functools

    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext

    launcher_ov, threads = launcher_overrides(spec, hydra_args)
    job_ov = []
    for c in cells:
        extra = [f"out={c.cfg.out}", "train.progress=false"]
        if threads and not any(o.startswith("train.threads=") for o in c.overrides):
            extra.append(f"train.threads={threads}")
        job_ov.append([*c.overrides, *extra])
    hydra, master = _master(spec, out_dir, launcher_ov)
    task = functools.partial(run_cell, max_attempts=1 + spec.retries)
    launcher = Plugins.instance().instantiate_launcher(
        config=master, hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(master)),
        task_function=task,
    )
    returns = launcher.launch(job_ov, initial_job_idx=0)
    results = []
    for c, r in zip(cells, returns, strict=True):
        if r.status == JobStatus.COMPLETED:
            results.append(r.return_value)
        else:
            results.append({"run_id": c.run_id, "outcome": "failed", "error": str(r._return_value)})
    GlobalHydra.instance().clear()
    return results


def write_manifest(spec: SweepSpec, out_dir: Path, cells: list[Cell]) -> None:
    """sweep.json: the planned cells, so `dualobj status` knows the pending ones too."""
    write_json(out_dir / "sweep.json", {
        "name": spec.name, "spec": str(spec.path), "written": time.time(),
        "cells": [{"run_id": c.run_id, "overrides": c.overrides, **c.semantic, "params": c.params,
                   "steps": c.steps, "flops": c.flops, "est_s": c.est_s} for c in cells if c.cfg and not c.error],
    })
