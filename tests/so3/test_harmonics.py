"""Spherical harmonics: convention, normalisations, equivariance, derivatives, high degree."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from tfn.so3 import (
    Irreps,
    SphericalHarmonics,
    harmonics,
    random_rotation,
    spherical_harmonics,
    wigner_D,
)
from tfn.testing import assert_equivariant

F64 = torch.float64
LMAX = 16


def _points(n: int, seed: int, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64).to(dtype)


def _blocks(Y: torch.Tensor, ls) -> list[torch.Tensor]:
    out, start = [], 0
    for l in ls:
        out.append(Y[..., start : start + 2 * l + 1])
        start += 2 * l + 1
    return out


def _legendre(l: int, t: torch.Tensor) -> torch.Tensor:
    """Legendre polynomial P_l(t) by the three-term (Bonnet) recurrence."""
    p_prev, p = torch.ones_like(t), t
    if l == 0:
        return p_prev
    for n in range(1, l):
        p_prev, p = p, ((2 * n + 1) * t * p - n * p_prev) / (n + 1)
    return p


# ----------------------------------------------------------------------------- an independent
# reference: real harmonics (no Condon-Shortley phase), y polar axis, from Rodrigues' formula in
# exact rational arithmetic, evaluated with 40 significant digits.


def _legendre_coefficients(l: int) -> list[Fraction]:
    """Coefficients (index = power) of P_l = d^l/dt^l (t^2 - 1)^l / (2^l l!)."""
    poly = [Fraction(0)] * (2 * l + 1)
    for k in range(l + 1):  # (t^2 - 1)^l = sum_k C(l, k) t^(2k) (-1)^(l-k)
        poly[2 * k] = Fraction(math.comb(l, k) * (-1) ** (l - k))
    for _ in range(l):
        poly = [poly[i] * i for i in range(1, len(poly))]
    return [c / (2**l * math.factorial(l)) for c in poly]


def _reference_harmonics(l: int, xyz: np.ndarray, solid: bool = False) -> np.ndarray:
    """Orthonormal ("integral") real harmonics of degree l at the rows of xyz, float64 (times
    r^l, computed exactly and then rounded, if ``solid``: so it overflows only when the value
    does)."""
    mpmath = pytest.importorskip("mpmath")
    coefficients = _legendre_coefficients(l)
    derivatives = [coefficients]
    for _ in range(l):
        c = derivatives[-1]
        derivatives.append([c[i] * i for i in range(1, len(c))])
    out = np.zeros((len(xyz), 2 * l + 1))
    with mpmath.workdps(40):
        for n, (x, y, z) in enumerate(xyz.tolist()):
            x, y, z = mpmath.mpf(x), mpmath.mpf(y), mpmath.mpf(z)
            r = mpmath.sqrt(x * x + y * y + z * z)
            # polar axis y; azimuth in the (z, x) plane: (x', y', z') = (z, x, y)
            xp, yp, t = z / r, x / r, y / r
            radial = r**l if solid else mpmath.mpf(1)
            for m in range(l + 1):
                poly = sum(
                    mpmath.mpf(c.numerator) / c.denominator * t**i
                    for i, c in enumerate(derivatives[m])
                )
                w = mpmath.mpc(xp, yp) ** m  # sin(theta)^m e^{i m phi}
                norm = mpmath.sqrt(
                    (2 * l + 1)
                    / (4 * mpmath.pi)
                    * mpmath.factorial(l - m)
                    / mpmath.factorial(l + m)
                )
                norm *= radial
                if m == 0:
                    out[n, l] = float(norm * poly)
                else:
                    out[n, l + m] = float(mpmath.sqrt(2) * norm * poly * w.real)
                    out[n, l - m] = float(mpmath.sqrt(2) * norm * poly * w.imag)
    return out


# ----------------------------------------------------------------------------- convention


def test_l0_and_l1_blocks():
    x = _points(20, 0)
    Y = spherical_harmonics([0, 1], x)
    torch.testing.assert_close(Y[:, 0], torch.ones(20, dtype=F64), atol=1e-14, rtol=0)
    expected = math.sqrt(3) * x / x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(Y[:, 1:], expected, atol=1e-14, rtol=0)
    # the docstring example: a vector along z
    torch.testing.assert_close(
        spherical_harmonics(1, torch.tensor([[0.0, 0.0, 2.0]], dtype=F64)),
        torch.tensor([[0.0, 0.0, math.sqrt(3)]], dtype=F64),
    )


def test_l2_block_explicit_formula():
    x = _points(20, 1)
    x = x / x.norm(dim=-1, keepdim=True)
    a, b, c = x.unbind(-1)  # x, y, z
    s15 = math.sqrt(15)
    expected = torch.stack(
        [
            s15 * a * c,
            s15 * a * b,
            math.sqrt(5) * (b * b - (a * a + c * c) / 2),
            s15 * b * c,
            s15 / 2 * (c * c - a * a),
        ],
        dim=-1,
    )
    torch.testing.assert_close(spherical_harmonics(2, x), expected, atol=1e-13, rtol=0)


@pytest.mark.parametrize("l", [0, 1, 2, 3, 5, 8, 12, 16, 20])
def test_against_independent_reference(l):
    x = _points(6, 2 + l)
    x = torch.cat(
        [x, torch.tensor([[0, 1.0, 0], [0, -2.0, 0], [1.0, 0, 0], [0, 0, -1.0]], dtype=F64)]
    )
    ref = torch.from_numpy(_reference_harmonics(l, x.numpy()))
    ours = spherical_harmonics(l, x, normalization="integral")
    assert torch.isfinite(ours).all()
    scale = ref.abs().max()
    assert float((ours - ref).abs().max() / scale) < 1e-12


def test_agrees_with_e3nn():
    o3 = pytest.importorskip("e3nn.o3")
    x = _points(50, 3)
    for normalization in ("component", "norm", "integral"):
        for l in range(12):
            ours = spherical_harmonics(l, x, normalization=normalization)
            theirs = o3.spherical_harmonics(l, x, True, normalization=normalization)
            torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    ours = spherical_harmonics(list(range(5)), x, normalize=False, normalization="integral")
    theirs = o3.spherical_harmonics(list(range(5)), x, False)  # e3nn default: integral
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- equivariance


def test_equivariance_every_degree():
    ls = list(range(LMAX + 1))
    x = _points(30, 4)
    R = random_rotation(4, torch.Generator().manual_seed(5), F64)
    Y = spherical_harmonics(ls, x)
    Y_rot = spherical_harmonics(ls, x @ R.transpose(-1, -2))  # [4, 30, dim]
    for l, a, b in zip(ls, _blocks(Y_rot, ls), _blocks(Y, ls)):
        torch.testing.assert_close(a, b @ wigner_D(l, R).transpose(-1, -2), atol=1e-11, rtol=0)


def test_rotation_about_the_polar_axis_rotates_m_pairs():
    """About y, the pair (m, -m) turns by m*alpha: an independent check of the m ordering."""
    alpha = 0.37
    c, s = math.cos(alpha), math.sin(alpha)
    Ry = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=F64)
    x = _points(10, 6)
    for l in [1, 2, 5, 9]:
        D = torch.zeros(2 * l + 1, 2 * l + 1, dtype=F64)
        D[l, l] = 1
        for m in range(1, l + 1):
            cm, sm = math.cos(m * alpha), math.sin(m * alpha)
            D[l + m, l + m], D[l + m, l - m] = cm, -sm
            D[l - m, l - m], D[l - m, l + m] = cm, sm
        torch.testing.assert_close(
            spherical_harmonics(l, x @ Ry.T), spherical_harmonics(l, x) @ D.T, atol=1e-13, rtol=0
        )


@pytest.mark.parametrize("normalize", [True, False])
def test_oracle(normalize):
    ls = "0e + 1o + 2e + 3o + 4e + 5o + 6e"
    assert_equivariant(
        lambda pos: spherical_harmonics(ls, pos, normalize=normalize),
        "cartesian_points",
        ls,
        translations=False,
    )


@pytest.mark.parametrize("normalize", [True, False])
def test_parity(normalize):
    ls = list(range(LMAX + 1))
    x = _points(20, 7)
    Y, Y_neg = spherical_harmonics(ls, x, normalize), spherical_harmonics(ls, -x, normalize)
    for l, a, b in zip(ls, _blocks(Y_neg, ls), _blocks(Y, ls)):
        torch.testing.assert_close(a, (-1) ** l * b, atol=1e-12 * b.abs().max(), rtol=0)


# ----------------------------------------------------------------------------- normalisations


def test_pointwise_norms():
    ls = list(range(LMAX + 1))
    x = _points(40, 8)
    expected = {
        "component": lambda l: 2 * l + 1,
        "norm": lambda l: 1.0,
        "integral": lambda l: (2 * l + 1) / (4 * math.pi),
    }
    for normalization, value in expected.items():
        Y = spherical_harmonics(ls, x, normalization=normalization)
        for l, block in zip(ls, _blocks(Y, ls)):
            sq = (block * block).sum(-1)
            torch.testing.assert_close(
                sq, torch.full_like(sq, value(l)), atol=1e-12 * value(l), rtol=0
            )


def test_addition_theorem():
    x, y = _points(30, 9), _points(30, 10)
    t = (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))
    for l in range(LMAX + 1):
        Yx = spherical_harmonics(l, x, normalization="integral")
        Yy = spherical_harmonics(l, y, normalization="integral")
        lhs = (Yx * Yy).sum(-1)
        rhs = (2 * l + 1) / (4 * math.pi) * _legendre(l, t)
        torch.testing.assert_close(lhs, rhs, atol=1e-12 * (2 * l + 1), rtol=0)


def test_legendre_helper():
    t = torch.linspace(-1, 1, 7, dtype=F64)
    torch.testing.assert_close(_legendre(2, t), (3 * t**2 - 1) / 2)
    torch.testing.assert_close(_legendre(3, t), (5 * t**3 - 3 * t) / 2)
    torch.testing.assert_close(_legendre(9, torch.ones(1, dtype=F64)), torch.ones(1, dtype=F64))


def _quadrature(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and weights exact for polynomials of degree <= 2 lmax on the sphere (z axis)."""
    nodes, weights = np.polynomial.legendre.leggauss(lmax + 2)
    n_phi = 2 * lmax + 3
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    ct, p = np.meshgrid(nodes, phi, indexing="ij")
    st = np.sqrt(1 - ct**2)
    xyz = np.stack([st * np.cos(p), st * np.sin(p), ct], -1).reshape(-1, 3)
    w = np.repeat(weights, n_phi) * (2 * np.pi / n_phi)
    return torch.from_numpy(xyz), torch.from_numpy(w)


def test_orthonormality_by_quadrature():
    lmax = 12
    xyz, w = _quadrature(lmax)
    ls = list(range(lmax + 1))
    dims = torch.tensor([2 * l + 1 for l in ls for _ in range(2 * l + 1)], dtype=F64)
    expected = {
        "integral": torch.ones_like(dims),
        "component": torch.full_like(dims, 4 * math.pi),
        "norm": 4 * math.pi / dims,
    }
    for normalization, diag in expected.items():
        Y = spherical_harmonics(ls, xyz, normalization=normalization)
        gram = Y.T @ (w[:, None] * Y)
        torch.testing.assert_close(gram, torch.diag(diag), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- normalize=False


def test_unnormalized_is_solid_harmonic():
    ls = list(range(LMAX + 1))
    x = _points(20, 11)
    r = x.norm(dim=-1, keepdim=True)
    Y_unit = spherical_harmonics(ls, x)
    Y_solid = spherical_harmonics(ls, x, normalize=False)
    for l, a, b in zip(ls, _blocks(Y_solid, ls), _blocks(Y_unit, ls)):
        torch.testing.assert_close(a, r**l * b, atol=1e-12 * float((r**l).max()), rtol=0)
    for c in [0.5, 3.0, -2.0]:  # homogeneous of degree l (negative c: parity)
        Y_scaled = spherical_harmonics(ls, c * x, normalize=False)
        for l, a, b in zip(ls, _blocks(Y_scaled, ls), _blocks(Y_solid, ls)):
            torch.testing.assert_close(
                a, c**l * b, atol=1e-11 * float(b.abs().max()) * abs(c) ** l, rtol=0
            )


def test_unnormalized_at_origin():
    Y = spherical_harmonics(list(range(5)), torch.zeros(1, 3, dtype=F64), normalize=False)
    expected = torch.zeros(1, 25, dtype=F64)
    expected[0, 0] = 1.0
    torch.testing.assert_close(Y, expected, atol=0, rtol=0)


def test_solid_harmonics_are_harmonic():
    """The Laplacian of r^l Y_l vanishes: a convention-free check of the polynomials."""
    x = _points(5, 12).requires_grad_(True)
    ls = list(range(7))
    Y = spherical_harmonics(ls, x, normalize=False)
    lap = torch.zeros_like(Y)
    for k in range(Y.shape[-1]):
        (g,) = torch.autograd.grad(Y[:, k].sum(), x, create_graph=True)
        for i in range(3):
            (gg,) = torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)
            lap[:, k] += gg[:, i]
    assert float(lap.abs().max()) < 1e-10


# ----------------------------------------------------------------------------- arguments


def test_degree_argument_forms():
    x = _points(7, 13)
    full = spherical_harmonics([0, 1, 2, 3], x)
    torch.testing.assert_close(spherical_harmonics(3, x), full[:, 9:])
    torch.testing.assert_close(spherical_harmonics(range(4), x), full)
    torch.testing.assert_close(spherical_harmonics("0e + 1o + 2e + 3o", x), full)
    torch.testing.assert_close(spherical_harmonics(Irreps.spherical_harmonics(3), x), full)
    torch.testing.assert_close(
        spherical_harmonics([2, 0], x), torch.cat([full[:, 4:9], full[:, :1]], -1)
    )  # order as given
    torch.testing.assert_close(
        spherical_harmonics("2x1o + 0e", x),
        torch.cat([full[:, 1:4], full[:, 1:4], full[:, :1]], -1),
    )
    for bad in ["1e", "0e + 2o", "0o"]:
        with pytest.raises(ValueError, match="parity"):
            spherical_harmonics(bad, x)
    with pytest.raises(ValueError):
        spherical_harmonics([], x)
    with pytest.raises(ValueError):
        spherical_harmonics([1, -1], x)
    with pytest.raises(ValueError, match="normalization"):
        spherical_harmonics(1, x, normalization="unit")
    with pytest.raises(ValueError, match="3"):
        spherical_harmonics(1, torch.randn(4, 2))


def test_batch_shapes():
    x = _points(24, 14).reshape(2, 3, 4, 3)
    Y = spherical_harmonics([0, 1, 2], x)
    assert Y.shape == (2, 3, 4, 9)
    torch.testing.assert_close(Y.reshape(-1, 9), spherical_harmonics([0, 1, 2], x.reshape(-1, 3)))
    assert spherical_harmonics(2, torch.zeros(0, 3)).shape == (0, 5)
    assert spherical_harmonics(2, torch.tensor([1.0, 2.0, 3.0])).shape == (5,)


def test_module():
    sh = SphericalHarmonics("0e + 1o + 2e", normalization="norm")
    assert sh.irreps_out == Irreps("0e + 1o + 2e")
    x = _points(5, 15)
    torch.testing.assert_close(sh(x), spherical_harmonics([0, 1, 2], x, normalization="norm"))
    assert SphericalHarmonics([1, 1, 0]).irreps_out == Irreps("2x1o + 0e")
    with pytest.raises(ValueError):
        SphericalHarmonics("1e")


# ----------------------------------------------------------------------------- float32, grads


def test_float32_matches_float64():
    ls = list(range(9))
    x = _points(200, 16)
    Y64 = spherical_harmonics(ls, x)
    Y32 = spherical_harmonics(ls, x.float())
    assert Y32.dtype == torch.float32
    for l, a, b in zip(ls, _blocks(Y32, ls), _blocks(Y64, ls)):
        assert float((a.double() - b).abs().max()) < 1e-5 * math.sqrt(2 * l + 1)
    R = random_rotation(1, torch.Generator().manual_seed(0), torch.float32)[0]
    torch.testing.assert_close(
        spherical_harmonics(4, x.float() @ R.T),
        spherical_harmonics(4, x.float()) @ wigner_D(4, R).T,
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(normalize):
    x = _points(3, 17).requires_grad_(True)
    ls = list(range(7))

    def fn(v):
        return spherical_harmonics(ls, v, normalize=normalize)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-5)


def test_gradient_of_l1_normalized():
    """d/dx of sqrt(3) x/|x| is sqrt(3) (I - u u^T)/|x|."""
    x = _points(1, 18)[0].requires_grad_(True)
    J = torch.autograd.functional.jacobian(lambda v: spherical_harmonics(1, v), x)
    r = x.detach().norm()
    u = x.detach() / r
    expected = math.sqrt(3) * (torch.eye(3, dtype=F64) - torch.outer(u, u)) / r
    torch.testing.assert_close(J, expected, atol=1e-13, rtol=0)


# ----------------------------------------------------------------------------- the two paths


@pytest.fixture(params=["kernel", "eager"])
def path(request, monkeypatch):
    """Runs a test with the C++ kernel, then with the eager PyTorch fallback."""
    if request.param == "eager":
        monkeypatch.setenv("TFN_NO_EXTENSIONS", "1")
    elif harmonics._kernels() is None:
        pytest.skip("the C++ kernel could not be built here (no compiler?)")
    return request.param


def test_no_extensions_selects_the_eager_path(monkeypatch):
    monkeypatch.setenv("TFN_NO_EXTENSIONS", "1")
    assert harmonics._kernels() is None


def _edge_points(dtype) -> torch.Tensor:
    """Random points, axis-aligned ones (exact zeros in the output), and extreme sizes."""
    info = torch.finfo(dtype)
    base = torch.cat(
        [
            _points(1001, 30),  # not a multiple of the kernel's block: a partial block
            torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, 2.0], [-0.0, 0, 0], [0, 0, 0]]),
            torch.tensor([[1e30, 1.0, 0], [3.0, -1e-30, 1e-30]]),
        ]
    ).to(dtype)
    extreme = torch.tensor([[0.3, -1.0, 0.7], [1.0, 0.0, -0.5]], dtype=dtype)
    scales = [info.tiny * info.eps, info.tiny / 3, info.tiny, info.max / 4]
    return torch.cat([base, *(extreme * s for s in scales)])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_matches_eager_path(dtype, monkeypatch):
    if harmonics._kernels() is None:
        pytest.skip("the C++ kernel could not be built here (no compiler?)")
    x = _edge_points(dtype)
    ls = list(range(17))
    eps = torch.finfo(dtype).eps
    for normalize in (True, False):
        for normalization in ("component", "integral", "norm"):
            kernel = spherical_harmonics(ls, x, normalize, normalization)
            monkeypatch.setenv("TFN_NO_EXTENSIONS", "1")
            eager = spherical_harmonics(ls, x, normalize, normalization)
            monkeypatch.delenv("TFN_NO_EXTENSIONS")
            assert kernel.dtype == eager.dtype == dtype
            # the same infinities, zeros and NaNs; elsewhere rounding relative to the block
            assert torch.equal(torch.isinf(kernel), torch.isinf(eager))
            assert torch.equal(kernel[torch.isinf(kernel)], eager[torch.isinf(eager)])
            assert not torch.isnan(kernel).any() and not torch.isnan(eager).any()
            for l, a, b in zip(ls, _blocks(kernel, ls), _blocks(eager, ls)):
                finite = torch.isfinite(b)
                scale = torch.where(finite, b.abs(), 0).amax(-1, keepdim=True)
                error = torch.where(finite, (a - b).abs(), 0)
                # rounding grows with the degree: 10 eps (l + 1), at most 4e-14 in float64
                assert bool((error <= 10 * eps * (l + 1) * scale).all()), (normalize, l)


def test_kernel_operators_pass_opcheck():
    """Schemas, fake (shape) functions and dispatch of the two C++ operators, as
    torch.compile and torch.export see them."""
    kernels = harmonics._kernels()
    if kernels is None:
        pytest.skip("the C++ kernel could not be built here (no compiler?)")
    for dtype, normalize in [(torch.float64, True), (torch.float32, False)]:
        x = _points(37, 35, dtype)
        coefficients = harmonics._packed_coefficients(3, "component")
        torch.library.opcheck(kernels.forward.default, (x, 3, normalize, coefficients))
        out = kernels.forward(x, 3, normalize, coefficients)
        terms = harmonics._packed_derivative_terms(3, "component")
        grad_out = torch.randn_like(out)
        torch.library.opcheck(kernels.backward.default, (grad_out, out, x, 3, normalize, terms))


def test_kernel_threads_agree():
    if harmonics._kernels() is None:
        pytest.skip("the C++ kernel could not be built here (no compiler?)")
    x = _points(5000, 31, torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = spherical_harmonics(list(range(7)), x)
        torch.set_num_threads(2)
        two = spherical_harmonics(list(range(7)), x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


# ----------------------------------------------------------------------------- zero, tiny, huge

EDGE_LS = list(range(7))


def _grad(x: torch.Tensor, normalize: bool, weights: torch.Tensor, ls=EDGE_LS):
    x = x.detach().clone().requires_grad_(True)
    Y = spherical_harmonics(ls, x, normalize=normalize)
    (g,) = torch.autograd.grad((Y * weights).sum(), x)
    return Y.detach(), g


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("normalize", [True, False])
def test_zero_vector(path, dtype, normalize):
    """Y_0 as usual and Y_l = 0 (l > 0); gradient 0 when normalizing (the direction is
    undefined), the polynomials' exact gradient otherwise; finite second derivatives."""
    x = torch.tensor([[0.0, 0.0, 0.0], [-0.0, 0.0, -0.0]], dtype=dtype)
    w = torch.randn(2, 49, generator=torch.Generator().manual_seed(32), dtype=F64).to(dtype)
    for normalization in ("component", "integral", "norm"):
        Y = spherical_harmonics(EDGE_LS, x, normalize, normalization)
        expected = torch.zeros_like(Y)
        expected[:, 0] = 1 / math.sqrt(4 * math.pi) if normalization == "integral" else 1.0
        torch.testing.assert_close(Y, expected, atol=0, rtol=0)
    _, g = _grad(x, normalize, w)
    if normalize:
        expected = torch.zeros_like(g)
    else:  # only Y_1 = M x has a nonzero gradient at 0: w_1 M
        M = spherical_harmonics(1, torch.eye(3, dtype=dtype), normalize=False).T
        expected = w[:, 1:4] @ M
    torch.testing.assert_close(g, expected, atol=0 if normalize else 1e-6, rtol=0)
    # second derivatives through the backward: finite (zero when normalizing)
    v = x.detach().clone().requires_grad_(True)
    Y = spherical_harmonics(EDGE_LS, v, normalize=normalize)
    (g,) = torch.autograd.grad((Y * w).sum(), v, create_graph=True)
    (gg,) = torch.autograd.grad((g * g).sum(), v)
    assert torch.isfinite(gg).all()
    if normalize:
        assert not gg.any()
    elif dtype == torch.float64:
        # a polynomial: the same as just next to the origin
        near = x + 1e-9 * torch.tensor([[1.0, -2.0, 0.5]], dtype=dtype)
        v = near.requires_grad_(True)
        Y = spherical_harmonics(EDGE_LS, v, normalize=False)
        (g,) = torch.autograd.grad((Y * w).sum(), v, create_graph=True)
        (gg_near,) = torch.autograd.grad((g * g).sum(), v)
        torch.testing.assert_close(gg, gg_near, atol=1e-6, rtol=0)


_DIRECTIONS = torch.tensor(
    [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.3, -1.0, 0.7]]
    + [[0.6, 0.8, -1.0], [-1.0, 0.25, 0.5], [1.0, -1e-3, 1e-3]],
    dtype=F64,
)
_SCALES = {
    torch.float32: [1e-30, 1e-38, 1e-40, 1e-45, 1e30, 3e38],  # 1e-40, 1e-45: subnormal
    torch.float64: [1e-30, 1e-200, 1e-300, 1e-310, 5e-324, 1e30, 1e300, 1.7e308],
}


def _power_of_two_scaled(t: torch.Tensor, k: int) -> torch.Tensor:
    """t * 2^k in float64, rounded once (two exact halves: 2^k alone may overflow)."""
    return t * 2.0 ** (k // 2) * 2.0 ** (k - k // 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tiny_and_huge_vectors_normalized(path, dtype):
    """Harmonics as accurate as at unit vectors (independent reference, at the very point
    given); gradients ~ 1 / |x| correct wherever representable, +-inf (never NaN) beyond."""
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    w = torch.randn(len(_DIRECTIONS), 49, generator=torch.Generator().manual_seed(33))
    w = w.to(dtype)
    for scale in _SCALES[dtype]:
        x = (_DIRECTIONS * scale).to(dtype)
        assert (x != 0).any(-1).all()
        Y, g = _grad(x, True, w)
        assert torch.isfinite(Y).all(), scale
        for l, block in zip(EDGE_LS, _blocks(Y, EDGE_LS)):
            ref = _reference_harmonics(l, x.double().numpy())  # integral normalisation
            ref = torch.from_numpy(ref) * math.sqrt(4 * math.pi)  # component
            torch.testing.assert_close(block.double(), ref, atol=tol * math.sqrt(2 * l + 1), rtol=0)
        # gradient: homogeneous of degree -1, so g(x) = g(x 2^-k) 2^-k with x 2^-k ~ 1
        k = round(math.log2(scale))
        _, g_unit = _grad(_power_of_two_scaled(x.double(), -k), True, w.double())
        exact = _power_of_two_scaled(g_unit, -k)  # float64, inf where even that overflows
        assert not torch.isnan(g).any(), scale
        largest = torch.finfo(dtype).max
        size = _power_of_two_scaled(g_unit.abs().amax(-1, keepdim=True), -k)
        fits = (size < largest / 2).squeeze(-1)
        if fits.any():
            atol = float(10 * tol * size[fits].max())
            torch.testing.assert_close(g[fits], exact[fits].to(dtype), atol=atol, rtol=0)
        # Rows too large for the dtype (subnormal x): each significant component overflows to
        # +-inf if its exact value does, and is accurate if it does not.
        # (Significant: above 1e-3 of the row's largest, so 10 tol of that is 1e4 tol of it.)
        significant = (g_unit.abs() > 1e-3 * g_unit.abs().amax(-1, keepdim=True)) & ~fits[:, None]
        over = significant & (exact.abs() > 2 * largest)
        assert torch.equal(g[over], exact[over].sign() * math.inf), scale
        under = significant & (exact.abs() < largest / 2)
        torch.testing.assert_close(g[under].double(), exact[under], atol=0, rtol=1e4 * tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tiny_and_huge_vectors_solid(path, dtype):
    """normalize=False: r^l Y_l rounded once from the exact value: +-inf exactly where that
    overflows, 0 where it underflows, exact zeros kept (no inf * 0), no premature overflow."""
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    scales = [1e-30, 1e-20, 1e10, 1e30] if dtype == torch.float32 else [1e-200, 1e-50, 1e50, 1e300]
    directions = torch.cat([_DIRECTIONS, torch.tensor([[1.0, 1e-30, 0.0]], dtype=F64)])
    for scale in scales:
        x = (directions * scale).to(dtype)
        Y = spherical_harmonics(EDGE_LS, x, normalize=False, normalization="integral")
        assert not torch.isnan(Y).any(), scale
        for l, block in zip(EDGE_LS, _blocks(Y, EDGE_LS)):
            ref = torch.from_numpy(_reference_harmonics(l, x.double().numpy(), solid=True))
            ref = ref.to(dtype)  # rounded once to the dtype: inf where it overflows
            inf = torch.isinf(ref)
            assert torch.equal(block[inf], ref[inf]), (scale, l)
            size = torch.where(inf, 0, ref.abs()).amax(-1, keepdim=True)
            error = torch.where(inf, 0, (block - ref).abs())
            # rounding relative to the largest finite value in the block, and to each value
            assert bool((error <= tol * size + tol * ref.abs()).all()), (scale, l)


@pytest.mark.parametrize("normalize", [True, False])
def test_gradgradcheck_at_tiny_and_huge_scales(path, normalize):
    """First and second derivatives at points of size 1e-150 .. 1e150 (float64). The function
    checked is v -> Y(c v) (divided by c^l when not normalizing), whose derivatives are O(1),
    so that the finite differences are meaningful; inside, everything happens at size c."""
    ls = list(range(5))
    v = _points(2, 34).requires_grad_(True)
    for c in [1e-150, 1e-30, 1e30, 1e150] if normalize else [1e-30, 1e30]:
        power = torch.tensor([l for l in ls for _ in range(2 * l + 1)], dtype=F64)

        def fn(v, c=c, power=power):
            Y = spherical_harmonics(ls, c * v, normalize=normalize)
            return Y if normalize else Y * c**-power

        assert torch.autograd.gradcheck(fn, (v,), eps=1e-6, atol=1e-6)
        assert torch.autograd.gradgradcheck(fn, (v,), eps=1e-6, atol=1e-5)


def test_non_finite_input(path):
    x = torch.tensor([[math.nan, 0.0, 1.0], [math.inf, 0.0, 0.0], [1.0, -math.inf, 2.0]])
    Y = spherical_harmonics(list(range(4)), x)
    assert torch.equal(Y[:, 0], torch.ones(3))
    assert torch.isnan(Y[:, 1:]).all()
    Y = spherical_harmonics(list(range(4)), x, normalize=False)
    assert not torch.isfinite(Y[:, 1:]).all(-1).any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_backward_matches_eager_backward(dtype, monkeypatch):
    """The C++ backward (taken when no graph of the backward is recorded) against the
    differentiable PyTorch formula (taken with create_graph, and by the fallback)."""
    if harmonics._kernels() is None:
        pytest.skip("the C++ kernel could not be built here (no compiler?)")
    x = _edge_points(dtype)
    x = x[x.abs().amax(-1) < 1e30]  # normalize=False: no overflowing harmonics
    eps = torch.finfo(dtype).eps
    for lmax in (0, 1, 2, 5, 12):
        ls = list(range(lmax + 1))
        w = torch.randn(len(x), (lmax + 1) ** 2, generator=torch.Generator().manual_seed(lmax))
        w = w.to(dtype)
        for normalize in (True, False):
            for normalization in ("component", "integral", "norm"):
                v = x.clone().requires_grad_(True)
                Y = spherical_harmonics(ls, v, normalize, normalization)
                (kernel,) = torch.autograd.grad((Y * w).sum(), v, retain_graph=True)
                (recorded,) = torch.autograd.grad((Y * w).sum(), v, create_graph=True)
                monkeypatch.setenv("TFN_NO_EXTENSIONS", "1")
                Y = spherical_harmonics(ls, v, normalize, normalization)
                (eager,) = torch.autograd.grad((Y * w).sum(), v)
                monkeypatch.delenv("TFN_NO_EXTENSIONS")
                assert not torch.isnan(kernel).any()
                for other in (recorded.detach(), eager):
                    assert torch.equal(torch.isinf(kernel), torch.isinf(other))
                    # rounding relative to the size of the terms summed (a gradient can be
                    # small by cancellation), in the rows that do not overflow (subnormal x:
                    # tested above against the exact values)
                    size = other.abs().amax(-1, keepdim=True)
                    rows = (size < torch.finfo(dtype).max / 1e6).squeeze(-1)
                    r = x.double().norm(dim=-1, keepdim=True)
                    terms = w.abs().amax(-1, keepdim=True) * (lmax + 1) ** 2
                    terms = terms * (1 / r if normalize else r.clamp(min=1) ** (lmax - 1))
                    error = (kernel - other)[rows].abs()
                    bound = 20 * eps * (lmax + 1) * torch.maximum(size, terms.to(dtype))[rows]
                    assert bool((error <= bound).all()), (lmax, normalize, normalization)
