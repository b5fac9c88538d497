"""Neighbour lists (graphs) on batched point clouds.

Convention used by every layer: ``edge_index`` is a LongTensor ``[2, E]`` whose row 0 holds the
*source* ``b`` (the neighbour that sends a message) and row 1 the *destination* ``a`` (the centre
that receives it). The edge vector is ``r_ab = pos[a] - pos[b] = pos[dst] - pos[src]``, as in the
Tensor Field Network paper. Graphs never contain self-edges, never connect points of different
clouds, and are returned sorted by ``(dst, src)``.

:func:`radius_graph` uses a cell list written in plain torch (O(N) work and memory for clouds of
bounded density; no ``N x N`` matrix). The cell-list helpers (``_cell_list``,
``_cell_list_candidates``) only deal with positions and cloud ids, so periodic images can later be
handled by feeding them shifted copies of the points and passing the matching Cartesian ``shifts``
to :func:`edge_vectors`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["full_graph", "radius_graph", "edge_vectors", "check_positions"]

# A cell and its neighbours: offsets (-1, 0, 1)^3.
_NUM_NEIGHBOR_CELLS = 27
# Relative amount by which cells are wider than the cutoff.
_CELL_MARGIN = 1e-6
# Largest cell coordinate along an axis (float64 rounding of coordinates up to there stays
# below _CELL_MARGIN, about 2^-21).
_MAX_CELL = float(2**30)


def _empty_edges(device: torch.device) -> Tensor:
    return torch.empty(2, 0, dtype=torch.long, device=device)


def _compress_batch(batch: Tensor | None, num_points: int, device: torch.device):
    """Map arbitrary cloud ids to ``0 .. B-1``; returns ``(ids [N], B)``."""
    if batch is None:
        return torch.zeros(num_points, dtype=torch.long, device=device), 1
    if batch.dim() != 1 or batch.shape[0] != num_points:
        raise ValueError(
            f"batch must have shape [{num_points}] (one cloud id per point), "
            f"got {list(batch.shape)}"
        )
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise ValueError(f"batch must be an integer tensor, got {batch.dtype}")
    if num_points == 0:
        return batch.to(torch.long), 0
    uniq, ids = torch.unique(batch.to(torch.long), return_inverse=True)
    return ids, int(uniq.shape[0])


def _sort_edges(src: Tensor, dst: Tensor, num_points: int) -> Tensor:
    """Stack into ``[2, E]`` sorted by ``(dst, src)``."""
    order = torch.argsort(dst * num_points + src)
    return torch.stack([src[order], dst[order]])


def full_graph(batch: Tensor | None, num_points: int | None = None) -> Tensor:
    """All ordered pairs ``(src, dst)``, ``src != dst``, of points in the same cloud.

    Args:
        batch: cloud id of each point ``[N]`` (need not be sorted), or ``None`` for one cloud.
        num_points: number of points; required when ``batch`` is ``None``.

    Returns:
        ``edge_index [2, E]`` with ``E = sum_c n_c (n_c - 1)``, sorted by ``(dst, src)``.

    Example:
        >>> full_graph(torch.tensor([0, 0, 1, 1, 1])).shape
        torch.Size([2, 8])
        >>> full_graph(None, num_points=3).tolist()
        [[1, 2, 0, 2, 0, 1], [0, 0, 1, 1, 2, 2]]
    """
    if batch is None:
        if num_points is None:
            raise ValueError("full_graph: give batch or num_points")
        device = torch.device("cpu")
    else:
        if num_points is not None and num_points != batch.shape[0]:
            raise ValueError(
                f"full_graph: num_points={num_points} but batch has {batch.shape[0]} entries"
            )
        num_points = int(batch.shape[0])
        device = batch.device
    if num_points < 0:
        raise ValueError(f"full_graph: num_points must be >= 0, got {num_points}")
    ids, num_clouds = _compress_batch(batch, num_points, device)
    if num_points == 0:
        return _empty_edges(device)

    # Points grouped by cloud: cloud c occupies positions ptr[c] .. ptr[c] + n[c] - 1 of `order`.
    order = torch.argsort(ids, stable=True)
    sizes = torch.bincount(ids, minlength=num_clouds)
    ptr = torch.cumsum(sizes, 0) - sizes
    cloud = ids[order]  # cloud of the point at each grouped position
    local = torch.arange(num_points, device=device) - ptr[cloud]  # rank inside its cloud

    # Each grouped position p receives from the other n - 1 points of its cloud.
    deg = sizes[cloud] - 1
    pos_dst = torch.repeat_interleave(torch.arange(num_points, device=device), deg)
    first = torch.cumsum(deg, 0) - deg
    j = torch.arange(pos_dst.shape[0], device=device) - first[pos_dst]  # 0 .. n-2
    j = j + (j >= local[pos_dst]).long()  # skip the point itself
    pos_src = ptr[cloud[pos_dst]] + j
    return _sort_edges(order[pos_src], order[pos_dst], num_points)


def _rank(sorted_values: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Index of each of ``values`` in the sorted unique ``sorted_values``, and whether present."""
    idx = torch.searchsorted(sorted_values, values.contiguous()).clamp_(
        max=sorted_values.shape[0] - 1
    )
    return idx, sorted_values[idx] == values


class _Cells(NamedTuple):
    """A cell list: ``C`` occupied cells, points grouped by cell.

    ``cell [N]``: cell of each point; ``order [N]``: point indices grouped by cell (stable);
    ``start [C]``, ``count [C]``: where each cell's points lie in ``order``; ``neighbors [C, 27]``:
    the occupied cells of the same cloud at offsets ``(-1, 0, 1)^3`` (x slowest, the cell itself
    included), ``-1`` where that cell is empty.
    """

    cell: Tensor
    order: Tensor
    start: Tensor
    count: Tensor
    neighbors: Tensor


def _cell_list(pos: Tensor, cutoff: float, ids: Tensor) -> _Cells:
    """Assign points to cubic cells at least ``cutoff`` wide and find each cell's neighbours.

    Two points of the same cloud closer than ``cutoff`` are always in the same or adjacent cells.
    Only occupied cells exist; they are numbered ``0 .. C-1`` by sorting the integer key
    ``(cloud, cx, cy, cz)`` one axis at a time (each level compressed to ``< N`` values, so no key
    exceeds ``N^2`` whatever the spread of the points or the number of clouds).
    """
    n = pos.shape[0]
    device = pos.device
    p = pos.detach().to(torch.float64)
    # Per-cloud lower corner, so cell coordinates are >= 0 in every cloud.
    lo = torch.full((int(ids.max()) + 1, 3), math.inf, dtype=p.dtype, device=device)
    lo = lo.scatter_reduce(0, ids[:, None].expand(n, 3), p, reduce="amin", include_self=True)
    rel = p - lo[ids]
    # Cells a little wider than the cutoff, so rounding can never put two points closer than the
    # cutoff two cells apart. Coordinates beyond _MAX_CELL (absurdly spread clouds or outliers)
    # share the last cell of their axis: merging cells only adds candidates, never loses pairs.
    size = cutoff * (1.0 + _CELL_MARGIN)
    coord = torch.floor(rel / size).clamp_(max=_MAX_CELL).long()

    axes = [torch.unique(coord[:, k]) for k in range(3)]
    levels = []
    key = ids
    for k in range(3):
        r, _ = _rank(axes[k], coord[:, k])
        key, inverse = torch.unique(key * n + r, return_inverse=True)
        levels.append(key)
        key = inverse
    cell = key
    order = torch.argsort(cell, stable=True)
    count = torch.bincount(cell, minlength=int(levels[-1].shape[0]))
    start = torch.cumsum(count, 0) - count

    # Coordinates and cloud of each cell, from its first point.
    rep = order[start]
    cell_coord = coord[rep]
    # Look the neighbours up one axis at a time: 3, then 9, then 27 candidate keys per cell, in
    # the order (-1, 0, 1)^3 with x slowest.
    step = torch.tensor([-1, 0, 1], dtype=torch.long, device=device)
    key = ids[rep][:, None]
    found = torch.ones_like(key, dtype=torch.bool)
    for k in range(3):
        r, hit = _rank(axes[k], cell_coord[:, k : k + 1] + step)  # [C, 3]
        key, hit2 = _rank(levels[k], (key * n)[:, :, None] + r[:, None, :])
        found = found[:, :, None] & hit[:, None, :] & hit2
        key, found = key.flatten(1), found.flatten(1)
    neighbors = torch.where(found, key, torch.full_like(key, -1))
    return _Cells(cell, order, start, count, neighbors)


def _cell_list_candidates(pos: Tensor, cutoff: float, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Candidate pairs ``(src, dst)`` (self-pairs included) from a cell list.

    Every pair of points of the same cloud (same entry of ``ids``) closer than ``cutoff`` is among
    the candidates: each point is paired with the points of its own cell and of the 26 adjacent
    cells. The caller filters by distance.
    """
    device = pos.device
    cells = _cell_list(pos, cutoff, ids)
    nb = cells.neighbors[cells.cell].reshape(-1)  # [N * 27]
    valid = nb >= 0
    nb = nb.clamp(min=0)
    count = torch.where(valid, cells.count[nb], torch.zeros_like(nb))
    start = cells.start[nb]

    slot = torch.repeat_interleave(torch.arange(nb.shape[0], device=device), count)
    first = torch.cumsum(count, 0) - count
    within = torch.arange(slot.shape[0], device=device) - first[slot]
    src = cells.order[start[slot] + within]
    dst = torch.div(slot, _NUM_NEIGHBOR_CELLS, rounding_mode="floor")
    return src, dst


def radius_graph(
    pos: Tensor,
    cutoff: float,
    batch: Tensor | None = None,
    max_num_neighbors: int | None = None,
) -> Tensor:
    """Pairs of distinct points of the same cloud closer than ``cutoff``.

    A pair is an edge when ``|pos[dst] - pos[src]|^2 < cutoff^2`` (computed in ``pos.dtype``).
    Uses an O(N) cell list; works on any device, output sorted by ``(dst, src)``.

    Args:
        pos: positions ``[N, 3]`` (finite).
        cutoff: radius, ``> 0``.
        batch: cloud id of each point ``[N]`` (need not be sorted), or ``None`` for one cloud.
        max_num_neighbors: if given, each destination keeps only its ``max_num_neighbors``
            closest sources (ties broken by the smaller source index).

    Returns:
        ``edge_index [2, E]`` (row 0 source, row 1 destination).

    Example:
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
        >>> radius_graph(pos, cutoff=1.5).tolist()
        [[1, 0], [0, 1]]
        >>> radius_graph(pos, cutoff=2.5, batch=torch.tensor([0, 0, 1])).tolist()
        [[1, 0], [0, 1]]
    """
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"radius_graph: pos must have shape [N, 3], got {list(pos.shape)}")
    cutoff = float(cutoff)
    if not (cutoff > 0.0 and math.isfinite(cutoff)):
        raise ValueError(f"radius_graph: cutoff must be a positive finite number, got {cutoff}")
    if max_num_neighbors is not None and max_num_neighbors < 0:
        raise ValueError(f"radius_graph: max_num_neighbors must be >= 0, got {max_num_neighbors}")
    n = int(pos.shape[0])
    ids, _ = _compress_batch(batch, n, pos.device)
    if n == 0:
        return _empty_edges(pos.device)
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("radius_graph: pos contains NaN or infinite coordinates")

    src, dst = _cell_list_candidates(pos, cutoff, ids)
    p = pos.detach()
    vec = p[dst] - p[src]
    dist2 = (vec * vec).sum(-1)
    keep = (dist2 < cutoff * cutoff) & (src != dst)
    src, dst, dist2 = src[keep], dst[keep], dist2[keep]

    order = torch.argsort(dst * n + src)
    src, dst, dist2 = src[order], dst[order], dist2[order]
    if max_num_neighbors is not None:
        # Order by (dst, distance, src): stable sorts on distance, then on dst.
        by_dist = torch.argsort(dist2, stable=True)
        by_dst = by_dist[torch.argsort(dst[by_dist], stable=True)]
        deg = torch.bincount(dst, minlength=n)
        ptr = torch.cumsum(deg, 0) - deg
        rank = torch.arange(by_dst.shape[0], device=pos.device) - ptr[dst[by_dst]]
        mask = torch.zeros(src.shape[0], dtype=torch.bool, device=pos.device)
        mask[by_dst] = rank < max_num_neighbors
        src, dst = src[mask], dst[mask]
    return torch.stack([src, dst])


def edge_vectors(
    pos: Tensor, edge_index: Tensor, shifts: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Edge vectors ``r_ab = pos[dst] - pos[src] (+ shifts)`` and their lengths.

    Differentiable with respect to ``pos`` (and ``shifts``); the length is smooth away from zero.

    Args:
        pos: positions ``[N, 3]``.
        edge_index: ``[2, E]`` (row 0 source, row 1 destination).
        shifts: optional per-edge Cartesian offsets ``[E, 3]`` added to the vectors (for periodic
            images: the lattice translation of the source image).

    Returns:
        ``(vec [E, 3], length [E])``.

    Example:
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
        >>> vec, length = edge_vectors(pos, torch.tensor([[0], [1]]))
        >>> vec.tolist(), length.tolist()
        ([[3.0, 4.0, 0.0]], [5.0])
    """
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_vectors: edge_index must be [2, E], got {list(edge_index.shape)}")
    src, dst = edge_index[0], edge_index[1]
    vec = pos[dst] - pos[src]
    if shifts is not None:
        if shifts.shape != vec.shape:
            raise ValueError(
                f"edge_vectors: shifts must have shape {list(vec.shape)}, got {list(shifts.shape)}"
            )
        vec = vec + shifts
    return vec, torch.linalg.vector_norm(vec, dim=-1)


def check_positions(pos: Tensor, batch: Tensor | None = None, min_distance: float = 1e-6) -> None:
    """Validate positions before building graphs; raise ``ValueError`` when unusable.

    Checks: shape ``[N, 3]``, ``N > 0``, finite coordinates, and no two points of the same cloud
    closer than ``min_distance`` (O(N), via the cell list; ``min_distance=0`` skips this check).

    Example:
        >>> check_positions(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
        >>> check_positions(torch.zeros(2, 3))
        Traceback (most recent call last):
        ...
        ValueError: points 0 and 1 (cloud 0) coincide: distance 0 < min_distance=1e-06
    """
    if not isinstance(pos, Tensor):
        raise ValueError(f"pos must be a torch.Tensor, got {type(pos).__name__}")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape [N, 3], got {list(pos.shape)}")
    n = int(pos.shape[0])
    if n == 0:
        raise ValueError("empty batch: pos has no points")
    if not pos.is_floating_point():
        raise ValueError(f"pos must be a floating-point tensor, got {pos.dtype}")
    bad = ~torch.isfinite(pos.detach()).all(1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"pos has a non-finite (NaN or inf) coordinate at point index {i}: "
            f"{pos[i].detach().tolist()}"
        )
    ids, _ = _compress_batch(batch, n, pos.device)
    if min_distance < 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")
    if min_distance == 0:
        return
    edges = radius_graph(pos, min_distance, ids)
    if edges.shape[1] > 0:
        src, dst = edges[:, 0].tolist()
        i, j = min(src, dst), max(src, dst)
        d = float(torch.linalg.vector_norm(pos[i].detach() - pos[j].detach()))
        cloud = int(batch[i]) if batch is not None else 0
        raise ValueError(
            f"points {i} and {j} (cloud {cloud}) coincide: distance {d:.3g} "
            f"< min_distance={min_distance}"
        )
