"""The three experiments of the paper as tasks: data, readout, loss, metrics.

A :class:`Task` turns a config into data sets, the raw network output (flat irreps layout) into
a prediction, and predictions into a loss and metrics. Metrics are accumulated as sums (so that
they can be all-reduced across processes) and finalised into numbers at the end of an epoch.

* ``tetris``: 8 classes from ``"7x0e + 1x0o"`` (pooled): logits ``s_i`` for the achiral shapes,
  ``s_6 + p`` and ``s_6 - p`` for the chiral pair (``p`` the pseudoscalar). Metric: accuracy.
* ``gravity``: acceleration ``"1o"`` per point. Metrics: ``rel_error`` (mean over points of
  ``|pred - true| / |true|``) and ``rmse_ratio`` (``sqrt(sum |pred - true|^2 / sum |true|^2)``).
* ``inertia``: inertia tensor about the origin from ``"0e + 2e"`` (pooled), turned into a 3x3
  matrix with ``tfn.so3.CartesianTensor("ij=ji")``. Metrics: ``rel_error`` (mean over clouds of
  ``|P - T|_F / |T|_F``) and ``rmse_ratio``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from tfn.data import Batch, PointCloud

from .config import Config

__all__ = ["Task", "TetrisTask", "GravityTask", "InertiaTask", "get_task", "PAPER"]

#: What the paper (Thomas et al. 2018, section 4) reports, to print beside our numbers.
PAPER: dict[str, str] = {
    "tetris": "100% test accuracy on randomly rotated shapes",
    "gravity": "qualitatively correct radial function (learned R(r) ~ -1/r^2); no error number",
    "inertia": "qualitatively correct radial functions (~ 2/3 r^2 for l=0, ~ -r^2 for l=2); "
    "no error number",
}

Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _dtype(cfg: Config) -> torch.dtype:
    return torch.float64 if cfg.dtype == "float64" else torch.float32


def rotate_translate(
    clouds: list[PointCloud],
    seed: int,
    translate: float,
    vectors: tuple[str, ...] = (),
    matrices: tuple[str, ...] = (),
) -> list[PointCloud]:
    """Apply one random rotation and translation per cloud (deterministic in ``seed``).

    Positions become ``R x + t``; targets named in ``vectors`` (``[..., 3]``) become ``R v``,
    those in ``matrices`` (``[..., 3, 3]``) become ``R M R^T``.
    """
    from tfn.so3 import random_rotation

    if not clouds:
        return []
    g = torch.Generator().manual_seed(seed)
    dtype = clouds[0].pos.dtype
    R = random_rotation(len(clouds), generator=g, dtype=torch.float64)
    t = translate * (2 * torch.rand(len(clouds), 3, generator=g, dtype=torch.float64) - 1)
    out = []
    for i, c in enumerate(clouds):
        Ri = R[i].to(dtype)
        targets = dict(c.targets)
        for k in vectors:
            targets[k] = targets[k] @ Ri.T
        for k in matrices:
            targets[k] = Ri @ targets[k] @ Ri.T
        out.append(replace(c, pos=c.pos @ Ri.T + t[i].to(dtype), targets=targets))
    return out


class Task(ABC):
    """Base class; see the module docstring."""

    name: str = ""
    irreps_in: str = "1x0e"
    irreps_out: str = ""
    #: validation metric that picks the best checkpoint, and whether higher is better.
    monitor: str = "loss"
    mode: str = "min"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    # data ----------------------------------------------------------------------------------
    @abstractmethod
    def train_set(self) -> list[PointCloud]: ...

    @abstractmethod
    def val_sets(self) -> dict[str, list[PointCloud]]: ...

    @abstractmethod
    def test_sets(self) -> dict[str, list[PointCloud]]: ...

    # model output -> prediction -> loss/metrics ----------------------------------------------
    @abstractmethod
    def predict(self, out: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor: ...

    @abstractmethod
    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor: ...

    @abstractmethod
    def metric_sums(self, pred: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Additive statistics of one batch (summed over batches and processes)."""
        ...

    @abstractmethod
    def finalize(self, sums: dict[str, float]) -> dict[str, float]: ...

    def extra_test_metrics(self, net: Network, device: torch.device) -> dict[str, float]:
        """Task-specific checks run once on the test set (e.g. the mirror check)."""
        return {}

    # helpers ---------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return _dtype(self.cfg)

    def run(self, net: Network, clouds: list[PointCloud], device: torch.device | str = "cpu"):
        """Predictions and targets of ``clouds`` (batched by ``data.eval_batch_size``)."""
        from tfn.data import collate

        preds, batches = [], []
        bs = self.cfg.data.eval_batch_size
        with torch.no_grad():
            for i in range(0, len(clouds), bs):
                b = collate(clouds[i : i + bs]).to(device)
                preds.append(self.predict(net(b.pos, b.features, b.batch), b.batch))
                batches.append(b)
        return preds, batches

    def evaluate(
        self, net: Network, clouds: list[PointCloud], device: torch.device | str = "cpu"
    ) -> dict[str, float]:
        """Metrics (and loss) of ``net`` on ``clouds``."""
        sums: dict[str, float] = {}
        preds, batches = self.run(net, clouds, device)
        for p, b in zip(preds, batches):
            for k, v in self.metric_sums(p, b).items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return self.finalize(sums)


# ----------------------------------------------------------------------------------------------


class TetrisTask(Task):
    name = "tetris"
    irreps_in = "1x0e"
    irreps_out = "7x0e + 1x0o"
    # Accuracy saturates at 100% early; the loss still ranks checkpoints.
    monitor = "loss"
    mode = "min"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        from tfn.datasets import TETRIS_SHAPES

        names = list(TETRIS_SHAPES)
        self.class_names = names
        self.chiral = (names.index("chiral_1"), names.index("chiral_2"))
        # Logit i <- scalar channel index; the chiral pair shares the last scalar, +-p.
        achiral = [i for i in range(len(names)) if i not in self.chiral]
        self._scalar_of = {c: j for j, c in enumerate(achiral)}
        self._scalar_of[self.chiral[0]] = len(achiral)
        self._scalar_of[self.chiral[1]] = len(achiral)
        self.partner = list(range(len(names)))
        self.partner[self.chiral[0]], self.partner[self.chiral[1]] = self.chiral[1], self.chiral[0]

    def _clouds(self, split: str, **kw) -> list[PointCloud]:
        from tfn.datasets import tetris

        return tetris(split=split, dtype=self.dtype, translate=self.cfg.data.translate, **kw)

    def train_set(self) -> list[PointCloud]:
        clouds = self._clouds("train", seed=self.cfg.seed)
        return clouds * self.cfg.data.train_repeat

    def val_sets(self) -> dict[str, list[PointCloud]]:
        d = self.cfg.data
        return {
            "val": self._clouds("test", num_rotations=d.num_val_rotations, seed=d_seed(self, 1))
        }

    def test_sets(self) -> dict[str, list[PointCloud]]:
        d = self.cfg.data
        return {"test": self._clouds("test", num_rotations=d.num_rotations, seed=d_seed(self, 2))}

    def pseudoscalar(self, out: torch.Tensor) -> torch.Tensor:
        return out[..., 7]

    def predict(self, out: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
        s, p = out[..., :7], out[..., 7:8]
        cols = []
        for c in range(len(self.class_names)):
            col = s[..., self._scalar_of[c] : self._scalar_of[c] + 1]
            if c == self.chiral[0]:
                col = col + p
            elif c == self.chiral[1]:
                col = col - p
            cols.append(col)
        return torch.cat(cols, dim=-1)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred, batch.targets["label"].long())

    def metric_sums(self, pred: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        label = batch.targets["label"].long()
        n = torch.tensor(float(label.numel()))
        return {
            "loss": F.cross_entropy(pred, label, reduction="sum").detach(),
            "correct": (pred.argmax(-1) == label).sum().to(n),
            "count": n,
        }

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums.get("count", 0.0), 1.0)
        return {"loss": sums["loss"] / n, "acc": sums["correct"] / n}

    def extra_test_metrics(self, net: Network, device: torch.device | str) -> dict[str, float]:
        """Mirror the test shapes (``tfn.datasets.mirror``: x -> -x, chiral labels swapped).

        ``mirror_flips_chirality``: fraction of chiral test shapes whose mirror image is
        predicted as the partner of the class predicted for the shape itself.
        ``mirror_acc``: accuracy on all mirrored test shapes (the chiral labels swapped).
        ``mirror_pseudoscalar_residual``: max ``|p(mirror x) + p(x)|`` / max ``|p|``, which
        is 0 for an exactly O(3)-equivariant network.
        """
        from tfn.data import collate
        from tfn.datasets import mirror

        clouds = self.test_sets()["test"]
        mirrored = [mirror(c) for c in clouds]
        bs = self.cfg.data.eval_batch_size
        res: dict[str, list[torch.Tensor]] = {k: [] for k in ("lo", "lm", "po", "pm", "so", "sm")}
        with torch.no_grad():
            for i in range(0, len(clouds), bs):
                for src, tag in ((clouds, "o"), (mirrored, "m")):
                    b = collate(src[i : i + bs]).to(device)
                    out = net(b.pos, b.features, b.batch)
                    res["p" + tag].append(self.predict(out, b.batch).argmax(-1).cpu())
                    res["s" + tag].append(self.pseudoscalar(out).cpu())
                    res["l" + tag].append(b.targets["label"].long().cpu())
        r = {k: torch.cat(v) for k, v in res.items()}
        partner = torch.tensor(self.partner)
        chiral = (r["lo"] == self.chiral[0]) | (r["lo"] == self.chiral[1])
        flips = (r["pm"][chiral] == partner[r["po"][chiral]]).double().mean().item()
        mirror_acc = (r["pm"] == r["lm"]).double().mean().item()
        resid = (r["sm"] + r["so"]).abs().max() / r["so"].abs().max().clamp_min(1e-30)
        return {
            "mirror_flips_chirality": flips,
            "mirror_acc": mirror_acc,
            "mirror_pseudoscalar_residual": resid.item(),
        }


def d_seed(task: Task, k: int) -> int:
    """Seed of the ``k``-th generated data set of a run (0: train, 1: val, 2: test, ...)."""
    return task.cfg.seed * 1000 + k


class _RegressionTask(Task):
    monitor = "rel_error"
    mode = "min"
    target = ""
    #: dimensions of one target item (summed in the norms): (-1,) for vectors, (-2, -1) matrices
    item_dims: tuple[int, ...] = (-1,)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        # Relative squared error of the batch: scale-free, so that no target scale is needed.
        y = batch.targets[self.target]
        return (pred - y).pow(2).sum() / y.pow(2).sum().clamp_min(1e-12)

    def metric_sums(self, pred: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        y = batch.targets[self.target]
        err = (pred - y).pow(2).sum(self.item_dims)
        ref = y.pow(2).sum(self.item_dims)
        rel = err.sqrt() / ref.sqrt().clamp_min(1e-12)
        return {
            "rel_error_sum": rel.sum().detach(),
            "count": torch.tensor(float(rel.numel())),
            "sq_error": err.sum().detach(),
            "sq_norm": ref.sum().detach(),
        }

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        ratio = sums["sq_error"] / max(sums["sq_norm"], 1e-30)
        return {
            "loss": ratio,
            "rel_error": sums["rel_error_sum"] / max(sums["count"], 1.0),
            "rmse_ratio": ratio**0.5,
        }


class GravityTask(_RegressionTask):
    name = "gravity"
    irreps_in = "1x0e"
    irreps_out = "1x1o"
    target = "acceleration"
    item_dims = (-1,)

    def _clouds(self, n: int, lo: int, hi: int, seed: int) -> list[PointCloud]:
        from tfn.datasets import gravity

        d = self.cfg.data
        return gravity(
            n,
            min_points=lo,
            max_points=hi,
            box=d.box,
            min_separation=d.min_separation,
            mass_range=tuple(d.mass_range),
            G=d.G,
            seed=seed,
            dtype=self.dtype,
        )

    def _eval(self, n: int, lo: int, hi: int, k: int) -> list[PointCloud]:
        clouds = self._clouds(n, lo, hi, d_seed(self, k))
        return rotate_translate(
            clouds, d_seed(self, k + 100), self.cfg.data.translate, vectors=(self.target,)
        )

    def train_set(self) -> list[PointCloud]:
        d = self.cfg.data
        return self._clouds(d.num_train, d.min_points, d.max_points, d_seed(self, 0))

    def val_sets(self) -> dict[str, list[PointCloud]]:
        d = self.cfg.data
        return {
            "val": self._eval(d.num_val, d.min_points, d.max_points, 1),
            "val_large": self._eval(d.num_large, d.large_min_points, d.large_max_points, 3),
        }

    def test_sets(self) -> dict[str, list[PointCloud]]:
        d = self.cfg.data
        return {
            "test": self._eval(d.num_test, d.min_points, d.max_points, 2),
            "test_large": self._eval(d.num_large, d.large_min_points, d.large_max_points, 4),
        }

    def predict(self, out: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
        return out


class InertiaTask(_RegressionTask):
    name = "inertia"
    irreps_in = "1x0e"
    irreps_out = "1x0e + 1x2e"
    target = "inertia"
    item_dims = (-2, -1)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        from tfn.so3 import CartesianTensor

        self.cartesian = CartesianTensor("ij=ji")

    def _clouds(self, n: int, k: int) -> list[PointCloud]:
        from tfn.datasets import inertia

        d = self.cfg.data
        return inertia(
            n, num_points=d.num_points, box=d.box, seed=d_seed(self, k), dtype=self.dtype
        )

    def _eval(self, n: int, k: int) -> list[PointCloud]:
        return rotate_translate(
            self._clouds(n, k),
            d_seed(self, k + 100),
            self.cfg.data.translate,
            matrices=("inertia",),
        )

    def train_set(self) -> list[PointCloud]:
        return self._clouds(self.cfg.data.num_train, 0)

    def val_sets(self) -> dict[str, list[PointCloud]]:
        return {"val": self._eval(self.cfg.data.num_val, 1)}

    def test_sets(self) -> dict[str, list[PointCloud]]:
        return {"test": self._eval(self.cfg.data.num_test, 2)}

    def predict(self, out: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.data.readout == "origin":
            out = out[first_points(batch, out.shape[0], out.device)]
        return self.cartesian.to_cartesian(out)


def first_points(batch: torch.Tensor | None, n: int, device) -> torch.Tensor:
    """Index of the first point of each cloud (``batch`` sorted; ``None`` = one cloud)."""
    if batch is None:
        return torch.zeros(1, dtype=torch.long, device=device)
    start = torch.ones(n, dtype=torch.bool, device=device)
    start[1:] = batch[1:] != batch[:-1]
    return torch.nonzero(start).reshape(-1)


TASKS: dict[str, type[Task]] = {
    "tetris": TetrisTask,
    "gravity": GravityTask,
    "inertia": InertiaTask,
}


def get_task(cfg: Config) -> Task:
    return TASKS[cfg.data.name](cfg)
