"""Reading molecular trajectories from local files, and checking them.

:func:`read_trajectory` reads

==========  ======================================  ==========================================
format      files                                   units in the file
==========  ======================================  ==========================================
extxyz      ``.xyz`` / ``.extxyz`` (through         as written (ASE convention: Å, eV, eV/Å)
            :func:`ase.io.read`), ``.traj``
rmd17       revised MD17 ``.npz``: ``nuclear_       kcal/mol and kcal/mol/Å (converted)
            charges``, ``coords``, ``energies``,
            ``forces``
md17        original MD17 / sGDML ``.npz``: ``z``,  kcal/mol and kcal/mol/Å unless the file
            ``R``, ``E`` (``[n]`` or ``[n, 1]``),   says otherwise in ``e_unit`` / ``r_unit``
            ``F``                                   (converted)
==========  ======================================  ==========================================

Whatever the source, every returned :class:`ase.Atoms` holds its labels the same way:

* ``atoms.info["energy"]``: the energy in eV (a Python ``float``);
* ``atoms.arrays["forces"]``: the forces in eV/Å, ``[n_atoms, 3]`` float64;
* no calculator (``atoms.calc is None``). Labels kept in ``info`` / ``arrays`` survive
  ``atoms.copy()``, slicing and editing the positions, where a ``SinglePointCalculator`` would be
  dropped by ``copy()`` or raise once the positions change. Other calculator results of an extxyz
  frame (``stress``, ``charges``, ...) move to ``info`` (per frame) or ``arrays`` (per atom)
  under their own names.

Positions are in Å. Nothing is downloaded: a missing file gets a message saying where to put it
and how to generate an equivalent trajectory (``tfn data md NAME --out FILE``).

Every frame is checked (:func:`check_trajectory`): finite positions, no two atoms closer than
``min_distance`` (0.1 Å), finite energies and forces of the right shape; a failure names the
file, the frame and the atoms.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "rmd17_h2.npz"
    >>> np.savez(path, nuclear_charges=[1, 1], coords=[[[0, 0, 0], [0.74, 0, 0]]],
    ...          energies=[-1.0], forces=[[[1.0, 0, 0], [-1.0, 0, 0]]])
    >>> [h2] = read_trajectory(path)
    >>> round(h2.info["energy"], 6), round(float(h2.arrays["forces"][0, 0]), 6)  # eV, eV/Å
    (-0.043364, 0.043364)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KCAL_PER_MOL",
    "TRAJECTORY_FORMATS",
    "check_trajectory",
    "read_trajectory",
    "trajectory_format",
]

#: 1 kcal/mol in eV, with ASE's constants (``ase.units.kcal / ase.units.mol``).
KCAL_PER_MOL = 0.04336410390059322

#: The formats :func:`read_trajectory` understands.
TRAJECTORY_FORMATS = ("extxyz", "traj", "rmd17", "md17")

_ASE_EXTENSIONS = {".xyz": "extxyz", ".extxyz": "extxyz", ".traj": "traj"}
_RMD17_KEYS = ("nuclear_charges", "coords", "energies", "forces")
_MD17_KEYS = ("z", "R", "E", "F")
_LABELS = ("energy", "forces")
# sGDML-format files may name their units; MD17 itself is kcal/mol and Å.
_ENERGY_UNITS_EV = {
    "kcal/mol": KCAL_PER_MOL,
    "ev": 1.0,
    "mev": 1e-3,
    "ha": 27.211386024367243,
    "hartree": 27.211386024367243,
    "eh": 27.211386024367243,
    "au": 27.211386024367243,
    "kj/mol": KCAL_PER_MOL / 4.184,
}
_LENGTH_UNITS_ANGSTROM = {
    "ang": 1.0,
    "angstrom": 1.0,
    "a": 1.0,
    "bohr": 0.5291772105638411,
    "au": 0.5291772105638411,
}


def _import_ase():
    try:
        import ase
        import ase.io
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading trajectories needs ASE: pip install 'tfn[chem]' (or 'tfn[md]')"
        ) from e
    return ase


def _missing_file_message(path: Path) -> str:
    from tfn.datasets.md import MD17_SMILES, normalize_molecule_name

    stem = path.stem.lower()
    name = next(
        (n for n in sorted(MD17_SMILES, key=len, reverse=True) if n in stem.replace("-", "_")),
        None,
    )
    target = path if path.suffix.lower() in (".xyz", ".extxyz") else path.with_suffix(".extxyz")
    generate = f"tfn data md {normalize_molecule_name(name) if name else 'NAME_OR_SMILES'} "
    generate += f"--frames 1000 --temperature 500 --seed 0 --out {target}"
    return (
        f"{path} does not exist, and tfn downloads nothing. Either put the file there (the "
        "original MD17 npz files, md17_<molecule>.npz, are distributed by the sGDML project at "
        "quantum-machine.org/gdml; the revised rMD17 npz files, rmd17_<molecule>.npz, on "
        "figshare, doi 10.6084/m9.figshare.12672038), or generate an MD17-style trajectory with "
        f"GFN2-xTB here: {generate}"
    )


def trajectory_format(path: str | os.PathLike) -> str:
    """The format of ``path``, one of :data:`TRAJECTORY_FORMATS`, from its extension (and, for
    ``.npz``, its keys).

    Raises ``FileNotFoundError`` (saying where to get or how to generate the file) when it does
    not exist, ``ValueError`` for an extension or an npz layout it does not know.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_file_message(path))
    suffix = path.suffix.lower()
    if suffix in _ASE_EXTENSIONS:
        return _ASE_EXTENSIONS[suffix]
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
        if set(_RMD17_KEYS) <= keys:
            return "rmd17"
        if set(_MD17_KEYS) <= keys:
            return "md17"
        raise ValueError(
            f"{path}: an npz file with keys {sorted(keys)}; expected the revised MD17 keys "
            f"{list(_RMD17_KEYS)} or the original MD17 keys {list(_MD17_KEYS)}"
        )
    raise ValueError(
        f"{path}: unknown extension {path.suffix!r}; read_trajectory reads .xyz / .extxyz "
        "(extended XYZ), .traj (ASE trajectory) and .npz (MD17, revised MD17)"
    )


def read_trajectory(
    path: str | os.PathLike,
    index: int | slice | str | Sequence[int] = ":",
    *,
    require: Sequence[str] = _LABELS,
    energy_key: str = "energy",
    forces_key: str = "forces",
    format: str | None = None,
    validate: bool = True,
    min_distance: float = 0.1,
) -> list:
    """Frames of a local trajectory file as a list of :class:`ase.Atoms` (see the module
    docstring for the formats, units and the ``info["energy"]`` / ``arrays["forces"]``
    convention).

    Args:
        path: an ``.xyz`` / ``.extxyz`` / ``.traj`` / ``.npz`` file.
        index: frames to read: ``":"`` (all), an ASE-style string (``"::10"``, ``"-100:"``), a
            ``slice``, an ``int`` (a list of one frame is returned) or a sequence of ints.
        require: labels every frame must carry, among ``"energy"`` and ``"forces"``; a frame
            without one is an error naming the file and the frame. ``require=()`` reads
            unlabelled frames (the labels are then set where present).
        energy_key, forces_key: where an extxyz file keeps the labels, looked up first among the
            calculator results ASE reads back (``energy=`` and ``forces`` are ASE's standard
            keys), then in ``info`` / ``arrays`` (for example ``energy_key="REF_energy"``).
        format: one of :data:`TRAJECTORY_FORMATS` to bypass detection.
        validate: run :func:`check_trajectory` (positions, distances, labels).
        min_distance: two atoms closer than this (Å) are an error.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from ase import Atoms
        >>> from ase.calculators.singlepoint import SinglePointCalculator
        >>> import ase.io
        >>> path = Path(tempfile.mkdtemp()) / "h2.extxyz"
        >>> h2 = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
        >>> h2.calc = SinglePointCalculator(h2, energy=-31.7, forces=[[0.5, 0, 0], [-0.5, 0, 0]])
        >>> ase.io.write(path, h2)
        >>> [frame] = read_trajectory(path)
        >>> frame.info["energy"], frame.arrays["forces"][0].tolist(), frame.calc is None
        (-31.7, [0.5, 0.0, 0.0], True)
    """
    _import_ase()
    path = Path(path)
    unknown = [label for label in require if label not in _LABELS]
    if unknown:
        raise ValueError(f"require must name labels among {_LABELS}, got {list(require)}")
    if not min_distance >= 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")
    if format is None:
        format = trajectory_format(path)
    elif format not in TRAJECTORY_FORMATS:
        raise ValueError(f"format must be one of {TRAJECTORY_FORMATS}, got {format!r}")
    elif not path.is_file():
        raise FileNotFoundError(_missing_file_message(path))

    if format in ("extxyz", "traj"):
        frames, frame_ids = _read_ase(path, index, format, energy_key, forces_key)
    else:
        frames, frame_ids = _read_npz(path, index, format, validate, min_distance)
        return frames  # npz frames always carry both labels, checked in _read_npz
    _check_required(frames, require, str(path), frame_ids, energy_key, forces_key)
    if validate:
        check_trajectory(frames, source=str(path), min_distance=min_distance, frame_ids=frame_ids)
    return frames


# ----------------------------------------------------------------------------- index


def _frame_selection(index: Any, n: int | None) -> np.ndarray | slice | None:
    """With ``n`` unknown: ``index`` as a slice with non-negative bounds when it is one (so that
    ASE reads only those frames), else ``None``. With ``n`` known: the frame numbers."""
    if isinstance(index, str):
        from ase.io.formats import string2index

        index = string2index(index)
    if isinstance(index, (int, np.integer)):
        index = int(index)
        if n is None:
            return slice(index, index + 1, 1) if index >= 0 else None
        if not -n <= index < n:
            raise IndexError(f"frame {index} out of range for {n} frames")
        return np.array([index % n])
    if isinstance(index, slice):
        start, stop, step = index.start, index.stop, index.step
        if n is not None:
            return np.arange(n)[index]
        if (start is None or start >= 0) and (stop is None or stop >= 0) and (step or 1) > 0:
            return slice(start or 0, stop, step or 1)
        return None
    ids = np.asarray(index)
    if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
        raise TypeError(
            f"index must be an int, a slice, an ASE index string or a sequence of ints, got {index!r}"
        )
    if n is None:
        return None
    if ids.size and (ids.max() >= n or ids.min() < -n):
        raise IndexError(f"frame indices out of range for {n} frames: {ids.tolist()[:10]}")
    return np.where(ids < 0, ids + n, ids).astype(np.int64)


# ----------------------------------------------------------------------------- ASE files


def _read_ase(path: Path, index, format: str, energy_key: str, forces_key: str):
    import ase.io
    from ase.io.extxyz import XYZError

    def read(selection):
        try:
            return ase.io.read(path, index=selection, format=format)
        except (XYZError, ValueError, IndexError, KeyError, StopIteration, RuntimeError) as e:
            what = "an extended XYZ" if format == "extxyz" else "an ASE trajectory"
            raise ValueError(f"{path}: could not be read as {what} file: {e}") from e

    selection = _frame_selection(index, None)
    if selection is not None:
        frames = read(selection)
        frame_ids = selection.start + selection.step * np.arange(len(frames))
        if isinstance(index, (int, np.integer)) and not frames:
            raise IndexError(f"{path}: frame {index} out of range")
    else:  # negative indices or a list of frames: read everything, then pick
        everything = read(slice(None))
        frame_ids = _frame_selection(index, len(everything))
        frames = [everything[i] for i in frame_ids.tolist()]
    for atoms in frames:
        _move_labels(atoms, energy_key, forces_key)
    return frames, frame_ids


def _move_labels(atoms, energy_key: str, forces_key: str) -> None:
    """Calculator results and ``energy_key`` / ``forces_key`` into the ``info["energy"]`` /
    ``arrays["forces"]`` convention; other results into ``info`` / ``arrays``."""
    from ase.outputs import all_outputs

    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    atoms.calc = None
    energy = results.pop(energy_key, None)
    if energy is None and energy_key in atoms.info:
        energy = atoms.info.pop(energy_key)
    forces = results.pop(forces_key, None)
    if forces is None and forces_key in atoms.arrays:
        forces = atoms.arrays.pop(forces_key)
    for key, value in results.items():
        per_atom = key in all_outputs and all_outputs[key].shapespec[:1] == ("natoms",)
        store = atoms.arrays if per_atom else atoms.info
        name = key if key not in store and key not in _LABELS else f"calc_{key}"
        store[name] = value
    if energy is not None:
        atoms.info["energy"] = _as_energy(energy)
    if forces is not None:
        atoms.arrays["forces"] = np.asarray(forces, dtype=np.float64)


def _as_energy(value) -> float:
    array = np.asarray(value, dtype=np.float64)
    if array.size != 1:
        raise ValueError(f"an energy must be one number, got shape {list(array.shape)}")
    return float(array.reshape(()))


# ----------------------------------------------------------------------------- npz files


def _unit(data, key: str, table: dict[str, float], default: str, path: Path) -> float:
    if key not in data.files:
        return table[default]
    name = str(np.asarray(data[key]).reshape(-1)[0]).strip()
    try:
        return table[name.lower()]
    except KeyError:
        raise ValueError(f"{path}: unknown {key} {name!r}; known: {sorted(table)}") from None


def _read_npz(path: Path, index, format: str, validate: bool, min_distance: float):
    from ase import Atoms

    keys = _RMD17_KEYS if format == "rmd17" else _MD17_KEYS
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(
                f"{path}: a {format} npz file needs keys {list(keys)}; missing {missing} "
                f"(keys present: {sorted(data.files)})"
            )
        numbers, positions, energies, forces = (np.asarray(data[k]) for k in keys)
        if format == "md17":
            energy_unit = _unit(data, "e_unit", _ENERGY_UNITS_EV, "kcal/mol", path)
            length_unit = _unit(data, "r_unit", _LENGTH_UNITS_ANGSTROM, "ang", path)
        else:
            energy_unit, length_unit = KCAL_PER_MOL, 1.0
    z_key, r_key, e_key, f_key = keys
    numbers = numbers.reshape(-1)
    if not np.issubdtype(numbers.dtype, np.integer) and not np.all(numbers == np.round(numbers)):
        raise ValueError(f"{path}: {z_key} must hold atomic numbers, got {numbers[:10]}")
    numbers = numbers.astype(np.int64)
    n_atoms = len(numbers)
    if positions.ndim != 3 or positions.shape[1:] != (n_atoms, 3):
        raise ValueError(
            f"{path}: {r_key} must have shape [frames, {n_atoms}, 3] ({n_atoms} atoms in "
            f"{z_key}), got {list(positions.shape)}"
        )
    n = len(positions)
    if energies.shape not in ((n,), (n, 1)):
        raise ValueError(
            f"{path}: {e_key} must have shape [{n}] or [{n}, 1], got {list(energies.shape)}"
        )
    if forces.shape != positions.shape:
        raise ValueError(
            f"{path}: {f_key} must have the shape of {r_key} {list(positions.shape)}, got "
            f"{list(forces.shape)}"
        )
    frame_ids = _frame_selection(index, n)
    positions = positions[frame_ids].astype(np.float64) * length_unit
    energies = energies.reshape(n)[frame_ids].astype(np.float64) * energy_unit
    forces = forces[frame_ids].astype(np.float64) * (energy_unit / length_unit)
    if validate:  # on the stacked arrays: much faster than frame by frame
        from ase.data import chemical_symbols

        symbols = [
            chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in numbers
        ]
        _check_arrays(symbols, positions, energies, forces, frame_ids, str(path), min_distance)
    frames = []
    for k in range(len(frame_ids)):
        atoms = Atoms(numbers=numbers, positions=positions[k])
        atoms.info["energy"] = float(energies[k])
        atoms.arrays["forces"] = forces[k]
        frames.append(atoms)
    return frames, frame_ids


# ----------------------------------------------------------------------------- checks


def _check_required(frames, require, source, frame_ids, energy_key="energy", forces_key="forces"):
    for k, atoms in enumerate(frames):
        frame = int(frame_ids[k]) if frame_ids is not None else k
        for label in require:
            present = "energy" in atoms.info if label == "energy" else "forces" in atoms.arrays
            if present:
                continue
            key = energy_key if label == "energy" else forces_key
            found = sorted(set(atoms.info) | set(atoms.arrays) - {"numbers", "positions"})
            raise ValueError(
                f"{source}: frame {frame} has no {label} (looked for the calculator result "
                f"{key!r} and {'info' if label == 'energy' else 'arrays'}[{key!r}]; this frame has "
                f"{found or 'no other fields'}). It is required here (require={tuple(require)}): "
                f"pass {label}_key=... if the file stores it under another name, or require=() "
                "to read unlabelled frames."
            )


def _atom_list(indices: np.ndarray, limit: int = 10) -> str:
    items = indices.tolist()
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(map(str, items[:limit])) + more


def check_trajectory(
    frames: Sequence,
    *,
    source: str = "frames",
    require: Sequence[str] = (),
    min_distance: float = 0.1,
    frame_ids: Sequence[int] | None = None,
) -> None:
    """Raise ``ValueError`` naming ``source``, the frame and the atoms when a frame of
    ``frames`` (a sequence of :class:`ase.Atoms` in the ``info["energy"]`` /
    ``arrays["forces"]`` convention) is unusable: a non-finite position, two atoms closer than
    ``min_distance`` Å (across periodic images for periodic frames), a non-finite energy, forces
    that are non-finite or not ``[n_atoms, 3]``, or a label named in ``require`` missing.
    ``frame_ids`` are the frames' numbers in ``source`` (default ``0, 1, ...``).

    Runs of non-periodic frames of one size (a trajectory) are checked together, in chunks.

    Example:
        >>> from ase import Atoms
        >>> check_trajectory([Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])])
        >>> check_trajectory([Atoms("H2", positions=[[0, 0, 0], [0.01, 0, 0]])], source="h2.xyz")
        Traceback (most recent call last):
        ...
        ValueError: h2.xyz: frame 0: atoms 0 (H) and 1 (H) are 0.01 Å apart (closer than min_distance=0.1 Å): two atoms on top of each other
    """
    if min_distance < 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")
    ids = np.arange(len(frames)) if frame_ids is None else np.asarray(frame_ids)
    _check_required(frames, require, source, ids)
    start = 0
    while start < len(frames):
        first = frames[start]
        n = len(first)
        small = not first.pbc.any() and n <= 256
        stop = start + 1
        if small:
            chunk = max(1, 2_000_000 // max(n * n, 1))
            while (
                stop < len(frames)
                and stop - start < chunk
                and len(frames[stop]) == n
                and not frames[stop].pbc.any()
            ):
                stop += 1
        group = frames[start:stop]
        group_ids = ids[start:stop]
        energies = np.full(len(group), 0.0)
        forces = np.zeros((len(group), n, 3))
        for k, atoms in enumerate(group):
            where = f"{source}: frame {int(group_ids[k])}"
            if "energy" in atoms.info:
                try:
                    energies[k] = _as_energy(atoms.info["energy"])
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{where}: the energy is not a number ({e})") from None
            if "forces" in atoms.arrays:
                f = np.asarray(atoms.arrays["forces"])
                if f.shape != (n, 3):
                    raise ValueError(
                        f"{where}: forces must have shape [{n}, 3], got {list(f.shape)}"
                    )
                forces[k] = f
        positions = np.stack([atoms.positions for atoms in group])
        _check_arrays(
            first.get_chemical_symbols(),
            positions,
            energies,
            forces,
            group_ids,
            source,
            min_distance if small else 0.0,
        )
        if not small and min_distance > 0:
            _check_distances_neighbor_list(first, int(group_ids[0]), source, min_distance)
        start = stop


def _check_arrays(symbols, positions, energies, forces, ids, source, min_distance) -> None:
    """The checks of :func:`check_trajectory` on stacked frames of one molecule:
    ``positions`` and ``forces`` ``[frames, atoms, 3]``, ``energies`` ``[frames]``."""
    bad = ~np.isfinite(positions).all(-1)
    if bad.any():
        k = int(np.flatnonzero(bad.any(-1))[0])
        raise ValueError(
            f"{source}: frame {int(ids[k])}: non-finite (NaN or inf) position of atom(s) "
            f"{_atom_list(np.flatnonzero(bad[k]))}"
        )
    bad = ~np.isfinite(energies)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{source}: frame {int(ids[k])}: the energy is {energies[k]}")
    bad = ~np.isfinite(forces).all(-1)
    if bad.any():
        k = int(np.flatnonzero(bad.any(-1))[0])
        raise ValueError(
            f"{source}: frame {int(ids[k])}: non-finite (NaN or inf) forces on atom(s) "
            f"{_atom_list(np.flatnonzero(bad[k]))}"
        )
    if min_distance <= 0 or positions.shape[1] < 2:
        return
    n = positions.shape[1]
    chunk = max(1, 2_000_000 // (n * n))
    diagonal = np.arange(n)
    for begin in range(0, len(positions), chunk):
        # Squared distances from the Gram matrix of the centred frames (one batched matmul);
        # the few frames it flags are measured exactly before anything is reported.
        x = positions[begin : begin + chunk]
        x = x - x.mean(axis=1, keepdims=True)
        squares = (x * x).sum(-1)
        d2 = squares[:, :, None] + squares[:, None, :] - 2.0 * (x @ x.transpose(0, 2, 1))
        d2[:, diagonal, diagonal] = np.inf
        suspects = np.flatnonzero(d2.min(axis=(1, 2)) < 1.01 * min_distance**2 + 1e-9)
        for k in suspects.tolist():
            exact = np.linalg.norm(x[k][:, None, :] - x[k][None, :, :], axis=-1)
            exact[diagonal, diagonal] = np.inf
            i, j = np.unravel_index(int(np.argmin(exact)), (n, n))
            if exact[i, j] < min_distance:
                _raise_close(
                    symbols, int(ids[begin + k]), i, j, float(exact[i, j]), source, min_distance
                )


def _check_distances_neighbor_list(atoms, frame: int, source: str, min_distance: float) -> None:
    from ase.neighborlist import neighbor_list

    first, second, distance = neighbor_list("ijd", atoms, min_distance, self_interaction=False)
    if len(first):
        k = int(np.argmin(distance))
        symbols = atoms.get_chemical_symbols()
        _raise_close(symbols, frame, first[k], second[k], float(distance[k]), source, min_distance)


def _raise_close(symbols, frame, i, j, distance, source, min_distance):
    i, j = sorted((int(i), int(j)))
    raise ValueError(
        f"{source}: frame {frame}: atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) are "
        f"{distance:.3g} Å apart (closer than min_distance={min_distance} Å): two atoms on top "
        "of each other"
    )
