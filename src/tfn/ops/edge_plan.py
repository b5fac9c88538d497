"""The edges of a graph as the convolution kernels want them, prepared once per graph.

Every convolution of a network runs on the same edges, so whatever a kernel needs besides
``(src, dst)`` is computed once, when the plan is built, and shared: the edges grouped by
destination (CSR row pointers ``dst_ptr`` and the permutation ``dst_perm``; the forward sums
each destination's row in a fixed order, without atomics) and grouped by source (``src_ptr``,
``src_perm``; the backward sums the gradient of each source node the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EdgePlan"]


@dataclass(frozen=True, eq=False)
class EdgePlan:
    """Edges ``src[e] -> dst[e]`` onto ``num_nodes`` nodes, with their CSR orderings.

    Build it with :meth:`build`. ``dst_perm[dst_ptr[a]:dst_ptr[a + 1]]`` are the edges into
    node ``a``, in input order (a stable sort); ``src_perm[src_ptr[b]:src_ptr[b + 1]]`` the
    edges out of ``b``. ``num_sources`` is the number of source nodes (``num_nodes`` unless the
    graph is bipartite, e.g. messages already gathered per edge).

    Example:
        >>> plan = EdgePlan.build(torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1]), num_nodes=2)
        >>> plan.num_edges, plan.num_nodes
        (3, 2)
        >>> plan.dst_ptr.tolist(), plan.dst_perm.tolist()
        ([0, 1, 3], [1, 0, 2])
    """

    src: torch.Tensor
    dst: torch.Tensor
    num_nodes: int
    dst_ptr: torch.Tensor
    dst_perm: torch.Tensor
    src_ptr: torch.Tensor
    src_perm: torch.Tensor
    num_sources: int

    @classmethod
    def build(
        cls,
        src: torch.Tensor,
        dst: torch.Tensor,
        num_nodes: int,
        *,
        num_sources: int | None = None,
    ) -> EdgePlan:
        """The plan of edges ``src -> dst`` (1-d integer tensors of equal length) onto
        ``num_nodes`` destination nodes (and ``num_sources`` sources, default ``num_nodes``).

        Costs two stable sorts of the edges; build it once per graph and share it."""
        if not (isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor)):
            raise TypeError("EdgePlan: src and dst must be tensors")
        if src.shape != dst.shape or src.dim() != 1:
            raise ValueError(
                f"EdgePlan: src and dst must be 1-d of equal length, got {tuple(src.shape)} and {tuple(dst.shape)}"
            )
        if src.dtype.is_floating_point or src.dtype == torch.bool or src.dtype.is_complex:
            raise TypeError(f"EdgePlan: src must hold integers, got {src.dtype}")
        if dst.dtype.is_floating_point or dst.dtype == torch.bool or dst.dtype.is_complex:
            raise TypeError(f"EdgePlan: dst must hold integers, got {dst.dtype}")
        if src.device != dst.device:
            raise ValueError(f"EdgePlan: src on {src.device} but dst on {dst.device}")
        num_nodes = int(num_nodes)
        num_sources = num_nodes if num_sources is None else int(num_sources)
        if num_nodes < 0 or num_sources < 0:
            raise ValueError("EdgePlan: the numbers of nodes must not be negative")
        src, dst = src.long().contiguous(), dst.long().contiguous()
        if src.numel() and not torch.compiler.is_compiling():  # data-dependent: eager only
            _check_range("src", src, num_sources)
            _check_range("dst", dst, num_nodes)
        dst_ptr, dst_perm = _csr(dst, num_nodes)
        src_ptr, src_perm = _csr(src, num_sources)
        return cls(src, dst, num_nodes, dst_ptr, dst_perm, src_ptr, src_perm, num_sources)

    @classmethod
    def per_edge(cls, num_edges: int, device: torch.device | str | None = None) -> EdgePlan:
        """``num_edges`` edges ``e -> e``: every row its own source and destination (a plain
        per-row product through the convolution kernels), built without sorting.

        Example:
            >>> EdgePlan.per_edge(3).dst_ptr.tolist()
            [0, 1, 2, 3]
        """
        index = torch.arange(int(num_edges), device=device)
        ptr = torch.arange(int(num_edges) + 1, device=device)
        return cls(index, index, int(num_edges), ptr, index, ptr, index, int(num_edges))

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])

    def __repr__(self) -> str:
        return f"EdgePlan(num_edges={self.num_edges}, num_nodes={self.num_nodes}, num_sources={self.num_sources}, device={self.src.device})"


def _check_range(name: str, index: torch.Tensor, size: int) -> None:
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= size:
        raise ValueError(
            f"EdgePlan: {name} holds node indices in [{low}, {high}], outside [0, {size})"
        )


def _csr(key: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row pointers ``[rows + 1]`` and the stable permutation grouping edges by ``key``."""
    sorted_key, perm = torch.sort(key, stable=True)
    ptr = torch.searchsorted(sorted_key, torch.arange(rows + 1, device=key.device))
    return ptr, perm
