"""Self-interaction: channel mixing within each irrep, the paper's 1x1 convolution."""

from __future__ import annotations

import math

import torch
from torch import nn

from tfn.so3.irreps import Irrep, Irreps, IrrepsLike

__all__ = ["SelfInteraction"]


class SelfInteraction(nn.Module):
    """Per-point linear map that mixes channels of the same irrep.

    ``out[w] = sum_u W[u, w] x[u] / sqrt(fan_in) (+ b[w] for even scalars 0e only)``. Weights
    are shared between points; components of one irrep are never mixed, so the map is
    equivariant. A bias on any other irrep (including the pseudoscalar ``0o``) would break
    equivariance, so there is none. Output irreps that no input irrep feeds are zero (plus the
    bias for ``0e``); :attr:`unreachable` lists them.

    Args:
        irreps_in: input irreps.
        irreps_out: output irreps.
        bias: learn a bias on the ``0e`` outputs.

    Parameters: ``weights[str(ir)]`` of shape ``[total mul of ir in irreps_in, total mul of ir
    in irreps_out]`` per irrep type (entries of equal irreps are concatenated in order, the
    same layout as e3nn's ``o3.Linear`` blocks), ``bias [total mul of 0e out]``.

    Example:
        >>> si = SelfInteraction("4x0e + 2x1o", "3x0e + 5x1o")
        >>> si(torch.randn(10, 10)).shape
        torch.Size([10, 18])
    """

    def __init__(self, irreps_in: IrrepsLike, irreps_out: IrrepsLike, bias: bool = True) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        in_slices, out_slices = self.irreps_in.slices(), self.irreps_out.slices()
        types: list[Irrep] = []
        for _, ir in self.irreps_out:
            if ir not in types:
                types.append(ir)
        self.weights = nn.ParameterDict()
        self._plan: list[
            tuple[str, list[tuple[int, int, int]], list[tuple[int, int, int]], int]
        ] = []
        self.unreachable = Irreps([mi for mi in self.irreps_out if mi.ir not in self.irreps_in])
        for ir in types:
            ins = [
                (s.start, mul, ir.dim)
                for (mul, i), s in zip(self.irreps_in, in_slices)
                if i == ir and mul > 0
            ]
            outs = [
                (s.start, mul, ir.dim)
                for (mul, i), s in zip(self.irreps_out, out_slices)
                if i == ir and mul > 0
            ]
            mul_in, mul_out = sum(m for _, m, _ in ins), sum(m for _, m, _ in outs)
            if mul_in == 0 or mul_out == 0:
                continue
            self.weights[str(ir)] = nn.Parameter(torch.randn(mul_in, mul_out))
            self._plan.append((str(ir), ins, outs, ir.dim))
        scalar_out = self.irreps_out.count("0e")
        self.bias = nn.Parameter(torch.zeros(scalar_out)) if bias and scalar_out > 0 else None
        bias_index = [
            i
            for (_, ir), s in zip(self.irreps_out, out_slices)
            if ir == Irrep(0, 1)
            for i in range(s.start, s.stop)
        ]
        self.register_buffer(
            "bias_index", torch.tensor(bias_index, dtype=torch.long), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"SelfInteraction: input has dimension {x.shape[-1]}, but irreps_in {self.irreps_in} "
                f"have dimension {self.irreps_in.dim}"
            )
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        n = x.shape[0]
        pieces: dict[int, torch.Tensor] = {}
        for key, ins, outs, dim in self._plan:
            blocks = [x[:, s : s + m * dim].reshape(n, m, dim) for s, m, _ in ins]
            h = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
            W = self.weights[key]
            y = torch.einsum("nud,uw->nwd", h, W) / math.sqrt(W.shape[0])
            offset = 0
            for s, m, _ in outs:
                pieces[s] = y[:, offset : offset + m].reshape(n, m * dim)
                offset += m
        out_blocks = []
        for (mul, ir), s in zip(self.irreps_out, self.irreps_out.slices()):
            block = pieces.get(s.start)
            out_blocks.append(block if block is not None else x.new_zeros(n, mul * ir.dim))
        out = torch.cat(out_blocks, dim=-1) if out_blocks else x.new_zeros(n, 0)
        if self.bias is not None:
            full = out.new_zeros(self.irreps_out.dim).index_copy(
                0, self.bias_index, self.bias.to(out.dtype)
            )
            out = out + full
        return out.reshape(lead + (self.irreps_out.dim,))

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}"
