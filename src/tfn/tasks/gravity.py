"""Gravity (Thomas et al. 2018, sec. 4.2): the acceleration (``1o``) of each of 2-10 point masses
from the masses (``1x0e``); also tested on clouds of 20-50 points. Metrics: ``rel_error`` and
``rmse_ratio`` (:class:`~tfn.tasks.common.RegressionTask`); the plots compare the learned radial
function with ``-1/r^2``."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from tfn.data import Batch, PointCloud
from tfn.tasks import register
from tfn.tasks.base import TaskData, split_seed
from tfn.tasks.common import RegressionTask, rotate_translate
from tfn.tasks.plotting import parity_plot, radial_plot


class GravityData(TaskData):
    """Gravity: predict each point's acceleration ("1o") from the masses ("1x0e")."""

    name: Literal["gravity"] = "gravity"
    num_train: int = Field(2000, gt=0)
    num_val: int = Field(200, gt=0)
    num_test: int = Field(1000, gt=0)
    min_points: int = Field(2, ge=2)
    max_points: int = Field(10, ge=2)
    num_large: int = Field(200, gt=0, description="clouds of more points than in training")
    large_min_points: int = Field(20, ge=2)
    large_max_points: int = Field(50, ge=2)
    box: float = Field(2.0, gt=0)
    min_separation: float = Field(0.5, gt=0)
    mass_range: tuple[float, float] = (0.5, 2.0)
    G: float = Field(1.0, gt=0)
    translate: float = Field(2.0, ge=0, description="random test-time translations")

    @model_validator(mode="after")
    def _ranges(self):
        if self.max_points < self.min_points:
            raise ValueError("data.min_points/max_points: need 2 <= min_points <= max_points")
        if self.large_max_points < self.large_min_points:
            raise ValueError("data.large_min_points/large_max_points: need 2 <= min <= max")
        if not 0 < self.mass_range[0] <= self.mass_range[1]:
            raise ValueError(
                f"data.mass_range: expected [low, high] with 0 < low <= high, got {list(self.mass_range)}"
            )
        return self


def _inverse_square(r: torch.Tensor) -> torch.Tensor:
    return -1.0 / r**2


@register
class GravityTask(RegressionTask):
    name = "gravity"
    Data = GravityData
    irreps_in = "1x0e"
    irreps_out = "1x1o"
    target = "acceleration"
    item_dims = (-1,)
    paper = "qualitatively correct radial function (learned R(r) ~ -1/r^2); no error number"

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model.pool is not None:
            raise ValueError("model.pool: gravity predicts one vector per point; use pool=none")

    def fixed_model_arguments(self):
        return {"irreps_in": self.irreps_in, "irreps_out": self.irreps_out}

    def _clouds(self, n: int, lo: int, hi: int, seed: int) -> list[PointCloud]:
        from tfn.datasets import gravity

        d = self.data
        return gravity(
            n,
            min_points=lo,
            max_points=hi,
            box=d.box,
            min_separation=d.min_separation,
            mass_range=tuple(d.mass_range),
            G=d.G,
            seed=seed,
            dtype=self.dtype,
        )

    def _eval(self, n: int, lo: int, hi: int, k: int) -> list[PointCloud]:
        clouds = self._clouds(n, lo, hi, split_seed(self, k))
        return rotate_translate(
            clouds, split_seed(self, k + 100), self.data.translate, vectors=(self.target,)
        )

    def train_set(self) -> list[PointCloud]:
        d = self.data
        return self._clouds(d.num_train, d.min_points, d.max_points, split_seed(self, 0))

    def val_sets(self) -> dict[str, list[PointCloud]]:
        d = self.data
        return {
            "val": self._eval(d.num_val, d.min_points, d.max_points, 1),
            "val_large": self._eval(d.num_large, d.large_min_points, d.large_max_points, 3),
        }

    def test_sets(self) -> dict[str, list[PointCloud]]:
        d = self.data
        return {
            "test": self._eval(d.num_test, d.min_points, d.max_points, 2),
            "test_large": self._eval(d.num_large, d.large_min_points, d.large_max_points, 4),
        }

    def forward(self, model, batch: Batch) -> torch.Tensor:
        return model(batch.pos, batch.features, batch.batch)

    def plots(self, model, sets, out, device) -> dict[str, float]:
        panels = []
        for name, clouds in sets.items():
            preds, batches = self.run(model, clouds, device)
            true = torch.cat([b.targets[self.target] for b in batches])
            panels.append((f"gravity: {name} ({len(clouds)} clouds)", true, torch.cat(preds)))
        parity_plot(panels, out / "predictions.png", "true acceleration (components)")
        d = self.data
        refs = {1: ("-1/r^2", _inverse_square)}
        return radial_plot(model, "gravity", refs, out / "radial.png", d.min_separation, 2 * d.box)
