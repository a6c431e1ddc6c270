"""bench/memory.py: its parts (the demo table, the sweep table) replace only themselves in bench/RESULTS.md, and the
sweep table summarises the cell processes."""

from __future__ import annotations

from conftest import bench_module


def test_a_sweep_only_memory_run_keeps_the_demo_table_and_the_text_around_it(tmp_path):
    M = bench_module("memory")
    out = tmp_path / "RESULTS.md"
    M.write_parts(out, {M.DEMO_KEY: "demo table 1", M.SWEEP_KEY: "sweep table 1"})
    end = f"<!-- /{M.SECTION_KEY} -->"
    out.write_text(out.read_text().replace(end, f"why the allocator\n{end}"))
    M.write_parts(out, {M.SWEEP_KEY: "sweep table 2"})
    text = out.read_text()
    assert text.count(M.SECTION) == 1
    assert "demo table 1" in text and "sweep table 2" in text and "sweep table 1" not in text
    assert "why the allocator" in text


def test_the_sweep_table_summarises_cell_processes_in_one_row():
    M = bench_module("memory")
    peaks = {10: 378.0, 11: 334.0, 12: 333.0, 20: 1269.0, 21: 1071.0, 22: 1070.0}
    labels = {10: "sweep (parent)", 11: "LokyProcess-1", 12: "LokyProcess-2", 20: "cell process",
              21: "cell process", 22: "cell process"}
    table = M.peak_table(peaks, labels, 1269.0).splitlines()
    assert table[2].split("|")[1:4] == [" cell processes, largest (median, smallest) ", " 3 ", " 1,269 (1,071, 1,070) "]
    assert any("sweep (parent) (pid 10)" in row and "378" in row for row in table)
    assert not any("pid 20" in row for row in table)
