"""Moment of inertia (Thomas et al. 2018, sec. 4.2): the inertia tensor about the origin (the
first point, mass 0) of 15 point masses, predicted as ``"0e + 2e"`` and turned into a symmetric
3x3 matrix with ``tfn.so3.CartesianTensor("ij=ji")``. The paper reads it at the origin point after
one convolution (``data.readout=origin``); ``data.readout=pool`` sums over all points instead.
Metrics: ``rel_error`` (Frobenius) and ``rmse_ratio``; the plots compare the learned radial
functions with ``2/3 r^2`` (l = 0) and ``-r^2`` (l = 2)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from tfn.data import Batch, PointCloud
from tfn.tasks import register
from tfn.tasks.base import TaskData, split_seed
from tfn.tasks.common import RegressionTask, first_points, rotate_translate
from tfn.tasks.plotting import parity_plot, radial_plot


class InertiaData(TaskData):
    """Moment of inertia: predict the inertia tensor about the origin ("0e + 2e")."""

    name: Literal["inertia"] = "inertia"
    num_train: int = Field(2000, gt=0)
    num_val: int = Field(200, gt=0)
    num_test: int = Field(1000, gt=0)
    num_points: int = Field(15, ge=2)
    box: float = Field(0.5, gt=0)
    translate: float = Field(2.0, ge=0)
    readout: Literal["pool", "origin"] = Field(
        "origin",
        description="origin: the output at the origin point (model.pool=none); pool: the "
        "network's pooled output (model.pool=sum or mean)",
    )


def _two_thirds_r2(r: torch.Tensor) -> torch.Tensor:
    return 2.0 / 3.0 * r**2


def _minus_r2(r: torch.Tensor) -> torch.Tensor:
    return -(r**2)


@register
class InertiaTask(RegressionTask):
    name = "inertia"
    Data = InertiaData
    irreps_in = "1x0e"
    irreps_out = "1x0e + 1x2e"
    target = "inertia"
    item_dims = (-2, -1)
    paper = (
        "qualitatively correct radial functions (~ 2/3 r^2 for l=0, ~ -r^2 for l=2); "
        "no error number"
    )

    def __init__(self, cfg):
        super().__init__(cfg)
        from tfn.so3 import CartesianTensor

        self.cartesian = CartesianTensor("ij=ji")

    @classmethod
    def check_config(cls, cfg) -> None:
        pool, readout = cfg.model.pool, cfg.data.readout
        if readout == "pool" and pool is None:
            raise ValueError(
                "model.pool: inertia with data.readout=pool needs model.pool=sum or mean"
            )
        if readout == "origin" and pool is not None:
            raise ValueError(
                "model.pool: inertia with data.readout=origin reads the output at the origin "
                "point; use model.pool=none"
            )

    @classmethod
    def default_model_arguments(cls, data) -> dict:
        return {**cls.model_defaults, "pool": None if data.readout == "origin" else "sum"}

    def fixed_model_arguments(self):
        return {"irreps_in": self.irreps_in, "irreps_out": self.irreps_out}

    def _clouds(self, n: int, k: int) -> list[PointCloud]:
        from tfn.datasets import inertia

        d = self.data
        return inertia(
            n, num_points=d.num_points, box=d.box, seed=split_seed(self, k), dtype=self.dtype
        )

    def _eval(self, n: int, k: int) -> list[PointCloud]:
        return rotate_translate(
            self._clouds(n, k),
            split_seed(self, k + 100),
            self.data.translate,
            matrices=("inertia",),
        )

    def train_set(self) -> list[PointCloud]:
        return self._clouds(self.data.num_train, 0)

    def val_sets(self) -> dict[str, list[PointCloud]]:
        return {"val": self._eval(self.data.num_val, 1)}

    def test_sets(self) -> dict[str, list[PointCloud]]:
        return {"test": self._eval(self.data.num_test, 2)}

    def forward(self, model, batch: Batch) -> torch.Tensor:
        out = model(batch.pos, batch.features, batch.batch)
        if self.data.readout == "origin":
            out = out[first_points(batch.batch, out.shape[0], out.device)]
        return self.cartesian.to_cartesian(out)

    def plots(self, model, sets, out, device) -> dict[str, float]:
        panels = []
        for name, clouds in sets.items():
            preds, batches = self.run(model, clouds, device)
            true = torch.cat([b.targets[self.target] for b in batches])
            panels.append((f"inertia: {name} ({len(clouds)} clouds)", true, torch.cat(preds)))
        parity_plot(panels, out / "predictions.png", "true inertia (components)")
        refs = {0: ("2/3 r^2", _two_thirds_r2), 2: ("-r^2", _minus_r2)}
        return radial_plot(model, "inertia", refs, out / "radial.png", 0.05, self.data.box * 3**0.5)
