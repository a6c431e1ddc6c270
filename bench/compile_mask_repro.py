"""Self-contained check of torch.compile on CPU building a per-row attention mask inside the graph.

Needs torch only (no dualobj), so it can go with a report upstream:

    python bench/compile_mask_repro.py [--runs 3]

Each case compiles one small function: the mask dualobj trains with (per-row causal or bidirectional rows,
AR and MD sequences sharing a batch) built inside the graph, then scaled_dot_product_attention. Each run is
a fresh process, since a wrong kernel can corrupt the heap and abort. It prints, per case and run, whether
the compiled output matched eager, differed (largest difference), or the process died; and, for the first
run, the loop steps of inductor's mask kernel beside the vector ISA inductor picked. Exits 1 if any run of
any case went wrong.

Seen with torch 2.13.0+cpu on a 2-core AMD EPYC (Zen 4, AVX-512): the in-graph masks' kernel steps through
each 32-wide row 8 at a time but stores 16 floats per step, so it writes past the row and, at the last
row, past its buffer: wrong numbers (up to 1.7) and "malloc(): unaligned tcache chunk detected" aborts in
most runs. The same mask passed in as a graph input is right. dualobj builds its masks outside the
compiled graph on CPU for this reason (dualobj/model.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

B, H, T, D = 4, 2, 32, 16

CHILD = r"""
import json, sys, torch, torch.nn.functional as F
B, H, T, D = SHAPE
case = sys.argv[1]
torch.manual_seed(0)
q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
causal = torch.tensor([True, False] * (B // 2))

def mask(causal):
    pos = torch.arange(T)
    return (pos[None, :] <= pos[:, None])[None] | ~causal[:, None, None]

def additive_in_graph(q, k, v, causal):
    m = mask(causal)
    add = torch.zeros(m.shape, dtype=q.dtype).masked_fill(~m, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=add[:, None])

def bool_in_graph(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask(causal)[:, None])

def mask_as_input(q, k, v, m):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=m)

fn = {"additive mask built in the graph": additive_in_graph, "bool mask built in the graph": bool_in_graph,
      "mask passed in as an input": mask_as_input}[case]
arg = mask(causal)[:, None] if fn is mask_as_input else causal
from torch._inductor.cpu_vec_isa import pick_vec_isa
print("ISA", pick_vec_isa(), file=sys.stderr, flush=True)
compiled = torch.compile(fn)
diffs = [float((compiled(q, k, v, arg) - fn(q, k, v, arg)).abs().max()) for _ in range(4)]
print(json.dumps({"diff": max(diffs), "nan": any(d != d for d in diffs)}))
""".replace("SHAPE", f"{B}, {H}, {T}, {D}")

CASES = ["additive mask built in the graph", "bool mask built in the graph", "mask passed in as an input"]


def run_case(case: str) -> dict:
    """One fresh process; inductor's generated code is logged (TORCH_LOGS) before it runs, so the kernel's
    loop steps are known even when the run aborts."""
    p = subprocess.run([sys.executable, "-c", CHILD, case], capture_output=True, text=True,
                       env={**os.environ, "TORCH_LOGS": "output_code"})
    info = {"steps": sorted({int(s) for s in re.findall(r"x\d\+=static_cast<int64_t>\((\d+)L\)", p.stderr)}),
            "isa": next(iter(re.findall(r"^ISA (.*)$", p.stderr, re.M)), "?")}
    if p.returncode != 0:
        last = ([ln for ln in p.stderr.strip().splitlines() if "output_code" not in ln] or ["(no message)"])[-1]
        return {**info, "died": f"exit {p.returncode}: {last.strip()[:80]}"}
    return {**info, **json.loads(p.stdout.strip().splitlines()[-1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per case")
    a = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"B={B} H={H} T={T} D={D}, {a.runs} runs per case")
    bad = False
    for case in CASES:
        for i in range(a.runs):
            r = run_case(case)
            if "died" in r:
                verdict, bad = f"process died ({r['died']})", True
            elif r["nan"] or r["diff"] > 1e-4:
                verdict, bad = f"WRONG: max |diff| {r['diff']:.3g}", True
            else:
                verdict = f"ok (max |diff| {r['diff']:.2g})"
            extra = f"; inductor ISA {r['isa']}, the kernel's loop steps {r['steps']}" if i == 0 else ""
            print(f"{case:34s} run {i + 1}: {verdict}{extra}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
