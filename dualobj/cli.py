"""The ``dualobj`` command line: Typer in front, Hydra's compose API behind it.

    dualobj train model=tiny data.repetitions=4 objective.alpha=0.5 train.tokens=200000 out=runs/demo
    dualobj config model=small            # the composed config, with every field's doc
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from typer.core import TyperCommand

from dualobj import views
from dualobj.cliframe import Command, ConfigCommand, Group, console, friendly, state, stdout
from dualobj.fmt import hms
from dualobj.malloc import tune_malloc

app = typer.Typer(
    cls=Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train and compare dual-objective (AR + masked-diffusion) language models.",
)

OVERRIDES = typer.Argument(None, help="Overrides: GROUP=OPTION and SECTION.KEY=VALUE, e.g. model=small "
                                      "data.repetitions=16 objective.alpha=3/4 train.tokens=1e6 out=runs/x")
CONFIG_FILE = typer.Option(None, "--config", help="Start from this YAML config (as `dualobj config` prints it, or a "
                                                  "run's config.yaml); overrides apply on top.")


def _version(show: bool) -> None:
    if show:
        from dualobj import __version__

        typer.echo(f"dualobj {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    state["debug"] = state["debug"] or debug


@app.command(cls=ConfigCommand)
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
               "-m", "dualobj.cli", *(["--debug"] if state["debug"] else []), "train", *(overrides or []),
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
        scores = {k: v for k, v in summary.items() if k.startswith(("eval/", "eval_se/", "eval_n/", "eval_acc"))}
        stdout().print(views.scores_table(scores))
    typer.echo(f"run directory: {Path(out).resolve()}")


@app.command("config", cls=ConfigCommand)
@friendly
def show_config(overrides: list[str] = OVERRIDES, config_file: Path = CONFIG_FILE,
                diff: bool = typer.Option(False, "--diff", help="Only the values that differ from the defaults."),
                ) -> None:
    """Print the composed, validated config as YAML, each field with its one-line doc (`--config` reads it back)."""
    from dualobj import config

    overrides = [*(config.file_overrides(config_file) if config_file else []), *(overrides or [])]
    cfg = config.load(overrides)
    typer.echo(f"# run id: {config.run_id(cfg)}")
    lines = views.config_lines(cfg, config.load([]) if diff else None)
    typer.echo("\n".join(lines) if lines else "# no differences from the defaults")


@app.command("eval")
@friendly
def eval_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by dualobj train"),
    overrides: list[str] = typer.Argument(None, help="eval.* overrides, e.g. 'eval.tasks=\\[blimp,piqa]' "
                                                     "eval.limit=200"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace stored scores made with another recipe."),
) -> None:
    """Score a trained run zero-shot in AR, masked-diffusion and prefix-LM modes (writes eval/<task>.json)."""
    from dualobj.evaluate.evaluator import evaluate

    res = evaluate(run_dir, overrides, say=lambda m: console.print(m, highlight=False), overwrite=overwrite)
    stdout().print(views.scores_table(res["headline"]))
    console.print(f"wrote {len(res['tasks'])} task file(s) to {run_dir / 'eval'} and merged scores into summary.json")


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
    from dualobj.evaluate.generate import check_options
    from dualobj.evaluate.generate import generate as gen

    check_options(run_dir, mode, order, temperature, top_k, top_p, max_tokens, steps)
    text = gen(Evaluator(run_dir), prompt, mode=mode, max_tokens=max_tokens, steps=steps, temperature=temperature,
               top_k=top_k, top_p=top_p, order=order, seed=seed)
    typer.echo(prompt + text)


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

    spec_ = S.load_spec(spec)
    folder = out or Path("runs") / spec_.name
    result = S.run_sweep(spec_, folder, list(args or []), dry_run=dry_run,
                         say=lambda m: console.print(m, highlight=False, markup=False),
                         show=lambda x: stdout().print(x, highlight=False, markup=False),
                         plan_table=lambda cells, where: views.plan_table(spec_.name, where, cells, spec_.seeds))
    raise typer.Exit(result.exit_code)


@app.command()
@friendly
def status(
    folder: Path = typer.Argument(..., help="A sweep folder, a run directory, or a folder holding them, "
                                            "e.g. runs/smoke"),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON, for scripts."),
    watch: bool = typer.Option(False, "--watch", help="Redraw until every run is done (Ctrl-C stops watching)."),
    interval: float = typer.Option(5.0, "--interval", help="With --watch: seconds between looks."),
) -> None:
    """Every run's state (with the reason when dead, failed, damaged or interrupted), progress, last loss,
    heartbeat and attempts, as `dualobj report` sees them; exit 0 only if all are done."""
    from dualobj.errors import ConfigError
    from dualobj.run.status import status_rows

    if not interval > 0:
        raise ConfigError(f"--interval {interval:g} must be > 0 seconds")
    rows = _watch(folder, as_json, interval) if watch else status_rows(folder)
    if not watch:
        _show_status(folder, rows, as_json)
    if any(r.state != "done" for r in rows):
        raise typer.Exit(1)


def _show_status(folder: Path, rows: list, as_json: bool) -> None:
    if as_json:
        typer.echo(views.status_json(folder, rows))
    else:
        stdout().print(views.status_view(folder, rows), highlight=False)


def _watch(folder: Path, as_json: bool, interval: float) -> list:
    """Look at the folder every ``interval`` seconds until every run is done (or Ctrl-C); redraw in place on a
    terminal, else print the status (or a JSON line) each time a run's state or step changes."""
    import contextlib
    import time

    from rich.live import Live

    from dualobj.run.status import status_rows

    out = stdout()
    live = out.is_terminal and not as_json
    rows, last = [], None
    with Live(console=out, auto_refresh=False) if live else contextlib.nullcontext() as view:
        try:
            while True:
                rows = status_rows(folder)
                now = [(r.run_id, r.state, r.step) for r in rows]
                if live:
                    view.update(views.status_view(folder, rows), refresh=True)
                elif now != last:
                    _show_status(folder, rows, as_json)
                last = now
                if all(r.state == "done" for r in rows):
                    return rows
                time.sleep(interval)
        except KeyboardInterrupt:
            return rows


@app.command()
@friendly
def report(
    path: Path = typer.Argument(..., help="Sweep folder or run directory"),
    metric: list[str] = typer.Option(None, "--metric", "-m",
                                     help="Metric(s) to tabulate (default val/ar_nll, val/md_elbo)"),
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


data_app = typer.Typer(cls=Group, no_args_is_help=True, help="Prepare corpora: tokenize once, out of core.")
app.add_typer(data_app, name="data")


@data_app.command("prepare", cls=Command)
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
    typer.echo(f"  tokens     {len(c.train):,} train, {len(c.val):,} val ({meta['dtype']}, "
               f"vocabulary {c.vocab_size:,})")
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
        _info.cls = Command


def main() -> None:
    tune_malloc()
    app()


if __name__ == "__main__":
    main()
