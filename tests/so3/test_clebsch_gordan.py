"""Clebsch-Gordan coefficients: intertwiners, normalisation, sign, known values, e3nn relation."""

from __future__ import annotations

import math

import pytest
import torch

from tfn.so3 import (
    clebsch_gordan,
    complex_clebsch_gordan,
    complex_to_real,
    random_rotation,
    spherical_harmonics,
    wigner_D,
)

F64 = torch.float64
L = 6
TRIPLES = [
    (l1, l2, l3)
    for l1 in range(L + 1)
    for l2 in range(L + 1)
    for l3 in range(abs(l1 - l2), l1 + l2 + 1)
]


def _three_j_000(l1: int, l2: int, l3: int) -> float:
    """Closed form of the Wigner 3j symbol (l1 l2 l3; 0 0 0)."""
    J = l1 + l2 + l3
    if J % 2:
        return 0.0
    g = J // 2
    f = math.factorial
    value = math.sqrt(f(J - 2 * l1) * f(J - 2 * l2) * f(J - 2 * l3) / f(J + 1))
    return (-1) ** g * value * f(g) / (f(g - l1) * f(g - l2) * f(g - l3))


def test_shape_dtype_and_cache_is_not_shared():
    C = clebsch_gordan(2, 3, 4)
    assert C.shape == (5, 7, 9) and C.dtype == F64
    C.zero_()
    assert clebsch_gordan(2, 3, 4).abs().max() > 0
    Cc = complex_clebsch_gordan(2, 3, 4)
    assert Cc.shape == (5, 7, 9) and Cc.dtype == F64


def test_intertwiner_all_triples():
    R = random_rotation(2, torch.Generator().manual_seed(0), F64)
    D = {l: wigner_D(l, R) for l in range(2 * L + 1)}
    for l1, l2, l3 in TRIPLES:
        C = clebsch_gordan(l1, l2, l3)
        lhs = torch.einsum("ijk,nia,njb->nabk", C, D[l1], D[l2])
        rhs = torch.einsum("nkc,abc->nabk", D[l3], C)
        err = float((lhs - rhs).abs().max())
        assert err < 1e-10, ((l1, l2, l3), err)


def test_intertwiner_on_vectors():
    """C(D1 x, D2 y) = D3 C(x, y), written as in the brief."""
    g = torch.Generator().manual_seed(1)
    R = random_rotation(1, g, F64)[0]
    for l1, l2, l3 in [(1, 1, 1), (2, 1, 3), (3, 4, 2), (6, 6, 12), (5, 6, 1)]:
        C = clebsch_gordan(l1, l2, l3)
        x = torch.randn(2 * l1 + 1, generator=g, dtype=F64)
        y = torch.randn(2 * l2 + 1, generator=g, dtype=F64)

        def prod(a, b, C=C):
            return torch.einsum("ijk,i,j->k", C, a, b)

        torch.testing.assert_close(
            prod(wigner_D(l1, R) @ x, wigner_D(l2, R) @ y),
            wigner_D(l3, R) @ prod(x, y),
            atol=1e-11,
            rtol=0,
        )


def test_isometry():
    for l1, l2, l3 in TRIPLES + [(10, 10, 20), (12, 12, 0), (12, 11, 7)]:
        C = clebsch_gordan(l1, l2, l3)
        gram = torch.einsum("ijk,ijl->kl", C, C)
        torch.testing.assert_close(gram, torch.eye(2 * l3 + 1, dtype=F64), atol=1e-12, rtol=0)
        assert abs(float(C.norm()) ** 2 - (2 * l3 + 1)) < 1e-11


def test_completeness():
    """Stacking all l3 gives an orthogonal [(2l1+1)(2l2+1)] square matrix."""
    for l1, l2 in [(1, 1), (2, 3), (4, 4), (6, 5)]:
        cols = [
            clebsch_gordan(l1, l2, l3).reshape(-1, 2 * l3 + 1)
            for l3 in range(abs(l1 - l2), l1 + l2 + 1)
        ]
        Q = torch.cat(cols, dim=1)
        n = (2 * l1 + 1) * (2 * l2 + 1)
        assert Q.shape == (n, n)
        torch.testing.assert_close(Q @ Q.T, torch.eye(n, dtype=F64), atol=1e-12, rtol=0)


def test_sign_convention_first_nonzero_entry_positive():
    for triple in TRIPLES:
        flat = clebsch_gordan(*triple).flatten()
        first = flat[flat.abs() > 1e-12][0]
        assert first > 0, triple


def test_swapping_the_inputs():
    for l1, l2, l3 in TRIPLES:
        a = clebsch_gordan(l1, l2, l3)
        b = clebsch_gordan(l2, l1, l3).transpose(0, 1)
        assert min(float((a - b).abs().max()), float((a + b).abs().max())) < 1e-12


def test_product_rule():
    """C contracted with Y_l1(x) and Y_l2(x) is c Y_l3(x); c != 0 iff l1 + l2 + l3 is even."""
    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    Y = {l: spherical_harmonics(l, x) for l in range(2 * L + 1)}
    for l1, l2, l3 in TRIPLES:
        z = torch.einsum("ijk,ni,nj->nk", clebsch_gordan(l1, l2, l3), Y[l1], Y[l2])
        target = Y[l3]
        c = float((z * target).sum() / (target * target).sum())
        assert float((z - c * target).abs().max()) < 1e-11, (l1, l2, l3)
        # |c| in component normalisation, from the closed form of the 3j symbol
        expected = math.sqrt((2 * l1 + 1) * (2 * l2 + 1)) * abs(_three_j_000(l1, l2, l3))
        assert abs(abs(c) - expected) < 1e-11, (l1, l2, l3, c, expected)
        if (l1 + l2 + l3) % 2 == 0:
            assert abs(c) > 1e-3
        else:
            assert float(z.abs().max()) < 1e-12


def test_antisymmetric_paths_are_the_cross_product():
    C = clebsch_gordan(1, 1, 1)
    a, b = torch.randn(2, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    cross = torch.einsum("ijk,i,j->k", C, a, b)
    torch.testing.assert_close(cross, torch.linalg.cross(a, b) / math.sqrt(2), atol=1e-14, rtol=0)
    torch.testing.assert_close(
        torch.einsum("ijk,i,j->k", clebsch_gordan(1, 1, 0), a, b),
        (a @ b / math.sqrt(3)).reshape(1),
        atol=1e-14,
        rtol=0,
    )


@pytest.mark.parametrize(
    "triple", [(1, 1, 3), (0, 1, 0), (2, 5, 2), (3, 3, 7), (1, 4, 2), (-1, 1, 0), (1, 1, -1)]
)
def test_triangle_rule(triple):
    with pytest.raises(ValueError):
        clebsch_gordan(*triple)
    with pytest.raises(ValueError):
        complex_clebsch_gordan(*triple)


# ----------------------------------------------------------------------------- complex basis


@pytest.mark.parametrize(
    ("j1", "m1", "j2", "m2", "J", "M", "value"),
    [
        (1, 1, 1, -1, 0, 0, 1 / math.sqrt(3)),
        (1, 0, 1, 0, 0, 0, -1 / math.sqrt(3)),
        (1, -1, 1, 1, 0, 0, 1 / math.sqrt(3)),
        (1, 1, 1, 1, 2, 2, 1.0),
        (1, 1, 1, -1, 2, 0, 1 / math.sqrt(6)),
        (1, 0, 1, 0, 2, 0, math.sqrt(2 / 3)),
        (1, 1, 1, 0, 1, 1, 1 / math.sqrt(2)),
        (1, 0, 1, 1, 1, 1, -1 / math.sqrt(2)),
        (1, 1, 1, -1, 1, 0, 1 / math.sqrt(2)),
        (1, 0, 1, 0, 1, 0, 0.0),
        (2, 2, 2, -2, 0, 0, 1 / math.sqrt(5)),
        (2, 0, 1, 0, 1, 0, -math.sqrt(2 / 5)),
        (2, 1, 1, 0, 3, 1, math.sqrt(8 / 15)),
        (0, 0, 3, -2, 3, -2, 1.0),
        (3, 3, 3, -3, 0, 0, 1 / math.sqrt(7)),
        (3, 2, 3, -2, 0, 0, -1 / math.sqrt(7)),
    ],
)
def test_complex_known_values(j1, m1, j2, m2, J, M, value):
    C = complex_clebsch_gordan(j1, j2, J)
    assert abs(float(C[j1 + m1, j2 + m2, J + M]) - value) < 1e-14


def test_complex_against_sympy():
    wigner = pytest.importorskip("sympy.physics.wigner")
    for l1, l2, l3 in [(1, 1, 2), (2, 2, 2), (3, 2, 4), (4, 3, 1), (2, 4, 3)]:
        C = complex_clebsch_gordan(l1, l2, l3)
        for m1 in range(-l1, l1 + 1):
            for m2 in range(-l2, l2 + 1):
                m3 = m1 + m2
                if abs(m3) > l3:
                    continue
                ref = float(wigner.clebsch_gordan(l1, l2, l3, m1, m2, m3))
                assert abs(float(C[l1 + m1, l2 + m2, l3 + m3]) - ref) < 1e-14


def test_complex_selection_rule_and_orthogonality():
    for l1, l2, l3 in TRIPLES[::5]:
        C = complex_clebsch_gordan(l1, l2, l3)
        m1 = torch.arange(-l1, l1 + 1)[:, None, None]
        m2 = torch.arange(-l2, l2 + 1)[None, :, None]
        m3 = torch.arange(-l3, l3 + 1)[None, None, :]
        assert float((C * (m1 + m2 != m3)).abs().max()) == 0
        torch.testing.assert_close(
            torch.einsum("ijk,ijl->kl", C, C), torch.eye(2 * l3 + 1, dtype=F64), atol=1e-13, rtol=0
        )


def test_complex_to_real_is_unitary_and_maps_harmonics():
    mpmath = pytest.importorskip("mpmath")
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    r = x.norm(dim=-1)
    theta = torch.acos(x[:, 1] / r)  # y is the polar axis
    phi = torch.atan2(x[:, 0], x[:, 2])  # azimuth in the (z, x) plane
    for l in range(6):
        U = complex_to_real(l)
        assert U.dtype == torch.complex128
        eye = torch.eye(2 * l + 1, dtype=U.dtype)
        torch.testing.assert_close(U @ U.conj().T, eye, atol=1e-14, rtol=0)
        Yc = torch.tensor(
            [
                [complex(mpmath.spherharm(l, m, float(t), float(p))) for m in range(-l, l + 1)]
                for t, p in zip(theta, phi)
            ],
            dtype=torch.complex128,
        )
        Y_real = Yc @ U.T
        assert float(Y_real.imag.abs().max()) < 1e-13
        torch.testing.assert_close(
            Y_real.real, spherical_harmonics(l, x, normalization="integral"), atol=1e-13, rtol=0
        )


# e3nn's wigner_3j costs ~0.05 s per triple on first use: a subset (cached across the session)
E3NN_TRIPLES = [t for t in TRIPLES if t[0] <= t[1] <= 5] + [(3, 1, 2), (5, 2, 4), (4, 0, 4)]


def test_relation_with_e3nn():
    """clebsch_gordan == s * sqrt(2 l3 + 1) * e3nn.o3.wigner_3j with s = +-1."""
    o3 = pytest.importorskip("e3nn.o3")
    for l1, l2, l3 in E3NN_TRIPLES:
        C = clebsch_gordan(l1, l2, l3)
        W = o3.wigner_3j(l1, l2, l3, dtype=F64) * math.sqrt(2 * l3 + 1)
        s = 1.0 if float((C * W).sum()) > 0 else -1.0
        assert float((C - s * W).abs().max()) < 1e-12, (l1, l2, l3)
