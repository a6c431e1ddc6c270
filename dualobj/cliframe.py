"""The command line's frame: one ``error:`` line and exit code 2 for every bad input (usage errors, config
errors, the environment's OS errors), the consoles, and the config groups shown in ``--help``."""

from __future__ import annotations

import functools
import os
import sys

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from dualobj.errors import DualObjError

try:  # typer >= 0.20 parses with its own copy of click
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # older typer: click itself
    from click.exceptions import NoSuchOption, UsageError


def usage_error(e: UsageError, args: list[str], command: str | None) -> None:
    """A click usage error (unknown option or command, missing argument) as one ``error:`` line and exit
    code 2, like every other bad input; an option that names a config key gets the override form. Returns
    (for the caller to re-raise) only for "no arguments: show the help"."""
    if type(e).__name__ == "NoArgsIsHelpError":
        return
    msg = e.format_message().rstrip(".")
    hint = override_hint(e.option_name, args) if isinstance(e, NoSuchOption) else None
    fix = hint or f"see `dualobj {command + ' ' if command else ''}--help`"
    error_line(f"{msg} {fix[0].upper() + fix[1:]}" if msg.endswith("?") else f"{msg}; {fix}")
    raise typer.Exit(2)


def override_hint(option: str, args: list[str]) -> str | None:
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


class Command(TyperCommand):
    """A command whose usage errors are one line (see :func:`usage_error`)."""

    help_epilog = None  # a function returning extra help text, built only when help is shown

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, list(args))
        except UsageError as e:
            usage_error(e, list(args), self.name)
            raise

    def format_help(self, ctx, formatter) -> None:
        if self.help_epilog is not None:
            self.epilog = self.help_epilog()
        super().format_help(ctx, formatter)


class Group(TyperGroup):
    """The ``dualobj`` group: unknown commands and options are one line too."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, list(args))
        except UsageError as e:
            usage_error(e, list(args), None)
            raise

    def resolve_command(self, ctx, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except UsageError as e:
            usage_error(e, list(args), None)
            raise


def groups_epilog() -> str:
    """The config groups with their options, and the other ways to set the config (for `train --help`)."""
    from dualobj import config as C

    groups = "\n".join(f"  {g}={'|'.join(opts)}" for g, opts in C.config_groups().items())
    return (f"Config groups (GROUP=OPTION; the first option listed is not always the default):\n\n{groups}\n\n"
            "Any config key as SECTION.KEY=VALUE, e.g. objective.alpha=63/64 train.tokens=1e6 "
            "'eval.tasks=\\[val,lambada]' (`dualobj config` lists every key with its doc and default).\n\n"
            "out=DIR: the run directory (default runs/<run id>).\n\n"
            "--config FILE: start from a YAML config, e.g. one printed by `dualobj config` or a run's config.yaml.")


class ConfigCommand(Command):
    help_epilog = staticmethod(groups_epilog)


console = Console(stderr=True, soft_wrap=True)  # long lines stay whole in logs (grep-able)


def stdout() -> Console:
    """Tables on stdout; wide when piped to a file (rich would cut them at 80 columns)."""
    return Console(width=None if sys.stdout.isatty() else 200)


state = {"debug": bool(os.environ.get("DUALOBJ_DEBUG"))}


def error_line(msg: str) -> None:
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
            if state["debug"] or msg is None:
                raise
            error_line(msg)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished work is kept; re-run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


