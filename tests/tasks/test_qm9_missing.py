"""The qm9_missing_point task: a tiny run end to end, equivariance of the predicted atom,
the removal protocols, predict_missing_atom and bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

if importlib.util.find_spec("ase") is None or importlib.util.find_spec("qm9pack") is None:
    pytest.skip("QM9 tests need tfn[chem] (ase, qm9pack)", allow_module_level=True)

from ase import Atoms  # noqa: E402

import tfn.train  # noqa: E402
from tfn.data.atoms import AtomsData  # noqa: E402
from tfn.so3 import random_rotation  # noqa: E402
from tfn.tasks import make_task  # noqa: E402
from tfn.tasks.qm9 import QM9_ELEMENTS  # noqa: E402
from tfn.train.config import ConfigError, build_config, load_yaml  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "qm9_missing_point.yaml"
# The subset has 4 molecules of each test size; 12 + 4 small ones to train and validate.
TINY = [
    "data.num_train=12",
    "data.num_val=4",
    "data.num_test=4",
    "model.irreps_hidden=8x0e+4x1o+2x2e",
    "model.num_layers=1",
    "model.cutoff=4.0",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
]


def _task(extra=()):
    return make_task(build_config({"data": {"name": "qm9_missing_point"}}, [*TINY, *extra]))


def test_shipped_config_is_the_paper_set_up():
    cfg = build_config(load_yaml(CONFIG))
    d = cfg.data
    assert (d.num_train, tuple(d.train_atoms), d.num_test) == (1000, (5, 18), 1000)
    assert {k: tuple(v) for k, v in d.test_sizes.items()} == {
        "19": (19, 19),
        "23": (23, 23),
        "24_29": (24, 29),
    }


def test_sets_sizes_and_removal_protocols(subset):
    task = _task()
    idx = task._indices
    assert len(idx["train"]) == 12 and not set(idx["train"]) & set(idx["val"])
    for name, (lo, hi) in task.data.test_sizes.items():
        assert all(lo <= len(subset[int(i)]) <= hi for i in idx[f"test_{name}"])
    assert all(5 <= len(subset[int(i)]) <= 18 for i in idx["train"])
    every = task._removals("test_23", "all")
    one = task._removals("test_23", "one")
    assert len(every) == 4 * 23 and len(one) == 4  # every atom removed in turn, or one
    assert all(item.num_atoms == 22 for item in every + one)
    assert [item.targets["missing_pos"].tolist() for item in task._removals("test_23", "one")] == [
        item.targets["missing_pos"].tolist() for item in one
    ]  # seeded
    first = _task(["data.selection=first"])._indices
    assert list(first["train"]) == sorted(first["train"]) and first["train"][0] < idx["train"][-1]
    with pytest.raises(ValueError, match="test set '19'.*only 4"):
        _task(["data.num_test=5"]).check_data()


def test_removed_atom_is_the_target(subset):
    task = _task()
    molecule = subset[int(task._indices["train"][0])]
    items = task._removals("train", "all")[: len(molecule)]
    for k, item in enumerate(items):
        assert item.num_atoms == len(molecule) - 1
        np.testing.assert_allclose(item.targets["missing_pos"], molecule.positions[k])
        element = QM9_ELEMENTS[int(item.targets["missing_element"])]
        assert element == molecule.get_chemical_symbols()[k]


def test_prediction_is_equivariant(subset):
    """Rotations, reflections, translations and permutations of the remaining atoms move the
    predicted position with them and leave the element logits unchanged (float64, 1e-10)."""
    task = _task(["dtype=float64", "model.irreps_hidden=8x0e+4x1o+2x1e+2x2e", "model.num_layers=2"])
    torch.manual_seed(0)
    model = task.build_model()
    atoms = subset[1104]
    numbers = torch.as_tensor(atoms.numbers[1:])
    pos = torch.as_tensor(atoms.positions[1:], dtype=torch.float64)

    def predict(z, p):
        with torch.no_grad():
            return task.forward(model, task.collate([AtomsData(z, p)]))

    base = predict(numbers, pos)
    assert float(base["weights"].sum()) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(1)
    for k, R in enumerate(random_rotation(4, generator=g, dtype=torch.float64)):
        R = R if k % 2 == 0 else -R
        t = 3 * torch.randn(3, generator=g, dtype=torch.float64)
        perm = torch.randperm(len(numbers), generator=g)
        moved = predict(numbers[perm], pos[perm] @ R.T + t)
        torch.testing.assert_close(
            moved["position"], base["position"] @ R.T + t, atol=1e-10, rtol=0
        )
        torch.testing.assert_close(moved["logits"], base["logits"], atol=1e-10, rtol=0)
        torch.testing.assert_close(moved["weights"], base["weights"][perm], atol=1e-10, rtol=0)


@pytest.fixture(scope="module")
def trained(subset, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "missing"
    cfg = {"data": {"name": "qm9_missing_point"}}
    result = tfn.train.train(cfg, TINY, out=run, progress="none")
    return run, result


def test_tiny_run_reports_every_set_and_both_protocols(trained):
    run, result = trained
    m = result.metrics["metrics"]
    for part in ("train", "test_19", "test_23", "test_24_29"):
        assert 0 <= m[f"{part}/accuracy"] <= m[f"{part}/element_accuracy"] <= 1
        assert m[f"{part}/distance_mae"] > 0
        assert 0 <= m[f"test/one_removal_{part}_accuracy"] <= 1
    assert m["test_19/num_clouds"] == 4 * 19 and m["test_23/num_clouds"] == 4 * 23
    for plot in ("distances.png", "learning_curves.png", "elements_test_19.png"):
        assert (run / "plots" / plot).is_file()
    assert "86.8" in result.metrics["paper"]


def test_predict_missing_atom(trained, subset):
    run, result = trained
    model = tfn.train.load(run)
    molecule = subset[1094]
    removed = molecule.copy()
    del removed[3]
    symbol, position = model.predict_missing_atom(removed)
    assert symbol in QM9_ELEMENTS and position.shape == (3,)
    # the same as the evaluation's prediction for that item
    task = model.task
    item = task._removals(f"test_{'23'}", "all")[
        list(task._indices["test_23"]).index(1094) * len(molecule) + 3
    ]
    pred = task.forward(model.net, task.collate([item]))
    np.testing.assert_allclose(position, pred["position"][0].detach().numpy(), atol=1e-5)
    # translate the molecule: the prediction follows
    shifted = removed.copy()
    shifted.translate([1.0, -2.0, 0.5])
    symbol2, position2 = model.predict_missing_atom(shifted)
    assert symbol2 == symbol
    np.testing.assert_allclose(position2, position + [1.0, -2.0, 0.5], atol=1e-4)


def test_predict_missing_atom_bad_input(trained):
    model = tfn.train.load(trained[0])
    with pytest.raises(ValueError, match=r"element 'Cl'.*QM9 has only"):
        model.predict_missing_atom(Atoms("CCl", positions=[[0, 0, 0], [1.8, 0, 0]]))
    with pytest.raises(ValueError, match=r"has 1 atom.*at least 2"):
        model.predict_missing_atom(Atoms("C"))
    with pytest.raises(TypeError, match="one ase.Atoms"):
        model.predict_missing_atom([Atoms("CO", positions=[[0, 0, 0], [1.1, 0, 0]])])


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="data.train_atoms"):
        build_config({"data": {"name": "qm9_missing_point", "train_atoms": [18, 5]}})
