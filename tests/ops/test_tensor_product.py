"""The tensor-product kernel against a naive einsum reference, equivariance, normalisation."""

from __future__ import annotations

import pytest
import torch

from tfn.ops import TensorProduct, channelwise_paths, fully_connected_paths
from tfn.so3 import Irreps, clebsch_gordan
from tfn.testing import assert_equivariant


def naive_tensor_product(description, x1, x2, weight):
    """Reference: one einsum per path straight from the Clebsch-Gordan tensors.

    ``x1 [..., dim1]``, ``x2 [..., dim2]``, ``weight [..., numel]`` broadcast together.
    """
    d = description
    lead = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1], weight.shape[:-1])
    x1 = x1.expand(lead + x1.shape[-1:])
    x2 = x2.expand(lead + x2.shape[-1:])
    weight = weight.expand(lead + weight.shape[-1:])
    s1, s2 = d.irreps_in1.slices(), d.irreps_in2.slices()
    out = [x1.new_zeros(lead + (mul, ir.dim)) for mul, ir in d.irreps_out]  # one per entry
    for p in d.paths:
        (mul1, ir1), (mul2, ir2) = d.irreps_in1[p.i_in1], d.irreps_in2[p.i_in2]
        ir3 = d.irreps_out[p.i_out].ir
        C = clebsch_gordan(ir1.l, ir2.l, ir3.l).to(x1.dtype)
        a = x1[..., s1[p.i_in1]].reshape(lead + (mul1, ir1.dim))
        b = x2[..., s2[p.i_in2]].reshape(lead + (mul2, ir2.dim))
        w = weight[..., p.weight_slice].reshape(lead + p.weight_shape)
        if p.connection == "uvu":
            term = torch.einsum("...uv,...ui,...vj,ijk->...uk", w, a, b, C)
        else:
            term = torch.einsum("...uvw,...ui,...vj,ijk->...wk", w, a, b, C)
        out[p.i_out] = out[p.i_out] + p.coefficient * term
    return torch.cat([o.reshape(lead + (-1,)) for o in out], dim=-1)


CASES = [
    # (kind, irreps1, irreps2, irreps_out)
    ("uvu", "3x0e + 2x0o + 2x1o + 1x1e + 2x2e", "0e + 1o + 2e", None),
    ("uvu", "2x0e + 3x1o + 1x2o", "2x0e + 3x1o + 2x2e + 1x1e", None),
    ("uvu", "4x0e + 3x1o + 2x2e", "2x0e + 2x1o + 1x2e", "4x0e + 3x1o + 3x1e + 2x2e + 4x2e"),
    ("uvu", "1x3o + 1x4e", "0e + 1o + 2e + 3o + 4e", None),
    ("uvw", "2x0e + 1x0o + 2x1o + 1x1e + 1x2e", "0e + 1o + 2e", "3x0e + 2x0o + 2x1o + 2x1e + 1x3o"),
    ("uvw", "3x0e + 2x1o", "2x0e + 3x1o + 2x2e", "2x0e + 3x1o + 1x1e + 2x2e + 1x3o"),
    ("uvw", "1x2e + 1x3o", "1x1o + 1x4e", "1x1e + 2x2o + 1x3e + 1x4o + 1x5e + 1x7o"),
]


def _description(kind, irreps1, irreps2, irreps_out):
    if kind == "uvu":
        return channelwise_paths(irreps1, irreps2, irreps_out)
    return fully_connected_paths(irreps1, irreps2, irreps_out)


def _tp(case, dtype=torch.float64):
    # Built in the dtype it runs in: its Clebsch-Gordan buffer is rounded to the default dtype.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return TensorProduct(_description(*case))
    finally:
        torch.set_default_dtype(old)


def _ids(cases):
    return [f"{c[0]}-{c[1]}-x-{c[2]}" for c in cases]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
@pytest.mark.parametrize("shared", [False, True], ids=["per-edge", "shared"])
def test_matches_naive_reference(case, shared):
    tp = _tp(case)
    assert tp.description.paths, "test case without paths"
    E = 7
    x1 = torch.randn(E, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(E, tp.irreps_in2.dim, dtype=torch.float64)
    w = torch.randn(*(() if shared else (E,)), tp.weight_numel, dtype=torch.float64)
    got = tp(x1, x2, w)
    assert got.shape == (E, tp.irreps_out.dim)
    expected = naive_tensor_product(tp.description, x1, x2, w)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    # Shared weights are the same as that vector repeated on every edge.
    if shared:
        torch.testing.assert_close(got, tp(x1, x2, w.expand(E, -1)), atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", [CASES[1], CASES[5]], ids=_ids([CASES[1], CASES[5]]))
def test_broadcasts_leading_dimensions(case):
    tp = _tp(case)
    x1 = torch.randn(2, 1, 4, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(3, 1, tp.irreps_in2.dim, dtype=torch.float64)
    w = torch.randn(1, 3, 4, tp.weight_numel, dtype=torch.float64)
    got = tp(x1, x2, w)
    assert got.shape == (2, 3, 4, tp.irreps_out.dim)
    torch.testing.assert_close(got, naive_tensor_product(tp.description, x1, x2, w))
    # Single vectors (no leading dimension) and a shared weight.
    a, b = x1[0, 0, 0], x2[0, 0]
    single = tp(a, b, w[0, 0, 0])
    assert single.shape == (tp.irreps_out.dim,)
    torch.testing.assert_close(single, got[0, 0, 0])


def test_weightless_path_block_is_zero():
    # An output entry that no path reaches is filled with zeros.
    tp = _tp(("uvw", "2x0e", "0e + 1o", "2x0e + 2x1e + 1x1o"))
    out = tp(torch.randn(5, 2), torch.randn(5, 4), torch.randn(5, tp.weight_numel))
    assert out.shape == (5, 2 + 6 + 3)
    assert torch.equal(out[:, 2:8], torch.zeros(5, 6))
    assert out[:, :2].abs().sum() > 0 and out[:, 8:].abs().sum() > 0


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_equivariant(case, dtype):
    tp = _tp(case, dtype)
    d = tp.description
    n = 5
    g = torch.Generator().manual_seed(1)
    args = [
        torch.randn(n, d.irreps_in1.dim, generator=g),
        torch.randn(n, d.irreps_in2.dim, generator=g),
        torch.randn(n, d.weight_numel, generator=g),  # per point: permuted, never rotated
    ]
    assert_equivariant(
        tp, [d.irreps_in1, d.irreps_in2, "point_index"], d.irreps_out, args, dtype=dtype
    )

    shared = torch.randn(d.weight_numel, generator=g)
    assert_equivariant(
        lambda a, b: tp(a, b, shared.to(a.dtype)),
        [d.irreps_in1, d.irreps_in2],
        d.irreps_out,
        dtype=dtype,
    )


@pytest.mark.parametrize("convert", ["double", "float-double"])
def test_float64_accuracy_after_double(convert):
    # Built under the float32 default, then converted: the Clebsch-Gordan buffers must come back
    # at full float64 accuracy (not float32-rounded values cast up).
    case = CASES[0]
    tp = TensorProduct(_description(*case))
    tp = tp.double() if convert == "double" else tp.float().double()
    d = tp.description
    w = torch.randn(5, d.weight_numel, dtype=torch.float64)
    assert_equivariant(
        tp,
        [d.irreps_in1, d.irreps_in2, "point_index"],
        d.irreps_out,
        [torch.randn(5, d.irreps_in1.dim), torch.randn(5, d.irreps_in2.dim), w],
        dtype=torch.float64,
    )
    x1 = torch.randn(5, d.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(5, d.irreps_in2.dim, dtype=torch.float64)
    torch.testing.assert_close(
        tp(x1, x2, w), naive_tensor_product(d, x1, x2, w), atol=1e-13, rtol=1e-13
    )


def _unit_variance_case(kind):
    if kind == "uvu-concat":
        return ("uvu", "8x0e + 8x1o + 8x2e", "0e + 1o + 2e", None)
    if kind == "uvu-summed":
        return ("uvu", "8x0e + 8x1o + 8x2e", "2x0e + 1x1o + 1x2e", "8x0e + 8x1o + 8x1e + 8x2e")
    return ("uvw", "4x0e + 4x1o + 4x2e", "2x0e + 1x1o + 1x2e", "6x0e + 6x1o + 6x1e + 6x2e")


@pytest.mark.parametrize("kind", ["uvu-concat", "uvu-summed", "uvw"])
def test_unit_variance(kind):
    tp = _tp(_unit_variance_case(kind))
    g = torch.Generator().manual_seed(2)
    E = 4000
    x1 = torch.randn(E, tp.irreps_in1.dim, generator=g, dtype=torch.float64)
    x2 = torch.randn(E, tp.irreps_in2.dim, generator=g, dtype=torch.float64)
    w = torch.randn(E, tp.weight_numel, generator=g, dtype=torch.float64)
    out = tp(x1, x2, w)
    assert abs(float(out.pow(2).mean()) - 1) < 0.15
    for (mul, ir), s in zip(tp.irreps_out, tp.irreps_out.slices()):
        second_moment = float(out[:, s].pow(2).mean())
        assert abs(second_moment - 1) < 0.15, f"{mul}x{ir}: {second_moment:.3f}"


@pytest.mark.parametrize(
    "case",
    [
        ("uvu", "2x0e + 1x1o + 1x2e", "2x0e + 1x1o", None),
        ("uvw", "1x0e + 2x1o", "0e + 2x1o + 2e", "2x0e + 1x1e + 1x2o"),
    ],
    ids=["uvu", "uvw"],
)
@pytest.mark.parametrize("shared", [False, True], ids=["per-edge", "shared"])
def test_gradcheck(case, shared):
    tp = _tp(case)
    x1 = torch.randn(2, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, tp.irreps_in2.dim, dtype=torch.float64, requires_grad=True)
    shape = (tp.weight_numel,) if shared else (2, tp.weight_numel)
    w = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tp, (x1, x2, w))
    if not shared:
        assert torch.autograd.gradgradcheck(tp, (x1, x2, w))


def test_wrong_dimensions_raise():
    tp = _tp(("uvu", "2x0e + 1x1o", "0e + 1o", None))
    x1, x2 = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    w = torch.randn(4, tp.weight_numel, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x1 has dimension 6.*2x0e\+1x1o"):
        tp(torch.randn(4, 6, dtype=torch.float64), x2, w)
    with pytest.raises(ValueError, match=r"x2 has dimension 3.*1x0e\+1x1o"):
        tp(x1, torch.randn(4, 3, dtype=torch.float64), w)
    with pytest.raises(ValueError, match=f"weight has size {tp.weight_numel + 1}"):
        tp(x1, x2, torch.randn(4, tp.weight_numel + 1, dtype=torch.float64))


def test_module_metadata():
    d = channelwise_paths("8x0e + 8x1o", "0e + 1o + 2e")
    tp = TensorProduct(d)
    assert tp.irreps_in1 == Irreps("8x0e + 8x1o")
    assert tp.irreps_out == d.irreps_out
    assert tp.weight_numel == d.weight_numel
    assert "paths" in repr(tp)
    assert list(tp.parameters()) == []  # weightless: weights come in as an argument
    assert tp.state_dict() == {}  # plan buffers are not persistent


@pytest.mark.parametrize("case", CASES[:3] + CASES[4:5], ids=lambda c: c[0] + c[1][:12])
def test_convolve_is_gather_product_scatter(case):
    """``convolve`` equals gathering the sources, the per-edge product and a sum by destination."""
    from tfn.ops import EdgePlan

    tp = _tp(case)
    g = torch.Generator().manual_seed(3)
    n, e = 7, 23
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(0, n, (e,), generator=g)
    x = torch.randn(n, tp.irreps_in1.dim, generator=g, dtype=torch.float64)
    y = torch.randn(e, tp.irreps_in2.dim, generator=g, dtype=torch.float64)
    w = torch.randn(e, tp.weight_numel, generator=g, dtype=torch.float64)
    out = tp.convolve(x, y, w, EdgePlan.build(src, dst, n))
    per_edge = naive_tensor_product(tp.description, x[src], y, w)
    expected = torch.zeros(n, per_edge.shape[-1], dtype=torch.float64).index_add(0, dst, per_edge)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_unknown_executor_raises():
    with pytest.raises(ValueError, match="executor"):
        TensorProduct(channelwise_paths("2x0e", "0e"), executor="warp")
