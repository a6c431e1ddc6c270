"""Downstream accuracy compared item by item.

Two runs scored on the same items (``eval/<task>.items.jsonl``, see ``dualobj.evaluate.evaluator.item_rows``)
give a paired difference: per item d_i = correct_a,i - correct_b,i, the difference in accuracy is mean(d) and
its standard error std(d) / sqrt(n). What the two runs share (which items are hard for both) cancels, so this
standard error is at most about the unpaired one, sqrt(p_a (1 - p_a) / n + p_b (1 - p_b) / n), and often much
smaller. Runs with several seeds are paired seed by seed and their item differences pooled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dualobj.fmt import format_alpha

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class Paired:
    """The difference in accuracy a - b over the items both runs scored."""

    diff: float  # mean over items of correct_a - correct_b (accuracy, 0-1)
    se: float  # its paired standard error, std(d, ddof=1) / sqrt(n)
    unpaired_se: float  # what the two accuracies' binomial errors alone would give
    n: int  # items scored by both (summed over the seeds paired)

    @property
    def resolved(self) -> bool:
        """The difference exceeds its 95% interval's half-width (two-sided, normal)."""
        return self.n > 1 and abs(self.diff) > Z95 * self.se


def item_outcomes(run_dir: str | Path, task: str, mode: str, key: str = "correct") -> dict[int, float] | None:
    """{source index: 1.0 if correct else 0.0} of one task and mode, or None when the run kept no items."""
    path = Path(run_dir) / "eval" / f"{task}.items.jsonl"
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    out = {}
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return None  # a damaged file compares nothing rather than something wrong
        if row.get("mode") == mode and key in row:
            out[int(row["index"])] = float(bool(row[key]))
    return out or None


def paired_difference(pairs: list[tuple[dict[int, float], dict[int, float]]]) -> Paired | None:
    """The paired difference a - b over the items common to each pair (a, b) of outcome maps, pooled."""
    d, a_all, b_all = [], [], []
    for a, b in pairs:
        common = sorted(set(a) & set(b))
        d += [a[i] - b[i] for i in common]
        a_all += [a[i] for i in common]
        b_all += [b[i] for i in common]
    n = len(d)
    if n < 2:
        return None
    mean = sum(d) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n)
    pa, pb = sum(a_all) / n, sum(b_all) / n
    return Paired(mean, se, math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n), n)


def _downstream(metric: str) -> tuple[str, str] | None:
    """(task, mode) of a per-task score eval/<task>/<mode>; None for averages, validation and other metrics."""
    parts = metric.split("/")
    if len(parts) != 3 or parts[0] != "eval" or parts[1] in ("avg", "val"):
        return None
    return parts[1], parts[2]


def best_against_next(runs: pd.DataFrame, metric: str) -> list[dict]:
    """Per R: the α with the highest mean score against the runner-up, compared item by item (runs paired by
    seed). One dict per R where both have per-item scores: R, best and next α, and the ``Paired`` result."""
    tm = _downstream(metric)
    if tm is None or metric not in runs:
        return []
    done = runs[(runs["state"] == "done") & runs[metric].notna()]
    out = []
    for r, sub in done.groupby("repetitions"):
        means = sub.groupby("alpha")[metric].mean().sort_values(ascending=False)
        if len(means) < 2:
            continue
        best, nxt = means.index[0], means.index[1]
        pairs = []
        for _, by_seed in sub.groupby("seed"):
            a, b = by_seed[by_seed["alpha"] == best], by_seed[by_seed["alpha"] == nxt]
            if len(a) and len(b):
                oa, ob = item_outcomes(a["path"].iloc[0], *tm), item_outcomes(b["path"].iloc[0], *tm)
                if oa and ob:
                    pairs.append((oa, ob))
        if (p := paired_difference(pairs)) is not None:
            out.append({"R": r, "best": best, "next": nxt, "paired": p, "seeds": len(pairs)})
    return out


def paired_lines(runs: pd.DataFrame, metric: str) -> list[str]:
    """Markdown: the best α against the runner-up per R, item by item (nothing when no run kept its items)."""
    rows = best_against_next(runs, metric)
    if not rows:
        return []
    out = [f"Item by item (paired: the same items scored by both runs, paired by seed; `eval/<task>.items.jsonl`): "
           f"the best α of each R against the runner-up on {metric}'s accuracy, in points; \"beyond noise\" when "
           f"the difference exceeds 1.96 paired standard errors.", "",
           "| R | best α | next α | Δ acc (points) | paired se | unpaired se | items × seeds | verdict |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in rows:
        p = x["paired"]
        out.append(f"| {x['R']:g} | {format_alpha(x['best'])} | {format_alpha(x['next'])} | {100 * p.diff:+.1f} | "
                   f"{100 * p.se:.1f} | {100 * p.unpaired_se:.1f} | {p.n} ({x['seeds']} seed"
                   f"{'s' * (x['seeds'] != 1)}) | {'beyond noise' if p.resolved else 'within noise'} |")
    return [*out, ""]
