"""The network and its layers under ``torch.compile``: same outputs, forces, equivariance."""

from __future__ import annotations

import os

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from tfn.data import edge_vectors, full_graph
from tfn.models import TensorFieldNetwork
from tfn.nn import Convolution, Gate, Nonlinearity, SelfInteraction
from tfn.ops import TensorProduct, channelwise_paths, fully_connected_paths
from tfn.testing import assert_equivariant

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # Every test compiles new modules: start from empty caches so no recompile limit is hit
    # (dynamo would then silently run eagerly).
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _net(dtype: torch.dtype, cutoff: float | None = None) -> TensorFieldNetwork:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return TensorFieldNetwork(
            "2x0e",
            "0e + 1o",
            irreps_hidden="4x0e + 1x0o + 2x1o + 1x1e",
            num_layers=1,
            lmax=2,
            cutoff=cutoff,
            radial_hidden=(8,),
        )
    finally:
        torch.set_default_dtype(old)


def _inputs(dtype, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64).to(dtype)
    features = torch.randn(n, 2, generator=g, dtype=torch.float64).to(dtype)
    batch = torch.tensor([0, 1, 0, 1, 1, 0, 0])[:n]
    return pos, features, batch


def _forces(net, pos, features, batch):
    pos = pos.detach().requires_grad_(True)
    energy = net(pos, features, batch)[:, 0].sum()
    (grad,) = torch.autograd.grad(energy, pos, create_graph=True)
    return -grad


def _close(a, b, dtype):
    torch.testing.assert_close(a, b, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize(
    "dtype, cutoff",
    [(torch.float32, 2.0), (torch.float64, None)],
    ids=["f32-cutoff", "f64-allpairs"],
)
def test_network_compiles_aot_eager(dtype, cutoff):
    net = _net(dtype, cutoff)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(net, backend=counter)
    pos, features, batch = _inputs(dtype)
    _close(compiled(pos, features, batch), net(pos, features, batch), dtype)
    assert counter.frame_count > 0, "nothing was compiled"
    # Same sizes, new coordinates: reuses the compiled graphs.
    pos2 = pos + 0.1 * torch.randn_like(pos)
    _close(compiled(pos2, features, batch), net(pos2, features, batch), dtype)
    # Forces: autograd through the compiled module. Its backward graphs may donate buffers,
    # which PyTorch only allows without create_graph (needed for force training) unless
    # donation is turned off.
    with torch._functorch.config.patch(donated_buffer=False):
        forces = _forces(compiled, pos, features, batch)
    _close(forces, _forces(net, pos, features, batch), dtype)
    if dtype == torch.float64:
        # The compiled module is equivariant (all-pairs graph: shapes never change).
        assert_equivariant(
            compiled,
            ["cartesian_points", net.irreps_in, "point_index"],
            net.irreps_out,
            [pos, features, batch],
            trials=1,
        )


def _layers():
    pos = torch.randn(5, 3)
    edge_index = full_graph(None, 5)
    vec, _ = edge_vectors(pos, edge_index)
    uvu = TensorProduct(channelwise_paths("2x0e + 1x1o", "0e + 1o + 2e"))
    uvw = TensorProduct(fully_connected_paths("2x0e + 2x1o", "0e + 1o", "2x0e + 2x1o + 1x1e"))
    return {
        "tp-uvu": (uvu, (torch.randn(4, 5), torch.randn(4, 9), torch.randn(4, uvu.weight_numel))),
        "tp-uvw-shared": (
            uvw,
            (torch.randn(4, 8), torch.randn(4, 4), torch.randn(uvw.weight_numel)),
        ),
        "conv": (
            Convolution("2x0e + 1x1o", None, lmax=2, cutoff=3.0),
            (torch.randn(5, 5), edge_index, vec),
        ),
        "self-interaction": (
            SelfInteraction("2x0e + 1x1o + 1x0o", "3x0e + 2x1o"),
            (torch.randn(5, 6),),
        ),
        "gate": (Gate("2x0e + 1x0o", "2x0e", "1x1o + 1x2e"), (torch.randn(5, 13),)),
        "norm": (Nonlinearity("2x0e + 1x0o + 1x1o"), (torch.randn(5, 6),)),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_layers_compile_without_graph_breaks(name):
    module, args = _layers()[name]
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    _close(compiled(*args), module(*args), torch.float32)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TFN_SLOW") != "1", reason="inductor compile: set TFN_SLOW=1")
def test_network_compiles_inductor():
    dtype = torch.float32
    net = _net(dtype, cutoff=2.0)
    compiled = torch.compile(net)
    pos, features, batch = _inputs(dtype)
    # Inductor fuses and reorders float32 arithmetic: a few ulps of the output's size.
    torch.testing.assert_close(
        compiled(pos, features, batch), net(pos, features, batch), atol=1e-5, rtol=1e-5
    )
    with torch._functorch.config.patch(donated_buffer=False):
        forces = _forces(compiled, pos, features, batch)
    torch.testing.assert_close(forces, _forces(net, pos, features, batch), atol=1e-5, rtol=1e-5)
