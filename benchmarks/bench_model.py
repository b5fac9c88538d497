"""Benchmark a whole model: tfn's TensorFieldNetwork against an e3nn 0.6.0 twin.

The model: 3 layers, ``32x0e + 32x1o + 32x2e`` hidden features, filters up to ``lmax = 2``,
cutoff 5 A, one-hot species ``5x0e`` in, an energy ``0e`` out (summed over each molecule),
forces by autograd. The batch: 32 molecules of 20 atoms, placed at random in a 4.5 A box
with at least 1 A between atoms (about 15 neighbours per atom within the cutoff).

The e3nn twin is built from e3nn's primitives with the same irreps and paths, layer by
layer: ``o3.TensorProduct`` (``"uvu"``; every path from input x ``0e + 1o + 2e`` into the
hidden irrep types, each path its own output entry), its per-edge weights from an
``e3nn.nn.FullyConnectedNet`` on the same 8 Gaussians times the same polynomial envelope,
``o3.Linear`` self-interaction and self-connection (with ``0e`` biases), ``e3nn.nn.Gate``,
and the same output convolution plus linear map. Both build their graph with
``tfn.data.radius_graph`` inside the timed region.

Two timings, medians over repeats with the two models interleaved:

* forward + forces: energy and ``-dE/dpos`` (no graph kept);
* training step: energy and forces with ``create_graph=True``, MSE loss on both, backward,
  Adam step.

Usage::

    python benchmarks/bench_model.py [--repeats 10] [--threads 2] [--json results.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, interleaved_medians, write_json  # noqa: E402
from torch import nn

from tfn.data.neighbors import edge_vectors, radius_graph
from tfn.models import TensorFieldNetwork
from tfn.so3 import Irreps

HIDDEN = "32x0e + 32x1o + 32x2e"
NUM_SPECIES = 5
CUTOFF = 5.0
NUM_BASIS = 8
RADIAL_HIDDEN = 32
LMAX = 2


# --------------------------------------------------------------------------- data


def random_molecules(
    num_molecules: int, num_atoms: int, box: float = 4.5, min_dist: float = 1.0, seed: int = 0
):
    """Random positions (rejection sampling, minimum separation), species and targets."""
    g = torch.Generator().manual_seed(seed)
    clouds = []
    for _ in range(num_molecules):
        atoms: list[torch.Tensor] = []
        while len(atoms) < num_atoms:
            p = torch.rand(3, generator=g, dtype=torch.float64) * box
            if all(float((p - q).norm()) >= min_dist for q in atoms):
                atoms.append(p)
        clouds.append(torch.stack(atoms))
    pos = torch.cat(clouds).float()
    batch = torch.arange(num_molecules).repeat_interleave(num_atoms)
    species = torch.randint(0, NUM_SPECIES, (pos.shape[0],), generator=g)
    features = nn.functional.one_hot(species, NUM_SPECIES).float()
    energy = torch.randn(num_molecules, 1, generator=g)
    forces = torch.randn(pos.shape[0], 3, generator=g)
    return pos, features, batch, energy, forces


# --------------------------------------------------------------------------- the e3nn twin


def _envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    x = r / cutoff
    u = (
        1
        - (p + 1) * (p + 2) / 2 * x**p
        + p * (p + 2) * x ** (p + 1)
        - p * (p + 1) / 2 * x ** (p + 2)
    )
    return torch.where(x < 1, u, torch.zeros_like(u))


class E3nnConvolution(nn.Module):
    """``out[a] = sum_b TP(x[b], Y(r_ab), MLP(|r_ab|))`` with e3nn's primitives."""

    def __init__(self, irreps_in, irreps_sh, keep_irreps) -> None:
        super().__init__()
        from e3nn import nn as enn
        from e3nn import o3

        irreps_in, irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        keep = {ir for _, ir in o3.Irreps(keep_irreps)}
        out, instructions = [], []
        for i1, (mul, ir_in) in enumerate(irreps_in):
            for i2, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in keep:
                        instructions.append((i1, i2, len(out), "uvu", True))
                        out.append((mul, ir_out))
        self.irreps_out = o3.Irreps(out)
        self.tp = o3.TensorProduct(
            irreps_in,
            irreps_sh,
            self.irreps_out,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = enn.FullyConnectedNet(
            [NUM_BASIS, RADIAL_HIDDEN, self.tp.weight_numel], nn.functional.silu
        )

    def forward(self, x, src, dst, sh, basis):
        messages = self.tp(x[src], sh, self.radial(basis))
        return messages.new_zeros(x.shape[0], messages.shape[-1]).index_add(0, dst, messages)


class E3nnLayer(nn.Module):
    def __init__(self, irreps_in, irreps_sh, irreps_hidden) -> None:
        super().__init__()
        from e3nn import nn as enn
        from e3nn import o3

        hidden = o3.Irreps(irreps_hidden)
        scalars = o3.Irreps([(m, ir) for m, ir in hidden if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in hidden if ir.l > 0])
        self.gate = enn.Gate(
            scalars,
            [nn.functional.silu],
            o3.Irreps(f"{gated.num_irreps}x0e"),
            [torch.sigmoid],
            gated,
        )
        irreps_si = self.gate.irreps_in
        self.conv = E3nnConvolution(irreps_in, irreps_sh, irreps_si)
        self.self_interaction = o3.Linear(self.conv.irreps_out, irreps_si, biases=True)
        self.self_connection = o3.Linear(irreps_in, irreps_si, biases=True)
        self.irreps_out = self.gate.irreps_out

    def forward(self, x, src, dst, sh, basis):
        h = self.self_interaction(self.conv(x, src, dst, sh, basis))
        return self.gate(h + self.self_connection(x))


class E3nnTFN(nn.Module):
    """The same architecture as ``TensorFieldNetwork`` (gate, self-connection, sum pool)."""

    def __init__(self, irreps_in, irreps_out, irreps_hidden, num_layers) -> None:
        super().__init__()
        from e3nn import o3

        self.irreps_sh = o3.Irreps.spherical_harmonics(LMAX)
        self.layers = nn.ModuleList()
        irreps = o3.Irreps(irreps_in)
        for _ in range(num_layers):
            layer = E3nnLayer(irreps, self.irreps_sh, irreps_hidden)
            self.layers.append(layer)
            irreps = layer.irreps_out
        self.output_conv = E3nnConvolution(irreps, self.irreps_sh, irreps_out)
        self.output_linear = o3.Linear(self.output_conv.irreps_out, irreps_out, biases=True)

    def forward(self, pos, features, batch):
        from e3nn import o3
        from e3nn.math import soft_one_hot_linspace

        edge_index = radius_graph(pos, CUTOFF, batch)
        src, dst = edge_index[0], edge_index[1]
        vec, length = edge_vectors(pos, edge_index)
        sh = o3.spherical_harmonics(self.irreps_sh, vec, True, normalization="component")
        basis = soft_one_hot_linspace(length, 0.0, CUTOFF, NUM_BASIS, "gaussian", cutoff=False)
        basis = basis * _envelope(length, CUTOFF)[:, None]
        x = features
        for layer in self.layers:
            x = layer(x, src, dst, sh, basis)
        x = self.output_linear(self.output_conv(x, src, dst, sh, basis))
        num = int(batch.max()) + 1
        return x.new_zeros(num, x.shape[-1]).index_add(0, batch, x)


# --------------------------------------------------------------------------- builders, checks


def build_models(num_layers: int = 3, executor: str = "auto"):
    tfn_model = TensorFieldNetwork(
        f"{NUM_SPECIES}x0e",
        "0e",
        irreps_hidden=HIDDEN,
        num_layers=num_layers,
        lmax=LMAX,
        cutoff=CUTOFF,
        pool="sum",
        nonlinearity="gate",
        num_basis=NUM_BASIS,
        radial_hidden=(RADIAL_HIDDEN,),
        executor=executor,
    )
    e3nn_model = E3nnTFN(f"{NUM_SPECIES}x0e", "0e", HIDDEN, num_layers)
    # Same irreps and paths at every convolution.
    tfn_convs = [layer.conv for layer in tfn_model.layers] + [tfn_model.output_conv]
    e3nn_convs = [layer.conv for layer in e3nn_model.layers] + [e3nn_model.output_conv]
    for a, b in zip(tfn_convs, e3nn_convs):
        ours = [(p.i_in1, p.i_in2, p.i_out, p.weight_shape) for p in a.description.paths]
        theirs = [(i.i_in1, i.i_in2, i.i_out, tuple(i.path_shape)) for i in b.tp.instructions]
        assert ours == theirs, (ours, theirs)
        assert Irreps(str(b.irreps_out)) == a.irreps_out, (a.irreps_out, b.irreps_out)
        assert a.tp.weight_numel == b.tp.weight_numel
    return tfn_model, e3nn_model


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        kind = "radial" if ".radial." in name else "linear/other"
        counts[kind] = counts.get(kind, 0) + p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


# --------------------------------------------------------------------------- timed steps


def energy_forces(model, pos, features, batch, create_graph: bool):
    pos = pos.detach().requires_grad_()
    energy = model(pos, features, batch)
    (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    return energy, -grad


def make_steps(model, data):
    pos, features, batch, energy_ref, forces_ref = data
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def inference():
        energy_forces(model, pos, features, batch, create_graph=False)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        energy, forces = energy_forces(model, pos, features, batch, create_graph=True)
        loss = nn.functional.mse_loss(energy, energy_ref) + nn.functional.mse_loss(
            forces, forces_ref
        )
        loss.backward()
        optimizer.step()

    return inference, train_step


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_training_memory(library: str, args) -> float:
    """Peak extra resident memory (MB) of a training step, in a fresh process: the growth of
    the high-water mark (``ru_maxrss``) over the memory held once model and data exist."""
    import subprocess

    cmd = [sys.executable, __file__, "--measure-memory", library, "--threads", str(args.threads)]
    cmd += ["--molecules", str(args.molecules), "--atoms", str(args.atoms)]
    cmd += ["--layers", str(args.layers), "--executor", args.executor]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _measure_memory(library: str, args) -> None:
    import resource

    data = random_molecules(args.molecules, args.atoms)
    tfn_model, e3nn_model = build_models(args.layers, args.executor)
    model = tfn_model if library == "tfn" else e3nn_model
    del tfn_model, e3nn_model
    _, train_step = make_steps(model, data)
    base = _rss_mb()
    for _ in range(3):
        train_step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"{peak - base:.1f}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", type=int, default=32)
    parser.add_argument("--atoms", type=int, default=20)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    parser.add_argument(
        "--executor", default="auto", help="tfn's tensor-product kernel (auto, fused, eager)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--measure-memory", choices=["tfn", "e3nn"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.measure_memory:
        _measure_memory(args.measure_memory, args)
        return {}
    import e3nn

    data = random_molecules(args.molecules, args.atoms)
    edges = radius_graph(data[0], CUTOFF, data[2]).shape[1]
    tfn_model, e3nn_model = build_models(args.layers, args.executor)
    params = {"tfn": parameter_breakdown(tfn_model), "e3nn": parameter_breakdown(e3nn_model)}

    # Sanity: both produce finite energies and forces of the right shapes.
    for model in (tfn_model, e3nn_model):
        energy, forces = energy_forces(model, *data[:3], create_graph=False)
        assert energy.shape == (args.molecules, 1) and forces.shape == data[0].shape
        assert bool(torch.isfinite(energy).all() and torch.isfinite(forces).all())

    load_before = os.getloadavg()
    tfn_inf, tfn_train = make_steps(tfn_model, data)
    e3nn_inf, e3nn_train = make_steps(e3nn_model, data)
    timings = {}
    for kind, fns in (
        ("forward+forces", {"tfn": tfn_inf, "e3nn": e3nn_inf}),
        ("train step", {"tfn": tfn_train, "e3nn": e3nn_train}),
    ):
        t = interleaved_medians(fns, args.repeats)
        timings[kind] = {
            **t,
            "e3nn/tfn": t["e3nn"]["median_ms"] / t["tfn"]["median_ms"],
            "e3nn/tfn cpu": t["e3nn"]["cpu_median_ms"] / t["tfn"]["cpu_median_ms"],
        }

    load_after = os.getloadavg()
    memory = {}
    if not args.no_memory:
        memory = {lib: peak_training_memory(lib, args) for lib in ("tfn", "e3nn")}
    report = {
        "benchmark": "model",
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "hidden": HIDDEN,
        "layers": args.layers,
        "molecules": args.molecules,
        "atoms_per_molecule": args.atoms,
        "edges": edges,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "machine": cpu_name(),
        "cpus": os.cpu_count(),
        "parameters": params,
        "timings": timings,
        "executor": args.executor,
        "peak_training_memory_mb": memory,
    }
    n = args.molecules * args.atoms
    print(
        f"TFN {args.layers} layers, {HIDDEN}, lmax {LMAX}, cutoff {CUTOFF}: {args.molecules} "
        f"molecules x {args.atoms} atoms = {n} atoms, {edges} edges ({edges / n:.1f} per atom), "
        f"float32, {report['threads']} threads, median of {args.repeats}; load average "
        f"{load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for name, c in params.items():
        print(f"  {name:5s} parameters: {c['total']:,} (radial {c['radial']:,})")
    header = (
        f"{'pass':<18}{'tfn ms':>10}{'e3nn ms':>10}{'e3nn/tfn':>10}"
        f"{'tfn cpu':>10}{'e3nn cpu':>10}{'cpu ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    for kind, t in timings.items():
        print(
            f"{kind:<18}{t['tfn']['median_ms']:>10.1f}{t['e3nn']['median_ms']:>10.1f}"
            f"{t['e3nn/tfn']:>10.2f}{t['tfn']['cpu_median_ms']:>10.1f}"
            f"{t['e3nn']['cpu_median_ms']:>10.1f}{t['e3nn/tfn cpu']:>10.2f}"
        )
    if memory:
        print(
            f"peak extra memory of a training step: tfn {memory['tfn']:.0f} MB, "
            f"e3nn {memory['e3nn']:.0f} MB (e3nn/tfn {memory['e3nn'] / max(memory['tfn'], 1e-9):.2f})"
        )
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
