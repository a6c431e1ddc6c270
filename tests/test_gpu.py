"""The GPU path wherever CUDA exists: compiled FlexAttention, paper_470m at its context in bf16, nccl DDP.

Tests marked ``gpu`` are skipped without CUDA (conftest.py says why); ``make bench-gpu`` runs them, then
bench/gpu.py for the speed. The last test checks bench/gpu.py itself on CPU (``--smoke``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from dualobj import config
from dualobj.config import ModelConfig
from dualobj.model import Transformer, document_ids
from dualobj.runtime import native_bf16
from dualobj.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def _cuda_model(seq_len: int = 256) -> Transformer:
    torch.manual_seed(0)
    m = Transformer(ModelConfig(name="t", vocab_size=300, d_model=64, n_layers=2, n_heads=4, d_ff=128,
                                seq_len=seq_len)).cuda()
    with torch.no_grad():  # the zero-initialised output projections would hide any mixing
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["per-row, docs", "per-row, no docs", "bidirectional, docs", "causal, no docs",
                                  "prefix, no docs", "per-row prefix, docs"])
def test_compiled_flex_attention_matches_the_dense_mask_with_grads_on_cuda(case):
    from test_model import FLEX_CASES

    causal, docs, prefix = FLEX_CASES[case]
    m = _cuda_model()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(5, 300, (4, 256), generator=g)
    x[:, 0], x[:, 100] = 1, 1
    x = x.cuda()
    d = document_ids(x, 1) if docs else None
    causal = causal.cuda() if isinstance(causal, torch.Tensor) else causal
    prefix = prefix.cuda() if prefix is not None else None
    out, grads = {}, {}
    torch._dynamo.reset()
    compiled = torch.compile(m)
    for backend, fwd in (("sdpa", m), ("flex", compiled)):
        m.cfg.attention = backend
        m.zero_grad()
        out[backend] = fwd(x, causal, d, prefix)
        out[backend].square().mean().backward()
        grads[backend] = [p.grad.clone() for p in m.parameters()]
    torch.testing.assert_close(out["flex"], out["sdpa"], rtol=2e-3, atol=2e-3)
    for a, b in zip(grads["flex"], grads["sdpa"], strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-4)


@pytest.mark.gpu
@pytest.mark.slow
def test_paper_470m_trains_at_2048_in_bf16_with_compiled_flex_and_validation_and_eval_fit(tmp_path, cache_dir):
    from gpu import evaluate

    cfg = config.load(["model=paper_470m", "train=paper", "train.batch_size=8", "train.micro_batch_size=8",
                       f"train.tokens={3 * 8 * 2048}", "data.repetitions=4", "data.val_fraction=0.3",
                       "train.progress=false", "eval.tasks=[val,probe_mc]", "eval.limit=32",
                       f"data.cache_dir={cache_dir}"])
    assert cfg.model.seq_len == 2048 and cfg.train.compile and cfg.train.precision == "auto"
    tr = Trainer(cfg, out=tmp_path / "run")
    tr.setup()
    assert tr.bf16 and tr.model._backend(torch.zeros(1, 1, dtype=torch.long, device=tr.device)) == "flex"
    assert tr.model.num_params() == 468_700_160
    rows = [tr.train_step(s) for s in range(3)]
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["train/grad_norm"]) for r in rows)
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]  # three Muon steps on the same data distribution
    val = tr.validate()  # the 32 training-validation windows of 2048 tokens, in micro-batches
    assert math.isfinite(val["val/ar_nll"]) and math.isfinite(val["val/md_elbo"])
    headline = evaluate(tr, tmp_path / "run")  # the val task's 128 windows and a probe, every mode
    assert headline and all(math.isfinite(v) for v in headline.values() if isinstance(v, float))


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs for nccl data parallelism")
def test_two_nccl_processes_match_one_process(micro, tmp_path):
    from test_distributed import STEP_TOKENS, assert_same_trajectory, rows, run_cli

    args = [*micro, "train.precision=fp32", f"train.tokens={STEP_TOKENS * 8}", "train.log_every=1",
            "objective.alpha=0.5", "data.repetitions=2"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(*args, f"out={one}").returncode == 0
    r2 = run_cli(*args, "train.nproc=2", f"out={two}")
    assert r2.returncode == 0, r2.stderr[-3000:]
    status = json.loads((two / "status.json").read_text())
    assert status["state"] == "done" and status["world_size"] == 2
    assert_same_trajectory(rows(one), rows(two), rtol=1e-3)


@pytest.mark.slow
def test_gpu_bench_runs_on_cpu_in_smoke_mode(cache_dir, tmp_path):
    """bench/gpu.py's own code (steps, MFU, high-water marks, validation and evaluation) on CPU."""
    import gpu

    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    info = gpu.main(["--smoke", "--override", f"data.cache_dir={cache_dir}", "--out", str(out)])
    assert info["tokens_per_s"] > 0 and 0 < info["mfu_measured"] < 1.5
    assert info["dtype"] == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")  # MFU of the dtype it ran in
    assert info["val"] == "fits" and info["eval"] == "fits"
    text = out.read_text()
    assert "## Other\n\nkept" in text and gpu.SECTION in text and "training tokens/s" in text
