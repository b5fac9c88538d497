"""The qm9 task and PropertyModel: tiny runs end to end on a few dozen molecules, equivariance
of every readout (float64, 1e-10), the fixed split, predict_atoms, and bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

if importlib.util.find_spec("ase") is None or importlib.util.find_spec("qm9pack") is None:
    pytest.skip("QM9 tests need tfn[chem] (ase, qm9pack)", allow_module_level=True)

from ase import Atoms  # noqa: E402
from qm9_subset import FRAME_NOT_OK, REAL_SOURCE_DIR  # noqa: E402

import tfn.train  # noqa: E402
from tfn.cli import main  # noqa: E402
from tfn.data.atoms import AtomsData  # noqa: E402
from tfn.models import PropertyModel  # noqa: E402
from tfn.so3 import random_rotation  # noqa: E402
from tfn.tasks import make_task  # noqa: E402
from tfn.tasks.qm9 import QM9_TARGETS  # noqa: E402
from tfn.testing import Global, assert_equivariant  # noqa: E402
from tfn.train.config import ConfigError, build_config, load_yaml  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SPECIES = ["H", "C", "N", "O", "F"]
# 30 / 8 / the remaining 38 molecules of the subset, and a network of a few hundred weights
TINY = [
    "data.split_train=30",
    "data.split_val=8",
    "data.num_train=30",
    "data.num_val=8",
    "data.num_test=16",
    "data.batch_size=10",
    "model.irreps_hidden=8x0e+4x1o+2x2e",
    "model.num_layers=1",
    "model.cutoff=4.0",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
]


def _config(target: str, extra=()):
    return build_config({"data": {"name": "qm9", "target": target}}, [*TINY, *extra])


# ---------------------------------------------------------------------------- configs, split


def test_every_target_has_a_shipped_config():
    assert len(QM9_TARGETS) == 14
    for target in QM9_TARGETS:
        cfg = build_config(load_yaml(CONFIGS / f"qm9_{target}.yaml"))
        assert cfg.data.name == "qm9" and cfg.data.target == target


def test_the_test_molecules_do_not_depend_on_num_train(subset):
    small = make_task(_config("U0", ["data.num_train=10"]))._indices
    large = make_task(_config("U0", ["data.num_train=30"]))._indices
    np.testing.assert_array_equal(small["test"], large["test"])
    np.testing.assert_array_equal(small["train"], large["train"][:10])  # nested
    assert not set(large["train"]) & set(large["test"]) and not set(large["val"]) & set(
        large["test"]
    )
    # a random order of the part, not its smallest numbers (the smallest molecules)
    assert list(large["train"][:10]) != sorted(large["train"])[:10]


# ------------------------------------------------------------------------------ tiny runs


@pytest.mark.parametrize("target", ["U0", "gap", "mu", "r2", "mulliken_charges", "polarizability"])
def test_tiny_run_and_predict_atoms(subset, tmp_path, target):
    cfg = {"data": {"name": "qm9", "target": target}}
    result = tfn.train.train(cfg, TINY, out=tmp_path / "run", progress="none")
    m = result.metrics["metrics"]
    assert np.isfinite(m["test/mae"]) and m["test/rmse"] >= m["test/mae"] > 0
    for plot in ("predictions.png", "learning_curves.png"):
        assert (tmp_path / "run" / "plots" / plot).is_file()

    run = tfn.train.load(tmp_path / "run")
    task = run.task
    test = [subset[int(i)] for i in task._indices["test"]]
    pred = run.predict_atoms(test)
    one = run.predict_atoms(test[0])
    spec = QM9_TARGETS[target]
    if target == "mulliken_charges":
        errors = np.concatenate([p - a.arrays[target] for p, a in zip(pred[target], test)])
        assert all(abs(p.sum()) < 1e-5 for p in pred[target])  # neutral molecules
        np.testing.assert_allclose(one[target], pred[target][0], atol=1e-6)
    elif target == "polarizability":
        kept = [a for a in test if a.info["polarizability_frame_ok"]]
        tensors = run.predict_atoms(kept)[target]
        assert tensors.shape == (len(kept), 3, 3)
        np.testing.assert_allclose(tensors, tensors.transpose(0, 2, 1), atol=1e-5)
        eig = np.linalg.eigvalsh(tensors) - np.linalg.eigvalsh(
            np.stack([a.info[target] for a in kept])
        )
        assert np.abs(eig).mean() == pytest.approx(m["test/eigenvalue_mae"], rel=1e-4)
        assert one["alpha"] == pytest.approx(np.trace(one[target]) / 3)
        assert m["test/frames_dropped"] == len(test) - len(kept)
        return
    else:
        errors = pred[target] - np.array([a.info[target] for a in test])
        assert isinstance(one[target], float) and one[target] == pytest.approx(
            pred[target][0], rel=1e-6
        )
    # predict_atoms agrees with the evaluation, in the metric's units (meV for energies)
    assert spec.metric_factor * np.abs(errors).mean() == pytest.approx(m["test/mae"], rel=1e-4)
    if target == "mu":
        assert pred["dipole"].shape == (len(test), 3)
        norm = np.linalg.norm(pred["dipole"], axis=1)
        np.testing.assert_allclose(norm, pred["mu"], rtol=1e-6, atol=1e-8)


def test_polarizability_leaves_out_unreliable_frames(subset):
    task = make_task(_config("polarizability"))
    items = task.train_set() + task.val_sets()["val"] + task.test_sets()["test"]
    used = {int(i) for part in task._indices.values() for i in part}
    flagged = {i for i in used if not subset[i].info["polarizability_frame_ok"]}
    assert flagged <= set(FRAME_NOT_OK)  # water, at least
    assert sum(task.dropped.values()) == len(flagged) > 0
    assert len(items) == len(used) - len(flagged)


def test_extensive_references_are_least_squares_on_compositions(subset):
    task = make_task(_config("U0", ["dtype=float64"]))
    model = task.build_model()
    train = task.train_set()
    fitted = task.prepare_model(model, train)
    counts = model.species_counts([item.numbers for item in train])
    energies = torch.stack([item.targets["U0"] for item in train])
    shifts = torch.tensor([fitted["shifts"][s][0] for s in SPECIES], dtype=torch.float64)
    present = counts.sum(0) > 0
    solution = torch.linalg.lstsq(counts[:, present], energies[:, None]).solution[:, 0]
    np.testing.assert_allclose(shifts[present], solution, atol=2e-3)  # rounded to 1e-4
    # the reference of each molecule is the composition's sum, in float64
    batch = task.collate(train[:5])
    reference = model.reference(batch.numbers, batch.pos, batch.batch)[:, 0]
    torch.testing.assert_close(reference, counts[:5] @ model.output_shift[:, 0])


# --------------------------------------------------------------------------- equivariance


def _molecule(subset, number=1130, dtype=torch.float64):
    atoms = subset[number]
    return torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions, dtype=dtype)


def _model(readout: str, irreps: str) -> PropertyModel:
    torch.manual_seed(0)
    model = PropertyModel(
        SPECIES, irreps, readout, "8x0e + 4x1o + 4x1e + 2x2e", 2, cutoff=4.0
    ).double()
    shifts = {s: [0.1 * k - 0.2] * model.num_scalars for k, s in enumerate(SPECIES)}
    model.set_statistics(shifts=shifts, scale=0.7, num_neighbors=6.0)
    return model


@pytest.mark.parametrize(
    "readout, irreps, spec",
    [
        ("atom", "2x0e + 1x1o + 1x2e", "2x0e + 1x1o + 1x2e"),
        ("charges", "1x0e", "1x0e"),
        ("sum", "1x0e + 1x2e", Global("1x0e + 1x2e")),
        ("mean", "1x0e", Global("1x0e")),
        ("dipole", "1x0e + 1x1o", Global("1o")),
        ("spatial_extent", "2x0e", Global("0e")),
    ],
)
def test_every_readout_is_equivariant(subset, readout, irreps, spec):
    model = _model(readout, irreps)
    numbers, pos = _molecule(subset)
    errors = assert_equivariant(
        lambda z, p: model(z, p), ["point_index", "cartesian_points"], spec, [numbers, pos]
    )
    assert max(errors.values()) < 1e-10, errors
    # the prediction is the learned part plus the reference, whatever the readout
    full = model(numbers, pos)
    torch.testing.assert_close(
        full, model(numbers, pos, reference=False) + model.reference(numbers, pos)
    )


def _transforms(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for k, R in enumerate(random_rotation(4, generator=g, dtype=torch.float64)):
        R = R if k % 2 == 0 else -R  # rotations and reflections
        yield (
            R,
            3 * torch.randn(3, generator=g, dtype=torch.float64),
            torch.randperm(n, generator=g),
        )


@pytest.mark.parametrize("target", ["polarizability", "mu", "mulliken_charges"])
def test_task_outputs_transform_as_physics_says(subset, target):
    """Polarizability R A R^T, mu invariant, charges invariant (and permuted with the atoms),
    under rotations, reflections, translations and permutations of the molecule."""
    task = make_task(_config(target, ["dtype=float64", "model.irreps_hidden=8x0e+4x1o+2x1e+2x2e"]))
    torch.manual_seed(0)
    model = task.build_model()
    model.set_statistics(
        shifts={s: [0.3 * k] * model.num_scalars for k, s in enumerate(SPECIES)}, scale=0.5
    )
    numbers, pos = _molecule(subset)

    def predict(z, p):
        with torch.no_grad():
            return task.forward(model, task.collate([AtomsData(z, p)]))

    base = predict(numbers, pos)
    for R, t, perm in _transforms(len(numbers)):
        moved = predict(numbers[perm], pos[perm] @ R.T + t)
        value, expected = moved["value"], base["value"]
        if target == "polarizability":
            expected = R @ expected @ R.T
        elif target == "mulliken_charges":
            expected = expected[perm]
        assert float((value - expected).abs().max()) < 1e-10 * max(1.0, float(expected.abs().max()))
        if target == "mu":  # the dipole vector itself is a polar vector
            torch.testing.assert_close(moved["dipole"], base["dipole"] @ R.T, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------ bad input


def test_an_unknown_target_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"data.target: 'polarisability'.*mean 'polarizability'"):
        build_config({"data": {"name": "qm9", "target": "polarisability"}})
    with pytest.raises(ConfigError, match="data.num_train.*split_train"):
        build_config({"data": {"name": "qm9", "num_train": 200_000}})


@pytest.fixture(scope="module")
def trained(subset, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "mu"
    tfn.train.train({"data": {"name": "qm9", "target": "mu"}}, TINY, out=run, progress="none")
    return tfn.train.load(run)


def test_predict_atoms_bad_input_says_what_to_do(trained):
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    assert set(trained.predict_atoms(water)) == {"mu", "dipole"}
    salt = Atoms("NaCl", positions=[[0, 0, 0], [2.4, 0, 0]])
    with pytest.raises(ValueError, match=r"element 'Na', 'Cl'.*QM9 has only H, C, N, O, F"):
        trained.predict_atoms(salt)
    with pytest.raises(ValueError, match=r"molecule 0 has 1 atom.*at least 2"):
        trained.predict_atoms(Atoms("C"))
    with pytest.raises(ValueError, match="periodic.*pbc = False"):
        trained.predict_atoms(Atoms("OH2", positions=water.positions, cell=[5, 5, 5], pbc=True))
    with pytest.raises(TypeError, match="ase.Atoms"):
        trained.predict_atoms([water, "H2O"])


def test_without_the_chem_extra_training_stops_before_the_folder(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ase" else real(name, *a)
    )
    config = tmp_path / "qm9.yaml"
    config.write_text("data:\n  name: qm9\n  target: gap\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'tfn[chem]'" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_without_qm9pack_or_a_cache_the_message_names_the_extra(tmp_path, monkeypatch, capsys):
    from tfn.datasets import qm9

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "qm9pack" else real(name, *a)
    )
    monkeypatch.setattr(qm9, "_source_dir", REAL_SOURCE_DIR)  # not the subset's
    monkeypatch.setenv("TFN_CACHE_DIR", str(tmp_path / "empty"))
    qm9._LOADED.clear()
    config = tmp_path / "qm9.yaml"
    config.write_text("data:\n  name: qm9\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "qm9pack" in err and "pip install 'tfn[chem]'" in err
    assert not (tmp_path / "run").exists()
    qm9._LOADED.clear()
