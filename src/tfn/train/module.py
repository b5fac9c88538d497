"""Lightning wrappers: the network + task as a LightningModule, and the data as a DataModule."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler

from tfn.data import Batch, collate

from .config import Config, build_config
from .tasks import Task, get_task

__all__ = ["TFNModule", "TFNDataModule", "build_network"]


def build_network(cfg: Config, task: Task) -> torch.nn.Module:
    """The :class:`tfn.nn.TensorFieldNetwork` of a config (in the config's dtype)."""
    from tfn.nn import TensorFieldNetwork

    kwargs = {k: v for k, v in asdict(cfg.model).items() if v is not None}
    if kwargs.get("pool") == "none":
        kwargs["pool"] = None
    net = TensorFieldNetwork(task.irreps_in, task.irreps_out, **kwargs)
    return net.to(task.dtype)


def _apply_threads(cfg: Config) -> None:
    if cfg.num_threads is not None and torch.get_num_threads() != cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)


class TFNModule(pl.LightningModule):
    """A Tensor Field Network trained on one task. ``config`` is the plain dict of a
    :class:`~tfn.train.config.Config` (stored in the checkpoint's hyper-parameters)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = build_config(config)
        self.task = get_task(self.cfg)
        self.net = build_network(self.cfg, self.task)
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self._eval_names: list[str] = []
        #: metrics of the last validation epoch, {"val/acc": ...}
        self.last_metrics: dict[str, float] = {}

    def forward(self, pos: torch.Tensor, features: torch.Tensor, batch: torch.Tensor | None = None):
        return self.net(pos, features, batch)

    def setup(self, stage: str) -> None:
        from .runner import _quiet_lightning

        _quiet_lightning()  # again: ddp_spawn workers start with fresh warning filters
        _apply_threads(self.cfg)

    # training ---------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        pred = self.task.predict(self.net(batch.pos, batch.features, batch.batch), batch.batch)
        loss = self.task.loss(pred, batch)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch.num_clouds,
            sync_dist=True,
        )
        return loss

    # validation: metrics accumulated as sums, all-reduced at the end --------------------------
    def on_validation_epoch_start(self) -> None:
        self._sums = {}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self._eval_names[dataloader_idx] if self._eval_names else "val"
        pred = self.task.predict(self.net(batch.pos, batch.features, batch.batch), batch.batch)
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

    # optimiser ----------------------------------------------------------------------------------
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
            epochs = self.cfg.trainer.max_epochs
            floor = min(o.min_lr / o.lr, 1.0)

            def factor(epoch: int) -> float:
                t = min(epoch / max(epochs, 1), 1.0)
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=self.task.mode, factor=0.5, patience=5, min_lr=o.min_lr
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": sched,
                "interval": "epoch",
                "monitor": f"val/{self.task.monitor}",
            },
        }


class EpochShuffle(Sampler[int]):
    """Random order that depends only on ``(seed, epoch)``: a resumed run sees the same data
    order as an uninterrupted one (Lightning calls ``set_epoch``)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class TFNDataModule(pl.LightningDataModule):
    """Training set and validation sets of a task, generated from the config's seed."""

    def __init__(self, module: TFNModule):
        super().__init__()
        self.task = module.task
        self.cfg = module.cfg
        self._module = module
        self.train: list = []
        self.vals: dict[str, list] = {}

    def setup(self, stage: str) -> None:
        from .runner import _quiet_lightning

        _quiet_lightning()  # again: ddp_spawn workers start with fresh warning filters
        _apply_threads(self.cfg)
        if not self.train:
            self.train = self.task.train_set()
            self.vals = self.task.val_sets()
        self._module._eval_names = list(self.vals)

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int):
        return batch.to(device)

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning swaps in a DistributedSampler (seeded by the global seed).
            kwargs: dict[str, Any] = {"shuffle": True}
        else:
            kwargs = {"sampler": EpochShuffle(len(self.train), self.cfg.seed)}
        return DataLoader(
            self.train,
            batch_size=d.batch_size,
            collate_fn=collate,
            num_workers=d.num_workers,
            **kwargs,
        )

    def val_dataloader(self) -> list[DataLoader]:
        d = self.cfg.data
        return [
            DataLoader(
                v, batch_size=d.eval_batch_size, collate_fn=collate, num_workers=d.num_workers
            )
            for v in self.vals.values()
        ]
