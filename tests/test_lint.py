"""The code's style is checked in CI, not only by `make lint`: ruff (pyflakes, pycodestyle with the 120-character
line limit, import order, bugbear, pyupgrade) over the package, the tests and the benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it comes with the dev extra: make install-dev)")
    res = subprocess.run([ruff, "check", "dualobj", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]
