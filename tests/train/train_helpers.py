"""Shared by the training tests: the shipped configs and tiny overrides (runs of seconds).

(A plain module, not a conftest.py, so that its name cannot clash with other test folders.)
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: Overrides that shrink each experiment to a few optimisation steps on a handful of clouds.
TINY: dict[str, list[str]] = {
    "tetris": [
        "trainer.max_epochs=2",
        "data.train_repeat=2",
        "data.num_val_rotations=8",
        "data.num_rotations=16",
        "model.num_layers=2",
        "model.irreps_hidden=4x0e+2x0o+2x1o+2x1e",
        "trainer.enable_progress_bar=false",
    ],
    "gravity": [
        "trainer.max_epochs=1",
        "data.num_train=16",
        "data.num_val=4",
        "data.num_test=4",
        "data.num_large=2",
        "data.large_min_points=11",
        "data.large_max_points=12",
        "trainer.enable_progress_bar=false",
    ],
    "inertia": [
        "trainer.max_epochs=1",
        "data.num_train=16",
        "data.num_val=4",
        "data.num_test=4",
        "trainer.enable_progress_bar=false",
    ],
}


def config_path(name: str) -> Path:
    return CONFIGS / f"{name}.yaml"
