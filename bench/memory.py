"""Peak memory next to speed: the demo run under each allocator, and every process of a whole sweep.

(a) The demo run (`dualobj train model=tiny data.repetitions=4 objective.alpha=0.5 train.tokens=200000
train.threads=1`, end-of-training evaluation included) under glibc's default malloc, the glibc settings
`dualobj` used before (16 GB thresholds: freed memory never went back), glibc as `dualobj` sets it now
when no other allocator is installed (transparent huge pages), mimalloc (the `cmeel-mimalloc` wheel)
and tcmalloc where installed. Variants run round-robin, so a busy spell of a shared machine hits them
alike; peak RSS is the process's own high-water mark (wait4's ru_maxrss, what `/usr/bin/time -v`
reports), tokens/s the training speed from summary.json (median over rounds), and minor page faults
per training token a measure of the allocator's work that no other load on the machine changes.

(b) A whole sweep (`dualobj sweep FILE`), tcmalloc absent (the allocator `dualobj` picks then: mimalloc
if installed, else glibc): the VmHWM of every process of the sweep's process tree, polled, plus the
largest ru_maxrss of any reaped descendant; next to the cells' tokens/s.

    .venv/bin/python bench/memory.py                                  # (a) only, 2 rounds
    .venv/bin/python bench/memory.py --sweep sweeps/mini.yaml         # (a) and (b): the mini grid (27 min here)
    .venv/bin/python bench/memory.py --no-demo --sweep sweeps/smoke.yaml

The tables are printed and written into bench/RESULTS.md, section "Memory": each run replaces only the
tables it made (demo, sweep), so a sweep-only run keeps the demo table and the text around them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, md_table  # noqa: E402
from results import write_section  # noqa: E402

from dualobj.sweep.launch import descendants  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ["model=tiny", "data.repetitions=4", "objective.alpha=0.5", "train.tokens=200000", "train.threads=1"]
TCMALLOC = [p for p in ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                        "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4") if Path(p).exists()]
# DUALOBJ_MALLOC: "off" = no re-exec (glibc defaults); "glibc" = the bounded glibc settings even where
# tcmalloc is installed; any other value marks the allocator as already chosen (the env below is used).
OLD_GLIBC = {"DUALOBJ_MALLOC": "glibc-16g", "MALLOC_MMAP_THRESHOLD_": str(16 << 30),
             "MALLOC_TRIM_THRESHOLD_": str(16 << 30), "MALLOC_TOP_PAD_": str(1 << 30)}


def _has_mimalloc() -> bool:
    try:
        importlib.metadata.distribution("cmeel-mimalloc")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


MIMALLOC = _has_mimalloc()
VARIANTS = {
    "glibc default": {"DUALOBJ_MALLOC": "off"},
    "glibc, 16 GB thresholds (before)": OLD_GLIBC,
    "glibc + huge pages (now, nothing else installed)": {"DUALOBJ_MALLOC": "glibc"},
    **({"mimalloc (now, where installed)": {"DUALOBJ_MALLOC": "mimalloc"}} if MIMALLOC else {}),
    **({"tcmalloc": {"DUALOBJ_MALLOC": "tcmalloc"}} if TCMALLOC else {}),
}
# What `dualobj` picks on a machine without tcmalloc (the sweep's allocator).
NO_TCMALLOC = ("mimalloc", {"DUALOBJ_MALLOC": "mimalloc"}) if MIMALLOC else ("glibc + huge pages",
                                                                              {"DUALOBJ_MALLOC": "glibc"})
SECTION = "## Memory: peak RSS next to tokens/s"
SECTION_KEY, DEMO_KEY, SWEEP_KEY = "bench/memory.py", "bench/memory.py: demo", "bench/memory.py: sweep"
_CLEAN = ("DUALOBJ_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD",
          "GLIBC_TUNABLES")


def _env(variant: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    env.update({k: v for k, v in variant.items() if v})
    return env


def _dualobj(args: list[str], env: dict, log: Path) -> tuple[int, object, float]:
    """Run `dualobj ARGS`; return (exit code, its resource usage (with reaped children), wall seconds)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dualobj.cli", *args], env=env, stdout=f, stderr=f)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage, time.perf_counter() - t0


def demo_runs(rounds: int, extra: list[str], variants: dict) -> tuple[str, dict]:
    """Each variant's demo run, ``rounds`` times round-robin; peak RSS (max) and tokens/s (median)."""
    got = {name: {"rss": [], "tps": [], "wall": [], "faults": []} for name in variants}
    work = Path(tempfile.mkdtemp(prefix="dualobj-bench-mem-"))
    try:
        for r in range(rounds):
            for name, variant in variants.items():
                out = work / f"run{r}-{len(got[name]['rss'])}-{abs(hash(name))}"
                code, usage, wall = _dualobj(["train", *DEMO, *extra, f"out={out}", "train.progress=false"],
                                             _env(variant), work / "log.txt")
                if code:
                    raise SystemExit(f"{name}: dualobj train failed:\n{(work / 'log.txt').read_text()[-2000:]}")
                summary = json.loads((out / "summary.json").read_text())
                rss = usage.ru_maxrss / 1024
                got[name]["rss"].append(rss)
                got[name]["tps"].append(summary["tokens_per_s"])
                got[name]["wall"].append(wall)
                got[name]["faults"].append(usage.ru_minflt / summary["tokens_seen"])
                print(f"  {name}: peak {rss:,.0f} MB, {summary['tokens_per_s']:,.0f} tokens/s", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(got["glibc default"]["tps"]) if "glibc default" in got else None
    rows = []
    for name, g in got.items():
        tps = statistics.median(g["tps"])
        rows.append([name, f"{max(g['rss']):,.0f}", f"{tps:,.0f}", f"{tps / base:.2f}x" if base else "",
                     f"{statistics.median(g['faults']):.1f}", f"{statistics.median(g['wall']):.0f}"])
    table = md_table(["allocator", "peak RSS MB", "training tokens/s", "vs glibc default",
                      "page faults per token (whole run)", "wall s"], rows)
    return table, got


def _tree(root: int) -> list[int]:
    return [root, *descendants(root)]


def _status_kb(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", text, re.M)}


def _label(pid: int) -> str:
    """What a process of the sweep is: the sweep's parent, a joblib worker, one cell's own process, or other."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(c.decode(errors="replace") for c in cmd)
    if "cell_main" in text:
        return "cell process"
    m = re.search(r"--process-name (\S+)", text)
    return m.group(1) if m else ("sweep (parent)" if " sweep " in text else Path(cmd[0].decode()).name)


def peak_table(peaks: dict[int, float], labels: dict[int, str], maxrss: float) -> str:
    """Markdown: one row per process, except the cell processes (one per cell), summarised in one row."""
    cells = sorted(mb for pid, mb in peaks.items() if labels[pid] == "cell process")
    rows = [[f"{labels[pid]} (pid {pid})", "1", f"{mb:,.0f}"]
            for pid, mb in sorted(peaks.items(), key=lambda kv: -kv[1])
            if labels[pid] != "cell process" and mb > 50]
    if cells:
        rows.insert(0, ["cell processes, largest (median, smallest)", str(len(cells)),
                        f"{cells[-1]:,.0f} ({statistics.median(cells):,.0f}, {cells[0]:,.0f})"])
    rows.append(["largest reaped descendant (wait4)", "", f"{maxrss:,.0f}"])
    return md_table(["process", "count", "peak RSS MiB (VmHWM)"], rows)


class TreeWatch:
    """Polls VmHWM of every process under ``root`` until stopped: the per-process peak memory."""

    def __init__(self, root: int, every: float = 0.2):
        self.root, self.every, self.peak, self.label = root, every, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pid in _tree(self.root):
                kb = _status_kb(pid).get("VmHWM")
                if kb:
                    self.peak[pid] = max(self.peak.get(pid, 0), kb)
                    self.label.setdefault(pid, _label(pid))
            self._stop.wait(self.every)

    def stop(self) -> dict[int, float]:
        """Per pid, its peak RSS in MiB (``self.label`` says what each process was)."""
        self._stop.set()
        self._thread.join()
        return {p: kb / 1024 for p, kb in self.peak.items()}


def sweep_run(spec: Path, extra: list[str], variant: dict, keep: Path | None = None) -> tuple[str, dict]:
    """A whole sweep: each process's peak RSS and the cells' training tokens/s. With ``keep``, the sweep's
    run folder is ``keep`` and stays (its cells then serve the report); it must not hold finished cells."""
    out = Path(tempfile.mkdtemp(prefix="dualobj-bench-mem-sweep-"))
    if keep is not None:
        if any(keep.glob("*/summary.json")):
            raise SystemExit(f"{keep} already holds finished cells: the sweep would not train them again")
        keep.mkdir(parents=True, exist_ok=True)
        (out / "runs").symlink_to(keep.resolve(), target_is_directory=True)
    try:
        t0 = time.perf_counter()
        with open(out / "log.txt", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dualobj.cli", "sweep", str(spec), "--out",
                                     str(out / "runs"), *extra], env=_env(variant), stdout=log, stderr=log)
            watch = TreeWatch(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            peaks = watch.stop()
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"dualobj sweep failed:\n{(out / 'log.txt').read_text()[-2000:]}")
        summaries = [json.loads(p.read_text()) for p in (out / "runs").glob("*/summary.json")]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    tps = [s["tokens_per_s"] for s in summaries]
    tokens = sum(s["tokens_seen"] for s in summaries)
    table = peak_table(peaks, watch.label, usage.ru_maxrss / 1024)
    info = {"cells": len(summaries), "wall": wall, "tps_median": statistics.median(tps) if tps else 0,
            "tps_total": tokens / wall, "peaks": peaks, "labels": watch.label, "maxrss": usage.ru_maxrss / 1024}
    name = spec.relative_to(ROOT) if spec.is_relative_to(ROOT) else spec
    head = (f"`dualobj sweep {name}{''.join(' ' + e for e in extra)}`: {len(summaries)} cells in "
            f"{wall / 60:.1f} min; training tokens/s per job (median over cells) {info['tps_median']:,.0f}, "
            f"all cells' tokens over the wall time {info['tps_total']:,.0f}/s (start-up and evaluation included).")
    return f"{head}\n\n{table}", info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="demo runs per allocator, round-robin")
    ap.add_argument("--no-demo", action="store_true", help="skip (a), the demo run per allocator")
    ap.add_argument("--demo-override", action="append", default=[], help="extra override for the demo runs")
    ap.add_argument("--sweep", type=Path, help="(b): a sweep file to run whole, e.g. sweeps/mini.yaml")
    ap.add_argument("--sweep-override", action="append", default=[], help="extra override for the sweep")
    ap.add_argument("--sweep-out", type=Path, help="keep the sweep's runs in this folder (e.g. runs/mini)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    a = ap.parse_args()
    head = (f"{time.strftime('%Y-%m-%d %H:%M')}, {machine()}; tcmalloc {'installed' if TCMALLOC else 'absent'}, "
            f"mimalloc {'installed' if MIMALLOC else 'absent'}.")
    parts = {}
    if not a.no_demo:
        print("demo run per allocator:", flush=True)
        table, _ = demo_runs(a.rounds, a.demo_override, VARIANTS)
        parts[DEMO_KEY] = (f"{head}\n\nThe demo run (`dualobj train {' '.join(DEMO + a.demo_override)}`, "
                           f"end-of-training evaluation included), {a.rounds} round(s) round-robin; "
                           f"peak RSS is the largest:\n\n{table}")
    if a.sweep:
        print(f"whole sweep {a.sweep}:", flush=True)
        text, _ = sweep_run(a.sweep.resolve(), a.sweep_override, NO_TCMALLOC[1], a.sweep_out)
        parts[SWEEP_KEY] = f"{head}\n\nEvery process of a whole sweep, tcmalloc absent ({NO_TCMALLOC[0]}): {text}"
    print("\n\n".join(parts.values()))
    write_parts(a.out, parts)
    print(f"wrote {', '.join(parts)} into {a.out}")


def write_parts(out: Path, parts: dict[str, str]) -> None:
    """Replace the parts run (the demo table, the sweep table) in the memory section, keeping the others and
    any text written around them; the section's skeleton is added first when the file has none."""
    if f"<!-- {SECTION_KEY} -->" not in (out.read_text() if out.is_file() else ""):
        skeleton = "\n\n".join([SECTION, *(f"<!-- {k} -->\n<!-- /{k} -->" for k in (DEMO_KEY, SWEEP_KEY))])
        write_section(out, SECTION_KEY, skeleton)
    for key, body in parts.items():
        write_section(out, key, body)

if __name__ == "__main__":
    main()
