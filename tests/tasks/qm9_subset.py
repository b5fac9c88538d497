"""A few dozen QM9 molecules as the whole data set, for the QM9 task tests (runs of seconds).

The rows are copied out of qm9pack's CSV files into a temporary folder once per test session,
and the QM9 loader is pointed at them (its source folder and a fresh cache). (A plain module,
not a conftest.py, so that its name cannot clash with other test folders.)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tfn.datasets import qm9

# Molecules 1-60 (3 to 17 atoms: methane, ammonia, water...), fluorine (184, 826, 827), frames
# flagged unreliable (3 = water, 159; 438 in cache format 1), and larger ones for the missing-point test sets:
# 19 atoms (1082, 1084, 1088, 1093), 23 atoms (1094, 1104, 1130, 1189), 24-29 (5806-5809).
SUBSET = sorted(
    {*range(1, 61)} - {58}
    | {184, 826, 827, 159, 438, 1082, 1084, 1088, 1093, 1094, 1104, 1130, 1189}
    | {5806, 5807, 5808, 5809}
)
FRAME_NOT_OK = (3, 159, 438)

_SOURCE: dict[str, Path] = {}

#: the loader's own way to find qm9pack (the subset replaces it while active)
REAL_SOURCE_DIR = qm9._source_dir


def write_subset(folder: Path, numbers: list[int]) -> Path:
    """Copy the header and the rows of ``numbers`` from qm9pack's CSV files into ``folder``."""
    source = REAL_SOURCE_DIR()
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f'"dsgdb9nsd_{n:06d}.xyz"'.encode() for n in numbers}
    for name in (*qm9._SOURCE_FILES, qm9._POLARIZABILITY_FILE):
        with open(source / name, "rb") as f, open(folder / name, "wb") as out:
            out.write(f.readline())
            for line in f:
                if line[:22] in wanted:
                    out.write(line)
    return folder


@contextlib.contextmanager
def qm9_subset(tmp_path_factory: pytest.TempPathFactory):
    """While active, ``tfn.datasets.load_qm9`` and friends see only :data:`SUBSET`."""
    if "source" not in _SOURCE:
        root = tmp_path_factory.getbasetemp() / "qm9_subset"
        _SOURCE["source"] = write_subset(root / "source", SUBSET)
        _SOURCE["cache"] = root / "cache"
    patch = pytest.MonkeyPatch()
    patch.setattr(qm9, "_source_dir", lambda: _SOURCE["source"])
    patch.setenv("TFN_CACHE_DIR", str(_SOURCE["cache"]))
    qm9._LOADED.clear()
    try:
        yield
    finally:
        patch.undo()
        qm9._LOADED.clear()
