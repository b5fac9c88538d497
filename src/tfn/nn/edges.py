"""What every convolution of a network needs to know about the edges, computed once per forward.

All convolutions of a network run on the same edges with the same filter degrees and the same
radial basis, so the spherical harmonics ``Y(r_ab / |r_ab|)``, the basis expansion of
``|r_ab|`` and the cutoff envelope are computed once (:class:`EdgeEmbedding`) and handed to every
layer as :class:`Edges`; each convolution applies only its own radial network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tfn.nn.radial import PolynomialEnvelope, radial_basis
from tfn.ops.edge_plan import EdgePlan
from tfn.so3.harmonics import spherical_harmonics
from tfn.so3.irreps import Irreps

__all__ = ["Edges", "EdgeEmbedding"]


@dataclass(frozen=True)
class Edges:
    """The edges of one forward pass.

    ``plan``: the edges for the kernels (:class:`tfn.ops.EdgePlan`); ``vec [E, 3]``,
    ``length [E]``; ``sh [E, (lmax+1)^2]`` the harmonics of degrees ``0..lmax``;
    ``basis [E, num_basis]`` the radial basis; ``envelope [E]`` the cutoff envelope, or
    ``None`` without a cutoff.
    """

    plan: EdgePlan
    vec: torch.Tensor
    length: torch.Tensor
    sh: torch.Tensor
    basis: torch.Tensor
    envelope: torch.Tensor | None
    lmax: int

    @property
    def num_edges(self) -> int:
        return int(self.vec.shape[0])


class EdgeEmbedding(nn.Module):
    """Harmonics, radial basis and envelope of edge vectors (no parameters).

    Example:
        >>> embed = EdgeEmbedding(lmax=2, max_radius=3.0, num_basis=4, cutoff=3.0)
        >>> plan = EdgePlan.build(torch.tensor([0, 1]), torch.tensor([1, 0]), num_nodes=2)
        >>> edges = embed(torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]), plan)
        >>> edges.sh.shape, edges.basis.shape, edges.envelope.shape
        (torch.Size([2, 9]), torch.Size([2, 4]), torch.Size([2]))
    """

    def __init__(
        self,
        lmax: int,
        max_radius: float,
        num_basis: int = 8,
        basis: str = "gaussian",
        cutoff: float | None = None,
    ) -> None:
        super().__init__()
        if lmax < 0:
            raise ValueError(f"EdgeEmbedding: lmax must be >= 0, got {lmax}")
        self.lmax = int(lmax)
        self.irreps_sh = Irreps.spherical_harmonics(lmax)
        self.num_basis = int(num_basis)
        self.basis_kind = basis
        self.max_radius = float(max_radius)
        self.cutoff = None if cutoff is None else float(cutoff)
        self.basis = radial_basis(basis, num_basis, max_radius)
        self.envelope = PolynomialEnvelope(cutoff) if cutoff is not None else None

    def same_as(self, other: EdgeEmbedding) -> bool:
        """Whether ``other`` computes the same embedding (so its edges can be shared)."""
        return (
            self.lmax == other.lmax
            and self.num_basis == other.num_basis
            and self.basis_kind == other.basis_kind
            and self.max_radius == other.max_radius
            and self.cutoff == other.cutoff
        )

    def forward(self, edge_vec: torch.Tensor, plan: EdgePlan) -> Edges:
        length = torch.linalg.vector_norm(edge_vec, dim=-1)
        sh = spherical_harmonics(list(range(self.lmax + 1)), edge_vec, normalize=True)
        envelope = self.envelope(length) if self.envelope is not None else None
        return Edges(plan, edge_vec, length, sh, self.basis(length), envelope, self.lmax)

    def extra_repr(self) -> str:
        return (
            f"lmax={self.lmax}, basis={self.basis_kind}({self.num_basis}), "
            f"max_radius={self.max_radius}, cutoff={self.cutoff}"
        )
