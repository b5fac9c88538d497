"""Shared test setup: one thread, a fixed seed, and a helper to build modules in a dtype."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch

# Helper modules beside the tests (train_helpers.py, ...): importlib mode puts no test folder
# on the path by itself.
for _folder in sorted(Path(__file__).resolve().parent.iterdir()):
    if _folder.is_dir() and not _folder.name.startswith((".", "_")):
        sys.path.insert(0, str(_folder))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, run with TFN_SLOW=1")
    # Small problems on a shared machine: threads only add overhead.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    """Every test starts from seed 0 and leaves the default dtype as it found it."""
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture
def default_dtype():
    """``with default_dtype(torch.float64): module = ...`` builds parameters and buffers in
    that dtype (constants such as Clebsch-Gordan tables are rounded to the default dtype)."""
    return _default_dtype
