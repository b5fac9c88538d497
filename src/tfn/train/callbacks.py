"""Lightning callbacks of a run (module level, so that ``ddp_spawn`` can pickle them)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning.pytorch as pl

__all__ = ["RankHash", "PrintProgress"]


class RankHash(pl.Callback):
    """With several processes, each rank writes ``ddp/rank{r}.json`` with a hash of its final
    weights (they must agree: DDP keeps the replicas identical)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from .runner import params_hash

        if trainer.world_size <= 1:
            return
        out = self.run_dir / "ddp"
        out.mkdir(parents=True, exist_ok=True)
        info = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "sha256": params_hash(pl_module),
            "global_step": trainer.global_step,
        }
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(info))


class PrintProgress(pl.Callback):
    """One printed line per epoch: training loss, validation metrics, elapsed time."""

    def __init__(self) -> None:
        self.t0 = time.time()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t0 = time.time()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1:3d}/{trainer.max_epochs}"]
        if "train/loss_epoch" in m:
            parts.append(f"train loss {float(m['train/loss_epoch']):.4f}")
        for k, v in getattr(pl_module, "last_metrics", {}).items():
            if k.endswith(("/acc", "/rel_error")):
                parts.append(f"{k} {v:.4f}")
        parts.append(f"{time.time() - self.t0:6.1f} s")
        print("  ".join(parts), flush=True)
