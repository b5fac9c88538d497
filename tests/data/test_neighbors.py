import math
import time

import numpy as np
import pytest
import torch

from tfn.data import check_positions, edge_vectors, full_graph, neighbor_list, radius_graph
from tfn.data.neighbors import _cell_list_candidates


def brute_radius(pos, cutoff, batch=None):
    """Reference: every pair of distinct points of the same cloud closer than cutoff."""
    n = pos.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long)
    diff = pos[None, :, :] - pos[:, None, :]  # diff[a, b] = pos[b] - pos[a] -> dst b, src a
    d2 = (diff * diff).sum(-1)
    mask = (d2 < cutoff * cutoff) & (batch[:, None] == batch[None, :])
    mask.fill_diagonal_(False)
    src, dst = torch.nonzero(mask, as_tuple=True)
    order = torch.argsort(dst * n + src)
    return torch.stack([src[order], dst[order]])


def random_batch(sizes, gen, dtype, scale=2.0, shuffle=False):
    pos = (torch.rand(sum(sizes), 3, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    batch = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    if shuffle:
        perm = torch.randperm(batch.shape[0], generator=gen)
        pos, batch = pos[perm], batch[perm]
    return pos.to(dtype), batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shuffle", [False, True])
def test_radius_graph_matches_brute_force(dtype, shuffle):
    gen = torch.Generator().manual_seed(0)
    sizes = [1, 7, 30, 120, 2, 55]
    for cutoff in [0.3, 0.9, 1.7, 10.0]:  # 10.0 > size of every cloud
        pos, batch = random_batch(sizes, gen, dtype, shuffle=shuffle)
        got = radius_graph(pos, cutoff, batch)
        assert got.dtype == torch.long
        assert torch.equal(got, brute_radius(pos, cutoff, batch))
        # no edge crosses clouds, no self-edges
        assert bool((batch[got[0]] == batch[got[1]]).all())
        assert bool((got[0] != got[1]).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radius_graph_cell_boundaries_and_negative_coordinates(dtype):
    # Integer grid in [-3, 3]^3 scaled by the cutoff: many points lie exactly on cell boundaries
    # and many distances equal the cutoff exactly (excluded: strict inequality).
    r = torch.arange(-3, 4, dtype=dtype)
    grid = torch.cartesian_prod(r, r, r)
    for cutoff, spacing in [(1.0, 1.0), (0.5, 0.5), (1.0, 0.5), (2.0, 1.0), (1.5, 1.0)]:
        pos = grid * spacing - 0.25
        got = radius_graph(pos, cutoff)
        assert torch.equal(got, brute_radius(pos, cutoff))
    # spacing == cutoff: only points at distance < cutoff, i.e. none
    assert radius_graph(grid, 1.0).shape == (2, 0)
    # cutoff slightly above spacing: the 6 axis neighbours of an interior point
    got = radius_graph(grid, 1.0001)
    interior = 3 * 49 + 3 * 7 + 3  # index of (0, 0, 0)
    assert int((got[1] == interior).sum()) == 6


def test_radius_graph_far_apart_clouds_and_tiny_cutoff():
    gen = torch.Generator().manual_seed(1)
    pos, batch = random_batch([40, 40, 40], gen, torch.float64)
    pos[batch == 1] += 1e4  # one cloud very far away
    pos[batch == 2] -= 3e3
    for cutoff in [1e-3, 0.5, 3.0]:
        assert torch.equal(radius_graph(pos, cutoff, batch), brute_radius(pos, cutoff, batch))
    # a large batch id does not matter
    assert torch.equal(radius_graph(pos, 0.5, batch * 1000), brute_radius(pos, 0.5, batch))


def test_cell_list_robust_to_outliers():
    # A far outlier must not merge the other points into one cell (no N^2 candidates).
    gen = torch.Generator().manual_seed(7)
    for far in [1e6, 1e12, 1e300]:
        pos = torch.rand(1500, 3, generator=gen, dtype=torch.float64)
        pos[0] = far
        ids = torch.zeros(1500, dtype=torch.long)
        src, _ = _cell_list_candidates(pos, 0.01, ids)
        assert src.shape[0] < 30 * 1500
        assert torch.equal(radius_graph(pos, 0.05), brute_radius(pos, 0.05))
    check_positions(pos)


def test_radius_graph_many_tiny_clouds():
    gen = torch.Generator().manual_seed(8)
    sizes = [2, 3] * 150
    pos, batch = random_batch(sizes, gen, torch.float64, scale=1e4, shuffle=True)
    for cutoff in [1e-6, 5e3]:
        got = radius_graph(pos, cutoff, batch)
        assert torch.equal(got, brute_radius(pos, cutoff, batch))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_radius_graph_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(9)
    pos, batch = random_batch([300, 1000, 5], gen, torch.float32, shuffle=True)
    for max_nb in [None, 4]:
        cpu = radius_graph(pos, 0.5, batch, max_num_neighbors=max_nb)
        gpu = radius_graph(pos.cuda(), 0.5, batch.cuda(), max_num_neighbors=max_nb)
        assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
    assert torch.equal(full_graph(batch.cuda()).cpu(), full_graph(batch))
    check_positions(pos.cuda(), batch.cuda())
    with pytest.raises(ValueError, match="coincide"):
        check_positions(torch.zeros(2, 3, device="cuda"))


def test_radius_graph_edge_cases():
    assert radius_graph(torch.zeros(0, 3), 1.0).shape == (2, 0)
    assert radius_graph(torch.zeros(1, 3), 1.0).shape == (2, 0)
    with pytest.raises(ValueError, match="cutoff"):
        radius_graph(torch.zeros(3, 3), 0.0)
    with pytest.raises(ValueError, match="shape"):
        radius_graph(torch.zeros(3, 2), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        radius_graph(torch.tensor([[0.0, 0.0, float("nan")]]), 1.0)


def test_radius_graph_orientation_convention():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    edges = radius_graph(pos, 2.0)
    vec, length = edge_vectors(pos, edges)
    # row 1 is the destination: vec = pos[dst] - pos[src]
    assert edges.tolist() == [[1, 0], [0, 1]]
    assert vec.tolist() == [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert length.tolist() == [1.0, 1.0]


def test_max_num_neighbors_keeps_closest():
    gen = torch.Generator().manual_seed(2)
    pos, batch = random_batch([50, 80], gen, torch.float64, shuffle=True)
    cutoff, k = 1.5, 5
    full = radius_graph(pos, cutoff, batch)
    got = radius_graph(pos, cutoff, batch, max_num_neighbors=k)
    # still sorted by (dst, src) and a subset of the full graph
    n = pos.shape[0]
    key = got[1] * n + got[0]
    assert bool((key[1:] > key[:-1]).all())
    full_keys = set((full[1] * n + full[0]).tolist())
    assert set(key.tolist()) <= full_keys
    for a in range(n):
        src_all = full[0][full[1] == a]
        src_kept = got[0][got[1] == a]
        assert src_kept.shape[0] == min(k, src_all.shape[0])
        d_all = (pos[src_all] - pos[a]).norm(dim=1).sort().values
        d_kept = (pos[src_kept] - pos[a]).norm(dim=1).sort().values
        assert torch.equal(d_kept, d_all[: src_kept.shape[0]])
    assert radius_graph(pos, cutoff, batch, max_num_neighbors=0).shape == (2, 0)


def test_radius_graph_large_cloud_runs():
    gen = torch.Generator().manual_seed(3)
    pos = torch.rand(20_000, 3, generator=gen) * 20.0
    edges = radius_graph(pos, 1.0)
    assert edges.shape[0] == 2
    # sanity: 4/3 pi * density (2.5) ~ 10.5 neighbours inside; the boundary lowers the mean
    mean_degree = edges.shape[1] / pos.shape[0]
    assert 8.0 < mean_degree < 10.5
    # spot check a few destinations against a direct computation
    for a in [0, 123, 19_999]:
        d = (pos - pos[a]).pow(2).sum(1)
        expected = torch.nonzero((d < 1.0) & (torch.arange(20_000) != a)).flatten()
        assert torch.equal(edges[0][edges[1] == a], expected)


def test_full_graph():
    batch = torch.tensor([2, 0, 0, 2, 1, 2, 0, 0])  # unsorted, cloud sizes 4, 1, 3
    edges = full_graph(batch)
    assert edges.shape == (2, 4 * 3 + 0 + 3 * 2)
    assert bool((batch[edges[0]] == batch[edges[1]]).all())
    assert bool((edges[0] != edges[1]).all())
    pairs = set(map(tuple, edges.t().tolist()))
    assert len(pairs) == edges.shape[1]
    expected = {
        (i, j) for i in range(8) for j in range(8) if i != j and int(batch[i]) == int(batch[j])
    }
    assert pairs == expected
    # sorted by (dst, src)
    key = edges[1] * 8 + edges[0]
    assert bool((key[1:] > key[:-1]).all())
    # same as a radius graph with a huge cutoff
    pos = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(edges, radius_graph(pos, 1e3, batch))


def test_full_graph_counts_and_single_cloud():
    sizes = [5, 1, 9, 2]
    batch = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    edges = full_graph(batch)
    counts = torch.bincount(batch[edges[1]], minlength=len(sizes))
    assert counts.tolist() == [s * (s - 1) for s in sizes]
    assert full_graph(None, num_points=4).shape == (2, 12)
    assert full_graph(None, num_points=1).shape == (2, 0)
    assert full_graph(torch.zeros(0, dtype=torch.long)).shape == (2, 0)
    with pytest.raises(ValueError):
        full_graph(None)
    with pytest.raises(ValueError):
        full_graph(batch, num_points=3)


def test_edge_vectors_shifts_and_gradcheck():
    gen = torch.Generator().manual_seed(4)
    pos = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    edges = full_graph(None, num_points=6)
    shifts = torch.randn(edges.shape[1], 3, generator=gen, dtype=torch.float64)
    vec, length = edge_vectors(pos, edges, shifts)
    assert torch.allclose(vec, pos[edges[1]] - pos[edges[0]] + shifts)
    assert torch.allclose(length, vec.norm(dim=1))

    def f(p):
        v, length = edge_vectors(p, edges)
        return v, length

    assert torch.autograd.gradcheck(f, (pos,))
    assert torch.autograd.gradgradcheck(f, (pos,))
    shifts.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, s: edge_vectors(p, edges, s), (pos, shifts))
    with pytest.raises(ValueError, match="shifts"):
        edge_vectors(pos, edges, shifts[:3])


def test_check_positions_accepts_valid():
    gen = torch.Generator().manual_seed(5)
    pos, batch = random_batch([10, 20], gen, torch.float32)
    check_positions(pos, batch)
    # the same point in two different clouds is fine
    check_positions(torch.zeros(2, 3), torch.tensor([0, 1]))
    check_positions(torch.zeros(2, 3), min_distance=0.0)  # check disabled


def test_check_positions_errors():
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        check_positions(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        check_positions(torch.zeros(3))
    with pytest.raises(ValueError, match="empty input"):
        check_positions(torch.zeros(0, 3))
    pos = torch.randn(5, 3, generator=torch.Generator().manual_seed(6))
    pos[3, 1] = float("nan")
    with pytest.raises(ValueError, match="point 3 are NaN or infinite"):
        check_positions(pos)
    pos[3, 1] = float("inf")
    with pytest.raises(ValueError, match="point 3 are NaN or infinite"):
        check_positions(pos)
    pos[3, 1] = 0.0
    pos[4] = pos[1] + 1e-8
    with pytest.raises(ValueError, match="points 1 and 4"):
        check_positions(pos)
    with pytest.raises(ValueError, match=r"points 2 and 5 \(cloud 7\)"):
        check_positions(
            torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 0, 5], [0, 0, 0], [1, 0, 0], [0, 0, 5]]),
            torch.tensor([3, 4, 7, 5, 6, 7]),
        )
    with pytest.raises(ValueError, match="batch"):
        check_positions(torch.zeros(2, 3), torch.tensor([0]))


# ------------------------------------------------------------------ torch cell list: properties


@pytest.fixture(params=["auto", "k1", "k2"])
def cells_per_cutoff(request, monkeypatch):
    """Run a test with the automatic choice of cells per cutoff, and forcing each choice."""
    import tfn.data.neighbors as nb

    if request.param == "k1":
        monkeypatch.setattr(nb, "_WIDE_RUNS", math.inf)
    elif request.param == "k2":
        monkeypatch.setattr(nb, "_WIDE_RUNS", -1.0)
    return request.param


def clustered_cloud(gen, n, dtype=torch.float64):
    """Tight clusters (some points coinciding or on a grid) scattered over very different scales."""
    centers = torch.randn(5, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [1.0, 1e3, 1e-3, 30.0, 1e6], dtype=torch.float64
    ).view(5, 1)
    which = torch.randint(0, 5, (n,), generator=gen)
    spread = torch.tensor([0.3, 0.05, 1e-4, 2.0, 0.5], dtype=torch.float64)[which]
    pos = centers[which] + torch.randn(n, 3, generator=gen, dtype=torch.float64) * spread[:, None]
    pos[: n // 10] = pos[n // 10 : 2 * (n // 10)]  # coincident points
    return pos.to(dtype)


def test_radius_graph_property_random_clustered_and_huge_spans(cells_per_cutoff):
    gen = torch.Generator().manual_seed(11)
    for trial in range(12):
        n = int(torch.randint(2, 300, (1,), generator=gen))
        kind = trial % 3
        if kind == 0:  # uniform, cutoff from tiny to larger than the cloud
            pos = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 4
        elif kind == 1:
            pos = clustered_cloud(gen, n)
        else:  # log-uniform magnitudes with random signs: spans up to 1e12 cutoffs
            mag = 10.0 ** (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 12 - 3)
            pos = mag * torch.sign(torch.randn(n, 3, generator=gen, dtype=torch.float64))
        num_clouds = int(torch.randint(1, 4, (1,), generator=gen))
        batch = torch.randint(0, num_clouds, (n,), generator=gen)
        for cutoff in [1e-3, 0.1, 0.7, 5.0]:
            for dtype in [torch.float64, torch.float32]:
                p = pos.to(dtype)
                assert torch.equal(radius_graph(p, cutoff, batch), brute_radius(p, cutoff, batch))


def test_radius_graph_grid_boundaries_both_stencils(cells_per_cutoff):
    r = torch.arange(-4, 5, dtype=torch.float64)
    grid = torch.cartesian_prod(r, r, r)
    for cutoff, spacing in [(1.0, 1.0), (1.0, 0.5), (2.0, 1.0), (1.0000001, 1.0), (0.5, 0.25)]:
        pos = grid * spacing + 0.125
        assert torch.equal(radius_graph(pos, cutoff), brute_radius(pos, cutoff))


def sweep_radius(pos, cutoff):
    """Reference for sparse clouds: pairs within the cutoff along x, then the full distance."""
    order = torch.argsort(pos[:, 0])
    xs = pos[order, 0]
    hi = torch.searchsorted(xs, xs + cutoff)
    width = hi - torch.arange(xs.shape[0])
    a = torch.repeat_interleave(torch.arange(xs.shape[0]), width)
    b = torch.arange(a.shape[0]) - (torch.cumsum(width, 0) - width)[a] + a
    a, b = order[a], order[b]
    d2 = ((pos[a] - pos[b]) ** 2).sum(1)
    keep = (d2 < cutoff * cutoff) & (a != b)
    a, b = a[keep], b[keep]
    return _sorted_pairs(torch.cat([a, b]), torch.cat([b, a]), pos.shape[0])


def _sorted_pairs(src, dst, n):
    key = torch.unique(dst * n + src)
    return torch.stack([key % n, key // n])


def test_radius_graph_huge_span_is_fast_and_small():
    # 12,000 points over 1e8 with cutoff 0.05 (2e9 cutoffs): the clamped cell coordinates of the
    # previous version put the far points in one cell (4.6 s, 2.2 GB for no edges).
    gen = torch.Generator().manual_seed(12)
    pos = torch.rand(12_000, 3, generator=gen, dtype=torch.float64) * 1e8
    # plant pairs at 0.04 (edges) and 0.06 (not) from 100 of the points
    direction = torch.nn.functional.normalize(
        torch.randn(200, 3, generator=gen, dtype=torch.float64)
    )
    pos[-200:-100] = pos[:100] + 0.04 * direction[:100]
    pos[-100:] = pos[100:200] + 0.06 * direction[100:]
    ids = torch.zeros(pos.shape[0], dtype=torch.long)
    start = time.perf_counter()
    edges = radius_graph(pos, 0.05)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert torch.equal(edges, sweep_radius(pos, 0.05))
    assert edges.shape[1] == 200
    # memory: the candidate pairs (what blew up quadratically) stay a few per point
    src, _ = _cell_list_candidates(pos, 0.05, ids)
    assert src.shape[0] < 2 * pos.shape[0]
    # the same with float32 positions and several clouds
    batch = torch.arange(pos.shape[0]) % 7
    got = radius_graph(pos, 0.05, batch)
    ref = sweep_radius(pos, 0.05)
    assert torch.equal(got, ref[:, batch[ref[0]] == batch[ref[1]]])


def test_radius_graph_many_clouds_on_one_line_and_on_top_of_each_other():
    gen = torch.Generator().manual_seed(13)
    pos, batch = random_batch([4] * 200, gen, torch.float64, scale=1.0, shuffle=True)
    # every cloud at the same place: only the batch separates them
    assert torch.equal(radius_graph(pos, 0.8, batch), brute_radius(pos, 0.8, batch))
    # clouds strung along x, 1.5 cutoffs apart (one run holds several clouds)
    pos[:, 0] += batch.double() * 1.5
    assert torch.equal(radius_graph(pos, 1.0, batch), brute_radius(pos, 1.0, batch))


def test_radius_graph_chunks_agree(monkeypatch):
    import tfn.data.neighbors as nb

    gen = torch.Generator().manual_seed(14)
    pos, batch = random_batch([300, 200], gen, torch.float64, shuffle=True)
    expected = brute_radius(pos, 0.9, batch)
    monkeypatch.setattr(nb, "_CHUNK", 997)  # many chunks, some points alone in theirs
    assert torch.equal(radius_graph(pos, 0.9, batch), expected)


def test_radius_graph_errors_name_the_problem():
    with pytest.raises(ValueError, match="floating-point"):
        radius_graph(torch.zeros(3, 3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="point index 1"):
        radius_graph(torch.tensor([[0.0, 0, 0], [float("inf"), 0, 0]]), 1.0)
    with pytest.raises(ValueError, match="max_num_neighbors"):
        radius_graph(torch.zeros(3, 3), 1.0, max_num_neighbors=-1)
    with pytest.raises(ValueError, match="cutoff"):
        radius_graph(torch.zeros(3, 3), float("nan"))


# ------------------------------------------------------------------------------ neighbor_list


def test_neighbor_list_without_cell_is_radius_graph():
    gen = torch.Generator().manual_seed(20)
    pos, batch = random_batch([30, 1, 50], gen, torch.float64, shuffle=True)
    edges, shift = neighbor_list(pos, 1.1, batch)
    assert edges.dtype == torch.long and shift.dtype == torch.long
    assert torch.equal(edges, radius_graph(pos, 1.1, batch))
    assert shift.shape == (edges.shape[1], 3) and not bool(shift.any())
    # float32 positions: the distance test is done in float64
    p32 = pos.float()
    edges32, _ = neighbor_list(p32, 1.1, batch)
    assert torch.equal(edges32, brute_radius(p32.double(), 1.1, batch))
    e, s = neighbor_list(torch.zeros(0, 3), 1.0)
    assert e.shape == (2, 0) and s.shape == (0, 3)


def test_neighbor_list_works_without_vesin(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vesin", None)  # `import vesin` now fails
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]])
    assert neighbor_list(pos, 1.0)[0].tolist() == [[1, 0], [0, 1]]
    # a cloud with a cell but no periodic axis does not need vesin either
    edges, _ = neighbor_list(pos, 1.0, cell=torch.eye(3), pbc=False)
    assert edges.tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ImportError, match=r"pip install 'tfn\[chem\]'"):
        neighbor_list(pos, 1.0, cell=torch.eye(3), pbc=True)


def brute_periodic(pos, cell, pbc, cutoff):
    """Reference over explicit images: sorted (dst, src, shift) triples (numpy float64).

    For a pair with ``d = pos[j] - pos[i]``, an image within the cutoff has
    ``S_k = (vec - d) . b_k`` with ``|vec| < cutoff`` (``b_k`` the dual of the periodic lattice
    vectors), so every ``S_k`` in ``-d . b_k +- cutoff |b_k|`` is tried.
    """
    pos = np.asarray(pos, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    n = pos.shape[0]
    periodic = np.flatnonzero(pbc)
    d = pos[None, :, :] - pos[:, None, :]  # [i, j]
    low = np.zeros((n, n, 3), dtype=np.int64)
    widths = [1, 1, 1]
    if periodic.size:
        dual = np.linalg.pinv(cell[periodic])  # [3, m]
        for col, axis in enumerate(periodic):
            radius = cutoff * np.linalg.norm(dual[:, col])
            low[..., axis] = np.floor(-d @ dual[:, col] - radius).astype(np.int64)
            widths[axis] = int(np.ceil(2 * radius)) + 2
    offsets = np.array(np.meshgrid(*map(range, widths), indexing="ij")).reshape(3, -1).T
    shifts = low[:, :, None, :] + offsets[None, None]  # [i, j, o, 3]
    vec = d[:, :, None, :] + shifts @ cell
    i, j, o = np.nonzero((vec**2).sum(-1) < cutoff * cutoff)
    s = shifts[i, j, o]
    keep = ~((i == j) & (s == 0).all(1))
    i, j, s = i[keep], j[keep], s[keep]
    return sorted(zip(j.tolist(), i.tolist(), map(tuple, s.tolist())))


def triples(edges, shift):
    return list(zip(edges[1].tolist(), edges[0].tolist(), map(tuple, shift.tolist())))


def ase_triples(pos, cell, pbc, cutoff):
    ase_neighborlist = pytest.importorskip("ase.neighborlist")
    import ase

    atoms = ase.Atoms(positions=np.asarray(pos), cell=np.asarray(cell), pbc=np.asarray(pbc))
    i, j, S, D = ase_neighborlist.neighbor_list("ijSD", atoms, cutoff)
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], i, j))
    return list(zip(j[order].tolist(), i[order].tolist(), map(tuple, S[order].tolist()))), D[order]


def random_cell(gen, small=False):
    scale = 0.8 + 2.0 * np.random.default_rng(int(gen.integers(1 << 30))).random(3)
    if not small:
        scale = scale * 3
    return np.diag(scale) + gen.normal(0.0, 0.35, (3, 3)) * scale.mean()


def test_neighbor_list_matches_ase():
    pytest.importorskip("vesin")
    gen = np.random.default_rng(21)
    pbcs = [(True, True, True), (True, True, False), (False, True, False), (True, False, True)]
    checked = 0
    for trial in range(24):
        pbc = pbcs[trial % len(pbcs)]
        cell = random_cell(gen, small=trial % 2 == 0)  # small: cells below twice the cutoff
        n = int(gen.integers(1, 25))
        pos = gen.random((n, 3)) @ cell + gen.normal(0.0, 1.5, (n, 3))  # also outside the cell
        cutoff = float(gen.uniform(0.5, 4.0))
        expected, vectors = ase_triples(pos, cell, pbc, cutoff)
        edges, shift = neighbor_list(
            torch.tensor(pos), cutoff, cell=torch.tensor(cell), pbc=torch.tensor(pbc)
        )
        assert triples(edges, shift) == expected  # same set, sorted by (dst, src, shift)
        # edge_vec = pos[dst] - pos[src] + shift @ cell is ASE's D
        vec, _ = edge_vectors(torch.tensor(pos), edges, shift.double() @ torch.tensor(cell))
        assert np.allclose(vec.numpy(), vectors, atol=1e-10)
        checked += len(expected)
    assert checked > 1000


def test_neighbor_list_small_cell_sees_its_own_images():
    pytest.importorskip("vesin")
    cell = torch.diag(torch.tensor([1.0, 1.0, 10.0], dtype=torch.float64))
    pos = torch.tensor([[0.2, 0.3, 5.0]], dtype=torch.float64)
    edges, shift = neighbor_list(pos, 1.5, cell=cell, pbc=torch.tensor([True, True, True]))
    # the 8 in-plane images within 1.5 (4 at distance 1, 4 at sqrt(2)); no zero-shift self pair
    assert edges.shape[1] == 8 and bool((edges == 0).all())
    assert sorted(map(tuple, shift.tolist())) == sorted(
        (a, b, 0) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)
    )
    # several images of the same neighbour
    pos2 = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    edges, shift = neighbor_list(pos2, 1.2, cell=cell, pbc=torch.tensor([True, False, False]))
    assert triples(edges, shift) == brute_periodic(pos2, cell, (True, False, False), 1.2)
    assert triples(edges, shift).count((1, 0, (-1, 0, 0))) == 1
    assert sum(1 for t in triples(edges, shift) if t[:2] == (1, 0)) == 2  # x = 0.5 and -0.5


def test_neighbor_list_open_axes_ignore_their_cell_rows():
    pytest.importorskip("vesin")
    gen = np.random.default_rng(22)
    pos = gen.random((40, 3)) * [3.0, 3.0, 12.0]
    good = np.diag([3.0, 3.0, 12.0])
    expected, _ = ase_triples(pos, good, (True, True, False), 2.5)
    for third in [np.zeros(3), np.array([3.0, 0.0, 0.0]), np.array([1e-9, 0, 0]), good[2] * 1e6]:
        cell = good.copy()
        cell[2] = third  # zero, parallel to a, tiny, huge: all meaningless along an open axis
        edges, shift = neighbor_list(torch.tensor(pos), 2.5, cell=torch.tensor(cell), pbc=[1, 1, 0])
        assert triples(edges, shift) == expected
        assert not bool(shift[:, 2].any())


def test_neighbor_list_batched_mixed_clouds_and_shuffled_batch():
    pytest.importorskip("vesin")
    gen = np.random.default_rng(23)
    sizes = [7, 1, 12, 0, 9, 5]
    cells = np.stack([random_cell(gen, small=True) for _ in sizes])
    pbc = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 1], [0, 0, 0], [0, 1, 1]], dtype=bool)
    batch = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    pos = gen.random((batch.shape[0], 3)) * 3
    perm = gen.permutation(batch.shape[0])
    batch, pos = batch[perm], pos[perm]
    cutoff = 2.2
    edges, shift = neighbor_list(
        torch.tensor(pos), cutoff, torch.tensor(batch), torch.tensor(cells), torch.tensor(pbc)
    )
    expected = []
    for c in range(len(sizes)):
        members = np.flatnonzero(batch == c)
        for dst, src, s in brute_periodic(pos[members], cells[c], pbc[c], cutoff):
            expected.append((int(members[dst]), int(members[src]), s))
    assert triples(edges, shift) == sorted(expected)
    # float32 inputs on the same batch give the same graph (computed in float64)
    edges32, shift32 = neighbor_list(
        torch.tensor(pos).float(), cutoff, torch.tensor(batch), torch.tensor(cells).float(), pbc
    )
    cells32 = torch.tensor(cells).float().double().numpy()
    pos32 = torch.tensor(pos).float().double().numpy()
    expected32 = []
    for c in range(len(sizes)):
        members = np.flatnonzero(batch == c)
        for dst, src, s in brute_periodic(pos32[members], cells32[c], pbc[c], cutoff):
            expected32.append((int(members[dst]), int(members[src]), s))
    assert triples(edges32, shift32) == sorted(expected32)


def test_neighbor_list_shared_cell_for_several_clouds():
    pytest.importorskip("vesin")
    gen = np.random.default_rng(24)
    cell = random_cell(gen, small=True)
    pos = gen.random((20, 3)) * 2
    batch = np.repeat([5, 9], 10)  # any ids when the cell is shared
    edges, shift = neighbor_list(
        torch.tensor(pos), 2.0, torch.tensor(batch), torch.tensor(cell), True
    )
    expected = []
    for ids in (np.arange(10), np.arange(10, 20)):
        for dst, src, s in brute_periodic(pos[ids], cell, (True, True, True), 2.0):
            expected.append((int(ids[dst]), int(ids[src]), s))
    assert triples(edges, shift) == sorted(expected)


def test_neighbor_list_extreme_inputs_match_brute_force():
    pytest.importorskip("vesin")
    gen = np.random.default_rng(25)
    # tiny length scale (vesin refuses cutoffs below 1e-6, ASE's bins hang here)
    pos = gen.random((30, 3)) * 1e-7
    cell = np.eye(3) * 1e-7 + gen.normal(0, 1e-8, (3, 3))
    got = neighbor_list(torch.tensor(pos), 3e-8, cell=torch.tensor(cell), pbc=True)
    assert triples(*got) == brute_periodic(pos, cell, (True,) * 3, 3e-8)
    # points far outside the cell
    pos = gen.random((20, 3)) * 3
    pos[0] += 1e7
    pos[1] -= [3e4, 0.0, 0.0]
    cell = np.eye(3) * 3 + 0.3 * np.triu(np.ones((3, 3)), 1)
    got = neighbor_list(torch.tensor(pos), 2.0, cell=torch.tensor(cell), pbc=True)
    wrapped = pos - np.floor(pos @ np.linalg.inv(cell)) @ cell
    reference = brute_periodic(wrapped, cell, (True,) * 3, 2.0)
    # shifts refer to the unwrapped points: S = S_wrapped + w_src - w_dst
    w = np.floor(pos @ np.linalg.inv(cell)).astype(int)
    reference = sorted((d, s, tuple((np.array(S) + w[s] - w[d]).tolist())) for d, s, S in reference)
    assert triples(*got) == reference
    # a very elongated periodic cell (vesin alone: zero cells along x, y and SIGFPE) and an
    # open axis spanning 1e6 cutoffs (vesin alone, with per-axis flags: hangs)
    pos = gen.random((60, 3)) * [10.0, 10.0, 8.0]
    pos[:10, 2] += 1e6 * gen.random(10)
    for cell, pbc in [
        (np.diag([10.0, 10.0, 2e6]), (True,) * 3),
        (np.diag([10.0, 10.0, 0.0]), (1, 1, 0)),
    ]:
        got = neighbor_list(torch.tensor(pos), 3.0, cell=torch.tensor(cell), pbc=pbc)
        expected = brute_periodic(pos, cell, pbc, 3.0)
        assert len(expected) > 100 and triples(*got) == expected


def test_neighbor_list_max_num_neighbors():
    pytest.importorskip("vesin")
    gen = np.random.default_rng(26)
    cell = random_cell(gen, small=True)
    pos = torch.tensor(gen.random((15, 3)) * 2)
    cell_t = torch.tensor(cell)
    full = neighbor_list(pos, 3.0, cell=cell_t, pbc=True)
    got = neighbor_list(pos, 3.0, cell=cell_t, pbc=True, max_num_neighbors=6)
    full_t, got_t = triples(*full), triples(*got)
    assert got_t == sorted(got_t) and set(got_t) <= set(full_t)
    vec_full, d_full = edge_vectors(pos, full[0], full[1].double() @ cell_t)
    _, d_got = edge_vectors(pos, got[0], got[1].double() @ cell_t)
    for a in range(15):
        kept = d_got[got[0][1] == a].sort().values
        assert kept.shape[0] == min(6, int((full[0][1] == a).sum()))
        assert torch.allclose(kept, d_full[full[0][1] == a].sort().values[: kept.shape[0]])


def test_neighbor_list_errors():
    pos = torch.rand(4, 3, dtype=torch.float64)
    cell = torch.eye(3, dtype=torch.float64) * 2
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        neighbor_list(pos[:, :2], 1.0)
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_list(pos, -1.0, cell=cell, pbc=True)
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_list(pos, 0.0)
    bad = pos.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        neighbor_list(bad, 1.0, cell=cell, pbc=True)
    with pytest.raises(ValueError, match="pbc is given but cell is None"):
        neighbor_list(pos, 1.0, pbc=True)
    with pytest.raises(ValueError, match="cell is given but pbc is None"):
        neighbor_list(pos, 1.0, cell=cell)
    with pytest.raises(ValueError, match=r"cell must have shape \[3, 3\] or \[B, 3, 3\]"):
        neighbor_list(pos, 1.0, cell=torch.eye(2), pbc=True)
    with pytest.raises(ValueError, match=r"pbc must have shape \[3\] or \[B, 3\]"):
        neighbor_list(pos, 1.0, cell=cell, pbc=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="pbc must be booleans"):
        neighbor_list(pos, 1.0, cell=cell, pbc=torch.tensor([0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        neighbor_list(pos, 1.0, cell=cell * float("inf"), pbc=True)
    with pytest.raises(ValueError, match="batch ids must index the 2 cells"):
        neighbor_list(pos, 1.0, torch.tensor([0, 0, 1, 2]), cell.expand(2, 3, 3), True)
    with pytest.raises(ValueError, match="batch is None"):
        neighbor_list(pos, 1.0, None, cell.expand(2, 3, 3), True)
    with pytest.raises(ValueError, match="disagree on the number of clouds"):
        neighbor_list(
            pos,
            1.0,
            torch.tensor([0, 0, 1, 1]),
            cell.expand(2, 3, 3),
            torch.ones(3, 3, dtype=torch.bool),
        )
    pytest.importorskip("vesin")
    singular = torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"singular along its periodic axes \[0, 1, 2\]"):
        neighbor_list(pos, 1.0, cell=singular, pbc=True)
    with pytest.raises(ValueError, match=r"zero lattice vector along periodic axis \[2\]"):
        neighbor_list(pos, 1.0, cell=torch.diag(torch.tensor([1.0, 1.0, 0.0])), pbc=True)
    # singular along an open axis only is fine
    neighbor_list(pos, 1.0, cell=singular, pbc=[False, True, True])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_neighbor_list_cuda_matches_cpu():
    pytest.importorskip("vesin")
    gen = np.random.default_rng(27)
    pos = torch.tensor(gen.random((40, 3)) * 3)
    batch = torch.tensor(np.repeat([0, 1], 20))
    cell = torch.tensor(np.stack([random_cell(gen, small=True) for _ in range(2)]))
    pbc = torch.tensor([[True, True, True], [False, False, False]])
    cpu = neighbor_list(pos, 2.0, batch, cell, pbc)
    gpu = neighbor_list(pos.cuda(), 2.0, batch.cuda(), cell.cuda(), pbc.cuda())
    assert gpu[0].is_cuda and gpu[1].is_cuda
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
