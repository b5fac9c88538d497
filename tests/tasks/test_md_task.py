"""The md task: energies and forces of trajectories, trained end to end on tiny EMT data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("ase")
import ase.io  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

import tfn.train  # noqa: E402
from tfn.ase import TFNCalculator  # noqa: E402
from tfn.cli import main  # noqa: E402
from tfn.models import EnergyModel  # noqa: E402

TINY = [
    "data.num_train=16",
    "data.num_val=4",
    "data.num_test=4",
    "data.batch_size=4",
    "model.irreps_hidden=8x0e+4x1o",
    "model.num_layers=1",
    "model.cutoff=3.0",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
]


def _frames(base, n: int, seed: int, amplitude: float = 0.08):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += amplitude * rng.standard_normal(atoms.positions.shape)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def ethanol_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ethanol.extxyz"
    ase.io.write(path, _frames(molecule("CH3CH2OH"), 24, seed=0))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ethanol_file):
    run = tmp_path_factory.mktemp("runs") / "md"
    cfg = {"data": {"name": "md", "path": str(ethanol_file)}}
    result = tfn.train.train(cfg, TINY, out=run, progress="none")
    return run, result


def test_trains_with_force_metrics_and_a_resolved_config(trained):
    run, result = trained
    m = result.metrics["metrics"]
    for key in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse"):
        assert np.isfinite(m[f"test/{key}"]) and m[f"test/{key}"] > 0
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "val/forces_mae" in header  # forces (gradients) in validation too
    text = (run / "config.yaml").read_text()
    assert "- H\n  - C\n  - O" in text  # the species, resolved from the data into the config
    assert (run / "plots" / "predictions.png").is_file()


def test_load_and_calculator_from_the_run_folder(trained, ethanol_file):
    run, _ = trained
    loaded = tfn.train.load(run)
    assert isinstance(loaded.net, EnergyModel) and loaded.net.species == ["H", "C", "O"]
    # the fitted statistics travel with the weights
    assert loaded.net.atomic_energies["C"] != 0.0 and loaded.net.num_neighbors > 1
    frame = ase.io.read(ethanol_file, 0)
    frame.calc = TFNCalculator(run)
    forces = frame.get_forces()
    direct = loaded.net(
        torch.as_tensor(frame.numbers), torch.as_tensor(frame.positions, dtype=torch.float32)
    )
    np.testing.assert_allclose(forces, direct["forces"].detach().double().numpy(), atol=1e-5)
    assert TFNCalculator(loaded).get_potential_energy(frame) == pytest.approx(
        frame.get_potential_energy(), rel=1e-6
    )


@pytest.mark.parametrize("weights", [["data.forces_weight=0"], ["data.energy_weight=0"]])
def test_energy_only_and_force_only(tmp_path, ethanol_file, weights):
    cfg = {"data": {"name": "md", "path": str(ethanol_file)}}
    over = [o for o in TINY if "max_epochs" not in o] + ["trainer.max_epochs=1", *weights]
    result = tfn.train.train(cfg, over, out=tmp_path / "run", progress="none")
    assert np.isfinite(result.metrics["metrics"]["test/energy_mae"])


def test_periodic_data_and_float64(tmp_path):
    path = tmp_path / "copper.extxyz"
    ase.io.write(path, _frames(bulk("Cu", "fcc", a=3.6, cubic=True), 24, seed=1, amplitude=0.05))
    cfg = {"data": {"name": "md", "path": str(path)}}
    over = [o for o in TINY if "max_epochs" not in o] + ["trainer.max_epochs=1", "dtype=float64"]
    result = tfn.train.train(cfg, over, out=tmp_path / "run", progress="none")
    assert np.isfinite(result.metrics["metrics"]["test/forces_mae"])
    atoms = ase.io.read(path, 0)
    atoms.calc = TFNCalculator(tmp_path / "run")
    assert atoms.get_stress().shape == (6,)


def test_bad_data_is_one_line(tmp_path, ethanol_file, capsys):
    missing = tmp_path / "nope.extxyz"
    code = main(["train", "--out", str(tmp_path / "r1"), *_config(tmp_path, missing), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "nope.extxyz" in err and err.count("\n") == 1
    assert not (tmp_path / "r1").exists()
    code = main(
        [
            "train",
            "--out",
            str(tmp_path / "r2"),
            *_config(tmp_path, ethanol_file),
            *TINY,
            "data.num_train=100",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "24" in err and not (tmp_path / "r2").exists()


def _config(tmp_path, data):
    path = tmp_path / "md.yaml"
    path.write_text(f"data:\n  name: md\n  path: {data}\n")
    return [str(path)]


def test_metrics_json_is_valid(trained):
    run, _ = trained
    assert json.loads((run / "metrics.json").read_text())["dataset"] == "md"


def test_md_command_with_the_trained_model(trained, ethanol_file, tmp_path, capsys):
    run, _ = trained
    start = tmp_path / "start.xyz"
    ase.io.write(start, ase.io.read(ethanol_file, 0))
    traj = tmp_path / "traj.extxyz"
    args = ["md", str(run), "--atoms", str(start), "--steps", "20", "--interval", "5"]
    assert main([*args, "--out", str(traj), "--no-progress", "--timestep", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "steps/s" in out and "drift" in out
    assert len(ase.io.read(traj, ":")) == 5  # the start and every 5 steps
    log = (tmp_path / "traj.log.csv").read_text().splitlines()
    assert log[0].startswith("step,time_fs,epot_eV") and len(log) == 6
    langevin = tmp_path / "nvt.extxyz"
    assert (
        main(
            [
                *args,
                "--out",
                str(langevin),
                "--ensemble",
                "langevin",
                "--temperature",
                "500",
                "--no-progress",
            ]
        )
        == 0
    )
    # bad input: one line
    assert (
        main(
            [
                "md",
                str(run),
                "--atoms",
                str(tmp_path / "none.xyz"),
                "--steps",
                "3",
                "--out",
                str(traj),
            ]
        )
        == 2
    )
    assert "none.xyz" in capsys.readouterr().err
    nacl = tmp_path / "nacl.xyz"
    ase.io.write(nacl, ase.Atoms("NaCl", positions=[[0, 0, 0], [2.5, 0, 0]]))
    assert main(["md", str(run), "--atoms", str(nacl), "--steps", "3", "--out", str(traj)]) == 2
    assert "'Cl', 'Na'" in capsys.readouterr().err


def test_md_stability_benchmark_script(trained, ethanol_file, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "md_stability.py"
    spec = importlib.util.spec_from_file_location("md_stability", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run, _ = trained
    start = tmp_path / "start.xyz"
    ase.io.write(start, ase.io.read(ethanol_file, 0))
    args = [str(run), "--atoms", str(start), "--nve-ps", "0.005", "--langevin-ps", "0.005"]
    summary = script.main([*args, "--interval", "5", "--out", str(tmp_path / "out")])
    assert summary["force_fd_max_error_eV_A"] < 1e-6  # float64 central differences
    for ensemble in ("nve", "langevin"):
        entry = summary[ensemble]
        assert entry["steps"] == 10 and entry["frames"] == 3
        assert entry["bonds"] == 8  # ethanol: 5 C-H/O-H, C-C, C-O and O-H
        assert entry["bond_ratio_min"] <= 1.0 <= entry["bond_ratio_max"]
        assert entry["mean_temperature_K"] > 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["natoms"] == 9
