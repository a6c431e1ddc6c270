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

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train and compare dual-objective (AR + masked-diffusion) language models.",
)
console = Console(stderr=True)
_state = {"debug": bool(os.environ.get("DUALOBJ_DEBUG"))}

OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. model=small data.repetitions=16 objective.alpha=0.75")


def friendly(fn):
    """One clear line and exit code 2 for user errors; the traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DualObjError as e:
            if _state["debug"]:
                raise
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
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
    from dualobj.train import train as run_training

    cfg = config.load(overrides)
    out = cfg.out or f"runs/{config.run_id(cfg)}"
    console.print(f"run [bold]{config.run_id(cfg)}[/] -> {out}  (model={cfg.model.name}, "
                  f"R={int(cfg.data.repetitions)}, alpha={cfg.objective.alpha:g}, tokens={cfg.train.tokens:,})")
    summary = run_training(cfg, out, console=console)
    console.print(
        f"done: val/ar_nll={summary['val/ar_nll']:.4f}  val/md_elbo={summary['val/md_elbo']:.4f} nats/token  "
        f"tokens_seen={summary['tokens_seen']:,}  epochs={summary['epochs']:.2f}  "
        f"{summary['tokens_per_s']:,.0f} tok/s"
    )
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
