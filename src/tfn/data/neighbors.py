"""Neighbour lists (graphs) on batched point clouds, with or without periodic cells.

Convention used by every layer: ``edge_index`` is a LongTensor ``[2, E]`` whose row 0 holds the
*source* ``b`` (the neighbour that sends a message) and row 1 the *destination* ``a`` (the centre
that receives it). The edge vector is ``r_ab = pos[a] - pos[b] = pos[dst] - pos[src]``, as in the
Tensor Field Network paper; with periodic cells :func:`neighbor_list` adds the lattice
translation of the source image, ``cell_shift @ cell[batch[dst]]``. Graphs never contain
self-edges (only periodic images of a point, with a non-zero shift), never connect points of
different clouds, and are returned sorted by ``(dst, src)`` (then by shift).

One implementation serves each job, chosen from ``benchmarks/bench_neighbors.py`` (table and
command in ``docs/neighbors.md``; CPU times, 1 thread):

* clouds without periodicity (:func:`radius_graph`, and :func:`neighbor_list` without a
  periodic axis): a cell list in plain torch, on any device, torch only. Against one vesin call
  per cloud it is 30% faster on 512 molecules of 20 atoms, 0.5 ms slower on 32, even on one
  cloud of 20,000 points, and 17x faster once that cloud has one far point (vesin sizes its
  grid from the bounding box; very elongated open clouds even hang or crash it).
* clouds with a periodic axis (:func:`neighbor_list` with ``cell`` and ``pbc``): vesin
  (``pip install 'tfn[chem]'``), about 4x faster than the torch cell list run on periodic
  images; see :mod:`tfn.data.periodic`.

The torch cell list is robust to arbitrary coordinate spans: along each axis the points of a
cloud are split into *runs* wherever two consecutive coordinates are at least two cutoffs
apart, and each run gets its own cell origin, so the cell coordinates span at most about
``2 k N`` cells per axis however far apart the points are (12,000 points spread over
``[0, 1e8]^3`` with a cutoff of 0.01: 13 ms of CPU time and 7 MB, where clamping the cell
coordinates cost 8.7 s and 6 GB). Cells are a little wider than ``cutoff / k`` (``k`` = 1 or 2),
with a margin that grows with the longest run so that float64 rounding can never put two
points closer than the cutoff more than ``k`` cells apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "full_graph",
    "radius_graph",
    "neighbor_list",
    "edge_vectors",
    "check_positions",
]

# Cells are 1 / K of the cutoff wide (plus a margin) and each point looks at the cells up to K
# away along each axis. K = 2 searches (5/2)^3 = 15.6 cutoff^3 instead of 27 cutoff^3 (K = 1)
# but has 3x more stencil columns: it pays when clouds are several cutoffs wide, not for small
# molecules that fit in a few cutoffs (all their atoms are candidates either way).
_WIDE_RUNS = 3.0  # mean extent of the runs (in cutoffs, along every axis) from which K = 2
# Relative widening of the cells; covers the rounding of the distance test (float32 or float64,
# a few 1e-7 at most).
_CELL_MARGIN = 1e-6
# Two consecutive coordinates (along one axis, in one cloud) this many cutoffs apart start a
# new run with its own cell origin. Anything above one cutoff is correct.
_RUN_GAP = 2.0
# Candidate pairs processed at once (bounds the memory: about 40 bytes per candidate).
_CHUNK = 1 << 22


def _empty_edges(device: torch.device) -> Tensor:
    return torch.empty(2, 0, dtype=torch.long, device=device)


def _compress_batch(batch: Tensor | None, num_points: int, device: torch.device):
    """Map arbitrary cloud ids to ``0 .. B-1``; returns ``(ids [N], B)``."""
    if batch is None:
        return torch.zeros(num_points, dtype=torch.long, device=device), 1
    if not isinstance(batch, Tensor):
        raise ValueError(f"batch must be a torch.Tensor of cloud ids, got {type(batch).__name__}")
    if batch.dim() != 1 or batch.shape[0] != num_points:
        raise ValueError(
            f"batch must have shape [{num_points}] (one cloud id per point), "
            f"got {list(batch.shape)}"
        )
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise ValueError(f"batch must be an integer tensor, got {batch.dtype}")
    if num_points == 0:
        return batch.to(device=device, dtype=torch.long), 0
    uniq, ids = torch.unique(batch.to(device=device, dtype=torch.long), return_inverse=True)
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


# ----------------------------------------------------------------------------- cell list


def _argsort(values: Tensor) -> Tensor:
    """Some sorting permutation of a 1-D tensor (not stable: use on unique keys, or where the
    order of ties does not matter). numpy's sort is several times faster than torch's on CPU."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.argsort(values.numpy()))
    return torch.argsort(values)


def _searchsorted(sorted_values: Tensor, values: Tensor) -> Tensor:
    """Leftmost insertion points (``side="left"``) of ``values`` (any shape) into a 1-D tensor."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.searchsorted(sorted_values.numpy(), values.numpy()))
    return torch.searchsorted(sorted_values, values.contiguous())


def _sort_values(values: Tensor) -> Tensor:
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.numpy()))
    return torch.sort(values).values


def _unique_inverse(values: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique values of a 1-D integer tensor and the index of each value among them."""
    order = _argsort(values)
    ordered = values[order]
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[1:] = ordered[1:] != ordered[:-1]
    inverse = torch.empty_like(ordered)
    inverse[order] = torch.cumsum(new, 0) - 1
    return ordered[new], inverse


class _Axis(NamedTuple):
    """Integer cell coordinates along one axis: ``unique`` (sorted), and per point its
    coordinate and its rank in ``unique``."""

    unique: Tensor
    coord: Tensor
    rank: Tensor


def _cell_coordinates(
    p: Tensor, ids: Tensor, multi: bool, cutoff: float, k: int | None = None
) -> tuple[list[_Axis], int]:
    """Cell coordinates of each point along x, y and z (int64, no clamping).

    Along each axis, the points of each cloud are sorted and cut into runs wherever two
    consecutive coordinates are at least ``_RUN_GAP`` cutoffs apart (no pair can straddle such a
    gap). A run's cells start at its smallest coordinate and consecutive runs are
    ``_CELLS_PER_CUTOFF + 1`` cells apart or more, so cells of different runs (or clouds) are
    never searched together, and a run spans at most ``_RUN_GAP * n`` cutoffs.

    Rounding: with ``rel = fl(x - lo)`` and ``q = fl(rel / h)``, two points of a run whose exact
    coordinates differ by less than ``cutoff (1 + 5e-7)`` have ``q`` differing by at most
    ``(cutoff (1 + 5e-7) + 4 u R) / h`` (``u = 2^-53``, ``R`` the longest run), which the
    widening below keeps ``<= k``: their cells are at most ``k`` apart.
    """
    n = p.shape[0]
    device = p.device
    gap = _RUN_GAP * cutoff
    runs = []
    longest = 0.0
    narrowest = math.inf
    for axis in range(3):
        x = p[:, axis].contiguous()
        order = _argsort(x)
        if multi:  # order by (cloud, x): the rank along x is a unique secondary key
            rank = torch.empty_like(order)
            rank[order] = torch.arange(n, device=device)
            order = _argsort(ids * n + rank)
        xs = x[order]
        start = torch.ones(n, dtype=torch.bool, device=device)
        start[1:] = (xs[1:] - xs[:-1]) >= gap
        if multi:
            cloud = ids[order]
            start[1:] |= cloud[1:] != cloud[:-1]
        run = torch.cumsum(start, 0) - 1
        rel = xs - xs[start][run]
        runs.append((order, start, run, rel))
        last = torch.ones_like(start)
        last[:-1] = start[1:]
        extent = rel[last]
        longest = max(longest, float(extent.max()))
        narrowest = min(narrowest, float(extent.mean()) / cutoff)

    if k is None:
        k = 2 if narrowest >= _WIDE_RUNS else 1
    widen = _CELL_MARGIN + 2.0**-50 * (1.0 + longest / cutoff)
    size = cutoff * (1.0 + widen) / k
    axes = []
    for order, start, run, rel in runs:
        local = torch.floor(rel / size).long()
        last = torch.ones_like(start)
        last[:-1] = start[1:]
        width = local[last] + (1 + k)
        base = torch.cumsum(width, 0) - width
        coord_sorted = base[run] + local  # non-decreasing along `order`
        new = torch.ones_like(start)
        new[1:] = coord_sorted[1:] != coord_sorted[:-1]
        coord = torch.empty_like(coord_sorted)
        coord[order] = coord_sorted
        rank = torch.empty_like(coord_sorted)
        rank[order] = torch.cumsum(new, 0) - 1
        axes.append(_Axis(coord_sorted[new], coord, rank))
    return axes, k


def _shifted_ranks(axis: _Axis, coord: Tensor, rank: Tensor, k: int) -> list[tuple[Tensor, Tensor]]:
    """For ``d = -k .. k``: the rank of ``coord + d`` in ``axis.unique`` and whether present.

    The unique coordinates are sorted integers, so ``coord + d`` can only sit at ranks
    ``rank + j`` with ``j`` between 0 and ``d``: a few gathers, no binary search.
    """
    last = axis.unique.shape[0] - 1
    out = []
    for d in range(-k, k + 1):
        if d == 0:
            out.append((rank, torch.ones_like(rank, dtype=torch.bool)))
            continue
        found = torch.zeros_like(rank)
        hit = torch.zeros_like(rank, dtype=torch.bool)
        step = 1 if d > 0 else -1
        for j in range(step, d + step, step):
            idx = (rank + j).clamp_(0, last)
            match = axis.unique[idx] == coord + d
            found = torch.where(match, idx, found)
            hit |= match
        out.append((found, hit))
    return out


def _z_window(axis: _Axis, coord: Tensor, rank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Ranks ``[lo, hi)`` of the unique z coordinates within ``coord +- k``."""
    last = axis.unique.shape[0] - 1
    lo = rank.clone()
    hi = rank + 1
    for j in range(1, k + 1):
        below = rank - j
        lo -= ((below >= 0) & (axis.unique[below.clamp(min=0)] >= coord - k)).long()
        above = rank + j
        hi += ((above <= last) & (axis.unique[above.clamp(max=last)] <= coord + k)).long()
    return lo, hi


class _Cells(NamedTuple):
    """A cell list with a half stencil.

    ``perm [N]``: point indices sorted by cell (by column ``(cx, cy)``, then ``cz``);
    ``start``, ``count [N, S]``: for the point at each sorted position ``p``, ``S`` ranges of
    sorted positions holding its candidate partners. The first range is the rest of its own
    column (positions after ``p``, up to ``k`` cells higher), the others are the columns of the
    half stencil (offsets ``(dx, dy)`` with ``dx > 0``, or ``dx == 0 < dy``), ``k`` cells down
    to ``k`` cells up. Each unordered pair of points close enough is in
    exactly one range of exactly one of its two points.
    """

    perm: Tensor
    start: Tensor
    count: Tensor


def _build_cells(
    p: Tensor, ids: Tensor, multi: bool, cutoff: float, k: int | None = None
) -> _Cells:
    n = p.shape[0]
    device = p.device
    (ax, ay, az), k = _cell_coordinates(p, ids, multi, cutoff, k)
    ny, nz = ay.unique.shape[0], az.unique.shape[0]
    # Column ids (< N), then cell keys (column, z rank) < N^2: no overflow for any N < 3e9.
    columns, column = _unique_inverse(ax.rank * ny + ay.rank)
    key = column * nz + az.rank
    perm = _argsort(key)
    key = key[perm]

    first = torch.ones(n, dtype=torch.bool, device=device)
    first[1:] = key[1:] != key[:-1]
    cell_of = torch.cumsum(first, 0) - 1  # cell of each sorted position
    cell_start = torch.cat([torch.nonzero(first).flatten(), torch.tensor([n], device=device)])
    cell_key = key[first]
    rep = perm[first]  # one point of each cell
    xs = _shifted_ranks(ax, ax.coord[rep], ax.rank[rep], k)
    ys = _shifted_ranks(ay, ay.coord[rep], ay.rank[rep], k)
    z_lo, z_hi = _z_window(az, az.coord[rep], az.rank[rep], k)

    # Half-stencil columns, one row per offset (queries in cell order: cache-friendly).
    offsets = [
        (dx, dy) for dx in range(-k, k + 1) for dy in range(-k, k + 1) if dx > 0 or (dx == 0 < dy)
    ]
    col_key = torch.stack([xs[dx + k][0] * ny + ys[dy + k][0] for dx, dy in offsets])
    hit = torch.stack([xs[dx + k][1] & ys[dy + k][1] for dx, dy in offsets])
    col = _searchsorted(columns, col_key).clamp_(max=columns.shape[0] - 1)
    hit &= columns[col] == col_key
    lo = cell_start[_searchsorted(cell_key, col * nz + z_lo)]
    hi = cell_start[_searchsorted(cell_key, col * nz + z_hi)]
    count = torch.where(hit, hi - lo, torch.zeros_like(lo)).t()  # [C, H]
    own_end = cell_start[_searchsorted(cell_key, column[rep] * nz + z_hi)]

    after = torch.arange(1, n + 1, device=device)
    start = torch.cat([after[:, None], lo.t()[cell_of]], 1)
    count = torch.cat([(own_end[cell_of] - after)[:, None], count[cell_of]], 1)
    return _Cells(perm, start, count)


def _candidate_chunks(cells: _Cells) -> Iterator[tuple[Tensor, Tensor]]:
    """Candidate pairs ``(src, dst)`` as *sorted positions*, about ``_CHUNK`` at a time."""
    n = cells.perm.shape[0]
    device = cells.perm.device
    total = cells.count.sum(1)
    cum = torch.cumsum(total, 0)
    num = int(cum[-1])
    begin = 0
    while begin < n:
        done = int(cum[begin - 1]) if begin > 0 else 0
        if num - done <= _CHUNK:
            end = n
        else:
            end = int(torch.searchsorted(cum, torch.tensor(done + _CHUNK, device=device)))
            end = min(max(end, begin + 1), n)
        count = cells.count[begin:end].reshape(-1)
        size = int(cum[end - 1]) - done
        index = torch.int32 if n + size < 2**31 else torch.long  # |offsets| <= n + size
        # Piecewise-constant expansions as cumulative sums of jumps (faster than
        # repeat_interleave): dst is the sorted position p for the total[p] candidates of p,
        # src = j + (start - first) of the range holding candidate j.
        first = torch.cumsum(count, 0) - count
        offset = cells.start[begin:end].reshape(-1) - first
        jumps = torch.zeros(size + 1, dtype=index, device=device)
        jumps.index_add_(0, first, torch.diff(offset, prepend=offset.new_zeros(1)).to(index))
        src = torch.cumsum(jumps[:size], 0, dtype=index)
        src += torch.arange(size, dtype=index, device=device)
        point_first = cum[begin:end] - total[begin:end] - done
        jumps.zero_()
        jumps.index_add_(0, point_first, torch.ones_like(point_first, dtype=index))
        dst = torch.cumsum(jumps[:size], 0, dtype=index)
        dst += begin - 1
        yield src, dst
        begin = end


def _cell_list_candidates(pos: Tensor, cutoff: float, ids: Tensor) -> tuple[Tensor, Tensor]:
    """All candidate pairs ``(src, dst)`` (original indices, each unordered pair once).

    Every pair of points of the same cloud closer than ``cutoff`` is among them; the caller
    filters by distance. For tests and diagnostics: the neighbour search streams the chunks.
    """
    p = pos.detach().to(torch.float64)
    multi = bool(ids.numel() > 0 and ids.max() > ids.min())
    cells = _build_cells(p, ids, multi, float(cutoff))
    chunks = list(_candidate_chunks(cells))
    src = torch.cat([s.long() for s, _ in chunks])
    dst = torch.cat([d.long() for _, d in chunks])
    return cells.perm[src], cells.perm[dst]


def _radius_pairs(
    pos: Tensor, cutoff: float, ids: Tensor, num_clouds: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Pairs ``(src, dst)`` of distinct points of the same cloud with ``|r|^2 < cutoff^2``.

    The squared distance is ``(dx*dx + dy*dy) + dz*dz`` computed in ``dtype``; the result is
    sorted by ``(dst, src)``.
    """
    n = pos.shape[0]
    device = pos.device
    if n < 2:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    p = pos.detach().to(torch.float64)
    cells = _build_cells(p, ids, num_clouds > 1, cutoff)
    x, y, z = pos.detach().to(dtype)[cells.perm].t().contiguous()
    c2 = cutoff * cutoff
    found_src, found_dst = [], []
    for src, dst in _candidate_chunks(cells):
        d = x.index_select(0, src) - x.index_select(0, dst)
        d2 = d.mul_(d)
        d = y.index_select(0, src) - y.index_select(0, dst)
        d2 += d.mul_(d)
        d = z.index_select(0, src) - z.index_select(0, dst)
        d2 += d.mul_(d)
        keep = torch.nonzero(d2 < c2).flatten()
        found_src.append(src.index_select(0, keep))
        found_dst.append(dst.index_select(0, keep))
    a = cells.perm[torch.cat(found_dst).long()]
    b = cells.perm[torch.cat(found_src).long()]
    # Each unordered pair was found once: emit both directions, sorted by (dst, src).
    key = _sort_values(torch.cat([a * n + b, b * n + a]))
    return key % n, torch.div(key, n, rounding_mode="floor")


def _keep_closest(dst: Tensor, dist2: Tensor, num_points: int, k: int) -> Tensor:
    """Mask keeping, for each destination, its ``k`` smallest ``dist2`` (ties: earlier edge).

    ``dst`` must be sorted (edges grouped by destination).
    """
    by_dist = torch.argsort(dist2, stable=True)
    by_dst = by_dist[torch.argsort(dst[by_dist], stable=True)]
    deg = torch.bincount(dst, minlength=num_points)
    ptr = torch.cumsum(deg, 0) - deg
    rank = torch.arange(by_dst.shape[0], device=dst.device) - ptr[dst[by_dst]]
    mask = torch.zeros(dst.shape[0], dtype=torch.bool, device=dst.device)
    mask[by_dst] = rank < k
    return mask


def _check_common(where: str, pos: Tensor, cutoff, max_num_neighbors) -> float:
    if not isinstance(pos, Tensor):
        raise ValueError(f"{where}: pos must be a torch.Tensor, got {type(pos).__name__}")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"{where}: pos must have shape [N, 3], got {list(pos.shape)}")
    if not pos.is_floating_point():
        raise ValueError(f"{where}: pos must be a floating-point tensor, got {pos.dtype}")
    try:
        cutoff = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: cutoff must be a number, got {cutoff!r}") from None
    if not (cutoff > 0.0 and math.isfinite(cutoff)):
        raise ValueError(f"{where}: cutoff must be a positive finite number, got {cutoff}")
    if max_num_neighbors is not None and (
        isinstance(max_num_neighbors, bool)
        or not isinstance(max_num_neighbors, int)
        or max_num_neighbors < 0
    ):
        raise ValueError(
            f"{where}: max_num_neighbors must be an integer >= 0 or None, got {max_num_neighbors!r}"
        )
    if pos.shape[0] > 0 and not bool(torch.isfinite(pos.detach()).all()):
        bad = int(torch.nonzero(~torch.isfinite(pos.detach()).all(1))[0, 0])
        raise ValueError(
            f"{where}: pos contains NaN or infinite coordinates (first at point index {bad})"
        )
    return cutoff


def radius_graph(
    pos: Tensor,
    cutoff: float,
    batch: Tensor | None = None,
    max_num_neighbors: int | None = None,
) -> Tensor:
    """Pairs of distinct points of the same cloud closer than ``cutoff``.

    A pair is an edge when ``|pos[dst] - pos[src]|^2 < cutoff^2``, computed in ``pos.dtype``
    (float32 for half-precision inputs). Uses the torch cell list (O(N log N) work, O(N + E)
    memory, any device); output sorted by ``(dst, src)``. For periodic cells see
    :func:`neighbor_list`.

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
    cutoff = _check_common("radius_graph", pos, cutoff, max_num_neighbors)
    n = int(pos.shape[0])
    ids, num_clouds = _compress_batch(batch, n, pos.device)
    dtype = torch.promote_types(pos.dtype, torch.float32)
    src, dst = _radius_pairs(pos, cutoff, ids, num_clouds, dtype)
    if max_num_neighbors is not None:
        p = pos.detach().to(dtype)
        vec = p[dst] - p[src]
        dist2 = (vec[:, 0] * vec[:, 0] + vec[:, 1] * vec[:, 1]) + vec[:, 2] * vec[:, 2]
        keep = _keep_closest(dst, dist2, n, max_num_neighbors)
        src, dst = src[keep], dst[keep]
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
    from tfn.data.validation import check_points  # the one position validator

    check_points(pos, batch)
    if not pos.is_floating_point():
        raise ValueError(f"pos must be a floating-point tensor, got {pos.dtype}")
    n = int(pos.shape[0])
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


# ----------------------------------------------------------------------- neighbor_list


def _as_cells(cell, pbc, where: str) -> tuple[Tensor, Tensor]:
    """``cell`` as float64 CPU ``[B, 3, 3]`` and ``pbc`` as bool CPU ``[B, 3]`` (B >= 1)."""
    if pbc is None:
        raise ValueError(
            f"{where}: cell is given but pbc is None; pass pbc=True (periodic along all three "
            f"lattice vectors), a [3] or [B, 3] boolean mask, or no cell for open boundaries"
        )
    if cell is None:
        raise ValueError(
            f"{where}: pbc is given but cell is None; periodic images need the lattice vectors "
            f"(cell [3, 3] or [B, 3, 3], rows are the lattice vectors)"
        )
    if isinstance(cell, Tensor):
        if cell.is_complex() or cell.dtype == torch.bool:
            raise ValueError(f"{where}: cell must be a real tensor, got {cell.dtype}")
        cell = cell.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            cell = torch.as_tensor(cell, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"{where}: cell must be an array of numbers: {error}") from None
    if cell.dim() == 2:
        cell = cell[None]
    if cell.dim() != 3 or cell.shape[1:] != (3, 3):
        raise ValueError(
            f"{where}: cell must have shape [3, 3] or [B, 3, 3] (rows are lattice vectors), "
            f"got {list(cell.shape)}"
        )
    if not bool(torch.isfinite(cell).all()):
        raise ValueError(f"{where}: cell contains NaN or infinite entries")

    if isinstance(pbc, bool):
        pbc = torch.full((3,), pbc)
    elif isinstance(pbc, Tensor):
        pbc = pbc.detach().cpu()
    else:
        try:
            pbc = torch.as_tensor(pbc)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"{where}: pbc must be booleans: {error}") from None
    if pbc.dtype != torch.bool:
        if pbc.is_floating_point() or pbc.is_complex() or not bool(((pbc == 0) | (pbc == 1)).all()):
            raise ValueError(f"{where}: pbc must be booleans (or 0/1), got {pbc.dtype}")
        pbc = pbc.bool()
    if pbc.dim() == 0:
        pbc = pbc.expand(3)
    if pbc.dim() == 1:
        pbc = pbc[None]
    if pbc.dim() != 2 or pbc.shape[1] != 3:
        raise ValueError(f"{where}: pbc must have shape [3] or [B, 3], got {list(pbc.shape)}")
    b = max(cell.shape[0], pbc.shape[0])
    if cell.shape[0] not in (1, b) or pbc.shape[0] not in (1, b):
        raise ValueError(
            f"{where}: cell ({cell.shape[0]} cells) and pbc ({pbc.shape[0]} rows) disagree "
            f"on the number of clouds"
        )
    return cell.expand(b, 3, 3).contiguous(), pbc.expand(b, 3).contiguous()


def neighbor_list(
    pos: Tensor,
    cutoff: float,
    batch: Tensor | None = None,
    cell: Tensor | None = None,
    pbc: Tensor | None = None,
    *,
    max_num_neighbors: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Pairs of points (and periodic images) of the same cloud closer than ``cutoff``.

    An edge ``(src, dst, shift)`` has ``|pos[dst] - pos[src] + shift @ cell[batch[dst]]| <
    cutoff`` (float64), with ``shift`` the integer image offset of the source, zero along
    non-periodic axes. This is ASE's ``neighbor_list("ijS", atoms, cutoff)`` with ``src = i``,
    ``dst = j``, ``cell_shift = S``. A point is never its own neighbour with a zero shift, but
    sees its own periodic images (and several images of a neighbour) when the cell is smaller
    than twice the cutoff.

    Clouds with a periodic axis use vesin (optional: ``pip install 'tfn[chem]'``), on CPU; the
    others use the torch cell list of :func:`radius_graph` (any device, torch only). Tensors on
    another device are copied to the CPU for vesin and the result moved back.

    Args:
        pos: positions ``[N, 3]`` (finite, any float dtype and device).
        cutoff: radius, ``> 0``.
        batch: cloud id of each point ``[N]`` (need not be sorted), or ``None`` for one cloud.
            With a ``[B, 3, 3]`` cell the ids index the cells: ``0 <= batch < B``.
        cell: lattice vectors as rows (ASE's convention), ``[3, 3]`` (shared by every cloud)
            or ``[B, 3, 3]``; ``None`` for open boundaries. Rows along non-periodic axes are
            ignored (may be zero). Points need not lie inside the cell.
        pbc: periodic axes, ``True``/``False``, ``[3]`` or ``[B, 3]`` booleans; required with
            a cell, ``None`` without one.
        max_num_neighbors: if given, each destination keeps only its ``max_num_neighbors``
            closest sources (ties broken by the order ``(src, shift)``).

    Returns:
        ``(edge_index [2, E] long, cell_shift [E, 3] long)`` on ``pos.device``, sorted by
        ``(dst, src, shift)``.

    Example:
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
        >>> edge_index, shift = neighbor_list(pos, 1.6)
        >>> edge_index.tolist(), shift.tolist()
        ([[1, 0], [0, 1]], [[0, 0, 0], [0, 0, 0]])
    """
    where = "neighbor_list"
    cutoff = _check_common(where, pos, cutoff, max_num_neighbors)
    n = int(pos.shape[0])
    device = pos.device
    if cell is None and pbc is None:
        ids, num_clouds = _compress_batch(batch, n, device)
        src, dst = _radius_pairs(pos, cutoff, ids, num_clouds, torch.float64)
        shift = torch.zeros(src.shape[0], 3, dtype=torch.long, device=device)
        lattice = None
    else:
        cells, periodic = _as_cells(cell, pbc, where)
        ids, _ = _compress_batch(batch, n, torch.device("cpu"))
        cell_index = _cell_index(batch, n, cells.shape[0], where)
        src, dst, shift = _mixed_pairs(pos, cutoff, ids, cell_index, cells, periodic, where)
        lattice = cells.to(device)[cell_index.to(device)] if max_num_neighbors is not None else None
    if max_num_neighbors is not None:
        p = pos.detach().to(torch.float64)
        vec = p[dst] - p[src]
        if lattice is not None:
            vec = vec + (shift.to(torch.float64)[:, :, None] * lattice[dst]).sum(1)
        dist2 = (vec[:, 0] * vec[:, 0] + vec[:, 1] * vec[:, 1]) + vec[:, 2] * vec[:, 2]
        keep = _keep_closest(dst, dist2, n, max_num_neighbors)
        src, dst, shift = src[keep], dst[keep], shift[keep]
    return torch.stack([src, dst]), shift


def _cell_index(batch: Tensor | None, n: int, num_cells: int, where: str) -> Tensor:
    """Index into the cells of each point (CPU long ``[N]``)."""
    if num_cells == 1:  # one cell, shared by every cloud
        return torch.zeros(n, dtype=torch.long)
    if batch is None:
        raise ValueError(f"{where}: {num_cells} cells given but batch is None (one cloud)")
    ids = batch.detach().cpu().long()
    if n > 0 and (int(ids.min()) < 0 or int(ids.max()) >= num_cells):
        raise ValueError(
            f"{where}: batch ids must index the {num_cells} cells (0 <= batch < {num_cells}), "
            f"got ids in [{int(ids.min())}, {int(ids.max())}]"
        )
    return ids


def _mixed_pairs(
    pos: Tensor,
    cutoff: float,
    ids: Tensor,
    cell_index: Tensor,
    cells: Tensor,
    periodic: Tensor,
    where: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Edges of clouds that may or may not be periodic, sorted by ``(dst, src, shift)``.

    ``ids`` (cloud of each point, ``0 .. B-1``), ``cell_index``, ``cells`` and ``periodic`` are
    on the CPU; the result is on ``pos.device``.
    """
    n = pos.shape[0]
    device = pos.device
    point_periodic = periodic.any(1)[cell_index]
    if not bool(point_periodic.any()):  # no periodic cloud: the torch cell list, on pos.device
        ids = ids.to(device)
        multi = bool(n > 0 and ids.max() > ids.min())
        src, dst = _radius_pairs(pos, cutoff, ids, 2 if multi else 1, torch.float64)
        return src, dst, torch.zeros(src.shape[0], 3, dtype=torch.long, device=device)

    from tfn.data.periodic import periodic_pairs

    parts = []
    everything = bool(point_periodic.all())
    sel = torch.arange(n) if everything else torch.nonzero(point_periodic).flatten()
    src, dst, shift = periodic_pairs(
        pos.detach().to(device="cpu", dtype=torch.float64)[sel],
        cutoff,
        ids[sel],
        cell_index[sel],
        cells,
        periodic,
        where,
    )
    parts.append((src, dst, shift) if everything else (sel[src], sel[dst], shift))
    if not everything:  # the open clouds of the batch: the torch cell list, on pos.device
        sel = torch.nonzero(~point_periodic).flatten()
        sub = ids[sel]
        multi = bool(sub.max() > sub.min())
        src, dst = _radius_pairs(
            pos[sel.to(device)], cutoff, sub.to(device), 2 if multi else 1, torch.float64
        )
        src, dst = sel[src.cpu()], sel[dst.cpu()]
        parts.append((src, dst, torch.zeros(src.shape[0], 3, dtype=torch.long)))
    src, dst, shift = _sorted_edges(
        torch.cat([p[0] for p in parts]),
        torch.cat([p[1] for p in parts]),
        torch.cat([p[2] for p in parts]),
        n,
    )
    return src.to(device), dst.to(device), shift.to(device)


def _sorted_edges(src: Tensor, dst: Tensor, shift: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """CPU edges sorted by ``(dst, src, shift_x, shift_y, shift_z)`` (all distinct)."""
    if src.shape[0] == 0:
        return src, dst, shift
    src_np, dst_np, shift_np = src.numpy(), dst.numpy(), shift.numpy()
    # per column: numpy's axis-0 reductions of an [E, 3] array are several times slower
    lo = [int(shift_np[:, k].min()) for k in range(3)]
    bits_point = max(1, int(n - 1).bit_length())
    bits_shift = [max(1, (int(shift_np[:, k].max()) - lo[k]).bit_length()) for k in range(3)]
    if 2 * bits_point + sum(bits_shift) <= 63:
        # One int64 key per edge, fields packed as bits: sorting the values and unpacking them
        # is several times faster than any argsort.
        columns = [np.ascontiguousarray(shift_np[:, k]) for k in range(3)]
        key = dst_np << bits_point
        key |= src_np
        for k in range(3):
            key <<= bits_shift[k]
            column = columns[k]
            column -= lo[k]
            key |= column
        key.sort()
        out = np.empty((3, key.shape[0]), dtype=np.int64)
        for k in (2, 1, 0):
            np.bitwise_and(key, (1 << bits_shift[k]) - 1, out=out[k])
            out[k] += lo[k]
            key >>= bits_shift[k]
        new_src = key & ((1 << bits_point) - 1)
        key >>= bits_point
        return torch.from_numpy(new_src), torch.from_numpy(key), torch.from_numpy(out.T)
    order = np.lexsort((shift_np[:, 2], shift_np[:, 1], shift_np[:, 0], src_np, dst_np))
    order = torch.from_numpy(order)
    return src[order], dst[order], shift[order]
