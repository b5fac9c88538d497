"""Newtonian gravity: predict the acceleration of every point mass (a vector per point)."""

from __future__ import annotations

import numpy as np
import torch

from tfn.data.batch import PointCloud

__all__ = ["gravity", "gravitational_acceleration"]


def gravitational_acceleration(pos: torch.Tensor, masses: torch.Tensor, G: float = 1.0):
    """Acceleration of each point, ``a_a = G sum_{b != a} m_b (r_b - r_a) / |r_b - r_a|^3``.

    Args:
        pos: positions ``[n, 3]`` (distinct points).
        masses: ``[n]`` or ``[n, 1]``.
        G: gravitational constant.

    Returns:
        ``[n, 3]``, same dtype as ``pos``.

    Example:
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
        >>> gravitational_acceleration(pos, torch.tensor([1.0, 4.0])).tolist()
        [[1.0, 0.0, 0.0], [-0.25, 0.0, 0.0]]
    """
    m = masses.reshape(-1).to(pos.dtype)
    diff = pos[None, :, :] - pos[:, None, :]  # diff[a, b] = r_b - r_a
    dist = torch.linalg.vector_norm(diff, dim=-1)
    inv3 = dist.pow(-3).fill_diagonal_(0.0)
    return G * torch.einsum("ab,b,abi->ai", inv3, m, diff)


def _sample_separated(n: int, box: float, min_sep: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform in ``[-box, box]^3``, pairwise at least ``min_sep`` apart.

    Points are placed one after another; each is redrawn until it is far enough from the points
    already placed (sequential rejection sampling).
    """
    points = np.empty((n, 3))
    block = 64
    for i in range(n):
        for _ in range(1000):
            cand = rng.uniform(-box, box, size=(block, 3))
            if i == 0:
                points[0] = cand[0]
                break
            d = np.linalg.norm(cand[:, None, :] - points[None, :i, :], axis=-1).min(axis=1)
            ok = np.flatnonzero(d >= min_sep)
            if ok.size:
                points[i] = cand[ok[0]]
                break
        else:
            raise ValueError(
                f"gravity: could not place {n} points at least {min_sep} apart in the box "
                f"[-{box}, {box}]^3; lower min_separation or max_points, or enlarge box"
            )
    return points


def gravity(
    num_clouds: int,
    min_points: int = 2,
    max_points: int = 10,
    box: float = 2.0,
    min_separation: float = 0.5,
    mass_range: tuple[float, float] = (0.5, 2.0),
    G: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> list[PointCloud]:
    """Random clouds of point masses with their gravitational accelerations.

    Each cloud has ``n`` points (``n`` uniform in ``[min_points, max_points]``), uniform in
    ``[-box, box]^3`` and pairwise at least ``min_separation`` apart, with masses uniform in
    ``mass_range``.

    Returns:
        Clouds with features = masses ``[n, 1]`` (irreps ``"1x0e"``) and the per-point target
        ``"acceleration"`` ``[n, 3]`` (irreps ``"1o"``), computed in float64 by
        :func:`gravitational_acceleration`; ``point_targets == ("acceleration",)``.

    Example:
        >>> clouds = gravity(3, min_points=4, max_points=6, seed=1)
        >>> [4 <= c.num_points <= 6 for c in clouds], clouds[0].targets["acceleration"].shape[1]
        ([True, True, True], 3)
    """
    if not 1 <= min_points <= max_points:
        raise ValueError(
            f"gravity: need 1 <= min_points <= max_points, got {min_points}, {max_points}"
        )
    rng = np.random.default_rng(seed)
    clouds = []
    for _ in range(num_clouds):
        n = int(rng.integers(min_points, max_points, endpoint=True))
        pos = torch.as_tensor(_sample_separated(n, box, min_separation, rng))
        masses = torch.as_tensor(rng.uniform(mass_range[0], mass_range[1], size=(n, 1)))
        acc = gravitational_acceleration(pos, masses, G)
        clouds.append(
            PointCloud(
                pos=pos.to(dtype),
                features=masses.to(dtype),
                targets={"acceleration": acc.to(dtype)},
                point_targets=("acceleration",),
            )
        )
    return clouds
