"""DDP: two CPU processes (gloo) train the same model and end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from train_helpers import TINY, config_path

import tfn.train
from tfn.train.distributed import params_hash


@pytest.mark.parametrize("strategy", ["ddp_spawn"])
def test_two_processes_agree_on_final_weights(tmp_path, strategy):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "tfn.cli",
        "train",
        str(config_path("tetris")),
        *TINY["tetris"],
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"trainer.strategy={strategy}",
        "num_threads=1",
        "--out",
        str(run),
        "--progress",
        "none",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [json.loads((run / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["global_step"] == ranks[1]["global_step"] > 0
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    # the saved checkpoint holds those weights, and the run was evaluated once (rank 0)
    assert params_hash(tfn.train.load(run, "last")) == ranks[0]["sha256"]
    assert json.loads((run / "metrics.json").read_text())["dataset"] == "tetris"
    assert "test/acc" in proc.stdout
