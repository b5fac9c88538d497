"""Atoms in; energies, forces and stress out: a Tensor Field Network as an interatomic potential.

Each atom starts from a one-hot vector of its species (``K x 0e``); a
:class:`~tfn.models.TensorFieldNetwork` maps them to one invariant ``y_i`` per atom, and the
per-atom energy is ``E_i = scale[s_i] * y_i + shift[s_i]`` with per-species shifts and scales
fitted from the training data (:meth:`EnergyModel.fit_statistics`, as NequIP and MACE do: shifts
by least squares on the compositions, the scale from the force RMS). The total energy is the sum.

Forces are ``-dE/dr`` and, for periodic cells, the stress is ``(1/V) dE/d(epsilon)`` for a
symmetric strain ``epsilon`` applied to the positions and the cell (ASE's sign convention:
negative under compression), all from one backward pass. Units are those of the data: eV, eV/A,
eV/A^3 for the usual atomistic data.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Literal

import torch

from tfn.data.graph import Graph
from tfn.data.validation import check_points
from tfn.models._atoms import (
    ATOMIC_NUMBERS,
    CHEMICAL_SYMBOLS,
    AtomsNetwork,
    least_squares_shifts,
)
from tfn.so3.irreps import IrrepsLike

__all__ = ["EnergyModel", "ATOMIC_NUMBERS", "CHEMICAL_SYMBOLS"]


class EnergyModel(AtomsNetwork):
    """Energies, forces and stress of atomic structures.

    Args:
        species: the chemical symbols the model knows, e.g. ``["H", "C", "O"]``.
        irreps_hidden, num_layers, lmax, cutoff: the network (see
            :class:`~tfn.models.TensorFieldNetwork`); ``cutoff`` (A) is required.
        num_basis, radial_basis, radial_hidden, nonlinearity, self_connection, executor:
            as for :class:`~tfn.models.TensorFieldNetwork`.
        num_neighbors: sums over neighbours are divided by ``sqrt(num_neighbors)``; fitted by
            :meth:`fit_statistics` (the average number of neighbours within the cutoff).
        atomic_energies: per-species energy shifts ``{"H": -13.6, ...}`` (default 0); fitted
            by :meth:`fit_statistics`.
        energy_scale: one scale for all species, or per species (default 1).
        validate: check inputs on every call.

    ``forward(numbers, pos, batch=None, cell=None, pbc=None, graph=None, *, forces=True,
    stress=False, energies=False)`` takes atomic numbers ``[N]``, positions ``[N, 3]``, the
    structure of each atom ``[N]`` (``None``: one structure), cells ``[B, 3, 3]`` and periodic
    flags ``[B, 3]``, or a precomputed :class:`~tfn.data.Graph`, and returns a dict with
    ``energy [B]``, ``forces [N, 3]``, ``stress [B, 3, 3]`` (needs a cell) and ``energies [N]``
    (per-atom) as requested.

    Example:
        >>> model = EnergyModel(["H", "O"], irreps_hidden="8x0e + 4x1o", num_layers=1, cutoff=3.0)
        >>> numbers = torch.tensor([8, 1, 1])
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
        >>> out = model(numbers, pos)
        >>> out["energy"].shape, out["forces"].shape
        (torch.Size([1]), torch.Size([3, 3]))
    """

    def __init__(
        self,
        species: Sequence[str],
        irreps_hidden: IrrepsLike = "32x0e + 16x1o + 8x2e",
        num_layers: int = 3,
        lmax: int = 2,
        cutoff: float = 5.0,
        *,
        num_basis: int = 8,
        radial_basis: Literal["gaussian", "bessel"] = "bessel",
        radial_hidden: tuple[int, ...] = (64,),
        nonlinearity: Literal["gate", "norm"] = "gate",
        self_connection: bool = True,
        num_neighbors: float = 1.0,
        atomic_energies: Mapping[str, float] | None = None,
        energy_scale: float | Mapping[str, float] = 1.0,
        executor: str = "auto",
        validate: bool = True,
    ) -> None:
        super().__init__(
            "EnergyModel",
            species,
            "1x0e",
            irreps_hidden,
            num_layers,
            lmax,
            cutoff,
            num_basis=num_basis,
            radial_basis=radial_basis,
            radial_hidden=radial_hidden,
            nonlinearity=nonlinearity,
            self_connection=self_connection,
            num_neighbors=num_neighbors,
            executor=executor,
            validate=validate,
        )
        self.register_buffer("species_shift", torch.zeros(len(species)))
        self.register_buffer("species_scale", torch.ones(len(species)))
        self.set_statistics(dict(atomic_energies or {}), energy_scale)

    # ----------------------------------------------------------------------------- statistics
    def _per_species(self, values: float | Mapping[str, float] | None, default: float, what: str):
        if values is None:
            return torch.full((len(self.species),), default, dtype=torch.float64)
        if isinstance(values, Mapping):
            extra = sorted(set(values) - set(self.species))
            if extra:
                raise ValueError(f"EnergyModel: {what} for elements not in species: {extra}")
            return torch.tensor([float(values.get(s, default)) for s in self.species])
        return torch.full((len(self.species),), float(values), dtype=torch.float64)

    def set_statistics(
        self,
        atomic_energies: float | Mapping[str, float] | None = None,
        energy_scale: float | Mapping[str, float] | None = None,
        num_neighbors: float | None = None,
    ) -> None:
        """Set the per-species shifts, scales and the neighbour normalisation (``None``: keep)."""
        if atomic_energies is not None:
            shift = self._per_species(atomic_energies, 0.0, "atomic_energies")
            self.species_shift.copy_(shift.to(self.species_shift.dtype))
        if energy_scale is not None:
            scale = self._per_species(energy_scale, 1.0, "energy_scale")
            if not bool((scale > 0).all()):
                raise ValueError(f"EnergyModel: energy_scale must be > 0, got {scale.tolist()}")
            self.species_scale.copy_(scale.to(self.species_scale.dtype))
        if num_neighbors is not None:
            self.set_num_neighbors(num_neighbors)

    @property
    def atomic_energies(self) -> dict[str, float]:
        return {s: float(v) for s, v in zip(self.species, self.species_shift)}

    def fit_statistics(
        self,
        numbers: Sequence[torch.Tensor],
        energies: torch.Tensor | Sequence[float] | None = None,
        forces: Sequence[torch.Tensor] | None = None,
        positions: Sequence[torch.Tensor] | None = None,
        cells: Sequence[torch.Tensor | None] | None = None,
        pbcs: Sequence[torch.Tensor | None] | None = None,
        scale: Literal["force_rms", "energy_rms", "none"] = "force_rms",
    ) -> dict[str, object]:
        """Fit shifts, scale and ``num_neighbors`` from training structures.

        * shifts: least squares of the total energies on the compositions (a tiny ridge keeps
          it defined when compositions are collinear, e.g. one molecule in many frames: then
          only the sum over the molecule's atoms is determined, and it is split in proportion
          to the number of atoms);
        * scale (one value for all species): the RMS of the force components
          (``"force_rms"``, needs ``forces``), else the RMS per-atom residual energy;
        * ``num_neighbors``: the average number of neighbours within the cutoff (needs
          ``positions``; periodic structures need ``cells`` and ``pbcs``).

        Returns the fitted values.
        """
        result: dict[str, object] = {}
        counts = self.species_counts(numbers)
        residual_rms = None
        if energies is not None:
            e = torch.as_tensor(energies, dtype=torch.float64).reshape(-1)
            if e.shape[0] != len(numbers):
                raise ValueError(
                    f"fit_statistics: {e.shape[0]} energies for {len(numbers)} structures"
                )
            absent = [s for s, c in zip(self.species, counts.sum(0)) if c == 0]
            if absent:
                warnings.warn(
                    f"fit_statistics: no training atom of {absent}: their shifts stay 0",
                    stacklevel=2,
                )
            shift = least_squares_shifts(counts, e)
            residual = e - counts @ shift
            residual_rms = float((residual.pow(2) / counts.sum(1).clamp_min(1)).mean().sqrt())
            self.set_statistics(atomic_energies=dict(zip(self.species, shift.tolist())))
            result["atomic_energies"] = self.atomic_energies
        if scale == "force_rms":
            if forces is None:
                raise ValueError("fit_statistics: scale='force_rms' needs forces")
            f = torch.cat([torch.as_tensor(x, dtype=torch.float64).reshape(-1) for x in forces])
            value = float(f.pow(2).mean().sqrt())
        elif scale == "energy_rms":
            if residual_rms is None:
                raise ValueError("fit_statistics: scale='energy_rms' needs energies")
            value = residual_rms
        else:
            value = None
        if value is not None:
            if not value > 0:
                raise ValueError(f"fit_statistics: the fitted scale is {value}; check the data")
            self.set_statistics(energy_scale=value)
            result["energy_scale"] = value
        if positions is not None:
            value = self.average_num_neighbors(positions, cells, pbcs)
            self.set_statistics(num_neighbors=value)
            result["num_neighbors"] = value
        return result

    # --------------------------------------------------------------------------------- forward
    def forward(
        self,
        numbers: torch.Tensor,
        pos: torch.Tensor,
        batch: torch.Tensor | None = None,
        cell: torch.Tensor | None = None,
        pbc: torch.Tensor | None = None,
        graph: Graph | None = None,
        *,
        forces: bool = True,
        stress: bool = False,
        energies: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """See the class docstring. ``create_graph`` (default: ``self.training``) keeps the
        derivatives differentiable, for losses on forces or stress."""
        where = "EnergyModel"
        if self.validate:
            check_points(pos, batch, where)
        if not isinstance(numbers, torch.Tensor) or numbers.shape != pos.shape[:1]:
            raise ValueError(
                f"{where}: numbers must have shape [{pos.shape[0]}] (one atomic number per atom)"
            )
        idx = self.species_indices(numbers)
        dtype = self.species_shift.dtype
        if pos.dtype != dtype:
            pos = pos.to(dtype)
        n = pos.shape[0]
        num_structures = 1 if batch is None else int(batch.max()) + 1
        if cell is not None:
            cell = torch.as_tensor(cell, device=pos.device).to(dtype)
            cell = cell.reshape(-1, 3, 3)
            if cell.shape[0] != num_structures:
                raise ValueError(f"{where}: {cell.shape[0]} cells for {num_structures} structures")
        if pbc is not None:
            pbc = torch.as_tensor(pbc, dtype=torch.bool, device=pos.device).reshape(-1, 3)
        if stress and cell is None and (graph is None or graph.cell is None):
            raise ValueError(f"{where}: the stress needs a cell (and periodic boundaries)")
        if graph is None:
            graph = self.build_graph(pos, batch, cell, pbc)
        elif cell is None and graph.cell is not None:
            cell = graph.cell.to(device=pos.device, dtype=dtype).reshape(-1, 3, 3)
        if create_graph is None:
            create_graph = self.training
        atom_batch = (
            batch if batch is not None else torch.zeros(n, dtype=torch.long, device=pos.device)
        )

        with torch.enable_grad():
            inputs = []
            if forces or stress:
                if not pos.requires_grad:
                    pos = pos.detach().requires_grad_(True)
                inputs.append(pos)
            if stress:
                strain = torch.zeros(num_structures, 3, 3, dtype=dtype, device=pos.device)
                strain.requires_grad_(True)
                inputs.append(strain)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                moved = pos + torch.bmm(pos.unsqueeze(1), sym.index_select(0, atom_batch)).squeeze(
                    1
                )
                strained_cell = cell + torch.bmm(cell, sym)
                net_graph = (
                    replace(graph, cell=strained_cell) if graph.cell_shift is not None else graph
                )
            else:
                moved, strained_cell, net_graph = pos, cell, graph
            onehot = self.one_hot(idx, dtype)
            y = self.network(moved, onehot, batch, graph=net_graph, cell=strained_cell)[:, 0]
            atom_energy = y * self.species_scale[idx] + self.species_shift[idx]
            energy = atom_energy.new_zeros(num_structures).index_add(0, atom_batch, atom_energy)
            result: dict[str, torch.Tensor] = {"energy": energy}
            if energies:
                result["energies"] = atom_energy
            if inputs:
                grads = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=create_graph, allow_unused=True
                )
                grads = [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs)]
                if forces:
                    result["forces"] = -grads[0]
                if stress:
                    volume = torch.linalg.det(cell).abs()
                    result["stress"] = grads[-1] / volume.clamp_min(1e-30)[:, None, None]
        if not create_graph and not torch.is_grad_enabled():
            result = {k: v.detach() for k, v in result.items()}
        return result
