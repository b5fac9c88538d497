"""Synthetic data sets from the Tensor Field Network paper.

Every generator is deterministic given its ``seed`` (its own ``numpy.random.default_rng``; the
global random state is never touched), computes in float64 and returns a ``list`` of
:class:`tfn.data.PointCloud` in the requested ``dtype`` (float32 by default); batch them with
:func:`tfn.data.collate`.

==========  ==================  ============================  =================================
generator   points              features (irreps)             target (irreps)
==========  ==================  ============================  =================================
tetris      4 cube centres      ones ``[4, 1]`` (``1x0e``)     ``"label"``: class, per cloud
gravity     2-10 point masses   masses ``[n, 1]`` (``1x0e``)   ``"acceleration"`` ``[n, 3]``,
                                                              per point (``1o``)
inertia     15 point masses     masses ``[n, 1]`` (``1x0e``)   ``"inertia"`` ``[3, 3]``, per
                                                              cloud (``0e + 2e``)
==========  ==================  ============================  =================================

* :func:`tetris`: classify the 8 shapes of 4 cubes (``TETRIS_SHAPES``); train on the canonical
  orientations, test on random rotations. :func:`mirror` reflects a cloud and maps the label to
  the mirror image's class (the two chiral shapes swap).
* :func:`gravity`: acceleration of each mass due to all others (Newton, constant ``G``);
  :func:`gravitational_acceleration` computes it for any positions.
* :func:`inertia`: inertia tensor about the origin (the first point, mass 0);
  :func:`inertia_tensor` computes it for any positions.

Molecular dynamics (imported on first use; they need ``tfn[chem]``, and ``tfn[md]`` to generate):

* :func:`generate_md` (:mod:`tfn.datasets.md`): MD17-style GFN2-xTB trajectories of an MD17
  molecule (:data:`MD17_SMILES`) or any SMILES, written to extxyz, resumable;
* :func:`read_trajectory` (:mod:`tfn.datasets.io`): extxyz, MD17 and revised-MD17 npz files as
  :class:`ase.Atoms` with ``info["energy"]`` (eV) and ``arrays["forces"]`` (eV/Å);
  :func:`check_trajectory` validates frames (NaN, atoms on top of each other, missing labels).

QM9 (:mod:`tfn.datasets.qm9`, imported on first use; needs ``tfn[chem]``):

* :func:`load_qm9`: the 130,831 molecules as :class:`ase.Atoms` by QM9's 1-based numbers, with
  the 12 usual properties (energies in eV), Mulliken charges and the polarizability tensor in
  the frame of the positions; parsed once from qm9pack, then read from a binary cache;
* :func:`qm9_split` (fixed, seeded), :func:`qm9_by_num_atoms`;
* :func:`min_over_sign_flips_loss` and :func:`polarizability_sign_flips` for the tensor's
  axis-sign ambiguity (``docs/qm9.md``).

Example:
    >>> from tfn.data import collate
    >>> batch = collate(gravity(4, seed=0))
    >>> batch.num_clouds, batch.targets["acceleration"].shape[0] == batch.num_points
    (4, True)
"""

from tfn.datasets.gravity import gravitational_acceleration, gravity
from tfn.datasets.inertia import inertia, inertia_tensor
from tfn.datasets.tetris import TETRIS_POINTS, TETRIS_SHAPES, mirror, tetris

# Imported on first access, so that ``import tfn.datasets`` stays free of ASE, RDKit and tblite.
_LAZY = {
    "KCAL_PER_MOL": "tfn.datasets.io",
    "MD17_SMILES": "tfn.datasets.md",
    "check_trajectory": "tfn.datasets.io",
    "generate_md": "tfn.datasets.md",
    "read_trajectory": "tfn.datasets.io",
    "load_qm9": "tfn.datasets.qm9",
    "min_over_sign_flips_loss": "tfn.datasets.qm9",
    "polarizability_sign_flips": "tfn.datasets.qm9",
    "qm9_by_num_atoms": "tfn.datasets.qm9",
    "qm9_split": "tfn.datasets.qm9",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KCAL_PER_MOL",
    "MD17_SMILES",
    "TETRIS_POINTS",
    "TETRIS_SHAPES",
    "check_trajectory",
    "generate_md",
    "gravitational_acceleration",
    "gravity",
    "inertia",
    "inertia_tensor",
    "load_qm9",
    "min_over_sign_flips_loss",
    "mirror",
    "polarizability_sign_flips",
    "qm9_by_num_atoms",
    "qm9_split",
    "read_trajectory",
    "tetris",
]
