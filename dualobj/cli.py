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
from typer.core import TyperCommand, TyperGroup

from dualobj.errors import DualObjError
from dualobj.fmt import format_alpha, hms, si

try:  # typer >= 0.20 parses with its own copy of click
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # older typer: click itself
    from click.exceptions import NoSuchOption, UsageError


def _usage_error(e: UsageError, args: list[str], command: str | None) -> None:
    """A click usage error (unknown option or command, missing argument) as one ``error:`` line and exit
    code 2, like every other bad input; an option that names a config key gets the override form. Returns
    (for the caller to re-raise) only for "no arguments: show the help"."""
    if type(e).__name__ == "NoArgsIsHelpError":
        return
    msg = e.format_message().rstrip(".")
    hint = _override_hint(e.option_name, args) if isinstance(e, NoSuchOption) else None
    fix = hint or f"see `dualobj {command + ' ' if command else ''}--help`"
    _error_line(f"{msg} {fix[0].upper() + fix[1:]}" if msg.endswith("?") else f"{msg}; {fix}")
    raise typer.Exit(2)


def _override_hint(option: str, args: list[str]) -> str | None:
    """``--model tiny`` -> 'config values are key=value overrides without dashes: write model=tiny'."""
    from dualobj import config as C

    name = option.lstrip("-")
    keys = {*C.config_groups(), *C.schema_types()}
    key = next((k for k in (name, name.replace("-", "_"), f"eval.{name.replace('-', '_')}") if k in keys), None)
    if key is None:
        return None
    value = next((a.split("=", 1)[1] for a in args if a.startswith(option + "=")), None)
    if value is None and option in args and args.index(option) + 1 < len(args):
        value = args[args.index(option) + 1]
    return f"config values are key=value overrides without dashes: write {key}={value or 'VALUE'}"


class _Command(TyperCommand):
    """A command whose usage errors are one line (see :func:`_usage_error`)."""

    help_epilog = None  # a function returning extra help text, built only when help is shown

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, list(args))
        except UsageError as e:
            _usage_error(e, list(args), self.name)
            raise

    def format_help(self, ctx, formatter) -> None:
        if self.help_epilog is not None:
            self.epilog = self.help_epilog()
        super().format_help(ctx, formatter)


class _Group(TyperGroup):
    """The ``dualobj`` group: unknown commands and options are one line too."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, list(args))
        except UsageError as e:
            _usage_error(e, list(args), None)
            raise

    def resolve_command(self, ctx, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except UsageError as e:
            _usage_error(e, list(args), None)
            raise


def _groups_epilog() -> str:
    """The config groups with their options, and the other ways to set the config (for `train --help`)."""
    from dualobj import config as C

    groups = "\n".join(f"  {g}={'|'.join(opts)}" for g, opts in C.config_groups().items())
    return (f"Config groups (GROUP=OPTION; the first option listed is not always the default):\n\n{groups}\n\n"
            "Any config key as SECTION.KEY=VALUE, e.g. objective.alpha=63/64 train.tokens=1e6 "
            "'eval.tasks=\\[val,lambada]' (`dualobj config` lists every key with its doc and default).\n\n"
            "out=DIR: the run directory (default runs/<run id>).\n\n"
            "--config FILE: start from a YAML config, e.g. one printed by `dualobj config` or a run's config.yaml.")


class _ConfigCommand(_Command):
    help_epilog = staticmethod(_groups_epilog)


app = typer.Typer(
    cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train and compare dual-objective (AR + masked-diffusion) language models.",
)
console = Console(stderr=True, soft_wrap=True)  # long lines stay whole in logs (grep-able)


def _stdout() -> Console:
    """Tables on stdout; wide when piped to a file (rich would cut them at 80 columns)."""
    return Console(width=None if sys.stdout.isatty() else 200)


_state = {"debug": bool(os.environ.get("DUALOBJ_DEBUG"))}

OVERRIDES = typer.Argument(None, help="Overrides: GROUP=OPTION and SECTION.KEY=VALUE, e.g. model=small "
                                      "data.repetitions=16 objective.alpha=3/4 train.tokens=1e6 out=runs/x")
CONFIG_FILE = typer.Option(None, "--config", help="Start from this YAML config (as `dualobj config` prints it, or a "
                                                  "run's config.yaml); overrides apply on top.")


def _error_line(msg: str) -> None:
    """The one ``error: ...`` line on stderr that every bad input ends with."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(' '.join(msg.split()))}", highlight=False, soft_wrap=True)


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
            _error_line(msg)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished work is kept; re-run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def _version(show: bool) -> None:
    if show:
        from dualobj import __version__

        typer.echo(f"dualobj {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    _state["debug"] = _state["debug"] or debug


@app.command(cls=_ConfigCommand)
@friendly
def train(overrides: list[str] = OVERRIDES, config_file: Path = CONFIG_FILE) -> None:
    """Train one model (or resume it, or skip it if done) into out=DIR."""
    from dualobj import config
    from dualobj.evaluate import train_and_evaluate

    overrides = [*(config.file_overrides(config_file) if config_file else []), *(overrides or [])]
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


@app.command("config", cls=_ConfigCommand)
@friendly
def show_config(overrides: list[str] = OVERRIDES, config_file: Path = CONFIG_FILE,
                diff: bool = typer.Option(False, "--diff", help="Only the values that differ from the defaults.")) -> None:
    """Print the composed, validated config as YAML, each field with its one-line doc (`--config` reads it back)."""
    from dualobj import config

    overrides = [*(config.file_overrides(config_file) if config_file else []), *(overrides or [])]
    cfg = config.load(overrides)
    typer.echo(f"# run id: {config.run_id(cfg)}")
    lines = _config_lines(cfg, config.load([]) if diff else None)
    typer.echo("\n".join(lines) if lines else "# no differences from the defaults")


def _yaml_value(v) -> str:
    """A value as YAML flow text: null, true, 1.0e-06, [0.9, 0.95], '~' quoted where YAML needs it."""
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, width=10**9, allow_unicode=True).removesuffix("...\n").strip()


def _config_lines(cfg, base=None) -> list[str]:
    """The config as commented YAML lines; with ``base``, only the fields that differ from it."""
    from dataclasses import fields, is_dataclass

    from dualobj import config

    lines = []
    for section in fields(cfg):
        value = getattr(cfg, section.name)
        if is_dataclass(value):
            docs, default = config.field_docs(type(value)), getattr(base, section.name, None)
            rows = [(f.name, getattr(value, f.name), getattr(default, f.name, None)) for f in fields(value)]
            rows = [r for r in rows if base is None or r[1] != r[2]]
            lines += [f"{section.name}:"] * bool(rows)
            lines += [_config_line(f"  {n}", v, docs.get(n, ""), d, base is not None) for n, v, d in rows]
        elif base is None or value != getattr(base, section.name):
            doc = config.field_docs(type(cfg)).get(section.name, "")
            lines.append(_config_line(section.name, value, doc, getattr(base, section.name, None), base is not None))
    return lines


def _config_line(name: str, value, doc: str, default, show_default: bool) -> str:
    text = f"{name}: {_yaml_value(value)}"
    note = f"default {_yaml_value(default)}; {doc}" if show_default else doc
    return f"{text:<36} # {note}" if note else text


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
    from dualobj.evaluate.evaluator import Evaluator
    from dualobj.evaluate.generate import generate as gen

    _check_sampling(mode, order, temperature, top_k, top_p)
    _check_lengths(run_dir, max_tokens, steps)
    text = gen(Evaluator(run_dir), prompt, mode=mode, max_tokens=max_tokens, steps=steps, temperature=temperature,
               top_k=top_k, top_p=top_p, order=order, seed=seed)
    typer.echo(prompt + text)


def _check_sampling(mode: str, order: str, temperature: float, top_k: int, top_p: float) -> None:
    """Refuse generation settings that have no meaning, each with the range that has one."""
    import math

    from dualobj.errors import ConfigError

    if mode not in ("ar", "md", "prefix"):
        raise ConfigError(f"--mode {mode!r} is not one of ar, md, prefix")
    if order not in ("confidence", "random"):
        raise ConfigError(f"--order {order!r} is not one of confidence, random")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"--temperature {temperature:g} must be >= 0 (0 = greedy, 1 = the model's distribution)")
    if top_k < 0:
        raise ConfigError(f"--top-k {top_k} must be >= 0 (0 = off)")
    if not 0 < top_p <= 1:
        raise ConfigError(f"--top-p {top_p:g} must be in (0, 1] (1 = off)")


def _check_lengths(run_dir: Path, max_tokens: int, steps: int) -> None:
    """--max-tokens must fit the model's context (its seq_len, from the run's config.yaml, <s> included)."""
    from dualobj.errors import ConfigError
    from dualobj.run import run_info

    if max_tokens < 1 or steps < 1:
        raise ConfigError(f"--max-tokens {max_tokens} and --steps {steps} must both be >= 1")
    seq_len = run_info(run_dir).get("model.seq_len")
    if isinstance(seq_len, int) and max_tokens > seq_len - 1:
        raise ConfigError(f"--max-tokens {max_tokens} does not fit this model's context (model.seq_len={seq_len}, "
                          f"<s> included); use --max-tokens {seq_len - 1} or less")


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
    from dualobj.sweep.spec import parallel_jobs

    given = next((a.split("=", 1)[1] for a in launcher_ov if a.startswith("hydra.launcher.n_jobs=")), None)
    jobs = parallel_jobs(given) if given is not None else None
    name = next((a.split("=", 1)[1] for a in launcher_ov if a.startswith("hydra/launcher=")), "?")
    return (f"launcher: {name}" + (f" ({jobs} jobs x {threads} threads)" if jobs else "")
            + f"; time estimate from {', '.join(sorted({c.throughput_source for c in good})) or '-'}"
            + (f"; wall time with {jobs} parallel jobs ~{hms(sum(c.est_s for c in todo) / jobs)}" if jobs else ""))


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
    if spec_.search is not None:  # an adaptive search instead of the grid (dualobj/sweep/search.py)
        from dualobj.sweep.search import run_search

        raise typer.Exit(run_search(
            spec_, folder, [a for a in args if a not in hydra_args], hydra_args, dry_run=dry_run,
            say=lambda m: console.print(m, highlight=False), show=_stdout().print,
            plan_table=lambda cells: _plan_table(spec_.name, folder, cells)))
    launcher_ov, threads = L.launcher_overrides(spec_, hydra_args)
    cells = S.plan(spec_, folder, [a for a in args if a not in hydra_args])
    S.check_data(cells)
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
def status(
    folder: Path = typer.Argument(..., help="A sweep folder, a run directory, or a folder holding them, e.g. runs/smoke"),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON, for scripts."),
    watch: bool = typer.Option(False, "--watch", help="Redraw until every run is done (Ctrl-C stops watching)."),
    interval: float = typer.Option(5.0, "--interval", help="With --watch: seconds between looks."),
) -> None:
    """Every run's state (with the reason when dead, failed, damaged or interrupted), progress, last loss,
    heartbeat and attempts, as `dualobj report` sees them; exit 0 only if all are done."""
    from dualobj.errors import ConfigError
    from dualobj.sweep.status import sweep_rows

    if not interval > 0:
        raise ConfigError(f"--interval {interval:g} must be > 0 seconds")
    rows = _watch(folder, as_json, interval) if watch else sweep_rows(folder)
    if not watch:
        _show_status(folder, rows, as_json)
    if any(r["state"] != "done" for r in rows):
        raise typer.Exit(1)


def _status_view(folder: Path, rows: list[dict]):
    """The status table, the counts line (the report's status line) and the reasons, as one renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from dualobj.sweep.status import counts_line

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
    left = sum(r["flops_left"] for r in rows)
    lines = [counts_line(r["state"] for r in rows) + f"; compute left {left:.2e} FLOPs"
             + f" (~{hms(sum(r['est_s_left'] for r in rows))})"]
    lines += [f"  {r['run_id']} ({r['state']}): {r['reason']}" for r in rows if r["reason"] and r["state"] != "done"]
    return Group(table, *(Text(line) for line in lines))  # plain text: a reason may hold [brackets]


def _status_json(folder: Path, rows: list[dict]) -> str:
    """One JSON object: path, counts per state, all_done, compute left, and the runs (NaN as null)."""
    import json
    import math

    from dualobj.sweep.status import state_counts

    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps({
        "path": str(folder), "counts": state_counts(r["state"] for r in rows),
        "all_done": all(r["state"] == "done" for r in rows), "flops_left": sum(r["flops_left"] for r in rows),
        "est_s_left": sum(r["est_s_left"] for r in rows), "runs": [{k: clean(v) for k, v in r.items()} for r in rows],
    })


def _show_status(folder: Path, rows: list[dict], as_json: bool) -> None:
    if as_json:
        typer.echo(_status_json(folder, rows))
    else:
        _stdout().print(_status_view(folder, rows), highlight=False)


def _watch(folder: Path, as_json: bool, interval: float) -> list[dict]:
    """Look at the folder every ``interval`` seconds until every run is done (or Ctrl-C); redraw in place on a
    terminal, else print the status (or a JSON line) each time a run's state or step changes."""
    import contextlib
    import time

    from rich.live import Live

    from dualobj.sweep.status import sweep_rows

    out = _stdout()
    live = out.is_terminal and not as_json
    rows: list[dict] = []
    last = None
    with Live(console=out, auto_refresh=False) if live else contextlib.nullcontext() as view:
        try:
            while True:
                rows = sweep_rows(folder)
                now = [(r["run_id"], r["state"], r["step"]) for r in rows]
                if live:
                    view.update(_status_view(folder, rows), refresh=True)
                elif now != last:
                    _show_status(folder, rows, as_json)
                last = now
                if all(r["state"] == "done" for r in rows):
                    return rows
                time.sleep(interval)
        except KeyboardInterrupt:
            return rows


@app.command()
@friendly
def report(
    path: Path = typer.Argument(..., help="Sweep folder or run directory"),
    metric: list[str] = typer.Option(None, "--metric", "-m", help="Metric(s) to tabulate (default val/ar_nll, val/md_elbo)"),
    fmt: str = typer.Option("md,csv,tex", "--format", "-f", help="Comma-separated: md, csv, tex"),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default <path>/report)"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots"),
    analysis: bool = typer.Option(None, "--analysis/--no-analysis",
                                  help="The paper's analysis (Table 2, GP fit, checks F1-F4) for every target; by "
                                       "default only for the targets asked for with --metric (e.g. val/ar_bpb)"),
) -> None:
    """Comparison tables (rows = R, columns = α, best α marked) and plots from stored results."""
    from dualobj.report import write_report

    files = write_report(path, metrics=metric or None, formats=[f for f in fmt.split(",") if f], out_dir=out,
                         plots=plots, analysis=analysis)
    typer.echo(files.markdown)
    console.print(f"wrote {len(files)} files to {out or Path(path) / 'report'}")


data_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Prepare corpora: tokenize once, out of core.")
app.add_typer(data_app, name="data")


@data_app.command("prepare", cls=_Command)
@friendly
def data_prepare(
    overrides: list[str] = OVERRIDES, config_file: Path = CONFIG_FILE,
    out: Path = typer.Option(None, "--out", "-o", help="Write the prepared corpus to this folder (then use it "
                                                         "as data=tokens data.path=DIR) instead of data.cache_dir"),
) -> None:
    """Tokenize the config's corpus (what `dualobj train` does on first use): streamed, resumable after a kill."""
    import time

    from dualobj import config
    from dualobj.data.tokens import prepare_corpus, prepare_to, prepared_folder

    overrides = [*(config.file_overrides(config_file) if config_file else []), *(overrides or [])]
    cfg = config.load(overrides)
    t0 = time.perf_counter()
    done_before = (prepared_folder(cfg.data, cfg.model.vocab_size, out) / "meta.json").is_file()
    c = prepare_to(out, cfg.data, cfg.model.vocab_size) if out else prepare_corpus(cfg.data, cfg.model.vocab_size)
    _prepared_summary(c, None if done_before else time.perf_counter() - t0)


def _prepared_summary(c, seconds: float | None) -> None:
    """What a prepared corpus holds, on stdout."""
    import json

    meta = json.loads((Path(c.cache_path) / "meta.json").read_text())
    tokens = len(c.train) + len(c.val)
    typer.echo(f"prepared corpus: {c.cache_path}" + (" (prepared before; checked)" if seconds is None else ""))
    typer.echo(f"  documents  {len(c.train_starts) - 1:,} train, {len(c.val_starts) - 1:,} val")
    typer.echo(f"  tokens     {len(c.train):,} train, {len(c.val):,} val ({meta['dtype']}, vocabulary {c.vocab_size:,})")
    typer.echo(f"  tokenizer  {c.tokenizer_path} (sha256 {str(meta.get('tokenizer_sha256', ''))[:16]})")
    if seconds is not None:
        typer.echo(f"  took       {hms(seconds)} ({tokens / max(seconds, 1e-9):,.0f} tokens/s)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def harness(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A finished run directory written by dualobj train"),
    mode: str = typer.Option("ar", "--mode", help="ar | md | prefix: how lm-eval's requests are scored"),
) -> None:
    """Score a finished run with lm-evaluation-harness (the `harness` extra): registers the lm-eval model
    `dualobj` and hands every other argument (--tasks, --include_path, --limit, --output_path,
    --model_args samples=16 ...) to lm-eval's own command line."""
    from dualobj.interop.runs import check_mode, done_run, require_extra

    check_mode(mode)
    done_run(run_dir)
    require_extra("lm_eval", "harness", "lm-evaluation-harness")
    from dualobj.interop.harness import run_cli

    raise typer.Exit(run_cli(run_dir, mode, list(ctx.args)))


@app.command("export")
@friendly
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run directory written by dualobj train"),
    to: Path = typer.Option(..., "--to", help="The new folder to write (an export never overwrites)"),
) -> None:
    """Write a finished run as a Hugging Face folder (config.json, model.safetensors, tokenizer, modeling file):
    AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True) loads it; model(ids, bidirectional=True)
    is MD mode."""
    from dualobj.interop.export import export

    path = export(run_dir, to)
    typer.echo(f"exported {run_dir} to {path}: " + ", ".join(sorted(p.name for p in path.iterdir())))


for _info in app.registered_commands:  # every command's usage errors are one line (train and config: with groups)
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def _tune_malloc() -> None:
    """Re-exec once with an allocator that is fast for torch and gives memory back (glibc's default malloc
    makes training 1.4-2.6x slower; glibc kept for speed never frees: a tiny run's evaluation grew to 9 GB).

    mimalloc from the ``cmeel-mimalloc`` wheel, else tcmalloc, else glibc with transparent huge pages for
    its heap and large blocks (settings must be in place before the process starts). DUALOBJ_MALLOC=off
    skips this; DUALOBJ_MALLOC=mimalloc|tcmalloc|glibc asks for one (falling back down that list).
    """
    want = os.environ.get("DUALOBJ_MALLOC", "auto")
    if sys.platform != "linux" or want not in ("auto", "mimalloc", "tcmalloc", "glibc"):
        return  # off, or this is the re-executed process (DUALOBJ_MALLOC names the allocator in use)

    def mimalloc() -> str | None:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            lib = Path(distribution("cmeel-mimalloc").locate_file("cmeel.prefix/lib/libmimalloc.so"))
        except PackageNotFoundError:
            return None
        return str(lib) if lib.exists() else None

    def tcmalloc() -> str | None:
        return next((p for p in ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                                 "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4") if Path(p).exists()), None)

    env = dict(os.environ)
    order = {"auto": (mimalloc, tcmalloc), "mimalloc": (mimalloc, tcmalloc), "tcmalloc": (tcmalloc, mimalloc)}
    for find in order.get(want, ()):
        if lib := find():
            env["LD_PRELOAD"] = ":".join(filter(None, [env.get("LD_PRELOAD"), lib]))
            env["DUALOBJ_MALLOC"] = f"{find.__name__}-preloaded"
            break
    else:  # THP: far fewer page faults on fresh blocks; glibc's own thresholds still hand memory back
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=1"]))
        env["DUALOBJ_MALLOC"] = "glibc-tuned"
    try:
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    except OSError:
        pass  # keep going with the default allocator


def main() -> None:
    _tune_malloc()
    app()


if __name__ == "__main__":
    main()
