"""Training, evaluation and loading of runs (PyTorch Lightning; ``pip install 'tfn[train]'``).

Importing this package is cheap: Lightning, YAML and matplotlib are imported when used.
The modules, one job each: :mod:`~tfn.train.config` (the validated schema),
:mod:`~tfn.train.rundir` (run folders, merged metrics), :mod:`~tfn.train.checkpoints` (atomic
last/best checkpoints, stopping on signals), :mod:`~tfn.train.data` and
:mod:`~tfn.train.module` (Lightning), :mod:`~tfn.train.distributed` (several processes),
:mod:`~tfn.train.runner` (:func:`train`), :mod:`~tfn.train.evaluation` (:func:`evaluate`),
:mod:`~tfn.train.loading` (:func:`load`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from tfn.train.loading import TrainedModel
    from tfn.train.runner import RunResult

__all__ = ["train", "evaluate", "load"]


def train(
    config: Any = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    **kwargs: Any,
) -> RunResult:
    """Train a run; see :func:`tfn.train.runner.train`."""
    from tfn.train.runner import train as _train

    return _train(config, overrides, out=out, resume=resume, **kwargs)


def evaluate(run_dir: str | Path, checkpoint: str = "best", **kwargs: Any) -> dict[str, Any]:
    """Re-evaluate a run's checkpoint; see :func:`tfn.train.evaluation.evaluate`."""
    from tfn.train.evaluation import evaluate as _evaluate

    return _evaluate(run_dir, checkpoint, **kwargs)


def load(
    run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> TrainedModel:
    """The trained model of a run folder, in eval mode (see :class:`~tfn.train.loading.TrainedModel`).
    ``checkpoint``: ``"best"`` (default), ``"last"`` or a ``.ckpt`` path."""
    from tfn.train.loading import load as _load

    return _load(run_dir, checkpoint, device)
