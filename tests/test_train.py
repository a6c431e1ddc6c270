"""End to end: a micro run writes a complete run directory; kill -9 and resume is bit-identical."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import HANG_S
from safetensors.torch import load_file

from dualobj import config
from dualobj.errors import DataError, RunDirError
from dualobj.train import train

STEP_TOKENS = 8 * 32  # micro: batch 8 x seq 32


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "dualobj.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


def test_micro_run_writes_a_complete_run_directory(micro, tmp_path):
    out = tmp_path / "run"
    cfg = config.load([*micro, "data.repetitions=4", "objective.alpha=0.5", f"train.tokens={STEP_TOKENS * 24}",
                       "train.log_every=4", f"out={out}"])
    summary = train(cfg)
    for name in ("config.yaml", "status.json", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == 24 and status["attempts"] == 1
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("val/ar_nll", "val/md_elbo", "val/ar_bpb", "val/md_bpb"):
        assert math.isfinite(on_disk[key]) and on_disk[key] > 0, key
    assert on_disk["val/ar_nll"] < math.log(512)  # it learned something beyond uniform
    assert on_disk["tokens_seen"] == 24 * STEP_TOKENS
    assert on_disk["unique_tokens"] == 24 * STEP_TOKENS // 4
    assert on_disk["epochs"] == pytest.approx(4.0)
    assert on_disk["ar_epochs"] == pytest.approx(2.0)
    assert on_disk["flops"] > 0 and on_disk["params"] > on_disk["params_non_embedding"] > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 4, 6, 8, 9, 12, 15, 16, 18, 20, 21, 24]
    assert all("val/ar_nll" in r for r in rows if r["step"] % 3 == 0)
    ckpts = sorted((out / "checkpoints").iterdir())
    assert ckpts and (ckpts[-1] / "model.safetensors").is_file()
    assert json.loads((ckpts[-1] / "meta.json").read_text())["step"] == 24
    # The saved config reproduces the run id.
    assert config.run_id(cfg) in (out / "config.yaml").read_text()


def test_a_done_run_is_not_trained_again(micro, tmp_path):
    args = [*micro, f"train.tokens={STEP_TOKENS * 4}", f"out={tmp_path / 'r'}"]
    first = train(config.load(args))
    before = (tmp_path / "r" / "status.json").read_text()
    again = train(config.load(args))
    assert again == json.loads(json.dumps(first))
    assert (tmp_path / "r" / "status.json").read_text() == before  # untouched: no new attempt


def test_another_config_in_the_same_directory_is_refused(micro, tmp_path):
    train(config.load([*micro, f"train.tokens={STEP_TOKENS * 2}", f"out={tmp_path / 'r'}"]))
    with pytest.raises(RunDirError, match="holds run"):
        train(config.load([*micro, f"train.tokens={STEP_TOKENS * 2}", "objective.alpha=0.9", f"out={tmp_path / 'r'}"]))


def test_too_much_repetition_is_refused_before_training(micro, tmp_path):
    with pytest.raises(DataError, match="under one sequence"):
        train(config.load([*micro, f"train.tokens={STEP_TOKENS * 2}", "data.repetitions=64", f"out={tmp_path / 'r'}"]))
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_cli_reports_bad_input_in_one_line(tmp_path):
    res = run_cli("train", "objective.alpha=2", f"out={tmp_path / 'x'}")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "objective.alpha=2.0 is outside [0, 1]" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    debug = run_cli("--debug", "train", "objective.alpha=2")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(sorted((run / "checkpoints").iterdir())[-1] / "model.safetensors")


def _rows(run: Path) -> list[dict]:
    drop = {"tokens_per_s"}
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_kill_minus_9_and_resume_is_bitwise_identical(micro, tmp_path):
    steps = 40
    args = [*micro, "data.repetitions=2", "objective.alpha=0.5", f"train.tokens={STEP_TOKENS * steps}",
            "train.checkpoint_every=5", "train.log_every=5"]
    ref, victim = tmp_path / "ref", tmp_path / "victim"
    assert run_cli("train", *args, f"out={ref}").returncode == 0

    # kill -9 the victim mid-way between its 3rd and 4th checkpoint (DUALOBJ_FAULT: it sends itself SIGKILL
    # after step 17, whatever the machine's load), then re-run the same command.
    killed = run_cli("train", *args, f"out={victim}", env={"DUALOBJ_FAULT": "step@17"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    status = json.loads((victim / "status.json").read_text())
    assert status["state"] == "running" and status["step"] == 15  # the last step it logged
    assert sorted(p.name for p in (victim / "checkpoints").iterdir()) == ["step_0000010", "step_0000015"]

    resumed = run_cli("train", *args, f"out={victim}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr + resumed.stdout
    a, b = _tensors(ref), _tensors(victim)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert _rows(ref) == _rows(victim)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ref, victim))
    assert sa["val/ar_nll"] == sb["val/ar_nll"] and sa["val/md_elbo"] == sb["val/md_elbo"]
    assert json.loads((victim / "status.json").read_text())["attempts"] == 2


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_for_requeue(micro, tmp_path):
    out = tmp_path / "r"
    args = [*micro, f"train.tokens={STEP_TOKENS * 200}", f"out={out}"]
    hold = tmp_path / "hold"  # the run pauses before step 10 until the signal: it is mid-way, however slow the host
    proc = subprocess.Popen([sys.executable, "-m", "dualobj.cli", "train", *args],
                            env={**os.environ, "DUALOBJ_HOLD": "step@10", "DUALOBJ_HOLD_DIR": str(hold)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + HANG_S
    while not any(hold.glob("*.step.held")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 2 and "re-run the same command to resume" in err
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted"
    ckpts = sorted((out / "checkpoints").iterdir())
    assert ckpts and int(ckpts[-1].name.split("_")[1]) >= 10  # saved at the step it stopped


def test_wandb_offline_mirror_uses_the_run_id(micro, tmp_path):
    out = tmp_path / "r"
    cfg = config.load([*micro, f"train.tokens={STEP_TOKENS * 2}", "logger=wandb", "logger.mode=offline", f"out={out}"])
    train(cfg)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith(config.run_id(cfg))
    assert json.loads((out / "summary.json").read_text())["run_id"] == config.run_id(cfg)


def test_a_non_finite_loss_fails_the_run_with_step_and_reason(micro, tmp_path):
    from dualobj.train import TrainingFailed

    out = tmp_path / "r"
    with pytest.raises(TrainingFailed, match=r"loss became nan at step \d+"):
        train(config.load([*micro, f"train.tokens={STEP_TOKENS * 50}", "train.lr=1e8", "train.grad_clip=0",
                           "train.warmup=0", f"out={out}"]))
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and "loss became nan" in status["error"]
    assert not (out / "summary.json").exists()


def test_an_alpha_schedule_drives_the_split_and_the_ar_epochs(micro, tmp_path):
    out = tmp_path / "r"
    s = train(config.load([*micro, f"train.tokens={STEP_TOKENS * 16}", "data.repetitions=8", "train.log_every=1",
                           "objective.alpha_schedule=ar_epochs_capped", "objective.ar_epochs_cap=2",
                           "objective.alpha_start=1.0", f"out={out}"]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    alphas = [r["train/alpha"] for r in rows]
    # 2 steps per epoch: alpha = 1 until 2 epochs are done, then 2 / epochs (epoch 2.5 -> 0.8, ... 7.5 -> 0.267)
    assert alphas[:5] == [1.0] * 5 and alphas[5] == pytest.approx(2 / 2.5) and alphas[-1] == pytest.approx(2 / 7.5)
    assert [r["train/ar_rows"] for r in rows][:5] == [8] * 5
    assert s["ar_epochs"] == pytest.approx(sum(alphas) * STEP_TOKENS / s["unique_tokens"])
    assert s["alpha_schedule"] == "ar_epochs_capped" and s["alpha_mean"] == pytest.approx(sum(alphas) / 16)


ALLOCATOR_PROBE = """
import json, os, re, sys
from dualobj.malloc import tune_malloc

tune_malloc()  # re-executes this script once with the allocator dualobj picks
import torch

def rss_mb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

base = rss_mb()
for mb in (64, 128, 256, 128, 64):  # blocks of a training step's size, freed at once
    x = torch.ones(mb * 2**20 // 4)
    del x
print(json.dumps({"malloc": os.environ.get("DUALOBJ_MALLOC"), "tunables": os.environ.get("GLIBC_TUNABLES"),
                  "preload": os.environ.get("LD_PRELOAD"), "kept_mb": rss_mb() - base}))
"""


def _allocator_probe(tmp_path, env: dict) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(ALLOCATOR_PROBE)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "DUALOBJ_MALLOC"))}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env={**clean, **env},
                         timeout=HANG_S)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="the allocator is chosen on Linux only")
def test_the_glibc_fallback_gives_freed_memory_back(tmp_path):
    """Without mimalloc or tcmalloc, dualobj re-executes with glibc settings that return freed blocks to the
    OS; the 16 GB thresholds it used before kept every freed block (a tiny run's evaluation reached 9 GB)."""
    got = _allocator_probe(tmp_path, {"DUALOBJ_MALLOC": "glibc", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"})
    assert got["malloc"] == "glibc-tuned"
    assert got["tunables"] == "glibc.malloc.tcache_count=7:glibc.malloc.hugetlb=1"  # the user's own are kept
    assert got["kept_mb"] < 32, got
    before = _allocator_probe(tmp_path, {"DUALOBJ_MALLOC": "old", "MALLOC_MMAP_THRESHOLD_": str(16 << 30),
                                         "MALLOC_TRIM_THRESHOLD_": str(16 << 30), "MALLOC_TOP_PAD_": str(1 << 30)})
    assert before["kept_mb"] > 200, before  # the probe tells the two apart
    off = _allocator_probe(tmp_path, {"DUALOBJ_MALLOC": "off"})
    assert off["malloc"] == "off" and off["tunables"] is None and not off["preload"]


@pytest.mark.skipif(sys.platform != "linux", reason="the allocator is chosen on Linux only")
def test_mimalloc_is_preloaded_where_installed(tmp_path):
    import importlib.metadata

    try:
        importlib.metadata.distribution("cmeel-mimalloc")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(reason="cmeel-mimalloc is not installed: it is a dependency on x86-64 and aarch64 Linux only, "
                           "so this platform falls back to tcmalloc or glibc (tested above)")
    got = _allocator_probe(tmp_path, {})
    assert got["malloc"] == "mimalloc-preloaded" and got["preload"].endswith("libmimalloc.so")
