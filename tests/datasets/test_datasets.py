import itertools

import numpy as np
import pytest
import torch

import tfn.datasets
from tfn.data import collate
from tfn.datasets import (
    TETRIS_POINTS,
    TETRIS_SHAPES,
    gravitational_acceleration,
    gravity,
    inertia,
    inertia_tensor,
    mirror,
    tetris,
)
from tfn.so3 import random_rotation


def proper_match_residual(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest RMS distance between b and a rotated + translated copy of a (rotation in SO(3)),
    over all correspondences of the points (Kabsch with the determinant fixed to +1)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    best = np.inf
    for perm in itertools.permutations(range(len(a))):
        bp = b[list(perm)]
        u, _, vt = np.linalg.svd(a.T @ bp)
        d = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag([1.0, 1.0, d]) @ vt  # a @ rot ~ bp
        best = min(best, float(np.sqrt(((a @ rot - bp) ** 2).sum(1).mean())))
    return best


def sorted_distances(p: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    return np.sort(d[np.triu_indices(len(p), 1)])


def path_chirality(p: np.ndarray) -> float:
    """Triple product of the 3 unit edges of a 4-cube path (invariant under rotations and under
    reversing the path; flips sign under reflections)."""
    adj = np.isclose(np.linalg.norm(p[:, None] - p[None], axis=-1), 1.0)
    deg = adj.sum(1)
    path = [int(np.flatnonzero(deg == 1)[0])]
    while len(path) < len(p):
        nxt = [j for j in np.flatnonzero(adj[path[-1]]) if j not in path]
        path.append(int(nxt[0]))
    e = np.diff(p[path], axis=0)
    return float(np.dot(e[0], np.cross(e[1], e[2])))


# ----------------------------------------------------------------------------- rotations


def random_rotations(num, rng):
    return random_rotation(num, rng, torch.float64).numpy()


def test_random_rotations_from_numpy_are_rotations_and_uniform():
    """The one sampler (tfn.so3.random_rotation) also draws from a numpy generator, as the
    dataset generators do."""
    rot = random_rotations(4000, np.random.default_rng(0))
    assert rot.shape == (4000, 3, 3)
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rot), 1.0)
    # Haar: E[R] = 0, and the image of a fixed vector is uniform on the sphere (E[z^2] = 1/3)
    assert np.abs(rot.mean(0)).max() < 0.05
    v = rot @ np.array([0.0, 0.0, 1.0])
    assert abs((v[:, 2] ** 2).mean() - 1 / 3) < 0.03
    # trace distribution: E[tr R] = 0, E[tr R^2] = 1 for Haar on SO(3)
    tr = np.trace(rot, axis1=1, axis2=2)
    assert abs(tr.mean()) < 0.05
    assert abs((tr**2).mean() - 1.0) < 0.1
    assert np.array_equal(rot, random_rotations(4000, np.random.default_rng(0)))


# ----------------------------------------------------------------------------- tetris


def test_tetris_constants():
    assert TETRIS_SHAPES == (
        "chiral_1",
        "chiral_2",
        "square",
        "line",
        "corner",
        "L",
        "T",
        "zigzag",
    )
    assert len(TETRIS_POINTS) == 8
    for pts in TETRIS_POINTS:
        p = np.asarray(pts, dtype=float)
        assert p.shape == (4, 3)
        # 4 distinct unit cubes, face-connected
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        assert (d[np.triu_indices(4, 1)] >= 1).all()
        assert np.isclose(d, 1.0).sum() // 2 >= 3


def test_tetris_train_split():
    train = tetris("train")
    assert len(train) == 8
    for label, cloud in enumerate(train):
        assert cloud.pos.dtype == torch.float32
        assert torch.equal(cloud.pos, torch.tensor(TETRIS_POINTS[label], dtype=torch.float32))
        assert torch.equal(cloud.features, torch.ones(4, 1))
        t = cloud.targets["label"]
        assert t.dtype == torch.long and t.shape == () and int(t) == label
        assert cloud.point_targets == ()
    batch = collate(train)
    assert batch.targets["label"].tolist() == list(range(8))
    assert tetris("train", dtype=torch.float64)[0].pos.dtype == torch.float64


def test_tetris_test_split_is_rotated_translated_and_deterministic():
    test = tetris("test", num_rotations=40, seed=3, translate=2.0, dtype=torch.float64)
    assert len(test) == 40
    assert [int(c.targets["label"]) for c in test] == [i % 8 for i in range(40)]
    for i, c in enumerate(test):
        canon = np.asarray(TETRIS_POINTS[i % 8], dtype=float)
        p = c.pos.numpy()
        assert np.allclose(sorted_distances(p), sorted_distances(canon))
        assert proper_match_residual(canon, p) < 1e-9  # a proper rotation + translation
        # rotation about the origin, then a shift in the box; every shape has a cube at the
        # origin (its first point), so that point lands exactly on the shift
        assert np.array_equal(canon[0], np.zeros(3))
        assert np.abs(p[0]).max() <= 2.0
    again = tetris("test", num_rotations=40, seed=3, dtype=torch.float64)
    assert all(torch.equal(a.pos, b.pos) for a, b in zip(test, again))
    other = tetris("test", num_rotations=40, seed=4, dtype=torch.float64)
    assert not torch.equal(test[0].pos, other[0].pos)
    with pytest.raises(ValueError, match="split"):
        tetris("valid")


def test_generators_leave_global_rng_untouched():
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is what we check)
    tetris("test", num_rotations=10)
    gravity(2)
    inertia(2)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()  # noqa: NPY002
    assert after[1].tolist() == np_state[1].tolist() and after[2:] == np_state[2:]


def test_tetris_chiral_pair_are_mirror_images():
    c1 = np.asarray(TETRIS_POINTS[0], dtype=float)
    c2 = np.asarray(TETRIS_POINTS[1], dtype=float)
    # same distances (indistinguishable by any rotation-and-reflection invariant of distances)
    assert np.allclose(sorted_distances(c1), sorted_distances(c2))
    # no proper rotation maps one to the other ...
    assert proper_match_residual(c1, c2) > 0.1
    assert np.sign(path_chirality(c1)) == -np.sign(path_chirality(c2)) != 0
    # ... but the mirror image of chiral_1 is a rotated + translated chiral_2
    m = mirror(tetris("train")[0])
    assert int(m.targets["label"]) == 1
    assert proper_match_residual(c2, m.pos.numpy().astype(float)) < 1e-6
    assert np.sign(path_chirality(m.pos.numpy().astype(float))) == np.sign(path_chirality(c2))


def test_tetris_shapes_pairwise_distinct_under_rotation():
    pts = [np.asarray(p, dtype=float) for p in TETRIS_POINTS]
    for i, j in itertools.combinations(range(8), 2):
        assert proper_match_residual(pts[i], pts[j]) > 0.1, (TETRIS_SHAPES[i], TETRIS_SHAPES[j])


def test_mirror():
    for label, cloud in enumerate(tetris("test", num_rotations=16, seed=5)):
        m = mirror(cloud)
        assert torch.equal(m.pos[:, 0], -cloud.pos[:, 0])
        assert torch.equal(m.pos[:, 1:], cloud.pos[:, 1:])
        assert torch.equal(m.features, cloud.features)
        expected = {0: 1, 1: 0}.get(label % 8, label % 8)
        assert int(m.targets["label"]) == expected
        # achiral shapes: the mirror image is a proper rotation of the shape itself
        canon = np.asarray(TETRIS_POINTS[expected], dtype=float)
        assert proper_match_residual(canon, m.pos.double().numpy()) < 1e-5
        # the original is unchanged
        assert int(cloud.targets["label"]) == label % 8
        assert torch.equal(mirror(m).pos, cloud.pos)


# ----------------------------------------------------------------------------- gravity


def test_gravitational_acceleration_two_points():
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
    m = torch.tensor([[2.0], [5.0]], dtype=torch.float64)
    acc = gravitational_acceleration(pos, m, G=0.5)
    # |a_0| = G m_1 / r^2 = 0.5 * 5 / 9 toward point 1; |a_1| = 0.5 * 2 / 9 toward point 0
    expected = torch.tensor([[0.0, 2.5 / 9, 0.0], [0.0, -1.0 / 9, 0.0]], dtype=torch.float64)
    assert torch.allclose(acc, expected)
    # momentum conservation: sum m_a a_a = 0
    assert torch.allclose((m * acc).sum(0), torch.zeros(3, dtype=torch.float64))


def test_gravitational_acceleration_three_points():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    m = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    acc = gravitational_acceleration(pos, m)
    s5 = 5.0**1.5  # |r_2 - r_1|^3 with r_2 - r_1 = (-1, 2, 0)
    expected = torch.tensor(
        [
            [2.0 * 1.0, 4.0 * 2.0 / 8.0, 0.0],  # from 1: 2*(1,0,0)/1; from 2: 4*(0,2,0)/8
            [-1.0 + 4.0 * -1.0 / s5, 4.0 * 2.0 / s5, 0.0],  # from 0: 1*(-1,0,0)/1
            [1.0 * 0.0 + 2.0 * 1.0 / s5, 1.0 * -2.0 / 8.0 + 2.0 * -2.0 / s5, 0.0],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(acc, expected)
    assert torch.allclose((m[:, None] * acc).sum(0), torch.zeros(3, dtype=torch.float64))


def test_gravity_dataset():
    clouds = gravity(30, seed=7)
    assert len(clouds) == 30
    sizes = {c.num_points for c in clouds}
    assert min(sizes) >= 2 and max(sizes) <= 10 and len(sizes) > 3
    for c in clouds:
        n = c.num_points
        assert c.pos.shape == (n, 3) and c.pos.dtype == torch.float32
        assert c.features.shape == (n, 1)
        assert c.point_targets == ("acceleration",)
        assert c.targets["acceleration"].shape == (n, 3)
        assert bool((c.pos.abs() <= 2.0).all())
        assert bool(((c.features >= 0.5) & (c.features <= 2.0)).all())
        d = torch.cdist(c.pos.double(), c.pos.double()) + 1e9 * torch.eye(n)
        assert float(d.min()) >= 0.5 - 1e-6
        ref = gravitational_acceleration(c.pos.double(), c.features.double())
        assert torch.allclose(c.targets["acceleration"].double(), ref, rtol=1e-4, atol=1e-5)
    batch = collate(clouds)
    assert batch.targets["acceleration"].shape == (batch.num_points, 3)
    again = gravity(30, seed=7)
    assert all(torch.equal(a.pos, b.pos) for a, b in zip(clouds, again))
    assert gravity(2, dtype=torch.float64)[0].targets["acceleration"].dtype == torch.float64


def test_gravity_large_validation_clouds():
    clouds = gravity(3, min_points=50, max_points=50, seed=1)
    assert [c.num_points for c in clouds] == [50, 50, 50]
    for c in clouds:
        d = torch.cdist(c.pos.double(), c.pos.double()) + 1e9 * torch.eye(50)
        assert float(d.min()) >= 0.5 - 1e-6
    with pytest.raises(ValueError, match="could not place"):
        gravity(1, min_points=30, max_points=30, box=0.5, min_separation=1.0)
    with pytest.raises(ValueError, match="min_points"):
        gravity(1, min_points=5, max_points=3)


# ----------------------------------------------------------------------------- inertia


def test_inertia_dataset():
    clouds = inertia(20, seed=2)
    for c in clouds:
        assert c.pos.shape == (15, 3) and c.features.shape == (15, 1)
        assert torch.equal(c.pos[0], torch.zeros(3)) and float(c.features[0, 0]) == 0.0
        assert bool((c.pos.abs() <= 0.5).all())
        assert bool(((c.features[1:] >= 0.5) & (c.features[1:] <= 2.0)).all())
        t = c.targets["inertia"]
        assert t.shape == (3, 3) and c.point_targets == ()
        assert torch.allclose(t, t.T)
        # trace formula: tr I = 2 sum_b m_b |r_b|^2
        m, r = c.features[:, 0].double(), c.pos.double()
        assert torch.allclose(t.trace().double(), 2 * (m * (r * r).sum(1)).sum(), rtol=1e-5)
        # positive semi-definite, and each principal moment <= sum of the other two
        ev = torch.linalg.eigvalsh(t.double())
        assert bool((ev >= -1e-6).all()) and float(ev[2]) <= float(ev[0] + ev[1]) + 1e-5
    assert collate(clouds).targets["inertia"].shape == (20, 3, 3)
    assert torch.equal(inertia(3, seed=2)[1].pos, clouds[1].pos)


def test_inertia_tensor_hand_computed_and_rotation_covariant():
    pos = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    m = torch.tensor([2.0, 1.0], dtype=torch.float64)
    expected = torch.tensor(
        [[2 * 4 + 9, -2 * 2, 0], [-2 * 2, 2 * 1 + 9, 0], [0, 0, 2 * 5]], dtype=torch.float64
    )
    assert torch.allclose(inertia_tensor(pos, m), expected)

    c = inertia(1, seed=9, dtype=torch.float64)[0]
    rots = torch.as_tensor(random_rotations(5, np.random.default_rng(1)))
    for R in rots:
        rotated = inertia_tensor(c.pos @ R.T, c.features)
        assert torch.allclose(rotated, R @ c.targets["inertia"] @ R.T, atol=1e-12)


def test_public_api():
    assert set(tfn.datasets.__all__) >= set(
        [
            "TETRIS_POINTS",
            "TETRIS_SHAPES",
            "gravitational_acceleration",
            "gravity",
            "inertia",
            "inertia_tensor",
            "mirror",
            "tetris",
        ]
    )
    for name in tfn.datasets.__all__:
        assert hasattr(tfn.datasets, name)
