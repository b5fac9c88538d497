"""Molecular dynamics with a tfn model, through ASE (``tfn md``; ``pip install 'tfn[chem]'``).

:func:`run_md` drives ASE's integrators (velocity Verlet for NVE, Langevin for NVT) with a
:class:`~tfn.interop.ase.TFNCalculator`, writes the trajectory (extended XYZ or ASE ``.traj``)
and a CSV log of time, potential, kinetic and total energy and temperature, shows a progress bar,
and returns the measured speed and the drift of the total energy.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MDResult", "run_md", "read_start"]


@dataclass
class MDResult:
    """What a run produced and measured."""

    trajectory: Path
    log: Path
    steps: int
    seconds: float
    steps_per_second: float
    #: slope of the total energy per atom, meV/atom/ps (least-squares fit over the run)
    drift_mev_per_atom_ps: float
    max_temperature: float
    min_distance: float


def read_start(path: str | Path, index: int = -1) -> Any:
    """The starting structure: any file ASE reads (``xyz``, ``extxyz``, ``traj``, CIF, POSCAR)."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no structure file {path} (give --atoms FILE: xyz, extxyz, traj, ...)"
        )
    try:
        return ase.io.read(path, index)
    except Exception as error:
        raise ValueError(f"cannot read a structure from {path}: {error}") from None


def _min_distance(atoms: Any) -> float:
    if len(atoms) < 2:
        return math.inf
    d = atoms.get_all_distances(mic=bool(np.any(atoms.pbc)))
    return float(d[np.triu_indices(len(atoms), 1)].min())


def run_md(
    model_or_run: Any,
    atoms: Any,
    *,
    ensemble: str = "nve",
    temperature: float = 300.0,
    timestep_fs: float = 0.5,
    steps: int = 1000,
    out: str | Path = "md.extxyz",
    log: str | Path | None = None,
    interval: int = 10,
    friction_per_fs: float = 0.01,
    seed: int = 0,
    init_temperature: float | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
) -> MDResult:
    """Run molecular dynamics of ``atoms`` with a tfn energy model.

    Args:
        model_or_run: an :class:`~tfn.models.EnergyModel`, a loaded run, or a run folder.
        atoms: the starting ``ase.Atoms`` (copied; velocities kept if it has them, else drawn).
        ensemble: ``"nve"`` (velocity Verlet) or ``"langevin"`` (NVT).
        temperature: K: the thermostat (Langevin) and the initial Maxwell-Boltzmann velocities.
        timestep_fs: integration step (fs).
        steps: number of steps.
        out: trajectory file (``.extxyz``/``.xyz`` or ``.traj``), one frame every ``interval``.
        log: CSV log (default: ``out`` with ``.log.csv``), one row every ``interval``.
        friction_per_fs: Langevin friction (1/fs).
        seed: random velocities and Langevin noise.
        init_temperature: temperature of the initial velocities (default ``temperature``; 0
            starts at rest).
        device, dtype: where and in which precision the model runs.
        progress: a tqdm progress bar on stderr.
    """
    import ase.io
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    from tfn.interop.ase import TFNCalculator

    if ensemble not in ("nve", "langevin"):
        raise ValueError(f"run_md: ensemble must be 'nve' or 'langevin', got {ensemble!r}")
    for name, value in (("steps", steps), ("interval", interval)):
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"run_md: {name} must be a positive integer, got {value!r}")
    if not timestep_fs > 0:
        raise ValueError(f"run_md: timestep_fs must be > 0, got {timestep_fs}")
    if not temperature >= 0:
        raise ValueError(f"run_md: temperature must be >= 0 K, got {temperature}")
    atoms = atoms.copy()
    if not np.all(np.isfinite(atoms.positions)):
        raise ValueError("run_md: the starting positions contain NaN or infinite values")
    atoms.calc = TFNCalculator(model_or_run, device=device, dtype=dtype)
    rng = np.random.default_rng(seed)
    t0_kelvin = temperature if init_temperature is None else init_temperature
    if not atoms.has("momenta") or not np.any(atoms.get_momenta()):
        if t0_kelvin > 0:
            MaxwellBoltzmannDistribution(atoms, temperature_K=t0_kelvin, rng=rng)
            Stationary(atoms)
            if not np.any(atoms.pbc):
                with np.errstate(invalid="ignore", divide="ignore"):  # planar molecules
                    ZeroRotation(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    else:
        from ase.constraints import FixCom

        # ASE's own fixcm=True mis-samples small systems (ethanol, 9 atoms, settled at 650 K
        # for 500 K); FixCom with fixcm=False, as ASE advises, samples the right distribution.
        if not any(isinstance(c, FixCom) for c in atoms.constraints):
            atoms.set_constraint([*atoms.constraints, FixCom()])
        dyn = Langevin(
            atoms,
            dt,
            temperature_K=temperature,
            friction=friction_per_fs / units.fs,
            rng=rng,
            fixcm=False,
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = Path(log) if log is not None else out.with_suffix(".log.csv")
    if out.exists():
        out.unlink()
    natoms = len(atoms)
    times, totals = [], []
    state = {"max_T": 0.0, "min_d": math.inf}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=steps, unit="step", desc=f"md {ensemble}", file=sys.stderr, dynamic_ncols=True
        )

    with open(log, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"])

        def record() -> None:
            step = dyn.nsteps
            epot = atoms.get_potential_energy()
            ekin = atoms.get_kinetic_energy()
            temp = atoms.get_temperature()
            etot = epot + ekin
            if not math.isfinite(etot):
                raise FloatingPointError(f"run_md: the energy became {etot} at step {step}")
            writer.writerow([step, round(step * timestep_fs, 6), epot, ekin, etot, temp])
            handle.flush()
            ase.io.write(out, atoms, append=True)
            times.append(step * timestep_fs)
            totals.append(etot)
            state["max_T"] = max(state["max_T"], temp)
            state["min_d"] = min(state["min_d"], _min_distance(atoms))
            if bar is not None:
                bar.set_postfix(T=f"{temp:.0f}K", Etot=f"{etot:.4f}")

        record()
        start = time.perf_counter()
        done = 0
        try:
            while done < steps:
                chunk = min(interval, steps - done)
                dyn.run(chunk)
                done += chunk
                if bar is not None:
                    bar.update(chunk)
                record()
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
    drift = 0.0
    if len(times) > 2:
        slope = np.polyfit(np.asarray(times) / 1000.0, np.asarray(totals), 1)[0]  # eV/ps
        drift = float(slope * 1000.0 / natoms)
    return MDResult(
        trajectory=out,
        log=log,
        steps=steps,
        seconds=seconds,
        steps_per_second=steps / seconds if seconds > 0 else math.inf,
        drift_mev_per_atom_ps=drift,
        max_temperature=state["max_T"],
        min_distance=state["min_d"],
    )
