"""The data layer at scale: preparation, first batch and batch cost on synthetic corpora of 10M-1B tokens.

For each size a JSONL corpus is generated once (documents of 1 + Geometric(1/16) sentences drawn from the
embedded corpus, about 400 tokens each) under --work, then:

* ``dualobj data prepare`` runs in its own process: wall time, tokens/s, CPU time, peak RSS (the
  kernel's ru_maxrss, as ``/usr/bin/time -v`` reports it). The BPE is trained on a fixed 32 MB sample
  (``data.tokenizer_sample_bytes``), so every size does the same tokenizer work and the numbers show what
  grows with the corpus;
* a fresh process opens the prepared corpus and draws the first training batch (8 windows of 2,048 + 1
  tokens, one rank's share in the paper's grid): seconds from process start, and its peak RSS then;
* the same process draws batches at R=1 and R=64 (microseconds per batch, epoch re-shuffles included).

Then, on a ~100M-token text corpus, preparation with the tokenizer given (so only reading, tokenizing and
writing are timed) against bare ``encode_batch`` on the same documents in the same batches, alternated
twice. Other processes share this machine: the CPU they used during each measurement is reported, and the
CPU-seconds per million tokens next to the wall-clock rates, which a busy machine distorts less.

    .venv/bin/python bench/scale.py                       # 10M and 100M, and the text comparison
    .venv/bin/python bench/scale.py --sizes 10M,100M,1B   # 1B needs about 9 GB of disk under --work
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DUALOBJ = str(Path(PY).parent / "dualobj")
BYTES_PER_TOKEN = 4.2  # of this text at a vocabulary of 8,192
SAMPLE = 32_000_000
SEQ, BATCH, DRAWS = 2048, 8, 200
VOCAB = 8192


# --------------------------------------------------------------------------- corpora


def _sentences() -> list[str]:
    from dualobj.data import read_documents

    out: list[str] = []
    for d in read_documents("wiki", None):
        out += [s for s in re.split(r"(?<=[.!?])\s+", d.replace("\n", " ")) if s]
    return out


def generate(path: Path, tokens: float, fmt: str, seed: int) -> None:
    """About `tokens` tokens of documents made of wiki sentences, as JSONL or blank-line separated text."""
    if path.is_file():
        return
    sent, rng, written = _sentences(), np.random.default_rng(seed), 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        while written < tokens * BYTES_PER_TOKEN:
            counts = rng.geometric(1 / 16, size=4096)
            idx, pos, lines = rng.integers(0, len(sent), int(counts.sum())), 0, []
            for c in counts:
                doc = " ".join(sent[i] for i in idx[pos:pos + c])
                pos += c
                lines.append(json.dumps({"text": doc}) + "\n" if fmt == "jsonl" else doc + "\n\n")
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk.encode())
    tmp.rename(path)


# --------------------------------------------------------------------------- measuring


def _busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (all cores)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    try:
        return int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        return 0.0


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd: wall s, CPU s and peak RSS MiB (wait4's ru_maxrss, what /usr/bin/time -v reports), the RSS
    every second (to see whether it creeps with the corpus), stdout, and the CPU others used meanwhile."""
    busy0, t0 = _busy_seconds(), time.perf_counter()
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # no pipe to fill up
    p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
    trace = []
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        trace.append(round(_rss_mib(p.pid)))
        time.sleep(1.0)
    wall, busy = time.perf_counter() - t0, _busy_seconds() - busy0
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{stderr[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cpu": cpu, "rss_mib": usage.ru_maxrss / 1024, "others": max(0.0, busy - cpu) / wall,
            "stdout": stdout, "rss_trace": trace[::max(1, len(trace) // 40)]}


FIRST_BATCH = r"""
import json, sys, time
import numpy as np
from dualobj.config import DataConfig
from dualobj.data import RepeatedStream, prepare_corpus

args = json.loads(sys.argv[1])
t0 = time.perf_counter()
c = prepare_corpus(DataConfig(**args["data"]), args["vocab"], progress=False)
rs = RepeatedStream(c.train, c.train_starts, len(c.train), args["seq"], seed=0, repetitions=1)
rs.get(np.arange(args["batch"]))
out = {"first_batch_at": time.time(), "data_s": time.perf_counter() - t0,
       "hwm_mib": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
       "docs": len(c.train_starts) + len(c.val_starts) - 2, "tokens": len(c.train) + len(c.val)}
for r in (1, 64):
    rs = RepeatedStream(c.train, c.train_starts, len(c.train) // r, args["seq"], seed=0, repetitions=r)
    rs.get(np.arange(args["batch"]))
    times = []
    for i in range(1, args["draws"] + 1):
        t = time.perf_counter()
        rs.get(np.arange(i * args["batch"], (i + 1) * args["batch"]))
        times.append(time.perf_counter() - t)
    out[f"us_R{r}"] = 1e6 * sum(times) / len(times)
    out[f"us_med_R{r}"] = 1e6 * float(np.median(times))
    out[f"epochs_R{r}"] = (args["draws"] + 1) * args["batch"] / rs.windows_per_epoch
print(json.dumps(out))
"""


def first_batch(data: dict, repeats: int = 3) -> dict:
    """The first-batch process, `repeats` times: medians of its times, the largest peak RSS."""
    args = json.dumps({"data": data, "vocab": VOCAB, "seq": SEQ, "batch": BATCH, "draws": DRAWS})
    runs = []
    for _ in range(repeats):
        started = time.time()
        r = timed([PY, "-c", FIRST_BATCH, args])
        out = json.loads(r["stdout"].strip().splitlines()[-1])
        runs.append({**out, "first_batch_s": out["first_batch_at"] - started, "others": r["others"]})
    med = {k: statistics.median(x[k] for x in runs) for k in runs[0] if isinstance(runs[0][k], float)}
    return {**runs[0], **med, "hwm_mib": max(x["hwm_mib"] for x in runs), "repeats": repeats}


def measure_size(label: str, tokens: float, work: Path, keep: bool, saved: dict) -> dict:
    """One row: preparation (or, with a saved one whose cache is still there, that one) and the first batch."""
    corpus = work / f"corpus_{label}.jsonl"
    cache = work / f"cache_{label}"
    data = {"source": "jsonl", "path": str(corpus), "cache_dir": str(cache), "tokenizer_sample_bytes": SAMPLE}
    if label in saved and corpus.is_file() and list(cache.glob("*/meta.json")):
        prep, corpus_gb = saved[label]["prep"], saved[label]["corpus_gb"]
    else:
        generate(corpus, tokens, "jsonl", seed=len(label))
        shutil.rmtree(cache, ignore_errors=True)
        over = [f"data.{k}={v}" for k, v in data.items()]
        prep = {**timed([DUALOBJ, "data", "prepare", f"model.vocab_size={VOCAB}", *over]), "stdout": ""}
        corpus_gb = corpus.stat().st_size / 1e9
    row = {"size": label, "corpus_gb": corpus_gb, "prep": prep, "batch": first_batch(data),
           "tokenizer": str(next(cache.glob("*/tokenizer.json")))}
    if not keep:
        corpus.unlink()
    print(json.dumps(row), flush=True)
    return row


BARE = r"""
import json, resource, sys, time
from tokenizers import Tokenizer
from dualobj.data.prepare import BATCH_CHARS, BATCH_DOCS
from dualobj.data.sources import batches, stream_documents

path, tok_path, name = sys.argv[1:4]
tok = Tokenizer.from_file(tok_path)
tok.encode_special_tokens = True
docs, _ = stream_documents("text", path)
held = list(batches(docs, BATCH_CHARS, BATCH_DOCS))  # read first: only encoding is timed
encode = getattr(tok, name)
r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
for b in held:
    n += sum(len(e.ids) for e in encode(b, add_special_tokens=False))
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"tokens": n, "wall": time.perf_counter() - t0,
                  "cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime}))
"""


def _bare(text: Path, tok: str, name: str) -> dict:
    busy0 = _busy_seconds()
    res = subprocess.run([PY, "-c", BARE, str(text), tok, name], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {**out, "others": max(0.0, _busy_seconds() - busy0 - out["cpu"]) / out["wall"]}


def throughput(work: Path, tok: str, keep: bool, rounds: int = 2) -> dict:
    """Preparation with a given tokenizer against bare encode_batch on the same ~100M-token text."""
    text = work / "text_100M.txt"
    generate(text, 100e6, "text", seed=7)
    runs: dict[str, list[dict]] = {"prepare": [], "encode_batch": [], "encode_batch_fast": []}
    for _ in range(rounds):  # alternated, so a busy spell of the shared machine hits all of them
        for name in ("encode_batch", "encode_batch_fast"):
            runs[name].append(_bare(text, tok, name))
            print(name, json.dumps(runs[name][-1]), flush=True)
        cache = work / "cache_text"
        shutil.rmtree(cache, ignore_errors=True)
        r = timed([DUALOBJ, "data", "prepare", f"model.vocab_size={VOCAB}", "data=text", f"data.path={text}",
                   f"data.tokenizer={tok}", f"data.cache_dir={cache}"])
        meta = json.loads(next(cache.glob("*/meta.json")).read_text())
        tokens = sum(meta[f"{s}_tokens"] - meta[f"{s}_docs"] for s in ("train", "val"))  # without the <s> it adds
        runs["prepare"].append({**r, "tokens": tokens, "stdout": ""})
        print("prepare", json.dumps(runs["prepare"][-1]), flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    if not keep:
        text.unlink()
    return {"gb": 100e6 * BYTES_PER_TOKEN / 1e9, **runs}


BPE_DEFAULT = r"""
import json, pathlib, sys, tempfile, time
from dualobj.config import DataConfig
from dualobj.data import prepare as P
from dualobj.data.progress import PrepareUI

job = P.Job(DataConfig(source="jsonl", path=sys.argv[1]), 8192, pathlib.Path(tempfile.mkdtemp()), "", {},
            PrepareUI(bar=False, verbose=False))
t0 = time.perf_counter()
sample = P._sample(job)
t1 = time.perf_counter()
P.train_bpe(sample, 8192)
print(json.dumps({"sample_chars": sum(map(len, sample)), "sample_s": t1 - t0, "bpe_s": time.perf_counter() - t1}))
"""


def bpe_default(work: Path) -> dict:
    """The BPE at the default data.tokenizer_sample_bytes (256 MB) on the 100M corpus: time and peak RSS."""
    r = timed([PY, "-c", BPE_DEFAULT, str(work / "corpus_100M.jsonl")])
    return {**json.loads(r["stdout"].strip().splitlines()[-1]), "rss_mib": r["rss_mib"], "cpu": r["cpu"],
            "others": r["others"]}


# --------------------------------------------------------------------------- the table


def _rate(r: dict) -> float:
    return r["tokens"] / r["wall"]


NOTES = """\
Synthetic JSONL corpora (documents of wiki sentences, about 500 tokens each), vocabulary 8,192, the BPE on a
fixed 32 MB sample. *Prepare*: `dualobj data prepare` in its own process (sample pass, BPE, tokenizing,
ordering), wall and CPU seconds, peak RSS as the kernel reports it (ru_maxrss). *First batch*: a fresh
process (imports, torch included) opens the prepared corpus and draws 8 windows of 2,049 tokens at R=1;
seconds from its start, the part spent opening the corpus and building the first epoch, and its VmHWM
(medians of 3 processes; the largest VmHWM). *µs/batch*: the mean (and median) over 200 batches drawn
after it, at R=1 and R=64 (where the epoch re-shuffles several times in between). The CPU other processes
used meanwhile (in cores) is the last column (prepare / first batch): 0 means the machine was otherwise
idle; CPU seconds are less affected by other load than wall-clock seconds."""


def size_table(rows: list[dict]) -> str:
    head = ("| corpus | JSONL GB | tokens | documents | prepare s (CPU s) | prepare tokens/s (per CPU s) "
            "| prepare peak RSS MiB | first batch s (process start) | of it: open + draw s "
            "| peak RSS at first batch MiB | µs/batch R=1 | µs/batch R=64 | others' CPU load (cores) |\n|"
            + "---:|" * 13)
    lines = [head]
    for r in rows:
        b, p = r["batch"], r["prep"]
        tokens = b["tokens"]
        lines.append(f"| {r['size']} | {r['corpus_gb']:.2f} | {tokens:,} | {b['docs']:,} | "
                     f"{p['wall']:.0f} ({p['cpu']:.0f}) | "
                     f"{tokens / p['wall']:,.0f} ({tokens / p['cpu']:,.0f}) | {p['rss_mib']:.0f} | "
                     f"{b['first_batch_s']:.2f} | {b['data_s']:.3f} | "
                     f"{b['hwm_mib']:.0f} | {b['us_R1']:,.0f} (median {b['us_med_R1']:,.0f}) | "
                     f"{b['us_R64']:,.0f} (median {b['us_med_R64']:,.0f}) | {p['others']:.1f} / {b['others']:.1f} |")
    return "\n".join(lines)


def throughput_table(t: dict) -> str:
    lines = ["| run | tokens/s (median of rounds) | CPU s per 1M tokens | others' CPU load (cores) |",
             "|---:|---:|---:|---:|"]
    for name, runs in (("`dualobj data prepare` (given tokenizer)", t["prepare"]),
                       ("bare `encode_batch`", t["encode_batch"]),
                       ("bare `encode_batch_fast`", t["encode_batch_fast"])):
        lines.append(f"| {name} | {statistics.median(map(_rate, runs)):,.0f} | "
                     f"{statistics.median(r['cpu'] / r['tokens'] * 1e6 for r in runs):.2f} | "
                     f"{statistics.median(r['others'] for r in runs):.1f} |")
    return "\n".join(lines)


def targets(rows: list[dict], t: dict | None) -> str:
    out = []
    by = {r["size"]: r for r in rows}
    big = by.get("1B") or rows[-1]
    small = by.get("10M") or rows[0]
    if big is not small:
        rss = big["batch"]["hwm_mib"] / small["batch"]["hwm_mib"]
        prss = big["prep"]["rss_mib"] / small["prep"]["rss_mib"]
        fb = big["batch"]["first_batch_s"] / small["batch"]["first_batch_s"]
        for what, v in (("peak RSS at the first batch", rss), ("peak RSS of preparation", prss),
                        ("time to the first batch", fb)):
            out.append(f"| {what}, {big['size']} vs {small['size']} | {v:.2f}x | "
                       f"{'met' if v <= 1.5 else 'NOT met'} (at most 1.5x) |")
    if t:
        prep = statistics.median(map(_rate, t["prepare"]))
        for name in ("encode_batch", "encode_batch_fast"):
            v = prep / statistics.median(map(_rate, t[name]))
            status = "met" if v >= 0.8 else "NOT met"
            out.append(f"| preparation vs bare `{name}` | {v:.0%} | {status} (at least 80%) |")
    return "| target | measured | status |\n|---:|---:|---:|\n" + "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10M,100M")
    ap.add_argument("--work", default="/tmp/dualobj-scale")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpora")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="take preparations and the text comparison from "
                    "--work/results.json where their files are still there; measure the first batches again")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = work / "results.json"
    saved = json.loads(store.read_text()) if args.reuse and store.is_file() else {}
    sizes = {"10M": 10e6, "100M": 100e6, "1B": 1e9}
    rows = [measure_size(s, sizes[s], work, args.keep, saved.get("sizes", {})) for s in args.sizes.split(",")]
    tok = next((r["tokenizer"] for r in rows if r["size"] == "100M"), rows[-1]["tokenizer"])
    t = None if args.no_throughput else saved.get("throughput") or throughput(work, tok, args.keep)
    has_100m = (work / "corpus_100M.jsonl").is_file()
    b = saved.get("bpe_default") or (bpe_default(work) if has_100m and not args.no_throughput else None)
    store.write_text(json.dumps({"sizes": {r["size"]: r for r in rows}, "throughput": t, "bpe_default": b}))
    stamp = time.strftime("%Y-%m-%d %H:%M")
    section = (f"## Data layer at scale (`bench/scale.py`, {stamp})\n\n{NOTES}\n\n{size_table(rows)}\n\n"
               + (f"Preparation against bare tokenization, ~100M-token text corpus ({t['gb']:.2f} GB):\n\n"
                  f"{throughput_table(t)}\n\n" if t else "")
               + (f"The BPE at the default `data.tokenizer_sample_bytes` (256 MB) on the 100M corpus: the sample "
                  f"pass {b['sample_s']:.0f} s, training {b['bpe_s']:.0f} s ({b['cpu']:.0f} CPU s in all), peak RSS "
                  f"{b['rss_mib']:.0f} MiB, whatever the corpus size (others' CPU load {b['others']:.1f} cores).\n\n"
                  if b else "")
               + f"{targets(rows, t)}\n")
    print(section)
    write_section(Path(args.out), "bench/scale.py", section)
    if not args.keep:
        for r in rows:
            shutil.rmtree(work / f"cache_{r['size']}", ignore_errors=True)


if __name__ == "__main__":
    main()
