"""QM9 properties (Ramakrishnan et al. 2014): one of 14 targets per run, with the readout its
physics asks for.

``data.target`` is one of the 12 usual scalars (``U0 U H G homo lumo gap zpve`` in eV, ``mu`` in
D, ``alpha`` in bohr^3, ``r2`` in bohr^2, ``cv`` in cal/(mol K)), ``mulliken_charges`` (e, per
atom) or ``polarizability`` (the 3x3 tensor, bohr^3). The model is a
:class:`~tfn.models.PropertyModel` over QM9's elements (H, C, N, O, F):

=====================================  ==========================================================
target                                 readout and why
=====================================  ==========================================================
``U0 U H G``, ``zpve``, ``cv``,        ``sum`` of per-atom scalars, with per-element reference
``alpha``                              values fitted by least squares on the training
                                       compositions: these are extensive (a molecule's value is
                                       close to a sum of atomic and bond contributions; the
                                       composition alone explains all but ~0.2% of U0's spread)
``homo lumo gap``                      ``mean`` of per-atom scalars (references fitted on the
                                       composition *fractions*): orbital energies are intensive,
                                       they do not grow with the molecule
``mu``                                 ``dipole``: ``|sum_i q_i r_i + p_i|`` from per-atom
                                       charges ``q_i`` (``0e``, made to sum to zero, so the dipole
                                       does not depend on the origin) and atomic dipoles ``p_i``
                                       (``1o``); only the norm is in the data, so the loss is on
                                       the norm (the direction is a by-product)
``r2``                                 ``spatial_extent``: ``sum_i a_i + b_i |r_i - c|^2`` about
                                       the centre of nuclear charge ``c`` (where the program puts
                                       its origin for ``<R^2>``): each atom's own extent plus its
                                       electrons' squared distance from the centre
``mulliken_charges``                   ``charges``: one ``0e`` per atom minus the molecule's mean
                                       prediction (QM9's molecules are neutral: the predicted
                                       charges sum to zero exactly)
``polarizability``                     ``sum`` of ``0e + 2e`` per atom (extensive, the
                                       isotropic part with per-element references), turned into a
                                       symmetric 3x3 tensor by ``CartesianTensor("ij=ji")``
=====================================  ==========================================================

Every prediction is ``learned + reference`` with the reference (the readout of the fitted
per-element values) computed in float64 and the targets kept in float64, so float32 training
loses nothing on QM9's large total energies (~10^4 eV).

**Polarizability.** QM9 gives the tensor in the program's standard orientation;
:func:`tfn.datasets.load_qm9` maps it into the frame of the positions, but the *signs* of that
frame's axes are not always set by the geometry (``docs/qm9.md``). Loss and metrics therefore
take the smallest error over the four axis-sign flips of the frame
(:func:`tfn.datasets.qm9.min_over_sign_flips_loss`): zero for the right tensor whatever the
signs. Molecules whose frame itself is flagged unreliable (``polarizability_frame_ok`` false:
45 of 130,831 with cache format 2, ``docs/qm9.md``) are left out of training, validation and
test; their tensor is not known in any frame we can trust. How many were left out is in the
fitted values and in ``metrics.json`` (``test/frames_dropped``). The eigenvalues, which need no
frame, are a second metric (``eigenvalue_mae``), and ``alpha_mae`` compares the trace / 3 with
QM9's isotropic ``alpha``.

**Split.** :func:`tfn.datasets.qm9_split` (``data.split_seed``, ``split_train`` / ``split_val``
molecules; the test part is the rest, 10,831) is fixed. Each part is put in a fixed random order
(seeded by ``split_seed``, independent of the sizes asked for) and the first ``num_train`` /
``num_val`` / ``num_test`` are used: the test molecules are the same on every machine whatever
``num_train`` is, and a larger ``num_train`` contains the smaller one.

Metrics (test set, in the units above; energies in **meV**): ``mae`` and ``rmse`` per molecule
(per atom for ``mulliken_charges``, per tensor entry for ``polarizability``).
``tfn.load(RUN).predict_atoms(atoms_or_list)`` returns the named outputs in the data's units.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from tfn.data.atoms import AtomsBatch, AtomsData, collate_atoms
from tfn.models.property import PropertyModel
from tfn.tasks import register
from tfn.tasks.base import Task, TaskData
from tfn.tasks.plotting import parity_plot

__all__ = ["QM9_ELEMENTS", "QM9_TARGETS", "QM9Data", "QM9Task"]

QM9_ELEMENTS = ("H", "C", "N", "O", "F")
#: e*A per debye (1 D = 3.33564e-30 C m, 1 e A = 1.602177e-29 C m; ase.units.Debye)
DEBYE = 0.20819433442462576
_CHEM_HINT = "pip install 'tfn[chem]'"


@dataclass(frozen=True)
class _Target:
    readout: str
    irreps_out: str
    unit: str  # of the data and of predict_atoms
    metric_unit: str
    metric_factor: float  # data unit -> metric unit
    paper: float | None = None  # published TFN test MAE, metric units
    to_model: float = 1.0  # data unit -> model output unit


_EV = dict(unit="eV", metric_unit="meV", metric_factor=1000.0)
QM9_TARGETS: dict[str, _Target] = {
    "U0": _Target("sum", "1x0e", **_EV),
    "U": _Target("sum", "1x0e", **_EV),
    "H": _Target("sum", "1x0e", **_EV),
    "G": _Target("sum", "1x0e", **_EV),
    "zpve": _Target("sum", "1x0e", **_EV),
    "homo": _Target("mean", "1x0e", **_EV, paper=40.0),
    "lumo": _Target("mean", "1x0e", **_EV, paper=38.0),
    "gap": _Target("mean", "1x0e", **_EV, paper=58.0),
    "mu": _Target("dipole", "1x0e + 1x1o", "D", "D", 1.0, 0.064, to_model=DEBYE),
    "alpha": _Target("sum", "1x0e", "bohr^3", "bohr^3", 1.0, 0.223),
    "r2": _Target("spatial_extent", "2x0e", "bohr^2", "bohr^2", 1.0),
    "cv": _Target("sum", "1x0e", "cal/(mol K)", "cal/(mol K)", 1.0, 0.101),
    "mulliken_charges": _Target("charges", "1x0e", "e", "e", 1.0),
    "polarizability": _Target("sum", "1x0e + 1x2e", "bohr^3", "bohr^3", 1.0),
}
"""The 14 targets: readout, output irreps, units, and the published TFN MAE where there is one."""

TargetName = Literal[
    "U0", "U", "H", "G", "zpve", "homo", "lumo", "gap", "mu", "alpha", "r2", "cv",
    "mulliken_charges", "polarizability",
]  # fmt: skip


class QM9Data(TaskData):
    """QM9: one target, the fixed split, and the loss."""

    name: Literal["qm9"] = "qm9"
    target: TargetName = Field("U0", description="the property to learn (14 choices)")
    num_train: int = Field(110_000, gt=0, description="training molecules (first of the part)")
    num_val: int = Field(1000, gt=0, description="validation molecules, each epoch")
    num_test: int | None = Field(None, gt=0, description="test molecules (default: all)")
    split_seed: int = Field(0, ge=0, description="seed of qm9_split and of the part orders")
    split_train: int = Field(110_000, gt=0, description="qm9_split's training part")
    split_val: int = Field(10_000, gt=0, description="qm9_split's validation part")
    loss: Literal["mse", "l1"] = Field("mse", description="squared or absolute error")
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(128, gt=0)

    @model_validator(mode="after")
    def _sizes(self):
        if self.num_train > self.split_train:
            raise ValueError(
                f"data.num_train: {self.num_train} is more than the split's training part "
                f"(data.split_train = {self.split_train})"
            )
        if self.num_val > self.split_val:
            raise ValueError(
                f"data.num_val: {self.num_val} is more than the split's validation part "
                f"(data.split_val = {self.split_val})"
            )
        return self


def _check_extra() -> None:
    if importlib.util.find_spec("ase") is None:
        raise ImportError(
            f"the QM9 tasks need ASE and qm9pack, which are not installed: {_CHEM_HINT}"
        )


def check_molecules(atoms: Any, where: str, min_atoms: int = 2) -> list:
    """``atoms`` (one ``ase.Atoms`` or a sequence of them) as a list, with clear errors for what
    a QM9 model cannot predict: not atoms, periodic cells, fewer than ``min_atoms`` atoms."""
    molecules = [atoms] if hasattr(atoms, "positions") else atoms
    if isinstance(molecules, (str, bytes)) or not isinstance(molecules, Sequence):
        raise TypeError(
            f"{where}: expected an ase.Atoms or a list of them, got {type(atoms).__name__}"
        )
    molecules = list(molecules)
    if not molecules:
        raise ValueError(f"{where}: no molecules given")
    for k, m in enumerate(molecules):
        if not (hasattr(m, "numbers") and hasattr(m, "positions")):
            raise TypeError(f"{where}: item {k} is a {type(m).__name__}, not an ase.Atoms")
        if bool(np.asarray(getattr(m, "pbc", False)).any()):
            raise ValueError(
                f"{where}: molecule {k} is periodic (pbc={list(np.asarray(m.pbc))}); QM9 models "
                "are for isolated molecules: set atoms.pbc = False"
            )
        if len(m) < min_atoms:
            raise ValueError(
                f"{where}: molecule {k} has {len(m)} atom(s); the model needs at least "
                f"{min_atoms} (an atom alone has no neighbours to learn from; QM9's molecules "
                "have 3 to 29 atoms)"
            )
        if not np.isfinite(np.asarray(m.positions, dtype=float)).all():
            raise ValueError(f"{where}: molecule {k} has non-finite positions")
    return molecules


def atoms_item(atoms: Any, dtype: torch.dtype, targets: dict | None = None, atom_targets=()):
    """One molecule as :class:`AtomsData` (positions in ``dtype``, targets in float64)."""
    numbers = torch.as_tensor(np.asarray(atoms.numbers), dtype=torch.long)
    pos = torch.as_tensor(np.asarray(atoms.positions, dtype=np.float64)).to(dtype)
    return AtomsData(numbers, pos, targets=dict(targets or {}), atom_targets=tuple(atom_targets))


def _ordered(part: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A fixed random order of a split part (depends only on the seed and the part)."""
    return part[np.random.default_rng([seed, salt]).permutation(len(part))]


def with_qm9_species_hint(model: PropertyModel) -> PropertyModel:
    """An element outside QM9's five gets an error that says what the model was trained on."""
    model.unknown_species_hint = (
        f" (QM9 has only {', '.join(QM9_ELEMENTS)}): this model cannot read molecules "
        "with other elements"
    )
    return model


@register
class QM9Task(Task):
    name = "qm9"
    Data = QM9Data
    model_class = PropertyModel
    model_fixed = ("species", "irreps_out", "readout")
    # The shipped configs' network (configs/qm9_*.yaml say why)
    model_defaults = {"cutoff": 5.0, "irreps_hidden": "64x0e + 16x1o", "lmax": 1, "num_layers": 3}
    monitor = "mae"
    monitor_goal = "min"
    progress_metrics = ("mae",)
    curve_metrics = ("mae",)
    exports = ("predict_atoms",)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.target = self.data.target
        self.spec = QM9_TARGETS[self.target]
        published = (
            f"published TFN test MAE {self.spec.paper:g} {self.spec.metric_unit} (trained far "
            "longer, on GPUs)"
            if self.spec.paper is not None
            else "no published TFN number for this target"
        )
        self.paper = f"QM9 {self.target}: {published}; ours in {self.spec.metric_unit}"
        #: molecules left out of each part (polarizability: frame not reliable)
        self.dropped: dict[str, int] = {}
        self._cartesian = None
        if self.target == "polarizability":
            from tfn.so3 import CartesianTensor

            self._cartesian = CartesianTensor("ij=ji")

    # config and model ---------------------------------------------------------------------
    def fixed_model_arguments(self) -> dict[str, Any]:
        return {
            "species": list(QM9_ELEMENTS),
            "irreps_out": self.spec.irreps_out,
            "readout": self.spec.readout,
        }

    def build_model(self) -> PropertyModel:
        return with_qm9_species_hint(super().build_model())

    # data ------------------------------------------------------------------------------------
    @cached_property
    def _indices(self) -> dict[str, np.ndarray]:
        """1-based QM9 numbers of the train / val / test molecules (before any filtering)."""
        from tfn.datasets.qm9 import qm9_split

        d = self.data
        split = qm9_split(d.split_seed, d.split_train, d.split_val)
        if d.num_test is not None and d.num_test > len(split["test"]):
            raise ValueError(
                f"data.num_test: {d.num_test} is more than the {len(split['test'])} test molecules"
            )
        order = {
            name: _ordered(part, d.split_seed, k) for k, (name, part) in enumerate(split.items())
        }
        return {
            "train": order["train"][: d.num_train],
            "val": order["val"][: d.num_val],
            "test": order["test"][: d.num_test] if d.num_test is not None else order["test"],
        }

    def check_data(self) -> None:
        _check_extra()
        self._indices  # noqa: B018 - reads the QM9 cache and checks the sizes

    def _molecules(self, part: str) -> list:
        from tfn.datasets import load_qm9

        _check_extra()
        return load_qm9(self._indices[part], progress=False)

    def _items(self, molecules: list) -> tuple[list[AtomsData], int]:
        """Items with their targets (float64), and how many molecules were left out."""
        t = self.target
        items, dropped = [], 0
        for m in molecules:
            if t == "mulliken_charges":
                charges = torch.as_tensor(m.arrays["mulliken_charges"], dtype=torch.float64)
                items.append(atoms_item(m, self.dtype, {t: charges}, (t,)))
            elif t == "polarizability":
                if not m.info["polarizability_frame_ok"]:
                    dropped += 1
                    continue
                targets = {
                    t: torch.as_tensor(m.info["polarizability"], dtype=torch.float64),
                    "frame": torch.as_tensor(m.info["polarizability_frame"], dtype=torch.float64),
                    "alpha": torch.tensor(float(m.info["alpha"]), dtype=torch.float64),
                }
                items.append(atoms_item(m, self.dtype, targets))
            else:
                value = torch.tensor(float(m.info[t]), dtype=torch.float64)
                items.append(atoms_item(m, self.dtype, {t: value}))
        return items, dropped

    def _part(self, part: str) -> list[AtomsData]:
        items, dropped = self._items(self._molecules(part))
        if self.target == "polarizability":
            self.dropped[part] = dropped
        return items

    def train_set(self) -> list[AtomsData]:
        return self._part("train")

    def val_sets(self) -> dict[str, list[AtomsData]]:
        return {"val": self._part("val")}

    @cached_property
    def _test(self) -> list[AtomsData]:
        return self._part("test")

    def test_sets(self) -> dict[str, list[AtomsData]]:
        return {"test": self._test}

    def collate(self, items) -> AtomsBatch:
        return collate_atoms(items, self.cfg.model.cutoff)

    @staticmethod
    def batch_size_of(batch: AtomsBatch) -> int:
        return batch.num_graphs

    # statistics ------------------------------------------------------------------------------
    def _model_targets(self, items: Sequence[AtomsData]) -> Any:
        """Training targets in the units of the model's output (``fit_statistics``)."""
        t, f = self.target, self.spec.to_model
        if t == "mulliken_charges":
            return [item.targets[t][:, None] * f for item in items]
        if t == "polarizability":
            tensors = torch.stack([item.targets[t] for item in items])
            return self._cartesian.from_cartesian(tensors)
        return torch.stack([item.targets[t] for item in items]) * f

    def prepare_model(self, model: PropertyModel, train_set) -> dict[str, Any]:
        fitted = model.fit_statistics(
            [item.numbers for item in train_set],
            self._model_targets(train_set),
            positions=[item.pos for item in train_set],
        )
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fitted.items()}
        if isinstance(out.get("shifts"), dict):
            out["shifts"] = {s: [round(x, 4) for x in v] for s, v in out["shifts"].items()}
        if self.target == "polarizability":
            out["frames_dropped"] = dict(self.dropped)
        return out

    # the one call, loss, metrics ---------------------------------------------------------------
    def forward(self, model: PropertyModel, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        """``value``: the prediction in the data's units (float64; per molecule, per atom for
        charges, ``[B, 3, 3]`` for the polarizability); for ``mu`` also ``dipole`` (D)."""
        learned = model(batch.numbers, batch.pos, batch.batch, graph=batch.graph, reference=False)
        total = learned.double() + model.reference(batch.numbers, batch.pos, batch.batch)
        if self.target == "polarizability":
            return {"value": self._cartesian.to_cartesian(total)}
        if self.target == "mu":
            dipole = total / self.spec.to_model
            # |d| with a floor: symmetric molecules have d = 0 exactly, where |d| has no gradient
            norm = (dipole.pow(2).sum(-1) + 1e-18).sqrt()
            return {"value": norm, "dipole": dipole}
        return {"value": total[:, 0] / self.spec.to_model}

    def _errors(self, pred: dict[str, torch.Tensor], batch: AtomsBatch) -> torch.Tensor:
        """Errors in the data's units: ``[B]`` (``[N]`` for charges, ``[B, 3, 3]`` in the frame
        and under the best sign flip for the polarizability)."""
        y = batch.targets[self.target].to(pred["value"].device, torch.float64)
        if self.target != "polarizability":
            return pred["value"] - y
        frames = batch.targets["frame"].to(y)
        from tfn.datasets.qm9 import polarizability_sign_flips

        p = frames @ pred["value"] @ frames.transpose(-1, -2)
        t = frames @ y @ frames.transpose(-1, -2)
        signs = torch.as_tensor(np.stack([d.diagonal() for d in polarizability_sign_flips()]))
        pattern = (signs[:, :, None] * signs[:, None, :]).to(p)  # [4, 3, 3]
        errors = p[:, None] * pattern - t[:, None]  # [B, 4, 3, 3]
        best = errors.pow(2).mean((-1, -2)).argmin(-1)
        return errors[torch.arange(len(best)), best]

    def loss(self, pred: dict[str, torch.Tensor], batch: AtomsBatch) -> torch.Tensor:
        if self.target == "polarizability" and self.data.loss == "mse":
            from tfn.datasets.qm9 import min_over_sign_flips_loss

            y = batch.targets[self.target].to(pred["value"])
            return min_over_sign_flips_loss(pred["value"], y, batch.targets["frame"].to(y))
        error = self._errors(pred, batch)
        return error.pow(2).mean() if self.data.loss == "mse" else error.abs().mean()

    def metric_sums(
        self, pred: dict[str, torch.Tensor], batch: AtomsBatch
    ) -> dict[str, torch.Tensor]:
        error = self._errors(pred, batch).detach() * self.spec.metric_factor
        f64 = dict(dtype=torch.float64)
        sums = {
            "loss": self.loss(pred, batch).detach().double() * batch.num_graphs,
            "structures": torch.tensor(float(batch.num_graphs), **f64),
            "count": torch.tensor(float(error.numel()), **f64),
            "abs": error.abs().sum(),
            "sq": error.pow(2).sum(),
        }
        if self.target == "polarizability":
            y = batch.targets[self.target].to(pred["value"])
            eig = torch.linalg.eigvalsh(pred["value"].detach()) - torch.linalg.eigvalsh(y)
            trace = pred["value"].detach().diagonal(0, -2, -1).sum(-1) / 3
            sums["eigenvalue_abs"] = eig.abs().sum()
            sums["alpha_abs"] = (trace - batch.targets["alpha"].to(trace)).abs().sum()
        return sums

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["count"], 1.0)
        out = {
            "loss": sums["loss"] / max(sums["structures"], 1.0),
            "mae": sums["abs"] / n,
            "rmse": (sums["sq"] / n) ** 0.5,
        }
        if "eigenvalue_abs" in sums:
            m = max(sums["structures"], 1.0)
            out["eigenvalue_mae"] = sums["eigenvalue_abs"] / (3 * m)
            out["alpha_mae"] = sums["alpha_abs"] / m
        return out

    def extra_test_metrics(self, model, device) -> dict[str, float]:
        if self.target != "polarizability":
            return {}
        self._test  # noqa: B018 - counts what the test set left out
        return {"frames_dropped": float(self.dropped.get("test", 0))}

    # plots and the export --------------------------------------------------------------------
    def plots(self, model, sets, out: Path, device) -> dict[str, float]:
        panels = []
        unit = self.spec.metric_unit
        for name, items in sets.items():
            preds, batches = self.run(model, items, device)
            if self.target == "polarizability":
                errors = torch.cat([self._errors(p, b) for p, b in zip(preds, batches)])
                frames = torch.cat([b.targets["frame"] for b in batches]).double()
                true = torch.cat([b.targets[self.target] for b in batches]).double()
                true = frames @ true @ frames.transpose(-1, -2)
                title = f"{name}: tensor entries in QM9's frame, best sign flip ({unit})"
                panels.append((title, true, true + errors))
                eig_true = torch.linalg.eigvalsh(
                    torch.cat([b.targets[self.target] for b in batches]).double()
                )
                eig_pred = torch.linalg.eigvalsh(torch.cat([p["value"] for p in preds]))
                panels.append((f"{name}: eigenvalues ({unit})", eig_true, eig_pred))
                continue
            true = torch.cat([b.targets[self.target] for b in batches]).double()
            value = torch.cat([p["value"] for p in preds])
            label = "eV" if unit == "meV" else unit
            what = "per atom" if self.target == "mulliken_charges" else f"{len(items)} molecules"
            extensive = self.spec.readout in ("sum", "spatial_extent")
            if not (extensive and unit == "meV"):  # total energies: all on the diagonal
                panels.append((f"{name}: {self.target} ({label}; {what})", true, value))
            if extensive:
                # Minus the per-element references: what the network had to learn.
                with torch.no_grad():
                    ref = (
                        torch.cat(
                            [
                                model.reference(b.numbers, b.pos, b.batch)[:, 0].cpu()
                                for b in batches
                            ]
                        )
                        / self.spec.to_model
                    )
                title = f"{name}: {self.target} minus the per-element references ({label})"
                panels.append((title, true - ref, value - ref))
        parity_plot(panels, out / "predictions.png")
        return {}

    def predict_atoms(self, model: PropertyModel, atoms: Any) -> dict[str, Any]:
        """The target (and what comes with it) for one ``ase.Atoms`` or a list of them, in the
        data's units.

        Returns, for one molecule (a list gives arrays stacked over molecules, or lists for
        per-atom values): ``{target: float}`` for the scalars; ``{"mu": float, "dipole": [3]}``
        (D; the direction is not trained, only the norm is); ``{"mulliken_charges": [n]}`` (e);
        ``{"polarizability": [3, 3], "alpha": float}`` (bohr^3, in the frame of the positions).
        """
        single = hasattr(atoms, "positions")
        molecules = check_molecules(atoms, "predict_atoms")
        p = next(model.parameters())
        items = [atoms_item(m, p.dtype) for m in molecules]
        values: list[np.ndarray] = []
        dipoles: list[np.ndarray] = []
        bs = self.data.eval_batch_size
        with torch.no_grad():
            for i in range(0, len(items), bs):
                batch = collate_atoms(items[i : i + bs], model.cutoff).to(p.device)
                pred = self.forward(model, batch)
                value = pred["value"].cpu().numpy()
                if self.target == "mulliken_charges":
                    sizes = batch.atoms_per_graph.tolist()
                    values.extend(np.split(value, np.cumsum(sizes)[:-1]))
                else:
                    values.extend(list(value))
                if "dipole" in pred:
                    dipoles.extend(list(pred["dipole"].cpu().numpy()))
        if self.target == "mulliken_charges":
            result: dict[str, Any] = {self.target: values[0] if single else values}
        else:
            stacked = np.stack(values)
            result = {self.target: stacked[0] if single else stacked}
            if self.target in ("polarizability",):
                alpha = np.trace(stacked, axis1=-2, axis2=-1) / 3
                result["alpha"] = alpha[0] if single else alpha
            if dipoles:
                d = np.stack(dipoles)
                result["dipole"] = d[0] if single else d
        if single:
            result = {k: (float(v) if np.ndim(v) == 0 else v) for k, v in result.items()}
        return result
