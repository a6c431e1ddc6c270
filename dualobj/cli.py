"""The ``dualobj`` command line: Typer in front, Hydra's compose API behind it.

    dualobj train model=tiny data.repetitions=4 objective.alpha=0.5 train.tokens=200000 out=runs/demo
    dualobj config model=small            # the composed config, with every field's doc
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from dualobj.errors import DualObjError
from dualobj.fmt import format_alpha, hms, si

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train and compare dual-objective (AR + masked-diffusion) language models.",
)
console = Console(stderr=True, soft_wrap=True)  # long lines stay whole in logs (grep-able)


def _stdout() -> Console:
    """Tables on stdout; wide when piped to a file (rich would cut them at 80 columns)."""
    return Console(width=None if sys.stdout.isatty() else 200)


_state = {"debug": bool(os.environ.get("DUALOBJ_DEBUG"))}

OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. model=small data.repetitions=16 objective.alpha=0.75")


def friendly(fn):
    """One clear line and exit code 2 for user errors; the traceback only with --debug."""

    def _os_error_line(e: OSError) -> str | None:
        """One line for the environment's OSErrors a user can fix (disk full, no permission, read-only); else None."""
        import errno

        where = e.filename or "a file"
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return f"disk full while writing {where}; free space and re-run (finished work is kept)"
        if e.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied for {where}; fix its permissions or choose another location"
        if e.errno == errno.EROFS:
            return f"{where} is on a read-only file system; choose a writable location"
        return None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DualObjError, OSError) as e:
            msg = str(e) if isinstance(e, DualObjError) else _os_error_line(e)
            if _state["debug"] or msg is None:
                raise
            from rich.markup import escape

            console.print(f"[bold red]error:[/] {escape(' '.join(msg.split()))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished work is kept; re-run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    _state["debug"] = _state["debug"] or debug


@app.command()
@friendly
def train(overrides: list[str] = OVERRIDES) -> None:
    """Train one model (or resume it, or skip it if done) into out=DIR."""
    from dualobj import config
    from dualobj.evaluate import train_and_evaluate

    cfg = config.load(overrides)
    out = cfg.out or f"runs/{config.run_id(cfg)}"
    if cfg.train.nproc > 1 and "WORLD_SIZE" not in os.environ:  # become torchrun's launcher
        import subprocess

        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.train.nproc}",
               "-m", "dualobj.cli", *(["--debug"] if _state["debug"] else []), "train", *(overrides or []),
               *([] if cfg.out else [f"out={out}"])]
        console.print(f"starting {cfg.train.nproc} data-parallel processes: torchrun ... dualobj train")
        raise typer.Exit(subprocess.call(cmd))
    if int(os.environ.get("RANK", "0")) != 0:  # only rank 0 talks
        console.quiet = True
    console.print(f"run [bold]{config.run_id(cfg)}[/] -> {out}  (model={cfg.model.name}, "
                  f"R={int(cfg.data.repetitions)}, alpha={cfg.objective.alpha:g}, tokens={cfg.train.tokens:,})")
    summary = train_and_evaluate(cfg, out, console=console)
    if not summary:  # a non-zero rank
        return
    console.print(
        f"done: val/ar_nll={summary['val/ar_nll']:.4f}  val/md_elbo={summary['val/md_elbo']:.4f} nats/token  "
        f"tokens_seen={summary['tokens_seen']:,}  epochs={summary['epochs']:.2f}  "
        f"{summary['tokens_per_s']:,.0f} tok/s"
    )
    if any(k.startswith("eval/avg/") for k in summary):
        _stdout().print(_table_of({k: v for k, v in summary.items() if k.startswith(("eval/", "eval_se/", "eval_n/"))}))
    typer.echo(f"run directory: {Path(out).resolve()}")


@app.command("config")
@friendly
def show_config(overrides: list[str] = OVERRIDES) -> None:
    """Print the composed, validated config with each field's one-line doc."""
    from dataclasses import fields, is_dataclass

    from dualobj import config

    cfg = config.load(overrides)
    typer.echo(f"# run id: {config.run_id(cfg)}")
    for section in fields(cfg):
        value = getattr(cfg, section.name)
        if not is_dataclass(value):
            typer.echo(f"{section.name}: {value}")
            continue
        docs = config.field_docs(type(value))
        typer.echo(f"{section.name}:")
        for f in fields(value):
            typer.echo(f"  {f.name}: {getattr(value, f.name)!r:<24} # {docs.get(f.name, '')}")


@app.command("eval")
@friendly
def eval_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by dualobj train"),
    overrides: list[str] = typer.Argument(None, help="eval.* overrides, e.g. 'eval.tasks=[blimp,piqa]' eval.limit=200"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace stored scores made with another recipe."),
) -> None:
    """Score a trained run zero-shot in AR, masked-diffusion and prefix-LM modes (writes eval/<task>.json)."""
    from dualobj.evaluate.evaluator import evaluate

    res = evaluate(run_dir, overrides, say=lambda m: console.print(m, highlight=False), overwrite=overwrite)
    _stdout().print(_table_of(res["headline"]))
    console.print(f"wrote {len(res['tasks'])} task file(s) to {run_dir / 'eval'} and merged scores into summary.json")


def _table_of(headline: dict):
    """Scores per task and mode with their standard errors and item counts; * = within 2 SE of chance."""
    from rich.table import Table

    keys = [k for k in headline if k.startswith("eval/") and not k.startswith(("eval/val/", "eval/task_set"))]
    modes = sorted({k.rsplit("/", 1)[1] for k in keys})
    tasks = sorted({k.split("/")[1] for k in keys}, key=lambda t: (t == "avg", t))
    title = "chance-normalised scores ± standard error (0 = chance, 100 = perfect; * = within 2 SE of chance)"
    if "eval/task_set" in headline:
        title += f"; avg = task set {headline['eval/task_set']}"
    table = Table(title=title)
    table.add_column("task")
    table.add_column("n", justify="right")
    for m in modes:
        table.add_column(m, justify="right")

    def cell(t: str, m: str) -> str:
        v, se = headline.get(f"eval/{t}/{m}"), headline.get(f"eval_se/{t}/{m}")
        if v is None:
            return "-"
        if se is None:
            return f"{v:.1f}"
        return f"{v:.1f} ± {se:.1f}" + ("*" if abs(v) <= 2 * se else "")

    for t in tasks:
        table.add_row(t, str(headline.get(f"eval_n/{t}", "")), *(cell(t, m) for m in modes))
    return table


@app.command()
@friendly
def generate(
    run_dir: Path = typer.Argument(..., help="A run directory written by dualobj train"),
    prompt: str = typer.Option("", "--prompt", "-p", help="Text to continue"),
    mode: str = typer.Option("ar", "--mode", help="ar | md (iterative unmasking) | prefix (bidirectional prompt)"),
    max_tokens: int = typer.Option(48, "--max-tokens", "-n", help="Tokens to generate"),
    steps: int = typer.Option(32, "--steps", help="MD: unmasking rounds"),
    order: str = typer.Option("confidence", "--order", help="MD: confidence | random"),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 = greedy"),
    top_k: int = typer.Option(50, "--top-k", help="0 = off"),
    top_p: float = typer.Option(0.95, "--top-p", help="1 = off"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Generate a continuation of a prompt with a trained run."""
    from dualobj.errors import ConfigError
    from dualobj.evaluate.evaluator import Evaluator
    from dualobj.evaluate.generate import generate as gen

    if mode not in ("ar", "md", "prefix"):
        raise ConfigError(f"--mode {mode!r} is not one of ar, md, prefix")
    if order not in ("confidence", "random"):
        raise ConfigError(f"--order {order!r} is not one of confidence, random")
    if max_tokens < 1 or steps < 1:
        raise ConfigError("--max-tokens and --steps must be >= 1")
    text = gen(Evaluator(run_dir), prompt, mode=mode, max_tokens=max_tokens, steps=steps, temperature=temperature,
               top_k=top_k, top_p=top_p, order=order, seed=seed)
    typer.echo(prompt + text)


def _plan_table(name: str, folder: Path, cells):
    """The sweep plan as a table: one row per valid cell, then the totals."""
    from rich.table import Table

    table = Table(title=f"sweep {name}: {len(cells)} cells -> {folder}", show_lines=False)
    for col in ("run id", "model", "params", "R", "α", "seed", "tokens", "unique", "epochs", "AR-epochs", "steps",
                "FLOPs", "est. time", "state"):
        table.add_column(col, justify="right")
    good = [c for c in cells if c.cfg is not None and not c.error]
    for c in good:
        m = c.semantic
        table.add_row(c.run_id, m["model"], si(c.params), str(m["R"]), format_alpha(m["alpha"]), str(m["seed"]),
                      si(m["tokens"]), si(m["unique_tokens"]), f"{m['epochs']:g}", f"{m['ar_epochs']:.3g}",
                      f"{c.steps:,}", f"{c.flops:.2e}", hms(c.est_s), c.state)
    done = sum(c.state == "done" for c in good)
    table.add_section()
    table.add_row("total", "", "", "", "", "", si(sum(c.semantic["tokens"] for c in good)), "", "", "",
                  f"{sum(c.steps for c in good):,}", f"{sum(c.flops for c in good):.2e}",
                  hms(sum(c.est_s for c in good)), f"{done} done")
    return table


def _launcher_line(launcher_ov: list[str], threads: int, good, todo) -> str:
    jobs = next((a.split("=")[1] for a in launcher_ov if a.startswith("hydra.launcher.n_jobs=")), None)
    name = next((a.split("=")[1] for a in launcher_ov if a.startswith("hydra/launcher=")), "?")
    return (f"launcher: {name}" + (f" ({jobs} jobs x {threads} threads)" if jobs else "")
            + f"; time estimate from {', '.join(sorted({c.throughput_source for c in good})) or '-'}"
            + (f"; wall time with {jobs} parallel jobs ~{hms(sum(c.est_s for c in todo) / int(jobs))}" if jobs else ""))


def _sweep_outcome(results, folder: Path, n_good: int) -> None:
    """Say how the launched cells ended; exit 130 if stopped, 1 if cells are left."""
    from collections import Counter

    from dualobj.sweep.status import sweep_rows

    left = [r for r in sweep_rows(folder) if r["state"] != "done"]
    if results is None:
        console.print(f"[yellow]stopped[/]: {len(left)} cell(s) not done; finished work is kept, re-run to continue")
        raise typer.Exit(130)
    counts = Counter(r["outcome"] for r in results)
    console.print("results: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    for r in results:
        if r["outcome"] not in ("done",):
            console.print(f"  {r['run_id']}: {r['outcome']} {r.get('error') or ''}", highlight=False)
    console.print(f"{n_good - len(left)}/{n_good} cells done" + (f"; re-run to continue ({len(left)} left)" if left else ""))
    if left:
        raise typer.Exit(1)


@app.command()
@friendly
def sweep(
    spec: Path = typer.Argument(..., help="Sweep file, e.g. sweeps/smoke.yaml"),
    args: list[str] = typer.Argument(None, help="hydra/launcher=... and hydra.launcher.* go to the launcher; "
                                                "other key=value overrides apply to every cell"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
    out: Path = typer.Option(None, "--out", help="Sweep folder (default runs/<sweep name>)."),
) -> None:
    """Run every cell of a sweep that is not done yet; safe to re-run at any time."""
    from dualobj import sweep as S
    from dualobj.errors import ConfigError
    from dualobj.sweep import launch as L

    spec_ = S.load_spec(spec)
    args = list(args or [])
    hydra_args = [a for a in args if a.startswith(("hydra/", "hydra."))]
    folder = out or Path("runs") / spec_.name
    cells = S.plan(spec_, folder, [a for a in args if a not in hydra_args])
    S.check_data(cells)
    launcher_ov, threads = L.launcher_overrides(spec_, hydra_args)
    good = [c for c in cells if c.cfg is not None and not c.error]
    todo = [c for c in good if c.state != "done"]
    out_console = _stdout()
    out_console.print(_plan_table(spec_.name, folder, cells))
    out_console.print(_launcher_line(launcher_ov, threads, good, todo))
    if dry_run:
        out_console.print(f"launcher config ({' '.join(launcher_ov)}):")
        out_console.print(L.launcher_config(spec_, folder, hydra_args).rstrip(), highlight=False)
    bad = [c for c in cells if c.error]
    for c in bad:
        console.print(f"[bold red]invalid cell[/] {' '.join(c.overrides)}: {c.error}", highlight=False, soft_wrap=True)
    if bad:
        raise ConfigError(f"{len(bad)} of {len(cells)} cells are invalid (listed above); fix the sweep file")
    if dry_run:
        return
    S.write_manifest(spec_, folder, good)
    if not todo:
        console.print("nothing to do: every cell is done")
        return
    console.print(f"running {len(todo)} cell(s) ...")
    try:
        results = L.launch(todo, spec_, folder, hydra_args)
    except KeyboardInterrupt:
        results = None
    _sweep_outcome(results, folder, len(good))


@app.command()
@friendly
def status(folder: Path = typer.Argument(..., help="Sweep folder, e.g. runs/smoke")) -> None:
    """Show every cell's state, progress, last loss, heartbeat and attempts; exit 0 only if all are done."""
    from rich.table import Table

    from dualobj.sweep.status import sweep_rows

    rows = sweep_rows(folder)
    table = Table(title=f"{folder}")
    for col in ("run id", "model", "R", "α", "seed", "state", "step", "last loss", "heartbeat", "attempts", "left"):
        table.add_column(col, justify="right")
    colour = {"done": "green", "running": "cyan", "failed": "red", "dead": "yellow", "damaged": "red"}
    for r in rows:
        st = r["state"]
        table.add_row(r["run_id"], str(r["model"] or "-"), str(r["R"] or "-"), format_alpha(r["alpha"]), str(r["seed"]),
                      f"[{colour.get(st, 'white')}]{st}[/]", f"{r['step']}/{r['total_steps'] or '?'}",
                      f"{r['last_loss']:.4f}" if r["last_loss"] is not None else "-",
                      hms(r["heartbeat_age_s"]) + " ago" if r["heartbeat_age_s"] is not None else "-",
                      str(r["attempts"]), hms(r["est_s_left"]) if st != "done" else "")
    c = _stdout()
    c.print(table)
    from collections import Counter

    counts = Counter(r["state"] for r in rows)
    left = sum(r["flops_left"] for r in rows)
    c.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f"; compute left {left:.2e} FLOPs"
            + f" (~{hms(sum(r['est_s_left'] for r in rows))})")
    for r in rows:
        if r["error"] and r["state"] != "done":
            c.print(f"  {r['run_id']} ({r['state']}): {r['error']}", highlight=False)
    if counts.get("done", 0) != len(rows):
        raise typer.Exit(1)


@app.command()
@friendly
def report(
    path: Path = typer.Argument(..., help="Sweep folder or run directory"),
    metric: list[str] = typer.Option(None, "--metric", "-m", help="Metric(s) to tabulate (default val/ar_nll, val/md_elbo)"),
    fmt: str = typer.Option("md,csv,tex", "--format", "-f", help="Comma-separated: md, csv, tex"),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default <path>/report)"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots"),
) -> None:
    """Comparison tables (rows = R, columns = α, best α marked) and plots from stored results."""
    from dualobj.report import write_report

    files = write_report(path, metrics=metric or None, formats=[f for f in fmt.split(",") if f], out_dir=out,
                         plots=plots)
    typer.echo(files.markdown)
    console.print(f"wrote {len(files)} files to {out or Path(path) / 'report'}")


def _tune_malloc() -> None:
    """Re-exec once with a fast allocator: glibc's default malloc makes torch training 1.4-2.6x slower.

    tcmalloc if installed, else glibc tunables (they must be set before the process starts).
    Set DUALOBJ_MALLOC=off to skip.
    """
    if sys.platform != "linux" or os.environ.get("DUALOBJ_MALLOC"):
        return
    env = dict(os.environ)
    tc = next((p for p in ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                           "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4") if Path(p).exists()), None)
    if tc:
        env["LD_PRELOAD"] = ":".join(filter(None, [env.get("LD_PRELOAD"), tc]))
        env["DUALOBJ_MALLOC"] = "tcmalloc"
    else:
        env.update(MALLOC_MMAP_THRESHOLD_="17179869184", MALLOC_TRIM_THRESHOLD_="17179869184",
                   MALLOC_TOP_PAD_="1073741824", DUALOBJ_MALLOC="glibc-tuned")
    try:
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    except OSError:
        pass  # keep going with the default allocator


def main() -> None:
    _tune_malloc()
    app()


if __name__ == "__main__":
    main()
