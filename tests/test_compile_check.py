"""Compiled kernels are checked before they are trusted: ``runtime.compile_problem`` compares the compiled
model's logits with the eager model's on a probe batch, and the trainer trains eager when they differ."""

from __future__ import annotations

import pytest
import torch

from dualobj import config, runtime
from dualobj.config import ModelConfig
from dualobj.model import Transformer, document_ids


def _model_and_args():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(name="t", vocab_size=300, d_model=32, n_layers=2, n_heads=2, d_ff=64, seq_len=24))
    x = torch.randint(5, 300, (4, 24), generator=torch.Generator().manual_seed(1))
    x[:, 0] = x[:, 10] = 1
    return m, (x, torch.tensor([True, False, True, False]), document_ids(x, 1))


def test_the_eager_model_passes_and_its_zero_weights_come_back_bit_for_bit():
    m, args = _model_and_args()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    zeros = [k for k, v in before.items() if v.dim() == 2 and not v.any()]
    assert len(zeros) == 4  # attention and MLP output projections of both layers start at zero
    assert runtime.compile_problem(m, m, args) is None
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())


def test_a_wrong_attention_mask_is_caught_although_output_projections_start_at_zero():
    """A compiled model that attends everywhere (every row bidirectional): with the zero-initialised output
    projections it would give the eager logits exactly; the probe gives them values, so it shows."""
    m, args = _model_and_args()
    x, causal, docs = args
    assert torch.equal(m(x, causal, docs), m(x, torch.zeros_like(causal), None))  # blind at init
    problem = runtime.compile_problem(m, lambda x, causal, docs: m(x, torch.zeros_like(causal), None), args)
    assert problem is not None and problem.startswith("differs from eager by up to ") and "allowed 0.001" in problem


def test_non_finite_logits_are_named_with_their_count():
    m, args = _model_and_args()
    problem = runtime.compile_problem(m, lambda *a: m(*a).masked_fill(torch.arange(300) < 3, float("nan")), args)
    assert problem == "gives non-finite logits (288 of 28,800) where eager's are finite"  # 4 x 24 rows x 3


def test_bf16_autocast_has_a_looser_tolerance():
    m, args = _model_and_args()
    nudged = lambda *a: m(*a) * 1.01  # noqa: E731 - 1% off: beyond fp32's 1e-3, within bf16's 3e-2
    assert "allowed 0.001" in runtime.compile_problem(m, nudged, args)
    assert runtime.compile_problem(m, nudged, args, torch.autocast("cpu", dtype=torch.bfloat16)) is None


def test_the_trainer_trains_eager_when_the_compiled_model_is_wrong(micro, tmp_path, monkeypatch):
    from dualobj import train as train_mod

    seen = []
    monkeypatch.setattr(train_mod, "compile_problem", lambda model, compiled, args, ac: seen.append(args) or
                        "gives non-finite logits (5 of 10) where eager's are finite")
    said = []
    monkeypatch.setattr(train_mod.Trainer, "say", lambda self, msg: said.append(msg))
    cfg = config.load([*micro, "train.tokens=20000", "train.compile=true", "train.precision=fp32", f"out={tmp_path}"])
    tr = train_mod.Trainer(cfg, out=str(tmp_path))
    tr.setup()
    (x, causal, docs), = seen
    assert x.shape == (cfg.train.batch_size, cfg.model.seq_len) and causal.tolist()[:2] == [True, False]
    assert tr.forward is tr.model and tr.forward_eval is tr.model
    assert tr.objective.token_losses is train_mod.ce_and_lse  # the loss tail is not compiled either
    (line,) = [s for s in said if s.startswith("compile:")]
    assert line == (f"compile: the compiled model gives non-finite logits (5 of 10) where eager's are finite on a "
                    f"probe batch (torch {torch.__version__}, cpu, CPU capability {runtime.cpu_capability()}); "
                    "training eager instead, as with train.compile=false")
    assert torch.isfinite(torch.tensor(tr.train_step(0)["train/loss"]))


@pytest.mark.slow
def test_a_compiled_run_that_matches_says_nothing_and_stays_compiled(micro, tmp_path, monkeypatch):
    from dualobj import train as train_mod

    said = []
    monkeypatch.setattr(train_mod.Trainer, "say", lambda self, msg: said.append(msg))
    cfg = config.load([*micro, "train.tokens=20000", "train.compile=true", "train.precision=fp32", f"out={tmp_path}"])
    tr = train_mod.Trainer(cfg, out=str(tmp_path))
    tr.setup()
    if any(s.startswith("compile:") for s in said):  # a host whose inductor is wrong (docs: the AVX2 check)
        pytest.skip(reason=f"the compiled model is wrong on this host, so the run trains eager: {said}")
    assert tr.forward is not tr.model


def test_the_compile_cache_has_a_folder_per_cpu_capability(tmp_path, monkeypatch):
    """Code cached under one vector ISA is never reused under another (torch keys its CPU cache without it)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "shared"))
    mine = runtime.isolate_compile_cache()
    assert mine == str(tmp_path / "shared" / f"cpu-{runtime.cpu_capability()}")
    assert runtime.isolate_compile_cache() == mine  # idempotent: a child process does not nest it again
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == mine
    monkeypatch.setattr(runtime, "cpu_capability", lambda: "AVX2")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "shared"))
    assert runtime.isolate_compile_cache() == str(tmp_path / "shared" / "cpu-AVX2")
