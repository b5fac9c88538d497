"""Point clouds and batches of point clouds.

A :class:`PointCloud` is one cloud: positions ``[n, 3]``, per-point features ``[n, dim]`` and a
dict of targets (per point ``[n, ...]`` or per cloud ``[...]``). :func:`collate` stacks clouds of
different sizes into one :class:`Batch`, the flat layout every layer works on: all points
concatenated, with ``batch[i]`` the index of the cloud point ``i`` belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["PointCloud", "Batch", "collate"]


@dataclass
class PointCloud:
    """One point cloud.

    Args:
        pos: positions ``[n, 3]``.
        features: per-point input features ``[n, dim]`` (flat irreps layout).
        targets: named targets; a tensor whose first dimension is ``n`` is per point
            (listed in ``point_targets``), any other tensor is per cloud.
        point_targets: names of the targets that are per point.

    Example:
        >>> cloud = PointCloud(torch.zeros(2, 3), torch.ones(2, 1), {"label": torch.tensor(3)})
        >>> cloud.num_points
        2
    """

    pos: torch.Tensor
    features: torch.Tensor
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    point_targets: tuple[str, ...] = ()

    @property
    def num_points(self) -> int:
        return int(self.pos.shape[0])


@dataclass
class Batch:
    """Several clouds in one flat layout.

    ``pos [N, 3]``, ``features [N, dim]``, ``batch [N]`` (cloud index of each point, sorted),
    ``targets``: per-point targets concatenated ``[N, ...]``, per-cloud targets stacked
    ``[num_clouds, ...]``.
    """

    pos: torch.Tensor
    features: torch.Tensor
    batch: torch.Tensor
    num_clouds: int
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    point_targets: tuple[str, ...] = ()

    @property
    def num_points(self) -> int:
        return int(self.pos.shape[0])

    def to(self, *args, **kwargs) -> Batch:
        """Move every tensor (``.to`` semantics; integer tensors keep their dtype)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point():
                return t.to(*args, **kwargs)
            device = kwargs.get(
                "device", next((a for a in args if not isinstance(a, torch.dtype)), None)
            )
            return t.to(device) if device is not None else t

        return Batch(
            pos=move(self.pos),
            features=move(self.features),
            batch=move(self.batch),
            num_clouds=self.num_clouds,
            targets={k: move(v) for k, v in self.targets.items()},
            point_targets=self.point_targets,
        )


def collate(clouds: Sequence[PointCloud]) -> Batch:
    """Concatenate clouds into one :class:`Batch`.

    Example:
        >>> a = PointCloud(torch.zeros(2, 3), torch.ones(2, 1), {"y": torch.tensor([1.0])})
        >>> b = PointCloud(torch.ones(3, 3), torch.ones(3, 1), {"y": torch.tensor([2.0])})
        >>> batch = collate([a, b])
        >>> batch.batch.tolist(), batch.targets["y"].shape
        ([0, 0, 1, 1, 1], torch.Size([2, 1]))
    """
    if len(clouds) == 0:
        raise ValueError("collate: empty batch (no point clouds given)")
    point_targets = clouds[0].point_targets
    keys = set(clouds[0].targets)
    for i, c in enumerate(clouds):
        if c.num_points == 0:
            raise ValueError(f"collate: cloud {i} has no points")
        if set(c.targets) != keys or c.point_targets != point_targets:
            raise ValueError(
                f"collate: cloud {i} has targets {sorted(c.targets)}, expected {sorted(keys)}"
            )
    pos = torch.cat([c.pos for c in clouds])
    features = torch.cat([c.features for c in clouds])
    batch = torch.cat(
        [
            torch.full((c.num_points,), i, dtype=torch.long, device=c.pos.device)
            for i, c in enumerate(clouds)
        ]
    )
    targets: dict[str, torch.Tensor] = {}
    for k in keys:
        if k in point_targets:
            targets[k] = torch.cat([c.targets[k] for c in clouds])
        else:
            targets[k] = torch.stack([torch.as_tensor(c.targets[k]) for c in clouds])
    return Batch(pos, features, batch, len(clouds), targets, point_targets)
