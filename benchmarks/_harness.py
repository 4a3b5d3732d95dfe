"""Shared timing helpers: alternate fxkit and torch.fx runs in one process, report medians."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass
class Row:
    """One benchmark row: medians in seconds and the fxkit/torch.fx ratio."""

    name: str
    fxkit_s: float
    torch_fx_s: float
    target: float | None = None
    floor_s: float | None = None

    @property
    def ratio(self) -> float:
        return self.fxkit_s / self.torch_fx_s if self.torch_fx_s else float("inf")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def _time_once(fn: Callable[[], object], setup: Callable[[], object] | None) -> float:
    arg = setup() if setup is not None else None
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn() if setup is None else fn(arg)
        return time.perf_counter() - start
    finally:
        gc.enable()


def compare(
    name: str,
    fxkit_fn: Callable,
    torch_fx_fn: Callable,
    *,
    reps: int = 5,
    setup_fxkit: Callable | None = None,
    setup_torch_fx: Callable | None = None,
    target: float | None = None,
    floor_fn: Callable | None = None,
) -> Row:
    """Time both implementations, alternating which goes first, and return the medians.

    ``setup_*`` (if given) builds the input outside the timed region; the timed function
    then receives it as its only argument.
    """
    ours: list[float] = []
    theirs: list[float] = []
    floor: list[float] = []
    for i in range(reps):
        pair = [(ours, fxkit_fn, setup_fxkit), (theirs, torch_fx_fn, setup_torch_fx)]
        if i % 2:
            pair.reverse()
        for sink, fn, setup in pair:
            sink.append(_time_once(fn, setup))
        if floor_fn is not None:
            floor.append(_time_once(floor_fn, None))
    return Row(
        name,
        statistics.median(ours),
        statistics.median(theirs),
        target,
        statistics.median(floor) if floor else None,
    )


def format_table(rows: list[Row]) -> str:
    """Render rows as a Markdown table."""
    lines = [
        "| row | fxkit (ms) | torch.fx (ms) | ratio | target | floor (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        target = f"<= {r.target:g}" if r.target is not None else "-"
        floor = f"{r.floor_s * 1e3:.2f}" if r.floor_s is not None else "-"
        mark = "" if r.target is None or r.ratio <= r.target else " (short)"
        lines.append(
            f"| {r.name} | {r.fxkit_s * 1e3:.2f} | {r.torch_fx_s * 1e3:.2f} | "
            f"{r.ratio:.3f}{mark} | {target} | {floor} |"
        )
    return "\n".join(lines)
