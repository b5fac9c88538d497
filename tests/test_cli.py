"""The ``tfn`` command line: train / evaluate / demo entry points and their error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfn.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = [
    "trainer.max_epochs=1",
    "data.train_repeat=1",
    "data.num_val_rotations=8",
    "data.num_rotations=16",
    "model.num_layers=2",
    "model.irreps_hidden=4x0e+2x0o+2x1o+2x1e",
]


def test_console_script_help():
    proc = subprocess.run(
        [sys.executable, "-m", "tfn.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for command in ("train", "evaluate", "demo"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", str(CONFIGS / "tetris.yaml"), "model.num_layer=2"], "model.num_layers"),
        (["train", str(CONFIGS / "tetris.yaml"), "trainer.max_epochs=ten"], "expected int"),
        (["train", str(CONFIGS / "tetris.yaml"), "data.name=tetrs"], "unknown dataset 'tetrs'"),
        (["train", str(CONFIGS / "tetris.yaml"), "max_epochs"], "key=value"),
        (["train", "no/such/config.yaml"], "config file not found"),
        (["train"], "missing CONFIG.yaml"),
        (["train", "trainer.max_epochs=3"], "missing CONFIG.yaml"),
        (["train", "--resume", "no/such/run"], "not a run folder"),
        (["evaluate", "no/such/run"], "no checkpoint"),
    ],
)
def test_errors_are_one_clear_line(args, expected, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_train_then_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(CONFIGS / "tetris.yaml"), *TINY, "--out", str(run), "--progress", "lines"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "test/acc" in out and "paper: 100%" in out
    first = json.loads((run / "metrics.json").read_text())

    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "test/mirror_flips_chirality" in out
    again = json.loads((run / "metrics.json").read_text())
    assert again["metrics"]["test/acc"] == first["metrics"]["test/acc"]
    assert again["checkpoint"] == "best.ckpt"

    # a second `train` into the same folder is refused with a pointer to --resume
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_data_md_command(tmp_path, capsys):
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    import ase.io

    out = tmp_path / "water.extxyz"
    args = ["data", "md", "O", "--frames", "3", "--stride", "2", "--equilibration", "4"]
    assert main([*args, "--seed", "1", "--out", str(out), "--no-progress"]) == 0
    frames = ase.io.read(out, ":")
    assert len(frames) == 3 and frames[0].get_forces().shape == (3, 3)
    assert main([*args, "--seed", "2", "--out", str(out), "--no-progress"]) == 2  # other args
    assert "seed" in capsys.readouterr().err
    assert (
        main(
            ["data", "md", "not-a-molecule((", "--frames", "1", "--out", str(tmp_path / "x.extxyz")]
        )
        == 2
    )
