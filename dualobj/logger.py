"""Optional mirrors of the run's metrics. The run directory's files stay the source of truth."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from dualobj.config import Config
from dualobj.errors import ConfigError


class LocalLogger:
    """metrics.jsonl is written by the trainer itself; nothing else to do."""

    def log(self, row: dict, step: int) -> None:
        pass

    def summary(self, summary: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    """Weights & Biases mirror; the wandb run id is the dualobj run id, so a resumed run continues it."""

    def __init__(self, cfg: Config, run_id: str, run_dir: Path):
        try:
            import wandb
        except ImportError as e:
            raise ConfigError("logger=wandb needs the wandb package; pip install wandb or use logger=local") from e
        lc = cfg.logger
        self.run = wandb.init(
            project=lc.project, entity=lc.entity, group=lc.group, id=run_id, resume="allow", mode=lc.mode,
            dir=str(run_dir), config=asdict(cfg),
            name=f"{cfg.model.name}-R{int(cfg.data.repetitions)}-a{cfg.objective.alpha:g}",
            reinit="finish_previous",
        )

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if v is not None}, step=step)

    def summary(self, summary: dict) -> None:
        for k, v in summary.items():
            self.run.summary[k] = v

    def finish(self) -> None:
        self.run.finish()


def make_logger(cfg: Config, run_id: str, run_dir: Path):
    if cfg.logger.name == "wandb" and cfg.logger.mode != "disabled":
        return WandbLogger(cfg, run_id, Path(run_dir))
    return LocalLogger()
