"""What every atoms-in model shares: the periodic table, species lookup with clear errors, the
neighbour graph within a cutoff, and the statistics fitted from training structures (least
squares on per-species design matrices, the average number of neighbours).

:class:`~tfn.models.EnergyModel` and :class:`~tfn.models.PropertyModel` are both built on
:class:`AtomsNetwork`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from tfn.data.graph import Graph
from tfn.data.neighbors import radius_graph
from tfn.models.network import TensorFieldNetwork
from tfn.nn.convolution import Convolution
from tfn.so3.irreps import IrrepsLike

__all__ = [
    "ATOMIC_NUMBERS",
    "CHEMICAL_SYMBOLS",
    "AtomsNetwork",
    "least_squares_shifts",
    "symbol",
]

# fmt: off
CHEMICAL_SYMBOLS: tuple[str, ...] = (
    "X", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
    "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge",
    "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd",
    "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd",
    "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn",
    "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)
# fmt: on
ATOMIC_NUMBERS: dict[str, int] = {s: z for z, s in enumerate(CHEMICAL_SYMBOLS) if z > 0}


def symbol(z: int) -> str:
    """The chemical symbol of atomic number ``z`` (``"Z=200"`` outside the table)."""
    return CHEMICAL_SYMBOLS[z] if 0 < z < len(CHEMICAL_SYMBOLS) else f"Z={z}"


def least_squares_shifts(design: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Least-squares coefficients ``w`` of ``design @ w ~ values`` (float64).

    A tiny ridge keeps the problem defined when columns are collinear (one molecule in many
    frames: only the sum over its atoms is determined, and it is split in proportion to the
    columns).

    Example:
        >>> counts = torch.tensor([[4.0, 1.0], [6.0, 2.0], [2.0, 1.0]])  # H, C of CH4, C2H6, ...
        >>> w = least_squares_shifts(counts, counts @ torch.tensor([-0.5, -38.0]))
        >>> [round(v, 3) for v in w.tolist()]
        [-0.5, -38.0]
    """
    x = design.double()
    y = values.double()
    ridge = 1e-8 * float((x * x).sum()) / max(x.shape[0], 1)
    a = x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a, x.T @ y)


class AtomsNetwork(nn.Module):
    """Species in, per-atom irreps out: one-hot species -> :class:`TensorFieldNetwork`.

    Holds the species (validated), the cutoff, the network and the lookup from atomic numbers
    to species indices; subclasses add what they read out of the per-atom outputs.
    """

    def __init__(
        self,
        where: str,
        species: Sequence[str],
        irreps_out: IrrepsLike,
        irreps_hidden: IrrepsLike,
        num_layers: int,
        lmax: int,
        cutoff: float,
        *,
        num_basis: int,
        radial_basis: Literal["gaussian", "bessel"],
        radial_hidden: tuple[int, ...],
        nonlinearity: Literal["gate", "norm"],
        self_connection: bool,
        num_neighbors: float,
        executor: str,
        validate: bool,
    ) -> None:
        super().__init__()
        self._where = where
        species = list(species)
        if not species:
            raise ValueError(f"{where}: species must name at least one element")
        unknown = [s for s in species if s not in ATOMIC_NUMBERS]
        if unknown:
            raise ValueError(f"{where}: unknown chemical symbols {unknown}")
        if len(set(species)) != len(species):
            raise ValueError(f"{where}: species lists an element twice: {species}")
        if not (cutoff is not None and cutoff > 0 and math.isfinite(cutoff)):
            raise ValueError(f"{where}: cutoff must be a positive distance, got {cutoff}")
        self.species = species
        self.cutoff = float(cutoff)
        self.validate = validate
        self.network = TensorFieldNetwork(
            f"{len(species)}x0e",
            irreps_out,
            irreps_hidden,
            num_layers,
            lmax,
            cutoff,
            None,
            num_basis=num_basis,
            radial_basis=radial_basis,
            radial_hidden=radial_hidden,
            nonlinearity=nonlinearity,
            num_neighbors=num_neighbors,
            self_connection=self_connection,
            executor=executor,
            validate=validate,
        )
        index = torch.full((len(CHEMICAL_SYMBOLS),), -1, dtype=torch.long)
        for i, s in enumerate(species):
            index[ATOMIC_NUMBERS[s]] = i
        self.register_buffer("species_index", index, persistent=False)
        #: appended to the message of an element outside the species (what to do about it)
        self.unknown_species_hint = ""

    @property
    def num_neighbors(self) -> float:
        return self.network.output_conv.num_neighbors

    def set_num_neighbors(self, value: float) -> None:
        """The normalisation of every convolution's sum over neighbours."""
        for module in self.network.modules():
            if isinstance(module, Convolution):
                module.set_num_neighbors(value)

    def species_indices(self, numbers: torch.Tensor) -> torch.Tensor:
        """Species index of each atom; elements outside the species raise, naming them."""
        where = self._where
        if numbers.is_floating_point() or numbers.dtype == torch.bool or numbers.dim() != 1:
            raise ValueError(
                f"{where}: numbers must be a 1-d integer tensor of atomic numbers, got "
                f"{numbers.dtype} of shape {tuple(numbers.shape)}"
            )
        z = numbers.long()
        inside = (z > 0) & (z < self.species_index.shape[0])
        idx = self.species_index[z.clamp(0, self.species_index.shape[0] - 1)]
        bad = ~inside | (idx < 0)
        if bool(bad.any()):
            missing = sorted({int(v) for v in z[bad].tolist()})
            names = ", ".join(repr(symbol(v)) for v in missing)
            raise ValueError(
                f"{where}: element {names} is not among the model's species {self.species}"
                + self.unknown_species_hint
            )
        return idx

    def species_counts(self, numbers: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[structures, species]`` atom counts (float64)."""
        counts = torch.zeros(len(numbers), len(self.species), dtype=torch.float64)
        for m, z in enumerate(numbers):
            idx = self.species_indices(torch.as_tensor(z).to(self.species_index.device))
            counts[m] = torch.bincount(idx.cpu(), minlength=len(self.species)).double()
        return counts

    def build_graph(
        self,
        pos: torch.Tensor,
        batch: torch.Tensor | None = None,
        cell: torch.Tensor | None = None,
        pbc: torch.Tensor | None = None,
    ) -> Graph:
        """Neighbours within the cutoff, with periodic images when ``pbc`` is set."""
        periodic = cell is not None and pbc is not None and bool(torch.as_tensor(pbc).any())
        if not periodic:
            return Graph(radius_graph(pos.detach(), self.cutoff, batch))
        from tfn.data.neighbors import neighbor_list

        cell = torch.as_tensor(cell, dtype=pos.dtype, device=pos.device)
        edge_index, shift = neighbor_list(pos.detach(), self.cutoff, batch, cell.detach(), pbc)
        return Graph(edge_index, cell_shift=shift, cell=cell)

    def average_num_neighbors(
        self,
        positions: Sequence[torch.Tensor],
        cells: Sequence[torch.Tensor | None] | None = None,
        pbcs: Sequence[torch.Tensor | None] | None = None,
    ) -> float:
        """Neighbours within the cutoff per atom, averaged over ``positions`` (at least 1)."""
        total, atoms = 0, 0
        for k, pos in enumerate(positions):
            cell = cells[k] if cells is not None else None
            pbc = pbcs[k] if pbcs is not None else None
            graph = self.build_graph(torch.as_tensor(pos, dtype=torch.float64), None, cell, pbc)
            total += graph.num_edges
            atoms += int(pos.shape[0])
        return max(total / max(atoms, 1), 1.0)

    def one_hot(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return torch.nn.functional.one_hot(idx, len(self.species)).to(dtype)

    def extra_repr(self) -> str:
        return f"species={self.species}, cutoff={self.cutoff}"
