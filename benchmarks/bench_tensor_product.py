"""Benchmark the convolution's tensor product: tfn's kernels against e3nn 0.6.0.

**W2** is one TFN convolution step without the radial network: features
``16x0e + 16x1o + 16x2e`` on 1,000 points, gathered by a random ``src``, coupled per edge with
filters ``0e + 1o + 2e`` and per-edge weights into ``16x0e + 16x1o + 16x2e``, summed onto the
1,000 points by a random ``dst``. Two path sets, identical in both libraries (asserted):
channel-wise (``"uvu"``) and fully connected (``"uvw"``). Candidates:

* ``tfn``: ``TensorProduct.convolve`` with the fused C++ executor (one pass: gather, product,
  sum onto the destinations; the ``EdgePlan`` is built once per graph, outside the timing, as
  a network builds it once for all its convolutions; its cost is reported apart);
* ``tfn-eager``: the same call with ``executor="eager"`` (PyTorch operations);
* ``e3nn``: ``x[src]``, e3nn's tensor product, ``index_add`` onto ``dst``.

"fwd+bwd" is the backward of ``(out * r).sum()`` with respect to the features, the filters and
the weights; "double" (``--double``) adds a second order as training on forces needs: the first
gradients with ``create_graph=True``, then the backward of the sum of their squares. Candidates run interleaved in rounds (the order alternating), medians reported,
wall time and process CPU time (with one thread the CPU time does not count other processes
holding the CPU: the steadier measure on a shared machine).

Before timing, float64 checks: tfn (fused) equals tfn (eager) to 1e-12, and equals e3nn once
each path's weights carry the ratio of path factors (+-1; tfn's Clebsch-Gordan tensor is
``s * sqrt(2 l3 + 1) * wigner_3j`` and both normalise paths by ``1 / sqrt(fan_in)``).

Each pass is also set against two machine limits measured in the same run: the memory floor
(the bytes the fused kernel must move at least, over the measured copy bandwidth) and the
compute roof (the multiply-adds it performs, over MKL's float32 matrix-multiply rate).

``--scaling`` instead times the fused kernel (and e3nn where it fits in memory) while the edges
(10^3 to 10^6), the degree lmax (1 to 4) and the channels (8 to 128) grow, and ``--plot``
draws those curves.

Usage::

    python benchmarks/bench_tensor_product.py [--edges 20000] [--repeats 15] [--threads 2 [1]]
        [--modes channelwise,fully_connected] [--double] [--json results.json]
    python benchmarks/bench_tensor_product.py --scaling [--threads 1 2] [--repeats 5]
        [--json scaling.json] [--plot docs/images/kernel_scaling.png]
    python benchmarks/bench_tensor_product.py --plot-from scaling_t1.json scaling_t2.json
        --plot docs/images/kernel_scaling.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, interleaved_medians, write_json  # noqa: E402

from tfn.ops import (  # noqa: E402
    EdgePlan,
    TensorProduct,
    channelwise_paths,
    fully_connected_paths,
    fused,
)
from tfn.ops.paths import TensorProductDescription  # noqa: E402
from tfn.so3 import Irreps, random_rotation, spherical_harmonics  # noqa: E402
from tfn.so3.clebsch_gordan import clebsch_gordan  # noqa: E402

IRREPS_IN = "16x0e + 16x1o + 16x2e"
IRREPS_SH = "0e + 1o + 2e"
IRREPS_OUT = "16x0e + 16x1o + 16x2e"
NUM_POINTS = 1000
MODES = ("channelwise", "fully_connected")


# --------------------------------------------------------------------------- the kernels


def tfn_description(
    mode: str, irreps_in=IRREPS_IN, irreps_sh=IRREPS_SH, irreps_out=IRREPS_OUT
) -> TensorProductDescription:
    if mode == "channelwise":
        return channelwise_paths(irreps_in, irreps_sh, irreps_out)
    return fully_connected_paths(irreps_in, irreps_sh, irreps_out)


def e3nn_tensor_product(description: TensorProductDescription, mode: str):
    """The e3nn twin of a tfn description: same irreps, same paths in the same order."""
    from e3nn import o3

    d = description
    irreps = [str(i) for i in (d.irreps_in1, d.irreps_in2, d.irreps_out)]
    if mode == "channelwise":
        instructions = [(p.i_in1, p.i_in2, p.i_out, "uvu", True) for p in d.paths]
        return o3.TensorProduct(*irreps, instructions, shared_weights=False, internal_weights=False)
    return o3.FullyConnectedTensorProduct(*irreps, shared_weights=False, internal_weights=False)


def check_same_paths(description: TensorProductDescription, e3nn_tp) -> None:
    """Same number of paths, same triples in the same order, same weight layout."""
    ours = [(p.i_in1, p.i_in2, p.i_out, p.connection, p.weight_shape) for p in description.paths]
    theirs = [
        (i.i_in1, i.i_in2, i.i_out, i.connection_mode, tuple(i.path_shape))
        for i in e3nn_tp.instructions
    ]
    assert ours == theirs, f"path sets differ:\n{ours}\n{theirs}"
    assert description.weight_numel == e3nn_tp.weight_numel


def path_factors(description: TensorProductDescription, e3nn_tp) -> torch.Tensor:
    """Per weight entry: (tfn path coefficient x tfn CG) / (e3nn path weight x e3nn wigner_3j),
    expected to be +-1 (the same ``1/sqrt(fan_in)`` normalisation in both libraries)."""
    from e3nn import o3

    scale = torch.empty(description.weight_numel, dtype=torch.float64)
    for path, ins in zip(description.paths, e3nn_tp.instructions):
        l1, l2, l3 = (ir.l for ir in description.path_irreps(path))
        ours = clebsch_gordan(l1, l2, l3).to(torch.float64) * path.coefficient
        theirs = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * ins.path_weight
        ratio = (ours * theirs).sum() / (theirs * theirs).sum()
        assert torch.allclose(ours, ratio * theirs, atol=1e-10), (l1, l2, l3)
        assert abs(abs(float(ratio)) - 1.0) < 1e-9, (l1, l2, l3, float(ratio))
        scale[path.weight_slice] = ratio
    return scale


def make_inputs(d: TensorProductDescription, edges: int, points: int, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(points, d.irreps_in1.dim, generator=g, dtype=dtype)
    vec = torch.randn(edges, 3, generator=g, dtype=dtype)
    sh = spherical_harmonics(d.irreps_in2, vec, normalize=True)
    weight = torch.randn(edges, d.weight_numel, generator=g, dtype=dtype)
    src = torch.randint(0, points, (edges,), generator=g)
    dst = torch.randint(0, points, (edges,), generator=g)
    return x, sh, weight, src, dst


def e3nn_convolve(tp, x, sh, weight, src, dst, points: int) -> torch.Tensor:
    """Gather from ``src``, e3nn's tensor product, sum onto ``dst``."""
    messages = tp(x[src], sh, weight)
    return messages.new_zeros(points, messages.shape[-1]).index_add(0, dst, messages)


def _in_dtype(dtype: torch.dtype, factory: Callable):
    # Both libraries store their coupling coefficients in the default dtype at construction.
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return factory()
    finally:
        torch.set_default_dtype(default)


# --------------------------------------------------------------------------- checks


def verify(mode: str, edges: int = 500) -> dict:
    """float64: fused == eager (1e-12); tfn == e3nn after the sign fix; tfn equivariant."""
    d = tfn_description(mode)
    fast = _in_dtype(torch.float64, lambda: TensorProduct(d, executor="fused"))
    eager = _in_dtype(torch.float64, lambda: TensorProduct(d, executor="eager"))
    e3nn64 = _in_dtype(torch.float64, lambda: e3nn_tensor_product(d, mode))
    check_same_paths(d, e3nn64)
    x, sh, weight, src, dst = make_inputs(d, edges, NUM_POINTS, torch.float64, seed=1)
    plan = EdgePlan.build(src, dst, NUM_POINTS)
    ours = fast.convolve(x, sh, weight, plan)
    fused_vs_eager = float(
        (ours - eager.convolve(x, sh, weight, plan)).abs().max() / ours.abs().max()
    )
    assert fused_vs_eager < 1e-12, f"{mode}: fused and eager differ ({fused_vs_eager:.2e})"
    scale = path_factors(d, e3nn64)
    theirs = e3nn_convolve(e3nn64, x, sh, weight * scale, src, dst, NUM_POINTS)
    err = float((ours - theirs).abs().max() / theirs.abs().max())
    assert err < 1e-12, f"{mode}: tfn and e3nn differ (relative {err:.2e})"
    R = random_rotation(1, torch.Generator().manual_seed(2), dtype=torch.float64)[0]
    D_in, D_sh, D_out = (
        Irreps(i).D_from_matrix(R) for i in (d.irreps_in1, d.irreps_in2, d.irreps_out)
    )
    rotated = fast.convolve(x @ D_in.T, sh @ D_sh.T, weight, plan)
    equi = float((rotated - ours @ D_out.T).abs().max() / ours.abs().max())
    assert equi < 1e-12, f"{mode}: tfn not equivariant ({equi:.2e})"
    return {
        "fused_vs_eager": fused_vs_eager,
        "tfn_vs_e3nn": err,
        "equivariance": equi,
        "path_factors": sorted({round(float(s), 12) for s in scale}),
    }


# --------------------------------------------------------------------------- machine limits


def machine_limits(threads: int) -> dict:
    """float32 matrix-multiply rate (MKL, GFLOP/s) and copy bandwidth (GB/s, read + write)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    gflops = 2 * 2048**3 / best / 1e9
    src, dst = torch.randn(32 * 2**20), torch.empty(32 * 2**20)  # 128 MB each
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return {"matmul_gflops": gflops, "copy_gbps": 2 * src.numel() * 4 / best / 1e9}


def _nonzero_structure(d: TensorProductDescription):
    """Per path: (pairs (i, k) with a non-zero CG term, terms, (j, k) pairs)."""
    out = []
    for p in d.paths:
        C = clebsch_gordan(*(ir.l for ir in d.path_irreps(p))).abs() > 1e-12
        out.append((int(C.any(1).sum()), int(C.sum()), int(C.any(0).sum())))
    return out


def kernel_cost(d: TensorProductDescription, edges: int, points: int, itemsize: int = 4) -> dict:
    """What the fused kernel must move and compute, per pass.

    Bytes: every input read once and every output written once (node rows stay in cache;
    16 bytes of indices per edge and pass). FLOPs: the multiply-adds (2 FLOPs each) of the
    kernel's own algorithm (the filter contracted with the non-zero CG table, then one
    multiply-add per pair and channel, SIMD padding not counted)."""
    n1, n2, no, nw = d.irreps_in1.dim, d.irreps_in2.dim, d.irreps_out.dim, d.weight_numel
    fwd_bytes = itemsize * (points * n1 + edges * (n2 + nw) + points * no) + 16 * edges
    bwd_bytes = itemsize * (2 * points * no + 2 * points * n1 + 2 * edges * (n2 + nw)) + 16 * edges
    fwd = bwd = 0
    for p, (pairs, terms, jk) in zip(d.paths, _nonzero_structure(d)):
        (U, ir1), (V, ir2), (Wo, ir3) = (
            d.irreps_in1[p.i_in1],
            d.irreps_in2[p.i_in2],
            d.irreps_out[p.i_out],
        )
        d1, d3 = ir1.dim, ir3.dim
        if p.connection == "uvu":
            f = terms + pairs * U + d3 * U  # M, the pairs, the weights
            b = terms + (pairs * U + d1 * U) + (pairs * U + d3 * U) + (jk * U + ir2.dim * U)
        else:
            f = terms + min(d1 * U * Wo + pairs * Wo, pairs * U + d3 * U * Wo)
            b = (
                terms
                + pairs * Wo
                + d1 * U * Wo
                + min(d1, d3) * U * Wo
                + d1 * U * Wo
                + (pairs + terms) * Wo
            )
        fwd += 2 * V * f
        bwd += 2 * V * b
    return {
        "forward": {"bytes": fwd_bytes, "flops": fwd * edges},
        "fwd+bwd": {"bytes": fwd_bytes + bwd_bytes, "flops": (fwd + bwd) * edges},
        "unfused_bytes_per_edge": itemsize * (n1 + n2 + nw + no),
    }


# --------------------------------------------------------------------------- timing


def _candidates(mode, d, edges, points, with_eager=True, with_e3nn=True, double=False):
    fast = TensorProduct(d, executor="fused")
    eager = TensorProduct(d, executor="eager")
    e3 = e3nn_tensor_product(d, mode) if with_e3nn else None
    if e3 is not None:
        check_same_paths(d, e3)
    x, sh, weight, src, dst = make_inputs(d, edges, points, torch.float32)
    t0 = time.perf_counter()
    plan = EdgePlan.build(src, dst, points)
    plan_ms = (time.perf_counter() - t0) * 1e3
    probe = torch.randn(points, d.irreps_out.dim)
    leaves = [t.clone().requires_grad_() for t in (x, sh, weight)]

    def run(conv, kind):
        def call():
            if kind == "forward":
                with torch.no_grad():
                    conv(x, sh, weight)
                return
            for t in leaves:
                t.grad = None
            loss = (conv(*leaves) * probe).sum()
            if kind == "double":  # as in training on forces: a loss on the first gradients
                grads = torch.autograd.grad(loss, leaves, create_graph=True)
                loss = sum((g * g).sum() for g in grads)
            loss.backward()

        return call

    convs = {"tfn": lambda a, b, c: fast.convolve(a, b, c, plan)}
    if with_eager:
        convs["tfn-eager"] = lambda a, b, c: eager.convolve(a, b, c, plan)
    if e3 is not None:
        convs["e3nn"] = lambda a, b, c: e3nn_convolve(e3, a, b, c, src, dst, points)
    kinds = ("forward", "fwd+bwd", "double") if double else ("forward", "fwd+bwd")
    passes = {kind: {name: run(conv, kind) for name, conv in convs.items()} for kind in kinds}
    return passes, plan_ms


def _ratios(t: dict) -> dict:
    out = {}
    for name in t:
        if name != "tfn":
            out[f"{name}/tfn"] = t[name]["median_ms"] / t["tfn"]["median_ms"]
            out[f"{name}/tfn cpu"] = t[name]["cpu_median_ms"] / t["tfn"]["cpu_median_ms"]
    return out


def bench_w2(mode: str, edges: int, repeats: int, limits: dict, double: bool = False) -> dict:
    d = tfn_description(mode)
    passes, plan_ms = _candidates(mode, d, edges, NUM_POINTS, double=double)
    cost = kernel_cost(d, edges, NUM_POINTS)
    results = {}
    for kind, fns in passes.items():
        t = interleaved_medians(fns, repeats)
        if kind not in cost:  # second order: timed only
            results[kind] = {**t, **_ratios(t)}
            continue
        ms = t["tfn"]["median_ms"]
        floor_ms = cost[kind]["bytes"] / (limits["copy_gbps"] * 1e9) * 1e3
        roof_ms = cost[kind]["flops"] / (limits["matmul_gflops"] * 1e9) * 1e3
        results[kind] = {
            **t,
            **_ratios(t),
            "memory_floor_ms": floor_ms,
            "compute_roof_ms": roof_ms,
            "tfn_gbps": cost[kind]["bytes"] / ms / 1e6,
            "tfn_gflops": cost[kind]["flops"] / ms / 1e6,
        }
    info = {
        "paths": len(d.paths),
        "weight_numel": d.weight_numel,
        "plan_build_ms": plan_ms,
        "cost": cost,
    }
    return {"info": info, "timings": results}


def _print_w2(report: dict) -> None:
    for threads, run in report["results"].items():
        lim = run["limits"]
        print(
            f"\n{IRREPS_IN} x {IRREPS_SH} -> {IRREPS_OUT}, {report['edges']} edges onto "
            f"{NUM_POINTS} points, float32, {threads} thread(s), median of {report['repeats']}; "
            f"load average {run['loadavg_before'][0]:.1f} -> {run['loadavg_after'][0]:.1f}; "
            f"matmul {lim['matmul_gflops']:.0f} GFLOP/s, copy {lim['copy_gbps']:.1f} GB/s"
        )
        header = (
            f"{'mode':<16}{'pass':<9}{'tfn ms':>8}{'eager ms':>10}{'e3nn ms':>9}{'e3nn/tfn':>9}"
            f"{'tfn cpu':>9}{'e3nn cpu':>10}{'cpu ratio':>10}{'floor ms':>9}{'roof ms':>8}"
        )
        print(header)
        print("-" * len(header))
        for mode, res in run["modes"].items():
            for kind, t in res["timings"].items():
                print(
                    f"{mode:<16}{kind:<9}{t['tfn']['median_ms']:>8.2f}"
                    f"{t['tfn-eager']['median_ms']:>10.2f}{t['e3nn']['median_ms']:>9.2f}"
                    f"{t['e3nn/tfn']:>9.2f}{t['tfn']['cpu_median_ms']:>9.2f}"
                    f"{t['e3nn']['cpu_median_ms']:>10.2f}{t['e3nn/tfn cpu']:>10.2f}"
                    + (
                        f"{t['memory_floor_ms']:>9.2f}{t['compute_roof_ms']:>8.2f}"
                        if "memory_floor_ms" in t
                        else f"{'-':>9}{'-':>8}"
                    )
                )
    for mode, c in report["checks"].items():
        print(
            f"{mode}: float64 check: fused vs eager {c['fused_vs_eager']:.1e}, tfn vs e3nn "
            f"{c['tfn_vs_e3nn']:.1e} (path factors {c['path_factors']}), equivariance "
            f"{c['equivariance']:.1e}"
        )


# --------------------------------------------------------------------------- scaling


def _scaling_points(max_edges: int):
    edges = [
        e for e in (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000) if e <= max_edges
    ]
    for e in edges:
        yield "edges", e, "channelwise", IRREPS_IN, IRREPS_SH, max(e // 20, 10), e
    for lmax in (1, 2, 3, 4):
        irreps = Irreps([(16, (l, (-1) ** l)) for l in range(lmax + 1)])
        yield (
            "lmax",
            lmax,
            "channelwise",
            irreps,
            Irreps.spherical_harmonics(lmax),
            NUM_POINTS,
            20_000,
        )
    for mul in (8, 16, 32, 64, 128):
        irreps = Irreps([(mul, (l, (-1) ** l)) for l in range(3)])
        yield "channels", mul, "channelwise", irreps, IRREPS_SH, NUM_POINTS, 20_000
    for e in [e for e in (1_000, 3_000, 10_000, 30_000, 100_000) if e <= max_edges]:
        yield "edges-uvw", e, "fully_connected", IRREPS_IN, IRREPS_SH, max(e // 20, 10), e


SWEEPS = ("edges", "lmax", "channels", "edges-uvw")


def bench_scaling(repeats: int, max_edges: int, e3nn_max_edges: int, sweeps=SWEEPS) -> list[dict]:
    rows = []
    for sweep, value, mode, irreps, sh, points, edges in _scaling_points(max_edges):
        if sweep not in sweeps:
            continue
        d = tfn_description(mode, irreps, sh, irreps)
        # e3nn keeps several per-edge intermediates: only where they fit in a shared machine.
        with_e3nn = edges <= e3nn_max_edges and edges * d.weight_numel <= 120_000_000
        passes, _ = _candidates(mode, d, edges, points, with_eager=False, with_e3nn=with_e3nn)
        row = {"sweep": sweep, "value": value, "mode": mode, "edges": edges, "points": points}
        for kind, fns in passes.items():
            t = interleaved_medians(fns, repeats if edges < 300_000 else max(2, repeats // 2))
            row[kind] = {name: v["median_ms"] for name, v in t.items()}
            row[kind + " cpu"] = {name: v["cpu_median_ms"] for name, v in t.items()}
        rows.append(row)
        print(
            f"{sweep:>10} {value:>8}: tfn fwd {row['forward']['tfn']:9.2f} ms, fwd+bwd "
            f"{row['fwd+bwd']['tfn']:9.2f} ms"
            + (
                f"; e3nn {row['forward']['e3nn']:9.2f} / {row['fwd+bwd']['e3nn']:9.2f} ms"
                if "e3nn" in row["forward"]
                else ""
            ),
            flush=True,
        )
    return rows


def plot_scaling(results: dict, path: str) -> None:
    """One panel per sweep: time against the swept size, per thread count and library (CPU
    time for one thread, wall time for more)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plotting needs matplotlib: pip install 'tfn[train]'")
        return
    sweeps = [
        ("edges", "edges (W2 channel-wise, 20 per point)", True),
        ("edges-uvw", "edges (W2 fully connected)", True),
        ("lmax", "lmax (16 channels per degree, 20,000 edges)", False),
        ("channels", "channels per degree (lmax 2, 20,000 edges)", True),
    ]
    fig, grid = plt.subplots(2, 2, figsize=(11, 8.5))
    axes = grid.ravel()
    styles = {"tfn": "-", "e3nn": "--"}
    colors = {
        ("forward", "1"): "tab:blue",
        ("fwd+bwd", "1"): "tab:red",
        ("forward", "2"): "tab:cyan",
        ("fwd+bwd", "2"): "tab:orange",
    }
    for ax, (sweep, label, logx) in zip(axes, sweeps):
        for threads, rows in results.items():
            rows = [r for r in rows if r["sweep"] == sweep]
            if not rows:
                continue
            # One thread: CPU time (robust to other processes); more: wall time.
            clock = " cpu" if str(threads) == "1" else ""
            for kind in ("forward", "fwd+bwd"):
                for lib in ("tfn", "e3nn"):
                    pts = [(r["value"], r[kind + clock][lib]) for r in rows if lib in r[kind]]
                    if pts:
                        xs, ys = zip(*pts)
                        ax.plot(
                            xs,
                            ys,
                            styles[lib],
                            marker="o",
                            ms=3,
                            color=colors.get((kind, str(threads)), "gray"),
                            label=f"{lib} {kind}, {threads} thr",
                        )
        ax.set_xlabel(label)
        ax.set_ylabel("median time (ms)")
        ax.set_yscale("log")
        if logx:
            ax.set_xscale("log", base=2 if sweep == "channels" else 10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "tfn fused convolution (solid) vs e3nn 0.6.0 (dashed), float32, CPU\n"
        "1 thread: CPU time of the process; 2 threads: wall time"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--double", action="store_true", help="also time a second-order pass (as for forces)"
    )
    parser.add_argument("--scaling", action="store_true", help="run the size sweeps instead")
    parser.add_argument("--sweeps", default=",".join(SWEEPS), help="which size sweeps to run")
    parser.add_argument("--max-edges", type=int, default=1_000_000, help="largest sweep point")
    parser.add_argument("--e3nn-max-edges", type=int, default=100_000)
    parser.add_argument("--plot", type=str, default=None, help="PNG of the sweeps")
    parser.add_argument(
        "--plot-from",
        nargs="+",
        default=None,
        metavar="JSON",
        help="only draw --plot from the --json files of earlier --scaling runs",
    )
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.plot_from:
        if not args.plot:
            parser.error("--plot-from needs --plot PATH")
        import json

        merged: dict[str, list] = {}  # rows of later files replace those of the same sweep
        for path in args.plot_from:
            with open(path) as f:
                for t, r in json.load(f)["results"].items():
                    new = {row["sweep"] for row in r["rows"]}
                    kept = [row for row in merged.get(t, []) if row["sweep"] not in new]
                    merged[t] = kept + r["rows"]
        plot_scaling(merged, args.plot)
        return {"plotted": args.plot_from}
    if not fused.available():
        raise SystemExit(f"the fused kernel is unavailable: {fused.unavailable_reason()}")
    import e3nn

    report: dict = {
        "benchmark": "tensor_product_scaling" if args.scaling else "tensor_product",
        "irreps": [IRREPS_IN, IRREPS_SH, IRREPS_OUT],
        "edges": args.edges,
        "points": NUM_POINTS,
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "machine": cpu_name(),
        "cpus": os.cpu_count(),
        "results": {},
    }
    modes = [m for m in args.modes.split(",") if m]
    if not args.scaling:
        report["checks"] = {mode: verify(mode) for mode in modes}
    for threads in args.threads:
        torch.set_num_threads(threads)
        run: dict = {"loadavg_before": os.getloadavg(), "limits": machine_limits(threads)}
        if args.scaling:
            print(f"-- {threads} thread(s)", flush=True)
            run["rows"] = bench_scaling(
                args.repeats, args.max_edges, args.e3nn_max_edges, args.sweeps.split(",")
            )
        else:
            run["modes"] = {
                mode: bench_w2(mode, args.edges, args.repeats, run["limits"], args.double)
                for mode in modes
            }
        run["loadavg_after"] = os.getloadavg()
        report["results"][str(threads)] = run
    if not args.scaling:
        _print_w2(report)
    elif args.plot:
        plot_scaling({t: r["rows"] for t, r in report["results"].items()}, args.plot)
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
