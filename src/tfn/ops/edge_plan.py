"""The edges of a graph as the convolution kernels want them, prepared once per graph.

Every convolution of a network runs on the same edges, so whatever a kernel needs besides
``(src, dst)`` (orderings, row pointers) is computed once, when the plan is built, and shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EdgePlan"]


@dataclass(frozen=True)
class EdgePlan:
    """Edges ``src[e] -> dst[e]`` onto ``num_nodes`` nodes.

    Example:
        >>> plan = EdgePlan.build(torch.tensor([0, 1]), torch.tensor([1, 0]), num_nodes=2)
        >>> plan.num_edges, plan.num_nodes
        (2, 2)
    """

    src: torch.Tensor
    dst: torch.Tensor
    num_nodes: int

    @classmethod
    def build(cls, src: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> EdgePlan:
        if src.shape != dst.shape or src.dim() != 1:
            raise ValueError(
                f"EdgePlan: src and dst must be 1-d of equal length, got {tuple(src.shape)} and {tuple(dst.shape)}"
            )
        return cls(src, dst, int(num_nodes))

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])
