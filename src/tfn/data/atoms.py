"""Atomic structures as tensors, and batches of them with their neighbour graph.

:class:`AtomsData` is one structure (atomic numbers, positions, optional cell and periodic
flags, named targets); :func:`collate_atoms` stacks structures into an :class:`AtomsBatch` and
builds the graph within a cutoff, with periodic images where the structures are periodic (the
neighbour list is a data transform, as in NequIP: models receive the graph). No ASE needed
here; :func:`atoms_data_from_ase` converts ASE ``Atoms`` duck-typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tfn.data.graph import Graph

__all__ = ["AtomsData", "AtomsBatch", "collate_atoms", "atoms_data_from_ase"]


@dataclass
class AtomsData:
    """One structure.

    ``numbers [n]`` (long), ``pos [n, 3]``, ``cell [3, 3]`` and ``pbc [3]`` (``None``: a
    molecule), ``targets``: per structure (``energy []``, ``stress [3, 3]``...) or per atom
    (first dimension ``n``, named in ``atom_targets``).
    """

    numbers: Tensor
    pos: Tensor
    cell: Tensor | None = None
    pbc: Tensor | None = None
    targets: dict[str, Tensor] = field(default_factory=dict)
    atom_targets: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def periodic(self) -> bool:
        return self.pbc is not None and bool(self.pbc.any())


@dataclass
class AtomsBatch:
    """Structures in one flat layout: ``numbers [N]``, ``pos [N, 3]``, ``batch [N]``,
    ``cell [B, 3, 3]`` (zeros for molecules), ``pbc [B, 3]``, the ``graph`` (edges within the
    cutoff, with image shifts), ``targets`` (per structure stacked ``[B, ...]``, per atom
    concatenated ``[N, ...]``) and ``info`` (one dict per structure)."""

    numbers: Tensor
    pos: Tensor
    batch: Tensor
    cell: Tensor
    pbc: Tensor
    graph: Graph
    num_graphs: int
    targets: dict[str, Tensor] = field(default_factory=dict)
    atom_targets: tuple[str, ...] = ()
    info: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def atoms_per_graph(self) -> Tensor:
        return torch.bincount(self.batch, minlength=self.num_graphs)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to ``device``; floating tensors also to ``dtype``."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return AtomsBatch(
            numbers=move(self.numbers),
            pos=move(self.pos),
            batch=move(self.batch),
            cell=move(self.cell),
            pbc=move(self.pbc),
            graph=self.graph.to(device, dtype),
            num_graphs=self.num_graphs,
            targets={k: move(v) for k, v in self.targets.items()},
            atom_targets=self.atom_targets,
            info=self.info,
        )


def collate_atoms(items: Sequence[AtomsData], cutoff: float) -> AtomsBatch:
    """Batch structures and build their graph: all pairs closer than ``cutoff``, with every
    periodic image within the cutoff for periodic structures.

    Example:
        >>> water = AtomsData(torch.tensor([8, 1, 1]), torch.tensor(
        ...     [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]))
        >>> b = collate_atoms([water, water], cutoff=1.2)
        >>> b.num_graphs, b.graph.num_edges
        (2, 8)
    """
    from tfn.data.neighbors import neighbor_list, radius_graph

    if len(items) == 0:
        raise ValueError("collate_atoms: empty batch (no structures given)")
    keys = set(items[0].targets)
    for i, item in enumerate(items):
        if item.num_atoms == 0:
            raise ValueError(f"collate_atoms: structure {i} has no atoms")
        if set(item.targets) != keys:
            raise ValueError(
                f"collate_atoms: structure {i} has targets {sorted(item.targets)}, expected {sorted(keys)}"
            )
    dtype = items[0].pos.dtype
    numbers = torch.cat([item.numbers for item in items])
    pos = torch.cat([item.pos for item in items])
    batch = torch.cat(
        [torch.full((item.num_atoms,), i, dtype=torch.long) for i, item in enumerate(items)]
    )
    cell = torch.stack(
        [
            item.cell.to(dtype) if item.cell is not None else torch.zeros(3, 3, dtype=dtype)
            for item in items
        ]
    )
    pbc = torch.stack(
        [
            item.pbc.bool() if item.pbc is not None else torch.zeros(3, dtype=torch.bool)
            for item in items
        ]
    )
    if bool(pbc.any()):
        edge_index, shift = neighbor_list(pos, cutoff, batch, cell, pbc)
        graph = Graph(edge_index, cell_shift=shift, cell=cell)
    else:
        graph = Graph(radius_graph(pos, cutoff, batch))
    atom_targets = items[0].atom_targets
    targets: dict[str, Tensor] = {}
    for k in keys:
        values = [item.targets[k] for item in items]
        targets[k] = torch.cat(values) if k in atom_targets else torch.stack(values)
    return AtomsBatch(
        numbers, pos, batch, cell, pbc, graph, len(items), targets, atom_targets,
        [item.info for item in items],
    )  # fmt: skip


def atoms_data_from_ase(
    atoms: Any,
    dtype: torch.dtype = torch.float32,
    info_targets: Sequence[str] = (),
    array_targets: Sequence[str] = (),
    keep_info: Sequence[str] = (),
) -> AtomsData:
    """An ASE ``Atoms`` as :class:`AtomsData`; ``info_targets`` are read from ``atoms.info``
    (per structure), ``array_targets`` from ``atoms.arrays`` (per atom). A missing target
    raises, naming it."""
    numbers = torch.as_tensor(np.asarray(atoms.numbers), dtype=torch.long)
    pos = torch.as_tensor(np.asarray(atoms.positions), dtype=dtype)
    pbc_np = np.asarray(atoms.pbc, dtype=bool)
    periodic = bool(pbc_np.any())
    cell = torch.as_tensor(np.asarray(atoms.cell.array), dtype=dtype) if periodic else None
    pbc = torch.as_tensor(pbc_np) if periodic else None
    targets: dict[str, Tensor] = {}
    for key in info_targets:
        if key not in atoms.info:
            raise KeyError(f"structure has no {key!r} in its info (has {sorted(atoms.info)})")
        targets[key] = torch.as_tensor(np.asarray(atoms.info[key], dtype=np.float64), dtype=dtype)
    for key in array_targets:
        if key not in atoms.arrays:
            raise KeyError(f"structure has no per-atom {key!r} (has {sorted(atoms.arrays)})")
        targets[key] = torch.as_tensor(np.asarray(atoms.arrays[key], dtype=np.float64), dtype=dtype)
    info = {k: atoms.info[k] for k in keep_info if k in atoms.info}
    return AtomsData(numbers, pos, cell, pbc, targets, tuple(array_targets), info)
