"""Run every ``benchmarks/bench_*.py`` module and print one table of fxkit/torch.fx ratios.

Each module exposes ``run(quick: bool) -> list[Row]``. Results also go to
``benchmarks/results/latest.json`` so runs can be compared.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import platform
import sys
import time

import torch

from benchmarks._harness import format_table

HERE = pathlib.Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    parser.add_argument("only", nargs="*", help="run only these modules (e.g. bench_graph)")
    args = parser.parse_args(argv)
    names = args.only or sorted(p.stem for p in HERE.glob("bench_*.py"))
    rows = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        module_rows = module.run(args.quick)
        print(
            f"# {name}: {len(module_rows)} rows in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
        rows.extend(module_rows)
    header = (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {platform.processor() or ''}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
        f"{' (quick)' if args.quick else ''}"
    )
    print(header)
    print(format_table(rows))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(
        json.dumps({"header": header, "rows": [r.as_dict() for r in rows]}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
