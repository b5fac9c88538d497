"""An ASE calculator for tfn energy models (``pip install 'tfn[chem]'``).

:class:`TFNCalculator` wraps an :class:`~tfn.models.EnergyModel` (trained or not) or a run folder
of a trained one, and gives ASE ``energy``, ``free_energy`` (the same: no electronic entropy),
``forces``, per-atom ``energies`` and, for periodic cells, ``stress`` (Voigt order, ASE's sign:
negative under compression). Molecules, full and partial periodicity, triclinic cells and cells
smaller than twice the cutoff (an atom then sees its own images) all work: the neighbour list
includes every image within the cutoff.

Example:
    >>> from ase.build import molecule
    >>> from tfn.models import EnergyModel
    >>> model = EnergyModel(["H", "O"], irreps_hidden="8x0e + 4x1o", num_layers=1, cutoff=3.0)
    >>> water = molecule("H2O")
    >>> water.calc = TFNCalculator(model)
    >>> water.get_forces().shape
    (3, 3)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from ase.calculators.calculator import (
        Calculator,
        PropertyNotImplementedError,
        all_changes,
    )
    from ase.stress import full_3x3_to_voigt_6_stress
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tfn.ase needs the Atomic Simulation Environment: pip install 'tfn[chem]'"
    ) from error

__all__ = ["TFNCalculator", "atoms_to_tensors"]


def atoms_to_tensors(
    atoms: Any | Sequence[Any],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """ASE ``Atoms`` (one or a list) as the inputs of :class:`~tfn.models.EnergyModel`:
    ``numbers [N]``, ``pos [N, 3]``, ``batch [N]``, ``cell [B, 3, 3]``, ``pbc [B, 3]``."""
    structures = [atoms] if hasattr(atoms, "get_positions") else list(atoms)
    if not structures:
        raise ValueError("atoms_to_tensors: no structures given")
    for k, a in enumerate(structures):
        if len(a) == 0:
            raise ValueError(f"atoms_to_tensors: structure {k} has no atoms")
    numbers = np.concatenate([a.numbers for a in structures])
    pos = np.concatenate([a.positions for a in structures])
    batch = np.concatenate([np.full(len(a), k) for k, a in enumerate(structures)])
    cell = np.stack([np.asarray(a.cell.array, dtype=np.float64) for a in structures])
    pbc = np.stack([np.asarray(a.pbc, dtype=bool) for a in structures])
    return {
        "numbers": torch.as_tensor(numbers, dtype=torch.long, device=device),
        "pos": torch.as_tensor(pos, dtype=dtype, device=device),
        "batch": torch.as_tensor(batch, dtype=torch.long, device=device),
        "cell": torch.as_tensor(cell, dtype=dtype, device=device),
        "pbc": torch.as_tensor(pbc, device=device),
    }


def _energy_model(model_or_run_dir: Any) -> torch.nn.Module:
    """The EnergyModel in an EnergyModel, a loaded run or a run folder."""
    from tfn.models import EnergyModel

    if isinstance(model_or_run_dir, (str, Path)):
        import tfn

        path = Path(model_or_run_dir)
        if not path.exists():
            raise FileNotFoundError(f"TFNCalculator: no run folder or checkpoint at {path}")
        model_or_run_dir = tfn.load(path)
    if isinstance(model_or_run_dir, EnergyModel):
        return model_or_run_dir
    inner = getattr(model_or_run_dir, "net", None)
    if isinstance(inner, EnergyModel):
        return inner
    raise TypeError(
        "TFNCalculator needs an EnergyModel, a loaded run of an energy task or its run folder, "
        f"got {type(model_or_run_dir).__name__}"
    )


class TFNCalculator(Calculator):
    """ASE calculator of a tfn energy model.

    Args:
        model_or_run_dir: an :class:`~tfn.models.EnergyModel`, a loaded run
            (:func:`tfn.load`) of an energy task, or the path of its run folder.
        device: where the model runs (default: the model's device).
        dtype: ``torch.float32`` or ``torch.float64`` (default: the model's).
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.

    The model is put in evaluation mode; with a ``device`` or ``dtype`` that differs from the
    model's, the calculator works on a converted copy (the given model is left as it is).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model_or_run_dir: Any,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        model = _energy_model(model_or_run_dir)
        current = next(model.parameters())
        if isinstance(dtype, str):
            dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype, dtype)
        if dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"TFNCalculator: dtype must be float32 or float64, got {dtype}")
        device = torch.device(device) if device is not None else current.device
        dtype = dtype or current.dtype
        if device != current.device or dtype != current.dtype:
            model = copy.deepcopy(model).to(device=device, dtype=dtype)
        self.model = model.eval()
        self.device, self.dtype = device, dtype

    @property
    def species(self) -> list[str]:
        return list(self.model.species)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(self.model.species))
        if unknown:
            raise ValueError(
                f"TFNCalculator: element {', '.join(map(repr, unknown))} is not among the "
                f"model's species {self.model.species}"
            )
        periodic = bool(np.any(atoms.pbc))
        volume = abs(float(np.linalg.det(atoms.cell.array))) if periodic else 0.0
        has_stress = periodic and volume > 0
        if "stress" in properties and not has_stress:
            raise PropertyNotImplementedError(
                "TFNCalculator: the stress needs periodic boundaries and a cell of non-zero volume"
            )
        t = atoms_to_tensors(atoms, self.dtype, self.device)
        out = self.model(
            t["numbers"],
            t["pos"],
            None,
            t["cell"] if periodic else None,
            t["pbc"] if periodic else None,
            forces=True,
            stress=has_stress,
            energies=True,
            create_graph=False,
        )
        energy = float(out["energy"].detach().sum())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = out["forces"].detach().cpu().double().numpy()
        self.results["energies"] = out["energies"].detach().cpu().double().numpy()
        if has_stress:
            stress = out["stress"].detach().cpu().double().numpy()[0]
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
