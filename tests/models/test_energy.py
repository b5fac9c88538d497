"""EnergyModel: energies, forces and stress; equivariance, finite differences, periodic cells."""

from __future__ import annotations

import math

import pytest
import torch

from tfn.models import EnergyModel
from tfn.so3 import random_rotation
from tfn.testing import Global, assert_equivariant

SPECIES = ["H", "C", "O"]


def _model(dtype=torch.float64, cutoff=3.0, **kw) -> EnergyModel:
    defaults = dict(irreps_hidden="8x0e + 4x1o + 2x1e + 2x2e", num_layers=2, lmax=2)
    defaults.update(kw)
    torch.manual_seed(0)
    model = EnergyModel(SPECIES, cutoff=cutoff, **defaults).to(dtype)
    # Non-trivial statistics, so that they are exercised too.
    model.set_statistics({"H": -0.5, "C": -3.0, "O": -2.0}, 0.7, num_neighbors=4.0)
    return model


def _molecule(n=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    numbers = torch.tensor([6, 8, 1, 1, 6, 1, 1, 8, 1][:n])
    pos = 1.3 * torch.randn(n, 3, generator=g, dtype=torch.float64).to(dtype)
    return numbers, pos


def _crystal(seed=0, dtype=torch.float64):
    """A small triclinic cell (shorter than twice the cutoff: atoms see their own images)."""
    g = torch.Generator().manual_seed(seed)
    cell = torch.tensor([[3.1, 0.0, 0.0], [0.6, 2.9, 0.0], [-0.4, 0.5, 3.3]], dtype=torch.float64)
    frac = torch.rand(4, 3, generator=g, dtype=torch.float64)
    pos = frac @ cell
    numbers = torch.tensor([6, 8, 1, 1])
    return numbers, pos.to(dtype), cell.to(dtype), torch.tensor([True, True, True])


# --------------------------------------------------------------------------- molecules


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_energy_and_forces_equivariant(dtype):
    model = _model(dtype)
    numbers, pos = _molecule(dtype=dtype)

    def fn_all(z, p):
        out = model(z, p, energies=True)
        return out["energy"][:, None], out["forces"], out["energies"][:, None]

    assert_equivariant(
        fn_all,
        ["point_index", "cartesian_points"],
        [Global("0e"), "1o", "0e"],
        [numbers, pos],
        dtype=dtype,
    )


def test_forces_are_minus_the_gradient():
    model = _model()
    numbers, pos = _molecule()
    out = model(numbers, pos)
    h = 1e-5
    fd = torch.zeros_like(pos)
    for i in range(pos.shape[0]):
        for k in range(3):
            d = torch.zeros_like(pos)
            d[i, k] = h
            plus = model(numbers, pos + d, forces=False)["energy"]
            minus = model(numbers, pos - d, forces=False)["energy"]
            fd[i, k] = -(plus - minus).sum() / (2 * h)
    torch.testing.assert_close(out["forces"], fd, atol=1e-8, rtol=1e-6)


def test_per_atom_energies_sum_to_the_energy_and_batches_are_independent():
    model = _model()
    z1, p1 = _molecule(7, seed=1)
    z2, p2 = _molecule(5, seed=2)
    numbers = torch.cat([z1, z2])
    pos = torch.cat([p1, p2 + 50.0])
    batch = torch.tensor([0] * 7 + [1] * 5)
    out = model(numbers, pos, batch, energies=True)
    torch.testing.assert_close(
        torch.zeros(2, dtype=torch.float64).index_add(0, batch, out["energies"]), out["energy"]
    )
    one = model(z1, p1)
    two = model(z2, p2)
    torch.testing.assert_close(out["energy"], torch.cat([one["energy"], two["energy"]]))
    torch.testing.assert_close(out["forces"], torch.cat([one["forces"], two["forces"]]))


def test_shifts_scales_and_float32_against_float64():
    model = _model()
    numbers, pos = _molecule()
    e64 = model(numbers, pos)["energy"]
    e32 = _model(torch.float32)(numbers, pos.float())["energy"]
    torch.testing.assert_close(e32.double(), e64, atol=1e-4, rtol=1e-5)
    # E = sum_i scale * y_i + shift[s_i]: doubling the scale doubles the learned part
    learned = e64 - sum(model.atomic_energies[s] for s in ["C", "O", "H", "H", "C", "H", "H"])
    model.set_statistics(energy_scale=1.4)
    again = model(numbers, pos)["energy"]
    base = again - learned * 2
    torch.testing.assert_close(base, e64 - learned, atol=1e-12, rtol=0)


def test_fit_statistics_recovers_shifts_and_force_scale():
    model = _model()
    true = {"H": -13.6, "C": -1030.0, "O": -2040.0}
    g = torch.Generator().manual_seed(3)
    numbers, energies, forces = [], [], []
    for _ in range(30):
        n = int(torch.randint(3, 9, (1,), generator=g))
        z = torch.tensor([1, 6, 8])[torch.randint(0, 3, (n,), generator=g)]
        numbers.append(z)
        energies.append(
            sum(true[{1: "H", 6: "C", 8: "O"}[int(v)]] for v in z)
            + 0.01 * float(torch.randn(1, generator=g))
        )
        forces.append(0.5 * torch.randn(n, 3, generator=g))
    fitted = model.fit_statistics(numbers, energies, forces)
    for s, value in true.items():
        assert fitted["atomic_energies"][s] == pytest.approx(value, abs=0.05)
    rms = torch.cat([f.reshape(-1) for f in forces]).pow(2).mean().sqrt()
    assert fitted["energy_scale"] == pytest.approx(float(rms))
    assert float(model.species_scale[0]) == pytest.approx(float(rms))


def test_training_graph_reaches_every_parameter_through_the_forces():
    model = _model().train()
    numbers, pos = _molecule()
    out = model(numbers, pos)
    loss = out["forces"].pow(2).sum() + out["energy"].pow(2).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_errors_name_the_problem():
    model = _model()
    numbers, pos = _molecule()
    with pytest.raises(ValueError, match="'N'"):
        model(torch.tensor([7, 6, 1, 1, 6, 1, 1]), pos)
    with pytest.raises(ValueError, match="'Z=200'"):
        model(torch.tensor([200, 6, 1, 1, 6, 1, 1]), pos)
    with pytest.raises(ValueError, match="needs a cell"):
        model(numbers, pos, stress=True)
    with pytest.raises(ValueError, match="on top of each other"):
        model(numbers[:2], torch.zeros(2, 3, dtype=torch.float64))
    bad = pos.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="point 3"):
        model(numbers, bad)
    with pytest.raises(ValueError, match="unknown chemical symbols"):
        EnergyModel(["H", "Xx"])
    with pytest.raises(ValueError, match="cutoff"):
        EnergyModel(["H"], cutoff=0.0)


def test_single_atom_has_zero_forces():
    model = _model()
    out = model(torch.tensor([8]), torch.zeros(1, 3, dtype=torch.float64))
    assert out["forces"].abs().max() == 0 and torch.isfinite(out["energy"]).all()
    # With no neighbour, moving the atom changes nothing.
    moved = model(torch.tensor([8]), torch.full((1, 3), 4.0, dtype=torch.float64))
    torch.testing.assert_close(moved["energy"], out["energy"])


# ------------------------------------------------------------------------------ periodic


def _numerical_stress(model, numbers, pos, cell, pbc, h=1e-5):
    volume = torch.linalg.det(cell).abs()
    stress = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            values = []
            for sign in (1, -1):
                eps = torch.zeros(3, 3, dtype=torch.float64)
                eps[i, j] += sign * h / 2
                eps[j, i] += sign * h / 2
                deform = torch.eye(3, dtype=torch.float64) + eps
                e = model(numbers, pos @ deform, cell=cell @ deform, pbc=pbc, forces=False)[
                    "energy"
                ]
                values.append(float(e.detach().sum()))
            stress[i, j] = (values[0] - values[1]) / (2 * h) / volume
    return stress


def test_stress_matches_finite_strain_and_forces_finite_differences():
    model = _model()
    numbers, pos, cell, pbc = _crystal()
    out = model(numbers, pos, cell=cell, pbc=pbc, stress=True)
    torch.testing.assert_close(
        out["stress"][0], _numerical_stress(model, numbers, pos, cell, pbc), atol=1e-8, rtol=1e-6
    )
    h = 1e-5
    for i, k in [(0, 0), (2, 1), (3, 2)]:
        d = torch.zeros_like(pos)
        d[i, k] = h
        plus = model(numbers, pos + d, cell=cell, pbc=pbc, forces=False)["energy"].sum()
        minus = model(numbers, pos - d, cell=cell, pbc=pbc, forces=False)["energy"].sum()
        assert float(out["forces"][i, k].detach()) == pytest.approx(
            -(plus - minus).item() / (2 * h), abs=1e-7
        )
    # Momentum conservation: the forces sum to zero in a periodic crystal.
    assert out["forces"].sum(0).abs().max() < 1e-10


def test_periodic_rotation_translation_permutation_and_lattice_moves():
    model = _model()
    numbers, pos, cell, pbc = _crystal(seed=1)
    ref = model(numbers, pos, cell=cell, pbc=pbc, stress=True)
    R = random_rotation(1, torch.Generator().manual_seed(5), torch.float64)[0]
    for Q in (R, -R):  # rotation, and rotation with inversion
        rot = model(numbers, pos @ Q.T, cell=cell @ Q.T, pbc=pbc, stress=True)
        torch.testing.assert_close(rot["energy"], ref["energy"], atol=1e-10, rtol=0)
        torch.testing.assert_close(rot["forces"], ref["forces"] @ Q.T, atol=1e-10, rtol=0)
        torch.testing.assert_close(rot["stress"][0], Q @ ref["stress"][0] @ Q.T, atol=1e-10, rtol=0)
    moved = model(
        numbers, pos + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), cell=cell, pbc=pbc
    )
    torch.testing.assert_close(moved["energy"], ref["energy"], atol=1e-10, rtol=0)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = model(numbers[perm], pos[perm], cell=cell, pbc=pbc)
    torch.testing.assert_close(permuted["forces"], ref["forces"][perm], atol=1e-10, rtol=0)
    lattice = pos.clone()
    lattice[1] += cell[0] - 2 * cell[2]
    jumped = model(numbers, lattice, cell=cell, pbc=pbc, stress=True)
    torch.testing.assert_close(jumped["energy"], ref["energy"], atol=1e-10, rtol=0)
    torch.testing.assert_close(jumped["forces"], ref["forces"], atol=1e-10, rtol=0)


def test_supercell_is_eight_times_the_cell():
    model = _model()
    numbers, pos, cell, pbc = _crystal(seed=2)
    ref = model(numbers, pos, cell=cell, pbc=pbc, stress=True)
    offsets = torch.tensor(
        [[i, j, k] for i in range(2) for j in range(2) for k in range(2)], dtype=torch.float64
    )
    big_pos = (pos[None] + (offsets @ cell)[:, None]).reshape(-1, 3)
    big = model(numbers.repeat(8), big_pos, cell=2 * cell, pbc=pbc, stress=True)
    torch.testing.assert_close(big["energy"], 8 * ref["energy"], atol=1e-9, rtol=0)
    torch.testing.assert_close(big["forces"], ref["forces"].repeat(8, 1), atol=1e-10, rtol=0)
    torch.testing.assert_close(big["stress"], ref["stress"], atol=1e-10, rtol=0)


def test_partial_periodicity_slab():
    model = _model()
    numbers, pos, cell, _ = _crystal(seed=3)
    pbc = torch.tensor([True, True, False])
    out = model(numbers, pos, cell=cell, pbc=pbc)
    # Not periodic along z: moving an atom by the third cell vector changes the energy.
    moved = pos.clone()
    moved[0] += cell[2]
    far = model(numbers, moved, cell=cell, pbc=pbc)
    assert not math.isclose(float(far["energy"]), float(out["energy"]), rel_tol=1e-9)
    moved = pos.clone()
    moved[0] += cell[1]
    torch.testing.assert_close(model(numbers, moved, cell=cell, pbc=pbc)["energy"], out["energy"])


def test_float32_periodic_is_close_to_float64():
    numbers, pos, cell, pbc = _crystal(seed=4)
    e64 = _model()(numbers, pos, cell=cell, pbc=pbc, stress=True)
    e32 = _model(torch.float32)(numbers, pos.float(), cell=cell.float(), pbc=pbc, stress=True)
    torch.testing.assert_close(e32["forces"].double(), e64["forces"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(e32["stress"].double(), e64["stress"], atol=1e-4, rtol=1e-4)
