"""The Tensor Field Network point convolution.

For every edge ``b -> a`` with relative position ``r_ab = r_a - r_b`` the filter
``F(r_ab) = R(|r_ab|) Y_l(r_ab / |r_ab|)`` (``l = 0 .. lmax``) is coupled with the features of
``b`` through Clebsch-Gordan coefficients, and the results are summed over the neighbours of
``a``. The radial function ``R`` has its own value for every path and channel (the paper's
channel-wise convolution) or a full channel-mixing matrix per path.

Inside a network the harmonics and the radial basis of the edges are computed once per forward
(:class:`tfn.nn.EdgeEmbedding`) and every convolution receives them as :class:`tfn.nn.Edges`;
called on its own, a convolution embeds the edges itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tfn.nn.edges import EdgeEmbedding, Edges
from tfn.nn.radial import RadialMLP
from tfn.ops.edge_plan import EdgePlan
from tfn.ops.paths import channelwise_paths, fully_connected_paths
from tfn.ops.tensor_product import TensorProduct
from tfn.so3.irreps import Irreps, IrrepsLike

__all__ = ["Convolution"]


class Convolution(nn.Module):
    """TFN point convolution: ``out[a] = sum_b TP(x[b], Y(r_ab), R(|r_ab|)) / sqrt(n)``.

    Args:
        irreps_in: irreps of the point features.
        irreps_out: output irreps. ``None`` (channel-wise mode only) keeps every path as its own
            output entry, the paper's concatenation; ``filter_irreps`` restricts which irreps
            are kept.
        lmax: largest filter degree; filters are ``Y_0 .. Y_lmax`` with parity ``(-1)^l``.
        connection: ``"channelwise"`` (paper: each channel has its own radial function per
            path) or ``"fully_connected"`` (per path, a radial matrix mixing the channels).
        filter_irreps: with ``irreps_out=None``, keep only outputs of these irreps.
        max_radius: range of the radial basis.
        num_basis, radial_basis, radial_hidden: the radial network.
        cutoff: apply the smooth envelope that reaches zero at this distance.
        num_neighbors: messages are summed and divided by ``sqrt(num_neighbors)`` (a fixed
            constant ``> 0``, so a cloud's output never depends on other clouds). 1 is a plain
            sum.
        executor: the tensor-product kernel (:data:`tfn.ops.EXECUTORS`; ``"auto"``: the
            fastest available).

    ``forward(features [N, irreps_in.dim], edges) -> [N, dim_out]`` with ``edges`` the
    :class:`~tfn.nn.Edges` of a network's forward pass, or
    ``forward(features, edge_index [2, E], edge_vec [E, 3])`` with
    ``edge_index = (source b, destination a)`` and ``edge_vec = pos[a] - pos[b]``.

    Example:
        >>> conv = Convolution("1x0e", None, lmax=2)
        >>> conv.irreps_out
        Irreps('1x0e+1x1o+1x2e')
        >>> edge_index = torch.tensor([[0, 1], [1, 0]])
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        >>> conv(torch.ones(2, 1), edge_index, pos[edge_index[1]] - pos[edge_index[0]]).shape
        torch.Size([2, 9])
    """

    def __init__(
        self,
        irreps_in: IrrepsLike,
        irreps_out: IrrepsLike | None = None,
        lmax: int = 2,
        *,
        connection: str = "channelwise",
        filter_irreps: IrrepsLike | None = None,
        max_radius: float = 5.0,
        num_basis: int = 8,
        radial_basis: str = "gaussian",
        radial_hidden: tuple[int, ...] = (32,),
        cutoff: float | None = None,
        num_neighbors: float = 1.0,
        executor: str = "auto",
    ) -> None:
        super().__init__()
        if not num_neighbors > 0:
            raise ValueError(
                f"Convolution: num_neighbors must be > 0 (messages are divided by its square root), got {num_neighbors}"
            )
        self.irreps_in = Irreps(irreps_in).simplify()
        self.irreps_sh = Irreps.spherical_harmonics(lmax)
        self.lmax = lmax
        if irreps_out is not None:
            irreps_out = Irreps(irreps_out).simplify()
        if connection == "channelwise":
            description = channelwise_paths(
                self.irreps_in, self.irreps_sh, irreps_out, filter_irreps=filter_irreps
            )
        elif connection == "fully_connected":
            if irreps_out is None:
                raise ValueError("Convolution: connection='fully_connected' needs irreps_out")
            description = fully_connected_paths(self.irreps_in, self.irreps_sh, irreps_out)
        else:
            raise ValueError(
                f"Convolution: unknown connection {connection!r}; expected 'channelwise' or 'fully_connected'"
            )
        if not description.paths:
            raise ValueError(
                f"Convolution: no path couples {self.irreps_in} with filters {self.irreps_sh} "
                f"to {irreps_out if irreps_out is not None else filter_irreps}"
            )
        self.description = description
        self.irreps_out = description.irreps_out
        self.connection = connection
        self.tp = TensorProduct(description, executor=executor)
        self.embedding = EdgeEmbedding(lmax, max_radius, num_basis, radial_basis, cutoff)
        self.radial = RadialMLP(
            description.weight_numel,
            max_radius=max_radius,
            num_basis=num_basis,
            basis=radial_basis,
            hidden=radial_hidden,
            cutoff=cutoff,
        )
        # A buffer, so that a value fitted from data (the average number of neighbours) is
        # saved with the weights.
        self.register_buffer("neighbor_norm", torch.tensor(1.0 / math.sqrt(num_neighbors)))

    @property
    def num_neighbors(self) -> float:
        return float(self.neighbor_norm) ** -2

    def set_num_neighbors(self, num_neighbors: float) -> None:
        """Change the normalisation ``1 / sqrt(num_neighbors)`` of the sums."""
        if not num_neighbors > 0:
            raise ValueError(f"Convolution: num_neighbors must be > 0, got {num_neighbors}")
        self.neighbor_norm.fill_(1.0 / math.sqrt(num_neighbors))

    def radial_functions(self, r: torch.Tensor) -> torch.Tensor:
        """The learned radial functions ``[len(r), weight_numel]`` (with the path coefficients).

        Column ``path.weight_slice`` of ``self.description.paths`` belongs to that path.
        """
        out = self.radial(r)
        scale = torch.ones(out.shape[-1], dtype=out.dtype, device=out.device)
        for p in self.description.paths:
            scale[p.weight_slice] = p.coefficient
        return out * scale * self.neighbor_norm

    def forward(
        self,
        features: torch.Tensor,
        edges: Edges | torch.Tensor,
        edge_vec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if features.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"Convolution: features have dimension {features.shape[-1]}, but irreps_in "
                f"{self.irreps_in} have dimension {self.irreps_in.dim}"
            )
        if not isinstance(edges, Edges):  # (edge_index, edge_vec): embed the edges here
            if edge_vec is None:
                raise ValueError("Convolution: give Edges, or edge_index and edge_vec")
            plan = EdgePlan.build(edges[0], edges[1], features.shape[0])
            edges = self.embedding(edge_vec, plan)
        elif edges.lmax < self.lmax or edges.basis.shape[-1] != self.radial.basis.num_basis:
            raise ValueError(
                f"Convolution: the edges carry harmonics up to l={edges.lmax} and "
                f"{edges.basis.shape[-1]} basis functions; this convolution needs l <= "
                f"{self.lmax} and {self.radial.basis.num_basis}"
            )
        sh = edges.sh if edges.lmax == self.lmax else edges.sh[:, : (self.lmax + 1) ** 2]
        weight = self.radial.from_basis(edges.basis, edges.envelope)
        return self.tp.convolve(features, sh, weight, edges.plan) * self.neighbor_norm

    def extra_repr(self) -> str:
        return f"{self.irreps_in} x Y(lmax={self.lmax}) -> {self.irreps_out}"
