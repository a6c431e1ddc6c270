"""What a preparation tells the person waiting: a rich progress bar on a terminal, phase lines otherwise."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn


class PrepareUI:
    """Phases with a bar (documents, tokens/s, ETA) when stderr is a terminal; one line per phase otherwise.

    ``verbose=False`` silences the phase lines (a bar still shows on a terminal when ``bar`` allows it).
    """

    def __init__(self, bar: bool | None = None, verbose: bool = True):
        self.console = Console(stderr=True, soft_wrap=True)
        self.bar_on = self.console.is_terminal if bar is None else (bar and self.console.is_terminal)
        self.verbose = verbose
        self._progress: Progress | None = None
        self._task = None
        self._t0 = 0.0
        self._base_tokens = 0

    def log(self, msg: str) -> None:
        if self.verbose or self.bar_on:
            self.console.print(f"[data] {msg}", highlight=False, markup=False)

    def phase(self, name: str, total: int, done: int = 0, tokens: int = 0) -> None:
        """Start a phase of `total` units (bytes or rows read from the source) with `done` already behind it."""
        self.end_phase()
        self._t0, self._base_tokens = time.perf_counter(), tokens
        if not self.bar_on:
            self.log(f"{name} ...")
            return
        self._progress = Progress(
            TextColumn("[data] {task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[docs]:>12,} docs  {task.fields[rate]:>9} tok/s"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(name, total=max(total, 1), completed=done, docs=0, rate="-")

    def update(self, done: int, docs: int, tokens: int) -> None:
        if self._progress is None:
            return
        dt = time.perf_counter() - self._t0
        rate = f"{(tokens - self._base_tokens) / dt:,.0f}" if dt > 0 and tokens > self._base_tokens else "-"
        self._progress.update(self._task, completed=done, docs=docs, rate=rate)

    def end_phase(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> PrepareUI:
        return self

    def __exit__(self, *exc) -> None:
        self.end_phase()

