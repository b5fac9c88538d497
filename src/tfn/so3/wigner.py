"""Rotations and the real Wigner D matrices of any degree.

``wigner_D(l, R)`` is defined by ``Y_l(R x) = D_l(R) Y_l(x)`` for the harmonics of
:mod:`tfn.so3.harmonics`. It is computed from that very identity: the harmonics are evaluated
at a fixed set of points and at the rotated points, and a precomputed float64 pseudo-inverse
of the (well conditioned) sample matrix turns the pair into ``D``. This works for every degree,
batches over rotations, is differentiable, and agrees with the harmonics by construction; the
tests check it independently against the SO(3) character and the group law.

Rotation parametrisations (all batched over leading dimensions):
quaternions ``(w, x, y, z)``, axis-angle (unit axis and angle, or a rotation vector), and Euler
angles ``(alpha, beta, gamma)`` in the Y-X-Y convention ``R = R_y(alpha) R_x(beta) R_y(gamma)``
(``y`` is the polar axis of the harmonics, as in e3nn).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import torch

from tfn.so3.harmonics import spherical_harmonics

__all__ = [
    "wigner_D",
    "random_rotation",
    "random_quaternion",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "angles_to_matrix",
    "matrix_to_angles",
    "rotation_x",
    "rotation_y",
    "rotation_z",
]


def random_quaternion(
    n: int, generator: torch.Generator | Any | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Uniform random unit quaternions ``[n, 4]`` (``w`` first, ``w >= 0``).

    Four i.i.d. normal components, normalised, are uniform on the 3-sphere. ``generator`` is a
    ``torch.Generator`` or a ``numpy.random.Generator`` (the dataset generators draw from
    numpy), or ``None`` for torch's global one.
    """
    if generator is not None and hasattr(generator, "standard_normal"):  # numpy
        q = torch.from_numpy(generator.standard_normal((n, 4)))
    else:
        q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    norm = q.norm(dim=-1, keepdim=True)
    q = q / torch.where(norm > 0, norm, torch.ones_like(norm))  # a zero draw has measure zero
    q[norm[:, 0] == 0, 0] = 1.0
    q = q * torch.where(q[:, :1] < 0, -1.0, 1.0)
    return q.to(dtype or torch.get_default_dtype())


def random_rotation(
    n: int, generator: torch.Generator | Any | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``n`` rotation matrices ``[n, 3, 3]`` drawn uniformly (Haar measure) from SO(3).

    The one rotation sampler of tfn: the matrices of :func:`random_quaternion` (the sphere
    double-covers SO(3)); ``generator`` as there (torch or numpy).

    Example:
        >>> R = random_rotation(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> bool(torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand(4, 3, 3)))
        True
    """
    return quaternion_to_matrix(random_quaternion(n, generator, torch.float64)).to(
        dtype or torch.get_default_dtype()
    )


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of quaternions ``[..., 4]`` (normalised first)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``[..., 4]`` (``w >= 0``) of rotation matrices ``[..., 3, 3]``.

    Uses the numerically best of the four standard formulas for each matrix.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    diag = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    # Candidate k is (4 q_k) * q; the one with the largest |q_k| is the best conditioned.
    candidates = torch.stack(
        [
            torch.stack([diag[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, diag[..., 1], m01 + m10, m02 + m20], -1),
            torch.stack([m02 - m20, m01 + m10, diag[..., 2], m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, diag[..., 3]], -1),
        ],
        dim=-2,
    )
    best = diag.argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0)


def axis_angle_to_matrix(axis: torch.Tensor, angle: torch.Tensor | None = None) -> torch.Tensor:
    """Rotation by ``angle`` about ``axis`` (right-handed); with ``angle=None``, ``axis`` is a
    rotation vector whose norm is the angle.

    Example:
        >>> R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(math.pi / 2))
        >>> [round(v, 6) + 0.0 for v in (R @ torch.tensor([1.0, 0.0, 0.0])).tolist()]  # x -> y
        [0.0, 1.0, 0.0]
    """
    if angle is None:
        angle = axis.norm(dim=-1)
        axis = axis / angle.clamp_min(torch.finfo(axis.dtype).tiny)[..., None]
    else:
        angle = torch.as_tensor(angle, dtype=axis.dtype, device=axis.device)
        axis = axis / axis.norm(dim=-1, keepdim=True)
    half = angle / 2
    q = torch.cat([torch.cos(half)[..., None], torch.sin(half)[..., None] * axis], dim=-1)
    return quaternion_to_matrix(q)


def matrix_to_axis_angle(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit axis ``[..., 3]`` and angle ``[...]`` in ``[0, pi]`` of rotation matrices."""
    q = matrix_to_quaternion(R)
    vec = q[..., 1:]
    sin_half = vec.norm(dim=-1)
    angle = 2 * torch.atan2(sin_half, q[..., 0])
    fallback = torch.zeros_like(vec)
    fallback[..., 2] = 1.0
    axis = torch.where(
        sin_half[..., None] > 0, vec / sin_half.clamp_min(1e-300)[..., None], fallback
    )
    return axis, angle


def _rotation(angle: torch.Tensor, i: int, j: int) -> torch.Tensor:
    angle = (
        torch.as_tensor(angle, dtype=torch.get_default_dtype())
        if not torch.is_tensor(angle)
        else angle
    )
    c, s = torch.cos(angle), torch.sin(angle)
    R = torch.zeros(angle.shape + (3, 3), dtype=angle.dtype, device=angle.device)
    k = 3 - i - j
    R[..., k, k] = 1
    R[..., i, i] = c
    R[..., j, j] = c
    R[..., i, j] = -s
    R[..., j, i] = s
    return R


def rotation_x(angle: torch.Tensor) -> torch.Tensor:
    """Rotation about the x axis, ``[..., 3, 3]``."""
    return _rotation(angle, 1, 2)


def rotation_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotation about the y axis, ``[..., 3, 3]``."""
    return _rotation(angle, 2, 0)


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotation about the z axis, ``[..., 3, 3]``."""
    return _rotation(angle, 0, 1)


def angles_to_matrix(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Euler angles (Y-X-Y): ``R = R_y(alpha) R_x(beta) R_y(gamma)``."""
    alpha, beta, gamma = torch.broadcast_tensors(
        *(torch.as_tensor(a) for a in (alpha, beta, gamma))
    )
    return rotation_y(alpha) @ rotation_x(beta) @ rotation_y(gamma)


def matrix_to_angles(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`angles_to_matrix`: ``beta`` in ``[0, pi]``, the others in ``(-pi, pi]``.

    At the gimbal-lock poles (``beta`` = 0 or pi) ``alpha`` is set to 0 and ``gamma`` carries
    the whole rotation about ``y``.

    Example:
        >>> a, b, c = torch.tensor(0.3), torch.tensor(1.2), torch.tensor(-2.0)
        >>> [round(float(t), 6) for t in matrix_to_angles(angles_to_matrix(a, b, c))]
        [0.3, 1.2, -2.0]
    """
    # R @ e_y = R_y(alpha) R_x(beta) e_y gives alpha and beta; then gamma from the rest.
    y = R[..., :, 1]
    # atan2 instead of acos keeps full precision near the poles.
    beta = torch.atan2(torch.hypot(y[..., 0], y[..., 2]), y[..., 1])
    alpha = torch.atan2(y[..., 0], y[..., 2])
    pole = torch.sin(beta).abs() < 1e-9
    alpha = torch.where(pole, torch.zeros_like(alpha), alpha)
    rest = (rotation_x(beta).transpose(-1, -2) @ rotation_y(alpha).transpose(-1, -2)) @ R
    gamma = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return alpha, beta, gamma


@cache
def _sample_points(l: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed points on the sphere and the pseudo-inverse of their harmonics (float64)."""
    n = 4 * l + 6
    i = torch.arange(n, dtype=torch.float64) + 0.5
    # A Fibonacci spiral, tilted by an irrational rotation so no symmetry axis is aligned.
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = torch.sqrt(1 - z * z)
    points = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    tilt = axis_angle_to_matrix(
        torch.tensor([0.3, 0.7, 0.2], dtype=torch.float64), torch.tensor(1.1)
    )
    points = points @ tilt.T
    Y = spherical_harmonics(l, points, normalize=False)
    return points, torch.linalg.pinv(Y)


def wigner_D(l: int, R: torch.Tensor) -> torch.Tensor:
    """Real Wigner D matrix of degree ``l`` for rotation matrices ``R [..., 3, 3]``.

    ``spherical_harmonics(l, R @ x) == wigner_D(l, R) @ spherical_harmonics(l, x)``.
    ``R`` must be a proper rotation (det +1); for reflections use
    :meth:`tfn.so3.Irreps.D_from_matrix`.

    Example:
        >>> R = random_rotation(2, dtype=torch.float64)
        >>> D = wigner_D(1, R)  # the l = 1 block is the Cartesian vector (x, y, z)
        >>> bool(torch.allclose(D, R))
        True
    """
    if l < 0:
        raise ValueError(f"wigner_D: degree must be >= 0, got {l}")
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"wigner_D: R must have shape [..., 3, 3], got {tuple(R.shape)}")
    points, pinv = _sample_points(l)
    points = points.to(dtype=R.dtype, device=R.device)
    pinv = pinv.to(dtype=R.dtype, device=R.device)
    rotated = torch.einsum("...ij,pj->...pi", R, points)
    Y = spherical_harmonics(l, rotated, normalize=False)  # [..., P, 2l+1] = Y(points) D^T
    return (pinv @ Y).transpose(-1, -2)
