"""MD17-style molecular-dynamics trajectories computed with GFN2-xTB.

The public MD17 files (DFT trajectories of small molecules at 500 K, one frame every 0.5 fs)
cannot be downloaded here, so :func:`generate_md` makes trajectories of the same kind with a real
quantum-chemistry method, the GFN2-xTB tight-binding model (``tblite``), and writes them as
extended XYZ; :func:`tfn.datasets.io.read_trajectory` reads them back (and reads the MD17 and
revised-MD17 npz files when a user has them).

The recipe, step by step:

1. **Geometry**: an MD17 molecule by name (:data:`MD17_SMILES`) or any SMILES; hydrogens
   added and a 3D conformer embedded by RDKit's ETKDG (v3) with ``randomSeed=seed``. The total
   charge and the number of unpaired electrons come from the SMILES (formal charges, radicals).
2. **Relaxation** with GFN2-xTB (``tblite.ase.TBLite(method="GFN2-xTB")``) and ASE's BFGS to
   ``fmax = 0.01 eV/Å``.
3. **Velocities** from a Maxwell-Boltzmann distribution at ``temperature`` (seeded), with the
   centre-of-mass motion and the rotation removed.
4. **Equilibration**: ``equilibration_steps`` steps of Langevin dynamics (ASE's
   :class:`~ase.md.langevin.Langevin`, friction ``friction_per_fs``, seeded ``rng``) at
   ``temperature``; the centre of mass is held fixed (:class:`~ase.constraints.FixCom`).
5. **Production**: the same Langevin dynamics, ``timestep_fs`` (0.5 fs, as MD17) per step, one
   frame kept every ``stride`` steps.

**Stride.** MD17 keeps every 0.5-fs step, so neighbouring frames are nearly identical
(autocorrelation 0.99 at one step). The default stride of 80 steps (40 fs) is the first lag at
which the bond vibrations have decorrelated: measured at 500 K with GFN2-xTB (docs/md_data.md),
the autocorrelation of the inverse interatomic distances of ethanol and aspirin oscillates
between 0.3 and 0.65 up to 70 steps and reaches its slow plateau of about 0.3 at 80 steps. What
remains decays with the torsions and rotors, below 0.1 after about 0.2 ps (aspirin) to 0.8 ps
(ethanol's methyl and hydroxyl rotors), which no affordable stride removes: 1,000 frames at
stride 80 span 40 ps.

**Output.** Every frame is appended to ``out`` (extended XYZ, through :func:`ase.io.write`) as
soon as it is computed: positions (Å), the energy (eV) and the forces (eV/Å) as calculator
results, so that ASE's standard ``energy=`` / ``forces`` keys are written and
``ase.io.read(out, ":")`` gives them back through ``atoms.get_potential_energy()`` /
``atoms.get_forces()``; :func:`~tfn.datasets.io.read_trajectory` returns them as
``info["energy"]`` / ``arrays["forces"]``. Each frame's ``info`` also holds ``md_step`` (the
production step) and ``time_fs``. The forces are GFN2-xTB's own, not altered by the constraint.

**Reproducibility and resuming.** The same arguments give the same frames bit for bit on the same
machine (one OpenMP thread; several threads may reorder floating-point sums). Every xTB call
starts from the SAD guess rather than the previous step's wavefunction, so each frame's labels are
a function of its geometry alone (20-45% slower than reusing the wavefunction, measured). A small
state file ``<out>.state.json`` (configuration and its hash, positions, momenta, step, the
Langevin random generator's state, the byte length of ``out``) is replaced atomically every
``checkpoint_every`` frames and when the run stops. Running again with the same arguments resumes
where the last run stopped (frames written after the last state are truncated and recomputed,
identically), and asking for more frames extends a finished run; different arguments are refused
(or start afresh with ``overwrite=True``). Ctrl-C (and SIGTERM) write the state of the last
complete frame and truncate a half-written one, so the file is always a valid extxyz. A run
interrupted before its first frame (relaxation, equilibration) restarts from the beginning.

Example (needs ``tfn[md]``; about two CPU minutes for 1,000 ethanol frames)::

    from tfn.datasets.md import generate_md
    from tfn.datasets.io import read_trajectory

    generate_md("ethanol", "ethanol.extxyz", frames=1000)  # resumes if interrupted
    frames = read_trajectory("ethanol.extxyz")  # info["energy"] in eV, arrays["forces"] in eV/Å
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import io
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_EQUILIBRATION_STEPS",
    "DEFAULT_STRIDE",
    "MD17_SMILES",
    "generate_md",
    "normalize_molecule_name",
    "resolve_molecule",
    "state_path",
]

#: The molecules of MD17 (Chmiela et al. 2017) as SMILES; hydrogens are added when embedding.
#: Malonaldehyde is the (Z)-enol tautomer with its intramolecular hydrogen bond, as in MD17.
MD17_SMILES: dict[str, str] = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O/C=C\\C=O",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic_acid": "O=C(O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=c1cc[nH]c(=O)[nH]1",
}

#: Production steps between two kept frames (80 x 0.5 fs = 40 fs; see the module docstring).
DEFAULT_STRIDE = 80
#: Langevin steps at the target temperature before the first frame (1 ps at 0.5 fs).
DEFAULT_EQUILIBRATION_STEPS = 2000

_STATE_VERSION = 1
_METHOD = "GFN2-xTB"
_MAX_RELAX_STEPS = 1000
_EXTXYZ_SUFFIXES = (".xyz", ".extxyz")


def normalize_molecule_name(name: str) -> str:
    """``"Salicylic acid"``, ``"salicylic-acid"`` -> ``"salicylic_acid"`` (keys of
    :data:`MD17_SMILES`).

    Example:
        >>> normalize_molecule_name(" Salicylic acid ")
        'salicylic_acid'
    """
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def _import_md_dependencies():
    try:
        import ase  # noqa: F401
        import rdkit  # noqa: F401
        import tblite.ase  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"generating MD trajectories needs ASE, RDKit, tblite and tqdm ({e.name} is missing): "
            "pip install 'tfn[md]'"
        ) from e


def resolve_molecule(name_or_smiles: str) -> tuple[str, str]:
    """``(label, smiles)`` for an MD17 name (any case, spaces or underscores) or a SMILES
    string; ``ValueError`` when it is neither.

    Example:
        >>> resolve_molecule("Salicylic acid")
        ('salicylic_acid', 'O=C(O)c1ccccc1O')

    A SMILES is checked with RDKit and returned as given (its label is the SMILES itself).
    """
    if not isinstance(name_or_smiles, str) or not name_or_smiles.strip():
        raise ValueError(f"expected an MD17 molecule name or a SMILES, got {name_or_smiles!r}")
    name = normalize_molecule_name(name_or_smiles)
    if name in MD17_SMILES:
        return name, MD17_SMILES[name]
    smiles = name_or_smiles.strip()
    if _parse_smiles(smiles) is None:
        raise ValueError(
            f"{name_or_smiles!r} is neither an MD17 molecule name ({', '.join(MD17_SMILES)}) nor "
            "a valid SMILES"
        )
    return smiles, smiles


def _parse_smiles(smiles: str):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # an invalid SMILES is reported by our own message
    try:
        return Chem.MolFromSmiles(smiles)
    finally:
        RDLogger.EnableLog("rdApp.*")


def state_path(out: str | os.PathLike) -> Path:
    """The state file kept beside ``out``: ``<out>.state.json``."""
    out = Path(out)
    return out.with_name(out.name + ".state.json")


# ----------------------------------------------------------------------------- xTB


_CALCULATOR_CLASS = None


def _calculator_class():
    """``tblite.ase.TBLite`` that starts every SCF from the SAD guess: the labels of a geometry
    then do not depend on the previous steps (by about 1e-5 eV/Å otherwise), so a resumed run
    reproduces an uninterrupted one bit for bit."""
    global _CALCULATOR_CLASS
    if _CALCULATOR_CLASS is None:
        from tblite.ase import TBLite

        class FreshGuessTBLite(TBLite):
            def calculate(self, atoms=None, properties=None, system_changes=None, **kwargs):
                self._res = None  # tblite reuses the last wavefunction as the SCF guess
                super().calculate(atoms, properties, system_changes, **kwargs)

        _CALCULATOR_CLASS = FreshGuessTBLite
    return _CALCULATOR_CLASS


def _make_calculator(charge: int, multiplicity: int):
    return _calculator_class()(
        method=_METHOD, charge=charge, multiplicity=multiplicity, verbosity=0
    )


@contextlib.contextmanager
def _openmp_threads(threads: int | None):
    """Run tblite on ``threads`` OpenMP threads (``None``: leave the setting alone). tblite
    links the system ``libgomp``; its thread count is set through ``omp_set_num_threads`` for
    the duration and restored afterwards (``OMP_NUM_THREADS`` is only read when the library
    loads)."""
    if threads is None:
        yield
        return
    library = None
    for name in ("libgomp.so.1", "libgomp.1.dylib", "libomp.dylib", "libiomp5.so"):
        try:
            library = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if library is None:
        warnings.warn(
            "could not find the OpenMP runtime to pin tblite's threads; set OMP_NUM_THREADS "
            f"={threads} before starting Python",
            RuntimeWarning,
            stacklevel=3,
        )
        yield
        return
    previous = library.omp_get_max_threads()
    library.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        library.omp_set_num_threads(previous)


# ----------------------------------------------------------------------------- the molecule


def _embed(smiles: str, seed: int):
    """Atoms, charge and multiplicity of ``smiles`` with hydrogens, embedded by ETKDG v3."""
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem, Descriptors

    molecule = _parse_smiles(smiles)
    molecule = Chem.AddHs(molecule)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(molecule, params) != 0:
        params.useRandomCoords = True  # the fallback RDKit recommends for awkward molecules
        if AllChem.EmbedMolecule(molecule, params) != 0:
            raise ValueError(f"RDKit could not embed a 3D conformer of {smiles!r} (seed {seed})")
    numbers = [atom.GetAtomicNum() for atom in molecule.GetAtoms()]
    if len(numbers) < 2:
        raise ValueError(f"{smiles!r} has a single atom: there is no molecular dynamics to run")
    positions = molecule.GetConformer().GetPositions()
    charge = Chem.GetFormalCharge(molecule)
    multiplicity = Descriptors.NumRadicalElectrons(molecule) + 1
    return Atoms(numbers=numbers, positions=positions), charge, multiplicity


def _canonical(smiles: str) -> tuple[str, int, int]:
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    molecule = _parse_smiles(smiles)
    return (
        Chem.MolToSmiles(molecule),
        Chem.GetFormalCharge(molecule),
        Descriptors.NumRadicalElectrons(molecule) + 1,
    )


# ----------------------------------------------------------------------------- files


def _write_json_atomic(path: Path, payload: dict) -> None:
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(temporary, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _frame_text(numbers, positions, energy: float, forces, step: int, timestep_fs: float) -> bytes:
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.info["md_step"] = step
    atoms.info["time_fs"] = step * timestep_fs
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="extxyz")
    return buffer.getvalue().encode()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's stop) ends the run like Ctrl-C, through the same clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored():
    """Ctrl-C / SIGTERM held off while the clean-up writes the state."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    versions = {}
    for package in ("tblite", "ase", "rdkit", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return tuple(versions.items())


def _versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers (recorded in the state file)."""
    return dict(_package_versions())


# ----------------------------------------------------------------------------- arguments


def _check_arguments(
    frames,
    temperature,
    seed,
    timestep_fs,
    stride,
    equilibration_steps,
    friction_per_fs,
    relax_fmax,
    checkpoint_every,
    threads,
    out,
):
    def integer(name, value, low):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    def positive(name, value, allow_zero=False):
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
        if not ok:
            raise ValueError(
                f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}"
            )

    integer("frames", frames, 1)
    positive("temperature", temperature)
    integer("seed", seed, 0)
    if seed >= 2**31:
        raise ValueError(
            f"seed must be below 2**31 (RDKit's random seed is a 32-bit int), got {seed}"
        )
    positive("timestep_fs", timestep_fs)
    integer("stride", stride, 1)
    integer("equilibration_steps", equilibration_steps, 0)
    positive("friction_per_fs", friction_per_fs, allow_zero=True)
    positive("relax_fmax", relax_fmax)
    integer("checkpoint_every", checkpoint_every, 1)
    if threads is not None:
        integer("threads", threads, 1)
    if out.suffix.lower() not in _EXTXYZ_SUFFIXES:
        raise ValueError(f"out must be an extended XYZ file (.extxyz or .xyz), got {out}")


def _describe_difference(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(
        f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)
    )


# ----------------------------------------------------------------------------- the run


def generate_md(
    name_or_smiles: str,
    out: str | os.PathLike,
    frames: int,
    temperature: float = 500.0,
    seed: int = 0,
    timestep_fs: float = 0.5,
    stride: int = DEFAULT_STRIDE,
    equilibration_steps: int = DEFAULT_EQUILIBRATION_STEPS,
    progress: bool = True,
    *,
    friction_per_fs: float = 0.01,
    relax_fmax: float = 0.01,
    checkpoint_every: int = 10,
    overwrite: bool = False,
    threads: int | None = 1,
) -> Path:
    """Write (or complete) an MD17-style GFN2-xTB trajectory of ``frames`` frames to ``out``.

    The recipe, the stride, the file conventions and how resuming works are described in the
    module docstring (:mod:`tfn.datasets.md`) and in docs/md_data.md. The arguments map one to
    one to ``tfn data md NAME_OR_SMILES --frames N --temperature K --seed S --out FILE``.

    Args:
        name_or_smiles: an MD17 molecule (``aspirin``, ``benzene``, ``ethanol``,
            ``malonaldehyde``, ``naphthalene``, ``salicylic_acid`` or ``salicylic acid``,
            ``toluene``, ``uracil``) or a SMILES.
        out: the ``.extxyz`` (or ``.xyz``) file; ``<out>.state.json`` is kept beside it.
        frames: frames the file holds when the call returns (a finished run with fewer frames is
            extended).
        temperature: Kelvin, for the initial velocities and the thermostat.
        seed: seeds the conformer, the velocities and the Langevin noise.
        timestep_fs: integration step in fs.
        stride: steps between kept frames.
        equilibration_steps: thermostatted steps before the first frame.
        progress: tqdm progress bars on stderr.
        friction_per_fs: Langevin friction in 1/fs (0.01/fs = 10/ps).
        relax_fmax: force threshold of the initial relaxation, eV/Å.
        checkpoint_every: frames between two writes of the state file.
        overwrite: discard an existing ``out`` (and its state) instead of resuming or refusing.
        threads: OpenMP threads for tblite (``None``: leave the process's setting).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: bad arguments, an unknown molecule, or an ``out`` made with other arguments
            (or not by this function) when ``overwrite`` is false.
        RuntimeError: xTB failed (for example an SCF that does not converge); the frames so far
            are kept and the state names the last one.
    """
    out = Path(out)
    _check_arguments(
        frames,
        temperature,
        seed,
        timestep_fs,
        stride,
        equilibration_steps,
        friction_per_fs,
        relax_fmax,
        checkpoint_every,
        threads,
        out,
    )
    _import_md_dependencies()
    label, smiles = resolve_molecule(name_or_smiles)
    canonical, charge, multiplicity = _canonical(smiles)
    config = {
        "method": _METHOD,
        "smiles": canonical,
        "charge": int(charge),
        "multiplicity": int(multiplicity),
        "temperature_K": float(temperature),
        "seed": int(seed),
        "timestep_fs": float(timestep_fs),
        "stride": int(stride),
        "equilibration_steps": int(equilibration_steps),
        "friction_per_fs": float(friction_per_fs),
        "relax_fmax": float(relax_fmax),
        "scf_guess": "sad",
    }
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    state_file = state_path(out)
    with _openmp_threads(threads):
        if overwrite:
            for path in (out, state_file):
                path.unlink(missing_ok=True)
        state = _load_state(out, state_file, config, config_hash, frames)
        if state is not None and state["frames_done"] == frames:
            return out
        run = _Run(out, state_file, label, config, config_hash, frames, progress, checkpoint_every)
        run.start(state)
        run.produce()
    return out


def _load_state(out: Path, state_file: Path, config, config_hash, frames) -> dict | None:
    """The saved state when ``out`` can be resumed with these arguments, ``None`` for a fresh
    run; ``ValueError`` when ``out`` exists and cannot be continued."""
    if not state_file.exists():
        if out.exists():
            raise ValueError(
                f"{out} exists but has no state file {state_file.name} beside it, so it was not "
                "written by generate_md (or its state was deleted) and cannot be continued; "
                "choose another output, delete it, or pass overwrite=True (--overwrite)"
            )
        return None
    try:
        state = json.loads(state_file.read_text())
        saved_config, saved_hash = state["config"], state["config_hash"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{state_file} is not a generate_md state file ({e}); delete it or pass overwrite=True"
        ) from e
    if saved_hash != config_hash:
        raise ValueError(
            f"{out} was generated with other arguments ({_describe_difference(saved_config, config)}); "
            "rerun with the same arguments to resume it, choose another output, or pass "
            "overwrite=True (--overwrite) to start afresh"
        )
    if state["frames_done"] > frames:
        raise ValueError(
            f"{out} already holds {state['frames_done']} frames, more than the {frames} asked "
            "for; ask for at least that many, read a subset with read_trajectory(path, index=...), "
            "or pass overwrite=True"
        )
    size = out.stat().st_size if out.exists() else -1
    if size < state["xyz_bytes"]:
        raise ValueError(
            f"{out} is shorter ({max(size, 0)} bytes) than its state file says "
            f"({state['xyz_bytes']} bytes for {state['frames_done']} frames): it was modified or "
            "truncated; pass overwrite=True to start afresh"
        )
    if state.get("versions") != _versions():
        warnings.warn(
            f"resuming {out} with other package versions ({state.get('versions')} then, "
            f"{_versions()} now): the continuation is valid but not bit-identical to an "
            "uninterrupted run",
            RuntimeWarning,
            stacklevel=3,
        )
    return state


class _Run:
    """One call of :func:`generate_md`: the atoms, the integrator, the open file and the last
    consistent snapshot (what the state file says after an interruption)."""

    def __init__(self, out, state_file, label, config, config_hash, frames, progress, every):
        self.out, self.state_file, self.label = out, state_file, label
        self.config, self.config_hash = config, config_hash
        self.frames, self.progress, self.checkpoint_every = frames, progress, every
        self.seconds = 0.0
        self.steps_timed = 0

    # -- setup

    def start(self, state: dict | None) -> None:
        from ase import units
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        c = self.config
        if state is None:
            atoms, langevin_rng = self._prepare()
            self.out.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.file = open(self.out, "xb")  # exclusive: another run may have created it
            except FileExistsError:
                raise ValueError(
                    f"{self.out} appeared while equilibrating (another run?)"
                ) from None
            self.atoms, self.rng = atoms, langevin_rng
            self.snapshot = self._snapshot(atoms, langevin_rng, frames_done=0, step=0, xyz_bytes=0)
            try:
                self._write_state(self.snapshot)
            except BaseException:  # no state yet: leave no stray file behind either
                with _signals_ignored():
                    self.file.close()
                    self.out.unlink(missing_ok=True)
                raise
        else:
            atoms = self._atoms(np.array(state["numbers"]), np.array(state["positions"]))
            atoms.set_constraint(FixCom())
            atoms.set_momenta(np.array(state["momenta"]), apply_constraint=False)
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = state["rng"]
            self.file = open(self.out, "r+b")
            self.file.truncate(state["xyz_bytes"])  # frames after the last state: recomputed
            self.file.seek(0, os.SEEK_END)
            self.atoms, self.rng = atoms, rng
            self.snapshot = {k: state[k] for k in ("frames_done", "step", "xyz_bytes")}
            self.snapshot.update(
                positions=atoms.positions.copy(),
                momenta=atoms.get_momenta(),
                rng=rng.bit_generator.state,
            )
            self.seconds = state.get("seconds", 0.0)
            self.steps_timed = state.get("steps_timed", 0)
        self.dynamics = Langevin(
            self.atoms,
            c["timestep_fs"] * units.fs,
            temperature_K=c["temperature_K"],
            friction=c["friction_per_fs"] / units.fs,
            fixcm=False,  # the FixCom constraint holds the centre of mass (ASE's advice)
            rng=self.rng,
        )

    def _atoms(self, numbers, positions):
        from ase import Atoms

        atoms = Atoms(numbers=numbers, positions=positions)
        atoms.calc = _make_calculator(self.config["charge"], self.config["multiplicity"])
        return atoms

    def _prepare(self):
        """Embed, relax, draw velocities and equilibrate; returns the atoms and the Langevin
        random generator (its state continues into production)."""
        from ase import units
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import Stationary, ZeroRotation
        from ase.optimize import BFGS

        c = self.config
        embedded, _, _ = _embed(c["smiles"], c["seed"])
        atoms = self._atoms(embedded.numbers, embedded.positions)
        optimizer = BFGS(atoms, logfile=None)
        with self._calculation_errors("relaxing the embedded conformer"):
            converged = optimizer.run(fmax=c["relax_fmax"], steps=_MAX_RELAX_STEPS)
        if not converged:
            warnings.warn(
                f"{self.label}: the GFN2-xTB relaxation did not reach fmax={c['relax_fmax']} eV/Å "
                f"in {_MAX_RELAX_STEPS} BFGS steps; equilibrating from where it stopped",
                RuntimeWarning,
                stacklevel=4,
            )
        velocities_seed, langevin_seed = np.random.SeedSequence(c["seed"]).spawn(2)
        _thermalize(atoms, c["temperature_K"], np.random.default_rng(velocities_seed))
        Stationary(atoms)
        ZeroRotation(atoms)
        atoms.set_constraint(FixCom())
        langevin_rng = np.random.default_rng(langevin_seed)
        dynamics = Langevin(
            atoms,
            c["timestep_fs"] * units.fs,
            temperature_K=c["temperature_K"],
            friction=c["friction_per_fs"] / units.fs,
            fixcm=False,
            rng=langevin_rng,
        )
        bar = self._bar(c["equilibration_steps"], 0, f"{self.label}: equilibrate", "step")
        with bar, self._calculation_errors("equilibrating"):
            for _ in range(c["equilibration_steps"]):
                dynamics.step()
                bar.update()
        return atoms, langevin_rng

    def _bar(self, total, initial, description, unit):
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=description,
            unit=unit,
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
            leave=True,
        )

    @contextlib.contextmanager
    def _calculation_errors(self, doing: str):
        from ase.calculators.calculator import CalculationFailed, InputError

        try:
            yield
        except (CalculationFailed, InputError) as e:
            raise RuntimeError(
                f"{self.label}: GFN2-xTB failed while {doing} ({e}); a lower temperature or a "
                "shorter timestep may help"
            ) from e

    # -- production

    def _snapshot(self, atoms, rng, frames_done, step, xyz_bytes) -> dict:
        return {
            "frames_done": frames_done,
            "step": step,
            "xyz_bytes": xyz_bytes,
            "positions": atoms.positions.copy(),
            "momenta": atoms.get_momenta(),
            "rng": rng.bit_generator.state,
        }

    def _write_state(self, snapshot: dict) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())  # the state never points past what is on disk
        payload = {
            "tfn_md_state": _STATE_VERSION,
            "label": self.label,
            "config": self.config,
            "config_hash": self.config_hash,
            "versions": _versions(),
            "numbers": self.atoms.numbers.tolist(),
            "frames_done": snapshot["frames_done"],
            "step": snapshot["step"],
            "xyz_bytes": snapshot["xyz_bytes"],
            "positions": snapshot["positions"].tolist(),
            "momenta": snapshot["momenta"].tolist(),
            "rng": snapshot["rng"],
            "seconds": self.seconds,
            "steps_timed": self.steps_timed,
        }
        _write_json_atomic(self.state_file, payload)

    def produce(self) -> None:
        c = self.config
        stride, timestep = c["stride"], c["timestep_fs"]
        bar = self._bar(self.frames, self.snapshot["frames_done"], self.label, "frame")
        try:
            with bar, _sigterm_as_interrupt():
                while self.snapshot["frames_done"] < self.frames:
                    begin = time.perf_counter()
                    with self._calculation_errors(f"at production step {self.snapshot['step']}"):
                        for _ in range(stride):
                            self.dynamics.step()
                    self.seconds += time.perf_counter() - begin
                    self.steps_timed += stride
                    step = self.snapshot["step"] + stride
                    energy = self.atoms.get_potential_energy()
                    forces = self.atoms.get_forces(apply_constraint=False)
                    text = _frame_text(
                        self.atoms.numbers, self.atoms.positions, energy, forces, step, timestep
                    )
                    self.file.write(text)
                    self.file.flush()
                    frames_done = self.snapshot["frames_done"] + 1
                    self.snapshot = self._snapshot(
                        self.atoms,
                        self.rng,
                        frames_done,
                        step,
                        self.snapshot["xyz_bytes"] + len(text),
                    )
                    if frames_done % self.checkpoint_every == 0 or frames_done == self.frames:
                        self._write_state(self.snapshot)
                    bar.update()
                    bar.set_postfix(
                        T=f"{self.atoms.get_temperature():.0f}K",
                        ms_per_step=f"{1e3 * self.seconds / self.steps_timed:.2f}",
                        refresh=False,
                    )
        except BaseException:
            # Ctrl-C, SIGTERM or an error: keep exactly the frames of the last snapshot.
            with _signals_ignored():
                self.file.truncate(self.snapshot["xyz_bytes"])
                self._write_state(self.snapshot)
            raise
        finally:
            self.file.close()


def _thermalize(atoms, temperature_K: float, rng) -> None:
    """Maxwell-Boltzmann momenta (ASE >= 3.29 renamed the function)."""
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
