"""Speed and stability of molecular dynamics driven by a trained tfn potential, through ASE.

For a run folder (an ``md`` task) and a starting structure, measures:

* the forces against central finite differences of the energy (float64, a few atoms);
* the speed of MD through ``tfn.ase.TFNCalculator`` (steps per second, one thread by default);
* an NVE (velocity Verlet) run: the drift of the total energy, meV/atom/ps (least squares);
* a Langevin run: whether the bonds stay physical, that is every bond of the start (pairs
  closer than 1.2x their covalent radii) stays within ``--bond-range`` of its length at the
  start, and no new pair comes closer than 0.75x its covalent radii.

    OMP_NUM_THREADS=1 python benchmarks/md_stability.py RUN --atoms START.xyz \\
        --nve-ps 10 --langevin-ps 50 --temperature 500 --out md_stability/

It prints a table and writes ``summary.json`` (and the trajectories and logs) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def finite_difference_error(run: str, atoms, atoms_checked: int = 3, h: float = 1e-4) -> float:
    """Max |F - (-dE/dx)| over the components of a few atoms, float64, eV/A."""
    from tfn.ase import TFNCalculator

    atoms = atoms.copy()
    atoms.calc = TFNCalculator(run, dtype=torch.float64)
    forces = atoms.get_forces()
    worst = 0.0
    for i in range(min(atoms_checked, len(atoms))):
        for k in range(3):
            shifted = []
            for sign in (1, -1):
                probe = atoms.copy()
                probe.calc = atoms.calc
                probe.positions[i, k] += sign * h
                shifted.append(probe.get_potential_energy())
            numeric = -(shifted[0] - shifted[1]) / (2 * h)
            worst = max(worst, abs(numeric - forces[i, k]))
    return worst


def mean_temperature(log: Path) -> float:
    """Mean temperature over the second half of a run's log (a working thermostat brings it
    to the target; ASE's temperature counts the degrees of freedom its constraints leave)."""
    temperature = np.loadtxt(log, delimiter=",", skiprows=1, ndmin=2)[:, 5]
    return float(temperature[len(temperature) // 2 :].mean())


def bonds(atoms, factor: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) closer than ``factor`` times the sum of their covalent radii, and the
    sums of radii of every pair."""
    from ase.data import covalent_radii

    radii = covalent_radii[atoms.numbers]
    limit = radii[:, None] + radii[None, :]
    d = atoms.get_all_distances()
    i, j = np.triu_indices(len(atoms), 1)
    bonded = d[i, j] < factor * limit[i, j]
    return np.stack([i[bonded], j[bonded]], 1), limit


def bond_report(trajectory: Path, start) -> dict:
    import ase.io

    pairs, limit = bonds(start)
    d0 = start.get_all_distances()[pairs[:, 0], pairs[:, 1]]
    low, high, closest_new = math.inf, 0.0, math.inf
    bonded = np.zeros((len(start), len(start)), bool)
    bonded[pairs[:, 0], pairs[:, 1]] = bonded[pairs[:, 1], pairs[:, 0]] = True
    frames = ase.io.read(trajectory, ":")
    for frame in frames:
        d = frame.get_all_distances()
        ratio = d[pairs[:, 0], pairs[:, 1]] / d0
        low, high = min(low, float(ratio.min())), max(high, float(ratio.max()))
        others = np.where(bonded | np.eye(len(start), dtype=bool), np.inf, d / limit)
        closest_new = min(closest_new, float(others.min()))
    return {
        "frames": len(frames),
        "bonds": len(pairs),
        "bond_ratio_min": low,
        "bond_ratio_max": high,
        "closest_non_bonded_over_radii": closest_new,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder of an md task (or a .ckpt path)")
    parser.add_argument("--atoms", required=True, help="starting structure (xyz, extxyz, ...)")
    parser.add_argument("--nve-ps", type=float, default=10.0)
    parser.add_argument("--langevin-ps", type=float, default=50.0)
    parser.add_argument("--temperature", type=float, default=500.0, help="K")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--interval", type=int, default=100, help="steps between saved frames")
    parser.add_argument("--bond-range", type=float, nargs=2, default=(0.7, 1.5))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="md_stability")
    args = parser.parse_args(argv)

    from tfn.interop.dynamics import read_start, run_md

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = read_start(args.atoms)
    summary: dict = {"run": args.run, "atoms": args.atoms, "natoms": len(start)}
    t0 = time.perf_counter()
    summary["force_fd_max_error_eV_A"] = finite_difference_error(args.run, start)
    summary["fd_seconds"] = round(time.perf_counter() - t0, 2)

    for ensemble, ps in (("nve", args.nve_ps), ("langevin", args.langevin_ps)):
        if ps <= 0:
            continue
        steps = int(round(ps * 1000 / args.timestep))
        result = run_md(
            args.run,
            start,
            ensemble=ensemble,
            temperature=args.temperature,
            timestep_fs=args.timestep,
            steps=steps,
            out=out / f"{ensemble}.extxyz",
            interval=args.interval,
            seed=0,
        )
        entry = {
            "ps": ps,
            "steps": steps,
            "seconds": round(result.seconds, 1),
            "steps_per_second": round(result.steps_per_second, 1),
            "drift_meV_per_atom_ps": result.drift_mev_per_atom_ps,
            "max_temperature_K": result.max_temperature,
            "mean_temperature_K": mean_temperature(result.log),
            "min_distance_A": result.min_distance,
        }
        entry.update(bond_report(result.trajectory, start))
        low, high = args.bond_range
        entry["bonds_physical"] = bool(
            low <= entry["bond_ratio_min"]
            and entry["bond_ratio_max"] <= high
            and entry["closest_non_bonded_over_radii"] > 0.75
        )
        summary[ensemble] = entry

    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.run}: {len(start)} atoms, forces vs finite differences (float64): "
        f"max error {summary['force_fd_max_error_eV_A']:.2e} eV/A"
    )
    print(
        f"{'run':<10}{'ps':>6}{'steps/s':>9}{'drift meV/atom/ps':>19}{'max T K':>9}"
        f"{'mean T K':>10}{'bond ratio':>14}{'bonds physical':>16}"
    )
    for ensemble in ("nve", "langevin"):
        if ensemble in summary:
            e = summary[ensemble]
            print(
                f"{ensemble:<10}{e['ps']:>6g}{e['steps_per_second']:>9.1f}"
                f"{e['drift_meV_per_atom_ps']:>19.4f}{e['max_temperature_K']:>9.0f}"
                f"{e['mean_temperature_K']:>10.0f}"
                f"{e['bond_ratio_min']:>7.2f}-{e['bond_ratio_max']:<6.2f}"
                f"{str(e['bonds_physical']):>16}"
            )
    return summary


if __name__ == "__main__":
    main()
