"""TFNCalculator: a standard ASE calculator for molecules and periodic cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ase")
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402
from ase.calculators.calculator import PropertyNotImplementedError  # noqa: E402
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress  # noqa: E402

from tfn.ase import TFNCalculator  # noqa: E402
from tfn.models import EnergyModel  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = EnergyModel(
        ["H", "C", "O", "Cu"], irreps_hidden="8x0e + 4x1o + 2x2e", num_layers=2, cutoff=3.0
    ).double()
    m.set_statistics({"H": -1.0, "C": -5.0, "O": -4.0, "Cu": -3.5}, 0.5, num_neighbors=6.0)
    return m


def _rattled_copper(seed=0, repeat=(1, 1, 1)):
    atoms = bulk("Cu", "fcc", a=3.6) * repeat  # one-atom cell, far smaller than the cutoff
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_molecule_energy_forces_and_energies(model):
    atoms = molecule("CH3CH2OH")
    atoms.calc = TFNCalculator(model)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert forces.shape == (9, 3) and forces.dtype == np.float64
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, rel=1e-12)
    assert atoms.calc.get_property("free_energy") == energy
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(forces, numerical, atol=1e-7)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_periodic_stress_and_small_cells(model):
    atoms = _rattled_copper()
    atoms.set_cell(
        atoms.cell.array @ np.array([[1, 0.05, 0], [0, 1, 0.02], [0, 0, 1]]), scale_atoms=True
    )
    atoms.calc = TFNCalculator(model)
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-7)
    # a 2x2x2 supercell: 8 times the energy, the same stress, tiled forces
    big = atoms * (2, 2, 2)
    big.calc = TFNCalculator(model)
    assert big.get_potential_energy() == pytest.approx(8 * atoms.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(big.get_stress(), stress, atol=1e-10)
    np.testing.assert_allclose(big.get_forces(), np.tile(atoms.get_forces(), (8, 1)), atol=1e-10)


def test_rotating_atoms_and_cell_together(model):
    atoms = _rattled_copper(1, (2, 1, 1))
    atoms.calc = TFNCalculator(model)
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    rotated = atoms.copy()
    rotated.rotate(37, (1, 2, 3), rotate_cell=True)
    rotated.calc = TFNCalculator(model)
    R = np.linalg.solve(atoms.cell.array, rotated.cell.array).T  # cell rows rotate as r -> R r
    assert rotated.get_potential_energy() == pytest.approx(e, rel=1e-10)
    np.testing.assert_allclose(rotated.get_forces(), f @ R.T, atol=1e-10)
    np.testing.assert_allclose(rotated.get_stress(voigt=False), R @ s @ R.T, atol=1e-10)


def test_partial_periodicity_slab(model):
    slab = _rattled_copper(2, (2, 2, 2))
    slab.center(vacuum=5.0, axis=2)
    slab.pbc = (True, True, False)
    slab.calc = TFNCalculator(model)
    forces = slab.get_forces()
    np.testing.assert_allclose(forces, calculate_numerical_forces(slab, eps=1e-5), atol=1e-7)
    # the stress of a slab is defined here (its cell has a volume): finite strain agrees
    np.testing.assert_allclose(
        slab.get_stress(), calculate_numerical_stress(slab, eps=1e-5), atol=1e-7
    )


def test_unknown_element_is_named(model):
    atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]])
    atoms.calc = TFNCalculator(model)
    with pytest.raises(ValueError, match="'Cl', 'Na'"):
        atoms.get_potential_energy()


def test_dtype_and_device_work_on_a_copy(model):
    calc = TFNCalculator(model, dtype=torch.float32)
    assert next(calc.model.parameters()).dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float64  # the given model is untouched
    water = molecule("H2O")
    water.calc = calc
    e32 = water.get_potential_energy()
    water.calc = TFNCalculator(model)
    assert water.get_potential_energy() == pytest.approx(e32, abs=1e-4)
    with pytest.raises(ValueError, match="float32 or float64"):
        TFNCalculator(model, dtype=torch.float16)
    with pytest.raises(TypeError, match="EnergyModel"):
        TFNCalculator(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError):
        TFNCalculator("no/such/run")


def test_results_follow_moving_atoms(model):
    atoms = molecule("H2O")
    atoms.calc = TFNCalculator(model)
    e0 = atoms.get_potential_energy()
    atoms.positions[0] += 0.1
    assert atoms.get_potential_energy() != e0
