"""Wigner D matrices and rotation parametrisations."""

from __future__ import annotations

import math

import pytest
import torch

from tfn.so3 import (
    angles_to_matrix,
    axis_angle_to_matrix,
    matrix_to_angles,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    quaternion_to_matrix,
    random_quaternion,
    random_rotation,
    rotation_x,
    rotation_y,
    rotation_z,
    spherical_harmonics,
    wigner_D,
)

F64 = torch.float64
LMAX = 16


def _rotations(n: int, seed: int, dtype=F64) -> torch.Tensor:
    return random_rotation(n, torch.Generator().manual_seed(seed), dtype)


def _eye(n: int, dtype=F64) -> torch.Tensor:
    return torch.eye(n, dtype=dtype)


# ----------------------------------------------------------------------------- group properties


def test_orthogonal_identity_transpose_every_degree():
    R = _rotations(5, 0)
    I3 = _eye(3)
    for l in range(LMAX + 1):
        D = wigner_D(l, R)
        eye = _eye(2 * l + 1).expand_as(D)
        torch.testing.assert_close(D @ D.transpose(-1, -2), eye, atol=1e-11, rtol=0)
        torch.testing.assert_close(wigner_D(l, I3), eye[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(
            wigner_D(l, R.transpose(-1, -2)), D.transpose(-1, -2), atol=1e-11, rtol=0
        )
        det = torch.linalg.det(D)
        torch.testing.assert_close(det, torch.ones_like(det), atol=1e-10, rtol=0)


def test_homomorphism_every_degree():
    A, B = _rotations(4, 1), _rotations(4, 2)
    for l in range(LMAX + 1):
        torch.testing.assert_close(
            wigner_D(l, A @ B), wigner_D(l, A) @ wigner_D(l, B), atol=1e-11, rtol=0
        )


def test_character_every_degree():
    """trace D_l(R) = sin((2l+1) t/2) / sin(t/2), t the rotation angle (an SO(3) invariant)."""
    R = _rotations(50, 3)
    _, t = matrix_to_axis_angle(R)
    # also angles from the trace, independently of matrix_to_axis_angle
    t_trace = torch.acos(((R.diagonal(dim1=-1, dim2=-2).sum(-1) - 1) / 2).clamp(-1, 1))
    torch.testing.assert_close(t, t_trace, atol=1e-7, rtol=0)
    for l in range(LMAX + 1):
        chi = wigner_D(l, R).diagonal(dim1=-1, dim2=-2).sum(-1)
        expected = torch.sin((2 * l + 1) * t / 2) / torch.sin(t / 2)
        torch.testing.assert_close(chi, expected, atol=1e-10, rtol=0)


def test_character_of_special_angles():
    for l in range(9):
        # rotation by pi: (-1)^l; by 2pi/3 about any axis: 1, 0, -1 pattern
        chi_pi = wigner_D(l, rotation_x(torch.tensor(math.pi, dtype=F64))).trace()
        assert abs(float(chi_pi) - (-1) ** l) < 1e-11
        chi = wigner_D(l, rotation_z(torch.tensor(2 * math.pi / 3, dtype=F64))).trace()
        assert abs(float(chi) - [1, 0, -1][l % 3]) < 1e-11


def test_l0_and_l1():
    R = _rotations(7, 4)
    torch.testing.assert_close(wigner_D(0, R), torch.ones(7, 1, 1, dtype=F64))
    torch.testing.assert_close(wigner_D(1, R), R, atol=1e-13, rtol=0)


def test_defining_identity():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    R = _rotations(3, 6)
    for l in [0, 1, 2, 7, LMAX, 20]:
        lhs = spherical_harmonics(l, torch.einsum("rij,nj->rni", R, x))
        rhs = spherical_harmonics(l, x) @ wigner_D(l, R).transpose(-1, -2)
        torch.testing.assert_close(lhs, rhs, atol=1e-10, rtol=0)


def test_rotation_about_y_is_explicit():
    """D_l(R_y(a)) acts on the pair (m, -m) as a rotation by m a (y is the polar axis)."""
    a = 0.83
    for l in range(8):
        D = wigner_D(l, rotation_y(torch.tensor(a, dtype=F64)))
        expected = torch.zeros(2 * l + 1, 2 * l + 1, dtype=F64)
        expected[l, l] = 1
        for m in range(1, l + 1):
            c, s = math.cos(m * a), math.sin(m * a)
            expected[l + m, l + m], expected[l + m, l - m] = c, -s
            expected[l - m, l - m], expected[l - m, l + m] = c, s
        torch.testing.assert_close(D, expected, atol=1e-12, rtol=0)


def test_euler_factorisation():
    a, b, c = (torch.tensor(v, dtype=F64) for v in (0.4, 1.1, -2.3))
    for l in [1, 3, 6]:
        torch.testing.assert_close(
            wigner_D(l, angles_to_matrix(a, b, c)),
            wigner_D(l, rotation_y(a)) @ wigner_D(l, rotation_x(b)) @ wigner_D(l, rotation_y(c)),
            atol=1e-12,
            rtol=0,
        )


def test_batched_shapes():
    R = _rotations(6, 7).reshape(2, 3, 3, 3)
    D = wigner_D(3, R)
    assert D.shape == (2, 3, 7, 7)
    torch.testing.assert_close(D.reshape(6, 7, 7), wigner_D(3, R.reshape(6, 3, 3)))
    assert wigner_D(2, torch.eye(3)).shape == (5, 5)
    assert wigner_D(2, torch.zeros(0, 3, 3)).shape == (0, 5, 5)


def test_errors():
    with pytest.raises(ValueError):
        wigner_D(-1, torch.eye(3))
    with pytest.raises(ValueError):
        wigner_D(1, torch.eye(4))


def test_float32():
    R = _rotations(4, 8)
    for l in [1, 4, 8, 12]:
        D32 = wigner_D(l, R.float())
        assert D32.dtype == torch.float32
        torch.testing.assert_close(D32.double(), wigner_D(l, R), atol=1e-5, rtol=0)


def test_differentiable():
    q = torch.randn(2, 4, generator=torch.Generator().manual_seed(9), dtype=F64)
    q.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: wigner_D(2, quaternion_to_matrix(v)), (q,))


def test_haar_average_of_d_vanishes():
    """Over Haar-random R, the mean of D_l(R) is 0 for l >= 1 (Schur orthogonality)."""
    R = _rotations(20000, 10)
    for l in [1, 2, 3]:
        mean = wigner_D(l, R).mean(0)
        assert float(mean.abs().max()) < 0.03


# ----------------------------------------------------------------------------- elementary rotations


def test_elementary_rotations_are_right_handed():
    q = torch.tensor(math.pi / 2, dtype=F64)
    ex, ey, ez = _eye(3)
    torch.testing.assert_close(rotation_z(q) @ ex, ey, atol=1e-15, rtol=0)
    torch.testing.assert_close(rotation_x(q) @ ey, ez, atol=1e-15, rtol=0)
    torch.testing.assert_close(rotation_y(q) @ ez, ex, atol=1e-15, rtol=0)
    angles = torch.rand(5, dtype=F64) * 6
    for fn, axis in [(rotation_x, ex), (rotation_y, ey), (rotation_z, ez)]:
        R = fn(angles)
        assert R.shape == (5, 3, 3)
        torch.testing.assert_close(R, axis_angle_to_matrix(axis.expand(5, 3), angles))
    assert rotation_x(0.3).dtype == torch.get_default_dtype()


# ----------------------------------------------------------------------------- conversions


def test_quaternion_round_trip():
    q = random_quaternion(100, torch.Generator().manual_seed(11), F64)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(100, dtype=F64))
    assert (q[:, 0] >= 0).all()
    R = quaternion_to_matrix(q)
    torch.testing.assert_close(R @ R.transpose(-1, -2), _eye(3).expand(100, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(100, dtype=F64))
    torch.testing.assert_close(matrix_to_quaternion(R), q, atol=1e-13, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(-q), R)  # double cover
    torch.testing.assert_close(quaternion_to_matrix(3.0 * q), R)  # normalised first


def test_quaternion_every_branch():
    """Each of the four formulas of matrix_to_quaternion: near identity, and pi about x, y, z."""
    pi = torch.tensor(math.pi, dtype=F64)
    eps = torch.tensor(1e-3, dtype=F64)
    mats = [
        _eye(3),
        rotation_x(eps),
        rotation_x(pi),
        rotation_y(pi),
        rotation_z(pi),
        rotation_x(pi - eps),
        rotation_y(pi - eps) @ rotation_z(eps),
        rotation_z(pi - eps),
    ]
    for R in mats:
        q = matrix_to_quaternion(R)
        assert abs(float(q.norm()) - 1) < 1e-14 and q[0] >= 0
        torch.testing.assert_close(quaternion_to_matrix(q), R, atol=1e-14, rtol=0)
    # the sign of the quaternion: a rotation by t about +x has w = cos(t/2), x = sin(t/2)
    q = matrix_to_quaternion(rotation_x(torch.tensor(0.6, dtype=F64)))
    torch.testing.assert_close(
        q, torch.tensor([math.cos(0.3), math.sin(0.3), 0, 0], dtype=F64), atol=1e-15, rtol=0
    )


def test_axis_angle_round_trip():
    g = torch.Generator().manual_seed(12)
    axis = torch.randn(64, 3, generator=g, dtype=F64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(64, generator=g, dtype=F64) * math.pi
    R = axis_angle_to_matrix(axis, angle)
    a2, t2 = matrix_to_axis_angle(R)
    torch.testing.assert_close(t2, angle, atol=1e-12, rtol=0)
    torch.testing.assert_close(a2, axis, atol=1e-12, rtol=0)
    torch.testing.assert_close(axis_angle_to_matrix(a2, t2), R, atol=1e-14, rtol=0)
    # rotation vectors
    torch.testing.assert_close(axis_angle_to_matrix(axis * angle[:, None]), R, atol=1e-14, rtol=0)
    # an angle beyond pi comes back as 2 pi - t about -axis
    R = axis_angle_to_matrix(axis[0], torch.tensor(4.0, dtype=F64))
    a3, t3 = matrix_to_axis_angle(R)
    assert abs(float(t3) - (2 * math.pi - 4.0)) < 1e-12
    torch.testing.assert_close(a3, -axis[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "angle", [0.0, 1e-14, 1e-10, 1e-7, 1e-4, math.pi - 1e-4, math.pi - 1e-9, math.pi]
)
def test_axis_angle_near_zero_and_pi(angle):
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=F64)
    axis = axis / axis.norm()
    t = torch.tensor(angle, dtype=F64)
    R = axis_angle_to_matrix(axis, t)
    a2, t2 = matrix_to_axis_angle(R)
    assert abs(float(t2) - angle) < 1e-12
    assert abs(float(a2.norm()) - 1) < 1e-12
    torch.testing.assert_close(axis_angle_to_matrix(a2, t2), R, atol=1e-14, rtol=0)
    if angle >= 1e-7:  # below, the axis is not determined by R to 1e-8
        assert min(float((a2 - axis).norm()), float((a2 + axis).norm())) < 1e-7
    # matrix from a rotation vector of zero length is the identity
    torch.testing.assert_close(axis_angle_to_matrix(torch.zeros(3, dtype=F64)), _eye(3))


def test_euler_y_x_y():
    a, b, c = (torch.tensor(v, dtype=F64) for v in (0.3, 1.2, -2.0))
    R = angles_to_matrix(a, b, c)
    torch.testing.assert_close(R, rotation_y(a) @ rotation_x(b) @ rotation_y(c))
    # R e_y depends on alpha and beta only: (sin a sin b, cos b, cos a sin b)
    expected = torch.stack([a.sin() * b.sin(), b.cos(), a.cos() * b.sin()])
    torch.testing.assert_close(R[:, 1], expected)


def test_euler_round_trip():
    g = torch.Generator().manual_seed(13)
    R = random_rotation(200, g, F64)
    a, b, c = matrix_to_angles(R)
    assert ((b >= 0) & (b <= math.pi)).all()
    assert ((a > -math.pi - 1e-12) & (a <= math.pi + 1e-12)).all()
    assert ((c > -math.pi - 1e-12) & (c <= math.pi + 1e-12)).all()
    torch.testing.assert_close(angles_to_matrix(a, b, c), R, atol=1e-12, rtol=0)
    # angles in the canonical range come back unchanged
    a0 = (torch.rand(50, generator=g, dtype=F64) * 2 - 1) * 3.1
    b0 = torch.rand(50, generator=g, dtype=F64) * 3.1 + 0.02
    c0 = (torch.rand(50, generator=g, dtype=F64) * 2 - 1) * 3.1
    for got, want in zip(matrix_to_angles(angles_to_matrix(a0, b0, c0)), (a0, b0, c0)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("beta", [0.0, math.pi, 1e-3, math.pi - 1e-3])
def test_euler_gimbal_lock(beta):
    R = angles_to_matrix(*(torch.tensor(v, dtype=F64) for v in (0.7, beta, -0.4)))
    a, b, c = matrix_to_angles(R)
    torch.testing.assert_close(angles_to_matrix(a, b, c), R, atol=1e-12, rtol=0)


@pytest.mark.parametrize("beta", [1e-6, 1e-8, 1e-9, math.pi - 1e-8])
def test_euler_near_gimbal_lock_is_accurate(beta):
    R = angles_to_matrix(*(torch.tensor(v, dtype=F64) for v in (0.7, beta, -0.4)))
    torch.testing.assert_close(angles_to_matrix(*matrix_to_angles(R)), R, atol=1e-13, rtol=0)


def test_euler_near_gimbal_lock_is_loosely_right():
    for beta in [1e-6, 1e-8, 1e-9, math.pi - 1e-8]:
        R = angles_to_matrix(*(torch.tensor(v, dtype=F64) for v in (0.7, beta, -0.4)))
        torch.testing.assert_close(angles_to_matrix(*matrix_to_angles(R)), R, atol=1e-7, rtol=0)


def test_batched_conversions():
    R = _rotations(12, 14).reshape(3, 4, 3, 3)
    assert matrix_to_quaternion(R).shape == (3, 4, 4)
    axis, angle = matrix_to_axis_angle(R)
    assert axis.shape == (3, 4, 3) and angle.shape == (3, 4)
    a, b, c = matrix_to_angles(R)
    assert a.shape == b.shape == c.shape == (3, 4)
    torch.testing.assert_close(angles_to_matrix(a, b, c), R, atol=1e-12, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(R)), R)


# ----------------------------------------------------------------------------- Haar measure


def test_random_rotation_properties():
    g = torch.Generator().manual_seed(15)
    R = random_rotation(1000, g, F64)
    assert R.shape == (1000, 3, 3) and R.dtype == F64
    torch.testing.assert_close(R @ R.transpose(-1, -2), _eye(3).expand(1000, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(1000, dtype=F64))
    assert random_rotation(2, dtype=torch.float32).dtype == torch.float32
    r1 = random_rotation(3, torch.Generator().manual_seed(1), F64)
    r2 = random_rotation(3, torch.Generator().manual_seed(1), F64)
    assert torch.equal(r1, r2)


def test_random_rotation_is_haar():
    n = 20000
    R = random_rotation(n, torch.Generator().manual_seed(16), F64)
    # the mean matrix vanishes (each entry has variance 1/3)
    assert float(R.mean(0).abs().max()) < 5 * math.sqrt(1 / 3 / n)
    # the rotation angle has density (1 - cos t) / pi on [0, pi]: CDF (t - sin t) / pi
    t = torch.acos(((R.diagonal(dim1=-1, dim2=-2).sum(-1) - 1) / 2).clamp(-1, 1))
    t, _ = torch.sort(t)
    cdf = (t - torch.sin(t)) / math.pi
    empirical = torch.arange(1, n + 1, dtype=F64) / n
    ks = float(torch.maximum((empirical - cdf).abs(), (empirical - 1 / n - cdf).abs()).max())
    assert ks < 1.63 / math.sqrt(n) * 1.5  # well above the 1% critical value
    # and it is not the uniform-angle distribution (which a naive sampler would give)
    ks_uniform = float((empirical - t / math.pi).abs().max())
    assert ks_uniform > 0.1
    # the rotation axis is uniform on the sphere: its mean is ~0 (with sign fixed by w >= 0)
    axis, _ = matrix_to_axis_angle(R)
    assert float(axis.mean(0).abs().max()) < 5 * math.sqrt(1 / 3 / n)
