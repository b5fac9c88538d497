"""Tasks are plug-ins: a new task is one module (here: this test) and one config."""

from __future__ import annotations

import json
from typing import Literal

import pytest
import torch

import tfn.train
from tfn.data import PointCloud
from tfn.tasks import available_tasks, get_task, register
from tfn.tasks.base import TaskData, split_seed
from tfn.tasks.common import RegressionTask
from tfn.train.config import ConfigError, build_config


class CentroidData(TaskData):
    """Each point's offset from the centroid of its cloud (a vector per point)."""

    name: Literal["centroid_offset"] = "centroid_offset"
    num_train: int = 32
    num_val: int = 8
    num_test: int = 8
    num_points: int = 5


@register
class CentroidTask(RegressionTask):
    name = "centroid_offset"
    Data = CentroidData
    target = "offset"
    paper = "not in the paper: a plug-in example"

    def fixed_model_arguments(self):
        return {"irreps_in": "1x0e", "irreps_out": "1o"}

    def _clouds(self, n: int, k: int) -> list[PointCloud]:
        g = torch.Generator().manual_seed(split_seed(self, k))
        out = []
        for _ in range(n):
            pos = torch.randn(self.data.num_points, 3, generator=g, dtype=torch.float64)
            offset = pos - pos.mean(0)
            ones = torch.ones(len(pos), 1)
            out.append(
                PointCloud(
                    pos.to(self.dtype),
                    ones.to(self.dtype),
                    {"offset": offset.to(self.dtype)},
                    ("offset",),
                )
            )
        return out

    def train_set(self):
        return self._clouds(self.data.num_train, 0)

    def val_sets(self):
        return {"val": self._clouds(self.data.num_val, 1)}

    def test_sets(self):
        return {"test": self._clouds(self.data.num_test, 2)}

    def forward(self, model, batch):
        return model(batch.pos, batch.features, batch.batch)


def test_registry_finds_every_shipped_task():
    assert {"tetris", "gravity", "inertia", "md", "centroid_offset"} <= set(available_tasks())
    with pytest.raises(KeyError, match="did you mean 'tetris'"):
        get_task("tetirs")


def test_a_new_task_trains_evaluates_and_loads_with_no_other_change(tmp_path):
    config = {
        "data": {"name": "centroid_offset"},
        "model": {"irreps_hidden": "4x0e + 2x1o", "num_layers": 1},
        "trainer": {"max_epochs": 2, "enable_progress_bar": False},
    }
    result = tfn.train.train(config, out=tmp_path / "run", progress="none")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "centroid_offset" and "test/rel_error" in metrics["metrics"]
    assert (tmp_path / "run" / "plots" / "learning_curves.png").is_file()
    model = tfn.train.load(result.run_dir)
    batch = model.task.collate(model.task.test_sets()["test"][:2])
    assert model.predict(batch).shape == (10, 3)
    # its options are validated like every other task's
    with pytest.raises(ConfigError, match="did you mean 'data.num_points'"):
        build_config({"data": {"name": "centroid_offset", "num_point": 3}})


def test_registering_needs_a_matching_data_name():
    class Bad(TaskData):
        name: Literal["other"] = "other"

    with pytest.raises(ValueError, match="Literal"):

        @register
        class BadTask(CentroidTask):
            name = "bad_task"
            Data = Bad
