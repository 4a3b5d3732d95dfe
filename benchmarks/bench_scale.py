"""Scale: a chain of a million tiny nodes (100k in quick mode), built with the Graph API,
turned into Python source, and run by the Interpreter.

Each library runs in its own subprocess so its peak resident memory is its own. The limits
for fxkit at 1M nodes are a total under 60 s and a peak under 4 GiB; the rows report the
times, and memory rows (peak ``ru_maxrss``; resident growth while building) whose ms columns
hold MiB instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Dict, List

from benchmarks._harness import Row

# Runs in the child: ``LIB`` is "fxkit" or "torch.fx", ``N`` the chain length.
_CHILD = r"""
import gc, json, operator, resource, sys, time
import torch
lib, n = sys.argv[1], int(sys.argv[2])
if lib == "fxkit":
    import fxkit as fx
else:
    import torch.fx as fx
x_val = torch.ones(1)

def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024

base_rss = rss_kib()
t0 = time.perf_counter()
g = fx.Graph()
x = g.placeholder("x")
cur = x
for i in range(n):
    if i % 3 == 0:
        cur = g.call_function(operator.add, (cur, 1))
    elif i % 3 == 1:
        cur = g.call_function(operator.mul, (cur, x))
    else:
        cur = g.call_method("neg", (cur,))
g.output(cur)
t1 = time.perf_counter()
graph_kib = rss_kib() - base_rss
code = g.python_code(root_module="self")
t2 = time.perf_counter()
del code
gc.collect()
gm = fx.GraphModule(torch.nn.Module(), g)
t3 = time.perf_counter()
out = fx.Interpreter(gm).run(x_val)
t4 = time.perf_counter()
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "build": t1 - t0, "codegen": t2 - t1, "interpret": t4 - t3,
    "graph_rss_mib": graph_kib / 2**10, "peak_rss_mib": peak_kib / 2**10,
    "import_rss_mib": base_rss / 2**10,
}))
"""


def _measure(lib: str, n: int, timeout: float) -> Dict[str, float]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, lib, str(n)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return {}  # reported as a missing measurement
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool) -> List[Row]:
    n = 100_000 if quick else 1_000_000
    ours = _measure("fxkit", n, timeout=120 if quick else 300)
    # torch.fx at 1M nodes takes minutes; quick sizes are enough to compare.
    theirs = _measure("torch.fx", n, timeout=120 if quick else 300)
    nan = float("nan")
    label = f"{n // 1000}k" if n < 1_000_000 else "1M"
    rows = [
        Row(
            f"scale {label}-node chain: {step}",
            ours.get(step, nan),
            theirs.get(step, nan),
        )
        for step in ("build", "codegen", "interpret")
    ]
    total = sum(ours.get(s, nan) for s in ("build", "codegen", "interpret"))
    their_total = sum(theirs.get(s, nan) for s in ("build", "codegen", "interpret"))
    rows.append(Row(f"scale {label}-node chain: total (fxkit limit 60 s)", total, their_total))
    rows.append(
        Row(
            f"scale {label}-node chain: peak RSS, MiB in the ms columns (fxkit limit 4096)",
            ours.get("peak_rss_mib", nan) / 1e3,
            theirs.get("peak_rss_mib", nan) / 1e3,
        )
    )
    rows.append(
        Row(
            f"scale {label}-node chain: RSS growth while building, MiB in the ms columns",
            ours.get("graph_rss_mib", nan) / 1e3,
            theirs.get("graph_rss_mib", nan) / 1e3,
        )
    )
    return rows
