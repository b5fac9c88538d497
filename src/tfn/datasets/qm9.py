"""QM9: 130,831 small organic molecules (C, H, O, N, F; up to 9 heavy atoms) with B3LYP properties.

The data come from ``qm9pack`` (MIT, by QM9's author R. Ramakrishnan), which ships the whole data
set as CSV inside the package; ``pip install 'tfn[chem]'`` installs it. The package is never
imported (its ``__init__`` needs pandas and ``pkg_resources``): its folder is located with
``importlib.util.find_spec``. The first call parses every molecule (under a minute) and writes a
compact binary cache (``$TFN_CACHE_DIR`` or ``~/.cache/tfn``); later calls read the cache in
about a second.

:func:`load_qm9` returns :class:`ase.Atoms`, one per molecule, with ``arrays["mulliken_charges"]``
(e) and in ``info``:

* ``gdb_index``: QM9's own 1-based number (``dsgdb9nsd_000001`` is 1);
* ``U0`` (0 K), ``U``, ``H``, ``G`` (298.15 K), ``homo``, ``lumo``, ``gap``, ``zpve``: eV
  (from Hartree with CODATA 2014, ``ase.units.Hartree``);
* ``mu`` (D, norm of the dipole), ``alpha`` (bohr^3, isotropic), ``r2`` (bohr^2), ``cv``
  (cal/(mol K)), ``A``, ``B``, ``C`` (GHz, rotational constants);
* ``frequencies`` (cm^-1, ``3n - 6`` or ``3n - 5``), ``smiles``, ``inchi``;
* ``polarizability``: ``[3, 3]`` bohr^3 **in the frame of the positions**;
  ``polarizability_frame``: ``[3, 3]`` rotation, rows = the axes QM9 gave the tensor in, in
  position coordinates (``polarizability = frame.T @ qm9_tensor @ frame``);
  ``polarizability_frame_ok``: ``False`` where that frame is known unreliable;
  ``polarizability_signs_ok``: whether the geometry sets the axis signs where they matter.

QM9 gives the tensor in the program's standard orientation, not in the frame of its coordinates;
:mod:`tfn.datasets._qm9_frames` rebuilds that orientation from the positions and checks it
(``docs/qm9.md`` has the investigation and the measured numbers). The signs of the axes are the
doubtful part: a symmetric tensor under an axis-sign flip keeps its diagonal and changes the
signs of some off-diagonal entries, so :func:`min_over_sign_flips_loss` compares a prediction
with the target under the four proper axis-sign flips (:func:`polarizability_sign_flips`) of the
frame and takes the smallest error.

Splits: :func:`qm9_split` (fixed and seeded, the same on every machine), :func:`qm9_by_num_atoms`
(molecules of a given size, e.g. for the missing-point task).

``python -m tfn.datasets.qm9 --check-frames`` prints the frame statistics over all molecules;
``python -m tfn.datasets.qm9 --info`` the cache, the timings and the parse report.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_GDB_INDEX",
    "NUM_MOLECULES",
    "QM9_PROPERTIES",
    "load_qm9",
    "min_over_sign_flips_loss",
    "polarizability_frame",
    "polarizability_sign_flips",
    "qm9_by_num_atoms",
    "qm9_cache_path",
    "qm9_split",
]

NUM_MOLECULES = 130_831
"""Molecules in QM9 (of the 133,885 GDB-9 numbers, 3,054 failed QM9's consistency check)."""
MAX_GDB_INDEX = 133_885

QM9_PROPERTIES: dict[str, str] = {
    "A": "GHz",
    "B": "GHz",
    "C": "GHz",
    "mu": "D",
    "alpha": "bohr^3",
    "homo": "eV",
    "lumo": "eV",
    "gap": "eV",
    "r2": "bohr^2",
    "zpve": "eV",
    "U0": "eV",
    "U": "eV",
    "H": "eV",
    "G": "eV",
    "cv": "cal/(mol K)",
}
"""The 15 scalar properties (the 12 usual ones plus the rotational constants) and their units."""

_PROPERTY_COLUMNS = {
    "A": "RotA_GHz",
    "B": "RotB_GHz",
    "C": "RotC_GHz",
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "gap": "HOMO_LUMO_gap_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "U0": "InternalEnergy_0K_au",
    "U": "InternalEnergy_298K_au",
    "H": "Enthalphy_298K_au",  # sic, qm9pack's spelling
    "G": "GibbsFreeEnergy_298K_au",
    "cv": "Heatcapacity_Cv_cal_mol_K",
}
# In Hartree in the CSV; converted to eV at load time (the cache keeps the CSV's numbers).
_HARTREE_PROPERTIES = ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G")
_PROPERTY_NAMES = tuple(QM9_PROPERTIES)
_SOURCE_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_POLARIZABILITY_FILE = "qm9_polarizability.csv"
_POLARIZABILITY_COLUMNS = ("A_xx", "A_xy", "A_yy", "A_xz", "A_yz", "A_zz")
_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_CHEM_HINT = "pip install 'tfn[chem]'"

# Bump when the cache layout, the parser or the frame algorithm changes: old caches are rebuilt.
_CACHE_FORMAT = 2
_MAGIC = b"TFNQM9C\n"
_ALIGN = 64


class _CacheError(Exception):
    """The cache file is missing, corrupt or from another version (the message says which)."""


# --------------------------------------------------------------------------------------------
# Locating the source and the cache
# --------------------------------------------------------------------------------------------


def _source_dir() -> Path:
    """qm9pack's data folder, found without importing qm9pack (whose import needs pandas)."""
    spec = importlib.util.find_spec("qm9pack")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "data"
        if (folder / _SOURCE_FILES[0]).is_file():
            return folder
    if spec is None:
        raise ImportError(f"QM9 needs the qm9pack package, which is not installed: {_CHEM_HINT}")
    raise ImportError(
        f"qm9pack is installed at {locations} but its data files ({', '.join(_SOURCE_FILES)}) "
        f"are missing; reinstall it: {_CHEM_HINT}"
    )


def _source_fingerprint(folder: Path) -> dict[str, Any]:
    files = {}
    for name in (*_SOURCE_FILES, _POLARIZABILITY_FILE):
        path = folder / name
        if not path.is_file():
            raise ImportError(f"QM9 source file {path} is missing; reinstall qm9pack: {_CHEM_HINT}")
        files[name] = path.stat().st_size
    return {"files": files}


def _cache_dir() -> Path:
    env = os.environ.get("TFN_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tfn"


def qm9_cache_path() -> Path:
    """Where the QM9 cache lives: ``$TFN_CACHE_DIR/qm9_v{format}.bin`` (default ``~/.cache/tfn``).

    Example:
        >>> qm9_cache_path().name
        'qm9_v2.bin'
    """
    return _cache_dir() / f"qm9_v{_CACHE_FORMAT}.bin"


# --------------------------------------------------------------------------------------------
# Parsing the CSV files
# --------------------------------------------------------------------------------------------

_DROP = str.maketrans("", "", "[]' ")


def _floats(text: str) -> np.ndarray:
    # Lists such as "[[0.5995394918,0.,1.],...]": bare "0." and "1." tokens (which a JSON parser
    # rejects) are valid Python floats.
    text = text.translate(_DROP)
    if not text:
        return np.zeros(0)
    values = np.array(text.split(","), dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("non-finite value")
    return values


def _count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    return max(lines - 1, 0)


def _gdb_number(file_name: str) -> int:
    # "dsgdb9nsd_000001.xyz" -> 1
    stem = file_name.strip().removesuffix(".xyz")
    prefix, _, number = stem.rpartition("_")
    if prefix != "dsgdb9nsd" or not number.isdigit():
        raise ValueError(f"unexpected XYZ_file {file_name!r}")
    return int(number)


def _read_polarizabilities(path: Path) -> dict[int, np.ndarray]:
    import csv

    tensors: dict[int, np.ndarray] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        missing = [c for c in ("XYZ_file", *_POLARIZABILITY_COLUMNS) if c not in header]
        if missing:
            raise ValueError(f"{path.name}: columns {missing} missing (header: {header})")
        col = [header.index(c) for c in ("XYZ_file", *_POLARIZABILITY_COLUMNS)]
        for row in reader:
            try:
                xx, xy, yy, xz, yz, zz = (float(row[c]) for c in col[1:])
                tensors[_gdb_number(row[col[0]])] = np.array(
                    [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]
                )
            except (ValueError, IndexError):
                continue  # reported as a failure of that molecule (no tensor)
    return tensors


@dataclass
class _Table:
    """All molecules as flat arrays (atoms concatenated; offsets delimit molecules)."""

    gdb_index: np.ndarray  # [M] int32, 1-based, ascending
    atom_offset: np.ndarray  # [M + 1] int64
    numbers: np.ndarray  # [A] uint8
    positions: np.ndarray  # [A, 3] float64, Angstrom
    mulliken: np.ndarray  # [A] float64, e
    properties: np.ndarray  # [M, 15] float64, CSV units (Hartree for energies)
    polarizability: np.ndarray  # [M, 3, 3] float64, bohr^3, QM9's (standard) frame
    frequency_offset: np.ndarray  # [M + 1] int64
    frequencies: np.ndarray  # [F] float64, cm^-1
    text_offset: np.ndarray  # [2 M + 1] int64 into text: smiles_0, inchi_0, smiles_1, ...
    text: np.ndarray  # [T] uint8, utf-8
    frame: np.ndarray  # [M, 3, 3] float64, rows = standard axes in position coordinates
    frame_ok: np.ndarray  # [M] bool
    frame_code: np.ndarray  # [M] uint8, why (see _qm9_frames.FRAME_CODES)
    signs_ok: np.ndarray  # [M] bool, the axis signs are set by the geometry where they matter
    failures: list = field(default_factory=list)  # [(gdb index or None, file, row, reason)]
    notes: dict = field(default_factory=dict)  # what the parser repaired (see _parse_source)

    _ARRAYS = (
        "gdb_index",
        "atom_offset",
        "numbers",
        "positions",
        "mulliken",
        "properties",
        "polarizability",
        "frequency_offset",
        "frequencies",
        "text_offset",
        "text",
        "frame",
        "frame_ok",
        "frame_code",
        "signs_ok",
    )

    @property
    def num_atoms(self) -> np.ndarray:
        return np.diff(self.atom_offset)

    def row_of(self, gdb_index: np.ndarray) -> np.ndarray:
        """Rows of the given 1-based QM9 numbers; ValueError for numbers not in the table."""
        gdb_index = np.asarray(gdb_index, dtype=np.int64)
        rows = np.searchsorted(self.gdb_index, gdb_index)
        rows_clipped = np.minimum(rows, len(self.gdb_index) - 1)
        found = self.gdb_index[rows_clipped] == gdb_index
        if not found.all():
            bad = gdb_index[~found]
            raise ValueError(
                f"QM9 has no molecule number {_list_some(bad)}: {len(bad)} of the requested "
                f"indices are among the {MAX_GDB_INDEX - len(self.gdb_index):,} GDB-9 numbers "
                f"that are not in this data set ({len(self.gdb_index):,} molecules; QM9 left "
                "out the 3,054 molecules that failed its consistency check)"
            )
        return rows

    def string(self, k: int) -> str:
        return bytes(self.text[self.text_offset[k] : self.text_offset[k + 1]]).decode("utf-8")


def _list_some(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _parse_source(folder: Path, progress: bool) -> _Table:
    """Parse every molecule of qm9pack's CSV files; failures are collected, never dropped silently."""
    import csv

    from tfn.datasets import _qm9_frames

    polarizabilities = _read_polarizabilities(folder / _POLARIZABILITY_FILE)
    total = sum(_count_rows(folder / name) for name in _SOURCE_FILES)
    bar = _progress_bar(total, "QM9: parsing (once; cached afterwards)", progress)

    records: dict[int, tuple] = {}
    failures: list[tuple] = []
    notes: dict[str, Any] = {"doubled_frequency_lists": [], "doubled_max_difference_cm-1": 0.0}
    try:
        for name in _SOURCE_FILES:
            with open(folder / name, newline="") as f:
                reader = csv.reader(f)
                header = next(reader)
                needed = (
                    "XYZ_file",
                    "Index",
                    "SMILES",
                    "InChi",
                    "N_atoms",
                    "Elements",
                    "XYZ_Ang",
                    "Mulliken_pop",
                    "Harmonic_Freq_cmi",
                    *_PROPERTY_COLUMNS.values(),
                )
                missing = [c for c in needed if c not in header]
                if missing:
                    raise ValueError(f"{name}: columns {missing} missing (header: {header})")
                c = {column: header.index(column) for column in needed}
                prop_cols = [c[_PROPERTY_COLUMNS[p]] for p in _PROPERTY_NAMES]
                for row_number, row in enumerate(reader, start=2):
                    bar.update(1)
                    gdb = None
                    try:
                        gdb = _gdb_number(row[c["XYZ_file"]])
                        if int(row[c["Index"]]) != gdb:
                            raise ValueError(f"Index {row[c['Index']]} != file number {gdb}")
                        if gdb in records:
                            raise ValueError("duplicate molecule number")
                        n = int(row[c["N_atoms"]])
                        symbols = row[c["Elements"]].translate(_DROP).split(",")
                        if len(symbols) != n:
                            raise ValueError(f"{len(symbols)} elements for N_atoms={n}")
                        unknown = sorted(set(symbols) - set(_SYMBOLS))
                        if unknown:
                            raise ValueError(f"unknown elements {unknown}")
                        numbers = np.array([_SYMBOLS[s] for s in symbols], dtype=np.uint8)
                        positions = _floats(row[c["XYZ_Ang"]])
                        if positions.size != 3 * n:
                            raise ValueError(f"{positions.size} coordinates for {n} atoms")
                        charges = _floats(row[c["Mulliken_pop"]])
                        if charges.size != n:
                            raise ValueError(f"{charges.size} Mulliken charges for {n} atoms")
                        frequencies = _floats(row[c["Harmonic_Freq_cmi"]])
                        if frequencies.size in (6 * n - 12, 6 * n - 10) and n > 2:
                            # 334 rows list two frequency calculations one after the other
                            # (they agree to ~0.01 cm^-1): keep the first.
                            half = frequencies.size // 2
                            notes["doubled_frequency_lists"].append(gdb)
                            notes["doubled_max_difference_cm-1"] = max(
                                notes["doubled_max_difference_cm-1"],
                                float(np.abs(frequencies[:half] - frequencies[half:]).max()),
                            )
                            frequencies = frequencies[:half]
                        if frequencies.size not in (3 * n - 6, 3 * n - 5):
                            raise ValueError(f"{frequencies.size} frequencies for {n} atoms")
                        properties = np.array([float(row[k]) for k in prop_cols])
                        if not np.isfinite(properties).all():
                            raise ValueError("non-finite property")
                        tensor = polarizabilities.get(gdb)
                        if tensor is None:
                            raise ValueError(f"no polarizability tensor in {_POLARIZABILITY_FILE}")
                        records[gdb] = (
                            numbers,
                            positions.reshape(n, 3),
                            charges,
                            properties,
                            tensor,
                            frequencies,
                            row[c["SMILES"]].encode("utf-8"),
                            row[c["InChi"]].encode("utf-8"),
                        )
                    except (ValueError, IndexError) as error:
                        failures.append((gdb, name, row_number, str(error)))
    finally:
        bar.close()
    if not records:
        raise ValueError(f"no molecule could be parsed from {folder}")

    order = sorted(records)
    count = np.array([len(records[g][0]) for g in order])
    num_freq = np.array([len(records[g][5]) for g in order])
    texts = [t for g in order for t in records[g][6:8]]
    text_offset = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=text_offset[1:])
    numbers = np.concatenate([records[g][0] for g in order])
    positions = np.concatenate([records[g][1] for g in order])
    atom_offset = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(count, out=atom_offset[1:])
    polarizability = np.stack([records[g][4] for g in order])
    bar = _progress_bar(1, "QM9: polarizability frames and checks", progress)
    frame, frame_ok, frame_code, signs_ok = _qm9_frames.standard_frames(
        numbers, positions, atom_offset, polarizability
    )
    bar.update(1)
    bar.close()
    table = _Table(
        gdb_index=np.array(order, dtype=np.int32),
        atom_offset=atom_offset,
        numbers=numbers,
        positions=positions,
        mulliken=np.concatenate([records[g][2] for g in order]),
        properties=np.stack([records[g][3] for g in order]),
        polarizability=polarizability,
        frequency_offset=np.concatenate([[0], np.cumsum(num_freq)]).astype(np.int64),
        frequencies=np.concatenate([records[g][5] for g in order]),
        text_offset=text_offset,
        text=np.frombuffer(b"".join(texts), dtype=np.uint8).copy(),
        frame=frame,
        frame_ok=frame_ok,
        frame_code=frame_code,
        signs_ok=signs_ok,
        failures=failures,
        notes=notes,
    )
    return table


def _progress_bar(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=description,
        unit=" mol",
        disable=not enabled,
        file=sys.stderr,
        mininterval=0.5,
        leave=False,
    )


# --------------------------------------------------------------------------------------------
# The binary cache: magic, header length, JSON header, 64-byte aligned arrays; blake2b checksum
# --------------------------------------------------------------------------------------------


def _write_cache(path: Path, table: _Table, source: dict[str, Any]) -> None:
    arrays = {name: np.ascontiguousarray(getattr(table, name)) for name in _Table._ARRAYS}
    layout = {}
    offset = 0
    for name, array in arrays.items():
        offset = -(-offset // _ALIGN) * _ALIGN
        layout[name] = [array.dtype.str, list(array.shape), offset, array.nbytes]
        offset += array.nbytes
    payload_size = -(-offset // _ALIGN) * _ALIGN
    payload = bytearray(payload_size)
    for name, array in arrays.items():
        start = layout[name][2]
        payload[start : start + array.nbytes] = array.tobytes()
    header = {
        "format": _CACHE_FORMAT,
        "source": source,
        "arrays": layout,
        "payload_size": payload_size,
        "checksum": hashlib.blake2b(payload, digest_size=32).hexdigest(),
        "failures": table.failures,
        "notes": table.notes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    header_bytes = json.dumps(header).encode("utf-8")
    header_bytes += b" " * (-(len(_MAGIC) + 8 + len(header_bytes)) % _ALIGN)

    path.parent.mkdir(parents=True, exist_ok=True)
    # Temporary file in the same folder, then an atomic rename: a reader never sees half a file,
    # and two processes building at once both leave a valid cache.
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC)
            f.write(len(header_bytes).to_bytes(8, "little"))
            f.write(header_bytes)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a cache may be shared
        os.replace(tmp, path)
    except BaseException:
        with _suppress_os_error():
            os.unlink(tmp)
        raise


class _suppress_os_error:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, OSError)


def _read_cache(path: Path) -> tuple[_Table, dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise _CacheError("missing") from error
    except OSError as error:
        raise _CacheError(f"unreadable ({error})") from error
    if data[: len(_MAGIC)] != _MAGIC:
        raise _CacheError("not a tfn QM9 cache (wrong magic bytes)")
    start = len(_MAGIC) + 8
    header_size = int.from_bytes(data[len(_MAGIC) : start], "little")
    if start + header_size > len(data):
        raise _CacheError(f"truncated ({len(data)} bytes; the header alone needs more)")
    try:
        header = json.loads(data[start : start + header_size].decode("utf-8"))
        version, layout = header["format"], header["arrays"]
        payload_size, checksum = int(header["payload_size"]), header["checksum"]
    except (ValueError, KeyError, TypeError) as error:
        raise _CacheError(f"unreadable header ({error})") from error
    if version != _CACHE_FORMAT:
        raise _CacheError(f"format {version}, this tfn reads format {_CACHE_FORMAT}")
    payload_start = start + header_size
    if len(data) != payload_start + payload_size:
        raise _CacheError(
            f"size {len(data)} bytes, expected {payload_start + payload_size} (truncated or padded)"
        )
    payload = memoryview(data)[payload_start:]
    if hashlib.blake2b(payload, digest_size=32).hexdigest() != checksum:
        raise _CacheError("checksum mismatch (the file was modified or damaged)")
    try:
        arrays = {}
        for name in _Table._ARRAYS:
            dtype, shape, offset, nbytes = layout[name]
            arrays[name] = np.frombuffer(
                payload, dtype=np.dtype(dtype), count=int(np.prod(shape)), offset=offset
            ).reshape(shape)
            if arrays[name].nbytes != nbytes:
                raise ValueError(f"array {name} has {arrays[name].nbytes} bytes, expected {nbytes}")
        table = _Table(
            **arrays,
            failures=[tuple(f) for f in header.get("failures", [])],
            notes=header.get("notes", {}),
        )
        _check_table(table)
    except (KeyError, ValueError, TypeError) as error:
        raise _CacheError(f"inconsistent contents ({error})") from error
    return table, header


def _check_table(table: _Table) -> None:
    m = len(table.gdb_index)
    if table.atom_offset.shape != (m + 1,) or table.atom_offset[-1] != len(table.numbers):
        raise ValueError("atom offsets do not match the atoms")
    if table.positions.shape != (len(table.numbers), 3) or table.mulliken.shape != (
        len(table.numbers),
    ):
        raise ValueError("per-atom arrays have different lengths")
    if table.properties.shape != (m, len(_PROPERTY_NAMES)):
        raise ValueError("properties have the wrong shape")
    for name in ("frame_ok", "frame_code", "signs_ok"):
        if getattr(table, name).shape != (m,):
            raise ValueError(f"{name} has the wrong shape")
    for name in ("polarizability", "frame"):
        if getattr(table, name).shape != (m, 3, 3):
            raise ValueError(f"{name} has the wrong shape")
    if table.frequency_offset[-1] != len(table.frequencies):
        raise ValueError("frequency offsets do not match the frequencies")
    if table.text_offset.shape != (2 * m + 1,) or table.text_offset[-1] != len(table.text):
        raise ValueError("text offsets do not match the text")
    if m > 1 and not (np.diff(table.gdb_index) > 0).all():
        raise ValueError("molecule numbers are not strictly ascending")


# One table per process, keyed by the cache file's identity, so that the split and size helpers
# do not re-read the file.
_LOADED: dict[tuple, _Table] = {}


def _table(progress: bool = True) -> _Table:
    """The parsed data set: from the cache, (re)built from the source where needed."""
    path = qm9_cache_path()
    try:
        source_dir = _source_dir()
        source = _source_fingerprint(source_dir)
    except ImportError:
        source_dir = source = None

    key = _file_key(path)
    if key is not None and key in _LOADED:
        return _LOADED[key]

    reason = None
    try:
        table, header = _read_cache(path)
        if source is not None and header.get("source") != source:
            reason = "it was built from a different qm9pack installation"
        else:
            _LOADED.clear()
            _LOADED[_file_key(path)] = table
            return table
    except _CacheError as error:
        reason = str(error)
    if source_dir is None:
        _source_dir()  # raises the ImportError that names the extra
    if reason != "missing":
        warnings.warn(f"QM9 cache {path} is unusable ({reason}); rebuilding it", stacklevel=3)
    table = _parse_source(source_dir, progress)
    if table.failures:
        warnings.warn(
            f"QM9: {len(table.failures)} molecule(s) could not be parsed and are left out: "
            + "; ".join(f"{f[1]} row {f[2]}: {f[3]}" for f in table.failures[:5])
            + " (all listed by `python -m tfn.datasets.qm9 --info`)",
            stacklevel=3,
        )
    _write_cache(path, table, source)
    table, _ = _read_cache(path)  # what later calls will read, checked once
    _LOADED.clear()
    _LOADED[_file_key(path)] = table
    return table


def _file_key(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _as_indices(indices: Any) -> np.ndarray:
    """1-based QM9 numbers as int64, with clear errors for anything else."""
    if isinstance(indices, (bool, np.bool_)):
        raise TypeError("indices must be QM9 molecule numbers (integers), got a bool")
    if isinstance(indices, (int, np.integer)):
        indices = [indices]
    if isinstance(indices, (str, bytes)) or not isinstance(indices, (Iterable, np.ndarray)):
        raise TypeError(f"indices must be an integer or a sequence of integers, got {indices!r}")
    # numpy arrays and anything that converts like one (torch tensors) as they are; else a list
    array = np.asarray(indices if hasattr(indices, "__array__") else list(indices))
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer)
        or (np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)))
    ):
        raise TypeError(f"indices must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64).reshape(-1)
    bad = array[(array < 1) | (array > MAX_GDB_INDEX)]
    if bad.size:
        raise ValueError(
            f"QM9 indices are 1-based molecule numbers from 1 to {MAX_GDB_INDEX} "
            f"(dsgdb9nsd_000001 is 1); out of range: {_list_some(bad)}"
        )
    return array


def load_qm9(indices: Any = None, progress: bool = True) -> list:
    """QM9 molecules as :class:`ase.Atoms` (see the module docstring for the keys and units).

    Args:
        indices: QM9's own 1-based molecule numbers (``dsgdb9nsd_000001`` is 1), an integer or a
            sequence; ``None`` loads all 130,831 in ascending order. Returned in the order given.
        progress: tqdm progress bars on stderr (the first call parses the CSV files: under a
            minute).

    Raises:
        ImportError: ``tfn[chem]`` (ASE, qm9pack) is not installed.
        ValueError: a number is out of range or not part of QM9 (3,054 numbers up to 133,885
            are not).

    Example (reads the cache; builds it the first time)::

        >>> [methane] = load_qm9([1], progress=False)  # doctest: +SKIP
        >>> methane.get_chemical_formula(), round(methane.info["U0"], 3)  # doctest: +SKIP
        ('CH4', -1101.488)
    """
    try:
        from ase import Atoms
        from ase.units import Hartree
    except ImportError as error:
        raise ImportError(f"load_qm9 needs ASE: {_CHEM_HINT}") from error
    wanted = None if indices is None else _as_indices(indices)
    table = _table(progress)
    rows = np.arange(len(table.gdb_index)) if wanted is None else table.row_of(wanted)

    factor = np.ones(len(_PROPERTY_NAMES))
    for name in _HARTREE_PROPERTIES:
        factor[_PROPERTY_NAMES.index(name)] = Hartree
    properties = table.properties[rows] * factor
    mapped = np.einsum(
        "mai,mab,mbj->mij", table.frame[rows], table.polarizability[rows], table.frame[rows]
    )
    # Force exact symmetry (the einsum is symmetric only up to rounding).
    mapped = 0.5 * (mapped + mapped.transpose(0, 2, 1))

    molecules = []
    iterator = range(len(rows))
    if progress and len(rows) > 2000:
        from tqdm import tqdm

        iterator = tqdm(
            iterator, desc="QM9: building Atoms", unit=" mol", file=sys.stderr, leave=False
        )
    offsets, freq_offsets = table.atom_offset, table.frequency_offset
    for k in iterator:
        row = int(rows[k])
        a, b = offsets[row], offsets[row + 1]
        atoms = Atoms(numbers=table.numbers[a:b], positions=table.positions[a:b])
        atoms.arrays["mulliken_charges"] = table.mulliken[a:b].copy()
        info = dict(zip(_PROPERTY_NAMES, properties[k].tolist()))
        info["gdb_index"] = int(table.gdb_index[row])
        info["smiles"] = table.string(2 * row)
        info["inchi"] = table.string(2 * row + 1)
        info["frequencies"] = table.frequencies[freq_offsets[row] : freq_offsets[row + 1]].copy()
        info["polarizability"] = mapped[k]
        info["polarizability_frame"] = table.frame[row].copy()
        info["polarizability_frame_ok"] = bool(table.frame_ok[row])
        info["polarizability_signs_ok"] = bool(table.signs_ok[row])
        atoms.info.update(info)
        molecules.append(atoms)
    return molecules


def qm9_split(
    seed: int = 0, num_train: int = 110_000, num_val: int = 10_000
) -> dict[str, np.ndarray]:
    """A fixed random split of QM9 into train / val / test (the rest), as 1-based molecule numbers.

    ``numpy.random.default_rng(seed).permutation`` of the ascending molecule numbers, which numpy
    guarantees to be the same on every platform; each part is returned sorted.

    Example::

        >>> split = qm9_split()  # doctest: +SKIP
        >>> {k: len(v) for k, v in split.items()}  # doctest: +SKIP
        {'train': 110000, 'val': 10000, 'test': 10831}
    """
    table = _table(progress=True)
    return _split(table.gdb_index, seed, num_train, num_val)


def _split(available: np.ndarray, seed: int, num_train: int, num_val: int) -> dict[str, np.ndarray]:
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"qm9_split: {name} must be a non-negative integer, got {value!r}")
    if num_train + num_val > len(available):
        raise ValueError(
            f"qm9_split: num_train + num_val = {num_train + num_val:,} exceeds the "
            f"{len(available):,} molecules"
        )
    order = np.random.default_rng(seed).permutation(len(available))
    chosen = np.asarray(available, dtype=np.int64)[order]
    parts = {
        "train": chosen[:num_train],
        "val": chosen[num_train : num_train + num_val],
        "test": chosen[num_train + num_val :],
    }
    return {name: np.sort(part) for name, part in parts.items()}


def qm9_by_num_atoms(min_atoms: int = 1, max_atoms: int | None = None) -> np.ndarray:
    """1-based numbers of the QM9 molecules with ``min_atoms <= atoms <= max_atoms`` (H included).

    ``max_atoms=None`` sets no upper limit. Reads only the cache (no :class:`ase.Atoms` are
    built). QM9 molecules have 3 to 29 atoms.

    Example::

        >>> qm9_by_num_atoms(3, 3)  # doctest: +SKIP
        array([    3,     5, ...])
    """
    for name, value in (("min_atoms", min_atoms), ("max_atoms", max_atoms)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer))
        ):
            raise TypeError(f"qm9_by_num_atoms: {name} must be an integer, got {value!r}")
    if max_atoms is not None and min_atoms > max_atoms:
        raise ValueError(f"qm9_by_num_atoms: min_atoms {min_atoms} > max_atoms {max_atoms}")
    table = _table(progress=True)
    count = table.num_atoms
    selected = count >= min_atoms
    if max_atoms is not None:
        selected &= count <= max_atoms
    return table.gdb_index[selected].astype(np.int64)


def polarizability_sign_flips() -> np.ndarray:
    """The four proper axis-sign flips ``diag(s)`` with ``s`` in ``{+1, -1}^3`` and ``det = +1``.

    A symmetric tensor ``T`` becomes ``D @ T @ D``: the diagonal is unchanged and the off-diagonal
    entry ``(i, j)`` is multiplied by ``s_i s_j``. The improper flips give the same four tensors
    (``-D`` acts as ``D``), so these four are all the tensors an axis-sign ambiguity can produce.

    Example:
        >>> [d.diagonal().tolist() for d in polarizability_sign_flips()]
        [[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
    """
    signs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64)
    return np.stack([np.diag(s) for s in signs])


def min_over_sign_flips_loss(pred, target, frames, reduction: str = "mean"):
    """Squared error of polarizability tensors, the smallest over the four proper sign flips.

    Both ``pred`` and ``target`` (in the frame of the positions) are expressed in ``frames``
    (``info["polarizability_frame"]``, rows = axes): ``P = F @ pred @ F.T``, ``T = F @ target @ F.T``;
    the loss is ``min over D of mean((D P D - T)^2)`` with ``D`` from
    :func:`polarizability_sign_flips`. It is zero for the right tensor whichever signs the axes of
    the frame have, and is invariant under rotating the molecule with its frame.

    Args:
        pred, target: ``[..., 3, 3]`` tensors (torch).
        frames: ``[..., 3, 3]`` rotations (rows = axes), broadcastable to ``pred``.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per molecule ``[...]``).

    Example:
        >>> import torch
        >>> t = torch.tensor([[3.0, 1.0, 0.5], [1.0, 2.0, 0.2], [0.5, 0.2, 1.0]])
        >>> flipped = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
        >>> eye = torch.eye(3)
        >>> float(min_over_sign_flips_loss(flipped @ t @ flipped, t, eye))
        0.0
        >>> float(min_over_sign_flips_loss(t.T, t + 0.1 * eye, eye)) > 0
        True
    """
    import torch

    for name, value in (("pred", pred), ("target", target), ("frames", frames)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"min_over_sign_flips_loss: {name} must be a torch.Tensor")
        if value.shape[-2:] != (3, 3):
            raise ValueError(
                f"min_over_sign_flips_loss: {name} must have shape [..., 3, 3], got {tuple(value.shape)}"
            )
    if reduction not in ("mean", "none"):
        raise ValueError(
            f"min_over_sign_flips_loss: reduction must be 'mean' or 'none', got {reduction!r}"
        )
    frames = frames.to(pred.dtype)
    p = frames @ pred @ frames.transpose(-1, -2)
    t = frames @ target.to(pred.dtype) @ frames.transpose(-1, -2)
    signs = torch.as_tensor(
        np.stack([d.diagonal() for d in polarizability_sign_flips()]),
        dtype=pred.dtype,
        device=pred.device,
    )
    pattern = signs[:, :, None] * signs[:, None, :]  # [4, 3, 3]
    error = (p.unsqueeze(-3) * pattern - t.unsqueeze(-3)).pow(2).mean((-1, -2))  # [..., 4]
    per_molecule = error.min(-1).values
    return per_molecule.mean() if reduction == "mean" else per_molecule


def polarizability_frame(numbers, positions, tensor) -> tuple[np.ndarray, bool]:
    """The frame a QM9-style polarizability tensor is given in, rebuilt from the geometry.

    Args:
        numbers: atomic numbers ``[n]``.
        positions: ``[n, 3]`` (Angstrom).
        tensor: ``[3, 3]`` the tensor as QM9 gives it (its standard frame); it decides where a
            linear molecule's axis goes and is used for the checks.

    Returns:
        ``(frame, ok)``: ``frame`` ``[3, 3]`` (rows = the axes in position coordinates), so that
        the tensor in the positions' frame is ``frame.T @ tensor @ frame``; ``ok`` is ``False``
        where the geometry does not determine the mapping reliably (see ``docs/qm9.md``).

    Example (QM9's molecule 32, NCC#N, positions rounded; ``tensor`` as QM9 gives it):
        >>> import numpy as np
        >>> numbers = [7, 6, 6, 7, 1, 1, 1, 1]
        >>> positions = [[-0.0361, 1.4876, 0.0368], [-0.0104, 0.0252, -0.0151],
        ...              [-1.3718, -0.5211, 0.0274], [-2.4403, -0.9596, 0.0337],
        ...              [0.9173, 1.8355, 0.052], [-0.4716, 1.8568, -0.8028],
        ...              [0.4895, -0.4088, -0.8972], [0.5283, -0.3453, 0.8647]]
        >>> tensor = [[42.824, 2.879, -0.097], [2.879, 28.426, -0.75], [-0.097, -0.75, 24.194]]
        >>> frame, ok = polarizability_frame(numbers, positions, tensor)
        >>> ok, bool(np.allclose(frame @ frame.T, np.eye(3))), round(float(np.linalg.det(frame)), 6)
        (True, True, 1.0)
        >>> mapped = frame.T @ np.array(tensor) @ frame  # in the frame of the positions
        >>> axis = np.array(positions[3]) - positions[2]  # along the C#N bond
        >>> round(float(axis @ mapped @ axis / (axis @ axis)), 1)  # the most polarizable direction
        43.0
    """
    from tfn.datasets import _qm9_frames

    numbers = np.asarray(numbers, dtype=np.uint8).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64)
    tensor = np.asarray(tensor, dtype=np.float64)
    if positions.shape != (len(numbers), 3):
        raise ValueError(
            f"polarizability_frame: positions must be [{len(numbers)}, 3], got {positions.shape}"
        )
    if tensor.shape != (3, 3):
        raise ValueError(f"polarizability_frame: tensor must be [3, 3], got {tensor.shape}")
    frame, ok, _, _ = _qm9_frames.standard_frames(
        numbers, positions, np.array([0, len(numbers)]), tensor[None]
    )
    return frame[0], bool(ok[0])


# --------------------------------------------------------------------------------------------
# Command line: python -m tfn.datasets.qm9 --info | --check-frames
# --------------------------------------------------------------------------------------------


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tfn.datasets.qm9", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--info", action="store_true", help="cache, timings and parse failures")
    parser.add_argument(
        "--check-frames", action="store_true", help="verify the polarizability frames geometrically"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if not (args.info or args.check_frames):
        parser.error("give --info and/or --check-frames")
    report: dict[str, Any] = {}
    if args.info:
        report["info"] = _info_report()
    if args.check_frames:
        from tfn.datasets import _qm9_frames

        report["frames"] = _qm9_frames.check_frames_report(_table(progress=True))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _info_report() -> dict[str, Any]:
    path = qm9_cache_path()
    started = time.perf_counter()
    existed = path.exists()
    table = _table(progress=True)
    first = time.perf_counter() - started
    _LOADED.clear()
    started = time.perf_counter()
    table, header = _read_cache(path)
    read = time.perf_counter() - started
    started = time.perf_counter()
    load_qm9(progress=False)
    atoms = time.perf_counter() - started
    return {
        "cache": str(path),
        "cache_bytes": path.stat().st_size,
        "molecules": len(table.gdb_index),
        "atoms": len(table.numbers),
        "failures": [list(f) for f in table.failures],
        "seconds_first_call": round(first, 2),
        "first_call_built_cache": not existed,
        "seconds_read_cache": round(read, 2),
        "seconds_load_qm9_all": round(atoms, 2),
        "created": header.get("created"),
    }


if __name__ == "__main__":
    raise SystemExit(_main())
