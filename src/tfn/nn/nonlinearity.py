"""Equivariant nonlinearities and concatenation.

* :class:`Nonlinearity` is the paper's norm nonlinearity: even scalars ``0e`` go through
  ``f(x)``; every other irrep (vectors, tensors and pseudoscalars) is scaled by a function of
  its norm, ``x * g(|x| + b)`` with a learned bias ``b`` per channel. Norms are invariant under
  O(3), so the output transforms like the input.
* :class:`Gate` is the gated variant (as in e3nn and NequIP): extra ``0e`` channels, passed
  through a sigmoid, scale the non-scalar channels one to one.
* :class:`Concatenation` joins features along the channel axis; the irreps add up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tfn.so3.irreps import Irrep, Irreps, IrrepsLike

__all__ = ["Nonlinearity", "Gate", "Concatenation", "activation"]

_EVEN_SCALAR = Irrep(0, 1)
_ODD_SCALAR = Irrep(0, -1)


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A pointwise activation by name: ``silu``, ``ssp`` (shifted softplus), ``relu``,
    ``tanh``, ``sigmoid``, ``softplus``, ``identity``."""
    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "silu": torch.nn.functional.silu,
        "ssp": lambda x: torch.nn.functional.softplus(x) - 0.6931471805599453,
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "softplus": torch.nn.functional.softplus,
        "identity": lambda x: x,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]


def _smooth_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    # sqrt(|x|^2 + eps^2): the plain norm has no derivative at 0, which double backward needs.
    return torch.sqrt((x * x).sum(-1) + eps * eps)


class Nonlinearity(nn.Module):
    """The norm nonlinearity: ``0e``: ``f(x)``; any other irrep: ``x * g(|x| + b)``.

    Args:
        irreps: irreps of the input (and output).
        scalar_activation: ``f`` for ``0e`` channels (default SiLU).
        norm_activation: ``g`` applied to the biased norm (default sigmoid).
        bias: learn the per-channel bias ``b`` of the norm.
        eps: smoothing of the norm at zero.

    Example:
        >>> nl = Nonlinearity("4x0e + 2x1o + 1x0o")
        >>> nl(torch.randn(3, 11)).shape
        torch.Size([3, 11])
    """

    def __init__(
        self,
        irreps: IrrepsLike,
        scalar_activation: str = "silu",
        norm_activation: str = "sigmoid",
        bias: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.irreps_in = self.irreps_out = Irreps(irreps)
        self.scalar_activation = activation(scalar_activation)
        self.norm_activation = activation(norm_activation)
        self.eps = eps
        num_norms = sum(mul for mul, ir in self.irreps_in if ir != _EVEN_SCALAR)
        self.bias = nn.Parameter(torch.zeros(num_norms)) if bias and num_norms else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"Nonlinearity: input has dimension {x.shape[-1]}, irreps {self.irreps_in} need {self.irreps_in.dim}"
            )
        blocks, b = [], 0
        for (mul, ir), s in zip(self.irreps_in, self.irreps_in.slices()):
            block = x[..., s]
            if ir == _EVEN_SCALAR:
                blocks.append(self.scalar_activation(block))
                continue
            block = block.reshape(block.shape[:-1] + (mul, ir.dim))
            norm = _smooth_norm(block, self.eps)
            if self.bias is not None:
                norm = norm + self.bias[b : b + mul].to(x.dtype)
            b += mul
            scaled = block * self.norm_activation(norm)[..., None]
            blocks.append(scaled.reshape(scaled.shape[:-2] + (mul * ir.dim,)))
        return torch.cat(blocks, dim=-1) if blocks else x

    def extra_repr(self) -> str:
        return str(self.irreps_in)


class Gate(nn.Module):
    """Gated nonlinearity: ``[scalars, gates, gated] -> [f(scalars), gated * sigmoid(gates)]``.

    ``irreps_scalars`` may hold ``0e`` (activation ``f``) and ``0o`` (``tanh``, odd, so parity is
    kept); ``irreps_gates`` are ``0e`` with one channel per channel of ``irreps_gated``.

    Example:
        >>> gate = Gate("4x0e", "3x0e", "2x1o + 1x2e")
        >>> gate.irreps_in, gate.irreps_out
        (Irreps('4x0e+3x0e+2x1o+1x2e'), Irreps('4x0e+2x1o+1x2e'))
        >>> gate(torch.randn(5, 18)).shape
        torch.Size([5, 15])
    """

    def __init__(
        self,
        irreps_scalars: IrrepsLike,
        irreps_gates: IrrepsLike,
        irreps_gated: IrrepsLike,
        scalar_activation: str = "silu",
        gate_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.irreps_scalars = Irreps(irreps_scalars)
        self.irreps_gates = Irreps(irreps_gates)
        self.irreps_gated = Irreps(irreps_gated)
        for _, ir in self.irreps_scalars:
            if ir.l != 0:
                raise ValueError(f"Gate: irreps_scalars must be scalars, got {self.irreps_scalars}")
        if any(ir != _EVEN_SCALAR for _, ir in self.irreps_gates):
            raise ValueError(f"Gate: gates must be even scalars 0e, got {self.irreps_gates}")
        if self.irreps_gates.num_irreps != self.irreps_gated.num_irreps:
            raise ValueError(
                f"Gate: {self.irreps_gates.num_irreps} gates for {self.irreps_gated.num_irreps} gated channels ({self.irreps_gated})"
            )
        self.irreps_in = self.irreps_scalars + self.irreps_gates + self.irreps_gated
        self.irreps_out = self.irreps_scalars + self.irreps_gated
        self.scalar_activation = activation(scalar_activation)
        self.gate_activation = activation(gate_activation)
        # Index that repeats each gate over the components of its gated channel.
        repeat = [i for i, l in enumerate(self.irreps_gated.ls) for _ in range(2 * l + 1)]
        self.register_buffer("gate_index", torch.tensor(repeat, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"Gate: input has dimension {x.shape[-1]}, irreps {self.irreps_in} need {self.irreps_in.dim}"
            )
        ns, ng = self.irreps_scalars.dim, self.irreps_gates.dim
        scalars, gates, gated = x[..., :ns], x[..., ns : ns + ng], x[..., ns + ng :]
        blocks = []
        for (_, ir), s in zip(self.irreps_scalars, self.irreps_scalars.slices()):
            act = self.scalar_activation if ir == _EVEN_SCALAR else torch.tanh
            blocks.append(act(scalars[..., s]))
        if ng:
            blocks.append(gated * self.gate_activation(gates).index_select(-1, self.gate_index))
        return torch.cat(blocks, dim=-1) if blocks else x[..., :0]


class Concatenation(nn.Module):
    """Concatenate features along the channel axis: ``irreps_out = sum(irreps_in)``.

    Example:
        >>> cat = Concatenation(["2x0e", "1x1o"])
        >>> cat(torch.ones(4, 2), torch.ones(4, 3)).shape, cat.irreps_out
        (torch.Size([4, 5]), Irreps('2x0e+1x1o'))
    """

    def __init__(self, irreps_in: list[IrrepsLike]) -> None:
        super().__init__()
        self.irreps_in = [Irreps(i) for i in irreps_in]
        out = Irreps("")
        for i in self.irreps_in:
            out = out + i
        self.irreps_out = out

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) != len(self.irreps_in):
            raise ValueError(f"Concatenation: expected {len(self.irreps_in)} inputs, got {len(xs)}")
        for i, (x, irreps) in enumerate(zip(xs, self.irreps_in)):
            if x.shape[-1] != irreps.dim:
                raise ValueError(
                    f"Concatenation: input {i} has dimension {x.shape[-1]}, irreps {irreps} need {irreps.dim}"
                )
        return torch.cat(xs, dim=-1)
