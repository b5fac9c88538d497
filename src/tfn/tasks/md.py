"""Energies and forces along molecular-dynamics trajectories (MD17-style), or of any structures.

``data.path`` is a local trajectory (extxyz with ``energy``/``forces``, the rMD17 npz or the
original MD17 npz: :func:`tfn.datasets.io.read_trajectory`; ``tfn data md`` generates one with
GFN2-xTB). Frames are split by a seeded permutation into ``num_train`` / ``num_val`` / the rest
(``num_test``, or a separate ``test_path``). The model is an :class:`~tfn.models.EnergyModel`
over the elements of the data, with per-species energy shifts and the force-RMS scale fitted on
the training frames. Periodic structures work too (their cells and boundaries are read with
them).

Loss: ``energy_weight * mean((dE / N_atoms)^2) + forces_weight * mean(dF^2)`` (eV, A);
energy-only (``forces_weight=0``) and force-only (``energy_weight=0``) both work. Metrics, in
meV and meV/A: ``energy_mae``, ``energy_rmse``, ``energy_per_atom_mae``, ``forces_mae``
(per component), ``forces_rmse``; the best checkpoint is the lowest validation loss.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from tfn.data.atoms import AtomsBatch, AtomsData, atoms_data_from_ase, collate_atoms
from tfn.models import EnergyModel
from tfn.models.energy import ATOMIC_NUMBERS
from tfn.tasks import register
from tfn.tasks.base import Task, TaskData
from tfn.tasks.plotting import parity_plot

_MILLI = 1000.0


class MDData(TaskData):
    """A trajectory file, its split, and the loss weights."""

    name: Literal["md"] = "md"
    path: str = Field(..., description="extxyz / npz trajectory with energies and forces")
    test_path: str | None = Field(None, description="a separate test trajectory (optional)")
    num_train: int = Field(1000, gt=0)
    num_val: int = Field(100, ge=0)
    num_test: int | None = Field(None, ge=0, description="default: every remaining frame")
    energy_key: str = "energy"
    forces_key: str = "forces"
    energy_weight: float = Field(1.0, ge=0)
    forces_weight: float = Field(10.0, ge=0)
    species: list[str] | None = Field(
        None, description="elements of the model (default: those of the data; set for you)"
    )
    batch_size: int = Field(5, gt=0)
    eval_batch_size: int = Field(64, gt=0)

    @model_validator(mode="after")
    def _weights(self):
        if self.energy_weight == 0 and self.forces_weight == 0:
            raise ValueError("data.energy_weight/forces_weight: at least one must be > 0")
        if self.species is not None:
            unknown = [s for s in self.species if s not in ATOMIC_NUMBERS]
            if unknown:
                raise ValueError(f"data.species: unknown chemical symbols {unknown}")
        return self


@register
class MDTask(Task):
    name = "md"
    Data = MDData
    model_class = EnergyModel
    model_fixed = ("species",)
    model_defaults = {"cutoff": 5.0}
    monitor = "loss"
    monitor_goal = "min"
    needs_grad = True
    paper = (
        "for scale, on the DFT rMD17 data (950 frames, long GPU training; not this data): "
        "NequIP aspirin 2.3 meV / 8.2 meV/A, ethanol 0.4 / 2.8; MACE 2.2 / 6.6 and 0.4 / 2.1"
    )
    progress_metrics = ("energy_mae", "forces_mae")
    curve_metrics = ("energy_mae", "forces_mae")

    # data ------------------------------------------------------------------------------------
    def _read(self, path: str) -> list:
        from tfn.datasets.io import read_trajectory

        require = ["energy"] + (["forces"] if self.data.forces_weight > 0 else [])
        return read_trajectory(
            path, require=require, energy_key=self.data.energy_key, forces_key=self.data.forces_key
        )

    @cached_property
    def _frames(self) -> list:
        return self._read(self.data.path)

    @cached_property
    def _split(self) -> dict[str, np.ndarray]:
        d = self.data
        n = len(self._frames)
        need = d.num_train + d.num_val + (d.num_test or 0 if d.test_path is None else 0)
        if need > n:
            raise ValueError(
                f"data.num_train + num_val{' + num_test' if d.num_test else ''} = {need} frames, "
                f"but {d.path} has {n}"
            )
        order = np.random.default_rng(self.cfg.seed).permutation(n)
        train, val = order[: d.num_train], order[d.num_train : d.num_train + d.num_val]
        rest = order[d.num_train + d.num_val :]
        test = rest if d.num_test is None else rest[: d.num_test]
        return {"train": train, "val": val, "test": test}

    def check_data(self) -> None:
        self._split  # noqa: B018 - reads the file and checks that the split fits

    def _has_forces(self, frames: list) -> bool:
        return all("forces" in f.arrays for f in frames)

    def _items(self, frames: list) -> list[AtomsData]:
        arrays = ("forces",) if self._has_forces(frames) else ()
        return [
            atoms_data_from_ase(f, self.dtype, info_targets=("energy",), array_targets=arrays)
            for f in frames
        ]

    def train_set(self) -> list[AtomsData]:
        return self._items([self._frames[i] for i in self._split["train"]])

    def val_sets(self) -> dict[str, list[AtomsData]]:
        val = self._split["val"]
        return {"val": self._items([self._frames[i] for i in val])} if len(val) else {}

    def test_sets(self) -> dict[str, list[AtomsData]]:
        if self.data.test_path is not None:
            frames = self._read(self.data.test_path)
            if self.data.num_test is not None:
                frames = frames[: self.data.num_test]
            return {"test": self._items(frames)}
        return {"test": self._items([self._frames[i] for i in self._split["test"]])}

    def collate(self, items) -> AtomsBatch:
        return collate_atoms(items, self.cfg.model.cutoff)

    @staticmethod
    def batch_size_of(batch: AtomsBatch) -> int:
        return batch.num_graphs

    # model -----------------------------------------------------------------------------------
    @property
    def species(self) -> list[str]:
        if self.data.species is None:
            present = set()
            for f in self._frames:
                present.update(f.get_chemical_symbols())
            # Resolved into the config, so that a saved run rebuilds without its data.
            self.data.species = sorted(present, key=ATOMIC_NUMBERS.__getitem__)
        return list(self.data.species)

    def fixed_model_arguments(self) -> dict[str, Any]:
        return {"species": self.species}

    def prepare_model(self, model: EnergyModel, train_set) -> dict[str, Any]:
        numbers = [item.numbers for item in train_set]
        energies = [float(item.targets["energy"]) for item in train_set]
        has_forces = all("forces" in item.targets for item in train_set)
        forces = [item.targets["forces"] for item in train_set] if has_forces else None
        fitted = model.fit_statistics(
            numbers,
            energies,
            forces,
            positions=[item.pos for item in train_set],
            cells=[item.cell for item in train_set],
            pbcs=[item.pbc for item in train_set],
            scale="force_rms" if has_forces else "energy_rms",
        )
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fitted.items()}

    # the one call, loss, metrics ---------------------------------------------------------------
    def forward(self, model: EnergyModel, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        periodic = bool(batch.pbc.any())
        return model(
            batch.numbers,
            batch.pos,
            batch.batch,
            batch.cell if periodic else None,
            batch.pbc if periodic else None,
            graph=batch.graph,
            forces=self.data.forces_weight > 0 if model.training else "forces" in batch.targets,
        )

    def loss(self, pred: dict[str, torch.Tensor], batch: AtomsBatch) -> torch.Tensor:
        d = self.data
        loss = pred["energy"].new_zeros(())
        if d.energy_weight > 0:
            n = batch.atoms_per_graph.to(pred["energy"].dtype)
            loss = (
                loss
                + d.energy_weight * ((pred["energy"] - batch.targets["energy"]) / n).pow(2).mean()
            )
        if d.forces_weight > 0 and "forces" in batch.targets:
            loss = loss + d.forces_weight * (pred["forces"] - batch.targets["forces"]).pow(2).mean()
        return loss

    def metric_sums(
        self, pred: dict[str, torch.Tensor], batch: AtomsBatch
    ) -> dict[str, torch.Tensor]:
        de = (pred["energy"] - batch.targets["energy"]).detach().double()
        n = batch.atoms_per_graph.double()
        sums = {
            "loss": self.loss(pred, batch).detach().double() * batch.num_graphs,
            "structures": torch.tensor(float(batch.num_graphs), dtype=torch.float64),
            "energy_abs": de.abs().sum(),
            "energy_sq": de.pow(2).sum(),
            "energy_per_atom_abs": (de / n).abs().sum(),
        }
        if "forces" in batch.targets:
            df = (pred["forces"] - batch.targets["forces"]).detach().double()
            sums["force_components"] = torch.tensor(float(df.numel()), dtype=torch.float64)
            sums["forces_abs"] = df.abs().sum()
            sums["forces_sq"] = df.pow(2).sum()
        return sums

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        m = max(sums["structures"], 1.0)
        out = {
            "loss": sums["loss"] / m,
            "energy_mae": _MILLI * sums["energy_abs"] / m,
            "energy_rmse": _MILLI * (sums["energy_sq"] / m) ** 0.5,
            "energy_per_atom_mae": _MILLI * sums["energy_per_atom_abs"] / m,
        }
        if "force_components" in sums:
            c = max(sums["force_components"], 1.0)
            out["forces_mae"] = _MILLI * sums["forces_abs"] / c
            out["forces_rmse"] = _MILLI * (sums["forces_sq"] / c) ** 0.5
        return out

    def plots(self, model, sets, out: Path, device) -> dict[str, float]:
        energy, forces = [], []
        for name, items in sets.items():
            preds, batches = self.run(model, items, device)
            true_e = torch.cat([b.targets["energy"] for b in batches])
            pred_e = torch.cat([p["energy"] for p in preds])
            energy.append((f"{name}: energy (eV)", true_e - true_e.mean(), pred_e - true_e.mean()))
            if all("forces" in b.targets for b in batches):
                true_f = torch.cat([b.targets["forces"] for b in batches])
                forces.append(
                    (
                        f"{name}: force components (eV/A)",
                        true_f,
                        torch.cat([p["forces"] for p in preds]),
                    )
                )
        parity_plot(energy + forces, out / "predictions.png")
        return {}
