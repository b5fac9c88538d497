"""Checkpoints that never lose work.

* ``last.ckpt`` is written at the end of every epoch and where a run is stopped (Ctrl-C or
  SIGTERM: at the end of the batch in progress), always through a temporary file and a rename,
  so a kill at any moment leaves the previous complete file.
* ``best.ckpt`` is written when the monitored validation metric improves on the best score
  so far; that score travels inside every checkpoint (the callback's state), so it survives a
  resume, also of a run folder that was copied or moved.
* ``minutes_M.ckpt`` (``trainer.snapshot_minutes``) is written once, at the end of the first
  batch after M minutes of training: the run's learning curve against wall time.
* :func:`read_checkpoint` turns a truncated or corrupt file into a message that names it.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["CheckpointError", "RunCheckpoints", "RunInterrupted", "StopOnSignal", "read_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint file cannot be read; the message names it and says what to do."""


class RunInterrupted(SystemExit):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving ``last.ckpt``."""

    def __init__(self, signal_name: str):
        super().__init__(130 if signal_name == "SIGINT" else 143)
        self.signal_name = signal_name


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint (tensors and plain data only), with a clear error when it is
    missing, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or corrupt: {detail}); delete it and "
            f"use another checkpoint of the run (e.g. --checkpoint best), or train again"
        ) from None


class StopOnSignal:
    """While active, the first Ctrl-C asks training to stop at the end of the current batch
    (a second one stops at once). SIGTERM is handled by Lightning the same way (it raises at
    the end of the batch); both end in :class:`RunCheckpoints` saving ``last.ckpt``."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping at the end of this batch (last.ckpt will be saved); "
            "press Ctrl-C again to stop at once",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class RunCheckpoints(Checkpoint):
    """``last.ckpt`` and ``best.ckpt`` of a run folder; see the module docstring. (A
    ``Checkpoint`` callback: Lightning runs it after the others, once metrics are final.)"""

    def __init__(
        self,
        folder: str | Path,
        monitor: str,
        goal: str,
        stop: StopOnSignal | None = None,
        snapshot_minutes: Sequence[float] = (),
    ) -> None:
        self.folder = Path(folder)
        self.snapshot_minutes = sorted(float(m) for m in snapshot_minutes)
        self.snapshots_done: list[float] = []
        self.monitor = monitor
        self.goal = goal
        self.stop = stop
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.saved_on_stop = False

    @property
    def state_key(self) -> str:
        return "RunCheckpoints"

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "snapshots_done": list(self.snapshots_done),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("monitor") == self.monitor:
            self.best_score = state.get("best_score")
            self.best_epoch = state.get("best_epoch")
        self.snapshots_done = list(state.get("snapshots_done", []))

    @property
    def last(self) -> Path:
        return self.folder / "last.ckpt"

    @property
    def best(self) -> Path:
        return self.folder / "best.ckpt"

    def _save(self, trainer: pl.Trainer, path: Path) -> None:
        """Atomic save: the trainer writes a temporary file (rank 0; every rank calls it),
        which then replaces ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)

    def _improved(self, value: float) -> bool:
        if self.best_score is None:
            return True
        return value < self.best_score if self.goal == "min" else value > self.best_score

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(f"val/{self.monitor}")
        if value is None:
            return
        value = float(value)
        if math.isfinite(value) and self._improved(value):
            self.best_score, self.best_epoch = value, trainer.current_epoch
            self._save(trainer, self.best)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.best_score is None and not self.best.exists():
            # No validation metric yet (e.g. validation every few epochs): best = last so far.
            self._save(trainer, self.best)
        self._save(trainer, self.last)

    @staticmethod
    def snapshot_name(minutes: float) -> str:
        return f"minutes_{minutes:g}.ckpt"

    def _save_snapshots(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Training time as Lightning's timer counts it (the one max_time stops on).
        elapsed = getattr(pl_module, "_elapsed", lambda: 0.0)() / 60.0
        for minutes in self.snapshot_minutes:
            if minutes <= elapsed and minutes not in self.snapshots_done:
                self.snapshots_done.append(minutes)  # before saving: a resume skips it
                self._save(trainer, self.folder / self.snapshot_name(minutes))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.snapshot_minutes:
            self._save_snapshots(trainer, pl_module)
        if self.stop is not None and self.stop.requested:
            self._save_on_stop(trainer)
            raise RunInterrupted("SIGINT")

    def _save_on_stop(self, trainer: pl.Trainer) -> None:
        if trainer.world_size == 1 and not self.saved_on_stop:
            self._save(trainer, self.last)
            self.saved_on_stop = True

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        # SIGTERM: Lightning raises between two batches, the state is complete: save it.
        # (A second Ctrl-C or any other error may strike mid-step: keep the last good file.)
        if isinstance(exception, SIGTERMException) and not isinstance(exception, RunInterrupted):
            self._save_on_stop(trainer)
