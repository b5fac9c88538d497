"""Small timing helpers shared by the benchmark scripts.

Timings on a shared machine are noisy, so :func:`time_interleaved` runs the candidates in
rounds (each round times every candidate once, so a burst of load from elsewhere hits all of
them alike) and reports medians.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "cpu_name",
    "environment",
    "format_table",
    "interleaved_medians",
    "time_interleaved",
    "write_json",
]


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int = 30,
    warmup: int = 3,
    page_faults: dict[str, float] | None = None,
) -> dict[str, float]:
    """Median wall time in milliseconds of each zero-argument callable.

    Every callable runs ``warmup`` times first (caches, allocator, lazy initialisation), then
    ``repeats`` rounds each time every callable once, in an order shuffled (reproducibly) from
    round to round: a call can slow down the next one (allocator state, caches, another
    library's OpenMP threads still spinning), so no callable should always follow the same. If
    ``page_faults`` is given, it receives the median number of minor page faults per call
    (Unix only), a frequent hidden cost of large CPU allocations.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    order = random.Random(0)
    samples: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            before = _minor_faults()
            start = time.perf_counter()
            fns[name]()
            samples[name].append((time.perf_counter() - start) * 1e3)
            faults[name].append(_minor_faults() - before)
    if page_faults is not None:
        page_faults.update({name: statistics.median(f) for name, f in faults.items()})
    return {name: statistics.median(times) for name, times in samples.items()}


def _minor_faults() -> int:
    try:
        import resource
    except ImportError:  # not Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats are written with two decimals, ``None`` as ``n/a``."""

    def cell(value: object) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in lines]
    return "\n".join(out)


def environment() -> dict[str, object]:
    """What the numbers depend on: library versions, threads, CPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
    }


def write_json(path: str, data: object) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Every function once per round (order alternating), rounds repeated.

    Returns per function the median, quartiles and minimum of the wall time, and the median
    CPU time of the process (``time.process_time``; with one thread it is robust to other
    processes taking the CPU, with several it also counts threads spinning while they wait).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name in list(fns) if r % 2 == 0 else list(reversed(fns)):
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append((t1 - t0) * 1e3)
            cpu[name].append((c1 - c0) * 1e3)
    out = {}
    for name, values in wall.items():
        q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
        out[name] = {
            "median_ms": statistics.median(values),
            "q1_ms": q[0],
            "q3_ms": q[2],
            "min_ms": min(values),
            "cpu_median_ms": statistics.median(cpu[name]),
        }
    return out
