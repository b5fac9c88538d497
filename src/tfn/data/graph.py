"""A graph as data: which points exchange messages, and across which periodic images.

A :class:`Graph` is what a model needs besides positions and features: the edges
``edge_index = (src, dst)`` and, for periodic systems, the integer image offset of each edge and
the cells. Models either receive one (built by a data transform, a calculator or the user) or
build one from the positions. Edge vectors are always recomputed from the positions (and cells)
inside the model, so that forces and stress come out of autograd:

``edge_vec = pos[dst] - pos[src] + cell_shift @ cell[batch[dst]]``

(cell rows are the lattice vectors, ASE's convention; with ASE's ``neighbor_list("ijS")`` this
is ``src = i``, ``dst = j``, ``cell_shift = S``). A graph may instead carry Cartesian ``shifts``
added to the vectors as they are (no stress then: they do not follow a strain of the cell).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Graph"]


@dataclass(frozen=True)
class Graph:
    """Edges of one batch of point clouds.

    Args:
        edge_index: ``[2, E]`` integer, row 0 the source, row 1 the destination.
        cell_shift: ``[E, 3]`` integer image offsets (with ``cell``), or ``None``.
        cell: ``[B, 3, 3]`` (or ``[3, 3]`` for one cloud) lattice vectors as rows, or ``None``.
        shifts: ``[E, 3]`` Cartesian offsets added to the edge vectors, or ``None``;
            exclusive with ``cell_shift``.

    Example:
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]])
        >>> cell = torch.eye(3)
        >>> g = Graph(torch.tensor([[1], [0]]), cell_shift=torch.tensor([[1, 0, 0]]), cell=cell)
        >>> g.edge_vectors(pos)  # point 0 minus the image of point 1 at x = 0.9 - 1
        tensor([[0.1000, 0.0000, 0.0000]])
    """

    edge_index: Tensor
    cell_shift: Tensor | None = None
    cell: Tensor | None = None
    shifts: Tensor | None = None

    def __post_init__(self) -> None:
        ei = self.edge_index
        if not isinstance(ei, Tensor) or ei.dim() != 2 or ei.shape[0] != 2:
            shape = tuple(ei.shape) if isinstance(ei, Tensor) else type(ei).__name__
            raise ValueError(f"Graph: edge_index must be a [2, E] tensor, got {shape}")
        if ei.is_floating_point() or ei.dtype == torch.bool:
            raise ValueError(f"Graph: edge_index must be an integer tensor, got {ei.dtype}")
        if ei.dtype != torch.long:
            object.__setattr__(self, "edge_index", ei.long())
        num_edges = ei.shape[1]
        if self.shifts is not None and self.cell_shift is not None:
            raise ValueError("Graph: give either cell_shift (with cell) or Cartesian shifts")
        if (self.cell_shift is None) != (self.cell is None) and self.cell_shift is not None:
            raise ValueError("Graph: cell_shift needs the cell it counts in")
        for name in ("cell_shift", "shifts"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (num_edges, 3):
                raise ValueError(
                    f"Graph: {name} must have shape [{num_edges}, 3] (one row per edge), "
                    f"got {tuple(value.shape)}"
                )
        if self.cell is not None and (
            self.cell.shape[-2:] != (3, 3) or self.cell.dim() not in (2, 3)
        ):
            raise ValueError(
                f"Graph: cell must have shape [3, 3] or [B, 3, 3], got {tuple(self.cell.shape)}"
            )

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def src(self) -> Tensor:
        return self.edge_index[0]

    @property
    def dst(self) -> Tensor:
        return self.edge_index[1]

    @property
    def periodic(self) -> bool:
        """True when some edge crosses a cell boundary (or could: cells are given)."""
        return self.cell is not None or self.shifts is not None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to ``device``; floating tensors (cell, shifts) also to ``dtype``."""

        def move(t: Tensor | None, floating: bool) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if floating else None)

        return Graph(
            move(self.edge_index, False),
            move(self.cell_shift, False),
            move(self.cell, True),
            move(self.shifts, True),
        )

    def edge_vectors(
        self, pos: Tensor, batch: Tensor | None = None, cell: Tensor | None = None
    ) -> Tensor:
        """``edge_vec [E, 3]`` from positions (differentiable in ``pos`` and the cell).

        ``cell`` overrides the graph's cell (a strained copy, for the stress); ``batch`` is the
        cloud of each point, needed with several cells.
        """
        src, dst = self.edge_index[0], self.edge_index[1]
        vec = pos.index_select(0, dst) - pos.index_select(0, src)
        if self.shifts is not None:
            return vec + self.shifts.to(vec.dtype)
        if self.cell_shift is None:
            return vec
        cell = self.cell if cell is None else cell
        shift = self.cell_shift.to(vec.dtype)
        if cell.dim() == 2:
            return vec + shift @ cell.to(vec.dtype)
        if batch is None:
            if cell.shape[0] != 1:
                raise ValueError(f"Graph: {cell.shape[0]} cells need the batch index of the points")
            return vec + shift @ cell[0].to(vec.dtype)
        per_edge = cell.to(vec.dtype).index_select(0, batch.index_select(0, dst))
        return vec + torch.bmm(shift.unsqueeze(1), per_edge).squeeze(1)
