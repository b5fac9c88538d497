"""The Lightning module of a run: a task's model, trained on the task's loss.

The network is called only through ``task.forward(model, batch)``; validation runs with
gradients enabled when the task needs them (forces are derivatives of the energy).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from typing import Any

import lightning.pytorch as pl
import torch

from tfn.tasks import make_task
from tfn.train.config import build_config, config_to_dict

__all__ = ["TFNModule", "quiet_lightning", "apply_threads"]


def quiet_lightning() -> None:
    """Silence Lightning's chatter that is not about the run."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (
        ".*does not have many workers.*",
        ".*Checkpoint directory .* exists and is not empty.*",
        ".*The number of training batches .* is smaller than the logging interval.*",
        ".*Experiment logs directory .* exists.*",
        ".*You are using `torch.load` with `weights_only=False`.*",
        ".*Found .* module.* in eval mode at the start of training.*",
        ".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
        # validation metrics are all-reduced by hand before logging
        ".*when logging on epoch level in distributed setting.*",
        ".*Grad strides do not match bucket view strides.*",
        ".*You're resuming from a checkpoint that ended before the epoch ended.*",
    ):
        warnings.filterwarnings("ignore", message=msg)


def apply_threads(num_threads: int | None) -> None:
    if num_threads is not None and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def _seconds(max_time: str | None) -> float | None:
    """``DD:HH:MM:SS`` in seconds."""
    if max_time is None:
        return None
    days, hours, minutes, seconds = (int(x) for x in max_time.split(":"))
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


class TFNModule(pl.LightningModule):
    """A task's model and its training. ``config`` is the plain dict of a
    :class:`~tfn.train.config.Config` (stored in the checkpoint's hyper-parameters)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.cfg = build_config(config)
        self.task = make_task(self.cfg)
        self.net = self.task.build_model()
        # The moving average of the weights (optim.ema_decay): evaluated and loaded instead of
        # the raw weights; a submodule, so checkpoints (and resumes) carry it.
        self.ema: torch.nn.Module | None = None
        if self.cfg.optim.ema_decay is not None:
            self.ema = copy.deepcopy(self.net).requires_grad_(False)
        # After the build: a task may resolve options from its data (e.g. the species).
        self.save_hyperparameters({"config": config_to_dict(self.cfg)})
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self._eval_names: list[str] = []
        #: metrics of the last validation epoch, {"val/acc": ...}
        self.last_metrics: dict[str, float] = {}
        #: what prepare_model fitted from the training data (fresh runs only)
        self.fitted: dict[str, Any] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def _elapsed(self) -> float:
        """Seconds of training so far (Lightning's timer; 0 before it starts)."""
        from lightning.pytorch.callbacks import Timer

        trainer = self._trainer
        if trainer is None:
            return 0.0
        for callback in trainer.callbacks:
            if isinstance(callback, Timer):
                return float(callback.time_elapsed("train"))
        return 0.0

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validation and test use: the moving average if there is one."""
        return self.ema if self.ema is not None else self.net

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.optim.ema_decay
        # Warm-up as in NequIP/MACE: early on the average follows the weights closely.
        step = self.global_step
        decay = min(decay, (1 + step) / (10 + step))
        for avg, p in zip(self.ema.parameters(), self.net.parameters()):
            avg.lerp_(p.detach(), 1 - decay)
        for avg, b in zip(self.ema.buffers(), self.net.buffers()):
            avg.copy_(b)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self._update_ema()

    def setup(self, stage: str) -> None:
        quiet_lightning()  # again: ddp_spawn workers start with fresh warning filters
        apply_threads(self.cfg.num_threads)
        trainer = self._trainer
        datamodule = trainer.datamodule if trainer is not None else None
        if datamodule is not None:
            self._eval_names = list(getattr(datamodule, "vals", {}))
        # Statistics of the training data, fitted once for a new run (a resumed run restores
        # them with the weights).
        if stage == "fit" and trainer.ckpt_path is None and getattr(datamodule, "train", None):
            self.fitted = self.task.prepare_model(self.net, datamodule.train)
            if self.ema is not None:
                self.ema.load_state_dict(self.net.state_dict())

    # training ---------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        pred = self.task.forward(self.net, batch)
        loss = self.task.loss(pred, batch)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=self.task.batch_size_of(batch),
            sync_dist=True,
        )
        return loss

    # validation: metrics accumulated as sums, all-reduced at the end --------------------------
    def on_validation_epoch_start(self) -> None:
        self._sums = {}

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self._eval_names[dataloader_idx] if self._eval_names else "val"
        with torch.set_grad_enabled(self.task.needs_grad):
            pred = self.task.forward(self.evaluated, batch)
        acc = self._sums.setdefault(name, {})
        for k, v in self.task.metric_sums(pred, batch).items():
            v = v.detach().to(self.device, torch.float64)
            acc[k] = acc[k] + v if k in acc else v

    def on_validation_epoch_end(self) -> None:
        metrics: dict[str, float] = {}
        for name in sorted(self._sums):
            sums = self._sums[name]
            keys = sorted(sums)
            values = torch.stack([sums[k] for k in keys])
            if self.trainer.world_size > 1 and torch.distributed.is_initialized():
                torch.distributed.all_reduce(values)
            final = self.task.finalize({k: float(v) for k, v in zip(keys, values)})
            for k, v in final.items():
                metrics[f"{name}/{k}"] = v
        self.last_metrics = metrics
        if metrics:
            # Already reduced across processes: every rank logs the same numbers.
            monitor = f"val/{self.task.monitor}"
            for k, v in metrics.items():
                self.log(k, v, prog_bar=k == monitor, sync_dist=False)
            # Learning curves against wall time (a time budget is what a CPU user has).
            self.log("time/train_minutes", self._elapsed() / 60.0, sync_dist=False)

    # optimiser --------------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        params = self.net.parameters()
        if o.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        elif o.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=o.lr, momentum=0.9, weight_decay=o.weight_decay)
        if o.scheduler == "none":
            return opt
        if o.scheduler == "cosine":
            floor = min(o.min_lr / o.lr, 1.0)

            def cosine(t: float) -> float:
                t = min(max(t, 0.0), 1.0)
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

            epochs, budget = self.cfg.trainer.max_epochs, _seconds(self.cfg.trainer.max_time)
            if epochs > 0:  # the schedule spans trainer.max_epochs
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: cosine(epoch / epochs))
                interval = "epoch"
            elif budget is not None:
                # A wall-clock budget (trainer.max_time): the cosine follows the elapsed
                # training time, read from Lightning's timer (saved in checkpoints, so a
                # resumed run continues the same curve).
                sched = torch.optim.lr_scheduler.LambdaLR(
                    opt, lambda step: cosine(self._elapsed() / budget)
                )
                interval = "step"
            else:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=self.task.monitor_goal, factor=o.factor, patience=o.patience, min_lr=o.min_lr
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": sched,
                "interval": "epoch",
                "monitor": f"val/{self.task.monitor}",
            },
        }
