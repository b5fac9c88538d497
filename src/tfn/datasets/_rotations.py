"""Uniform (Haar) random rotations for the dataset generators (numpy, float64)."""

from __future__ import annotations

import numpy as np

__all__ = ["random_rotations"]


def random_rotations(num: int, rng: np.random.Generator) -> np.ndarray:
    """``num`` rotation matrices ``[num, 3, 3]`` drawn from the Haar measure on SO(3).

    A quaternion with i.i.d. normal components, normalised, is uniform on the 3-sphere; its
    rotation matrix is then uniform on SO(3) (the sphere double-covers SO(3)).

    Example:
        >>> R = random_rotations(2, np.random.default_rng(0))
        >>> R.shape, bool(np.allclose(R @ R.transpose(0, 2, 1), np.eye(3)))
        ((2, 3, 3), True)
        >>> bool(np.allclose(np.linalg.det(R), 1.0))
        True
    """
    q = rng.standard_normal((num, 4))
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    while np.any(norm < 1e-12):  # measure zero; redraw to stay well defined
        bad = norm[:, 0] < 1e-12
        q[bad] = rng.standard_normal((int(bad.sum()), 4))
        norm = np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = (q / norm).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )
