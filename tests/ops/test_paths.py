"""Tensor-product descriptions: paths, weight layout, normalisation, output irreps."""

from __future__ import annotations

import math

import pytest

from tfn.ops import channelwise_paths, fully_connected_paths, reachable_irreps
from tfn.ops.paths import _build
from tfn.so3 import Irrep, Irreps


def _check_layout(d):
    """Weights of the paths are contiguous, in order, and cover ``weight_numel`` exactly."""
    start = 0
    for p in d.paths:
        assert p.weight_start == start
        assert p.weight_numel == math.prod(p.weight_shape)
        assert p.weight_slice == slice(start, start + p.weight_numel)
        start += p.weight_numel
    assert d.weight_numel == start


def _check_coefficients(d):
    """``c = 1/sqrt(fan_in)`` with fan_in summed over the paths into each output entry."""
    fan_in = [0] * len(d.irreps_out)
    for p in d.paths:
        mul1, mul2 = d.irreps_in1[p.i_in1].mul, d.irreps_in2[p.i_in2].mul
        fan_in[p.i_out] += mul2 if p.connection == "uvu" else mul1 * mul2
    for p in d.paths:
        assert p.coefficient == pytest.approx(1 / math.sqrt(fan_in[p.i_out]), rel=1e-15)


def _check_selection_rules(d):
    for p in d.paths:
        a, b, c = d.path_irreps(p)
        assert c in list(a * b)
        assert abs(a.l - b.l) <= c.l <= a.l + b.l and c.p == a.p * b.p


def test_channelwise_docstring_example():
    d = channelwise_paths("4x0e + 4x1o", "0e + 1o")
    assert d.irreps_out == Irreps("4x0e + 4x1o + 4x1o + 4x0e + 4x1e + 4x2e")
    assert (d.weight_numel, len(d.paths)) == (24, 6)
    assert all(p.connection == "uvu" and p.weight_shape == (4, 1) for p in d.paths)
    # Every path writes its own output entry: fan_in = mul2 = 1.
    assert all(p.coefficient == 1.0 for p in d.paths)
    assert [p.i_out for p in d.paths] == list(range(6))
    _check_layout(d)
    _check_selection_rules(d)


@pytest.mark.parametrize(
    "irreps1, irreps2",
    [
        ("3x0e + 2x0o + 2x1o + 1x1e + 2x2e + 1x3o", "0e + 1o + 2e + 3o"),
        ("2x0e + 1x1o + 1x4e", "2x0e + 3x1o + 1x2e + 1x1e"),
        ("1x2o", "0e + 1o + 2e + 3o + 4e"),
    ],
)
def test_channelwise_irreps_out_none(irreps1, irreps2):
    irreps1, irreps2 = Irreps(irreps1), Irreps(irreps2)
    d = channelwise_paths(irreps1, irreps2)
    expected = [(mul1, ir) for mul1, ir1 in irreps1 for _, ir2 in irreps2 for ir in ir1 * ir2]
    assert d.irreps_out == Irreps(expected)
    assert len(d.paths) == len(expected)
    mul2 = {i: m for i, (m, _) in enumerate(irreps2)}
    for p in d.paths:
        assert p.weight_shape == (irreps1[p.i_in1].mul, mul2[p.i_in2])
        assert p.coefficient == pytest.approx(1 / math.sqrt(mul2[p.i_in2]))
    _check_layout(d)
    _check_coefficients(d)
    _check_selection_rules(d)


def test_channelwise_filter_irreps():
    d = channelwise_paths("2x0e + 1x1o + 1x2e", "0e + 1o + 2e", filter_irreps="0e + 1o + 7x3o")
    assert {ir for _, ir in d.irreps_out} == {
        Irrep.parse("0e"),
        Irrep.parse("1o"),
        Irrep.parse("3o"),
    }
    full = channelwise_paths("2x0e + 1x1o + 1x2e", "0e + 1o + 2e")
    kept = Irreps([mi for mi in full.irreps_out if mi.ir in Irreps("0e + 1o + 3o")])
    assert d.irreps_out == kept
    _check_layout(d)
    # A filter that matches nothing gives no paths.
    assert channelwise_paths("2x0e", "0e + 1o", filter_irreps="2o").paths == ()


def test_channelwise_with_irreps_out_sums_paths():
    d = channelwise_paths("4x0e + 4x1o", "0e + 1o", "4x0e + 4x1o + 4x1e")
    got = sorted((str(a), str(b), str(c)) for a, b, c in map(d.path_irreps, d.paths))
    assert got == sorted(
        [
            ("0e", "0e", "0e"),
            ("0e", "1o", "1o"),
            ("1o", "0e", "1o"),
            ("1o", "1o", "0e"),
            ("1o", "1o", "1e"),
        ]
    )
    coefficient = {str(d.path_irreps(p)[2]): p.coefficient for p in d.paths}
    assert coefficient["0e"] == pytest.approx(1 / math.sqrt(2))
    assert coefficient["1o"] == pytest.approx(1 / math.sqrt(2))
    assert coefficient["1e"] == pytest.approx(1.0)
    assert d.weight_numel == 5 * 4
    _check_layout(d)
    _check_coefficients(d)


def test_channelwise_in2_multiplicity_counts_in_fan_in():
    d = channelwise_paths("3x0e", "2x0e + 3x1o", "3x0e + 3x1o")
    shapes = {str(d.path_irreps(p)[2]): p.weight_shape for p in d.paths}
    assert shapes == {"0e": (3, 2), "1o": (3, 3)}
    _check_coefficients(d)
    assert d.weight_numel == 6 + 9


def test_channelwise_skips_mismatched_multiplicity():
    # Output entries whose multiplicity differs from input 1's receive no channel-wise path.
    d = channelwise_paths("4x0e + 2x1o", "0e + 1o", "4x0e + 3x1o")
    assert {str(d.path_irreps(p)[0]) for p in d.paths} == {"0e"}
    assert {str(d.path_irreps(p)[2]) for p in d.paths} == {"0e"}
    assert channelwise_paths("4x0e", "0e", "3x0e").paths == ()


def test_uvu_multiplicity_mismatch_raises():
    with pytest.raises(ValueError, match="multiplicity"):
        _build(Irreps("4x0e"), Irreps("0e"), Irreps("3x0e"), [(0, 0, 0)], "uvu")


def test_unknown_connection_raises():
    with pytest.raises(ValueError, match="connection"):
        _build(Irreps("4x0e"), Irreps("0e"), Irreps("4x0e"), [(0, 0, 0)], "uuu")


def test_fully_connected_docstring_example():
    d = fully_connected_paths("2x0e + 2x1o", "0e + 1o", "3x0e + 3x1o")
    assert d.weight_numel == 24
    assert len(d.paths) == 4
    assert all(p.connection == "uvw" and p.weight_shape == (2, 1, 3) for p in d.paths)
    # Two paths into each output entry, each with mul1 * mul2 = 2 inputs: c = 1/2.
    assert all(p.coefficient == pytest.approx(0.5) for p in d.paths)
    _check_layout(d)


@pytest.mark.parametrize(
    "irreps1, irreps2, irreps_out",
    [
        ("2x0e + 1x0o + 2x1o + 1x1e + 1x2e", "0e + 1o + 2e", "3x0e + 2x0o + 2x1o + 1x1e + 1x3o"),
        ("1x0e + 2x1o + 1x2o + 1x4e", "2x0e + 1x1o + 2x2e + 1x3o + 1x4e", "2x0e + 1x2e + 3x4o"),
    ],
)
def test_fully_connected_paths(irreps1, irreps2, irreps_out):
    irreps1, irreps2, irreps_out = Irreps(irreps1), Irreps(irreps2), Irreps(irreps_out)
    d = fully_connected_paths(irreps1, irreps2, irreps_out)
    expected = {
        (i1, i2, io)
        for i1, (_, a) in enumerate(irreps1)
        for i2, (_, b) in enumerate(irreps2)
        for io, (_, c) in enumerate(irreps_out)
        if c in list(a * b)
    }
    assert {(p.i_in1, p.i_in2, p.i_out) for p in d.paths} == expected
    assert len(d.paths) == len(expected)
    for p in d.paths:
        assert p.weight_shape == (
            irreps1[p.i_in1].mul,
            irreps2[p.i_in2].mul,
            irreps_out[p.i_out].mul,
        )
    assert d.irreps_out == irreps_out
    _check_layout(d)
    _check_coefficients(d)
    _check_selection_rules(d)


def test_fully_connected_unreachable_output_has_no_path():
    d = fully_connected_paths("2x0e", "0e + 1o", "2x0e + 2x1e")
    assert {str(d.path_irreps(p)[2]) for p in d.paths} == {"0e"}


def test_reachable_irreps():
    assert reachable_irreps("0e", "0e + 1o + 2e") == {
        Irrep.parse("0e"),
        Irrep.parse("1o"),
        Irrep.parse("2e"),
    }
    got = reachable_irreps("3x0e + 1x1o", "0e + 1o")
    assert got == {Irrep.parse(s) for s in ["0e", "1o", "1e", "2e"]}
    assert Irrep.parse("0o") in reachable_irreps("1e", "1o")
    assert Irrep.parse("0o") not in reachable_irreps("0e + 1o", "0e + 1o + 2e")


def test_str_lists_paths():
    d = channelwise_paths("2x0e + 1x1o", "0e + 1o")
    text = str(d)
    assert text.splitlines()[0].startswith("TensorProduct")
    assert len(text.splitlines()) == 1 + len(d.paths)
    assert "[uvu] 1o x 1o -> 1e" in text
