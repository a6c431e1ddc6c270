"""The paper's model trains: two Muon steps of model=paper_470m train=paper on CPU, through the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import HANG_S
from safetensors import safe_open

PAPER_PARAMS = 468_700_160  # the official configs/large.json model

# train=paper as it is, except what a CPU needs: a short context, 2 sequences of which 1 per forward pass
# (2 optimizer steps), no compile (minutes for 470M on CPU; the GPU check compiles) and bf16 only where
# the CPU has it (precision=auto; train=paper forces bf16). Validation on 2 windows, no downstream eval.
CPU_OVERRIDES = ["model.seq_len=64", "train.batch_size=2", "train.micro_batch_size=1", "train.tokens=256",
                 "train.compile=false", "train.precision=auto", "train.log_every=1", "data.val_sequences=2",
                 "eval.at_end=false", "train.progress=false"]


@pytest.mark.slow
@pytest.mark.longest
def test_paper_470m_trains_two_muon_steps_on_cpu(cache_dir, tmp_path):
    out = tmp_path / "paper"
    res = subprocess.run([sys.executable, "-m", "dualobj.cli", "train", "model=paper_470m", "train=paper",
                          *CPU_OVERRIDES, f"data.cache_dir={cache_dir}", f"out={out}"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=HANG_S)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"] == PAPER_PARAMS and summary["total_steps"] == 2 and summary["tokens_seen"] == 256
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # finite losses and gradients; Muon's LR 7e-3 with no warm-up from the first step
        for key in ("train/loss", "train/grad_norm", "val/ar_nll", "val/md_elbo"):
            assert math.isfinite(r[key]), (r["step"], key, r[key])
        assert r["train/lr"] == pytest.approx(7e-3)
        assert r["train/ar_rows"] == 1  # alpha=0.5 of 2 sequences: one AR, one MD row per step
    assert rows[0]["train/loss"] == pytest.approx(math.log(51_200), rel=0.1)  # about uniform at init

    ckpt = out / "checkpoints" / "step_0000002"
    with safe_open(ckpt / "model.safetensors", "pt") as f:  # the saved model, counted tensor by tensor
        assert sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()) == PAPER_PARAMS
    state = torch.load(ckpt / "state.pt", weights_only=True, mmap=True)
    muon, adamw = state["optimizer"]["optimizers"]  # Muon on the block matrices, AdamW on the rest
    assert len(muon["state"]) == 24 * 7 + 1 and all("momentum_buffer" in s for s in muon["state"].values())
    assert all("exp_avg_sq" in s for s in adamw["state"].values())
