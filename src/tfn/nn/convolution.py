"""The Tensor Field Network point convolution.

For every edge ``b -> a`` with relative position ``r_ab = r_a - r_b`` the filter
``F(r_ab) = R(|r_ab|) Y_l(r_ab / |r_ab|)`` (``l = 0 .. lmax``) is coupled with the features of
``b`` through Clebsch-Gordan coefficients, and the results are summed over the neighbours of
``a``. The radial function ``R`` has its own value for every path and channel (the paper's
channel-wise convolution) or a full channel-mixing matrix per path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tfn.nn.radial import RadialMLP
from tfn.ops.paths import channelwise_paths, fully_connected_paths
from tfn.ops.tensor_product import TensorProduct
from tfn.so3.harmonics import spherical_harmonics
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
        mode: ``"channelwise"`` (paper) or ``"fully_connected"``.
        filter_irreps: with ``irreps_out=None``, keep only outputs of these irreps.
        max_radius: range of the radial basis.
        num_basis, radial_basis, radial_hidden: the radial network.
        cutoff: apply the smooth envelope that reaches zero at this distance.
        num_neighbors: messages are summed and divided by ``sqrt(num_neighbors)`` (a fixed
            constant, so a cloud's output never depends on other clouds). 1 is a plain sum.

    ``forward(features [N, irreps_in.dim], edge_index [2, E], edge_vec [E, 3]) -> [N, dim_out]``
    with ``edge_index = (source b, destination a)`` and ``edge_vec = pos[a] - pos[b]``.

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
        mode: str = "channelwise",
        filter_irreps: IrrepsLike | None = None,
        max_radius: float = 5.0,
        num_basis: int = 8,
        radial_basis: str = "gaussian",
        radial_hidden: tuple[int, ...] = (32,),
        cutoff: float | None = None,
        num_neighbors: float = 1.0,
    ) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_sh = Irreps.spherical_harmonics(lmax)
        self.lmax = lmax
        if mode == "channelwise":
            description = channelwise_paths(
                self.irreps_in, self.irreps_sh, irreps_out, filter_irreps=filter_irreps
            )
        elif mode == "fully_connected":
            if irreps_out is None:
                raise ValueError("Convolution: mode='fully_connected' needs irreps_out")
            description = fully_connected_paths(self.irreps_in, self.irreps_sh, irreps_out)
        else:
            raise ValueError(
                f"Convolution: unknown mode {mode!r}; expected 'channelwise' or 'fully_connected'"
            )
        if not description.paths:
            raise ValueError(
                f"Convolution: no path couples {self.irreps_in} with filters {self.irreps_sh} "
                f"to {irreps_out if irreps_out is not None else filter_irreps}"
            )
        self.description = description
        self.irreps_out = description.irreps_out
        self.tp = TensorProduct(description)
        self.radial = RadialMLP(
            description.weight_numel,
            max_radius=max_radius,
            num_basis=num_basis,
            basis=radial_basis,
            hidden=radial_hidden,
            cutoff=cutoff,
        )
        self.num_neighbors = float(num_neighbors)

    def radial_functions(self, r: torch.Tensor) -> torch.Tensor:
        """The learned radial functions ``[len(r), weight_numel]`` (with the path coefficients).

        Column ``path.weight_slice`` of ``self.description.paths`` belongs to that path.
        """
        out = self.radial(r)
        scale = torch.ones(out.shape[-1], dtype=out.dtype, device=out.device)
        for p in self.description.paths:
            scale[p.weight_slice] = p.coefficient
        return out * scale / math.sqrt(self.num_neighbors)

    def forward(
        self,
        features: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vec: torch.Tensor,
        edge_length: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if features.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"Convolution: features have dimension {features.shape[-1]}, but irreps_in "
                f"{self.irreps_in} have dimension {self.irreps_in.dim}"
            )
        if edge_length is None:
            edge_length = torch.linalg.vector_norm(edge_vec, dim=-1)
        src, dst = edge_index[0], edge_index[1]
        sh = spherical_harmonics(self.irreps_sh, edge_vec, normalize=True)
        weight = self.radial(edge_length)
        # The kernel sums each output block onto the destinations itself.
        out = self.tp(
            features.index_select(0, src), sh, weight, dst=dst, num_nodes=features.shape[0]
        )
        if self.num_neighbors != 1.0:
            out = out / math.sqrt(self.num_neighbors)
        return out

    def extra_repr(self) -> str:
        return f"{self.irreps_in} x Y(lmax={self.lmax}) -> {self.irreps_out}"
