"""Irreps: parsing, printing, algebra, and the block-diagonal O(3) representation."""

from __future__ import annotations

import re

import pytest
import torch

from tfn.so3 import Irrep, Irreps, MulIrrep, random_rotation, wigner_D

# ----------------------------------------------------------------------------- parsing


def test_parse_and_print():
    irreps = Irreps("16x0e + 8x1o + 4x2e")
    assert str(irreps) == "16x0e+8x1o+4x2e"
    assert repr(irreps) == "Irreps('16x0e+8x1o+4x2e')"
    assert Irreps(str(irreps)) == irreps
    assert Irreps(repr(irreps)[8:-2]) == irreps


@pytest.mark.parametrize(
    "text",
    ["16x0e+8x1o+4x2e", " 16x0e +8x1o+ 4x2e ", "16 x 0e + 8 x1o +4x 2e", "16x0e+8x1o+4x2e\n"],
)
def test_spaces_are_optional(text):
    assert Irreps(text) == Irreps("16x0e + 8x1o + 4x2e")


def test_missing_multiplicity_means_one():
    assert Irreps("1o") == Irreps("1x1o")
    assert Irreps("0e + 2x1o + 3o") == Irreps([(1, (0, 1)), (2, (1, -1)), (1, (3, -1))])
    assert str(Irreps("1o")) == "1x1o"


def test_empty_string_is_the_empty_irreps():
    for text in ["", "   "]:
        irreps = Irreps(text)
        assert len(irreps) == 0
        assert irreps == Irreps() == Irreps([])
        assert irreps.dim == 0 and irreps.num_irreps == 0
        assert str(irreps) == ""
    with pytest.raises(ValueError):
        _ = Irreps("").lmax


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("16x0e + 8y1o", "8y1o"),
        ("1q", "1q"),
        ("x1o", "x1o"),
        ("2x-1o", "2x-1o"),
        ("-1x1o", "-1x1o"),
        ("0e + 1o 2e", "1o 2e"),
        ("1.5x1o", "1.5x1o"),
        ("1e1o", "1e1o"),
    ],
)
def test_malformed_strings_name_the_bad_part(text, bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        Irreps(text)


@pytest.mark.parametrize("text", ["1o +", "+1o", "1o ++ 2e"])
def test_empty_parts_are_rejected(text):
    with pytest.raises(ValueError, match="''"):
        Irreps(text)


def test_other_constructors():
    ref = Irreps("2x0e + 1x1o")
    assert Irreps([(2, (0, 1)), (1, (1, -1))]) == ref
    assert Irreps([(2, "0e"), (1, "1o")]) == ref
    assert Irreps(["2x0e", "1o"]) == ref
    assert Irreps([MulIrrep(2, Irrep(0, 1)), Irrep(1, -1)]) == ref
    assert Irreps(Irrep(1, -1)) == Irreps("1o")
    assert Irreps(ref) is not None and Irreps(ref) == ref
    with pytest.raises(ValueError):
        Irreps([(1, (1, 0))])  # parity 0
    with pytest.raises(ValueError):
        Irreps([(-1, (1, 1))])
    with pytest.raises(ValueError):
        Irreps([(1, (-1, 1))])
    with pytest.raises(ValueError):
        Irreps([5])


def test_irrep():
    assert Irrep.parse("2e") == Irrep(2, 1)
    assert Irrep.parse(" 3o ") == Irrep(3, -1)
    assert str(Irrep(3, -1)) == "3o" and str(Irrep(0, 1)) == "0e"
    assert Irrep(4, 1).dim == 9
    for text in ["2x1o", "1", "o", "1y", ""]:
        with pytest.raises(ValueError):
            Irrep.parse(text)
    # tensor product selection rule
    assert list(Irrep(1, -1) * Irrep(2, -1)) == [Irrep(1, 1), Irrep(2, 1), Irrep(3, 1)]
    assert list(Irrep(0, -1) * Irrep(0, -1)) == [Irrep(0, 1)]


# ----------------------------------------------------------------------------- properties


def test_dim_lmax_num_irreps_ls():
    irreps = Irreps("16x0e + 8x1o + 4x2e")
    assert irreps.dim == 16 + 8 * 3 + 4 * 5 == 60
    assert irreps.lmax == 2
    assert irreps.num_irreps == 28
    assert irreps.ls == [0] * 16 + [1] * 8 + [2] * 4
    assert Irreps("3x5o + 0x7e").lmax == 7  # zero multiplicity still listed
    assert Irreps("3x5o + 0x7e").dim == 33


def test_iteration_yields_mul_and_l_p():
    irreps = Irreps("16x0e + 8x1o + 4x2e")
    assert [(mul, l, p) for mul, (l, p) in irreps] == [(16, 0, 1), (8, 1, -1), (4, 2, 1)]
    first = irreps[0]
    assert isinstance(first, MulIrrep) and isinstance(first.ir, Irrep)
    assert first.mul == 16 and first.ir.l == 0 and first.ir.p == 1 and first.dim == 16
    assert str(first) == "16x0e"


def test_slices_cover_the_layout():
    irreps = Irreps("16x0e + 8x1o + 4x2e")
    assert irreps.slices() == [slice(0, 16), slice(16, 40), slice(40, 60)]
    x = torch.arange(irreps.dim)
    assert torch.equal(torch.cat([x[s] for s in irreps.slices()]), x)
    assert Irreps("").slices() == []


def test_indexing_and_slicing():
    irreps = Irreps("1x0e + 2x1o + 3x2e")
    assert irreps[1] == MulIrrep(2, Irrep(1, -1))
    assert isinstance(irreps[1:], Irreps) and irreps[1:] == Irreps("2x1o + 3x2e")
    assert irreps[::-1] == Irreps("3x2e + 2x1o + 1x0e")


def test_simplify():
    assert Irreps("1o + 1o + 0e + 0x2e + 0e + 1o").simplify() == Irreps("2x1o + 2x0e + 1o")
    assert Irreps("0x1o").simplify() == Irreps("")
    assert Irreps("1o + 1e").simplify() == Irreps("1o + 1e")  # different parity: not merged


def test_sort():
    irreps = Irreps("1o + 0e + 2x1e + 0o + 3x1o")
    assert irreps.sort() == Irreps("0e + 0o + 2x1e + 1o + 3x1o")  # even first, stable
    assert irreps.sort().simplify() == Irreps("0e + 0o + 2x1e + 4x1o")
    sorted_irreps, perm = irreps.sort_with_permutation()
    assert sorted_irreps == irreps.sort()
    for i, entry in enumerate(irreps):  # entry i of self moves to perm[i]
        assert sorted_irreps[perm[i]] == entry
    assert sorted(perm) == list(range(len(irreps)))


def test_add_mul_count_contains():
    a, b = Irreps("2x0e"), Irreps("1o")
    assert a + b == Irreps("2x0e + 1o")
    assert a + "1o" == Irreps("2x0e + 1o")
    assert "1o" + a == Irreps("1o + 2x0e")
    assert isinstance(a + b, Irreps)
    assert (a + b).dim == a.dim + b.dim
    assert Irreps("0e + 1o") * 3 == Irreps("3x0e + 3x1o")
    irreps = Irreps("2x1o + 0e + 3x1o")
    assert irreps.count("1o") == 5 and irreps.count(Irrep(0, 1)) == 1 and irreps.count("1e") == 0
    assert "1o" in irreps and Irrep(0, 1) in irreps and "2e" not in irreps


def test_equality_and_hash():
    a = Irreps("16x0e+8x1o")
    b = Irreps(" 16x0e + 8x1o ")
    assert a == b and not (a != b)
    assert hash(a) == hash(b)
    assert a == "16x0e + 8x1o"
    assert a != "16x0e + 8x1e"
    assert a != "this is not irreps"  # no exception
    assert Irreps("1o") != Irreps("2x1o")
    assert Irreps("1o + 1o") != Irreps("2x1o")  # equality is entry-wise, not up to simplify
    assert Irreps("1o") == Irreps("1x1o") and hash(Irreps("1o")) == hash(Irreps("1x1o"))
    table = {a: 1, Irreps("1o"): 2}
    assert table[Irreps("16x0e + 8x1o")] == 1 and table[Irreps("1x1o")] == 2
    assert len({a, b, Irreps("1o")}) == 2


def test_spherical_harmonics_irreps_and_randn():
    assert Irreps.spherical_harmonics(3) == Irreps("0e + 1o + 2e + 3o")
    assert Irreps.spherical_harmonics(2, p=1) == Irreps("0e + 1e + 2e")
    x = Irreps("2x0e + 1o").randn(4, 7, dtype=torch.float64)
    assert x.shape == (4, 7, 5) and x.dtype == torch.float64


# ----------------------------------------------------------------------------- D_from_matrix


def _random_o3(n: int, seed: int) -> torch.Tensor:
    """``n`` orthogonal matrices, half of them improper (det -1)."""
    g = torch.Generator().manual_seed(seed)
    R = random_rotation(n, g, torch.float64)
    sign = torch.tensor([(-1.0) ** i for i in range(n)], dtype=torch.float64)
    return R * sign[:, None, None]


def test_d_from_matrix_is_block_diagonal_with_wigner_blocks():
    irreps = Irreps("2x0e + 1x1o + 2x2e + 1x3o + 1x1e")
    R = random_rotation(3, torch.Generator().manual_seed(0), torch.float64)
    D = irreps.D_from_matrix(R)
    assert D.shape == (3, irreps.dim, irreps.dim)
    offsets = [0]
    for mul, ir in irreps:
        for _ in range(mul):
            offsets.append(offsets[-1] + ir.dim)
    ls = irreps.ls
    for i, l in enumerate(ls):
        a, b = offsets[i], offsets[i + 1]
        torch.testing.assert_close(D[:, a:b, a:b], wigner_D(l, R), atol=1e-12, rtol=0)
        off = D[:, a:b].clone()
        off[:, :, a:b] = 0
        assert off.abs().max() == 0


def test_d_from_matrix_one_o_is_the_matrix_itself():
    R = _random_o3(6, 1)
    torch.testing.assert_close(Irreps("1o").D_from_matrix(R), R, atol=1e-12, rtol=0)
    # 1e is a pseudovector: det(R) R
    det = torch.linalg.det(R)
    torch.testing.assert_close(
        Irreps("1e").D_from_matrix(R), R * det[:, None, None], atol=1e-12, rtol=0
    )


def test_d_from_matrix_parity():
    R = _random_o3(4, 2)
    det = torch.linalg.det(R)
    for l in range(5):
        De = Irreps(f"{l}e").D_from_matrix(R)
        Do = Irreps(f"{l}o").D_from_matrix(R)
        torch.testing.assert_close(Do, De * det[:, None, None], atol=1e-12, rtol=0)
    # the inversion -I acts as p on each irrep
    D = Irreps("0e + 0o + 1o + 1e + 2e + 2o").D_from_matrix(-torch.eye(3, dtype=torch.float64))
    expected = torch.tensor([1, -1] + [-1] * 3 + [1] * 3 + [1] * 5 + [-1] * 5, dtype=D.dtype)
    torch.testing.assert_close(D, torch.diag(expected), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_d_from_matrix_is_an_o3_homomorphism(dtype):
    irreps = Irreps([(1, (l, p)) for l in range(13) for p in (1, -1)])
    A, B = _random_o3(4, 3).to(dtype), _random_o3(4, 4).to(dtype).flip(0)  # mixed proper/improper
    DA, DB, DAB = irreps.D_from_matrix(A), irreps.D_from_matrix(B), irreps.D_from_matrix(A @ B)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(DAB, DA @ DB, atol=tol, rtol=0)
    eye = torch.eye(irreps.dim, dtype=dtype).expand_as(DA)
    torch.testing.assert_close(DA @ DA.transpose(-1, -2), eye, atol=tol, rtol=0)
    torch.testing.assert_close(
        irreps.D_from_matrix(torch.eye(3, dtype=dtype)), eye[0], atol=tol, rtol=0
    )


def test_d_from_matrix_of_empty_irreps():
    D = Irreps("").D_from_matrix(torch.eye(3))
    assert D.shape == (0, 0)
