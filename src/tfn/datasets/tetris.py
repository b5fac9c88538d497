"""3D Tetris: the 8 shapes made of 4 unit cubes, classified from the cube centres.

The training split holds each shape once, in its canonical orientation; the test split holds
randomly rotated and translated copies. A rotation-equivariant network trained on the 8 canonical
shapes classifies every rotated copy correctly; the two chiral shapes are mirror images of each
other, so a network that is equivariant to rotations but not reflections can tell them apart.
"""

from __future__ import annotations

import numpy as np
import torch

from tfn.data.batch import PointCloud
from tfn.so3.wigner import random_rotation

__all__ = ["TETRIS_SHAPES", "TETRIS_POINTS", "tetris", "mirror"]

#: Class names, in label order (label ``i`` is ``TETRIS_SHAPES[i]``).
TETRIS_SHAPES: tuple[str, ...] = (
    "chiral_1",
    "chiral_2",
    "square",
    "line",
    "corner",
    "L",
    "T",
    "zigzag",
)

#: Integer cube centres of each shape, in label order (aligned with ``TETRIS_SHAPES``).
TETRIS_POINTS: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((0, 0, 0), (0, 0, 1), (1, 0, 0), (1, 1, 0)),  # chiral_1
    ((0, 0, 0), (0, 0, 1), (1, 0, 0), (1, -1, 0)),  # chiral_2
    ((0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)),  # square
    ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)),  # line
    ((0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)),  # corner
    ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)),  # L
    ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 1)),  # T
    ((0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0)),  # zigzag
)

# Label of the mirror image of each shape (only the chiral pair changes class).
_MIRROR_LABEL = (1, 0, 2, 3, 4, 5, 6, 7)


def _cloud(points: np.ndarray, label: int, dtype: torch.dtype) -> PointCloud:
    pos = torch.as_tensor(points, dtype=dtype)
    return PointCloud(
        pos=pos,
        features=torch.ones(pos.shape[0], 1, dtype=dtype),
        targets={"label": torch.tensor(label, dtype=torch.long)},
    )


def tetris(
    split: str = "train",
    num_rotations: int = 500,
    seed: int = 0,
    translate: float = 2.0,
    dtype: torch.dtype = torch.float32,
) -> list[PointCloud]:
    """The 3D Tetris classification data set.

    Args:
        split: ``"train"``: the 8 shapes once each, canonical orientation (``TETRIS_POINTS``);
            ``"test"``: ``num_rotations`` clouds, shapes cycling in label order, each rotated by a
            uniform random rotation (about the origin) and then translated by a vector uniform in
            ``[-translate, translate]^3``.
        num_rotations: number of test clouds (ignored for ``"train"``).
        seed: seed of the random rotations and translations.
        translate: half-width of the translation box.
        dtype: floating dtype of positions and features.

    Returns:
        Clouds of 4 points with features ``[4, 1]`` of ones (irreps ``"1x0e"``) and the per-cloud
        target ``"label"`` (a scalar LongTensor, index into ``TETRIS_SHAPES``).

    Example:
        >>> train = tetris("train")
        >>> len(train), train[0].pos.shape, train[0].features.shape, int(train[1].targets["label"])
        (8, torch.Size([4, 3]), torch.Size([4, 1]), 1)
        >>> len(tetris("test", num_rotations=20, seed=1))
        20
    """
    shapes = [np.asarray(p, dtype=np.float64) for p in TETRIS_POINTS]
    if split == "train":
        return [_cloud(p, label, dtype) for label, p in enumerate(shapes)]
    if split != "test":
        raise ValueError(f"tetris: split must be 'train' or 'test', got {split!r}")
    if num_rotations < 0:
        raise ValueError(f"tetris: num_rotations must be >= 0, got {num_rotations}")
    rng = np.random.default_rng(seed)
    rotations = random_rotation(num_rotations, rng, torch.float64).numpy()
    shifts = rng.uniform(-translate, translate, size=(num_rotations, 3))
    clouds = []
    for i in range(num_rotations):
        label = i % len(shapes)
        clouds.append(_cloud(shapes[label] @ rotations[i].T + shifts[i], label, dtype))
    return clouds


def mirror(cloud: PointCloud) -> PointCloud:
    """Reflect a cloud through the plane ``x = 0`` (``x -> -x``).

    Features are copied unchanged (they are scalars). A ``"label"`` target is mapped to the class
    of the mirror image: ``chiral_1`` and ``chiral_2`` swap, the other (achiral) shapes keep theirs.

    Example:
        >>> m = mirror(tetris("train")[0])
        >>> m.pos[:, 0].tolist(), int(m.targets["label"])
        ([0.0, 0.0, -1.0, -1.0], 1)
    """
    pos = cloud.pos.clone()
    pos[:, 0] = 0.0 - pos[:, 0]  # (not -x: keeps 0.0 rather than -0.0)
    targets = dict(cloud.targets)
    if "label" in targets:
        label = targets["label"]
        targets["label"] = torch.tensor(
            [_MIRROR_LABEL[int(v)] for v in label.reshape(-1)], dtype=label.dtype
        ).reshape(label.shape)
    return PointCloud(pos, cloud.features.clone(), targets, cloud.point_targets)
