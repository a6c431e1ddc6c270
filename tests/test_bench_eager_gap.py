"""bench/eager_gap.py at a micro shape: the step ratios, the breakdown and the profile table come out."""

from __future__ import annotations

import re

import pytest
from conftest import MICRO, bench_module


@pytest.mark.slow
def test_eager_gap_tables_at_a_micro_shape(tmp_path):
    eg = bench_module("eager_gap")
    overrides = [o for o in MICRO if not o.startswith(("train.batch_size", "train.progress", "train.threads"))]
    out = tmp_path / "RESULTS.md"
    body = eg.main([*overrides, "--model", "tiny", "--rounds", "1", "--part-rounds", "1", "--no-compile",
                    "--before", "HEAD", "--results", str(out)])
    ratios = [float(r) for r in re.findall(r"\| (\d+\.\d+)x(?= \|)", body)]
    assert len(ratios) >= 2 and all(r > 0 for r in ratios)
    for part in ("attention mask", "attention kernel", "RoPE", "RMSNorm", "loss tail", "data, MD masking",
                 "whole step", "before: RoPE", "Inherent to a mixed AR/MD batch", "kind of op"):
        assert part in body, part
    assert "peak RSS" in body and "CPU capability" in body and "torch " in body
    text = out.read_text()
    key = f"bench/eager_gap.py: {eg.cpu_capability()}"
    assert f"<!-- {key} -->" in text and f"<!-- /{key} -->" in text
