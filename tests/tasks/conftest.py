"""Fixtures shared by the task tests."""

import pytest


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The QM9 test subset's molecules by QM9 number (``tfn.datasets.load_qm9`` sees only them)."""
    from qm9_subset import qm9_subset  # here: the chemistry extra may be missing

    with qm9_subset(tmp_path_factory):
        from tfn.datasets import load_qm9

        yield {a.info["gdb_index"]: a for a in load_qm9(progress=False)}
