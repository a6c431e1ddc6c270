"""bench/RESULTS.md is shared by every benchmark: each one replaces only its own section.

A section lies between the markers ``<!-- KEY -->`` and ``<!-- /KEY -->`` (KEY is the script, e.g.
``bench/scale.py``); a section not there yet is appended; everything outside it is kept as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

HEADER = "# Benchmark results\n"


def write_section(path: Path, key: str, body: str) -> None:
    """Replace (or append) the section ``key`` of the results file at ``path`` with ``body``, atomically."""
    path = Path(path)
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    text = path.read_text() if path.is_file() else HEADER
    block = f"{start}\n{body.strip()}\n{end}\n"
    if start in text and end in text[text.index(start):]:
        i = text.index(start)
        j = text.index(end, i) + len(end)
        rest = text[j:].lstrip("\n")
        text = text[:i] + block + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
