"""Training, evaluation and loading of runs (PyTorch Lightning; ``pip install 'tfn[train]'``).

Importing this package is cheap: Lightning, YAML and matplotlib are imported when used.

* :func:`train` trains a config into a run folder (see :mod:`tfn.train.runner`),
* :func:`evaluate` re-evaluates a run's best checkpoint and writes ``metrics.json``,
* :func:`load` returns a run's trained model, callable as ``model(pos, features, batch)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from tfn.train.runner import RunResult, TrainedModel

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
    """Re-evaluate a run's checkpoint; see :func:`tfn.train.runner.evaluate`."""
    from tfn.train.runner import evaluate as _evaluate

    return _evaluate(run_dir, checkpoint, **kwargs)


def load(
    run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> TrainedModel:
    """The trained model of a run folder, in eval mode, callable as
    ``model(pos, features, batch)`` (flat irreps output; ``model.predict`` gives the task's
    prediction). ``checkpoint``: ``"best"`` (default), ``"last"`` or a ``.ckpt`` path."""
    from tfn.train.runner import load as _load

    return _load(run_dir, checkpoint, device)
