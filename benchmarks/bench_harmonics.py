"""Spherical harmonics speed: tfn against e3nn and sphericart (optional), CPU.

For each lmax, all degrees ``0..lmax`` of ``--n`` random float32 vectors (normalised, i.e. on the
sphere, in every library), timed

* forward: the harmonics of vectors that do not require grad;
* forward+backward: ``(Y * w).sum().backward()`` for a fixed random ``w``, the gradient flowing
  to the input vectors.

e3nn stops at lmax 11. sphericart orders and normalises components differently
(``SphericalHarmonics`` normalises the input like ``normalize=True``; ``SolidHarmonics`` would
not); the output has the same size, so the work compared is the same. ``tfn`` is the default
path (the C++ kernel on the CPU when it could be built); ``--eager`` adds ``tfn-eager``, the
pure-PyTorch fallback (``TFN_NO_EXTENSIONS=1``).

Each thread count of ``--threads`` is one table (torch's threads, and those of the OpenMP
runtime that sphericart bundles). Candidates run in rounds, each round every candidate once in
an order shuffled from round to round; reported are the medians of the wall time and of the CPU
time of the process (``time.process_time``: with one thread it does not count the time other
processes hold the CPU, so it is the steadier measure on a shared machine), in milliseconds,
and the ratio of the fastest calls (with several threads on a loaded machine the medians
mostly measure how long a parallel region waits for a descheduled thread).

    python benchmarks/bench_harmonics.py [--n 100000] [--threads 2 1] [--repeats 30]
        [--lmax 2 3 4 6 12] [--eager] [--other FILE] [--json PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, format_table, write_json  # noqa: E402

from tfn.so3 import spherical_harmonics  # noqa: E402

Harmonics = Callable[[torch.Tensor], torch.Tensor]


def _without_extensions(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with TFN_NO_EXTENSIONS set (tfn's pure-PyTorch path, forward and backward)."""

    def run() -> object:
        before = os.environ.get("TFN_NO_EXTENSIONS")
        os.environ["TFN_NO_EXTENSIONS"] = "1"
        try:
            return fn()
        finally:
            if before is None:
                del os.environ["TFN_NO_EXTENSIONS"]
            else:
                os.environ["TFN_NO_EXTENSIONS"] = before

    return run


def candidates(lmax: int, other: Path | None, eager: bool) -> dict[str, Harmonics | None]:
    """name -> function of the vectors (None: not available at this lmax)."""
    ls = list(range(lmax + 1))
    found: dict[str, Harmonics | None] = {
        "tfn": lambda x: spherical_harmonics(ls, x, normalize=True, normalization="component")
    }
    if eager:  # the same function; bench() runs it with TFN_NO_EXTENSIONS set
        found["tfn-eager"] = found["tfn"]
    try:
        from e3nn import o3

        found["e3nn"] = (
            (lambda x: o3.spherical_harmonics(ls, x, True, normalization="component"))
            if lmax <= 11
            else None
        )
    except ImportError:
        found["e3nn"] = None
    try:
        import sphericart.torch

        found["sphericart"] = sphericart.torch.SphericalHarmonics(lmax).compute
    except ImportError:
        found["sphericart"] = None
    if other is not None:  # a candidate file defining the same spherical_harmonics
        spec = importlib.util.spec_from_file_location("other_harmonics", other)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found[other.stem] = lambda x: module.spherical_harmonics(ls, x)
    return found


def set_threads(threads: int) -> None:
    """torch's threads and those of sphericart's own OpenMP runtime (which torch's setting does
    not reach: without this it follows OMP_NUM_THREADS, or takes every core)."""
    torch.set_num_threads(threads)
    try:
        import sphericart.torch
    except ImportError:
        return
    libs = Path(sphericart.torch.__file__).resolve().parents[2] / "sphericart_torch.libs"
    for lib in libs.glob("libgomp*.so*"):
        ctypes.CDLL(str(lib)).omp_set_num_threads(threads)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_rounds(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Per callable: median wall and CPU milliseconds and minor page faults per call.

    Rounds of every callable once, in an order shuffled (reproducibly) from round to round: a
    call can slow down the next one (allocator state, caches, another library's OpenMP threads
    still spinning), so no callable should always follow the same.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    order = random.Random(0)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            f0, c0, t0 = _minor_faults(), time.process_time(), time.perf_counter()
            fns[name]()
            t1, c1, f1 = time.perf_counter(), time.process_time(), _minor_faults()
            wall[name].append((t1 - t0) * 1e3)
            cpu[name].append((c1 - c0) * 1e3)
            faults[name].append(f1 - f0)
    return {
        name: {
            "wall_ms": statistics.median(wall[name]),
            "min_ms": min(wall[name]),
            "cpu_ms": statistics.median(cpu[name]),
            "page_faults": statistics.median(faults[name]),
        }
        for name in fns
    }


def bench(
    n: int,
    lmaxs: list[int],
    repeats: int,
    other: Path | None,
    seed: int,
    threads: int,
    eager: bool = False,
) -> list[dict]:
    set_threads(threads)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    results = []
    for lmax in lmaxs:
        found = candidates(lmax, other, eager)
        w = torch.randn(n, (lmax + 1) ** 2, generator=g)
        forward, forward_backward = {}, {}
        for name, fn in found.items():
            if fn is None:
                continue
            forward[name] = lambda fn=fn: fn(x)

            def fb(fn=fn, w=w):
                v = x.detach().requires_grad_(True)
                (fn(v) * w).sum().backward()

            forward_backward[name] = fb
            if name == "tfn-eager":
                forward[name] = _without_extensions(forward[name])
                forward_backward[name] = _without_extensions(fb)
        # Each pass on its own: the candidates of a pass alternate, the passes do not mix.
        for pass_, fns in (("forward", forward), ("forward+backward", forward_backward)):
            times = time_rounds(fns, repeats)
            row: dict = {"threads": threads, "lmax": lmax, "pass": pass_}
            row.update({k: times[k]["wall_ms"] if k in times else None for k in found})
            row["cpu_ms"] = {k: v["cpu_ms"] for k, v in times.items()}
            row["min_ms"] = {k: v["min_ms"] for k, v in times.items()}
            row["page_faults"] = {k: v["page_faults"] for k, v in times.items()}
            results.append(row)
        print(f"{threads} threads, lmax {lmax} done", file=sys.stderr, flush=True)
    return results


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def tables(results: list[dict], n: int, repeats: int) -> str:
    extra = ("threads", "lmax", "pass", "cpu_ms", "min_ms", "page_faults")
    names = [k for k in results[0] if k not in extra]
    out = []
    for threads in dict.fromkeys(r["threads"] for r in results):
        for pass_ in ("forward", "forward+backward"):
            rows = []
            for r in results:
                if r["threads"] != threads or r["pass"] != pass_:
                    continue
                cpu, fastest = r["cpu_ms"], r["min_ms"]
                rows.append(
                    [r["lmax"], *(r[k] for k in names)]
                    + [ratio(r["e3nn"], r["tfn"]), ratio(r["tfn"], r["sphericart"])]
                    + [ratio(cpu.get("tfn"), cpu.get("sphericart"))]
                    + [ratio(fastest.get("tfn"), fastest.get("sphericart"))]
                )
            headers = ["lmax", *(f"{k} ms" for k in names)]
            headers += ["e3nn/tfn", "tfn/sphericart", "cpu", "min"]
            out.append(
                f"\n{pass_}: n={n}, float32, {threads} threads, median of {repeats} wall ms; "
                "ratios of medians of wall and CPU time, and of the fastest calls\n"
                + format_table(headers, rows)
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of vectors")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[2, 1], help="thread counts, one table each"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (median)")
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 3, 4, 6, 12])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eager", action="store_true", help="also time tfn's PyTorch fallback")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--other", type=Path, help="a .py file with another spherical_harmonics to compare"
    )
    args = parser.parse_args()
    results = []
    for threads in args.threads:
        results += bench(
            args.n, args.lmax, args.repeats, args.other, args.seed, threads, args.eager
        )
    print(tables(results, args.n, args.repeats))
    if args.json:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        write_json(args.json, {"config": config, "environment": environment(), "results": results})


if __name__ == "__main__":
    main()
