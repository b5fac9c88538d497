"""Radial functions: distance bases, a smooth cutoff envelope, and the radial network.

A filter is ``F(r) = R(|r|) Y_l(r / |r|)``; this module supplies ``R``. Distances are expanded
in a basis (Gaussians as in the paper, or Bessel functions), multiplied by a polynomial
envelope that goes to zero with two continuous derivatives at the cutoff (so forces are
continuous when a neighbour leaves), and mapped by a small MLP to one weight per path and
channel of the tensor product.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianBasis", "BesselBasis", "PolynomialEnvelope", "RadialMLP", "radial_basis"]


class GaussianBasis(nn.Module):
    """``exp(-(r - mu_k)^2 / (2 sigma^2))`` with centres evenly spaced on ``[start, max_radius]``.

    Example:
        >>> GaussianBasis(8, max_radius=5.0)(torch.tensor([0.0, 2.5])).shape
        torch.Size([2, 8])
    """

    def __init__(self, num_basis: int, max_radius: float, start: float = 0.0) -> None:
        super().__init__()
        if num_basis < 1 or max_radius <= start:
            raise ValueError(
                f"GaussianBasis: need num_basis >= 1 and max_radius > start, got {num_basis}, {max_radius}"
            )
        self.num_basis = num_basis
        self.max_radius = float(max_radius)
        self.start = float(start)
        self.width = (max_radius - start) / max(num_basis - 1, 1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        # Built at the input's dtype on every call: a float64 model keeps exact centres.
        steps = torch.arange(self.num_basis, dtype=r.dtype, device=r.device)
        diff = (r[..., None] - (self.start + self.width * steps)) / self.width
        return torch.exp(-0.5 * diff * diff)


class BesselBasis(nn.Module):
    """``sqrt(2 / c) sin(k pi r / c) / r`` for ``k = 1 .. num_basis`` (c = ``max_radius``).

    Example:
        >>> BesselBasis(6, max_radius=4.0)(torch.tensor([1.0, 3.0])).shape
        torch.Size([2, 6])
    """

    def __init__(self, num_basis: int, max_radius: float) -> None:
        super().__init__()
        if num_basis < 1 or max_radius <= 0:
            raise ValueError(
                f"BesselBasis: need num_basis >= 1 and max_radius > 0, got {num_basis}, {max_radius}"
            )
        self.num_basis = num_basis
        self.max_radius = float(max_radius)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r[..., None]
        prefactor = math.sqrt(2.0 / self.max_radius)
        k = torch.arange(1, self.num_basis + 1, dtype=r.dtype, device=r.device)
        return prefactor * torch.sin(k * (math.pi / self.max_radius) * r) / r


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``.

    ``x = r / cutoff``; ``u`` and its first two derivatives vanish at ``x = 1``; zero beyond.

    Example:
        >>> env = PolynomialEnvelope(cutoff=2.0)
        >>> [round(v, 6) for v in env(torch.tensor([0.0, 2.0, 3.0])).tolist()]
        [1.0, 0.0, 0.0]
    """

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = p

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.cutoff
        u = (
            1
            - (p + 1) * (p + 2) / 2 * x**p
            + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2)
        )
        return torch.where(x < 1, u, torch.zeros_like(u))


def radial_basis(kind: str, num_basis: int, max_radius: float) -> nn.Module:
    """Build a basis by name: ``"gaussian"`` or ``"bessel"``."""
    if kind == "gaussian":
        return GaussianBasis(num_basis, max_radius)
    if kind == "bessel":
        return BesselBasis(num_basis, max_radius)
    raise ValueError(f"unknown radial basis {kind!r}; expected 'gaussian' or 'bessel'")


class RadialMLP(nn.Module):
    """The radial network: basis -> hidden layers -> one weight per tensor-product path.

    ``forward(r) -> [E, weight_numel]``; the envelope (if any) multiplies the output.

    Example:
        >>> mlp = RadialMLP(weight_numel=12, max_radius=3.0, cutoff=3.0)
        >>> mlp(torch.rand(5) * 3).shape
        torch.Size([5, 12])
    """

    def __init__(
        self,
        weight_numel: int,
        max_radius: float,
        num_basis: int = 8,
        basis: str = "gaussian",
        hidden: tuple[int, ...] = (32,),
        cutoff: float | None = None,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.basis = radial_basis(basis, num_basis, max_radius)
        self.envelope = PolynomialEnvelope(cutoff) if cutoff is not None else None
        self.weight_numel = weight_numel
        layers: list[nn.Module] = []
        width = num_basis
        for h in hidden:
            layers += [nn.Linear(width, h), activation if activation is not None else nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, weight_numel))
        self.net = nn.Sequential(*layers)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        envelope = self.envelope(r) if self.envelope is not None else None
        return self.from_basis(self.basis(r), envelope)

    def from_basis(self, basis: torch.Tensor, envelope: torch.Tensor | None) -> torch.Tensor:
        """The weights from an already expanded basis ``[E, num_basis]`` and envelope ``[E]``
        (computed once per forward and shared by all layers: :class:`tfn.nn.EdgeEmbedding`)."""
        out = self.net(basis)
        if envelope is not None:
            out = out * envelope[..., None]
        return out
