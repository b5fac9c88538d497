"""What a Clebsch-Gordan tensor product computes, apart from how it is computed.

A :class:`TensorProductDescription` lists the paths ``(in1 entry, in2 entry) -> out entry``,
the connection of each path (``"uvu"``: channel-wise, each channel of input 1 has its own
weight; ``"uvw"``: fully connected across channels), the layout of the flat weight vector, and the
normalisation coefficient of each path. It is plain data, computed from irreps alone, so the
shapes of any model can be known without running it. Kernels (:mod:`tfn.ops.tensor_product`)
execute a description; a faster kernel can replace another without touching the models.

For one path with Clebsch-Gordan tensor ``C`` (:func:`tfn.so3.clebsch_gordan`):

* ``"uvu"``: ``out[u, k] += c * w[u] * sum_ij C[i, j, k] x1[u, i] x2[j]`` (needs ``mul_out == mul1``);
* ``"uvw"``: ``out[w, k] += c * sum_{u, v} W[u, v, w] sum_ij C[i, j, k] x1[u, i] x2[v, j]``.

``c`` is ``1 / sqrt(fan_in)`` of the output entry (paths into it, times ``mul1 * mul2`` for
``"uvw"``), so with unit-variance inputs and weights the output has unit variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tfn.so3.irreps import Irrep, Irreps, IrrepsLike

__all__ = [
    "Path",
    "TensorProductDescription",
    "channelwise_paths",
    "fully_connected_paths",
    "reachable_irreps",
]

_CONNECTIONS = ("uvu", "uvw")


@dataclass(frozen=True)
class Path:
    """One path of a tensor product: entries of the three irreps, connection, weights,
    coefficient. ``connection`` is ``"uvu"`` (channel-wise) or ``"uvw"`` (fully connected)."""

    i_in1: int
    i_in2: int
    i_out: int
    connection: str
    weight_start: int
    weight_shape: tuple[int, ...]
    coefficient: float

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def weight_slice(self) -> slice:
        return slice(self.weight_start, self.weight_start + self.weight_numel)


@dataclass(frozen=True)
class TensorProductDescription:
    """The paths of a tensor product ``irreps_in1 x irreps_in2 -> irreps_out`` and their weights.

    Example:
        >>> d = channelwise_paths("4x0e + 4x1o", "0e + 1o")
        >>> d.irreps_out
        Irreps('4x0e+4x1o+4x1o+4x0e+4x1e+4x2e')
        >>> d.weight_numel, len(d.paths)
        (24, 6)
    """

    irreps_in1: Irreps
    irreps_in2: Irreps
    irreps_out: Irreps
    paths: tuple[Path, ...]

    @property
    def weight_numel(self) -> int:
        return sum(p.weight_numel for p in self.paths)

    def path_irreps(self, path: Path) -> tuple[Irrep, Irrep, Irrep]:
        """The irreps ``(ir1, ir2, ir_out)`` that a path couples."""
        return (
            self.irreps_in1[path.i_in1].ir,
            self.irreps_in2[path.i_in2].ir,
            self.irreps_out[path.i_out].ir,
        )

    def __str__(self) -> str:
        lines = [f"TensorProduct {self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}"]
        for p in self.paths:
            a, b, c = self.path_irreps(p)
            lines.append(
                f"  [{p.connection}] {a} x {b} -> {c}  weights {p.weight_shape}  c={p.coefficient:.4g}"
            )
        return "\n".join(lines)


def _build(
    irreps_in1: Irreps,
    irreps_in2: Irreps,
    irreps_out: Irreps,
    triples: list[tuple[int, int, int]],
    connection: str,
) -> TensorProductDescription:
    if connection not in _CONNECTIONS:
        raise ValueError(
            f"unknown tensor product connection {connection!r}; expected one of {_CONNECTIONS}"
        )
    fan_in = [0] * len(irreps_out)
    for i1, i2, io in triples:
        mul1, mul2 = irreps_in1[i1].mul, irreps_in2[i2].mul
        fan_in[io] += mul2 if connection == "uvu" else mul1 * mul2
    paths, start = [], 0
    for i1, i2, io in triples:
        mul1, mul2, mul_out = irreps_in1[i1].mul, irreps_in2[i2].mul, irreps_out[io].mul
        if connection == "uvu":
            if mul_out != mul1:
                raise ValueError(
                    f"channel-wise path {irreps_in1[i1]} x {irreps_in2[i2]} -> {irreps_out[io]} "
                    "needs the output multiplicity to equal the input multiplicity"
                )
            shape: tuple[int, ...] = (mul1, mul2)
        else:
            shape = (mul1, mul2, mul_out)
        coefficient = 1.0 / math.sqrt(fan_in[io]) if fan_in[io] > 0 else 0.0
        paths.append(Path(i1, i2, io, connection, start, shape, coefficient))
        start += math.prod(shape)
    return TensorProductDescription(irreps_in1, irreps_in2, irreps_out, tuple(paths))


def channelwise_paths(
    irreps_in1: IrrepsLike,
    irreps_in2: IrrepsLike,
    irreps_out: IrrepsLike | None = None,
    *,
    filter_irreps: IrrepsLike | None = None,
) -> TensorProductDescription:
    """Channel-wise (``"uvu"``) paths: the TFN point convolution's coupling.

    With ``irreps_out=None`` every allowed path writes its own output entry (the paper's
    concatenation), optionally keeping only outputs whose irrep is in ``filter_irreps``. With
    ``irreps_out`` given, every path whose irrep and multiplicity match an output entry is
    summed into it.
    """
    irreps_in1, irreps_in2 = Irreps(irreps_in1), Irreps(irreps_in2)
    keep = None if filter_irreps is None else {ir for _, ir in Irreps(filter_irreps)}
    triples: list[tuple[int, int, int]] = []
    if irreps_out is None:
        out: list[tuple[int, Irrep]] = []
        for i1, (mul1, ir1) in enumerate(irreps_in1):
            for i2, (_, ir2) in enumerate(irreps_in2):
                for ir in ir1 * ir2:
                    if keep is None or ir in keep:
                        triples.append((i1, i2, len(out)))
                        out.append((mul1, ir))
        irreps_out = Irreps(out)
    else:
        irreps_out = Irreps(irreps_out)
        for i1, (mul1, ir1) in enumerate(irreps_in1):
            for i2, (_, ir2) in enumerate(irreps_in2):
                for io, (mul_out, ir_out) in enumerate(irreps_out):
                    if ir_out in list(ir1 * ir2) and mul_out == mul1:
                        triples.append((i1, i2, io))
    return _build(irreps_in1, irreps_in2, irreps_out, triples, "uvu")


def fully_connected_paths(
    irreps_in1: IrrepsLike, irreps_in2: IrrepsLike, irreps_out: IrrepsLike
) -> TensorProductDescription:
    """Fully connected (``"uvw"``) paths: every allowed ``(in1, in2) -> out`` triple.

    Example:
        >>> fully_connected_paths("2x0e + 2x1o", "0e + 1o", "3x0e + 3x1o").weight_numel
        24
    """
    irreps_in1, irreps_in2, irreps_out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
    triples = [
        (i1, i2, io)
        for i1, (_, ir1) in enumerate(irreps_in1)
        for i2, (_, ir2) in enumerate(irreps_in2)
        for io, (_, ir_out) in enumerate(irreps_out)
        if ir_out in list(ir1 * ir2)
    ]
    return _build(irreps_in1, irreps_in2, irreps_out, triples, "uvw")


def reachable_irreps(irreps_in1: IrrepsLike, irreps_in2: IrrepsLike) -> set[Irrep]:
    """All irreps that some path of ``irreps_in1 x irreps_in2`` produces."""
    return {
        ir for _, ir1 in Irreps(irreps_in1) for _, ir2 in Irreps(irreps_in2) for ir in ir1 * ir2
    }
