"""Benchmark the convolution's tensor product: tfn's kernel against e3nn 0.6.0.

The workload is one TFN convolution step without the radial network: features
``16x0e + 16x1o + 16x2e`` gathered from 1,000 source points by a random ``src`` index,
coupled per edge with filters ``0e + 1o + 2e`` and per-edge weights into
``16x0e + 16x1o + 16x2e``, then summed onto 1,000 points by a random ``dst`` index.
Two path sets, identical in both libraries (asserted): channel-wise (``"uvu"``) and fully
connected (``"uvw"``). Timings are medians over repeats, the two libraries interleaved in
the same loop so that noise from other processes hits both alike.

Before timing, the script checks in float64 that both libraries compute the same function:
tfn's Clebsch-Gordan tensor is ``s * sqrt(2 l3 + 1) * wigner_3j`` and both normalise paths by
``1 / sqrt(fan_in)``, so with each path's weights multiplied by the ratio of path factors
(``+-1``) the outputs must agree to rounding.

Usage::

    python benchmarks/bench_tensor_product.py [--edges 20000] [--repeats 15] [--threads 2]
        [--json results.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, interleaved_medians, write_json  # noqa: E402

from tfn.ops import TensorProduct, channelwise_paths, fully_connected_paths
from tfn.ops.paths import TensorProductDescription
from tfn.so3 import Irreps, random_rotation, spherical_harmonics
from tfn.so3.clebsch_gordan import clebsch_gordan

IRREPS_IN = "16x0e + 16x1o + 16x2e"
IRREPS_SH = "0e + 1o + 2e"
IRREPS_OUT = "16x0e + 16x1o + 16x2e"
NUM_POINTS = 1000


# --------------------------------------------------------------------------- the two kernels


def tfn_description(mode: str) -> TensorProductDescription:
    if mode == "channelwise":
        return channelwise_paths(IRREPS_IN, IRREPS_SH, IRREPS_OUT)
    return fully_connected_paths(IRREPS_IN, IRREPS_SH, IRREPS_OUT)


def e3nn_tensor_product(description: TensorProductDescription, mode: str):
    """The e3nn twin of a tfn description: same irreps, same paths in the same order."""
    from e3nn import o3

    if mode == "channelwise":
        instructions = [(p.i_in1, p.i_in2, p.i_out, "uvu", True) for p in description.paths]
        return o3.TensorProduct(
            IRREPS_IN,
            IRREPS_SH,
            IRREPS_OUT,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
    return o3.FullyConnectedTensorProduct(
        IRREPS_IN, IRREPS_SH, IRREPS_OUT, shared_weights=False, internal_weights=False
    )


def check_same_paths(description: TensorProductDescription, e3nn_tp) -> None:
    """Same number of paths, same triples in the same order, same weight layout."""
    ours = [(p.i_in1, p.i_in2, p.i_out, p.connection, p.weight_shape) for p in description.paths]
    theirs = [
        (i.i_in1, i.i_in2, i.i_out, i.connection_mode, tuple(i.path_shape))
        for i in e3nn_tp.instructions
    ]
    assert ours == theirs, f"path sets differ:\n{ours}\n{theirs}"
    assert description.weight_numel == e3nn_tp.weight_numel, (
        description.weight_numel,
        e3nn_tp.weight_numel,
    )


def path_factors(description: TensorProductDescription, e3nn_tp) -> torch.Tensor:
    """Per weight entry: (tfn path coefficient x tfn CG) / (e3nn path weight x e3nn wigner_3j).

    tfn's CG equals ``s * sqrt(2 l3 + 1) * wigner_3j``; the ratio of whole path factors is
    expected to be ``+-1`` (same ``1/sqrt(fan_in)`` normalisation in both libraries).
    """
    from e3nn import o3

    scale = torch.empty(description.weight_numel, dtype=torch.float64)
    for path, ins in zip(description.paths, e3nn_tp.instructions):
        l1, l2, l3 = (ir.l for ir in description.path_irreps(path))
        ours = clebsch_gordan(l1, l2, l3).to(torch.float64) * path.coefficient
        theirs = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * ins.path_weight
        ratio = (ours * theirs).sum() / (theirs * theirs).sum()
        assert torch.allclose(ours, ratio * theirs, atol=1e-10), (l1, l2, l3)
        # Same 1/sqrt(fan_in) normalisation in both libraries: only the CG sign differs.
        assert abs(abs(float(ratio)) - 1.0) < 1e-9, (l1, l2, l3, float(ratio))
        scale[path.weight_slice] = ratio
    return scale


# --------------------------------------------------------------------------- workload


def make_inputs(edges: int, weight_numel: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dim_in = 16 * (1 + 3 + 5)
    x = torch.randn(NUM_POINTS, dim_in, generator=g, dtype=dtype)
    vec = torch.randn(edges, 3, generator=g, dtype=dtype)
    sh = spherical_harmonics(IRREPS_SH, vec, normalize=True)
    weight = torch.randn(edges, weight_numel, generator=g, dtype=dtype)
    src = torch.randint(0, NUM_POINTS, (edges,), generator=g)
    dst = torch.randint(0, NUM_POINTS, (edges,), generator=g)
    return x, sh, weight, src, dst


def convolve(tp: Callable, x, sh, weight, src, dst) -> torch.Tensor:
    """Gather from ``src``, tensor product, sum onto ``dst``: what a convolution does."""
    if isinstance(tp, TensorProduct):  # tfn's kernel sums onto the destinations itself
        return tp(x[src], sh, weight, dst=dst, num_nodes=NUM_POINTS)
    messages = tp(x[src], sh, weight)
    return messages.new_zeros(NUM_POINTS, messages.shape[-1]).index_add(0, dst, messages)


def verify(mode: str, tfn64: TensorProduct, e3nn64, edges: int = 500) -> dict[str, float]:
    """float64 check of one convolution step: tfn == e3nn once each path's weights carry the
    ratio of path factors; tfn equivariant; output norms of the unrescaled runs compared."""
    x, sh, weight, src, dst = make_inputs(edges, tfn64.weight_numel, torch.float64, seed=1)
    scale = path_factors(tfn64.description, e3nn64)
    ours = convolve(tfn64, x, sh, weight, src, dst)
    theirs = convolve(e3nn64, x, sh, weight * scale, src, dst)
    err = float((ours - theirs).abs().max() / theirs.abs().max())
    assert err < 1e-12, f"{mode}: tfn and e3nn differ (relative {err:.2e})"
    # Without the rescaling the two differ by signs only: the same norm statistics.
    plain = convolve(e3nn64, x, sh, weight, src, dst)
    norm_ratio = float(ours.norm() / plain.norm())
    # Equivariance of tfn's kernel (rotation of the edge vectors and the features).
    R = random_rotation(1, torch.Generator().manual_seed(2), dtype=torch.float64)[0]
    D_in, D_sh, D_out = (Irreps(i).D_from_matrix(R) for i in (IRREPS_IN, IRREPS_SH, IRREPS_OUT))
    rotated = convolve(tfn64, x @ D_in.T, sh @ D_sh.T, weight, src, dst)
    equi = float((rotated - ours @ D_out.T).abs().max() / ours.abs().max())
    assert equi < 1e-12, f"{mode}: tfn not equivariant ({equi:.2e})"
    scales = sorted({round(float(s), 12) for s in scale})
    return {
        "max_rel_diff": err,
        "norm_ratio_unscaled": norm_ratio,
        "equivariance": equi,
        "path_factors": scales,
    }


def bench_mode(mode: str, edges: int, repeats: int) -> dict:
    description = tfn_description(mode)
    tfn_tp = TensorProduct(description)
    e3nn_tp = e3nn_tensor_product(description, mode)
    check_same_paths(description, e3nn_tp)
    # Both libraries store their coupling coefficients in the default dtype at construction
    # (tfn's buffers, e3nn's generated code): build the float64 twins with float64 defaults.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        tfn64, e3nn64 = TensorProduct(description), e3nn_tensor_product(description, mode)
    finally:
        torch.set_default_dtype(default)
    info = {
        "paths": len(description.paths),
        "weight_numel": description.weight_numel,
        "check": verify(mode, tfn64, e3nn64),
    }
    x, sh, weight, src, dst = make_inputs(edges, description.weight_numel, torch.float32)
    probe = torch.randn(NUM_POINTS, tfn_tp.irreps_out.dim)
    leaves = [t.clone().requires_grad_() for t in (x, sh, weight)]

    def forward(tp):
        def run():
            with torch.no_grad():
                convolve(tp, x, sh, weight, src, dst)

        return run

    def forward_backward(tp):
        def run():
            for t in leaves:
                t.grad = None
            out = convolve(tp, leaves[0], leaves[1], leaves[2], src, dst)
            (out * probe).sum().backward()

        return run

    results = {}
    for kind, make in (("forward", forward), ("fwd+bwd", forward_backward)):
        t = interleaved_medians({"tfn": make(tfn_tp), "e3nn": make(e3nn_tp)}, repeats)
        results[kind] = {
            **t,
            "e3nn/tfn": t["e3nn"]["median_ms"] / t["tfn"]["median_ms"],
            "e3nn/tfn cpu": t["e3nn"]["cpu_median_ms"] / t["tfn"]["cpu_median_ms"],
        }
    return {"info": info, "timings": results}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="channelwise,fully_connected")
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import e3nn

    report = {
        "benchmark": "tensor_product",
        "irreps": [IRREPS_IN, IRREPS_SH, IRREPS_OUT],
        "edges": args.edges,
        "points": NUM_POINTS,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "machine": cpu_name(),
        "cpus": os.cpu_count(),
        "modes": {},
    }
    report["loadavg_before"] = os.getloadavg()
    for mode in args.modes.split(","):
        report["modes"][mode] = bench_mode(mode, args.edges, args.repeats)
    report["loadavg_after"] = os.getloadavg()

    print(
        f"{IRREPS_IN} x {IRREPS_SH} -> {IRREPS_OUT}, {args.edges} edges onto {NUM_POINTS}"
        f" points, float32, {report['threads']} threads, median of {args.repeats}; load average {report['loadavg_before'][0]:.1f} -> "
        f"{report['loadavg_after'][0]:.1f} on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'mode':<16}{'pass':<10}{'tfn ms':>10}{'e3nn ms':>10}{'e3nn/tfn':>10}"
        f"{'tfn cpu':>10}{'e3nn cpu':>10}{'cpu ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    for mode, res in report["modes"].items():
        for kind, t in res["timings"].items():
            print(
                f"{mode:<16}{kind:<10}{t['tfn']['median_ms']:>10.2f}"
                f"{t['e3nn']['median_ms']:>10.2f}{t['e3nn/tfn']:>10.2f}"
                f"{t['tfn']['cpu_median_ms']:>10.2f}{t['e3nn']['cpu_median_ms']:>10.2f}"
                f"{t['e3nn/tfn cpu']:>10.2f}"
            )
    for mode, res in report["modes"].items():
        i = res["info"]
        c = i["check"]
        print(
            f"{mode}: {i['paths']} paths, {i['weight_numel']} weights; float64 check: "
            f"max rel diff {c['max_rel_diff']:.1e} (path factors {c['path_factors']}), "
            f"equivariance {c['equivariance']:.1e}, "
            f"norm ratio without sign fix {c['norm_ratio_unscaled']:.3f}"
        )
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
