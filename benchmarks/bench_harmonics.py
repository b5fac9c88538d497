"""Spherical harmonics speed: tfn against e3nn and sphericart (optional), CPU.

For each lmax, all degrees ``0..lmax`` of ``--n`` random float32 vectors (normalised, i.e. on the
sphere, in every library), timed

* forward: the harmonics of vectors that do not require grad;
* forward+backward: ``(Y * w).sum().backward()`` for a fixed random ``w``, the gradient flowing
  to the input vectors.

e3nn stops at lmax 11. sphericart orders and normalises components differently
(``SphericalHarmonics`` normalises the input like ``normalize=True``; ``SolidHarmonics`` would
not); the output has the same size, so the work compared is the same. Candidates run
interleaved (see ``_common.time_interleaved``); times are medians in milliseconds.

    python benchmarks/bench_harmonics.py [--n 100000] [--threads 2] [--repeats 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, format_table, time_interleaved, write_json  # noqa: E402

from tfn.so3 import spherical_harmonics  # noqa: E402

Harmonics = Callable[[torch.Tensor], torch.Tensor]


def candidates(lmax: int, other: Path | None) -> dict[str, Harmonics | None]:
    """name -> function of the vectors (None: not available at this lmax)."""
    ls = list(range(lmax + 1))
    found: dict[str, Harmonics | None] = {
        "tfn": lambda x: spherical_harmonics(ls, x, normalize=True, normalization="component")
    }
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


def bench(n: int, lmaxs: list[int], repeats: int, other: Path | None, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    results = []
    for lmax in lmaxs:
        found = candidates(lmax, other)
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
        # Each pass on its own: the candidates of a pass alternate, the passes do not mix.
        for pass_, fns in (("forward", forward), ("forward+backward", forward_backward)):
            faults: dict[str, float] = {}
            times = time_interleaved(fns, repeats=repeats, page_faults=faults)
            results.append({"lmax": lmax, "pass": pass_, **{k: times.get(k) for k in found}})
            results[-1]["page_faults"] = faults
        print(f"lmax {lmax} done", file=sys.stderr, flush=True)
    return results


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of vectors")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (median)")
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 3, 6, 12])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--other", type=Path, help="a .py file with another spherical_harmonics to compare"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = bench(args.n, args.lmax, args.repeats, args.other, args.seed)
    names = [k for k in results[0] if k not in ("lmax", "pass", "page_faults")]
    for pass_ in ("forward", "forward+backward"):
        rows = [
            [r["lmax"], *(r[k] for k in names), ratio(r["e3nn"], r["tfn"])]
            + [ratio(r["tfn"], r["sphericart"])]
            for r in results
            if r["pass"] == pass_
        ]
        headers = ["lmax", *(f"{k} ms" for k in names), "e3nn/tfn", "tfn/sphericart"]
        print(f"\n{pass_}: n={args.n}, float32, {args.threads} threads, median of {args.repeats}")
        print(format_table(headers, rows))
    if args.json:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        write_json(args.json, {"config": config, "environment": environment(), "results": results})


if __name__ == "__main__":
    main()
