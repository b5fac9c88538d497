"""Moment of inertia: predict the 3x3 inertia tensor of a cloud of point masses (per cloud)."""

from __future__ import annotations

import numpy as np
import torch

from tfn.data.batch import PointCloud

__all__ = ["inertia", "inertia_tensor"]


def inertia_tensor(pos: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Inertia tensor about the origin, ``I = sum_b m_b (|r_b|^2 Id - r_b r_b^T)``.

    Args:
        pos: positions ``[n, 3]``.
        masses: ``[n]`` or ``[n, 1]``.

    Returns:
        ``[3, 3]`` (symmetric), same dtype as ``pos``.

    Example:
        >>> inertia_tensor(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([2.0])).tolist()
        [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]
    """
    m = masses.reshape(-1).to(pos.dtype)
    r2 = (pos * pos).sum(-1)
    eye = torch.eye(3, dtype=pos.dtype, device=pos.device)
    return (m * r2).sum() * eye - torch.einsum("b,bi,bj->ij", m, pos, pos)


def inertia(
    num_clouds: int,
    num_points: int = 15,
    box: float = 0.5,
    mass_range: tuple[float, float] = (0.5, 2.0),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> list[PointCloud]:
    """Random clouds of point masses with their inertia tensor about the origin.

    The first point of every cloud sits at the origin with mass 0 (it marks the reference point
    and contributes nothing); the other ``num_points - 1`` are uniform in ``[-box, box]^3`` with
    masses uniform in ``mass_range``.

    Returns:
        Clouds with features = masses ``[n, 1]`` (irreps ``"1x0e"``, the first one 0) and the
        per-cloud target ``"inertia"`` ``[3, 3]`` (computed in float64 by :func:`inertia_tensor`;
        a symmetric rank-2 tensor, irreps ``"1x0e + 1x2e"``).

    Example:
        >>> c = inertia(2, seed=3)[0]
        >>> c.pos.shape, c.pos[0].tolist(), float(c.features[0, 0]), c.targets["inertia"].shape
        (torch.Size([15, 3]), [0.0, 0.0, 0.0], 0.0, torch.Size([3, 3]))
    """
    if num_points < 1:
        raise ValueError(f"inertia: num_points must be >= 1, got {num_points}")
    rng = np.random.default_rng(seed)
    clouds = []
    for _ in range(num_clouds):
        pos = np.zeros((num_points, 3))
        masses = np.zeros((num_points, 1))
        pos[1:] = rng.uniform(-box, box, size=(num_points - 1, 3))
        masses[1:] = rng.uniform(mass_range[0], mass_range[1], size=(num_points - 1, 1))
        pos_t, masses_t = torch.as_tensor(pos), torch.as_tensor(masses)
        clouds.append(
            PointCloud(
                pos=pos_t.to(dtype),
                features=masses_t.to(dtype),
                targets={"inertia": inertia_tensor(pos_t, masses_t).to(dtype)},
            )
        )
    return clouds
