"""The code's style is checked in CI, not only by `make lint`: ruff (pyflakes, pycodestyle with the 120-character
line limit, import order, bugbear, pyupgrade) over the package, the tests and the benchmarks. ruff is a test
dependency (the dev extra), so it is always there where the tests run."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ruff.__main__ import find_ruff_bin

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    res = subprocess.run([find_ruff_bin(), "check", "dualobj", "tests", "bench"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout[-3000:]
