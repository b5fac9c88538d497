"""The data of a run for Lightning: the task's sets, batched by the task, in an order that a
resumed run reproduces exactly, also when it resumes in the middle of an epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler

from tfn.tasks import Task

__all__ = ["EpochShuffle", "ResumableLoader", "TFNDataModule"]


class EpochShuffle(Sampler[int]):
    """A random order that depends only on ``(seed, epoch)``: a resumed run sees the same data
    order as an uninterrupted one (Lightning calls ``set_epoch``). :meth:`resume` skips the
    items an interrupted epoch already used."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0
        self._resume: tuple[int, int] | None = None  # (epoch, items to skip)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, skip: int) -> None:
        self._resume = (epoch, skip)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
        self._resume = None
        return iter(order)


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the epoch is saved in checkpoints (Lightning stores the
    ``state_dict`` of stateful loaders), so that a run stopped mid-epoch resumes with the very
    next batch. ``progress`` returns the number of batches the training loop has finished."""

    def __init__(self, *args: Any, progress: Callable[[], int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        done = self.progress() if self.progress is not None else 0
        return {"epoch": int(getattr(sampler, "epoch", 0)), "batches": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.sampler, EpochShuffle) and self.batch_size:
            self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)


class TFNDataModule(pl.LightningDataModule):
    """Training set and validation sets of a task (built once, in ``setup``)."""

    def __init__(self, task: Task, on_setup: Callable[[TFNDataModule], None] | None = None):
        super().__init__()
        self.task = task
        self.cfg = task.cfg
        self.on_setup = on_setup
        self.train: Sequence[Any] = []
        self.vals: dict[str, Sequence[Any]] = {}

    def setup(self, stage: str) -> None:
        if not self.train:
            self.train = self.task.train_set()
            self.vals = self.task.val_sets()
        if self.on_setup is not None:
            self.on_setup(self)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        return batch.to(device)

    def _finished_batches(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        # Batches whose optimiser step is done (a stop is saved at the end of a batch).
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning swaps in a DistributedSampler (seeded by the global seed).
            return DataLoader(
                self.train,
                batch_size=d.batch_size,
                collate_fn=self.task.collate,
                num_workers=d.num_workers,
                shuffle=True,
            )
        return ResumableLoader(
            self.train,
            batch_size=d.batch_size,
            collate_fn=self.task.collate,
            num_workers=d.num_workers,
            sampler=EpochShuffle(len(self.train), self.cfg.seed),
            progress=self._finished_batches,
        )

    def val_dataloader(self) -> list[DataLoader]:
        d = self.cfg.data
        return [
            DataLoader(
                v,
                batch_size=d.eval_batch_size,
                collate_fn=self.task.collate,
                num_workers=d.num_workers,
            )
            for v in self.vals.values()
        ]
