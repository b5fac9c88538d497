"""Several processes (DDP): the run folder they share and a check that they agree.

Lightning's ``ddp`` launcher starts the extra processes by re-running the command line; they
find the run folder of the first one in ``TFN_RUN_DIR`` and never write the folder's files
(config, metrics), only their own ``ddp/rank*.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import lightning.pytorch as pl
import torch

__all__ = ["RUN_DIR_ENV", "is_launched_child", "params_hash", "RankHash"]

RUN_DIR_ENV = "TFN_RUN_DIR"


def is_launched_child() -> bool:
    """True in the extra processes that Lightning's ``ddp`` launcher starts (rank > 0)."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def params_hash(module: torch.nn.Module) -> str:
    """SHA-256 of all parameters (in order, as float64 bytes)."""
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


class RankHash(pl.Callback):
    """With several processes, each rank writes ``ddp/rank{r}.json`` with a hash of its final
    weights (they must agree: DDP keeps the replicas identical)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
