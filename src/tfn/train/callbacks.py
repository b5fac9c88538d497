"""Lightning callbacks of a run that only report (module level, so ``ddp_spawn`` can pickle)."""

from __future__ import annotations

import time

import lightning.pytorch as pl

__all__ = ["PrintProgress"]


class PrintProgress(pl.Callback):
    """One printed line per epoch: training loss, the task's progress metrics, elapsed time."""

    def __init__(self, metrics: tuple[str, ...] = ()) -> None:
        self.metrics = tuple(metrics)
        self.t0 = time.time()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t0 = time.time()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "-"
        parts = [f"epoch {trainer.current_epoch + 1:3d}/{total}"]
        if "train/loss_epoch" in m:
            parts.append(f"train loss {float(m['train/loss_epoch']):.4g}")
        for k, v in getattr(pl_module, "last_metrics", {}).items():
            if k.rsplit("/", 1)[-1] in self.metrics:
                parts.append(f"{k} {v:.4g}")
        parts.append(f"{time.time() - self.t0:6.1f} s")
        print("  ".join(parts), flush=True)
