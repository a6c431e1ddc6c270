"""Launching a sweep's cells through Hydra's launcher plugins (basic, joblib, submitit local/SLURM).

Hydra has no public API to run a launcher on a list of override sets, so this module, and only
this module, uses Hydra's internals (``hydra._internal``). Each job runs :func:`run_cell`, which
trains one cell into its run directory and never raises.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from dualobj import config as C
from dualobj.errors import ConfigError
from dualobj.sweep.outcome import CellOutcome, Outcome
from dualobj.sweep.plan import Cell
from dualobj.sweep.spec import SweepSpec, parallel_jobs, value_text

SWEEP_PID = "DUALOBJ_SWEEP_PID"  # set for joblib's workers: the sweep process they must not outlive


def launcher_overrides(spec: SweepSpec, hydra_args: list[str], n_cpus: int | None = None) -> tuple[list[str], int]:
    """Hydra overrides for the launcher, and the torch threads each job should use (0 = default)."""
    chosen = next((a.split("=", 1)[1] for a in hydra_args if a.startswith("hydra/launcher=")), None)
    name = chosen or spec.launcher.get("name", "basic")
    ov = [] if chosen else [f"hydra/launcher={name}"]
    threads = 0
    given = next((a.split("=", 1)[1] for a in hydra_args if a.startswith("hydra.launcher.n_jobs=")), None)
    jobs = parallel_jobs(given) if given is not None else spec.launcher.get("jobs", 2)
    if name == "joblib":
        if given is None:
            ov.append(f"hydra.launcher.n_jobs={jobs}")
        # Two 1-thread jobs beat one 2-thread job on a 2-core machine; never oversubscribe.
        threads = max(1, (n_cpus or os.cpu_count() or 1) // jobs)
    for k, v in spec.launcher.items():
        if k not in ("name", "jobs") and not any(a.startswith(f"hydra.launcher.{k}=") for a in hydra_args):
            ov.append(f"hydra.launcher.{k}={value_text(v)}")
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


def run_cell(cfg, max_attempts: int = 2) -> CellOutcome:
    """The task function each launcher runs: train one cell into its run dir, never raising."""
    from dualobj.evaluate import train_and_evaluate
    from dualobj.run import RunDirLocked
    from dualobj.train import GaveUp, Interrupted

    c = C.to_config(cfg)
    rid = C.run_id(c)
    _export_submitit_distributed()
    usr2 = signal.getsignal(signal.SIGUSR2)  # submitit's requeue handler, when under submitit
    try:
        train_and_evaluate(c, c.out, console=None, max_attempts=max_attempts)
        return CellOutcome(rid, Outcome.DONE)
    except RunDirLocked:
        return CellOutcome(rid, Outcome.SKIPPED)
    except GaveUp as e:
        return CellOutcome(rid, Outcome.GAVE_UP, str(e))
    except Interrupted as e:
        if e.signum == signal.SIGUSR2 and callable(usr2):
            usr2(e.signum, None)  # checkpoint saved: let submitit requeue the job now
        return CellOutcome(rid, Outcome.INTERRUPTED, str(e))
    except KeyboardInterrupt:
        return CellOutcome(rid, Outcome.INTERRUPTED)
    except Exception as e:  # recorded in the run's status.json; the sweep goes on
        return CellOutcome(rid, Outcome.FAILED, f"{e.__class__.__name__}: {e}")
    finally:
        _release_memory()


def run_cell_fresh(cfg, max_attempts: int = 2) -> CellOutcome:
    """:func:`run_cell` in a new process: what joblib's long-lived workers run. A worker that trained cells
    in itself kept 450-600 MiB of native memory from one cell to the next (bench/RESULTS.md), so each cell
    gets a fresh process, bounded by one run's peak; and a cell whose process dies (killed by the OS for
    memory, say) is a failed cell that a re-run retries, not a lost worker that ends the whole sweep."""
    import json
    import sys
    import tempfile

    from omegaconf import OmegaConf

    with tempfile.TemporaryDirectory(prefix="dualobj-cell-") as tmp:
        job, result = Path(tmp) / "cell.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"cfg": OmegaConf.to_container(cfg, resolve=True), "max_attempts": max_attempts,
                                   "parent": os.getpid()}))
        code = _cell_process([sys.executable, "-c", "from dualobj.sweep.launch import cell_main; cell_main()",
                              str(job), str(result)])
        if code is not None and result.is_file():
            return CellOutcome.from_json(json.loads(result.read_text()))
    if code is None:
        os._exit(0)  # the sweep is gone: this worker ends (its temporary folder removed) and starts no other cell
    why = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
    return CellOutcome(C.run_id(C.to_config(cfg)), Outcome.FAILED,
                       f"the cell's process ended with exit code {code}{why} before reporting; "
                       "re-run the sweep to retry the cell")


def _cell_process(argv: list[str]) -> int | None:
    """Run a cell's process to its end and return its exit code; None once the sweep that started this worker
    is gone (killed, even with SIGKILL): the cell is then not started, or stopped (SIGTERM: it saves a
    checkpoint) and waited for, and the worker must end rather than go on to another cell."""
    import subprocess

    sweep = int(os.environ.get(SWEEP_PID, os.getppid()))
    inside = os.getpid() == sweep  # joblib with one job runs its tasks in the sweep's own process

    def sweep_gone() -> bool:
        return not inside and os.getppid() != sweep

    if sweep_gone():
        return None
    proc = subprocess.Popen(argv)
    while True:
        try:
            code = proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if sweep_gone():
                proc.terminate()
    return None if sweep_gone() else code


def cell_main() -> None:
    """The fresh process of :func:`run_cell_fresh`: argv = the cell's JSON file, where to write the result."""
    import json
    import sys

    from omegaconf import OmegaConf

    job = json.loads(Path(sys.argv[1]).read_text())
    _term_when_parent_dies(job.get("parent"))
    res = run_cell(OmegaConf.create(job["cfg"]), job["max_attempts"])
    Path(sys.argv[2]).write_text(json.dumps(res.to_json()))


def _term_when_parent_dies(parent: int | None) -> None:
    """Linux: have the kernel send this cell SIGTERM (checkpoint, then stop) when the worker that started it dies,
    so a killed sweep leaves no cell training on; and stop at once if that worker is already gone."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process, from /proc; {} where there is no /proc."""
    out = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            state, ppid = (d / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            out[int(d.name)] = int(ppid)
    return out


def descendants(pid: int, parents: dict[int, int] | None = None) -> list[int]:
    """Every live process under ``pid``, children first, then theirs."""
    parents = _parents() if parents is None else parents
    found, todo = [], [pid]
    while todo:
        kids = [c for c, p in parents.items() if p == todo[0]]
        found += kids
        todo = todo[1:] + kids
    return found


@contextmanager
def _stop_cells_on_term(enabled: bool, grace_s: float = 60.0, run_dirs: list[Path] | None = None):
    """While joblib runs the cells: SIGTERM or SIGHUP to the sweep is passed on to the cells' processes (each
    stops within seconds, in training or evaluation, and marks its run interrupted), waited for up to
    ``grace_s``; cells still alive then are killed and their runs (among ``run_dirs``) marked interrupted.
    Then it is raised here as KeyboardInterrupt, which ends the workers. No process is left behind; a re-run
    resumes."""
    import threading

    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        parents, me = _parents(), os.getpid()
        cells = [p for p in descendants(me, parents) if parents.get(p) != me]  # the workers' children
        for p in cells:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and set(cells) & set(_parents()):
            time.sleep(0.2)
        if late := set(cells) & set(_parents()):
            _kill_late_cells(late, run_dirs or [], grace_s)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _kill_late_cells(pids: set[int], run_dirs: list[Path], grace_s: float) -> None:
    """SIGKILL cell processes that outlived the grace, wait until they are gone (their run locks free), and
    mark the runs they left "running" as interrupted: a re-run resumes them from their last checkpoint."""
    from dualobj.run import RunDir

    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while pids & set(_parents()):
        time.sleep(0.05)
    for d in run_dirs:
        rd = RunDir(d)
        if rd.status().get("state") == "running" and not rd.is_locked():
            rd.set_status(state="interrupted", error=f"killed by the sweep {grace_s:g} s after its stop request "
                                                     "(grace); re-run the sweep to resume it")


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
        raise ConfigError(C.explain_hydra_error(e, launcher_ov)) from e
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


def launch(cells: list[Cell], spec: SweepSpec, out_dir: Path, hydra_args: list[str]) -> list[CellOutcome]:
    """Run ``cells`` through the Hydra launcher plugin chosen by the sweep file or hydra/launcher=..."""
    import functools

    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    launcher_ov, threads = launcher_overrides(spec, hydra_args)
    job_ov = []
    for c in cells:
        extra = [f"out={c.cfg.out}", "train.progress=false"]
        if threads and not any(o.startswith("train.threads=") for o in c.overrides):
            extra.append(f"train.threads={threads}")
        job_ov.append([*C.normalize_overrides(c.overrides), *extra])  # Hydra itself composes each job
    hydra, master = _master(spec, out_dir, launcher_ov)
    joblib = "hydra/launcher=joblib" in launcher_ov  # long-lived workers: a fresh process per cell
    task = functools.partial(run_cell_fresh if joblib else run_cell, max_attempts=1 + spec.retries)
    launcher = Plugins.instance().instantiate_launcher(
        config=master, hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(master)),
        task_function=task,
    )
    if joblib:
        os.environ[SWEEP_PID] = str(os.getpid())  # the workers inherit it: the process they must not outlive
    with _stop_cells_on_term(enabled=joblib, grace_s=spec.grace, run_dirs=[Path(c.cfg.out) for c in cells]):
        returns = launcher.launch(job_ov, initial_job_idx=0)
    results = []
    for c, r in zip(cells, returns, strict=True):
        try:
            results.append(r.return_value)  # re-raises what the job raised, if it failed
        except Exception as e:
            results.append(CellOutcome(c.run_id, Outcome.FAILED, str(e)))
    GlobalHydra.instance().clear()
    return results
