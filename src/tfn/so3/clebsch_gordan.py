"""Clebsch-Gordan coefficients in the real basis of :mod:`tfn.so3.harmonics`.

The complex coefficients come from Racah's closed formula evaluated in exact rational
arithmetic; the real ones follow from the fixed unitary change of basis between complex and
real spherical harmonics. Nothing is solved numerically.

Normalisation: the real tensor ``C[m1, m2, m3]`` is the matrix of an isometry
``V_l3 -> V_l1 (x) V_l2``, i.e. ``sum_{m1, m2} C[m1, m2, m3] C[m1, m2, m3'] = delta(m3, m3')``
(so ``C.norm()**2 == 2 l3 + 1``), exactly like the textbook coefficients.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import numpy as np
import torch

__all__ = ["clebsch_gordan", "complex_clebsch_gordan", "complex_to_real"]


def _check_triangle(l1: int, l2: int, l3: int) -> None:
    if min(l1, l2, l3) < 0:
        raise ValueError(f"clebsch_gordan: degrees must be >= 0, got ({l1}, {l2}, {l3})")
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(
            f"clebsch_gordan: ({l1}, {l2}, {l3}) violates the triangle rule |l1-l2| <= l3 <= l1+l2"
        )


def _racah(j1: int, m1: int, j2: int, m2: int, J: int, M: int) -> float:
    """<j1 m1 j2 m2 | J M>, Condon-Shortley phase; exact integer arithmetic up to one sqrt."""
    if m1 + m2 != M or abs(m1) > j1 or abs(m2) > j2 or abs(M) > J:
        return 0.0
    f = math.factorial
    a, b, c, d, e = j1 + j2 - J, j1 - m1, j2 + m2, J - j2 + m1, J - j1 - m2
    k_min, k_max = max(0, -d, -e), min(a, b, c)
    if k_max < k_min:
        return 0.0
    # sum_k (-1)^k / (k! (a-k)! (b-k)! (c-k)! (d+k)! (e+k)!) over a common denominator
    denominators = [
        f(k) * f(a - k) * f(b - k) * f(c - k) * f(d + k) * f(e + k) for k in range(k_min, k_max + 1)
    ]
    common = math.lcm(*denominators)
    total = sum((-1) ** (k_min + i) * (common // den) for i, den in enumerate(denominators))
    if total == 0:
        return 0.0
    numerator = (2 * J + 1) * f(J + j1 - j2) * f(J - j1 + j2) * f(j1 + j2 - J)
    numerator *= f(J + M) * f(J - M) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2)
    square = Fraction(total * total * numerator, common * common * f(j1 + j2 + J + 1))
    return math.copysign(math.sqrt(square), total)


@cache
def _complex_cg(l1: int, l2: int, l3: int) -> np.ndarray:
    out = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            m3 = m1 + m2
            if abs(m3) <= l3:
                out[m1 + l1, m2 + l2, m3 + l3] = _racah(l1, m1, l2, m2, l3, m3)
    return out


def complex_clebsch_gordan(l1: int, l2: int, l3: int) -> torch.Tensor:
    """Complex-basis (Condon-Shortley) coefficients ``<l1 m1 l2 m2 | l3 m3>``, float64.

    Example:
        >>> round(float(complex_clebsch_gordan(1, 1, 0)[1, 1, 0]), 12)  # <1 0 1 0 | 0 0>
        -0.57735026919
    """
    _check_triangle(l1, l2, l3)
    return torch.from_numpy(_complex_cg(l1, l2, l3).copy())


@cache
def _complex_to_real(l: int) -> np.ndarray:
    # Row m of U expresses the real harmonic of order m in complex ones (with Condon-Shortley
    # phase): Y_{l,m>0} = (Y^{-m} + (-1)^m Y^m) / sqrt2, Y_{l,-m} = i (Y^{-m} - (-1)^m Y^m) / sqrt2.
    U = np.zeros((2 * l + 1, 2 * l + 1), dtype=complex)
    U[l, l] = 1.0
    s = 1 / math.sqrt(2)
    for m in range(1, l + 1):
        U[l + m, l - m] = s
        U[l + m, l + m] = (-1) ** m * s
        U[l - m, l - m] = 1j * s
        U[l - m, l + m] = -1j * (-1) ** m * s
    return U


def complex_to_real(l: int) -> torch.Tensor:
    """Unitary ``U`` with ``Y_real = U @ Y_complex`` for degree ``l`` (complex128).

    Example:
        >>> U = complex_to_real(2)
        >>> bool(torch.allclose(U @ U.conj().T, torch.eye(5, dtype=U.dtype)))
        True
    """
    return torch.from_numpy(_complex_to_real(l).copy())


@cache
def _real_cg(l1: int, l2: int, l3: int) -> np.ndarray:
    C = _complex_cg(l1, l2, l3)
    U1, U2, U3 = _complex_to_real(l1), _complex_to_real(l2), _complex_to_real(l3)
    real = np.einsum("am,bn,cp,mnp->abc", U1.conj(), U2.conj(), U3, C, optimize=True)
    # The result is real or purely imaginary (by the parity of l1 + l2 + l3); take that part.
    out = real.real if np.abs(real.real).max() >= np.abs(real.imag).max() else real.imag
    # Fix the overall sign so the first nonzero entry is positive (a convention, documented).
    out = out * np.sign(out.flat[np.flatnonzero(np.abs(out) > 1e-12)[0]])
    return np.where(np.abs(out) < 1e-15, 0.0, out) + 0.0


def clebsch_gordan(l1: int, l2: int, l3: int) -> torch.Tensor:
    """Real Clebsch-Gordan coefficients ``[2l1+1, 2l2+1, 2l3+1]`` (float64, cached).

    ``x (x) y -> z`` with ``z[k] = sum_ij C[i, j, k] x[i] y[j]`` commutes with rotations:
    ``C`` contracted with ``D_l1(R) x`` and ``D_l2(R) y`` equals ``D_l3(R) z``. The sign is
    fixed so that the first nonzero entry (in row-major order) is positive.

    Example:
        >>> C = clebsch_gordan(1, 1, 0)  # the dot product, up to 1/sqrt(3)
        >>> bool(torch.allclose(C[:, :, 0] * 3**0.5, torch.eye(3, dtype=torch.float64)))
        True
    """
    _check_triangle(l1, l2, l3)
    return torch.from_numpy(_real_cg(l1, l2, l3).copy())
