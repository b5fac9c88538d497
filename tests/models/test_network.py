"""The Tensor Field Network end to end: equivariance, batches, forces, input validation."""

from __future__ import annotations

import pytest
import torch

from tfn.models import TensorFieldNetwork
from tfn.so3 import Irreps
from tfn.testing import Global, assert_equivariant

DTYPES = [torch.float64, torch.float32]
DTYPE_IDS = ["f64", "f32"]

HIDDEN_MIXED = "4x0e + 2x0o + 2x1o + 2x1e + 1x2e + 1x2o"
HIDDEN_L4 = "4x0e + 1x0o + 2x1o + 1x1e + 1x2e + 1x2o + 1x3o + 1x3e + 1x4e + 1x4o"

CONFIGS = {
    "vector-allpairs-gate": dict(
        irreps_in="1x0e", irreps_out="1o", irreps_hidden=HIDDEN_MIXED, num_layers=2, lmax=2
    ),
    "symmetric-tensor-sum-pool-cutoff": dict(
        irreps_in="2x0e",
        irreps_out="0e + 2e",
        irreps_hidden="4x0e + 2x1o + 2x2e",
        num_layers=1,
        lmax=2,
        cutoff=2.5,
        pool="sum",
    ),
    "pseudovector-mean-pool-norm": dict(
        irreps_in="1x0e",
        irreps_out="1e",
        irreps_hidden=HIDDEN_MIXED,
        num_layers=2,
        lmax=2,
        pool="mean",
        nonlinearity="norm",
    ),
    "degree3-lmax4-cutoff": dict(
        irreps_in="2x0e",
        irreps_out="3o",
        irreps_hidden=HIDDEN_L4,
        num_layers=2,
        lmax=4,
        cutoff=3.0,
        radial_basis="bessel",
    ),
    "scalars-pseudoscalar-fully-connected": dict(
        irreps_in="2x0e + 1x1o",
        irreps_out="7x0e + 0o",
        irreps_hidden=HIDDEN_MIXED,
        num_layers=2,
        lmax=2,
        output_connection="fully_connected",
        num_neighbors=3.0,
    ),
    "mixed-output-no-layers": dict(
        irreps_in="1x0e + 1x1o",
        irreps_out="2x0e + 1x1o + 1x1e + 1x2e",
        num_layers=0,
        lmax=2,
        cutoff=2.5,
        self_connection=False,
    ),
}


def _build(config: dict, dtype: torch.dtype) -> TensorFieldNetwork:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        net = TensorFieldNetwork(**config)
    finally:
        torch.set_default_dtype(old)
    # Biases start at zero; random ones also test that they sit only where they may.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias") and p.dim() == 1:
                p.normal_(std=0.5)
    return net


def _inputs(net: TensorFieldNetwork, sizes=(4, 3), spread=1.0, seed=0):
    """Two clouds (interleaved, so the batch index is unsorted), float64."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    pos = spread * torch.randn(n, 3, generator=g, dtype=torch.float64)
    features = torch.randn(n, net.irreps_in.dim, generator=g, dtype=torch.float64)
    batch = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    batch = batch[torch.randperm(n, generator=g)]
    return pos, features, batch


def _normalized(fn, args):
    """``fn`` divided by a constant so its outputs on ``args`` are of size 1: the oracle's
    error ``max |f(gx) - g f(x)| / max(1, max |f(x)|)`` then is a true relative error."""
    scale = float(fn(*args).detach().abs().max())
    assert scale > 1e-6, "output is (nearly) zero: the test would be vacuous"
    return lambda *a: fn(*a) / scale


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_network_equivariant(name, dtype):
    config = CONFIGS[name]
    net = _build(config, dtype)
    pos, features, batch = _inputs(net)
    out_spec = Global(net.irreps_out) if config.get("pool") else net.irreps_out
    fn = _normalized(net, [pos.to(dtype), features.to(dtype), batch])
    assert_equivariant(
        fn,
        ["cartesian_points", net.irreps_in, "point_index"],
        out_spec,
        [pos, features, batch],
        dtype=dtype,
    )


@pytest.mark.parametrize("pool", [None, "sum"])
def test_network_single_cloud_without_batch(pool):
    config = dict(CONFIGS["degree3-lmax4-cutoff"], pool=pool)
    net = _build(config, torch.float64)
    pos, features, _ = _inputs(net, sizes=(6,))
    fn = _normalized(net, [pos, features])
    out_spec = Global(net.irreps_out) if pool else net.irreps_out
    assert_equivariant(fn, ["cartesian_points", net.irreps_in], out_spec, [pos, features])
    if pool:
        assert net(pos, features).shape == (1, net.irreps_out.dim)


@pytest.mark.parametrize("cutoff", [None, 2.5])
@pytest.mark.parametrize("pool", [None, "sum", "mean"])
def test_batch_independence(cutoff, pool):
    config = dict(CONFIGS["vector-allpairs-gate"], cutoff=cutoff, pool=pool)
    net = _build(config, torch.float64)
    pos, features, batch = _inputs(net, sizes=(5, 4, 3))
    out = net(pos, features, batch)
    for cloud in range(3):
        mask = batch == cloud
        alone = net(pos[mask], features[mask])
        got = out[mask] if pool is None else out[cloud : cloud + 1]
        torch.testing.assert_close(got, alone, atol=1e-12, rtol=1e-12)
    # Moving and changing the other clouds does not change cloud 0.
    pos2, features2 = pos.clone(), features.clone()
    others = batch != 0
    pos2[others] = pos2[others] * 0.7 + 0.3
    features2[others] = torch.randn_like(features2[others])
    out2 = net(pos2, features2, batch)
    if pool is None:
        torch.testing.assert_close(out2[batch == 0], out[batch == 0], atol=1e-12, rtol=1e-12)
        assert not torch.allclose(out2[others], out[others])
    else:
        torch.testing.assert_close(out2[0], out[0], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("pool", [None, "sum", "mean"])
def test_unsorted_batch_index(pool):
    net = _build(dict(CONFIGS["symmetric-tensor-sum-pool-cutoff"], pool=pool), torch.float64)
    pos, features, _ = _inputs(net, sizes=(6,))
    sorted_batch = torch.tensor([0, 0, 0, 1, 1, 1])
    out_sorted = net(pos, features, sorted_batch)
    perm = torch.tensor([3, 0, 4, 1, 5, 2])  # batch becomes [1, 0, 1, 0, 1, 0]
    out = net(pos[perm], features[perm], sorted_batch[perm])
    expected = out_sorted[perm] if pool is None else out_sorted
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


def _forces_fn(net: TensorFieldNetwork, column: int = 0):
    """``(pos, features, batch) -> F = -dE/dpos``, ``E`` the pooled scalar in ``column``."""

    def forces(pos, features, batch):
        pos = pos.detach().requires_grad_(True)
        energy = net(pos, features, batch)[:, column].sum()
        (grad,) = torch.autograd.grad(energy, pos, create_graph=True)
        return -grad

    return forces


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cutoff", [None, 2.5])
def test_forces_equivariant(cutoff, dtype):
    config = dict(
        irreps_in="2x0e",
        irreps_out="0e",
        irreps_hidden="4x0e + 2x0o + 2x1o + 2x1e + 2x2e",
        num_layers=2,
        lmax=2,
        cutoff=cutoff,
        pool="sum",
    )
    net = _build(config, dtype)
    pos, features, batch = _inputs(net)
    fn = _normalized(_forces_fn(net), [pos.to(dtype), features.to(dtype), batch])
    assert_equivariant(
        fn,
        ["cartesian_points", net.irreps_in, "point_index"],
        "1o",
        [pos, features, batch],
        dtype=dtype,
    )
    # Forces of an isolated cloud sum to zero (translation invariance of the energy).
    forces = _forces_fn(net)(pos.to(dtype), features.to(dtype), batch)
    for cloud in range(2):
        total = forces[batch == cloud].sum(0).abs().max()
        assert total < (1e-12 if dtype == torch.float64 else 1e-5) * forces.abs().max()


def test_force_loss_reaches_every_radial_network():
    net = _build(
        dict(
            irreps_in="1x0e",
            irreps_out="0e",
            irreps_hidden="4x0e + 2x1o + 2x2e",
            num_layers=2,
            lmax=2,
            cutoff=3.0,
            pool="sum",
        ),
        torch.float64,
    )
    pos, features, batch = _inputs(net)
    target = torch.randn(pos.shape[0], 3, dtype=torch.float64)
    forces = _forces_fn(net)(pos, features, batch)
    loss = (forces - target).pow(2).mean()
    loss.backward()
    radial = [(n, p) for n, p in net.named_parameters() if ".radial." in n]
    assert len(radial) == 4 * (len(net.layers) + 1)  # 2 linear layers (weight, bias) per conv
    for name, p in radial:
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert p.grad.abs().max() > 0, name
    for name, p in net.named_parameters():
        assert p.grad is None or bool(torch.isfinite(p.grad).all()), name


def test_forces_continuous_through_cutoff():
    cutoff = 2.0
    net = _build(
        dict(
            irreps_in="1x0e",
            irreps_out="0e",
            irreps_hidden="4x0e + 2x1o",
            num_layers=1,
            lmax=1,
            cutoff=cutoff,
            pool="sum",
        ),
        torch.float64,
    )
    features = torch.ones(2, 1, dtype=torch.float64)
    direction = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)

    def force(distance):
        pos = torch.stack([torch.zeros(3, dtype=torch.float64), distance * direction])
        return _forces_fn(net)(pos, features, None).detach()

    assert force(1.0).abs().max() > 1e-3  # a genuine force inside the cutoff
    assert force(cutoff + 1e-3).abs().max() == 0  # no neighbours, no force
    previous = float("inf")
    for delta in [1e-2, 1e-3, 1e-4]:
        f = float(force(cutoff - delta).abs().max())
        assert f < 1e4 * delta**2 and f < previous
        previous = f


def test_unreachable_output_raises():
    with pytest.raises(ValueError, match=r"0o") as info:
        TensorFieldNetwork("1x0e", "0o", irreps_hidden="8x0e + 4x1o", num_layers=1)
    assert "cannot be reached" in str(info.value)
    with pytest.raises(ValueError, match=r"1e"):
        TensorFieldNetwork("1x0e", "1o + 1e", irreps_hidden="8x0e", num_layers=2, lmax=1)
    # Reachable once the hidden irreps allow it.
    TensorFieldNetwork("1x0e", "0o", irreps_hidden="8x0e + 4x1o + 2x1e", num_layers=2, lmax=1)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="pool"):
        TensorFieldNetwork("1x0e", "1o", pool="max")
    with pytest.raises(ValueError, match="num_layers"):
        TensorFieldNetwork("1x0e", "1o", num_layers=-1)
    with pytest.raises(ValueError, match="cutoff"):
        TensorFieldNetwork("1x0e", "1o", cutoff=0.0)
    with pytest.raises(ValueError, match="nonlinearity"):
        TensorFieldNetwork("1x0e", "1o", num_layers=1, nonlinearity="relu")
    with pytest.raises(ValueError, match="output_connection"):
        TensorFieldNetwork("1x0e", "1o", num_layers=1, output_connection="depthwise")
    with pytest.raises(ValueError, match="num_neighbors"):
        TensorFieldNetwork("1x0e", "1o", num_layers=1, num_neighbors=0)
    with pytest.raises(ValueError, match="num_neighbors"):
        TensorFieldNetwork("1x0e", "1o", num_layers=1, num_neighbors=-3.0)
    with pytest.raises(ValueError, match="empty"):
        TensorFieldNetwork("1x0e", "", num_layers=1)


@pytest.fixture(scope="module")
def small_net():
    return TensorFieldNetwork("2x0e", "1o", irreps_hidden="4x0e + 2x1o", num_layers=1, lmax=1)


def test_bad_inputs_raise(small_net):
    net = small_net
    pos = torch.randn(5, 3)
    features = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"dimension 3.*2x0e"):
        net(pos, torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"features must have shape"):
        net(pos, torch.randn(4, 2))
    bad = pos.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"point 3 .*NaN"):
        net(bad, features)
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match=r"point 3"):
        net(bad, features)
    bad_features = features.clone()
    bad_features[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"features of point 2"):
        net(pos, bad_features)
    same = pos.clone()
    same[4] = same[1]
    with pytest.raises(ValueError, match=r"points 1 and 4 are on top of each other"):
        net(same, features)
    with pytest.raises(ValueError, match="empty"):
        net(torch.zeros(0, 3), torch.zeros(0, 2))
    with pytest.raises(ValueError, match=r"pos must have shape \[N, 3\]"):
        net(torch.randn(5, 2), features)
    with pytest.raises(ValueError, match=r"pos must have shape \[N, 3\]"):
        net(torch.randn(1, 5, 3), features)
    with pytest.raises(ValueError, match="batch"):
        net(pos, features, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        net(pos, features, torch.zeros(5))


def test_coincident_points_in_different_clouds_are_fine(small_net):
    pos = torch.randn(4, 3)
    pos[2] = pos[0]
    out = small_net(pos, torch.randn(4, 2), torch.tensor([0, 0, 1, 1]))
    assert bool(torch.isfinite(out).all())


def test_coincident_points_with_cutoff():
    net = TensorFieldNetwork(
        "1x0e", "1o", irreps_hidden="4x0e + 2x1o", num_layers=1, lmax=1, cutoff=1.5
    )
    pos = torch.randn(5, 3) * 3
    pos[2] = pos[0]
    with pytest.raises(ValueError, match=r"points 0 and 2 are on top of each other"):
        net(pos, torch.ones(5, 1))


def test_radial_functions_labels(small_net):
    entries = small_net.radial_functions(torch.linspace(0.1, 4.0, 7))
    assert entries and all(values.shape[0] == 7 for _, values in entries)
    labels = [label for label, _ in entries]
    assert any(label.startswith("layer 0: 0e x 1o -> 1o") for label in labels)
    assert any(label.startswith("output:") for label in labels)


def test_output_shapes_and_irreps():
    net = TensorFieldNetwork(
        "1x0e", "0e + 2e", irreps_hidden="4x0e + 2x1o + 2x2e", num_layers=1, pool="mean"
    )
    assert net.irreps_out == Irreps("0e + 2e")
    pos = torch.randn(7, 3)
    batch = torch.tensor([2, 0, 0, 2, 1, 1, 0])
    assert net(pos, torch.ones(7, 1), batch).shape == (3, 6)
    assert net(pos, torch.ones(7, 1)).shape == (1, 6)
