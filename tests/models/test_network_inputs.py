"""TensorFieldNetwork: graphs as data, edge embeddings shared by all layers, inputs at the edges."""

from __future__ import annotations

import pytest
import torch

import tfn.nn.edges as edges_module
from tfn.data import Graph, full_graph, radius_graph
from tfn.models import TensorFieldNetwork
from tfn.testing import Global, assert_equivariant


def _net(**kw) -> TensorFieldNetwork:
    defaults = dict(irreps_hidden="6x0e + 2x1o + 2x1e + 1x2e", num_layers=2, lmax=2)
    defaults.update(kw)
    return TensorFieldNetwork("2x0e", "0e + 1o", **defaults).double()


def _inputs(n=9, seed=0, clouds=2):
    g = torch.Generator().manual_seed(seed)
    pos = 2.0 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(n, 2, generator=g, dtype=torch.float64)
    batch = torch.arange(n) % clouds
    return pos, feats, batch.sort().values


@pytest.mark.parametrize("cutoff", [None, 2.5])
def test_precomputed_graph_equals_built_graph(cutoff):
    net = _net(cutoff=cutoff)
    pos, feats, batch = _inputs()
    built = net(pos, feats, batch)
    if cutoff is None:
        graph = Graph(full_graph(batch))
    else:
        graph = Graph(radius_graph(pos, cutoff, batch))
    torch.testing.assert_close(net(pos, feats, batch, graph=graph), built, atol=1e-13, rtol=0)
    # Edge order does not matter.
    perm = torch.randperm(graph.num_edges, generator=torch.Generator().manual_seed(1))
    shuffled = Graph(graph.edge_index[:, perm])
    torch.testing.assert_close(net(pos, feats, batch, graph=shuffled), built, atol=1e-12, rtol=0)


def test_edge_harmonics_and_basis_computed_once_per_forward(monkeypatch):
    net = _net(num_layers=3, cutoff=3.0)
    pos, feats, batch = _inputs()
    calls = {"sh": 0}
    original = edges_module.spherical_harmonics

    def counting(*args, **kwargs):
        calls["sh"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(edges_module, "spherical_harmonics", counting)
    net(pos, feats, batch)
    assert calls["sh"] == 1  # 3 hidden layers + the output convolution share one embedding


def test_periodic_graph_images_and_gradients():
    """A graph with cell shifts: a chain of period 1.5 along x, one atom per cell, seen
    through its own images. Equivalent to the same edges written with Cartesian shifts, and
    differentiable in the cell."""
    net = _net(cutoff=2.0)
    pos = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    feats = torch.ones(1, 2, dtype=torch.float64)
    cell = torch.diag(torch.tensor([1.5, 10.0, 10.0], dtype=torch.float64)).requires_grad_(True)
    shift = torch.tensor([[1, 0, 0], [-1, 0, 0]])
    edge_index = torch.tensor([[0, 0], [0, 0]])
    out = net(pos, feats, None, graph=Graph(edge_index, cell_shift=shift, cell=cell))
    cartesian = Graph(edge_index, shifts=shift.double() @ cell.detach())
    torch.testing.assert_close(out, net(pos, feats, None, graph=cartesian))
    # The two images sit symmetrically: the vector output vanishes, the scalar does not.
    assert out[0, 1:].abs().max() < 1e-12 and out[0, 0].abs() > 0
    (grad,) = torch.autograd.grad(out[0, 0], cell)
    assert torch.isfinite(grad).all() and grad[0, 0].abs() > 0


def test_equivariant_with_given_graph():
    net = _net(cutoff=None)
    pos, feats, batch = _inputs(n=6, clouds=1)
    graph = Graph(full_graph(None, 6))

    def fn(p, x):
        return net(p, x, None, graph=graph)

    # the graph is fixed: permutations would relabel it, so only rigid motions here
    assert_equivariant(
        fn, ["cartesian_points", "2x0e"], "0e + 1o", [pos, feats], permutations=False
    )


def test_pooled_network_with_graph_is_equivariant_and_invariant_to_permutation():
    net = TensorFieldNetwork(
        "1x0e", "0e + 1o", irreps_hidden="4x0e + 2x1o", num_layers=1, pool="sum"
    ).double()
    pos, _, batch = _inputs(n=7, clouds=1)
    feats = torch.ones(7, 1, dtype=torch.float64)
    assert_equivariant(
        lambda p, x: net(p, x), ["cartesian_points", "1x0e"], Global("0e + 1o"), [pos, feats]
    )


# ------------------------------------------------------------------------- inputs at the edges


def test_zero_multiplicities_are_dropped():
    net = TensorFieldNetwork(
        "1x0e + 0x1o", "1o + 0x2e", irreps_hidden="8x0e + 0x1e + 4x1o", num_layers=1
    )
    assert str(net.irreps_in) == "1x0e" and net.irreps_out.dim == 3
    out = net(torch.randn(5, 3), torch.ones(5, 1))
    assert out.shape == (5, 3) and torch.isfinite(out).all()


def test_integer_positions_are_cast_and_float64_into_float32():
    net = TensorFieldNetwork("1x0e", "1o", irreps_hidden="4x0e + 2x1o", num_layers=1)
    pos = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]])
    out_int = net(pos, torch.ones(4, 1, dtype=torch.long))
    out_f64 = net(pos.double(), torch.ones(4, 1, dtype=torch.float64))
    assert out_int.dtype == out_f64.dtype == torch.float32
    torch.testing.assert_close(out_int, net(pos.float(), torch.ones(4, 1)))
    torch.testing.assert_close(out_f64, out_int)
    # gradients still reach a float64 leaf through the cast
    leaf = pos.double().requires_grad_(True)
    net(leaf, torch.ones(4, 1)).sum().backward()
    assert leaf.grad is not None and leaf.grad.dtype == torch.float64


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, x, b: (p, x, b - 1), "batch ids must be >= 0"),
        (lambda p, x, b: (p, x, b.float()), "integer"),
        (lambda p, x, b: (p.to(torch.complex64), x, b), "real coordinates"),
        (lambda p, x, b: (p, x[:, :1], b), "dimension 1"),
        (lambda p, x, b: (p[:0], x[:0], b[:0]), "empty"),
    ],
)
def test_bad_inputs_get_a_clear_message(change, message):
    net = _net()
    pos, feats, batch = _inputs()
    with pytest.raises(ValueError, match=message):
        net(*change(pos, feats, batch))


def test_graph_pointing_outside_the_points_is_rejected():
    net = _net()
    pos, feats, _ = _inputs(n=4, clouds=1)
    with pytest.raises(ValueError, match="refers to point 7"):
        net(pos, feats, None, graph=Graph(torch.tensor([[0, 7], [1, 0]])))


def test_graph_validation():
    with pytest.raises(ValueError, match=r"\[2, E\]"):
        Graph(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        Graph(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="cell_shift must have shape"):
        Graph(torch.zeros(2, 4, dtype=torch.long), cell_shift=torch.zeros(3, 3), cell=torch.eye(3))
    with pytest.raises(ValueError, match="needs the cell"):
        Graph(torch.zeros(2, 1, dtype=torch.long), cell_shift=torch.zeros(1, 3))


def test_checks_run_in_front_of_a_compiled_network():
    """torch.compile must not skip the input checks (a NaN position would become NaN output)."""
    torch._dynamo.reset()
    net = TensorFieldNetwork("1x0e", "1o", irreps_hidden="4x0e + 2x1o", num_layers=1)
    compiled = torch.compile(net, backend="eager")
    pos = torch.randn(4, 3)
    compiled(pos, torch.ones(4, 1))
    bad = pos.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="point 2"):
        compiled(bad, torch.ones(4, 1))
    with pytest.raises(ValueError, match="on top of each other"):
        compiled(torch.zeros(4, 3), torch.ones(4, 1))
    torch._dynamo.reset()
