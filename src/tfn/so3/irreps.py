"""Irreducible representations of O(3) and their direct sums.

An irrep is a degree ``l >= 0`` and a parity ``p = +1`` (``e``, even) or ``-1`` (``o``, odd);
it has dimension ``2l + 1``. ``Irreps("16x0e + 8x1o")`` is the direct sum of 16 copies of the
scalar irrep and 8 copies of the vector irrep: the layout of a flat feature tensor
``[..., 16 + 8 * 3]``, multiplicities first, then the ``2l + 1`` components of each copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Union

import torch

__all__ = ["Irrep", "MulIrrep", "Irreps", "IrrepsLike"]

_IRREP_RE = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\d+)\s*([eo])\s*$")


class Irrep(NamedTuple):
    """One irrep of O(3): degree ``l`` and parity ``p`` (+1 even, -1 odd).

    Example:
        >>> Irrep.parse("2e"), Irrep(1, -1).dim, str(Irrep(3, -1))
        (Irrep(l=2, p=1), 3, '3o')
    """

    l: int
    p: int

    @classmethod
    def parse(cls, text: str) -> Irrep:
        """Parse ``"2e"`` or ``"1o"``."""
        m = re.fullmatch(r"\s*(\d+)\s*([eo])\s*", text)
        if m is None:
            raise ValueError(f"invalid irrep {text!r}: expected a degree and a parity, e.g. '1o'")
        return cls(int(m.group(1)), 1 if m.group(2) == "e" else -1)

    @property
    def dim(self) -> int:
        return 2 * self.l + 1

    def __str__(self) -> str:
        return f"{self.l}{'e' if self.p == 1 else 'o'}"

    def __mul__(self, other: Irrep) -> Iterator[Irrep]:  # type: ignore[override]
        """The irreps in the tensor product: ``|l1-l2| .. l1+l2`` with parity ``p1 p2``."""
        p = self.p * other.p
        for l in range(abs(self.l - other.l), self.l + other.l + 1):
            yield Irrep(l, p)


class MulIrrep(NamedTuple):
    """A multiplicity and an irrep, as iterated from :class:`Irreps`."""

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        return self.mul * self.ir.dim

    def __str__(self) -> str:
        return f"{self.mul}x{self.ir}"


IrrepsLike = Union["Irreps", str, Iterable]


class Irreps(tuple):
    """A direct sum of irreps with multiplicities, e.g. ``"16x0e + 8x1o + 4x2e"``.

    Parsing accepts optional spaces and a missing multiplicity (``"1o"`` means ``"1x1o"``).
    Iterating gives ``(mul, (l, p))`` pairs (:class:`MulIrrep`).

    Example:
        >>> irreps = Irreps("16x0e + 8x1o+4x2e")
        >>> irreps.dim, irreps.lmax, irreps.num_irreps, str(irreps)
        (60, 2, 28, '16x0e+8x1o+4x2e')
        >>> [(mul, l, p) for mul, (l, p) in irreps]
        [(16, 0, 1), (8, 1, -1), (4, 2, 1)]
        >>> Irreps("1o + 0e + 1o").sort().simplify()
        Irreps('1x0e+2x1o')
    """

    def __new__(cls, irreps: IrrepsLike = ()) -> Irreps:
        if isinstance(irreps, Irreps):
            return super().__new__(cls, irreps)
        if type(irreps).__module__.startswith("e3nn"):  # e3nn.o3.Irreps / Irrep: same notation
            irreps = str(irreps)
        items: list[MulIrrep] = []
        if isinstance(irreps, str):
            text = irreps.strip()
            if text:
                for part in text.split("+"):
                    m = _IRREP_RE.match(part)
                    if m is None:
                        raise ValueError(
                            f"invalid irreps {irreps!r}: cannot parse {part.strip()!r} "
                            "(expected e.g. '16x0e', '1o' or '8x2e')"
                        )
                    mul = int(m.group(1)) if m.group(1) is not None else 1
                    items.append(
                        MulIrrep(mul, Irrep(int(m.group(2)), 1 if m.group(3) == "e" else -1))
                    )
        elif isinstance(irreps, Irrep):
            items.append(MulIrrep(1, irreps))
        else:
            for entry in irreps:
                if isinstance(entry, str):
                    items.extend(Irreps(entry))
                    continue
                if isinstance(entry, Irrep):
                    items.append(MulIrrep(1, entry))
                    continue
                try:
                    mul, ir = entry
                    ir = Irrep.parse(ir) if isinstance(ir, str) else Irrep(*ir)
                except (TypeError, ValueError) as error:
                    raise ValueError(
                        f"invalid irreps entry {entry!r}: expected (mul, (l, p))"
                    ) from error
                items.append(MulIrrep(int(mul), ir))
        for mul, ir in items:
            if mul < 0 or ir.l < 0 or ir.p not in (1, -1):
                raise ValueError(
                    f"invalid irreps entry {mul}x{ir.l}/{ir.p}: need mul >= 0, l >= 0, p = +-1"
                )
        return super().__new__(cls, items)

    @classmethod
    def spherical_harmonics(cls, lmax: int, p: int = -1) -> Irreps:
        """``0e + 1o + 2e + ...``: the irreps of the spherical harmonics up to ``lmax``."""
        return cls([(1, (l, p**l)) for l in range(lmax + 1)])

    @property
    def dim(self) -> int:
        return sum(mul * ir.dim for mul, ir in self)

    @property
    def num_irreps(self) -> int:
        return sum(mul for mul, _ in self)

    @property
    def lmax(self) -> int:
        if len(self) == 0:
            raise ValueError("lmax of empty Irreps")
        return max(ir.l for _, ir in self)

    @property
    def ls(self) -> list[int]:
        """The degree of every copy, repeated by multiplicity."""
        return [ir.l for mul, ir in self for _ in range(mul)]

    def slices(self) -> list[slice]:
        """The slice of the flat layout that each ``mul x irrep`` entry occupies."""
        out, start = [], 0
        for mul_ir in self:
            out.append(slice(start, start + mul_ir.dim))
            start += mul_ir.dim
        return out

    def simplify(self) -> Irreps:
        """Merge neighbouring equal irreps and drop zero multiplicities (order kept)."""
        out: list[tuple[int, Irrep]] = []
        for mul, ir in self:
            if mul == 0:
                continue
            if out and out[-1][1] == ir:
                out[-1] = (out[-1][0] + mul, ir)
            else:
                out.append((mul, ir))
        return Irreps(out)

    def sort(self) -> Irreps:
        """Sort by (l, parity with even first); stable. Use ``.simplify()`` to merge after."""
        return Irreps(sorted(self, key=lambda mi: (mi.ir.l, -mi.ir.p)))

    def sort_with_permutation(self) -> tuple[Irreps, list[int]]:
        """Sorted irreps and ``perm`` such that entry ``i`` of ``self`` moves to ``perm[i]``."""
        order = sorted(range(len(self)), key=lambda i: (self[i].ir.l, -self[i].ir.p))
        inv = [0] * len(order)
        for new, old in enumerate(order):
            inv[old] = new
        return Irreps([self[i] for i in order]), inv

    def count(self, ir: Irrep | str) -> int:  # type: ignore[override]
        """Total multiplicity of one irrep."""
        ir = Irrep.parse(ir) if isinstance(ir, str) else Irrep(*ir)
        return sum(mul for mul, i in self if i == ir)

    def __contains__(self, ir: object) -> bool:
        if isinstance(ir, str):
            ir = Irrep.parse(ir)
        return any(i == ir for _, i in self)

    def __add__(self, other: IrrepsLike) -> Irreps:  # type: ignore[override]
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other: IrrepsLike) -> Irreps:
        return Irreps(other) + self

    def __mul__(self, n: int) -> Irreps:  # type: ignore[override]
        """``n * irreps`` multiplies every multiplicity: ``2 * Irreps("0e")`` is ``2x0e``."""
        return Irreps([(mul * n, ir) for mul, ir in self])

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (str, tuple, list)):
            return False
        try:
            other = Irreps(other)
        except (ValueError, TypeError):
            return False
        return tuple(self) == tuple(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __getitem__(self, i):  # type: ignore[override]
        out = super().__getitem__(i)
        return Irreps(out) if isinstance(i, slice) else out

    def __str__(self) -> str:
        return "+".join(str(mi) for mi in self)

    def __repr__(self) -> str:
        return f"Irreps('{self}')"

    def randn(
        self,
        *size: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Random features ``[*size, dim]`` drawn from a standard normal distribution."""
        return torch.randn(*size, self.dim, dtype=dtype, device=device, generator=generator)

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        """The block-diagonal representation of orthogonal matrices ``R [..., 3, 3]``.

        Proper rotations act on each ``l`` through the Wigner D matrix; an improper ``R``
        (det -1) acts as the rotation ``-R`` times the parity ``p`` of each irrep, so ``1o`` is a
        vector (``D = R``) and ``1e`` a pseudovector.

        Example:
            >>> R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
            >>> bool(torch.allclose(Irreps("1o").D_from_matrix(R), R, atol=1e-6))
            True
            >>> D = Irreps("1e + 0o").D_from_matrix(-torch.eye(3))  # pseudo-quantities
            >>> [round(v) for v in D.diagonal().tolist()]
            [1, 1, 1, -1]
        """
        from tfn.so3.wigner import wigner_D

        det = torch.linalg.det(R)
        sign = torch.sign(det)
        rot = R * sign[..., None, None]
        D = R.new_zeros(R.shape[:-2] + (self.dim, self.dim))
        cache: dict[int, torch.Tensor] = {}
        start = 0
        for mul, ir in self:
            if ir.l not in cache:
                cache[ir.l] = wigner_D(ir.l, rot)
            block = cache[ir.l] * (sign[..., None, None] if ir.p == -1 else 1.0)
            for _ in range(mul):
                D[..., start : start + ir.dim, start : start + ir.dim] = block
                start += ir.dim
        return D
