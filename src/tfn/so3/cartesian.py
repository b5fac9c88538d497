"""Cartesian tensors as irreps, and back.

A rank-``n`` Cartesian tensor is an element of ``(R^3)^(x n)``; each index is a vector
(``1o``). :class:`CartesianTensor` builds an orthogonal change of basis from the tensors that
satisfy the index symmetries of a formula such as ``"ij=ji"`` to a direct sum of irreps, by
coupling one index at a time with Clebsch-Gordan coefficients and then restricting each
isotypic block to the symmetric subspace.
"""

from __future__ import annotations

import re
from functools import cache

import torch

from tfn.so3.clebsch_gordan import clebsch_gordan
from tfn.so3.harmonics import spherical_harmonics
from tfn.so3.irreps import Irreps

__all__ = ["CartesianTensor"]


def _parse(formula: str) -> tuple[str, list[tuple[int, tuple[int, ...]]]]:
    parts = [p.strip() for p in formula.replace(" ", "").split("=")]
    indices = parts[0]
    if not re.fullmatch(r"[a-zA-Z]+", indices or "") or len(set(indices)) != len(indices):
        raise ValueError(
            f"CartesianTensor: invalid formula {formula!r}: expected distinct letters like 'ij=ji'"
        )
    relations = []
    for part in parts[1:]:
        sign = -1 if part.startswith("-") else 1
        perm = part.lstrip("-+")
        if sorted(perm) != sorted(indices):
            raise ValueError(
                f"CartesianTensor: invalid formula {formula!r}: {part!r} is not a permutation of {indices!r}"
            )
        relations.append((sign, tuple(indices.index(c) for c in perm)))
    return indices, relations


_PROBE = torch.tensor([0.31, -0.52, 0.79], dtype=torch.float64)


def _probe_power(n: int) -> torch.Tensor:
    out = _PROBE
    for _ in range(n - 1):
        out = torch.outer(out, _PROBE).reshape(-1)
    return out


@cache
def _change_of_basis(formula: str) -> tuple[Irreps, torch.Tensor]:
    indices, relations = _parse(formula)
    n = len(indices)
    # Full decomposition of (R^3)^(x n): rows of an orthogonal [3^n, 3^n] matrix grouped by irrep.
    blocks: list[tuple[int, torch.Tensor]] = [(1, torch.eye(3, dtype=torch.float64))]
    for _ in range(n - 1):
        new_blocks = []
        for l, M in blocks:
            for l_new in range(abs(l - 1), l + 2):
                C = clebsch_gordan(l, 1, l_new)  # [2l+1, 3, 2l_new+1]
                rows = torch.einsum("aic,ax->cxi", C, M).reshape(2 * l_new + 1, -1)
                new_blocks.append((l_new, rows))
        blocks = new_blocks
    dim = 3**n
    # Projector onto the tensors obeying every relation T = sign * T.permute(perm).
    grid = torch.arange(dim).reshape((3,) * n)
    constraint = [torch.zeros(0, dim, dtype=torch.float64)]
    for sign, perm in relations:
        P = torch.zeros(dim, dim, dtype=torch.float64)
        P[grid.flatten(), grid.permute(perm).flatten()] = 1.0
        constraint.append(P - sign * torch.eye(dim, dtype=torch.float64))
    A = torch.cat(constraint)
    _, S, Vh = torch.linalg.svd(A, full_matrices=True)
    rank = int((S > 1e-9).sum())
    allowed = Vh[rank:].T  # [dim, d]
    projector = allowed @ allowed.T
    parity = (-1) ** n
    irreps, rows = [], []
    for l in sorted({l for l, _ in blocks}):
        Q = torch.stack([M for ll, M in blocks if ll == l])  # [k, 2l+1, dim]
        # The projector commutes with rotations: within the isotypic block it is P_l (x) 1.
        P_l = torch.einsum("ux,xy,vy->uv", Q[:, l], projector, Q[:, l])
        eigenvalues, eigenvectors = torch.linalg.eigh(P_l)
        keep = eigenvectors[:, eigenvalues > 0.5]
        if keep.shape[1] == 0:
            continue
        # A deterministic sign: make the largest entry of each kept vector positive.
        signs = torch.sign(keep.gather(0, keep.abs().argmax(0, keepdim=True)))
        keep = keep * signs
        block = torch.einsum("uw,uax->wax", keep, Q)  # [copies, 2l+1, dim]
        # Prefer the sign that makes the n-th tensor power of a vector r map to +Y_l(r), as
        # e3nn does (so "ij=ji" of r r^T is (|r|^2/sqrt3, +c Y_2(r))); blocks that r (x) .. (x) r
        # does not reach keep the sign chosen above.
        power = _probe_power(n)
        harmonic = spherical_harmonics(l, _PROBE, normalize=False)
        overlap = torch.einsum("wax,x,a->w", block, power, harmonic)
        flip = torch.where(overlap.abs() > 1e-9, torch.sign(overlap), torch.ones_like(overlap))
        block = block * flip[:, None, None]
        irreps.append((keep.shape[1], (l, parity)))
        rows.append(block.reshape(-1, dim))
    basis = torch.cat(rows) if rows else torch.zeros(0, dim, dtype=torch.float64)
    basis = torch.where(basis.abs() < 1e-14, torch.zeros_like(basis), basis)
    return Irreps(irreps), basis


class CartesianTensor:
    """Change of basis between Cartesian tensors with index symmetries and irreps.

    ``formula`` names the indices and the symmetries: ``"i"`` (a vector, ``1o``), ``"ij"``
    (any 3x3 tensor, ``0e + 1e + 2e``), ``"ij=ji"`` (symmetric, ``0e + 2e``), ``"ij=-ji"``
    (antisymmetric, ``1e``), and in general any rank with relations such as ``"ijk=jik=ikj"``.
    The change of basis is orthogonal, so norms are preserved.

    Example:
        >>> ct = CartesianTensor("ij=ji")
        >>> ct.irreps
        Irreps('1x0e+1x2e')
        >>> T = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 1.0]])
        >>> x = ct.from_cartesian(T)
        >>> x.shape, bool(torch.allclose(ct.to_cartesian(x), T))
        (torch.Size([6]), True)
    """

    def __init__(self, formula: str) -> None:
        self.formula = formula
        self.indices, _ = _parse(formula)
        self.irreps, self._basis = _change_of_basis(formula)

    @property
    def rank(self) -> int:
        return len(self.indices)

    def change_of_basis(self, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """``Q [irreps.dim, 3, ..., 3]`` with ``x = Q . T`` and ``T = Q^T . x``."""
        Q = self._basis.to(dtype=dtype or torch.get_default_dtype(), device=device)
        return Q.reshape((self.irreps.dim,) + (3,) * self.rank)

    def from_cartesian(self, T: torch.Tensor) -> torch.Tensor:
        """Irreps components ``[..., irreps.dim]`` of tensors ``T [..., 3, ..., 3]``.

        Components outside the symmetric subspace of the formula are discarded.
        """
        if tuple(T.shape[T.dim() - self.rank :]) != (3,) * self.rank:
            raise ValueError(
                f"CartesianTensor({self.formula!r}).from_cartesian: expected shape [..., "
                f"{', '.join(['3'] * self.rank)}], got {tuple(T.shape)}"
            )
        Q = self._basis.to(dtype=T.dtype, device=T.device)
        flat = T.reshape(T.shape[: T.dim() - self.rank] + (3**self.rank,))
        return flat @ Q.T

    def to_cartesian(self, x: torch.Tensor) -> torch.Tensor:
        """Cartesian tensors ``[..., 3, ..., 3]`` from irreps components ``[..., irreps.dim]``."""
        if x.shape[-1] != self.irreps.dim:
            raise ValueError(
                f"CartesianTensor({self.formula!r}).to_cartesian: expected last dimension "
                f"{self.irreps.dim} ({self.irreps}), got {tuple(x.shape)}"
            )
        Q = self._basis.to(dtype=x.dtype, device=x.device)
        return (x @ Q).reshape(x.shape[:-1] + (3,) * self.rank)

    def __repr__(self) -> str:
        return f"CartesianTensor({self.formula!r}, irreps={self.irreps})"
