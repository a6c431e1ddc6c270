"""MD-mode accuracy over evaluation seeds: its spread before and after common random numbers (CRN).

    python bench/md_noise.py [--run DIR] [--before REV] [--seeds 5] [--limit 200] [--samples 8] [--no-write]
                             [--save FILE | --load FILE]

A demo-sized run (trained here when DIR has no checkpoint, with the command in TRAIN) is scored on piqa and
probe_mc in MD mode (``mc``, K = --samples) at eval.seed = 0 .. seeds-1, by the code as of --before (the
commit before CRN: each request draws its masks alone) and by this tree (an item's answers share them).
Two measurements per code version:

* ``dualobj eval``: the CLI as a user runs it, ``eval.seed=s``. The seed also picks the items (the seeded
  subsample of eval.limit, and probe_mc's items), so this spread is item sampling and mask noise together;
  CRN can only lower the second.
* items fixed: the items of seed 0, the scorer's seed (the masks) 0 .. seeds-1: the mask noise alone, what
  CRN is for, and what ``acc_mc_se`` estimates. This tree also scores them without groups (each request
  drawing alone), which must give the earlier code's numbers seed for seed, and whose ``acc_mc_se`` is then
  the earlier code's mask noise, estimated from 200 items rather than from the spread of 5 seeds.

Each code version runs in its own process with PYTHONPATH at its tree (``git archive REV dualobj``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, md_table  # noqa: E402
from results import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "RESULTS.md"
BENCH = ROOT.parent / "shared" / "data" / "benchmarks"
TASKS = ("piqa", "probe_mc")
BEFORE = "8ae04a9"  # the last commit before common random numbers
TRAIN = ["model=tiny", "data.repetitions=4", "objective.alpha=0.5", "train.tokens=200000", "eval.limit=40",
         "eval.md_samples=4", "eval.val_windows=32"]
KEYS = ("acc", "acc_norm", "acc_se", "acc_mc_se")


def cli(tree: Path, args: list[str]) -> subprocess.CompletedProcess:
    """``dualobj ARGS`` with the dualobj package of ``tree`` (run from a neutral folder, so cwd shadows nothing)."""
    return checked([sys.executable, "-m", "dualobj.cli", *args], tree)


def checked(argv: list[str], tree: Path) -> subprocess.CompletedProcess:
    """Run ``argv`` with PYTHONPATH at ``tree``; on failure raise with the end of its stderr."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    res = subprocess.run(argv, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def ensure_run(run: Path) -> None:
    """Train the demo run into ``run`` unless it already holds a finished one."""
    if not (run / "summary.json").is_file():
        cli(ROOT, ["train", *TRAIN, f"out={run}"])


def tree_at(rev: str, into: Path) -> Path:
    """The dualobj package and its configuration (conf/) as of git revision ``rev``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "dualobj", "conf"],
                             capture_output=True, check=True).stdout
    tar = into / "dualobj.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into


def private_copy(run: Path, into: Path) -> Path:
    """A copy of the run directory that only this benchmark writes to (``dualobj eval`` writes eval/ and
    summary.json there, and reads its results back from eval/)."""
    dst = into / run.name
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def eval_cli(tree: Path, run: Path, seed: int, a, crn: bool) -> dict[str, dict]:
    """``dualobj eval`` of the tasks in MD mode at eval.seed=seed: per task, its md results. ``crn``: whether
    this code shares an item's masks (checked against the recipe it wrote, so the right code ran)."""
    cli(tree, ["eval", str(run), f"eval.tasks=[{','.join(TASKS)}]", "eval.modes=[md]", f"eval.limit={a.limit}",
               f"eval.md_samples={a.samples}", f"eval.seed={seed}", f"eval.benchmark_dir={a.benchmarks}",
               "--overwrite"])
    out = {t: json.loads((run / "eval" / f"{t}.json").read_text())["results"]["md"] for t in TASKS}
    for t, r in out.items():
        if ("md_masks" in r["recipe"]) != crn or r["recipe"]["seed"] != seed:
            raise RuntimeError(f"eval/{t}.json of {run} was not written by this evaluation: {r['recipe']}")
    return out


def fixed_items(tree: Path, run: Path, a) -> dict[str, list[dict]]:
    """Items of seed 0, masks of seeds 0..seeds-1, scored by ``tree``'s code (this script as a worker)."""
    out = checked([sys.executable, __file__, "--worker", "--run", str(run), "--seeds", str(a.seeds), "--limit",
                   str(a.limit), "--samples", str(a.samples), "--benchmarks", str(a.benchmarks)], tree).stdout
    return json.loads(out.strip().splitlines()[-1])


def worker(a) -> None:
    """Print, as one JSON line, per task the md results over the mask seeds with the items of seed 0, as
    ``Evaluator.run_task`` scores them (an item's requests grouped where the scorer takes groups; then also
    without groups, under "independent")."""
    import inspect

    import dualobj
    from dualobj import config as C
    from dualobj.evaluate.evaluator import Evaluator, load_run_config

    run = Path(a.run)
    cfg = C.apply_overrides(load_run_config(run), [f"eval.limit={a.limit}", f"eval.md_samples={a.samples}",
                                                   "eval.seed=0", f"eval.benchmark_dir={a.benchmarks}"])
    ev = Evaluator(run, cfg.eval, cfg)
    takes_groups = "groups" in inspect.signature(ev.scorer.score).parameters
    out: dict = {"dualobj": str(Path(dualobj.__file__).parent), "groups": takes_groups, "independent": {}}
    for name in TASKS:
        task = ev._task(name)
        items = task.items(a.limit, 0)
        pairs = [(r.context, r.continuation) for it in items for r in it.requests]
        groups = [i for i, it in enumerate(items) for _ in it.requests]
        out[name] = score_seeds(ev, task, items, pairs, a, {"groups": groups} if takes_groups else {})
        if takes_groups:
            out["independent"][name] = score_seeds(ev, task, items, pairs, a, {"groups": None})
    print(json.dumps(out))


def score_seeds(ev, task, items, pairs, a, extra: dict) -> list[dict]:
    """The task's md results for each mask seed 0..seeds-1 (``extra``: the scorer's groups, if any)."""
    results = []
    for seed in range(a.seeds):
        flat = ev.scorer.score(pairs, "md", "mc", a.samples, seed, greedy=False, **extra)
        per_item, k = [], 0
        for it in items:
            per_item.append(flat[k:k + len(it.requests)])
            k += len(it.requests)
        results.append(task.score(items, per_item))
    return results


def spread(results: list[dict], key: str) -> tuple[float, float] | None:
    """Mean and sample SD over seeds of ``key``; None when the code did not report it."""
    vals = [r[key] for r in results if key in r]
    return (statistics.mean(vals), statistics.stdev(vals)) if len(vals) == len(results) > 1 else None


def fmt(res: list[dict], key: str, which: int) -> str:
    """The mean (which=0) or the SD (which=1) over seeds of ``key``, or "-" when not reported."""
    s = spread(res, key)
    return f"{s[which]:.4f}" if s else "-"


def spread_table(got: dict) -> str:
    """Per task and measurement: the SD over seeds of acc and acc_norm, before and after."""
    rows = []
    for task in TASKS:
        for how in ("dualobj eval", "items fixed"):
            b, n = got["before"][how][task], got["after"][how][task]
            rows.append([task, how, n[0]["n"], f"{fmt(b, 'acc', 0)} / {fmt(n, 'acc', 0)}", fmt(b, "acc", 1),
                         fmt(n, "acc", 1), fmt(b, "acc_norm", 1), fmt(n, "acc_norm", 1)])
    return md_table(["task", "seeds vary", "items", "mean acc before / after", "SD acc before", "SD acc after",
                     "SD acc_norm before", "SD acc_norm after"], rows)


def same_numbers(a: list[dict], b: list[dict]) -> bool:
    """Whether two lists of results agree in acc and acc_norm, seed for seed."""
    return all(x[k] == y[k] for x, y in zip(a, b, strict=True) for k in ("acc", "acc_norm"))


def estimate_table(got: dict) -> str:
    """Per task, items fixed: acc_mc_se with independent masks (= the earlier code) and shared ones."""
    rows = []
    for task in TASKS:
        ind, crn = got["after"]["independent"][task], got["after"]["items fixed"][task]
        old = got["before"]["items fixed"][task]
        rows.append([task, "yes" if same_numbers(ind, old) else "NO", fmt(ind, "acc_mc_se", 0),
                     fmt(crn, "acc_mc_se", 0), fmt(ind, "acc_norm_mc_se", 0), fmt(crn, "acc_norm_mc_se", 0),
                     fmt(crn, "acc_se", 0)])
    return md_table(["task", "no groups = before, seed for seed", "acc_mc_se independent", "acc_mc_se shared",
                     "acc_norm_mc_se independent", "acc_norm_mc_se shared", "acc_se"], rows)


def report(got: dict, a, wall_s: float) -> str:
    head = (f"{time.strftime('%Y-%m-%d')}, {machine()}; {wall_s:.0f} s in all\n\n"
            "## MD-mode accuracy over evaluation seeds, before and after common random numbers\n\n"
            f"Run: `dualobj train {' '.join(TRAIN)} out={a.run}`; scored in MD mode (`mc`, K = {a.samples}) on "
            f"{', '.join(TASKS)}, eval.limit={a.limit}, {a.seeds} seeds (0..{a.seeds - 1}). Before: the code at "
            f"{a.before} (each request draws its masks alone); after: this tree (an item's answers share their "
            "mask draws). `dualobj eval`: `dualobj eval RUN 'eval.tasks=[piqa,probe_mc]' 'eval.modes=[md]' "
            f"eval.limit={a.limit} eval.md_samples={a.samples} eval.seed=S`; the seed also picks the items, so "
            "its SD is item sampling and mask noise together. Items fixed: the items of seed 0, the masks of "
            f"seeds 0..{a.seeds - 1} (`Scorer.score(..., seed=S)` as `Evaluator.run_task` calls it): the mask "
            "noise alone, which `acc_mc_se` estimates. SDs are sample SDs over the seeds (with 5 seeds an SD "
            "is itself uncertain by about ±35%). `python bench/md_noise.py` reproduces this section.")
    second = ("The same items (seed 0) scored by this tree with each request drawing its masks alone (no groups) "
              f"and with an item's requests sharing them, `acc_mc_se` averaged over the {a.seeds} mask seeds: the "
              f"predicted SD over seeds with the items fixed, from the per-item flip probabilities of {a.limit} "
              f"items (steadier than an SD of {a.seeds} seeds). The first column checks that scoring without "
              "groups gives the earlier code's accuracies exactly, seed for seed.")
    return f"{head}\n\n{spread_table(got)}\n\n{second}\n\n{estimate_table(got)}\n\n{reading(got)}"


def reading(got: dict) -> str:
    """What the tables say, from their numbers: how much sharing lowered the mask noise, task by task."""
    parts, ratios = [], []
    for task in TASKS:
        ind = spread(got["after"]["independent"][task], "acc_mc_se")
        crn = spread(got["after"]["items fixed"][task], "acc_mc_se")
        if ind and crn:
            parts.append(f"{task} {crn[0] / ind[0]:.2f}x ({ind[0]:.4f} -> {crn[0]:.4f})")
            ratios.append(spread(got["after"]["items fixed"][task], "acc_se")[0] / crn[0])
    return ("Reading: sharing an item's masks scales the predicted mask SD of `acc` (items fixed) by "
            + "; ".join(parts) + ". It can only remove the noise the choices of an item have in common: the "
            "more alike their texts (PIQA's two solutions often differ in a few words), the more; probe_mc's "
            "distractors come from other documents, so their estimates hardly co-vary. What remains is each "
            "choice's own noise, which only more draws (`eval.md_samples`) lower. The `dualobj eval` rows move "
            f"mostly with the items each seed picks (`acc_se` is {span(ratios)} times `acc_mc_se` here), so their "
            "before/after difference says little about the masks.")


def span(values: list[float]) -> str:
    """"1.4-2.2", or "about 2.1" when the values agree to one decimal."""
    lo, hi = f"{min(values):.1f}", f"{max(values):.1f}"
    return f"about {lo}" if lo == hi else f"{lo}-{hi}"


def main(argv=None) -> str | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="/tmp/s7/demo", help="the demo run (trained there when missing)")
    ap.add_argument("--before", default=BEFORE, help="git revision of the code before CRN")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--samples", type=int, default=8, help="K, eval.md_samples")
    ap.add_argument("--benchmarks", default=str(BENCH), help="the benchmark folder (read, never copied)")
    ap.add_argument("--no-write", action="store_true", help="print, do not write bench/RESULTS.md")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--save", help="also write the raw results here (JSON)")
    ap.add_argument("--load", help="render the section from raw results saved by --save (scores nothing)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.load:
        saved = json.loads(Path(a.load).read_text())
        got, wall_s = saved["results"], saved["wall_s"]
    else:
        t0 = time.perf_counter()
        got = measure(a)
        wall_s = time.perf_counter() - t0
    if a.save:
        Path(a.save).write_text(json.dumps({"results": got, "wall_s": wall_s}))
    body = report(got, a, wall_s)
    print(body)
    if not a.no_write:
        write_section(Path(a.results), "bench/md_noise.py", body)
    return body


def measure(a) -> dict:
    """Per code version (before, after): the results of the `dualobj eval` seeds and of the fixed items."""
    run = Path(a.run).resolve()
    ensure_run(run)
    got: dict = {}
    with tempfile.TemporaryDirectory(prefix="md-noise-before-") as tmp:
        for label, tree in (("before", tree_at(a.before, Path(tmp))), ("after", ROOT)):
            crn = label == "after"
            mine = private_copy(run, Path(tempfile.mkdtemp(prefix=f"md-noise-{label}-run-", dir=tmp)))
            evals = [eval_cli(tree, mine, s, a, crn) for s in range(a.seeds)]
            fixed = fixed_items(tree, mine, a)
            print(f"{label}: dualobj from {fixed['dualobj']}, groups: {fixed['groups']}", flush=True)
            if fixed["groups"] != crn:
                raise RuntimeError(f"{label}: the scorer of {fixed['dualobj']} is not the code expected")
            got[label] = {"dualobj eval": {t: [e[t] for e in evals] for t in TASKS},
                          "items fixed": {t: fixed[t] for t in TASKS}, "independent": fixed["independent"]}
    return got

if __name__ == "__main__":
    main()
