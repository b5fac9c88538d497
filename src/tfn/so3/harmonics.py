"""Real spherical harmonics of any degree.

Convention (used by every part of tfn): the block of degree ``l`` has ``2l + 1`` components
ordered ``m = -l .. l``; they are the standard real spherical harmonics (no Condon-Shortley
phase: ``Y_l^m ~ cos(m phi)`` for ``m > 0`` and ``sin(|m| phi)`` for ``m < 0``) taken with ``y``
as the polar axis, i.e. evaluated at the cyclically permuted point ``(x', y', z') = (z, x, y)``.
With this choice the ``l = 1`` block is proportional to ``(x, y, z)`` in that order, so a
degree-1 feature is a Cartesian vector.

Algorithm: the associated Legendre part is built for all orders ``m`` at once by the
three-term recurrence in ``l`` on normalised polynomials (no factorial overflow at high degree),
the azimuthal part by the recurrence of ``(x' + i y')^m``, and the two are combined by one
gather. Every operation is a plain torch operation, so derivatives of any order come from
autograd and the function works under TorchScript-free ``torch.compile`` and on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import torch

from tfn.so3.irreps import Irreps

__all__ = ["spherical_harmonics", "SphericalHarmonics"]

_NORMALIZATIONS = ("component", "integral", "norm")


def _as_degrees(ls: int | Sequence[int] | Irreps | str) -> list[int]:
    if isinstance(ls, int):
        degrees = [ls]
    elif isinstance(ls, (Irreps, str)):
        degrees = []
        for mul, ir in Irreps(ls):
            if ir.p != (-1) ** ir.l:
                raise ValueError(
                    f"spherical harmonics of degree {ir.l} have parity {'e' if ir.l % 2 == 0 else 'o'}, "
                    f"but the irreps ask for {ir}"
                )
            degrees.extend([ir.l] * mul)
    else:
        degrees = [int(l) for l in ls]
    if not degrees:
        raise ValueError("spherical_harmonics: no degree requested")
    if min(degrees) < 0:
        raise ValueError(f"spherical_harmonics: negative degree in {degrees}")
    return degrees


@cache
def _plan(lmax: int, normalization: str) -> dict[str, torch.Tensor | list]:
    """Recurrence coefficients and gather indices, computed once per (lmax, normalization)."""
    # Normalised Legendre recurrence: P_l^m = a z P_{l-1}^m - b r^2 P_{l-2}^m  (m <= l-1),
    # P_l^l = d P_{l-1}^{l-1}; P_l^m = sqrt((l-m)!/(l+m)!) * Q_l^m with Q the unnormalised
    # polynomial such that r^l P_l^m(cos theta) = Q_l^m(z, r^2) * rho^m.
    a_coef, b_coef, d_coef = [], [], []
    for l in range(lmax + 1):
        a = [(2 * l - 1) / math.sqrt((l - m) * (l + m)) for m in range(l)]
        b = [
            math.sqrt((l + m - 1) * (l - m - 1) / ((l - m) * (l + m))) if m <= l - 2 else 0.0
            for m in range(l)
        ]
        a_coef.append(torch.tensor(a, dtype=torch.float64))
        b_coef.append(torch.tensor(b, dtype=torch.float64))
        d_coef.append(math.sqrt((2 * l - 1) / (2 * l)) if l > 0 else 1.0)
    # Output component (l, m) = scale * P_l^{|m|} * AZ[m], AZ = [S_lmax..S_1, 1, C_1..C_lmax].
    p_index, az_index, scale = [], [], []
    for l in range(lmax + 1):
        if normalization == "component":
            base = math.sqrt(2 * l + 1)
        elif normalization == "integral":
            base = math.sqrt((2 * l + 1) / (4 * math.pi))
        else:
            base = 1.0
        offset = l * (l + 1) // 2
        for m in range(-l, l + 1):
            p_index.append(offset + abs(m))
            az_index.append(lmax + m)
            scale.append(base * (math.sqrt(2.0) if m != 0 else 1.0))
    return {
        "a": a_coef,
        "b": b_coef,
        "d": d_coef,
        "p_index": torch.tensor(p_index),
        "az_index": torch.tensor(az_index),
        "scale": torch.tensor(scale, dtype=torch.float64),
    }


def _harmonics_up_to(lmax: int, xyz: torch.Tensor, unit: bool, normalization: str) -> torch.Tensor:
    """All degrees ``0..lmax`` of ``[N, 3]`` points: ``[N, (lmax+1)^2]``."""
    plan = _plan(lmax, normalization)
    dtype, device = xyz.dtype, xyz.device
    # y is the polar axis: standard formulas at (x', y', z') = (z, x, y).
    xp, yp, zp = xyz[:, 2], xyz[:, 0], xyz[:, 1]
    z = zp.unsqueeze(-1)
    r2 = None if unit else (xyz * xyz).sum(-1, keepdim=True)
    legendre = [torch.ones_like(z)]
    for l in range(1, lmax + 1):
        prev = legendre[l - 1]
        a = plan["a"][l].to(dtype=dtype, device=device)
        low = a * z * prev
        if l >= 2:
            b = plan["b"][l][: l - 1].to(dtype=dtype, device=device)
            term = b * legendre[l - 2]
            term = term if unit else term * r2
            low = torch.cat([low[:, : l - 1] - term, low[:, l - 1 :]], dim=-1)
        legendre.append(torch.cat([low, plan["d"][l] * prev[:, l - 1 :]], dim=-1))
    # Azimuthal part: C_m + i S_m = (x' + i y')^m.
    cos, sin = [torch.ones_like(xp)], [torch.zeros_like(xp)]
    for _ in range(lmax):
        c, s = cos[-1], sin[-1]
        cos.append(xp * c - yp * s)
        sin.append(xp * s + yp * c)
    azimuth = torch.stack(sin[:0:-1] + cos, dim=-1)
    all_p = torch.cat(legendre, dim=-1)
    p_index = plan["p_index"].to(device)
    az_index = plan["az_index"].to(device)
    scale = plan["scale"].to(dtype=dtype, device=device)
    return all_p.index_select(-1, p_index) * azimuth.index_select(-1, az_index) * scale


def spherical_harmonics(
    ls: int | Sequence[int] | Irreps | str,
    vectors: torch.Tensor,
    normalize: bool = True,
    normalization: str = "component",
) -> torch.Tensor:
    """Real spherical harmonics of the degrees ``ls`` at ``vectors [..., 3]``.

    Args:
        ls: one degree, a list of degrees, or irreps such as ``"0e + 1o + 2e"`` (the parity
            of degree ``l`` must be ``(-1)^l``). Blocks are concatenated in the order given.
        vectors: points ``[..., 3]``.
        normalize: evaluate at ``vectors / |vectors|``; with ``False`` the result is the solid
            harmonic ``r^l Y_l``, a homogeneous polynomial.
        normalization: ``"component"`` (each block has squared norm ``2l + 1`` on unit
            vectors), ``"integral"`` (orthonormal on the sphere) or ``"norm"`` (norm 1).

    Returns:
        ``[..., sum(2l + 1)]``.

    Example:
        >>> spherical_harmonics(1, torch.tensor([[0.0, 0.0, 2.0]]))
        tensor([[0.0000, 0.0000, 1.7321]])
        >>> spherical_harmonics([0, 1, 2], torch.randn(10, 3)).shape
        torch.Size([10, 9])
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if vectors.shape[-1] != 3:
        raise ValueError(
            f"spherical_harmonics: vectors must have shape [..., 3], got {tuple(vectors.shape)}"
        )
    degrees = _as_degrees(ls)
    lmax = max(degrees)
    batch_shape = vectors.shape[:-1]
    xyz = vectors.reshape(-1, 3)
    if normalize:
        xyz = xyz / torch.linalg.vector_norm(xyz, dim=-1, keepdim=True)
    out = _harmonics_up_to(lmax, xyz, unit=normalize, normalization=normalization)
    if degrees != list(range(lmax + 1)):
        index = torch.cat([torch.arange(l * l, (l + 1) * (l + 1)) for l in degrees]).to(out.device)
        out = out.index_select(-1, index)
    return out.reshape(*batch_shape, out.shape[-1])


class SphericalHarmonics(torch.nn.Module):
    """Module form of :func:`spherical_harmonics` with the degrees fixed at construction.

    Example:
        >>> sh = SphericalHarmonics("0e + 1o + 2e")
        >>> sh(torch.randn(5, 3)).shape, sh.irreps_out
        (torch.Size([5, 9]), Irreps('1x0e+1x1o+1x2e'))
    """

    def __init__(
        self,
        irreps_out: int | Sequence[int] | Irreps | str,
        normalize: bool = True,
        normalization: str = "component",
    ) -> None:
        super().__init__()
        self.degrees = _as_degrees(irreps_out)
        self.irreps_out = Irreps([(1, (l, (-1) ** l)) for l in self.degrees]).simplify()
        self.normalize = normalize
        self.normalization = normalization

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(self.degrees, vectors, self.normalize, self.normalization)
