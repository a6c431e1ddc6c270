"""The plan of a sweep: every cell composed and checked, with its budget, run id, state and time estimate."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from dualobj import config as C
from dualobj.budget import Budget
from dualobj.errors import ConfigError, DataError
from dualobj.run import run_state, write_json
from dualobj.sweep.spec import SweepSpec, cell_overrides

DEFAULT_FLOPS_PER_S = {"cpu": 5e10, "cuda": 4e14}  # achieved FLOP/s guess when no throughput is known


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
    def budget(self) -> Budget:
        return Budget(self.cfg)

    @property
    def semantic(self) -> dict:
        c, b = self.cfg, self.budget
        return {"model": c.model.name, "R": int(c.data.repetitions), "alpha": c.objective.alpha, "seed": c.seed,
                "tokens": c.train.tokens, "unique_tokens": b.unique_tokens, "epochs": float(c.data.repetitions),
                "ar_epochs": b.ar_epochs(b.total_steps)}  # Σα over the steps: any α schedule


def _measured_throughput(out_dir: Path) -> dict[str, float]:
    """Median tokens/s of finished runs per model size, from earlier runs in this sweep folder."""
    seen: dict[str, list[float]] = {}
    for s in out_dir.glob("*/summary.json"):
        try:
            d = json.loads(s.read_text())
            seen.setdefault(d["model"], []).append(float(d["tokens_per_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {k: statistics.median(v) for k, v in seen.items()}


def _compose(ov: list[str], out_dir: Path) -> Cell:
    """One cell from its overrides: config, run id, run directory, or the reason it is invalid."""
    cell = Cell(overrides=ov)
    try:
        cfg = C.load(ov)
    except ConfigError as e:
        cell.error = str(e)
        return cell
    unique = Budget(cfg).unique_tokens
    if unique < cfg.model.seq_len + 1:
        cell.error = (f"data.repetitions={int(cfg.data.repetitions)} leaves {unique} unique tokens, under one "
                      f"sequence of {cfg.model.seq_len + 1}; lower R or raise train.tokens")
    cell.cfg, cell.run_id = cfg, C.run_id(cfg)
    cfg.out = str(out_dir / cell.run_id)
    return cell


def _estimate(cell: Cell, spec: SweepSpec, measured: dict[str, float], device: str) -> None:
    """Fill the cell's size, steps, FLOPs and time estimate (sweep file > measured here > assumed FLOP/s)."""
    b, name = cell.budget, cell.cfg.model.name
    cell.params, cell.steps, cell.flops = b.params[0], b.total_steps, b.flops()
    if name in spec.throughput:
        tps, cell.throughput_source = spec.throughput[name], "sweep file"
    elif name in measured:
        tps, cell.throughput_source = measured[name], "measured"
    else:
        tps = DEFAULT_FLOPS_PER_S[device] / b.flops_per_token()
        cell.throughput_source = f"assumed {DEFAULT_FLOPS_PER_S[device]:.0e} FLOP/s"
    cell.est_s = b.tokens / tps


def plan(spec: SweepSpec, out_dir: Path, extra: list[str] | None = None, device: str = "cpu") -> list[Cell]:
    """Compose and check every cell (all problems at once), with derived quantities and state."""
    measured = _measured_throughput(out_dir)
    cells, seen = [], set()
    for ov in cell_overrides(spec, extra):
        cell = _compose(ov, out_dir)
        if cell.cfg is not None:
            if cell.run_id in seen:
                continue  # the same run twice (e.g. an explicit cell repeating an axes point)
            seen.add(cell.run_id)
            _estimate(cell, spec, measured, device)
            cell.state = run_state(cell.cfg.out)
        cells.append(cell)
    return cells


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
        unique = c.budget.unique_tokens
        if isinstance(have, int) and unique > have:
            c.error = (f"data.repetitions={int(d.repetitions)} needs {unique:,} unique tokens but the training split "
                       f"has {have:,}; raise R or lower train.tokens")


def write_manifest(spec: SweepSpec, out_dir: Path, cells: list[Cell]) -> None:
    """sweep.json: the planned cells, so `dualobj status` knows the pending ones too."""
    write_json(out_dir / "sweep.json", {
        "name": spec.name, "spec": str(spec.path), "written": time.time(),
        "cells": [{"run_id": c.run_id, "overrides": c.overrides, **c.semantic, "params": c.params,
                   "steps": c.steps, "flops": c.flops, "est_s": c.est_s} for c in cells if c.cfg and not c.error],
    })
