"""tfn <-> e3nn 0.6.0: every convention is measured here against e3nn itself."""

from __future__ import annotations

import math

import pytest
import torch

from tfn.interop import e3nn as compat
from tfn.so3 import (
    CartesianTensor,
    Irreps,
    angles_to_matrix,
    clebsch_gordan,
    matrix_to_angles,
    random_rotation,
    spherical_harmonics,
    wigner_D,
)

o3 = pytest.importorskip("e3nn.o3")
e3nn_io = pytest.importorskip("e3nn.io")

F64 = torch.float64
LMAX = 11


@pytest.fixture(autouse=True)
def _float64_default():
    """e3nn builds some constants (Wigner D generators, Cartesian bases, tensor products) in
    the default dtype: float32 would limit the comparison to ~1e-7."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(old)


def _points(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _o3_matrices(n: int, seed: int) -> torch.Tensor:
    R = random_rotation(n, torch.Generator().manual_seed(seed), F64)
    return R * torch.tensor([(-1.0) ** i for i in range(n)], dtype=F64)[:, None, None]


# ----------------------------------------------------------------------------- harmonics


@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
def test_change_of_basis_derived_by_least_squares(normalization):
    """Fit Q in Y_tfn = Q Y_e3nn from samples; it must be orthogonal and equal change_of_basis."""
    x = _points(200, 0)
    for l in range(LMAX + 1):
        Y_tfn = spherical_harmonics(l, x, normalization=normalization)
        Y_e3nn = o3.spherical_harmonics(l, x, True, normalization=normalization)
        QT = torch.linalg.lstsq(Y_e3nn, Y_tfn).solution  # Y_tfn = Y_e3nn @ Q^T
        Q = QT.T
        assert float((Y_e3nn @ QT - Y_tfn).abs().max()) < 1e-12
        eye = torch.eye(2 * l + 1, dtype=F64)
        torch.testing.assert_close(Q @ Q.T, eye, atol=1e-12, rtol=0)
        torch.testing.assert_close(Q, compat.change_of_basis(l, dtype=F64), atol=1e-12, rtol=0)


def test_change_of_basis_function():
    for l in range(6):
        Q = compat.change_of_basis(l)
        assert Q.shape == (2 * l + 1, 2 * l + 1) and Q.dtype == torch.get_default_dtype()
    assert compat.change_of_basis(2, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError):
        compat.change_of_basis(-1)


def test_unnormalized_harmonics_and_e3nn_default_normalization():
    x = _points(30, 1)
    ls = list(range(6))
    # e3nn's default normalization is "integral", tfn's is "component"
    torch.testing.assert_close(
        o3.spherical_harmonics(ls, x, False),
        spherical_harmonics(ls, x, normalize=False, normalization="integral"),
        atol=1e-12,
        rtol=0,
    )
    torch.testing.assert_close(
        o3.spherical_harmonics(ls, x, True) * math.sqrt(4 * math.pi),
        spherical_harmonics(ls, x),
        atol=1e-12,
        rtol=0,
    )


# ----------------------------------------------------------------------------- features


@pytest.mark.parametrize("irreps", ["16x0e + 8x1o + 4x2e", "3x1e + 2x3o + 0o + 5x11e", "", "2x0e"])
def test_features_round_trip_and_irreps_forms(irreps):
    ours = Irreps(irreps)
    theirs = o3.Irreps(irreps) if irreps else o3.Irreps("")
    assert ours.dim == theirs.dim and str(ours) == str(theirs)
    x = torch.randn(4, 2, ours.dim, dtype=F64)
    for form in (irreps, ours, theirs):
        y = compat.features_from_e3nn(x, form)
        assert y.shape == x.shape
        torch.testing.assert_close(compat.features_to_e3nn(y, form), x, atol=1e-14, rtol=0)
        torch.testing.assert_close(y, x, atol=1e-14, rtol=0)  # Q is the identity


def test_features_transform_alike():
    """D_e3nn(R) on e3nn features corresponds to D_tfn(R) on tfn features, reflections too."""
    irreps = "2x0e + 1x0o + 3x1o + 1x1e + 2x2e + 1x3o + 1x5e"
    R = _o3_matrices(4, 2)
    x = o3.Irreps(irreps).randn(4, -1, dtype=F64)
    D_e3nn = o3.Irreps(irreps).D_from_matrix(R)
    D_tfn = Irreps(irreps).D_from_matrix(R)
    torch.testing.assert_close(D_tfn, D_e3nn, atol=1e-12, rtol=0)
    lhs = compat.features_from_e3nn(torch.einsum("nij,nj->ni", D_e3nn, x), irreps)
    rhs = torch.einsum("nij,nj->ni", D_tfn, compat.features_from_e3nn(x, irreps))
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)


def test_features_errors():
    with pytest.raises(ValueError, match="dimension"):
        compat.features_from_e3nn(torch.zeros(2, 4), "1o")
    with pytest.raises(ValueError, match="dimension"):
        compat.features_to_e3nn(torch.zeros(2, 4), o3.Irreps("1o"))


# ----------------------------------------------------------------------------- rotations


def test_euler_angles_are_the_same():
    g = torch.Generator().manual_seed(3)
    a, b, c = (torch.rand(20, generator=g, dtype=F64) * 6 - 3 for _ in range(3))
    torch.testing.assert_close(
        o3.angles_to_matrix(a, b, c), angles_to_matrix(a, b, c), atol=1e-14, rtol=0
    )
    R = random_rotation(20, g, F64)
    for ours, theirs in zip(matrix_to_angles(R), o3.matrix_to_angles(R)):
        d = torch.remainder(ours - theirs + math.pi, 2 * math.pi) - math.pi  # equal mod 2 pi
        assert float(d.abs().max()) < 1e-10


def test_wigner_d_is_the_same():
    R = random_rotation(5, torch.Generator().manual_seed(4), F64)
    a, b, c = o3.matrix_to_angles(R)
    for l in range(LMAX + 1):
        torch.testing.assert_close(wigner_D(l, R), o3.wigner_D(l, a, b, c), atol=1e-11, rtol=0)


# ----------------------------------------------------------------------------- Clebsch-Gordan

# e3nn's wigner_3j costs ~0.05 s per new triple: a subset (cached across the session)
TRIPLES = [
    (l1, l2, l3)
    for l1 in range(6)
    for l2 in range(l1, 6)
    for l3 in range(abs(l1 - l2), l1 + l2 + 1)
] + [(3, 1, 2), (5, 2, 4), (4, 0, 4)]


def test_cg_sign_and_factor():
    for l1, l2, l3 in TRIPLES:
        s = compat.cg_sign(l1, l2, l3)
        assert s in (1, -1)
        factor = compat.cg_from_e3nn_factor(l1, l2, l3)
        assert factor == s * math.sqrt(2 * l3 + 1)
        W = o3.wigner_3j(l1, l2, l3, dtype=F64)
        torch.testing.assert_close(clebsch_gordan(l1, l2, l3), factor * W, atol=1e-12, rtol=0)
        # and the sign really is needed: the other one is wrong (C != 0)
        assert float((clebsch_gordan(l1, l2, l3) + factor * W).abs().max()) > 0.1


def test_cg_sign_values():
    """A few values, for the table in docs/e3nn.md."""
    table = {(0, 0, 0): 1, (1, 1, 0): 1, (1, 1, 1): 1, (1, 1, 2): -1, (1, 2, 1): 1, (2, 2, 2): -1}
    for triple, s in table.items():
        assert compat.cg_sign(*triple) == s


def test_cg_sign_outside_triangle():
    with pytest.raises(ValueError):
        compat.cg_sign(1, 1, 3)
    with pytest.raises(ValueError):
        compat.cg_from_e3nn_factor(2, 0, 1)


def test_tensor_product_path_weights():
    """An e3nn 1o x 1o -> 2e path (wigner_3j) equals the tfn CG path divided by the factor."""
    tp = o3.TensorProduct(
        "1x1o",
        "1x1o",
        "1x2e",
        [(0, 0, 0, "uuu", False)],
        irrep_normalization="none",
        path_normalization="none",
    )
    x, y = torch.randn(2, 7, 3, dtype=F64)
    ours = torch.einsum("ijk,ni,nj->nk", clebsch_gordan(1, 1, 2), x, y)
    torch.testing.assert_close(
        tp(x, y), ours / compat.cg_from_e3nn_factor(1, 1, 2), atol=1e-12, rtol=0
    )


# ----------------------------------------------------------------------------- Cartesian tensors


@pytest.mark.parametrize("formula", ["ij", "ij=ji", "ij=-ji", "ijk=jik=ikj", "ijkl=jikl=ijlk=klij"])
def test_cartesian_change_of_basis(formula):
    M = compat.cartesian_change_of_basis(formula)
    ours, theirs = CartesianTensor(formula), e3nn_io.CartesianTensor(formula)
    n = ours.irreps.dim
    torch.testing.assert_close(M @ M.T, torch.eye(n, dtype=F64), atol=1e-12, rtol=0)
    D = ours.irreps.D_from_matrix(_o3_matrices(2, 5))
    torch.testing.assert_close(D @ M, M @ D, atol=1e-12, rtol=0)  # M is an intertwiner
    T = torch.randn(3, *(3,) * ours.rank, dtype=F64)
    T = ours.to_cartesian(ours.from_cartesian(T))
    torch.testing.assert_close(
        ours.from_cartesian(T), theirs.from_cartesian(T) @ M.T, atol=1e-12, rtol=0
    )


def test_cartesian_rank2_signs():
    """tfn's rank-2 Cartesian bases equal e3nn's (0e, 1e and 2e blocks alike)."""
    for formula, dim in [("ij", 9), ("ij=ji", 6)]:
        M = compat.cartesian_change_of_basis(formula)
        torch.testing.assert_close(M, torch.eye(dim, dtype=F64), atol=1e-12, rtol=0)


LINEAR_CASES = [
    ("4x0e + 2x1o", "3x0e + 5x1o", {}),
    ("2x0e + 3x1o + 1x0e + 2x2e", "1x0e + 2x1o + 4x0e + 1x3o", {}),
    ("2x0e + 3x1o + 1x0e", "4x0e + 2x1o + 1x0e", {"biases": True}),
    ("2x0e + 3x1o + 1x0e", "4x0e + 2x1o", {"path_normalization": "path"}),
    ("2x0e + 3x1o + 1x0e", "4x0e + 2x1o", {"instructions": [(0, 0), (1, 1)]}),
    ("3x1e + 0x0e + 2x0o", "2x1e + 1x0o + 2x0e", {}),
]


@pytest.mark.parametrize(("irreps_in", "irreps_out", "kwargs"), LINEAR_CASES)
def test_linear_weight_from_e3nn(irreps_in, irreps_out, kwargs):
    from tfn.nn import SelfInteraction

    torch.manual_seed(0)
    lin = o3.Linear(irreps_in, irreps_out, **kwargs)
    if lin.bias.numel():
        with torch.no_grad():
            lin.bias.normal_()
    state = compat.linear_weight_from_e3nn(lin)
    si = SelfInteraction(irreps_in, irreps_out)
    assert set(state) == set(si.state_dict())
    si.load_state_dict(state)
    x = Irreps(irreps_in).randn(10, dtype=F64)
    expected = compat.features_from_e3nn(lin(compat.features_to_e3nn(x, irreps_in)), irreps_out)
    torch.testing.assert_close(si(x), expected, atol=1e-12, rtol=0)
    layer = compat.self_interaction_from_e3nn(lin)
    torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=0)


def test_linear_weight_from_e3nn_without_bias():
    from tfn.nn import SelfInteraction

    lin = o3.Linear("2x0e + 1o", "3x0e + 1o")
    state = compat.linear_weight_from_e3nn(lin, bias=False)
    si = SelfInteraction("2x0e + 1o", "3x0e + 1o", bias=False)
    si.load_state_dict(state)
    x = torch.randn(5, 5, dtype=F64)
    torch.testing.assert_close(si(x), lin(x), atol=1e-12, rtol=0)
    lin = o3.Linear("2x0e", "3x0e", biases=True)
    with torch.no_grad():
        lin.bias.fill_(1.0)
    with pytest.raises(ValueError, match="bias"):
        compat.linear_weight_from_e3nn(lin, bias=False)
    with pytest.raises(ValueError, match="internal"):
        compat.linear_weight_from_e3nn(o3.Linear("2x0e", "3x0e", shared_weights=False))
