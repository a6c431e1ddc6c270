"""Zero-shot evaluation: benchmark tasks, built-in probes, likelihood scoring and orchestration.

Modules, lowest first (each imports only those above it): ``types`` (Request, Item, Score) ->
``scoring`` (the Scorer), ``tasks`` (task kinds and their scoring), ``benchmarks`` (the benchmark folder and
its files) -> ``probes`` (tasks built from the corpus) -> ``registry`` (task names -> tasks) ->
``evaluator`` (``dualobj eval``: Evaluator, evaluate) and ``generate`` (``dualobj generate``).

This package imports nothing heavy itself: ``train_and_evaluate`` loads training and evaluation on use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dualobj.config import Config

__all__ = ["train_and_evaluate"]


def train_and_evaluate(cfg: Config, out: str | Path | None = None, console=None, max_attempts: int = 0) -> dict:
    """Train `cfg` into `out`, then (when ``eval.at_end``) evaluate the trained model before the run is done.

    Tasks whose benchmark files are missing are skipped; the headline scores are merged into summary.json.
    """
    from dualobj.train import train

    if cfg.eval.at_end:  # a typo in eval.tasks is found now, not after hours of training
        from dualobj.evaluate.registry import check_task_names

        check_task_names(list(cfg.eval.tasks), cfg.eval.task_set)

    def evaluate_at_end(trained) -> dict:
        from dualobj.evaluate.evaluator import Evaluator

        ev = Evaluator(trained.run_dir, cfg.eval, cfg, model=trained.model, corpus=trained.corpus,
                       step=trained.step)  # the run's own settings decide: scores of an attempt
        # a stop request ends it between tasks or batches (EvalStopped); a re-run scores only what is missing
        return ev.run(skip_missing=True, say=trained.say, overwrite=True, stopping=trained.stopping,
                      keep_done=True)["headline"]

    return train(cfg, out, console, max_attempts, after=evaluate_at_end if cfg.eval.at_end else None)
