"""Radial bases, the smooth cutoff envelope and the radial network."""

from __future__ import annotations

import math

import pytest
import torch

from tfn.nn import BesselBasis, GaussianBasis, PolynomialEnvelope, RadialMLP, radial_basis


def _derivatives(fn, r, order=2):
    """``[f(r), f'(r), f''(r)]`` by autograd (elementwise functions of ``r``)."""
    r = r.clone().requires_grad_(True)
    values = [fn(r)]
    for _ in range(order):
        (d,) = torch.autograd.grad(values[-1].sum(), r, create_graph=True)
        values.append(d)
    return [v.detach() for v in values]


def test_gaussian_basis(default_dtype):
    with default_dtype(torch.float64):
        basis = GaussianBasis(8, max_radius=5.0)
    r = torch.linspace(0, 6, 13, dtype=torch.float64)
    out = basis(r)
    assert out.shape == (13, 8) and out.dtype == torch.float64
    assert basis(torch.rand(2, 3, 4)).shape == (2, 3, 4, 8)
    centers = torch.linspace(0, 5, 8, dtype=torch.float64)
    width = 5.0 / 7
    expected = torch.exp(-0.5 * ((r[:, None] - centers) / width) ** 2)
    torch.testing.assert_close(out, expected)
    # Each Gaussian peaks (value 1) at its centre.
    torch.testing.assert_close(basis(centers).diagonal(), torch.ones(8, dtype=torch.float64))


def test_bessel_basis(default_dtype):
    c = 4.0
    with default_dtype(torch.float64):
        basis = BesselBasis(6, max_radius=c)
    r = torch.linspace(0.1, 4, 9, dtype=torch.float64)
    out = basis(r)
    assert out.shape == (9, 6)
    k = torch.arange(1, 7, dtype=torch.float64)
    expected = math.sqrt(2 / c) * torch.sin(k * math.pi * r[:, None] / c) / r[:, None]
    torch.testing.assert_close(out, expected)
    # sin(k pi r / c) vanishes at r = c.
    assert basis(torch.tensor([c], dtype=torch.float64)).abs().max() < 1e-14
    assert basis(torch.rand(3, 5) + 0.1).shape == (3, 5, 6)


def test_basis_by_name_and_bad_arguments():
    assert isinstance(radial_basis("gaussian", 4, 2.0), GaussianBasis)
    assert isinstance(radial_basis("bessel", 4, 2.0), BesselBasis)
    with pytest.raises(ValueError, match="unknown radial basis"):
        radial_basis("chebyshev", 4, 2.0)
    with pytest.raises(ValueError, match="GaussianBasis"):
        GaussianBasis(0, 1.0)
    with pytest.raises(ValueError, match="BesselBasis"):
        BesselBasis(3, 0.0)


@pytest.mark.parametrize("p", [3, 6, 9])
@pytest.mark.parametrize("cutoff", [1.0, 2.5])
def test_envelope_smooth_at_cutoff(p, cutoff):
    env = PolynomialEnvelope(cutoff, p=p)
    zero = torch.zeros(1, dtype=torch.float64)
    value, d1, _ = _derivatives(env, zero)
    assert float(value) == pytest.approx(1.0, abs=1e-15)
    assert float(d1) == pytest.approx(0.0, abs=1e-12)
    # Approaching the cutoff from inside: u ~ delta^3, u' ~ delta^2, u'' ~ delta.
    for delta in [1e-2, 1e-3, 1e-4]:
        r = torch.tensor([cutoff * (1 - delta)], dtype=torch.float64)
        u, du, ddu = _derivatives(env, r)
        scale = p**3 * 10  # bound on the Taylor coefficients, in units of the cutoff
        assert abs(float(u)) <= scale * delta**3
        assert abs(float(du)) * cutoff <= scale * delta**2
        assert abs(float(ddu)) * cutoff**2 <= scale * delta
    # At and beyond the cutoff: identically zero, and so are its derivatives.
    r = torch.tensor([cutoff, cutoff * 1.0001, cutoff * 1.5, cutoff * 3], dtype=torch.float64)
    for v in _derivatives(env, r):
        assert torch.equal(v, torch.zeros_like(v))
    # Inside: between 0 and 1, decreasing (strictly away from the flat start at 0).
    r = torch.linspace(0.01, 0.99, 50, dtype=torch.float64) * cutoff
    u, du, _ = _derivatives(env, r)
    assert bool(((u > 0) & (u <= 1)).all()) and bool((du <= 0).all())
    assert bool((du[r > 0.3 * cutoff] < 0).all())


def test_envelope_docstring_values():
    env = PolynomialEnvelope(cutoff=2.0)
    out = env(torch.tensor([0.0, 2.0, 3.0]))
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0, 0.0]))


@pytest.mark.parametrize("basis", ["gaussian", "bessel"])
def test_radial_mlp_vanishes_beyond_cutoff(basis, default_dtype):
    with default_dtype(torch.float64):
        mlp = RadialMLP(12, max_radius=3.0, cutoff=2.0, basis=basis, hidden=(16, 16))
    r = torch.cat([torch.linspace(0.05, 1.99, 20), torch.linspace(2.0, 5.0, 10)])
    r = r.to(torch.float64)
    out = mlp(r)
    assert out.shape == (30, 12)
    assert out[:20].abs().sum() > 0
    assert torch.equal(out[20:], torch.zeros(10, 12, dtype=torch.float64))
    # Without a cutoff nothing is masked.
    with default_dtype(torch.float64):
        free = RadialMLP(12, max_radius=3.0, basis=basis)
    assert bool((free(r[20:]).abs().sum(-1) > 0).all())
    assert free(torch.rand(2, 7, dtype=torch.float64)).shape == (2, 7, 12)


def test_radial_mlp_force_continuous_through_cutoff(default_dtype):
    cutoff = 2.0
    with default_dtype(torch.float64):
        mlp = RadialMLP(5, max_radius=cutoff, cutoff=cutoff, hidden=(8,))
    # Value and derivative both tend to 0 on the inside and are exactly 0 outside.
    previous = math.inf
    for delta in [1e-2, 1e-3, 1e-4]:
        inside = torch.tensor([cutoff - delta], dtype=torch.float64)
        outside = torch.tensor([cutoff + delta], dtype=torch.float64)
        value_in, d_in, _ = _derivatives(lambda r: mlp(r).sum(-1), inside)
        value_out, d_out, _ = _derivatives(lambda r: mlp(r).sum(-1), outside)
        assert float(value_out) == 0.0 and float(d_out) == 0.0
        assert abs(float(d_in)) < 1e3 * delta**2
        assert abs(float(d_in)) < previous
        previous = abs(float(d_in))
    # Away from the cutoff the derivative is not degenerate.
    _, d_mid, _ = _derivatives(lambda r: mlp(r).sum(-1), torch.tensor([1.0], dtype=torch.float64))
    assert abs(float(d_mid)) > 1e-6


def test_radial_mlp_custom_activation():
    mlp = RadialMLP(3, max_radius=1.0, hidden=(4,), activation=torch.nn.Tanh())
    assert any(isinstance(m, torch.nn.Tanh) for m in mlp.net)
    assert mlp(torch.rand(6)).shape == (6, 3)
