"""A few training steps of every config, the run folder, loading, resume and repeatability."""

from __future__ import annotations

import csv
import json

import lightning.pytorch as pl
import pytest
import torch
from train_helpers import TINY, config_path

import tfn.train
from tfn.data import collate
from tfn.train.config import ConfigError
from tfn.train.distributed import params_hash


def _epochs(run_dir, key):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r.get(key) not in (None, "")]


@pytest.mark.parametrize("name", ["tetris", "gravity", "inertia"])
def test_every_config_trains_a_few_steps(tmp_path, name):
    run = tmp_path / name
    result = tfn.train.train(config_path(name), TINY[name], out=run, progress="none")
    assert result.run_dir == run
    for f in ("config.yaml", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "metrics.csv"):
        assert (run / f).is_file(), f
    assert (run / "plots" / "learning_curves.png").stat().st_size > 0
    task_plot = "confusion.png" if name == "tetris" else "predictions.png"
    assert (run / "plots" / task_plot).is_file()
    if name != "tetris":
        assert (run / "plots" / "radial.png").is_file()

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == name and metrics["checkpoint"] == "best.ckpt"
    m = metrics["metrics"]
    if name == "tetris":
        assert 0.0 <= m["test/acc"] <= 1.0 and m["test/num_clouds"] == 16
        # exactly O(3)-equivariant: mirroring flips the pseudoscalar, so it swaps chirality
        assert m["test/mirror_pseudoscalar_residual"] < 1e-4
        assert m["test/mirror_flips_chirality"] == 1.0
    else:
        assert m["test/rel_error"] >= 0 and m["test/rmse_ratio"] >= 0
    if name == "gravity":
        assert "test_large/rel_error" in m and "val_large/rel_error" in _header(run)
    assert result.metrics["metrics"] == m

    # tfn.load: the best checkpoint in eval mode, callable as model(pos, features, batch)
    model = tfn.train.load(run)
    assert not model.training
    task = model.task
    batch = collate(task.test_sets()["test"][:3])
    out = model(batch.pos, batch.features, batch.batch)
    n = 3 if name == "tetris" else batch.num_points  # inertia: read at the origin point
    assert out.shape == (n, {"tetris": 8, "gravity": 3, "inertia": 6}[name])
    pred = model.predict(batch.pos, batch.features, batch.batch)
    assert pred.shape == {"tetris": (3, 8), "gravity": (n, 3), "inertia": (3, 3, 3)}[name]


def _header(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return next(csv.reader(f))


def test_same_seed_same_weights_and_float64(tmp_path):
    over = TINY["tetris"] + ["trainer.max_epochs=1", "dtype=float64"]
    a = tfn.train.train(config_path("tetris"), over, out=tmp_path / "a", progress="none")
    b = tfn.train.train(config_path("tetris"), over, out=tmp_path / "b", progress="none")
    ma, mb = tfn.train.load(a.run_dir, "last"), tfn.train.load(b.run_dir, "last")
    assert next(ma.parameters()).dtype == torch.float64
    assert params_hash(ma) == params_hash(mb)
    c = tfn.train.train(
        config_path("tetris"), over + ["seed=1"], out=tmp_path / "c", progress="none"
    )
    assert params_hash(tfn.train.load(c.run_dir, "last")) != params_hash(ma)


class _Interrupt(pl.Callback):
    """Simulates Ctrl-C at the start of an epoch (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def test_resume_after_interruption(tmp_path):
    over = [o for o in TINY["tetris"] if not o.startswith("trainer.max_epochs")]
    over += ["trainer.max_epochs=4", "optim.scheduler=none"]
    run = tmp_path / "run"
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after KeyboardInterrupt
        tfn.train.train(
            config_path("tetris"), over, out=run, callbacks=[_Interrupt(2)], progress="none"
        )
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # epochs 0 and 1 done, nothing lost
    assert not (run / "metrics.json").exists()

    # starting a new run in the same folder is refused; --resume continues it
    with pytest.raises(ConfigError, match="--resume"):
        tfn.train.train(config_path("tetris"), over, out=run)
    result = tfn.train.train(resume=run, progress="none")
    assert (run / "metrics.json").is_file() and result.metrics is not None
    assert sorted(set(_epochs(run, "val/loss"))) == [0, 1, 2, 3]
    assert sorted(_epochs(run, "val/loss")) == [0, 1, 2, 3]  # no epoch twice after merging
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3

    # the interrupted-and-resumed run ends with the same weights as an uninterrupted one
    ref = tfn.train.train(config_path("tetris"), over, out=tmp_path / "ref", progress="none")
    assert params_hash(tfn.train.load(run, "last")) == params_hash(
        tfn.train.load(ref.run_dir, "last")
    )

    # resume with a larger budget: training goes on from epoch 4
    tfn.train.train(resume=run, overrides=["trainer.max_epochs=5"], progress="none")
    assert sorted(set(_epochs(run, "val/loss"))) == [0, 1, 2, 3, 4]
    assert "max_epochs: 5" in (run / "config.yaml").read_text()


def test_resume_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a run folder"):
        tfn.train.train(resume=tmp_path)
    with pytest.raises(FileNotFoundError):
        tfn.train.load(tmp_path)


def test_moving_average_of_the_weights_is_evaluated_and_loaded(tmp_path):
    over = TINY["tetris"] + ["optim.ema_decay=0.5"]
    run = tmp_path / "ema"
    tfn.train.train(config_path("tetris"), over, out=run, progress="none")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ema = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("ema.")}
    raw = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # an average, not a copy
    model = tfn.train.load(run, "last")
    assert model.info["weights"] == "moving average"
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, ema[k]), k


def test_time_budget_with_a_cosine_over_wall_time(tmp_path):
    over = [o for o in TINY["tetris"] if "max_epochs" not in o]
    over += ["trainer.max_epochs=-1", "trainer.max_time=00:00:00:04", "optim.scheduler=cosine"]
    run = tmp_path / "timed"
    result = tfn.train.train(config_path("tetris"), over, out=run, progress="none")
    rows = list(csv.DictReader(open(run / "metrics.csv", newline="")))
    lrs = [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")]
    minutes = [float(r["time/train_minutes"]) for r in rows if r.get("time/train_minutes")]
    assert len(minutes) >= 2 and minutes == sorted(minutes) and minutes[-1] < 0.2
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] < lrs[0]  # decays with the elapsed time
    assert result.metrics is not None and (run / "checkpoints" / "last.ckpt").is_file()
