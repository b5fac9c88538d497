"""Neighbour lists: the torch cell list against vesin, on the jobs tfn has (CPU).

Cases (cutoff 5, points at liquid density 0.1 per cubic unit unless said otherwise):

* batches of molecules of 20 atoms (each a random cube of side 6, i.e. most pairs within the
  cutoff), 32 and 512 molecules: the usual training batch;
* one open cloud of 20,000 points, and the same with one point moved 1e4 away (an outlier);
* a periodic cubic box of 1,000 and of 10,000 atoms.

Candidates, each producing tfn's output (``edge_index [2, E]`` sorted by ``(dst, src)``, and
integer shifts for periodic boxes, as torch tensors):

* ``torch``: open clouds: :func:`tfn.data.radius_graph` (the torch cell list, batched by the
  ``batch`` vector); periodic boxes: the same cell list run on the box plus the periodic images
  within a cutoff of it (wrapped positions), keeping the pairs whose destination is an
  original point;
* ``vesin``: open clouds: one ``vesin.NeighborList.compute`` per cloud in a Python loop,
  including the torch -> numpy -> torch conversions, the index offsets and the final sort;
  periodic boxes: :func:`tfn.data.neighbor_list` (which calls vesin).

Both give the same pairs (checked on every case before timing). Candidates run interleaved
(``_common.interleaved_medians``); medians of wall and CPU time in milliseconds.

    python benchmarks/bench_neighbors.py [--threads 1] [--repeats 10] [--json PATH]
        [--molecules 32 512] [--atoms 20] [--liquid 20000] [--boxes 1000 10000]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, format_table, interleaved_medians, write_json  # noqa: E402

from tfn.data import neighbor_list, radius_graph  # noqa: E402

Result = tuple[torch.Tensor, torch.Tensor]  # (edge_index, shift)


def molecules(count: int, atoms: int, side: float, rng: np.random.Generator):
    pos = rng.random((count * atoms, 3)) * side
    batch = np.repeat(np.arange(count), atoms)
    return torch.tensor(pos), torch.tensor(batch)


def liquid(n: int, density: float, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    side = (n / density) ** (1.0 / 3.0)
    return torch.tensor(rng.random((n, 3)) * side), side


def sort_edges(src: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    key = torch.from_numpy(np.sort((dst * n + src).numpy()))
    return torch.stack([key % n, key // n])


def vesin_open(pos: torch.Tensor, batch: torch.Tensor, cutoff: float, threads: int) -> Result:
    """One vesin call per cloud (points of a cloud contiguous here), as tfn would have to."""
    import vesin

    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True, n_threads=threads)
    counts = torch.bincount(batch).tolist()
    points = pos.detach().cpu().double().numpy()
    box = np.zeros((3, 3))
    srcs, dsts = [], []
    start = 0
    for count in counts:
        i, j = calculator.compute(points[start : start + count], box, False, "ij")
        srcs.append(i.astype(np.int64) + start)
        dsts.append(j.astype(np.int64) + start)
        start += count
    src = torch.from_numpy(np.concatenate(srcs))
    dst = torch.from_numpy(np.concatenate(dsts))
    edges = sort_edges(src, dst, pos.shape[0])
    return edges, torch.zeros(edges.shape[1], 3, dtype=torch.long)


def torch_periodic(pos: torch.Tensor, cell: torch.Tensor, cutoff: float) -> Result:
    """The torch cell list on a fully periodic box plus its images within one cutoff."""
    n = pos.shape[0]
    inverse = torch.linalg.inv(cell)
    frac = pos @ inverse
    whole = torch.floor(frac)
    frac = frac - whole
    # images whose fractional coordinates lie within `skin` of the unit cell
    volume = torch.linalg.det(cell).abs()
    faces = torch.stack(
        [volume / torch.linalg.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]).norm() for k in range(3)]
    )
    skin = cutoff / faces
    layers = [range(-int(math.ceil(s)), int(math.ceil(s)) + 1) for s in skin.tolist()]
    shifts = torch.tensor([(a, b, c) for a in layers[0] for b in layers[1] for c in layers[2]])
    shifts = shifts[(shifts != 0).any(1)]
    image = frac[None] + shifts[:, None].double()  # [S, N, 3]
    inside = ((image > -skin) & (image < 1 + skin)).all(-1)
    which, index = torch.nonzero(inside, as_tuple=True)
    points = torch.cat([frac, image[which, index]]) @ cell
    origin = torch.cat([torch.arange(n), index])
    image_shift = torch.cat([torch.zeros(n, 3, dtype=torch.long), shifts[which]])
    edges = radius_graph(points, cutoff)
    keep = edges[1] < n
    src, dst = edges[0][keep], edges[1][keep]
    # vec = q_dst - (q_src + s cell) with q = pos - w cell: S = w_src - w_dst - s
    w = whole.long()
    shift = w[origin[src]] - w[dst] - image_shift[src]
    src = origin[src]
    order = np.lexsort((*(shift[:, k].numpy() for k in (2, 1, 0)), src.numpy(), dst.numpy()))
    order = torch.from_numpy(order)
    return torch.stack([src[order], dst[order]]), shift[order]


def same(a: Result, b: Result) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def cases(args, rng: np.random.Generator) -> list[dict]:
    out = []
    side = args.molecule_side
    for count in args.molecules:
        pos, batch = molecules(count, args.atoms, side, rng)
        out.append(
            {
                "case": f"{count} molecules x {args.atoms} atoms",
                "points": pos.shape[0],
                "torch": lambda pos=pos, batch=batch: (radius_graph(pos, args.cutoff, batch), None),
                "vesin": lambda pos=pos, batch=batch: vesin_open(
                    pos, batch, args.cutoff, args.threads
                ),
                "shipped": "torch",
            }
        )
    for n in args.liquid:
        pos, _ = liquid(n, args.density, rng)
        zeros = torch.zeros(n, dtype=torch.long)
        for name, points in [
            (f"open cloud of {n}", pos),
            (f"open cloud of {n} + 1 far point", None),
        ]:
            if points is None:
                if not args.outlier:
                    continue
                points = pos.clone()
                points[0] = 1e4
            out.append(
                {
                    "case": name,
                    "points": n,
                    "torch": lambda p=points: (radius_graph(p, args.cutoff), None),
                    "vesin": lambda p=points, z=zeros: vesin_open(p, z, args.cutoff, args.threads),
                    "shipped": "torch",
                }
            )
    for n in args.boxes:
        pos, box = liquid(n, args.density, rng)
        cell = torch.eye(3, dtype=torch.float64) * box
        out.append(
            {
                "case": f"periodic box of {n}",
                "points": n,
                "torch": lambda pos=pos, cell=cell: torch_periodic(pos, cell, args.cutoff),
                "vesin": lambda pos=pos, cell=cell: neighbor_list(
                    pos, args.cutoff, cell=cell, pbc=True
                ),
                "shipped": "vesin",
            }
        )
    return out


def run(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    rows = []
    for case in cases(args, rng):
        fns: dict[str, Callable[[], object]] = {"torch": case["torch"], "vesin": case["vesin"]}
        results = {name: fn() for name, fn in fns.items()}
        ref = results["torch"]
        num_edges = ref[0].shape[1]
        if ref[1] is None:
            results["torch"] = (ref[0], torch.zeros(num_edges, 3, dtype=torch.long))
        if not same(results["torch"], results["vesin"]):
            raise AssertionError(f"{case['case']}: torch and vesin disagree")
        times = interleaved_medians(fns, repeats=args.repeats, warmup=1)
        rows.append(
            {
                "case": case["case"],
                "points": case["points"],
                "edges": num_edges,
                "threads": args.threads,
                "torch_ms": times["torch"]["median_ms"],
                "vesin_ms": times["vesin"]["median_ms"],
                "torch_cpu_ms": times["torch"]["cpu_median_ms"],
                "vesin_cpu_ms": times["vesin"]["cpu_median_ms"],
                "shipped": case["shipped"],
            }
        )
        print(f"{case['case']} done", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    headers = [
        "case",
        "points",
        "edges",
        "torch ms",
        "vesin ms",
        "torch / vesin",
        "torch CPU ms",
        "vesin CPU ms",
        "tfn uses",
    ]
    body = [
        [
            r["case"],
            r["points"],
            r["edges"],
            r["torch_ms"],
            r["vesin_ms"],
            r["torch_ms"] / r["vesin_ms"],
            r["torch_cpu_ms"],
            r["vesin_cpu_ms"],
            r["shipped"],
        ]
        for r in rows
    ]
    return format_table(headers, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=str, default=None)
    parser.add_argument("--molecules", type=int, nargs="*", default=[32, 512])
    parser.add_argument("--atoms", type=int, default=20)
    parser.add_argument("--molecule-side", type=float, default=6.0)
    parser.add_argument("--liquid", type=int, nargs="*", default=[20_000])
    parser.add_argument("--no-outlier", dest="outlier", action="store_false")
    parser.add_argument("--boxes", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = run(args)
    print(f"threads: {args.threads}, repeats: {args.repeats}, cutoff: {args.cutoff}")
    print(table(rows))
    if args.json:
        write_json(args.json, {"environment": environment(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
