"""Neighbour lists of periodic clouds with vesin (the ``tfn[chem]`` extra).

:func:`tfn.data.neighbor_list` sends here the clouds with at least one periodic axis; it is
the only caller. vesin (https://github.com/Luthaf/vesin) is a C++ cell list, about 4x faster
on CPU than the torch cell list run on periodic images (``docs/neighbors.md``). How it is
called, and why:

* every axis is made periodic: the rows of the cell along non-periodic axes (possibly zero or
  parallel to the others) are replaced by orthogonal vectors longer than the extent of the
  cloud along them plus two cutoffs, so no image along them comes within the cutoff. vesin
  0.6.2 accepts per-axis flags, but sizes its grid from the points' bounding box along open
  axes, and with a cloud elongated along one (100 points over 1e5 cutoffs) it hangs or
  crashes the process; its fully periodic path is the most exercised one, and the shifts it
  returns along padded axes are 0.
* positions, cell and cutoff are scaled by a power of two bringing the cutoff into ``[1, 2)``:
  exact in floating point, and it keeps vesin's absolute thresholds (it refuses cutoffs below
  ``1e-6``) out of the way.
* vesin caps its grid at 1e5 cells by shrinking every axis in proportion, which for a very
  elongated cell can leave an axis with zero cells and crash the process (SIGFPE). The grid
  is predicted here; where it would degenerate, vesin is called with a larger search radius
  (a coarser grid) and the pairs are filtered back to the cutoff.
* points more than a thousand cells away from the unit cell are wrapped first (vesin stores
  cell indices in 32 bits); their shifts are corrected accordingly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["periodic_pairs"]

# vesin's cap on the number of cells of its grid (cpu_cell_list.cpp, MAX_NUMBER_OF_CELLS).
_VESIN_MAX_CELLS = 1e5
# Points whose fractional coordinates exceed this are wrapped into the cell before vesin.
_WRAP_BEYOND = 1000.0
# Relative singular-value floor below which the periodic lattice vectors count as dependent.
_SINGULAR = 1e-10


def _vesin():
    try:
        import vesin
    except ImportError as error:
        raise ImportError(
            "periodic neighbour lists need vesin: pip install 'tfn[chem]' (or pip install vesin)"
        ) from error
    return vesin


def check_cell(cell: Tensor, pbc: Tensor, index: int, where: str) -> None:
    """Raise ``ValueError`` when the periodic lattice vectors of one cloud are degenerate."""
    axes = [k for k in range(3) if bool(pbc[k])]
    vectors = cell[axes]
    norms = torch.linalg.vector_norm(vectors, dim=1)
    if bool((norms == 0).any()):
        zero = [axes[i] for i in range(len(axes)) if float(norms[i]) == 0.0]
        raise ValueError(
            f"{where}: the cell of cloud {index} has a zero lattice vector along periodic "
            f"axis {zero}: {cell.tolist()}"
        )
    sv = torch.linalg.svdvals(vectors / norms[:, None])
    if float(sv.min()) <= _SINGULAR * float(sv.max()):
        raise ValueError(
            f"{where}: the cell of cloud {index} is singular along its periodic axes {axes} "
            f"(the lattice vectors are linearly dependent): {cell.tolist()}"
        )


def _padded_box(points: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """Fully periodic box equivalent to ``cell`` with open axes ``~pbc`` for these points."""
    box = cell.copy()
    periodic = np.flatnonzero(pbc)
    open_axes = np.flatnonzero(~pbc)
    if open_axes.size:
        # Orthonormal basis of the complement of the periodic vectors' span.
        _, _, vt = np.linalg.svd(cell[periodic], full_matrices=True)
        complement = vt[periodic.size :]
        for axis, direction in zip(open_axes, complement):
            t = points @ direction
            extent = float(t.max() - t.min()) if t.size else 0.0
            box[axis] = direction * (extent + 2.0 * cutoff)
    return box


def _face_distances(box: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of the cell, per axis."""
    volume = abs(float(np.linalg.det(box)))
    out = np.empty(3)
    for axis in range(3):
        other = np.cross(box[(axis + 1) % 3], box[(axis + 2) % 3])
        out[axis] = volume / float(np.linalg.norm(other))
    return out


def _vesin_grid(faces: np.ndarray, cutoff: float) -> list[float]:
    """vesin 0.6's number of cells per axis (``CellList::CellList``)."""
    n = [max(1.0, math.trunc(d / cutoff)) for d in faces]
    if n[0] * n[1] * n[2] > _VESIN_MAX_CELLS:
        ratio_xy, ratio_yz = n[0] / n[1], n[1] / n[2]
        n2 = math.trunc(np.cbrt(_VESIN_MAX_CELLS / (ratio_xy * ratio_yz * ratio_yz)))
        n1 = math.trunc(ratio_yz * n2)
        n = [math.trunc(ratio_xy * n1), n1, n2]
    return n


def _search_radius(faces: np.ndarray, cutoff: float) -> float:
    """``cutoff``, or a larger radius for which vesin's grid is not capped (no empty axis)."""
    if min(_vesin_grid(faces, cutoff)) >= 1:
        return cutoff
    radius = max(cutoff, float(np.prod(faces) / _VESIN_MAX_CELLS) ** (1.0 / 3.0))
    while np.prod([max(1.0, math.trunc(d / radius)) for d in faces]) > _VESIN_MAX_CELLS:
        radius *= 1.25
    return radius


def _cloud_pairs(
    calculators: dict, points: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, S)`` of one cloud; vesin's ``full_list`` neighbour list."""
    vesin = _vesin()
    # Exact rescaling: the cutoff in [1, 2).
    scale = 2.0 ** -math.floor(math.log2(cutoff))
    points = points * scale
    cutoff = cutoff * scale
    box = _padded_box(points, cell * scale, pbc, cutoff)
    if not (np.isfinite(points).all() and np.isfinite(box).all()):
        raise ValueError("neighbor_list: coordinates overflow once scaled to the cutoff")

    fractional = points @ np.linalg.inv(box)
    far = np.abs(fractional) > _WRAP_BEYOND
    wrap = None
    if far.any():
        wrap = np.where(far, np.floor(fractional), 0.0)
        points = points - wrap @ box

    radius = _search_radius(_face_distances(box), cutoff)
    calculator = calculators.get(radius)
    if calculator is None:
        threads = max(1, torch.get_num_threads())  # follow torch's setting, not all cores
        try:
            calculator = vesin.NeighborList(cutoff=radius, full_list=True, n_threads=threads)
        except TypeError:  # older vesin has no n_threads
            calculator = vesin.NeighborList(cutoff=radius, full_list=True)
        calculators[radius] = calculator
    quantities = "ijS" if radius == cutoff else "ijSd"
    try:
        # copy=False: views of vesin's buffers, copied right below by astype
        found = calculator.compute(points, box, True, quantities, copy=False)
    except RuntimeError as error:
        raise RuntimeError(f"neighbor_list: vesin failed: {error}") from error
    i, j, shift = (np.asarray(v).astype(np.int64) for v in found[:3])
    distance = np.array(found[3]) if radius != cutoff else None
    del found  # vesin's buffers: valid only until the calculator's next call
    if wrap is not None:
        # vec = p'_j - p'_i + S' box with p' = p - w box: the true shift is S' + w_i - w_j.
        w = wrap.astype(np.int64)
        shift = shift + w[i] - w[j]
    keep = np.ones(i.shape[0], dtype=bool)
    if distance is not None:
        keep &= distance < cutoff
    open_axes = np.flatnonzero(~pbc)
    if open_axes.size:  # no image across a padded axis is within the cutoff; be exact anyway
        keep &= (shift[:, open_axes] == 0).all(1)
    if not keep.all():
        i, j, shift = i[keep], j[keep], shift[keep]
    return i, j, shift


def periodic_pairs(
    pos: Tensor,
    cutoff: float,
    ids: Tensor,
    cell_index: Tensor,
    cells: Tensor,
    pbc: Tensor,
    where: str = "neighbor_list",
) -> tuple[Tensor, Tensor, Tensor]:
    """Edges of periodic clouds: ``(src, dst, cell_shift)``, CPU long tensors, unsorted.

    Args:
        pos: float64 CPU positions ``[N, 3]`` of the points of periodic clouds only.
        cutoff: radius.
        ids: cloud of each point ``[N]`` (any integers; points of one cloud share an id).
        cell_index: index into ``cells`` of each point ``[N]``.
        cells: float64 CPU ``[B, 3, 3]``, lattice vectors as rows.
        pbc: bool CPU ``[B, 3]``; every cloud given here has at least one periodic axis.

    ``src``, ``dst`` index ``pos``. Each cloud is computed by one vesin call.
    """
    n = pos.shape[0]
    empty = torch.zeros(0, dtype=torch.long)
    if n == 0:
        return empty, empty, torch.zeros(0, 3, dtype=torch.long)
    order = torch.argsort(ids, stable=True)
    bounds = torch.nonzero(torch.diff(ids[order])).flatten() + 1
    starts = [0, *bounds.tolist()]
    ends = [*bounds.tolist(), n]
    points_all = pos.numpy()
    order_np = order.numpy()
    cells_np = cells.numpy()
    pbc_np = pbc.numpy()
    checked = set()
    calculators: dict = {}
    src, dst, shifts = [], [], []
    for begin, end in zip(starts, ends):
        members = order_np[begin:end]
        c = int(cell_index[members[0]])
        if c not in checked:
            check_cell(cells[c], pbc[c], c, where)
            checked.add(c)
        i, j, shift = _cloud_pairs(
            calculators, points_all[members], cells_np[c], pbc_np[c], float(cutoff)
        )
        if members[-1] - members[0] == end - begin - 1:  # contiguous points (sorted batch)
            i += members[0]
            j += members[0]
        else:
            i, j = members[i], members[j]
        src.append(i)
        dst.append(j)
        shifts.append(shift)
    if len(src) == 1:
        return torch.from_numpy(src[0]), torch.from_numpy(dst[0]), torch.from_numpy(shifts[0])
    return (
        torch.from_numpy(np.concatenate(src)),
        torch.from_numpy(np.concatenate(dst)),
        torch.from_numpy(np.concatenate(shifts)),
    )
