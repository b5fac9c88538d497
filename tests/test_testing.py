"""The equivariance oracle passes equivariant functions and catches broken ones."""

from __future__ import annotations

import re

import pytest
import torch

from tfn.so3 import Irreps, clebsch_gordan, spherical_harmonics
from tfn.testing import Global, assert_equivariant, equivariance_error

SH = "0e + 1o + 2e"


def _errors_from_message(message: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+): ([0-9.e+-]+)", message.split(";")[1])}


def _assert_fails(kind: str, fn, irreps_in, irreps_out, **kwargs) -> str:
    """assert_equivariant raises, and its message reports a large error under ``kind``."""
    with pytest.raises(AssertionError, match="not equivariant") as info:
        assert_equivariant(fn, irreps_in, irreps_out, **kwargs)
    message = str(info.value)
    atol = kwargs.get("atol") or (1e-5 if kwargs.get("dtype") == torch.float32 else 1e-10)
    assert _errors_from_message(message)[kind] > atol, message
    return message


def _conv(pos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A tiny equivariant point convolution: 0e x Y(r_ij) summed over neighbours -> 0e+1o+2e,
    plus a 1o x 1o -> 0e path through the CG coefficients."""
    rel = pos[None, :, :] - pos[:, None, :]  # [i, j, 3]
    Y = spherical_harmonics([0, 1, 2], rel, normalize=False)  # r^l Y_l: a polynomial, 0 at i = j
    w = torch.exp(-(rel * rel).sum(-1))  # [i, j] invariant radial weight
    out = torch.einsum("ij,jc,ijm->icm", w, x[:, :2], Y).reshape(len(pos), -1)  # 2x(0e+1o+2e)
    dot = torch.einsum("abk,ia,ib->ik", clebsch_gordan(1, 1, 0).to(x), x[:, 2:5], x[:, 2:5])
    return torch.cat([out, dot], dim=-1)


CONV_OUT = Irreps("2x0e + 2x1o + 2x2e + 0e")  # laid out as [channel, m] per point


def _conv_flat(pos, x):
    # reorder [c0: 0e 1o 2e, c1: 0e 1o 2e, dot] into "2x0e + 2x1o + 2x2e + 0e"
    out = _conv(pos, x)
    c = out[:, :18].reshape(-1, 2, 9)
    return torch.cat(
        [c[..., :1].flatten(1), c[..., 1:4].flatten(1), c[..., 4:].flatten(1), out[:, 18:]], -1
    )


# ----------------------------------------------------------------------------- passing cases


def test_passes_on_spherical_harmonics():
    errors = assert_equivariant(
        lambda pos: spherical_harmonics([0, 1, 2], pos), "cartesian_points", SH, translations=False
    )
    assert set(errors) == {"rotation", "reflection", "permutation", "combined"}
    assert max(errors.values()) < 1e-12


def test_passes_on_a_point_convolution():
    errors = assert_equivariant(_conv_flat, ["cartesian_points", "2x0e + 1o"], CONV_OUT)
    assert set(errors) == {"rotation", "reflection", "translation", "permutation", "combined"}


def test_passes_with_global_output_and_index_and_none_specs():
    def fn(pos, x, types, scale):
        h = x * (1.0 + types[:, None].to(x)) * scale
        return h.sum(0), (pos - pos.mean(0)).norm(dim=-1, keepdim=True)

    pos = torch.randn(5, 3, dtype=torch.float64)
    x = Irreps("0e + 1o").randn(5, dtype=torch.float64)
    types = torch.tensor([0, 1, 0, 2, 1])
    errors = assert_equivariant(
        fn,
        ["cartesian_points", "0e + 1o", "point_index", None],
        [Global("0e + 1o"), "0e"],
        args=[pos, x, types, 2.0],
    )
    assert "permutation" in errors


def test_no_permutation_check_for_one_point():
    errors = assert_equivariant(lambda x: x, "1o", "1o", num_points=1)
    assert "permutation" not in errors


def test_reflections_can_be_turned_off():
    def cross(a, b):
        return torch.linalg.cross(a, b)

    assert_equivariant(cross, ["1o", "1o"], "1e")  # the cross product is a pseudovector
    assert_equivariant(cross, ["1o", "1o"], "1o", reflections=False)
    _assert_fails("reflection", cross, ["1o", "1o"], "1o")


# ----------------------------------------------------------------------------- failing cases


def test_fails_on_wrong_parity():
    fn = lambda pos: spherical_harmonics([0, 1, 2], pos)  # noqa: E731
    errors = equivariance_error(fn, "cartesian_points", "0e + 1e + 2e", translations=False)
    assert errors["rotation"] < 1e-12 and errors["permutation"] < 1e-12
    assert errors["reflection"] > 0.1 and errors["combined"] > 0.1
    with pytest.raises(AssertionError, match="not equivariant") as info:
        assert_equivariant(fn, "cartesian_points", "0e + 1e + 2e", translations=False)
    message = str(info.value)
    assert "reflection" in message
    found = _errors_from_message(message)
    assert found["reflection"] > 0.1 and found["rotation"] < 1e-10


def test_fails_when_not_translation_invariant():
    fn = lambda pos: spherical_harmonics([0, 1], pos)  # noqa: E731  (uses absolute positions)
    errors = equivariance_error(fn, "cartesian_points", "0e + 1o")
    assert errors["rotation"] < 1e-12 and errors["reflection"] < 1e-12
    assert errors["translation"] > 1e-3
    with pytest.raises(AssertionError) as info:
        assert_equivariant(fn, "cartesian_points", "0e + 1o")
    assert _errors_from_message(str(info.value))["translation"] > 1e-3
    assert "translation" in str(info.value)
    # declared correctly (no translations) it passes
    assert_equivariant(fn, "cartesian_points", "0e + 1o", translations=False)


def test_fails_when_not_permutation_equivariant():
    fn = lambda x: torch.cumsum(x, dim=0)  # noqa: E731  mixes points in order
    errors = equivariance_error(fn, "2x0e + 1o", "2x0e + 1o")
    assert errors["rotation"] < 1e-12 and errors["reflection"] < 1e-12
    assert errors["permutation"] > 0.1
    _assert_fails("permutation", fn, "2x0e + 1o", "2x0e + 1o")
    assert_equivariant(fn, "2x0e + 1o", "2x0e + 1o", permutations=False)


def test_fails_on_a_global_output_that_depends_on_point_order():
    # "pooling" with weights that depend on the position of a point in the list
    fn = lambda pos, x: (torch.arange(len(x)).to(x)[:, None] * x).sum(0)  # noqa: E731
    _assert_fails("permutation", fn, ["cartesian_points", "1o"], Global("1o"))
    # taking the first point: caught, though the 3 random permutations drawn by the default
    # generator all happen to keep point 0 in place, so only "combined" sees it
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda pos, x: x[0], ["cartesian_points", "1o"], Global("1o"))
    assert_equivariant(lambda pos, x: x.sum(0), ["cartesian_points", "1o"], Global("1o"))


def test_fails_on_a_global_output_with_the_wrong_irreps():
    fn = lambda x: x.sum(0)  # noqa: E731
    _assert_fails("rotation", fn, "1o", Global("0e + 0e + 0e"), reflections=False)
    _assert_fails("reflection", fn, "1o", Global("1e"))


def test_fails_on_a_per_point_output_declared_global():
    # a per-point output [N, 3] declared Global is never permuted: the permutation check fails
    _assert_fails("permutation", lambda x: x, "1o", Global("1o"))


def test_fails_on_a_slightly_broken_function():
    """A tiny symmetry breaking (1e-6) is caught in float64 but tolerated in float32."""

    def fn(x):
        return x + 1e-6 * x[:, :1]  # leaks the x component into all three

    _assert_fails("rotation", fn, "1o", "1o")
    assert_equivariant(fn, "1o", "1o", dtype=torch.float32)


# ----------------------------------------------------------------------------- float32, options


def test_float32_mode():
    seen = []

    def fn(pos, x):
        seen.append((pos.dtype, x.dtype))
        return _conv_flat(pos, x)

    errors = assert_equivariant(
        fn, ["cartesian_points", "2x0e + 1o"], CONV_OUT, dtype=torch.float32
    )
    assert all(d == (torch.float32, torch.float32) for d in seen)
    assert 0 < max(errors.values()) < 1e-5
    _assert_fails(
        "reflection",
        lambda pos: spherical_harmonics([0, 1], pos),
        "cartesian_points",
        "0e + 1e",
        translations=False,
        dtype=torch.float32,
    )


def test_explicit_args_are_cast():
    pos = torch.randn(4, 3)  # float32 in, float64 by default inside
    seen = []

    def fn(p):
        seen.append(p.dtype)
        return p - p.mean(0)

    assert_equivariant(fn, "cartesian_points", "1o", args=[pos])
    assert set(seen) == {torch.float64}


def test_atol_and_trials():
    fn = lambda x: x + 1e-7 * x[:, :1]  # noqa: E731
    with pytest.raises(AssertionError, match="tolerance 1e-10"):
        assert_equivariant(fn, "1o", "1o")
    assert_equivariant(fn, "1o", "1o", atol=1e-5, trials=1)


def test_reproducible_with_default_generator():
    fn = lambda x: torch.cumsum(x, dim=0)  # noqa: E731
    assert equivariance_error(fn, "1o", "1o") == equivariance_error(fn, "1o", "1o")


def test_spec_errors():
    with pytest.raises(ValueError, match="dimension"):
        assert_equivariant(lambda x: x, "1o", "1o", args=[torch.randn(4, 5)])
    with pytest.raises(ValueError, match="dimension"):
        assert_equivariant(lambda x: x[:, :2], "1o", "1o")
    with pytest.raises(ValueError, match="arguments"):
        assert_equivariant(lambda x: x, ["1o", "1o"], "1o", args=[torch.randn(4, 3)])
    with pytest.raises(ValueError, match="outputs"):
        assert_equivariant(lambda x: (x, x), "1o", ["1o", "1o", "1o"])
    with pytest.raises(ValueError, match="number of points"):
        assert_equivariant(
            lambda a, b: a, ["1o", "1o"], "1o", args=[torch.randn(4, 3), torch.randn(5, 3)]
        )
    with pytest.raises(TypeError):
        assert_equivariant(lambda x: x, 3, "1o")
    with pytest.raises(ValueError):
        assert_equivariant(lambda x: x, "1q", "1o")
    with pytest.raises(ValueError, match="cartesian_points"):
        assert_equivariant(lambda x: x, "cartesian_points", "1o", args=[torch.randn(4, 2)])
