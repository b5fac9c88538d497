"""3D Tetris (Thomas et al. 2018, sec. 4.1): classify 8 shapes of 4 cubes.

Trained on one orientation of each shape, tested on random rotations and translations. The
network outputs ``"7x0e + 1x0o"`` pooled over the points: logits ``s_i`` for the six achiral
shapes, and ``s_6 + p`` / ``s_6 - p`` for the chiral pair, ``p`` a pseudoscalar that changes
sign under reflection, so that the mirror image of a chiral shape is classified as its partner.
Metric: accuracy (``acc``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from tfn.data import Batch, PointCloud
from tfn.so3 import Irrep, Irreps
from tfn.tasks import register
from tfn.tasks.base import Task, TaskData, split_seed
from tfn.tasks.plotting import confusion_plot


class TetrisData(TaskData):
    """Tetris: 8 shapes of 4 cubes; train on one orientation each, test on random rotations."""

    name: Literal["tetris"] = "tetris"
    batch_size: int = Field(8, gt=0)
    train_repeat: int = Field(32, gt=0, description="copies of the 8 training shapes per epoch")
    num_val_rotations: int = Field(64, gt=0, description="validation clouds (rotated shapes)")
    num_rotations: int = Field(4000, gt=0, description="test clouds (rotated shapes)")
    translate: float = Field(2.0, ge=0, description="size of the random test translations")
    eval_batch_size: int = Field(512, gt=0)


@register
class TetrisTask(Task):
    name = "tetris"
    Data = TetrisData
    irreps_in = "1x0e"
    irreps_out = "7x0e + 1x0o"
    model_defaults = {"pool": "sum", "num_layers": 2}
    # Accuracy saturates at 100% early; the loss still ranks checkpoints.
    monitor = "loss"
    monitor_goal = "min"
    paper = "100% test accuracy on randomly rotated shapes"
    progress_metrics = ("acc",)
    curve_metrics = ("acc",)

    def __init__(self, cfg):
        super().__init__(cfg)
        from tfn.datasets import TETRIS_SHAPES

        names = list(TETRIS_SHAPES)
        self.class_names = names
        self.chiral = (names.index("chiral_1"), names.index("chiral_2"))
        achiral = [i for i in range(len(names)) if i not in self.chiral]
        # Logit i <- scalar channel; the chiral pair shares the last scalar, +-p.
        self._scalar_of = {c: j for j, c in enumerate(achiral)}
        self._scalar_of[self.chiral[0]] = len(achiral)
        self._scalar_of[self.chiral[1]] = len(achiral)
        self.partner = list(range(len(names)))
        self.partner[self.chiral[0]], self.partner[self.chiral[1]] = self.chiral[1], self.chiral[0]
        # Where the scalars and the pseudoscalar sit in the flat output, from the irreps.
        irreps = Irreps(self.irreps_out)
        slices = irreps.slices()
        self.scalar_slice = next(s for s, (_, ir) in zip(slices, irreps) if ir == Irrep(0, 1))
        self.pseudoscalar_index = next(
            s.start for s, (_, ir) in zip(slices, irreps) if ir == Irrep(0, -1)
        )

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model.pool is None:
            raise ValueError("model.pool: tetris predicts one output per cloud; use sum or mean")

    def fixed_model_arguments(self):
        return {"irreps_in": self.irreps_in, "irreps_out": self.irreps_out}

    # data ------------------------------------------------------------------------------------
    def _clouds(self, split: str, **kw) -> list[PointCloud]:
        from tfn.datasets import tetris

        return tetris(split=split, dtype=self.dtype, translate=self.data.translate, **kw)

    def train_set(self) -> list[PointCloud]:
        return self._clouds("train", seed=self.cfg.seed) * self.data.train_repeat

    def val_sets(self) -> dict[str, list[PointCloud]]:
        n = self.data.num_val_rotations
        return {"val": self._clouds("test", num_rotations=n, seed=split_seed(self, 1))}

    def test_sets(self) -> dict[str, list[PointCloud]]:
        n = self.data.num_rotations
        return {"test": self._clouds("test", num_rotations=n, seed=split_seed(self, 2))}

    # prediction ------------------------------------------------------------------------------
    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Class logits ``[clouds, 8]`` from the pooled ``7x0e + 1x0o`` output."""
        s = out[..., self.scalar_slice]
        p = out[..., self.pseudoscalar_index : self.pseudoscalar_index + 1]
        cols = []
        for c in range(len(self.class_names)):
            j = self._scalar_of[c]
            col = s[..., j : j + 1]
            if c == self.chiral[0]:
                col = col + p
            elif c == self.chiral[1]:
                col = col - p
            cols.append(col)
        return torch.cat(cols, dim=-1)

    def forward(self, model, batch: Batch) -> torch.Tensor:
        return self.logits(model(batch.pos, batch.features, batch.batch))

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

    # test-time checks and plots --------------------------------------------------------------
    def extra_test_metrics(self, model, device) -> dict[str, float]:
        """Mirror the test shapes (``tfn.datasets.mirror``: x -> -x, chiral labels swapped).

        ``mirror_flips_chirality``: fraction of chiral test shapes whose mirror image is
        predicted as the partner of the class predicted for the shape itself.
        ``mirror_acc``: accuracy on all mirrored test shapes (the chiral labels swapped).
        ``mirror_pseudoscalar_residual``: max ``|p(mirror x) + p(x)|`` / max ``|p|``, which
        is 0 for an exactly O(3)-equivariant network.
        """
        from tfn.datasets import mirror

        clouds = self.test_sets()["test"]
        mirrored = [mirror(c) for c in clouds]
        res: dict[str, list[torch.Tensor]] = {k: [] for k in ("lo", "lm", "po", "pm", "so", "sm")}
        bs = self.data.eval_batch_size
        with torch.no_grad():
            for i in range(0, len(clouds), bs):
                for src, tag in ((clouds, "o"), (mirrored, "m")):
                    b = self.collate(src[i : i + bs]).to(device)
                    out = model(b.pos, b.features, b.batch)
                    res["p" + tag].append(self.logits(out).argmax(-1).cpu())
                    res["s" + tag].append(out[..., self.pseudoscalar_index].cpu())
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

    def plots(self, model, sets, out, device) -> dict[str, float]:
        preds, batches = self.run(model, sets["test"], device)
        true = torch.cat([b.targets["label"].long().cpu() for b in batches])
        predicted = torch.cat([p.argmax(-1).cpu() for p in preds])
        confusion_plot(
            true, predicted, self.class_names, out / "confusion.png", "tetris: rotated test shapes"
        )
        return {}
