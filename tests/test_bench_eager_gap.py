"""bench/eager_gap.py at a micro shape: the step ratios, the breakdown and the profile table come out."""

from __future__ import annotations

import re

import pytest
from conftest import MICRO, bench_module


@pytest.mark.slow
def test_eager_gap_tables_at_a_micro_shape(tmp_path):
    eg = bench_module("eager_gap")
    overrides = [o for o in MICRO if not o.startswith(("train.batch_size", "train.progress", "train.threads"))]
    body, data = eg.run("tiny", rounds=1, part_rounds=1, extra=overrides, with_compile=False)
    assert data["tokens_per_s"]["dualobj eager"] > 0 and data["tokens_per_s"]["reference eager"] > 0
    ratios = [float(r) for r in re.findall(r"\| (\d+\.\d+)x \|", body)]
    assert ratios and all(r > 0 for r in ratios)
    for part in ("attention mask", "attention kernel", "RoPE", "RMSNorm", "loss tail", "data, MD masking"):
        assert part in body
    assert all(tool > 0 for tool, _ in data["parts"].values())
    assert "kind of op" in body and "peak RSS" in body and "CPU capability" in body
    out = tmp_path / "RESULTS.md"
    eg.write_section(out, "bench/eager_gap.py: test", body)
    assert "<!-- bench/eager_gap.py: test -->" in out.read_text()
