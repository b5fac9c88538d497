import pytest
import torch

from tfn.data import check_positions, edge_vectors, full_graph, radius_graph
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
    with pytest.raises(ValueError, match="empty batch"):
        check_positions(torch.zeros(0, 3))
    pos = torch.randn(5, 3, generator=torch.Generator().manual_seed(6))
    pos[3, 1] = float("nan")
    with pytest.raises(ValueError, match="point index 3"):
        check_positions(pos)
    pos[3, 1] = float("inf")
    with pytest.raises(ValueError, match="point index 3"):
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
