"""MD17-style trajectories with GFN2-xTB (tfn.datasets.md) and the trajectory readers
(tfn.datasets.io). Generation tests run a few steps of water; they skip without ``tfn[md]``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ase")
import ase.io  # noqa: E402
import ase.units  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from tfn.datasets import io as tio  # noqa: E402
from tfn.datasets import md  # noqa: E402
from tfn.datasets.io import KCAL_PER_MOL, check_trajectory, read_trajectory  # noqa: E402
from tfn.datasets.md import MD17_SMILES, generate_md, resolve_molecule, state_path  # noqa: E402

# A few steps of water: the whole file of generation tests stays at a few seconds.
WATER = dict(stride=2, equilibration_steps=6, progress=False, checkpoint_every=2)


def needs_md():
    pytest.importorskip("rdkit")
    pytest.importorskip("tblite.ase")


def test_kcal_per_mol_matches_ase():
    assert KCAL_PER_MOL == pytest.approx(ase.units.kcal / ase.units.mol, rel=1e-15)


def test_import_tfn_datasets_does_not_import_chemistry_packages():
    code = (
        "import sys, tfn; before = set(sys.modules)\n"
        "import tfn.datasets, tfn.datasets.md, tfn.datasets.io\n"
        "tfn.datasets.MD17_SMILES\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new & {'ase', 'rdkit', 'tblite', 'tqdm'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# ----------------------------------------------------------------------------- molecules


def test_md17_names_resolve_to_the_md17_molecules():
    rdkit = pytest.importorskip("rdkit")
    from rdkit import Chem

    # Atom counts (with hydrogens) of the MD17 molecules.
    sizes = {
        "aspirin": 21,
        "benzene": 12,
        "ethanol": 9,
        "malonaldehyde": 9,
        "naphthalene": 18,
        "salicylic_acid": 16,
        "toluene": 15,
        "uracil": 12,
    }
    assert set(MD17_SMILES) == set(sizes)
    for name, smiles in MD17_SMILES.items():
        assert resolve_molecule(name) == (name, smiles)
        molecule = Chem.AddHs(Chem.MolFromSmiles(smiles))
        assert molecule.GetNumAtoms() == sizes[name], name
    assert rdkit is not None
    for spelling in ("salicylic acid", "Salicylic-Acid", " salicylic_acid "):
        assert resolve_molecule(spelling)[0] == "salicylic_acid"
    assert resolve_molecule("C1CC1") == ("C1CC1", "C1CC1")
    with pytest.raises(ValueError, match="neither an MD17 molecule name .* nor a valid SMILES"):
        resolve_molecule("aspirine")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(frames=0), "frames must be an integer >= 1"),
        (dict(frames=2, seed=-1), "seed must be an integer >= 0"),
        (dict(frames=2, temperature=float("nan")), "temperature must be a finite number > 0"),
        (dict(frames=2, stride=0), "stride must be an integer >= 1"),
        (dict(frames=2, timestep_fs=0.0), "timestep_fs must be a finite number > 0"),
        (dict(frames=2, out="water.txt"), r"out must be an extended XYZ file"),
    ],
)
def test_generate_md_rejects_bad_arguments(tmp_path, kwargs, match):
    kwargs = {"out": tmp_path / "water.extxyz", **kwargs}
    kwargs["out"] = tmp_path / kwargs["out"]
    with pytest.raises(ValueError, match=match):
        generate_md("O", **kwargs)


# ----------------------------------------------------------------------------- generation


def test_generated_frames_carry_xtb_energies_and_forces(tmp_path):
    needs_md()
    from tblite.ase import TBLite

    out = generate_md("O", tmp_path / "water.extxyz", frames=4, **WATER)
    frames = read_trajectory(out)
    assert len(frames) == 4
    assert [f.get_chemical_formula() for f in frames] == ["H2O"] * 4
    assert [int(f.info["md_step"]) for f in frames] == [2, 4, 6, 8]
    assert [float(f.info["time_fs"]) for f in frames] == [1.0, 2.0, 3.0, 4.0]
    assert len({f.info["energy"] for f in frames}) == 4  # the dynamics moves
    # ASE's own reader gives the same labels back through the calculator.
    plain = ase.io.read(out, ":")
    assert plain[2].get_potential_energy() == frames[2].info["energy"]
    np.testing.assert_array_equal(plain[2].get_forces(), frames[2].arrays["forces"])

    # The labels are GFN2-xTB's at the written positions, and forces are -dE/dx.
    frame = frames[3]
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert atoms.get_potential_energy() == pytest.approx(frame.info["energy"], abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), frame.arrays["forces"], atol=1e-4)
    h = 1e-3
    numerical = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = frame.positions.copy()
                moved[i, k] += sign * h
                atoms.positions = moved
                energies.append(atoms.get_potential_energy())
            numerical[i, k] = -(energies[0] - energies[1]) / (2 * h)
    np.testing.assert_allclose(numerical, frame.arrays["forces"], atol=2e-3)
    assert np.abs(frame.arrays["forces"]).max() > 0.05  # not a trivially small comparison


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path):
    needs_md()
    a = generate_md("O", tmp_path / "a.extxyz", frames=3, seed=3, **WATER).read_bytes()
    b = generate_md("O", tmp_path / "b.extxyz", frames=3, seed=3, **WATER).read_bytes()
    c = generate_md("O", tmp_path / "c.extxyz", frames=3, seed=4, **WATER).read_bytes()
    assert a == b
    assert a != c


def test_xtb_labels_do_not_depend_on_the_path(tmp_path):
    needs_md()
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    walked = water.copy()
    walked.calc = md._make_calculator(0, 1)
    for shift in (0.05, -0.03, 0.02):  # another history before the same geometry
        walked.positions = water.positions + shift * np.eye(3)
        walked.get_forces()
    walked.positions = water.positions
    fresh = water.copy()
    fresh.calc = md._make_calculator(0, 1)
    np.testing.assert_array_equal(walked.get_forces(), fresh.get_forces())
    assert walked.get_potential_energy() == fresh.get_potential_energy()


def test_charged_smiles_runs_with_its_charge(tmp_path):
    needs_md()
    out = generate_md("[NH4+]", tmp_path / "ammonium.extxyz", frames=2, **WATER)
    assert json.loads(state_path(out).read_text())["config"]["charge"] == 1
    [frame, _] = read_trajectory(out)
    assert frame.get_chemical_formula() == "H4N"
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions)
    atoms.calc = md._make_calculator(1, 1)
    assert atoms.get_potential_energy() == pytest.approx(frame.info["energy"], abs=1e-6)


def test_missing_md_extra_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite", None)
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(ImportError, match=r"pip install 'tfn\[md\]'"):
        generate_md("O", tmp_path / "water.extxyz", frames=2, progress=False)


class _Interrupt:
    """A calculator factory whose calculators raise Ctrl-C at the ``at``-th xTB call of the run
    (counting all of them: relaxation, equilibration, production)."""

    def __init__(self, monkeypatch, at=None):
        self.calls, self.at = 0, at
        factory = md._make_calculator
        outer = self

        def make(charge, multiplicity):
            calculator = factory(charge, multiplicity)
            original = calculator.calculate

            def calculate(*args, **kwargs):
                outer.calls += 1
                if outer.calls == outer.at:
                    raise KeyboardInterrupt
                return original(*args, **kwargs)

            calculator.calculate = calculate
            return calculator

        monkeypatch.setattr(md, "_make_calculator", make)


def test_interrupted_run_resumes_to_the_same_frames(tmp_path, monkeypatch):
    needs_md()
    with monkeypatch.context() as patch:
        counter = _Interrupt(patch)
        whole = generate_md("O", tmp_path / "whole.extxyz", frames=7, **WATER).read_bytes()
    total = counter.calls

    out = tmp_path / "cut.extxyz"
    with monkeypatch.context() as patch:
        _Interrupt(patch, at=total - 5)  # during the steps of the 5th frame (stride 2)
        with pytest.raises(KeyboardInterrupt):
            generate_md("O", out, frames=7, **WATER)
    # What is on disk is consistent: whole frames, as many as the state says, a prefix of the
    # uninterrupted run (the state was written for the last complete frame, not a checkpoint).
    state = json.loads(state_path(out).read_text())
    assert state["frames_done"] == 4
    assert len(read_trajectory(out)) == 4
    assert out.stat().st_size == state["xyz_bytes"]
    assert whole.startswith(out.read_bytes())

    generate_md("O", out, frames=7, **WATER)
    assert out.read_bytes() == whole


def test_killed_run_truncates_unsaved_frames_and_extends(tmp_path):
    needs_md()
    whole = generate_md("O", tmp_path / "whole.extxyz", frames=6, **WATER).read_bytes()
    out = generate_md("O", tmp_path / "cut.extxyz", frames=2, **WATER)
    # A hard kill after the last state: frames (and half a frame) the state does not know of.
    with open(out, "ab") as f:
        f.write(whole[len(out.read_bytes()) :][:700])
    generate_md("O", out, frames=6, **WATER)  # resumes from 2 frames, extends to 6
    assert out.read_bytes() == whole
    assert json.loads(state_path(out).read_text())["frames_done"] == 6
    assert generate_md("O", out, frames=6, **WATER) == out  # complete: nothing to do
    assert out.read_bytes() == whole


def test_existing_output_is_refused_unless_same_arguments_or_overwrite(tmp_path):
    needs_md()
    out = generate_md("O", tmp_path / "water.extxyz", frames=2, **WATER)
    first = out.read_bytes()
    with pytest.raises(
        ValueError, match=r"other arguments \(temperature_K: 500.0 there, 300.0 now"
    ):
        generate_md("O", out, frames=2, temperature=300.0, **WATER)
    with pytest.raises(ValueError, match="already holds 2 frames, more than the 1 asked for"):
        generate_md("O", out, frames=1, **WATER)
    generate_md("O", out, frames=2, temperature=300.0, overwrite=True, **WATER)
    assert out.read_bytes() != first
    plain = tmp_path / "plain.extxyz"
    plain.write_text("")
    with pytest.raises(ValueError, match="has no state file"):
        generate_md("O", plain, frames=2, **WATER)
    state_path(out).write_text("{not json")
    with pytest.raises(ValueError, match="not a generate_md state file"):
        generate_md("O", out, frames=2, **WATER)


# ----------------------------------------------------------------------------- readers


def _rmd17(path, coords, energies, forces, numbers=(8, 1, 1)):
    np.savez(
        path,
        nuclear_charges=np.array(numbers),
        coords=coords,
        energies=energies,
        forces=forces,
        old_indices=np.arange(len(coords)),
    )
    return path


def _water_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    coords = base + 0.02 * rng.standard_normal((n, 3, 3))
    return coords, rng.normal(-48000.0, 5.0, n), rng.standard_normal((n, 3, 3)) * 30


def test_rmd17_npz_is_converted_from_kcal_per_mol(tmp_path):
    coords, energies, forces = _water_frames(5)
    path = _rmd17(tmp_path / "rmd17_water.npz", coords, energies, forces)
    assert tio.trajectory_format(path) == "rmd17"
    frames = read_trajectory(path)
    assert len(frames) == 5
    kcal = ase.units.kcal / ase.units.mol
    for k, atoms in enumerate(frames):
        assert atoms.get_chemical_formula() == "H2O" and atoms.calc is None
        np.testing.assert_array_equal(atoms.positions, coords[k])
        assert atoms.info["energy"] == pytest.approx(energies[k] * kcal, rel=1e-14)
        np.testing.assert_allclose(atoms.arrays["forces"], forces[k] * kcal, rtol=1e-14)
    picked = read_trajectory(path, index=[4, 0])
    assert [a.info["energy"] for a in picked] == [
        frames[4].info["energy"],
        frames[0].info["energy"],
    ]
    assert [a.info["energy"] for a in read_trajectory(path, "1:3")] == [
        frames[1].info["energy"],
        frames[2].info["energy"],
    ]
    assert read_trajectory(path, -1)[0].info["energy"] == frames[4].info["energy"]


def test_md17_npz_with_column_energies_and_units(tmp_path):
    coords, energies, forces = _water_frames(3, seed=1)
    path = tmp_path / "md17_water.npz"
    np.savez(
        path,
        z=np.array([8, 1, 1], dtype=np.uint8),
        R=coords,
        E=energies[:, None],
        F=forces,
        name=np.array("water"),
        theory=np.array("PBE+vdW-TS"),
    )
    assert tio.trajectory_format(path) == "md17"
    frames = read_trajectory(path)
    assert frames[1].info["energy"] == pytest.approx(energies[1] * KCAL_PER_MOL, rel=1e-14)
    np.testing.assert_allclose(frames[2].arrays["forces"], forces[2] * KCAL_PER_MOL, rtol=1e-14)
    # sGDML files may say their units.
    np.savez(path, z=[8, 1, 1], R=coords, E=energies, F=forces, e_unit="eV", r_unit="Ang")
    assert read_trajectory(path)[1].info["energy"] == energies[1]
    np.savez(path, z=[8, 1, 1], R=coords, E=energies, F=forces, e_unit="furlong")
    with pytest.raises(ValueError, match="unknown e_unit 'furlong'"):
        read_trajectory(path)
    np.savez(path, z=[8, 1, 1], R=coords, E=energies[:2], F=forces)
    with pytest.raises(ValueError, match=r"E must have shape \[3\] or \[3, 1\], got \[2\]"):
        read_trajectory(path)


def test_extxyz_round_trip_keeps_labels_and_per_atom_arrays(tmp_path):
    coords, energies, forces = _water_frames(3, seed=2)
    written = []
    for k in range(3):
        atoms = Atoms("OH2", positions=coords[k])
        atoms.arrays["partial_charges"] = np.array([-0.8, 0.4, 0.4]) + k
        atoms.info["temperature"] = 500.0 + k
        atoms.calc = SinglePointCalculator(atoms, energy=energies[k], forces=forces[k])
        written.append(atoms)
    path = tmp_path / "water.extxyz"
    ase.io.write(path, written)
    frames = read_trajectory(path)
    for k, atoms in enumerate(frames):
        assert atoms.calc is None
        assert atoms.info["energy"] == pytest.approx(energies[k], abs=1e-9)
        np.testing.assert_allclose(atoms.arrays["forces"], forces[k], atol=1e-7)
        np.testing.assert_allclose(atoms.positions, coords[k], atol=1e-7)
        np.testing.assert_allclose(atoms.arrays["partial_charges"], [-0.8 + k, 0.4 + k, 0.4 + k])
        assert atoms.info["temperature"] == 500.0 + k
    # Frame selection reads the same frames as from the npz files, in the order asked.
    assert [a.info["temperature"] for a in read_trajectory(path, -1)] == [502.0]
    assert [a.info["temperature"] for a in read_trajectory(path, [2, 0])] == [502.0, 500.0]
    assert [a.info["temperature"] for a in read_trajectory(path, "1:")] == [501.0, 502.0]
    assert [a.info["temperature"] for a in read_trajectory(path, slice(None, None, -2))] == [
        502.0,
        500.0,
    ]
    with pytest.raises(IndexError, match="frame 3 out of range"):
        read_trajectory(path, 3)
    # ASE trajectories (calculator results) follow the same convention.
    ase.io.write(tmp_path / "water.traj", written)
    [traj] = read_trajectory(tmp_path / "water.traj", 1)
    assert traj.calc is None and traj.info["energy"] == energies[1]
    np.testing.assert_array_equal(traj.arrays["forces"], forces[1])
    # Labels kept in info / arrays under other names (another common convention).
    for atoms in written:
        atoms.info["REF_energy"] = atoms.calc.results["energy"]
        atoms.arrays["REF_forces"] = atoms.calc.results["forces"]
        atoms.calc = None
    other = tmp_path / "ref.xyz"
    ase.io.write(other, written, format="extxyz")
    with pytest.raises(ValueError, match=r"ref.xyz: frame 0 has no energy .* energy_key="):
        read_trajectory(other)
    frames = read_trajectory(other, energy_key="REF_energy", forces_key="REF_forces")
    assert frames[1].info["energy"] == pytest.approx(energies[1], abs=1e-9)
    assert "REF_energy" not in frames[1].info and "REF_forces" not in frames[1].arrays
    np.testing.assert_allclose(frames[1].arrays["forces"], forces[1], atol=1e-7)


def test_extxyz_without_labels_is_an_error_only_when_required(tmp_path):
    labelled = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    labelled.calc = SinglePointCalculator(labelled, energy=-1.0, forces=np.zeros((2, 3)))
    bare = Atoms("H2", positions=[[0, 0, 0], [0.75, 0, 0]])
    path = tmp_path / "h2.extxyz"
    ase.io.write(path, [labelled, bare])
    with pytest.raises(ValueError, match=rf"{path}: frame 1 has no energy .*require=\(\)"):
        read_trajectory(path)
    with pytest.raises(ValueError, match=rf"{path}: frame 1 has no forces"):
        read_trajectory(path, require=("forces",))
    with pytest.raises(ValueError, match=rf"{path}: frame 1 has no forces"):
        read_trajectory(path, require=("forces",), validate=False)
    frames = read_trajectory(path, require=())
    assert "energy" in frames[0].info and "energy" not in frames[1].info
    with pytest.raises(ValueError, match="require must name labels"):
        read_trajectory(path, require=("stress",))


def test_missing_file_says_where_to_put_it_and_how_to_generate(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        read_trajectory(tmp_path / "md17_ethanol.npz")
    message = str(error.value)
    assert "downloads nothing" in message and "quantum-machine.org/gdml" in message
    assert (
        f"tfn data md ethanol --frames 1000 --temperature 500 --seed 0 --out {tmp_path / 'md17_ethanol.extxyz'}"
        in message
    )
    with pytest.raises(FileNotFoundError, match="tfn data md salicylic_acid"):
        read_trajectory(tmp_path / "rmd17_salicylic_acid.npz")
    with pytest.raises(FileNotFoundError, match="tfn data md NAME_OR_SMILES"):
        read_trajectory(tmp_path / "mine.extxyz")


def test_unknown_files_are_named(tmp_path):
    (tmp_path / "a.pdb").write_text("")
    with pytest.raises(ValueError, match=r"unknown extension '.pdb'"):
        read_trajectory(tmp_path / "a.pdb")
    np.savez(tmp_path / "b.npz", positions=np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"keys \['positions'\]; expected the revised MD17 keys"):
        read_trajectory(tmp_path / "b.npz")
    (tmp_path / "c.xyz").write_text("two\nnot an xyz file\n")
    with pytest.raises(ValueError, match="could not be read as an extended XYZ file"):
        read_trajectory(tmp_path / "c.xyz")


# ----------------------------------------------------------------------------- validation


def test_bad_frames_are_named_with_their_atoms(tmp_path):
    coords, energies, forces = _water_frames(4, seed=3)
    bad = coords.copy()
    bad[2, 1, 0] = np.nan
    path = _rmd17(tmp_path / "nan.npz", bad, energies, forces)
    with pytest.raises(
        ValueError, match=rf"{path}: frame 2: non-finite \(NaN or inf\) position of atom\(s\) 1$"
    ):
        read_trajectory(path)
    assert len(read_trajectory(path, validate=False)) == 4
    assert len(read_trajectory(path, index=[0, 1, 3])) == 3

    close = coords.copy()
    close[1, 2] = close[1, 0] + [0.05, 0.0, 0.0]
    path = _rmd17(tmp_path / "close.npz", close, energies, forces)
    with pytest.raises(ValueError, match=r"frame 1: atoms 0 \(O\) and 2 \(H\) are 0.05 Å apart"):
        read_trajectory(path)
    assert len(read_trajectory(path, min_distance=0.01)) == 4

    e = energies.copy()
    e[3] = np.inf
    with pytest.raises(ValueError, match=r"frame 3: the energy is inf"):
        read_trajectory(_rmd17(tmp_path / "e.npz", coords, e, forces))
    f = forces.copy()
    f[0, 0, 2] = f[0, 2, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"frame 0: non-finite \(NaN or inf\) forces on atom\(s\) 0, 2"
    ):
        read_trajectory(_rmd17(tmp_path / "f.npz", coords, energies, f))


def test_periodic_frames_are_checked_across_the_cell():
    cell = [5.0, 5.0, 5.0]
    ok = Atoms("H2", positions=[[0.02, 1, 1], [4.0, 1, 1]], cell=cell, pbc=True)
    check_trajectory([ok])
    wrapped = Atoms("H2", positions=[[0.02, 1, 1], [4.99, 1, 1]], cell=cell, pbc=True)
    with pytest.raises(
        ValueError, match=r"cell.xyz: frame 0: atoms 0 \(H\) and 1 \(H\) are 0.03 Å"
    ):
        check_trajectory([wrapped], source="cell.xyz")
    check_trajectory([Atoms("H2", positions=[[0.02, 1, 1], [4.99, 1, 1]])])  # not periodic: far


def test_large_and_mixed_frames_are_checked():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(7)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5
    big = Atoms(
        numbers=np.full(len(grid), 6), positions=grid + 0.01 * rng.standard_normal(grid.shape)
    )
    small = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    check_trajectory([small, big, small])  # 343 atoms: through ASE's neighbour list
    big.positions[100] = big.positions[7] + [0.0, 0.0, 0.02]
    with pytest.raises(ValueError, match=r"frame 1: atoms 7 \(C\) and 100 \(C\)"):
        check_trajectory([small, big, small])
