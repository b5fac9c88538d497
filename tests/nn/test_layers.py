"""Equivariant layers: self-interaction, nonlinearities, concatenation, point convolution."""

from __future__ import annotations

import math

import pytest
import torch

from tfn.data import edge_vectors, full_graph, radius_graph
from tfn.nn import Concatenation, Convolution, Gate, Nonlinearity, SelfInteraction
from tfn.so3 import Irreps, spherical_harmonics
from tfn.testing import assert_equivariant

DTYPES = [torch.float64, torch.float32]
DTYPE_IDS = ["f64", "f32"]
MIXED = "4x0e + 2x0o + 3x1o + 2x1e + 2x2e"


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Nonzero values for every parameter (biases start at zero)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


# ----------------------------------------------------------------------------- self-interaction


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(
    "irreps_in, irreps_out",
    [
        (MIXED, "3x0e + 2x0o + 2x1o + 3x1e + 1x2e + 1x3o"),
        ("2x0e + 1x1o + 2x0e + 2x1o + 1x4e", "3x0e + 1x1o + 2x0e + 2x1o + 2x4e + 1x0o"),
        ("1x0o + 1x1e", "2x0e + 3x0o + 2x1e"),
    ],
)
def test_self_interaction_equivariant(irreps_in, irreps_out, dtype, default_dtype):
    with default_dtype(dtype):
        si = _randomize(SelfInteraction(irreps_in, irreps_out))
    assert_equivariant(si, irreps_in, irreps_out, dtype=dtype)


def test_self_interaction_matches_reference(default_dtype):
    irreps_in = Irreps("2x0e + 1x1o + 3x0e + 2x1o + 1x2e")
    irreps_out = Irreps("1x1o + 4x0e + 3x1o + 1x0e + 2x2o")
    with default_dtype(torch.float64):
        si = _randomize(SelfInteraction(irreps_in, irreps_out))
    x = torch.randn(5, irreps_in.dim, dtype=torch.float64)
    # Reference: per irrep type, concatenate the entries' channels, mix, split.
    expected = torch.zeros(5, irreps_out.dim, dtype=torch.float64)
    out_slices = irreps_out.slices()
    for ir in {mi.ir for mi in irreps_out}:
        ins = [
            x[:, s].reshape(5, mul, ir.dim)
            for (mul, i), s in zip(irreps_in, irreps_in.slices())
            if i == ir
        ]
        if not ins:
            continue
        h = torch.cat(ins, dim=1)
        W = si.weights[str(ir)]
        assert W.shape == (h.shape[1], irreps_out.count(ir))
        y = torch.einsum("nud,uw->nwd", h, W) / math.sqrt(h.shape[1])
        offset = 0
        for (mul, i), s in zip(irreps_out, out_slices):
            if i == ir:
                expected[:, s] = y[:, offset : offset + mul].reshape(5, -1)
                offset += mul
    bias = torch.zeros(irreps_out.dim, dtype=torch.float64)
    scalar = [s for (_, ir), s in zip(irreps_out, out_slices) if str(ir) == "0e"]
    bias[scalar[0]] = si.bias[:4]
    bias[scalar[1]] = si.bias[4:]
    torch.testing.assert_close(si(x), expected + bias)
    assert str(si.unreachable) == "2x2o"
    assert si(x)[:, out_slices[-1]].abs().max() == 0
    # Leading dimensions are kept.
    assert si(x.reshape(1, 5, -1)).shape == (1, 5, irreps_out.dim)


def test_self_interaction_bias_only_on_even_scalars():
    irreps_in = Irreps(MIXED)
    irreps_out = Irreps("3x0e + 2x0o + 2x1o + 1x1e + 2x0e")
    si = _randomize(SelfInteraction(irreps_in, irreps_out))
    assert si.bias is not None and si.bias.shape == (5,)
    # Zero input: the output is the bias on the 0e channels and zero everywhere else.
    out = si(torch.zeros(3, irreps_in.dim))
    for (mul, ir), s in zip(irreps_out, irreps_out.slices()):
        if str(ir) == "0e":
            assert bool((out[:, s] != 0).all())
        else:
            assert bool((out[:, s] == 0).all()), f"{mul}x{ir} got a bias"
    # Zero pseudoscalars and vectors (scalars random) still give zero 0o / 1o / 1e outputs.
    x = torch.zeros(3, irreps_in.dim)
    x[:, :4] = torch.randn(3, 4)
    out = si(x)
    assert bool((out[:, 3:14] == 0).all())
    # Without bias, a zero input gives zero everywhere.
    no_bias = SelfInteraction(irreps_in, irreps_out, bias=False)
    assert no_bias.bias is None
    assert bool((no_bias(torch.zeros(2, irreps_in.dim)) == 0).all())
    # No 0e output: no bias at all.
    assert SelfInteraction("2x1o + 1x0o", "1x0o + 3x1o").bias is None


def test_self_interaction_wrong_dimension():
    si = SelfInteraction("4x0e + 2x1o", "3x0e")
    with pytest.raises(ValueError, match=r"dimension 9.*4x0e\+2x1o"):
        si(torch.randn(2, 9))


# -------------------------------------------------------------------------------- nonlinearity


NORM_IRREPS = "3x0e + 2x0o + 2x1o + 1x1e + 1x2e + 1x2o + 1x3o + 1x4e"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scalar_activation", ["silu", "tanh"])
def test_norm_nonlinearity_equivariant(dtype, scalar_activation, default_dtype):
    with default_dtype(dtype):
        nl = _randomize(Nonlinearity(NORM_IRREPS, scalar_activation=scalar_activation))
    assert nl.irreps_out == Irreps(NORM_IRREPS)
    assert_equivariant(nl, NORM_IRREPS, NORM_IRREPS, dtype=dtype)


def test_norm_nonlinearity_values_and_odd_pseudoscalars():
    irreps = Irreps("2x0e + 2x0o + 1x1o")
    nl = _randomize(Nonlinearity(irreps))
    x = torch.randn(6, irreps.dim, dtype=torch.float64)
    out = nl.double()(x)
    torch.testing.assert_close(out[:, :2], torch.nn.functional.silu(x[:, :2]))
    b = nl.bias.detach()
    # 0o is a norm channel: x * sigmoid(|x| + b), an odd function, not silu (which is not odd).
    norm0o = torch.sqrt(x[:, 2:4] ** 2 + nl.eps**2)
    torch.testing.assert_close(out[:, 2:4], x[:, 2:4] * torch.sigmoid(norm0o + b[:2]))
    flipped = x.clone()
    flipped[:, 2:4] *= -1
    torch.testing.assert_close(nl(flipped)[:, 2:4], -out[:, 2:4])
    norm1o = torch.sqrt((x[:, 4:7] ** 2).sum(-1, keepdim=True) + nl.eps**2)
    torch.testing.assert_close(out[:, 4:7], x[:, 4:7] * torch.sigmoid(norm1o + b[2]))
    assert nl.bias.shape == (3,)  # one per non-0e channel


def test_norm_nonlinearity_smooth_at_zero():
    nl = Nonlinearity("1x0e + 1x0o + 1x1o + 1x2e").double()
    x = torch.zeros(2, 10, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(nl(x).pow(2).sum() + nl(x).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert bool(torch.isfinite(g).all()) and bool(torch.isfinite(gg).all())


def test_norm_nonlinearity_errors():
    with pytest.raises(ValueError, match="unknown activation"):
        Nonlinearity("1x0e", scalar_activation="gelu-ish")
    nl = Nonlinearity("2x0e + 1x1o")
    with pytest.raises(ValueError, match=r"2x0e\+1x1o"):
        nl(torch.randn(3, 4))
    assert Nonlinearity("2x0e + 1x1o", bias=False).bias is None


# ------------------------------------------------------------------------------------------ gate


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(
    "scalars, gates, gated",
    [
        ("2x0e + 2x0o", "5x0e", "2x1o + 1x1e + 1x2o + 1x4e"),
        ("", "3x0e", "1x0o + 1x1e + 1x3o"),
        ("3x0e + 1x0o", "", ""),
    ],
)
def test_gate_equivariant(scalars, gates, gated, dtype, default_dtype):
    with default_dtype(dtype):
        gate = Gate(scalars, gates, gated)
    assert gate.irreps_in == Irreps(scalars) + Irreps(gates) + Irreps(gated)
    assert gate.irreps_out == Irreps(scalars) + Irreps(gated)
    assert_equivariant(gate, gate.irreps_in, gate.irreps_out, dtype=dtype)


def test_gate_values():
    gate = Gate("1x0e + 1x0o", "2x0e", "1x1o + 1x2e")
    x = torch.randn(4, 2 + 2 + 3 + 5, dtype=torch.float64)
    out = gate(x)
    assert out.shape == (4, 10)
    torch.testing.assert_close(out[:, 0], torch.nn.functional.silu(x[:, 0]))
    torch.testing.assert_close(out[:, 1], torch.tanh(x[:, 1]))  # odd for the pseudoscalar
    torch.testing.assert_close(out[:, 2:5], x[:, 4:7] * torch.sigmoid(x[:, 2:3]))
    torch.testing.assert_close(out[:, 5:10], x[:, 7:12] * torch.sigmoid(x[:, 3:4]))


def test_gate_errors():
    with pytest.raises(ValueError, match="scalars"):
        Gate("1x1o", "1x0e", "1x1o")
    with pytest.raises(ValueError, match="0e"):
        Gate("1x0e", "1x0o", "1x1o")
    with pytest.raises(ValueError, match="2 gates"):
        Gate("1x0e", "2x0e", "1x1o + 2x2e")
    gate = Gate("1x0e", "1x0e", "1x1o")
    with pytest.raises(ValueError, match="dimension 4"):
        gate(torch.randn(2, 4))


# ------------------------------------------------------------------------------- concatenation


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_concatenation_equivariant(dtype):
    specs = ["2x0e + 1x1o", "1x2e + 1x0o", "1x1e"]
    cat = Concatenation(specs)
    assert cat.irreps_out == Irreps("2x0e + 1x1o + 1x2e + 1x0o + 1x1e")
    assert_equivariant(cat, specs, cat.irreps_out, dtype=dtype)


def test_concatenation_errors():
    cat = Concatenation(["2x0e", "1x1o"])
    with pytest.raises(ValueError, match="expected 2 inputs"):
        cat(torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"input 1 has dimension 2.*1x1o"):
        cat(torch.ones(4, 2), torch.ones(4, 2))


# --------------------------------------------------------------------------------- convolution


HIDDEN4 = "2x0e + 1x0o + 2x1o + 1x1e + 1x2e + 1x2o + 1x3o + 1x4e"

CONV_CASES = {
    "channelwise-concat-lmax4-full": dict(
        irreps_in=HIDDEN4, irreps_out=None, lmax=4, graph="full", kw={}
    ),
    "channelwise-filter-lmax3-radius": dict(
        irreps_in=HIDDEN4,
        irreps_out=None,
        lmax=3,
        graph=3.5,
        kw=dict(filter_irreps="0e + 0o + 1o + 1e + 2e + 2o + 3o + 3e + 4e", cutoff=3.5),
    ),
    "channelwise-summed-lmax2": dict(
        irreps_in="3x0e + 3x1o + 3x1e + 3x2e",
        irreps_out="3x0e + 3x0o + 3x1o + 3x1e + 3x2e + 3x2o + 3x3o + 3x4e",
        lmax=2,
        graph="full",
        kw=dict(radial_basis="bessel", num_neighbors=4.0),
    ),
    "fully-connected-lmax4-radius": dict(
        irreps_in=HIDDEN4,
        irreps_out="2x0e + 1x0o + 2x1o + 1x1e + 1x2e + 1x2o + 1x3e + 1x4o",
        lmax=4,
        graph=3.5,
        kw=dict(connection="fully_connected", cutoff=3.5, num_neighbors=3.0),
    ),
    "fully-connected-lmax1": dict(
        irreps_in="2x0e + 2x1o", irreps_out="3x0e + 2x1o + 2x1e", lmax=1, graph="full", kw={}
    ),
}


def _conv_fn(conv: Convolution, graph, shared_edges: bool = True):
    """``(pos, x) -> conv(x)`` with the graph built from the positions inside; the edges are
    embedded once outside the convolution (as a network does) or by the convolution itself."""
    from tfn.nn import EdgeEmbedding
    from tfn.ops import EdgePlan

    def fn(pos, x):
        if graph == "full":
            edge_index = full_graph(None, pos.shape[0])
        else:
            edge_index = radius_graph(pos, graph)
        vec, _ = edge_vectors(pos, edge_index)
        if not shared_edges:
            return conv(x, edge_index, vec)
        e = conv.embedding
        embed = EdgeEmbedding(e.lmax, e.max_radius, e.num_basis, e.basis_kind, e.cutoff)
        plan = EdgePlan.build(edge_index[0], edge_index[1], pos.shape[0])
        return conv(x, embed(vec, plan))

    return fn


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_convolution_equivariant(case, dtype, default_dtype):
    c = CONV_CASES[case]
    with default_dtype(dtype):
        conv = Convolution(c["irreps_in"], c["irreps_out"], c["lmax"], **c["kw"])
    if c["irreps_out"] is not None:
        assert conv.irreps_out == Irreps(c["irreps_out"])
    g = torch.Generator().manual_seed(3)
    pos = 1.2 * torch.randn(7, 3, generator=g, dtype=torch.float64)
    x = torch.randn(7, conv.irreps_in.dim, generator=g, dtype=torch.float64)
    fn = _conv_fn(conv, c["graph"], shared_edges=case.endswith("radius"))
    out = fn(pos.to(dtype), x.to(dtype))
    assert out.abs().max() > 1e-2  # not a trivially zero output
    assert_equivariant(
        fn, ["cartesian_points", conv.irreps_in], conv.irreps_out, [pos, x], dtype=dtype
    )


def test_convolution_matches_explicit_sum(default_dtype):
    with default_dtype(torch.float64):
        conv = Convolution("2x0e + 1x1o", None, lmax=2, num_neighbors=2.0, cutoff=4.0)
    pos = torch.randn(5, 3, dtype=torch.float64)
    x = torch.randn(5, conv.irreps_in.dim, dtype=torch.float64)
    edge_index = full_graph(None, 5)
    vec, length = edge_vectors(pos, edge_index)
    out = conv(x, edge_index, vec)
    expected = torch.zeros_like(out)
    for a in range(5):
        for b in range(5):
            if a == b:
                continue
            r = pos[a] - pos[b]  # message b -> a with r_ab = r_a - r_b
            sh = spherical_harmonics([0, 1, 2], r[None])
            w = conv.radial(torch.linalg.vector_norm(r)[None])
            expected[a] += conv.tp(x[b : b + 1], sh, w)[0] / math.sqrt(2.0)
    torch.testing.assert_close(out, expected)
    # radial_functions carries the path coefficients and the neighbour normalisation.
    r = torch.linspace(0.5, 3.0, 4, dtype=torch.float64)
    values = conv.radial_functions(r)
    assert values.shape == (4, conv.description.weight_numel)
    for p in conv.description.paths:
        torch.testing.assert_close(
            values[:, p.weight_slice], conv.radial(r)[:, p.weight_slice] * p.coefficient / 2**0.5
        )


def test_convolution_errors():
    with pytest.raises(ValueError, match="needs irreps_out"):
        Convolution("2x0e", None, connection="fully_connected")
    with pytest.raises(ValueError, match="unknown connection"):
        Convolution("2x0e", None, connection="depthwise")
    with pytest.raises(ValueError, match="num_neighbors"):
        Convolution("2x0e", None, num_neighbors=0.0)
    with pytest.raises(ValueError, match="no path"):
        Convolution("2x0e", None, lmax=2, filter_irreps="0o")
    conv = Convolution("2x0e + 1x1o", None, lmax=1)
    edge_index = full_graph(None, 3)
    vec, _ = edge_vectors(torch.randn(3, 3), edge_index)
    with pytest.raises(ValueError, match=r"dimension 4.*2x0e\+1x1o"):
        conv(torch.randn(3, 4), edge_index, vec)
