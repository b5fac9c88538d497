"""One Tensor Field Network block: convolution, self-interaction, nonlinearity."""

from __future__ import annotations

import torch
from torch import nn

from tfn.nn.convolution import Convolution
from tfn.nn.edges import Edges
from tfn.nn.nonlinearity import Gate, Nonlinearity
from tfn.nn.self_interaction import SelfInteraction
from tfn.so3.irreps import Irreps, IrrepsLike

__all__ = ["TFNLayer"]


class TFNLayer(nn.Module):
    """One block: ``nonlinearity(SI(conv(x)) + SC(x))``.

    The convolution is channel-wise (the paper's): every path keeps its own output entry, and the
    self-interaction ``SI`` mixes them into ``irreps_out``. ``SC`` (``self_connection=True``) is a
    self-interaction of the block's input, added before the nonlinearity (it helps deeper
    networks train). The layer outputs ``irreps_out`` with the scalars first (both
    nonlinearities order them so): read the order from ``layer.irreps_out``. With
    ``nonlinearity="gate"`` the self-interaction also produces one ``0e`` gate per non-scalar
    channel.

    ``forward(x [N, irreps_in.dim], edges: Edges) -> [N, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in: IrrepsLike,
        irreps_out: IrrepsLike,
        lmax: int,
        nonlinearity: str = "gate",
        self_connection: bool = True,
        **conv_kwargs,
    ) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in).simplify()
        irreps_out = Irreps(irreps_out).simplify()
        scalars = Irreps([mi for mi in irreps_out if mi.ir.l == 0])
        gated = Irreps([mi for mi in irreps_out if mi.ir.l > 0])
        if nonlinearity == "gate":
            self.activation: nn.Module = Gate(
                scalars, Irreps([(gated.num_irreps, (0, 1))]) if gated else "", gated
            )
            irreps_si = self.activation.irreps_in
        elif nonlinearity == "norm":
            self.activation = Nonlinearity(scalars + gated)
            irreps_si = scalars + gated
        else:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected 'gate' or 'norm'")
        self.conv = Convolution(
            self.irreps_in,
            None,
            lmax,
            connection="channelwise",
            filter_irreps=irreps_si,
            **conv_kwargs,
        )
        self.self_interaction = SelfInteraction(self.conv.irreps_out, irreps_si)
        self.self_connection = (
            SelfInteraction(self.irreps_in, irreps_si) if self_connection else None
        )
        self.irreps_out = self.activation.irreps_out

    def forward(self, x: torch.Tensor, edges: Edges) -> torch.Tensor:
        h = self.self_interaction(self.conv(x, edges))
        if self.self_connection is not None:
            h = h + self.self_connection(x)
        return self.activation(h)
