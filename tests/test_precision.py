"""Every bf16 path asks whether bf16 is native here: Muon's orthogonalisation and the run's autocast."""

from __future__ import annotations

import pytest
import torch

from dualobj import runtime
from dualobj.optim import Muon, newton_schulz

NS = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="match_rms_adamw")


def _params(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(48, 24, generator=g)), torch.nn.Parameter(torch.randn(16, 40, generator=g))]


def _three_steps(opt_cls, **kw):
    params = _params()
    opt = opt_cls(params, **NS, **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return params, opt


def test_muon_in_bf16_is_torch_muon_bit_for_bit():
    """ns_bf16=True is exactly torch.optim.Muon: same parameters after three steps, same state_dict."""
    ours, ours_opt = _three_steps(Muon, ns_bf16=True)
    ref, ref_opt = _three_steps(torch.optim.Muon)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)
    ours_state, ref_state = ours_opt.state_dict(), ref_opt.state_dict()
    assert ours_state["param_groups"] == ref_state["param_groups"]
    for k, s in ref_state["state"].items():
        assert torch.equal(ours_state["state"][k]["momentum_buffer"], s["momentum_buffer"])


def test_muon_in_fp32_orthogonalises_as_bf16_does_without_its_rounding():
    """The fp32 iteration computes the same map: its result is within bf16's rounding of the bf16 one, and
    its singular values lie in the quintic iteration's band (about 0.7-1.2) for a well-conditioned input."""
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
    coeffs = torch.optim.Muon(_params(), **NS).defaults["ns_coefficients"]
    fp32 = newton_schulz(g, coeffs, 5, 1e-7, torch.float32)
    bf16 = newton_schulz(g, coeffs, 5, 1e-7, torch.bfloat16)
    assert fp32.dtype == torch.float32 and fp32.shape == g.shape
    sv = torch.linalg.svdvals(fp32)
    assert 0.6 < sv.min() and sv.max() < 1.25, sv
    rel = (fp32 - bf16.float()).norm() / fp32.norm()
    assert 1e-4 < rel < 0.05, rel  # differs by bf16 rounding alone: not identical, not a different map
    params, _ = _three_steps(Muon, ns_bf16=False)
    assert all(torch.isfinite(p).all() for p in params)


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    assert not runtime.use_bf16("auto", cpu) and runtime.use_bf16("bf16", cpu) and not runtime.use_bf16("fp32", cpu)
    note = runtime.precision_note("auto", cpu)
    assert note.startswith("precision: fp32") and "no native bf16" in note and runtime.cpu_capability() in note
    assert runtime.precision_note("fp32", cpu) is None
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    assert runtime.use_bf16("auto", cpu) and runtime.precision_note("auto", cpu) is None
    assert runtime.precision_note("bf16", cpu) is None


def test_explicit_bf16_where_emulated_is_kept_with_the_measured_slowdown(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    rates = {torch.float32: 100.0, torch.bfloat16: 1.25}
    monkeypatch.setattr(runtime, "matmul_gflops", lambda dtype, device: rates[dtype])
    note = runtime.precision_note("bf16", torch.device("cpu"))
    assert note.startswith("warning: train.precision=bf16 kept") and "\n" not in note
    assert "80x slower than fp32 here (1.2 vs 100.0 GFLOP/s measured)" in note, note


def test_the_matmul_probe_measures_a_positive_rate():
    assert runtime.matmul_gflops(torch.float32, torch.device("cpu"), n=64) > 0


@pytest.mark.skipif(not runtime.native_bf16(torch.device("cpu")),
                    reason=f"this CPU has no native bf16 (capability {runtime.cpu_capability()})")
def test_native_bf16_hosts_pick_bf16_by_default():
    assert runtime.use_bf16("auto", torch.device("cpu")) and runtime.precision_note("auto", torch.device("cpu")) is None


def test_fp32_newton_schulz_pads_to_an_aligned_width_without_changing_the_map():
    """Zero columns stay zero and add nothing to the Gram matrix: the padded fp32 iteration (an odd width
    like the paper model's 3554) equals the same iteration run unpadded, up to fp32 summation order."""
    import dualobj.optim as optim

    coeffs = torch.optim.Muon(_params(), **NS).defaults["ns_coefficients"]
    for shape in [(24, 100), (100, 24), (32, 64)]:  # wide, tall (transposed first), already aligned
        g = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        padded = newton_schulz(g, coeffs, 5, 1e-7, torch.float32)
        try:
            optim._ALIGN = 1  # every width is a multiple of 1: no padding
            plain = newton_schulz(g, coeffs, 5, 1e-7, torch.float32)
        finally:
            optim._ALIGN = 64
        assert padded.shape == g.shape
        torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-6)


# torch's and oneDNN's own switches: the ISA dispatch of an AVX2 host without bf16, on any x86 host. The
# hardware's speed stays this host's, so this checks decisions, not timings (README, "Checking the AVX2
# code paths"; `make test-avx2` runs the whole suite so).
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PROBE = """
import json, sys, torch
from dualobj import config, runtime
from dualobj.train import Trainer
cfg = config.load(["train=paper", "model=nano", "train.tokens=4096", "train.batch_size=4",
                   "train.micro_batch_size=2", "train.compile=false", "train.progress=false", *sys.argv[1:]])
Trainer.say = lambda self, m: print("SAY", m, file=sys.stderr)
tr = Trainer(cfg, out=sys.argv[0] + "-unused")
tr.setup()
muon = [o for o in tr.opt.optimizers if hasattr(o, "ns_dtype")]
print(json.dumps({"capability": runtime.cpu_capability(), "native": runtime.native_bf16(torch.device("cpu")),
                  "autocast": tr.bf16, "ns_dtype": [str(o.ns_dtype) for o in muon]}))
"""


def _avx2_probe(tmp_path, *overrides):
    import json
    import os
    import platform
    import subprocess
    import sys

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(reason=f"ATEN_CPU_CAPABILITY=avx2 needs an x86-64 CPU, this is {platform.machine()}")
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    p = subprocess.run([sys.executable, str(script), *overrides], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **AVX2})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), [ln[4:] for ln in p.stderr.splitlines() if
                                                           ln.startswith("SAY ")]


def test_an_avx2_host_runs_the_paper_preset_in_fp32_with_one_line(tmp_path):
    """The real detection chain, no monkeypatching: with torch's and oneDNN's dispatch held to AVX2, the
    paper preset (precision auto, Muon) trains in fp32 and orthogonalises in fp32, and says so once."""
    got, said = _avx2_probe(tmp_path)
    assert got == {"capability": "AVX2", "native": False, "autocast": False, "ns_dtype": ["torch.float32"]}
    notes = [s for s in said if "bf16" in s]
    assert notes == [f"precision: fp32, since this cpu has no native bf16 (torch {torch.__version__}, CPU "
                     "capability AVX2); bf16 would be emulated"], said


def test_an_avx2_host_keeps_an_explicit_bf16_with_its_measured_slowdown(tmp_path):
    import re

    got, said = _avx2_probe(tmp_path, "train.precision=bf16")
    assert got["autocast"] is True and got["ns_dtype"] == ["torch.float32"]  # Muon stays fp32: bf16 is emulated
    (note,) = [s for s in said if "bf16" in s]
    m = re.fullmatch(r"warning: train\.precision=bf16 kept, but this cpu has no native bf16 \(torch .*, CPU "
                     r"capability AVX2\): a bf16 matmul runs ([\d,]+)x slower than fp32 here \(([\d.,]+) vs "
                     r"([\d.,]+) GFLOP/s measured\); train\.precision=auto picks fp32", note)
    assert m, note  # the ratio is measured on the spot: its value depends on the host and its load
