"""A whole short run at default settings: how much of the wall time is validation and checkpointing."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402

from dualobj import config  # noqa: E402
from dualobj.train import train  # noqa: E402


def run(model: str = "tiny", tokens: int = 1_000_000) -> tuple[str, dict]:
    out = Path(tempfile.mkdtemp(prefix="dualobj-bench-run-"))
    try:
        s = train(config.load([f"model={model}", f"train.tokens={tokens}", "eval.at_end=false",
                               "train.progress=false", f"out={out}"]))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    wall = s["wall_time_s"]
    share = {k: s[f"{k}_time_s"] / wall for k in ("validate", "checkpoint")}
    steps_only = s["train_time_s"] / wall
    row = [model, f"{tokens:,}", s["total_steps"], f"{wall:.1f}", f"{steps_only:.1%}", f"{share['validate']:.1%}",
           f"{share['checkpoint']:.1%}", f"{1 - steps_only - share['validate'] - share['checkpoint']:.1%}"]
    table = md_table(["model", "tokens", "steps", "wall s", "training steps", "validation", "checkpointing",
                      "rest (logging, status, data set-up)"], [row])
    return table, {"val_ckpt_share": share["validate"] + share["checkpoint"], "summary": s}


if __name__ == "__main__":
    print(run()[0])
