"""What a task is: its data options, its model, the one call of the network, loss and metrics.

A :class:`Task` subclass lives in one module of :mod:`tfn.tasks` and is registered by
:func:`register` (modules in this package are found automatically; another package can register
through the ``tfn.tasks`` entry point group). Nothing else needs to change to add a task: the
config engine reads its :attr:`Task.Data` options and derives the ``model`` section from the
signature of :attr:`Task.model_class`; the trainer, evaluation, plots and command line only call
the methods below.

Metrics are accumulated as additive sums (:meth:`Task.metric_sums`, all-reduced across processes)
and turned into numbers once per epoch (:meth:`Task.finalize`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from tfn.models import TensorFieldNetwork

if TYPE_CHECKING:  # pragma: no cover
    from tfn.train.config import Config

__all__ = ["Task", "TaskData", "split_seed"]


class TaskData(BaseModel):
    """Options every task's ``data`` section has (subclasses add their own)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str
    batch_size: int = Field(16, gt=0, description="training batch size (structures)")
    eval_batch_size: int = Field(256, gt=0, description="batch size of evaluation")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")


class Task(ABC):
    """Base class of every task; see the module docstring.

    Class attributes a task sets:

    * ``name``: the ``data.name`` that selects it; ``Data``: its data options (a
      :class:`TaskData` subclass whose ``name`` is ``Literal[name]``);
    * ``model_class``: the model built from the ``model`` section; ``model_fixed``: arguments
      the task sets itself (not in the config); ``model_defaults``: the task's own defaults;
    * ``monitor`` / ``monitor_goal``: the validation metric that picks the best checkpoint and
      whether lower (``"min"``) or higher (``"max"``) is better;
    * ``needs_grad``: :meth:`forward` takes derivatives (forces), also in validation and test;
    * ``paper``: what the paper reports, printed beside our numbers;
    * ``progress_metrics``: validation metrics printed once per epoch; ``curve_metrics``:
      those drawn in the learning curves;
    * ``exports``: methods taking the model first that a loaded run offers
      (``tfn.load(run).predict_atoms(...)``).
    """

    name: ClassVar[str] = ""
    Data: ClassVar[type[TaskData]] = TaskData
    model_class: ClassVar[type[torch.nn.Module]] = TensorFieldNetwork
    model_fixed: ClassVar[tuple[str, ...]] = ("irreps_in", "irreps_out")
    model_defaults: ClassVar[dict[str, Any]] = {}
    monitor: ClassVar[str] = "loss"
    monitor_goal: ClassVar[Literal["min", "max"]] = "min"
    needs_grad: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    progress_metrics: ClassVar[tuple[str, ...]] = ()
    curve_metrics: ClassVar[tuple[str, ...]] = ()
    #: methods ``name(model, ...)`` offered on a loaded run as ``run.name(...)``
    exports: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @property
    def data(self) -> Any:
        """This task's data options (``cfg.data``)."""
        return self.cfg.data

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self.cfg.dtype == "float64" else torch.float32

    # config ----------------------------------------------------------------------------------
    @classmethod
    def default_model_arguments(cls, data: TaskData) -> dict[str, Any]:
        """The task's defaults of model arguments (may depend on the data options)."""
        return dict(cls.model_defaults)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Checks across sections (raise ``ValueError`` naming the keys); default: none."""
        return None

    # model -----------------------------------------------------------------------------------
    def fixed_model_arguments(self) -> dict[str, Any]:
        """The values of :attr:`model_fixed` (e.g. the irreps in and out)."""
        return {}

    def build_model(self) -> torch.nn.Module:
        """The model of the config, in the config's dtype."""
        kwargs = dict(self.cfg.model_arguments())
        kwargs.update(self.fixed_model_arguments())
        return self.model_class(**kwargs).to(self.dtype)

    def prepare_model(self, model: torch.nn.Module, train_set: Sequence[Any]) -> dict[str, Any]:
        """Fit what the model takes from the training data before training (per-species energy
        shifts, the average number of neighbours...). Returns what was fitted (logged)."""
        return {}

    # data ------------------------------------------------------------------------------------
    def check_data(self) -> None:
        """Fail early (before a run folder exists) on data that cannot work: a missing file,
        too few items for the split... Default: nothing to check."""
        return None

    @abstractmethod
    def train_set(self) -> Sequence[Any]: ...

    @abstractmethod
    def val_sets(self) -> dict[str, Sequence[Any]]: ...

    @abstractmethod
    def test_sets(self) -> dict[str, Sequence[Any]]: ...

    def collate(self, items: Sequence[Any]) -> Any:
        """Items of the data sets into one batch (with ``.to(device)``)."""
        from tfn.data import collate

        return collate(items)

    @staticmethod
    def batch_size_of(batch: Any) -> int:
        """Number of structures in a batch (for logging averages)."""
        return int(getattr(batch, "num_clouds", getattr(batch, "num_graphs", 1)))

    # the network's one call, loss, metrics -----------------------------------------------------
    @abstractmethod
    def forward(self, model: torch.nn.Module, batch: Any) -> Any:
        """The prediction of ``model`` on ``batch``: the only place the network is called."""

    @abstractmethod
    def loss(self, pred: Any, batch: Any) -> torch.Tensor: ...

    @abstractmethod
    def metric_sums(self, pred: Any, batch: Any) -> dict[str, torch.Tensor]:
        """Additive statistics of one batch (summed over batches and processes)."""

    @abstractmethod
    def finalize(self, sums: dict[str, float]) -> dict[str, float]: ...

    # evaluation ------------------------------------------------------------------------------
    def run(
        self, model: torch.nn.Module, items: Sequence[Any], device: torch.device | str = "cpu"
    ) -> tuple[list[Any], list[Any]]:
        """Predictions and batches of ``items`` (batched by ``data.eval_batch_size``), with
        gradients enabled only when the task needs them."""
        preds, batches = [], []
        bs = self.data.eval_batch_size
        for i in range(0, len(items), bs):
            b = self.collate(items[i : i + bs]).to(device)
            with torch.set_grad_enabled(self.needs_grad):
                pred = self.forward(model, b)
            preds.append(_detach(pred))
            batches.append(b)
        return preds, batches

    def evaluate(
        self, model: torch.nn.Module, items: Sequence[Any], device: torch.device | str = "cpu"
    ) -> dict[str, float]:
        """Metrics (and loss) of ``model`` on ``items``."""
        sums: dict[str, float] = {}
        preds, batches = self.run(model, items, device)
        for p, b in zip(preds, batches):
            for k, v in self.metric_sums(p, b).items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return self.finalize(sums)

    def extra_test_metrics(
        self, model: torch.nn.Module, device: torch.device | str
    ) -> dict[str, float]:
        """Task-specific checks run once at test time (e.g. the mirror check)."""
        return {}

    def plots(
        self, model: torch.nn.Module, sets: dict[str, Sequence[Any]], out: Path, device: Any
    ) -> dict[str, float]:
        """Task plots into the folder ``out``; returns numbers measured on the way."""
        return {}


def _detach(pred: Any) -> Any:
    if isinstance(pred, torch.Tensor):
        return pred.detach()
    if isinstance(pred, dict):
        return {k: _detach(v) for k, v in pred.items()}
    return pred


def split_seed(task: Task, k: int) -> int:
    """Seed of the ``k``-th generated data set of a run (0: train, 1: val, 2: test, ...)."""
    return task.cfg.seed * 1000 + k
