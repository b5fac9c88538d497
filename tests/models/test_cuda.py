"""The tensor product and the network on CUDA agree with the CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from tfn.models import TensorFieldNetwork
from tfn.ops import TensorProduct, channelwise_paths, fully_connected_paths
from tfn.testing import Global, assert_equivariant

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def _build(factory, dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return factory()
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", ["uvu", "uvw"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-edge", "shared"])
def test_tensor_product_cuda_matches_cpu(mode, shared, dtype):
    if mode == "uvu":
        d = channelwise_paths(
            "3x0e + 2x0o + 2x1o + 1x1e + 2x2e + 1x3o", "2x0e + 1x1o + 1x2e + 1x3o"
        )
    else:
        d = fully_connected_paths(
            "2x0e + 1x0o + 2x1o + 1x1e + 1x2e", "0e + 2x1o + 2e", "3x0e + 1x0o + 2x1o + 2x1e + 1x3o"
        )
    tp = _build(lambda: TensorProduct(d), dtype)
    g = torch.Generator().manual_seed(0)
    E = 50
    x1 = torch.randn(E, d.irreps_in1.dim, generator=g, dtype=dtype)
    x2 = torch.randn(E, d.irreps_in2.dim, generator=g, dtype=dtype)
    w = torch.randn(*(() if shared else (E,)), d.weight_numel, generator=g, dtype=dtype)
    expected = tp(x1, x2, w)
    tp_cuda = tp.to(CUDA)
    got = tp_cuda(x1.to(CUDA), x2.to(CUDA), w.to(CUDA))
    assert got.device.type == "cuda"
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.cpu(), expected, atol=tol, rtol=tol)
    # Gradients agree too.
    args = [t.clone().requires_grad_(True) for t in (x1, x2, w)]
    args_cuda = [t.detach().to(CUDA).requires_grad_(True) for t in (x1, x2, w)]
    tp(*args).pow(2).sum().backward()
    tp_cuda(*args_cuda).pow(2).sum().backward()
    for a, b in zip(args, args_cuda):
        torch.testing.assert_close(b.grad.cpu(), a.grad, atol=100 * tol, rtol=100 * tol)


def _net(dtype, cutoff, pool):
    return _build(
        lambda: TensorFieldNetwork(
            "2x0e",
            "0e + 1o + 2e",
            irreps_hidden="8x0e + 2x0o + 4x1o + 2x1e + 2x2e",
            num_layers=2,
            lmax=2,
            cutoff=cutoff,
            pool=pool,
        ),
        dtype,
    )


def _inputs(n=9, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(n, 3, generator=g, dtype=dtype)
    features = torch.randn(n, 2, generator=g, dtype=dtype)
    batch = torch.tensor([0, 1, 0, 2, 1, 1, 0, 2, 2])[:n]
    return pos, features, batch


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cutoff", [None, 2.0])
@pytest.mark.parametrize("pool", [None, "sum"])
def test_network_cuda_matches_cpu(dtype, cutoff, pool):
    net = _net(dtype, cutoff, pool)
    pos, features, batch = _inputs(dtype=dtype)
    expected = net(pos, features, batch)
    net_cuda = net.to(CUDA)
    got = net_cuda(pos.to(CUDA), features.to(CUDA), batch.to(CUDA))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.cpu(), expected, atol=tol, rtol=tol)


def test_network_cuda_forces_and_equivariance():
    net = _net(torch.float64, 2.0, "sum").to(CUDA)
    pos, features, batch = (t.to(CUDA) for t in _inputs())

    def forces(p, f, b):
        p = p.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(p, f, b)[:, 0].sum(), p, create_graph=True)
        return -grad

    assert_equivariant(
        forces, ["cartesian_points", "2x0e", "point_index"], "1o", [pos, features, batch]
    )
    assert_equivariant(
        net,
        ["cartesian_points", "2x0e", "point_index"],
        Global("0e + 1o + 2e"),
        [pos, features, batch],
    )
    loss = forces(pos, features, batch).pow(2).sum()
    loss.backward()
    grads = [p.grad for n, p in net.named_parameters() if ".radial." in n]
    assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_network_cuda_single_cloud_without_batch():
    net = _net(torch.float32, None, None)
    pos, features, _ = _inputs(dtype=torch.float32)
    expected = net(pos, features)
    got = net.to(CUDA)(pos.to(CUDA), features.to(CUDA))
    torch.testing.assert_close(got.cpu(), expected, atol=1e-5, rtol=1e-5)
