"""Check QM9's mapped polarizability tensors against our own B3LYP calculation (needs PySCF).

``python -m tfn.datasets._qm9_dft_check 3 6 32 --out dft.jsonl`` computes, for each QM9 molecule
number given, the static polarizability at QM9's level of theory (B3LYP/6-31G(2df,p), with
Gaussian's exponents for the 2d polarisation functions, 1.6 and 0.4, and VWN-RPA B3LYP) by
central finite differences of the dipole in a field of 0.001 au, **in the frame of QM9's
coordinates**, and compares it with ``info["polarizability"]`` and its three other axis-sign
flips. The frame convention is thus checked on a sample against a calculation that knows nothing of
it. PySCF is not a dependency of tfn (``pip install pyscf``); a 10-atom molecule takes a few
minutes on one core.

The basis differs in details from Gaussian's (pure vs Cartesian d functions), so the tensors agree
to about 0.1-0.2 bohr^3 (up to 1 bohr^3 for the out-of-plane component of aromatic rings), while
a wrong axis assignment or sign is off by several bohr^3 wherever it matters.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

_SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}
_F_EXPONENTS = {"C": 0.8, "N": 1.0, "O": 1.4, "F": 1.85}


def _basis():
    from pyscf import gto

    basis = {"H": gto.basis.load("6-31g", "H") + [[1, [1.1, 1.0]]]}
    for element in "CNOF":
        basis[element] = gto.basis.load("6-31g", element) + [
            [2, [1.6, 1.0]],
            [2, [0.4, 1.0]],
            [3, [_F_EXPONENTS[element], 1.0]],
        ]
    return basis


def b3lyp_polarizability(numbers, positions, field: float = 1e-3) -> np.ndarray:
    """Static polarizability ``[3, 3]`` (bohr^3) in the frame of ``positions`` (Angstrom)."""
    try:
        from pyscf import dft, gto
    except ImportError as error:
        raise ImportError("the DFT check needs PySCF: pip install pyscf") from error
    atoms = [(_SYMBOLS[int(z)], tuple(map(float, p))) for z, p in zip(numbers, positions)]
    mol = gto.M(atom=atoms, basis=_basis(), unit="Angstrom", verbose=0, cart=False)
    reference = dft.RKS(mol)
    reference.xc = "b3lypg"
    reference.conv_tol = 1e-10
    dipole_integrals = mol.intor("int1e_r")
    core = reference.get_hcore()
    reference.kernel()
    density = reference.make_rdm1()

    def dipole(vector):
        calc = dft.RKS(mol)
        calc.xc = "b3lypg"
        calc.conv_tol = 1e-10
        calc.grids = reference.grids
        calc.get_hcore = lambda *args: core + np.einsum("x,xij->ij", vector, dipole_integrals)
        calc.kernel(dm0=density)
        return calc.dip_moment(unit="au", verbose=0)

    tensor = np.zeros((3, 3))
    for j in range(3):
        vector = np.zeros(3)
        vector[j] = field
        tensor[:, j] = (dipole(vector) - dipole(-vector)) / (2 * field)
    return 0.5 * (tensor + tensor.T)


def compare(atoms, reference: np.ndarray) -> dict:
    """Largest element error of the mapped tensor and of its three other sign flips."""
    from tfn.datasets.qm9 import polarizability_sign_flips

    frame = atoms.info["polarizability_frame"]
    standard = frame @ atoms.info["polarizability"] @ frame.T
    errors = [
        float(np.abs(frame.T @ d @ standard @ d @ frame - reference).max())
        for d in polarizability_sign_flips()
    ]
    return {
        "gdb_index": atoms.info["gdb_index"],
        "smiles": atoms.info["smiles"],
        "frame_ok": atoms.info["polarizability_frame_ok"],
        "signs_ok": atoms.info["polarizability_signs_ok"],
        "error_mapped": errors[0],
        "error_other_flips": errors[1:],
        "mapped_is_best": bool(np.argmin(errors) == 0),
        # A flip changes nothing when the entries it touches vanish: then signs are moot.
        "flips_matter": bool(max(errors) - min(errors) > 0.1),
        "dft": reference.tolist(),
    }


def main(argv=None) -> int:
    from tfn.datasets.qm9 import load_qm9

    parser = argparse.ArgumentParser(prog="python -m tfn.datasets._qm9_dft_check")
    parser.add_argument("numbers", type=int, nargs="+", help="QM9 molecule numbers (1-based)")
    parser.add_argument("--out", type=Path, help="append one JSON line per molecule here")
    args = parser.parse_args(argv)
    for atoms in load_qm9(args.numbers, progress=False):
        started = time.perf_counter()
        reference = b3lyp_polarizability(atoms.numbers, atoms.positions)
        result = compare(atoms, reference)
        result["seconds"] = round(time.perf_counter() - started, 1)
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
