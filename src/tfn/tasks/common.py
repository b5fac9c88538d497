"""Pieces several tasks share: random rigid motions of test sets, read-outs, and regression of
an equivariant target with scale-free metrics."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch

from tfn.data import Batch, PointCloud
from tfn.tasks.base import Task

__all__ = ["rotate_translate", "first_points", "RegressionTask"]


def rotate_translate(
    clouds: list[PointCloud],
    seed: int,
    translate: float,
    vectors: tuple[str, ...] = (),
    matrices: tuple[str, ...] = (),
) -> list[PointCloud]:
    """Apply one random rotation and translation per cloud (deterministic in ``seed``).

    Positions become ``R x + t``; targets named in ``vectors`` (``[..., 3]``) become ``R v``,
    those in ``matrices`` (``[..., 3, 3]``) become ``R M R^T``.
    """
    from tfn.so3 import random_rotation

    if not clouds:
        return []
    g = torch.Generator().manual_seed(seed)
    dtype = clouds[0].pos.dtype
    R = random_rotation(len(clouds), generator=g, dtype=torch.float64)
    t = translate * (2 * torch.rand(len(clouds), 3, generator=g, dtype=torch.float64) - 1)
    out = []
    for i, c in enumerate(clouds):
        Ri = R[i].to(dtype)
        targets = dict(c.targets)
        for k in vectors:
            targets[k] = targets[k] @ Ri.T
        for k in matrices:
            targets[k] = Ri @ targets[k] @ Ri.T
        out.append(replace(c, pos=c.pos @ Ri.T + t[i].to(dtype), targets=targets))
    return out


def first_points(batch: torch.Tensor | None, n: int, device: Any) -> torch.Tensor:
    """Index of the first point of each cloud (``batch`` sorted; ``None`` = one cloud)."""
    if batch is None:
        return torch.zeros(1, dtype=torch.long, device=device)
    start = torch.ones(n, dtype=torch.bool, device=device)
    start[1:] = batch[1:] != batch[:-1]
    return torch.nonzero(start).reshape(-1)


class RegressionTask(Task):
    """Regression of one equivariant target of a :class:`~tfn.data.Batch`, scale-free.

    ``target`` names the batch target; ``item_dims`` are the dimensions of one target item
    summed in the norms: ``(-1,)`` for vectors, ``(-2, -1)`` for matrices. The loss is the
    batch's relative squared error; metrics: ``rel_error`` (mean over items of
    ``|pred - true| / |true|``) and ``rmse_ratio`` (``sqrt(sum |pred - true|^2 / sum |true|^2)``).
    """

    monitor = "rel_error"
    monitor_goal = "min"
    progress_metrics = ("rel_error",)
    curve_metrics = ("rel_error", "rmse_ratio")
    target: ClassVar[str] = ""
    item_dims: ClassVar[tuple[int, ...]] = (-1,)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        # Relative squared error of the batch: scale-free, so that no target scale is needed.
        y = batch.targets[self.target]
        return (pred - y).pow(2).sum() / y.pow(2).sum().clamp_min(1e-12)

    def metric_sums(self, pred: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        y = batch.targets[self.target]
        err = (pred - y).pow(2).sum(self.item_dims)
        ref = y.pow(2).sum(self.item_dims)
        rel = err.sqrt() / ref.sqrt().clamp_min(1e-12)
        return {
            "rel_error_sum": rel.sum().detach(),
            "count": torch.tensor(float(rel.numel())),
            "sq_error": err.sum().detach(),
            "sq_norm": ref.sum().detach(),
        }

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        ratio = sums["sq_error"] / max(sums["sq_norm"], 1e-30)
        return {
            "loss": ratio,
            "rel_error": sums["rel_error_sum"] / max(sums["count"], 1.0),
            "rmse_ratio": ratio**0.5,
        }
