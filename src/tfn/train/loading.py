"""A trained run as a model: :func:`load` (plain torch; no Lightning needed)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from tfn.tasks import Task, make_task
from tfn.train.checkpoints import read_checkpoint
from tfn.train.config import Config, build_config
from tfn.train.rundir import RunDir

__all__ = ["TrainedModel", "load", "find_checkpoint"]


class TrainedModel(torch.nn.Module):
    """A trained model with its config and task.

    ``model(...)`` calls the network as it is (a :class:`~tfn.models.TensorFieldNetwork`:
    ``model(pos, features, batch)``, flat irreps output; an
    :class:`~tfn.models.EnergyModel`: ``model(numbers, pos, ...)``); ``model.predict(batch)``
    returns the task's prediction of a batch (tetris: class logits, gravity: accelerations
    ``[N, 3]``, inertia: tensors ``[C, 3, 3]``; ``predict(pos, features, batch)`` builds the
    batch). Methods a task exports (``task.exports``) are available directly.
    """

    def __init__(self, net: torch.nn.Module, cfg: Config, task: Task, info: dict[str, Any]):
        super().__init__()
        self.net = net
        self.config = cfg
        self.task = task
        self.irreps_in = getattr(task, "irreps_in", None)
        self.irreps_out = getattr(task, "irreps_out", None)
        self.info = info

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def predict(
        self,
        batch: Any,
        features: torch.Tensor | None = None,
        cloud: torch.Tensor | None = None,
    ) -> Any:
        if isinstance(batch, torch.Tensor):  # (pos, features, batch)
            from tfn.data import Batch

            n = batch.shape[0]
            index = cloud if cloud is not None else torch.zeros(n, dtype=torch.long)
            batch = Batch(batch, features, index, int(index.max()) + 1 if n else 0)
        with torch.set_grad_enabled(self.task.needs_grad or torch.is_grad_enabled()):
            return self.task.forward(self.net, batch)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            task = self.__dict__.get("task")
            if task is not None and name in getattr(task, "exports", ()):
                return functools.partial(getattr(task, name), self.net)
            raise


def find_checkpoint(run_dir: str | Path, checkpoint: str | Path = "best") -> Path:
    """``best`` / ``last`` (or any name in ``checkpoints/``) or a ``.ckpt`` path."""
    if Path(checkpoint).suffix == ".ckpt" and Path(checkpoint).is_file():
        return Path(checkpoint)
    run = RunDir(run_dir)
    name = str(checkpoint)
    path = run.checkpoints / f"{name}.ckpt"
    if path.is_file():
        return path
    if not run.path.is_dir():
        raise FileNotFoundError(f"no checkpoint {name!r}: there is no run folder {run.path}")
    raise FileNotFoundError(f"no checkpoint {name!r} in {run.checkpoints}")


def load(
    run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> TrainedModel:
    """The trained model of a run folder (``best`` or ``last`` checkpoint, or a ``.ckpt``
    path), in eval mode."""
    path = find_checkpoint(run_dir, checkpoint)
    ckpt = read_checkpoint(path, map_location=device)
    try:
        cfg = build_config(ckpt["hyper_parameters"]["config"])
        weights = ckpt["state_dict"]
        # The moving average of the weights when the run kept one (optim.ema_decay).
        prefix = "ema." if any(k.startswith("ema.") for k in weights) else "net."
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    except KeyError as error:
        raise ValueError(f"{path} is not a tfn checkpoint (no {error})") from None
    task = make_task(cfg)
    net = task.build_model()
    net.load_state_dict(state)
    info = {
        "checkpoint": str(path),
        "epoch": ckpt.get("epoch"),
        "step": ckpt.get("global_step"),
        "weights": "moving average" if prefix == "ema." else "trained",
    }
    return TrainedModel(net, cfg, task, info).to(device).eval()
