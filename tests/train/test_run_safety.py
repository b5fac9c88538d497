"""Runs that never lose work: checkpoints, signals, resume, and a folder that a failure leaves
as it was."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from train_helpers import TINY, config_path

import tfn.train
from tfn.cli import main
from tfn.train.checkpoints import CheckpointError
from tfn.train.config import ConfigError
from tfn.train.distributed import params_hash
from tfn.train.files import atomic_write_text

# 8 batches per epoch, so that a run can be stopped in the middle of one.
OVER = [o for o in TINY["tetris"] if not o.startswith("trainer.max_epochs")] + [
    "data.train_repeat=4",
    "data.batch_size=4",
    "optim.scheduler=cosine",
    "trainer.max_epochs=3",
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_no_duplicate_rows(run: Path) -> None:
    keys = [
        (
            r["epoch"],
            r["step"],
            tuple(sorted(k for k, v in r.items() if v and k not in ("epoch", "step"))),
        )
        for r in _rows(run)
    ]
    dups = [k for k, c in Counter(keys).items() if c > 1]
    assert not dups, dups


class _Signal(pl.Callback):
    """Sends a signal to this process at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, signum: int, epoch: int, batch: int):
        self.signum, self.epoch, self.batch = signum, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class _RecordLast(pl.Callback):
    """The epoch stored in last.ckpt at the start of every epoch."""

    def __init__(self, folder: Path):
        self.folder, self.seen = folder, []

    def on_train_epoch_start(self, trainer, pl_module):
        last = self.folder / "checkpoints" / "last.ckpt"
        if last.exists():
            self.seen.append(torch.load(last, weights_only=True)["epoch"])


class _WorseMetric(pl.Callback):
    """Makes every validation of this run worse than any before."""

    def on_fit_start(self, trainer, pl_module):
        task = pl_module.task
        finalize = task.finalize
        task.finalize = lambda sums: {**finalize(sums), "loss": 1e9}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of OVER."""
    run = tmp_path_factory.mktemp("ref") / "run"
    tfn.train.train(config_path("tetris"), OVER, out=run, progress="none", evaluate_at_end=False)
    return run


def test_last_checkpoint_every_epoch_even_when_not_improving(tmp_path):
    run = tmp_path / "run"
    record = _RecordLast(run)
    tfn.train.train(
        config_path("tetris"),
        OVER,
        out=run,
        callbacks=[record, _WorseMetric()],
        progress="none",
        evaluate_at_end=False,
    )
    assert record.seen == [0, 1]  # written at the end of epochs 0 and 1 (and 2)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert not list(run.rglob("*.tmp")), "temporary files left behind"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_epoch_saves_and_resumes_exactly(tmp_path, reference, signum, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        tfn.train.train(
            config_path("tetris"), OVER, out=run, callbacks=[_Signal(signum, 1, 3)], progress="none"
        )
    assert stop.value.code == (130 if signum == signal.SIGINT else 143)
    assert "tfn train --resume" in capsys.readouterr().err
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1 and saved["global_step"] == 8 + 4  # nothing done was lost
    assert not (run / "metrics.json").exists()
    result = tfn.train.train(resume=run, progress="none", evaluate_at_end=False)
    assert result.run_dir == run
    # the stopped-and-resumed run ends with the same weights as an uninterrupted one
    assert params_hash(tfn.train.load(run, "last")) == params_hash(
        tfn.train.load(reference, "last")
    )
    _assert_no_duplicate_rows(run)
    ref_steps = sorted(r["step"] for r in _rows(reference))
    assert sorted(r["step"] for r in _rows(run)) == ref_steps


def test_best_keeps_its_score_across_resume_of_a_copied_run(tmp_path):
    first = tmp_path / "first"
    tfn.train.train(config_path("tetris"), OVER, out=first, progress="none", evaluate_at_end=False)
    best_before = (first / "checkpoints" / "best.ckpt").read_bytes()
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(first, moved)
    tfn.train.train(
        resume=moved,
        overrides=["trainer.max_epochs=5"],
        callbacks=[_WorseMetric()],
        progress="none",
        evaluate_at_end=False,
    )
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4
    # the two new, worse epochs did not replace the best model
    assert (moved / "checkpoints" / "best.ckpt").read_bytes() == best_before


def test_failed_resume_changes_nothing(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = _snapshot(run)
    with pytest.raises(ConfigError, match="model.irreps_hidden"):
        tfn.train.train(resume=run, overrides=["model.irreps_hidden=4x0q"])
    with pytest.raises(ConfigError, match="cannot build the model"):
        tfn.train.train(resume=run, overrides=["model.irreps_hidden=3x3o"])
    with pytest.raises(ConfigError, match="unknown config key"):
        tfn.train.train(resume=run, overrides=["trainer.max_epoks=9"])
    assert _snapshot(run) == before
    # a truncated last.ckpt: a message naming the file, and still nothing changed
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="last.ckpt"):
        tfn.train.train(resume=run)
    assert _snapshot(run) == before
    # without last.ckpt, resume says so (and which checkpoint it could use)
    last.unlink()
    with pytest.raises(ConfigError, match="no last.ckpt.*best.ckpt"):
        tfn.train.train(resume=run)


def test_resume_from_best_checkpoint(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "checkpoints" / "last.ckpt").unlink()
    tfn.train.train(resume=run, checkpoint="best", progress="none", evaluate_at_end=False)
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_corrupt_checkpoint_message_names_the_file(tmp_path, reference, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    best = run / "checkpoints" / "best.ckpt"
    best.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="best.ckpt"):
        tfn.train.load(run)
    assert main(["evaluate", str(run), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "best.ckpt" in err and "Traceback" not in err and err.count("\n") == 1


def test_build_errors_are_one_line_before_any_folder(tmp_path, capsys):
    for bad in ("model.irreps_hidden=4x0q", "model.irreps_hidden=3x3o", "model.lmax=-1"):
        out = tmp_path / bad.replace("=", "_")
        assert main(["train", str(config_path("tetris")), bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert not out.exists()


def test_out_refuses_files_and_foreign_folders(tmp_path, capsys):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert main(["train", str(config_path("tetris")), "--out", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["train", str(config_path("tetris")), "--out", str(foreign)]) == 2
    assert "not empty and not a run" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_overrides_anywhere_on_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = TINY["tetris"]
    args = [
        "train",
        "--out",
        str(run),
        tiny[0],
        str(config_path("tetris")),
        "--progress",
        "none",
        *tiny[1:],
    ]
    assert main(args) == 0
    assert "max_epochs: 2" in (run / "config.yaml").read_text()


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old\n")

    class Boom(Exception):
        pass

    from tfn.train.files import atomic_write

    def fail(f):
        f.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(path, fail)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "config.yaml"
    ]


def test_snapshots_by_training_time_are_evaluated_beside_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    # 1e-6 minutes pass within the first batch; 1e6 minutes never do.
    tfn.train.train(
        config_path("tetris"),
        OVER + ["trainer.snapshot_minutes=[1e-6, 1e6]"],
        out=run,
        progress="none",
        evaluate_at_end=False,
    )
    snapshot = run / "checkpoints" / "minutes_1e-06.ckpt"
    state = torch.load(snapshot, weights_only=True)
    assert state["global_step"] == 1  # saved once, after the first batch
    assert not (run / "checkpoints" / "minutes_1e+06.ckpt").exists()
    assert main(["evaluate", str(run), "--checkpoint", "minutes_1e-06", "--no-plots"]) == 0
    assert "metrics_minutes_1e-06.json" in capsys.readouterr().out
    assert (run / "metrics_minutes_1e-06.json").is_file()
    assert not (run / "metrics.json").exists()  # the run's own metrics are not overwritten
