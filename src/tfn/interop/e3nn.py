"""Converting features, coefficients and weights between tfn and e3nn (0.6.0).

tfn and e3nn use the same conventions for everything that touches features:

* real spherical harmonics with ``y`` as the polar axis, components ``m = -l .. l``, the ``l = 1``
  block ordered ``(x, y, z)``; ``tfn.so3.spherical_harmonics(l, x, normalization=n)`` equals
  ``e3nn.o3.spherical_harmonics(l, x, True, normalization=n)`` for every normalisation (note the
  *defaults* differ: tfn ``"component"``, e3nn ``"integral"``);
* Wigner D matrices: ``tfn.so3.wigner_D(l, R) == e3nn.o3.wigner_D(l, *e3nn.o3.matrix_to_angles(R))``;
* Euler angles: both ``R = R_y(alpha) R_x(beta) R_y(gamma)``;
* irreps strings (``"16x0e+8x1o"``) and the flat layout (multiplicity-major, then ``m``).

So the per-degree change of basis of features is the identity (:func:`change_of_basis`); the
tests derive it numerically from both libraries' harmonics and check that.

What differs is the Clebsch-Gordan tensor: tfn's is an isometry (``sum_{m1 m2} C C = delta``)
with its first nonzero entry positive, e3nn's ``wigner_3j`` has Frobenius norm 1 and its own
sign, so ``clebsch_gordan(l1, l2, l3) == s * sqrt(2 l3 + 1) * wigner_3j(l1, l2, l3)`` with a
sign ``s = +-1`` that depends on ``(l1, l2, l3)`` (:func:`cg_sign`), and Cartesian-tensor
change of bases agree only up to an orthogonal intertwiner (:func:`cartesian_change_of_basis`).
An ``e3nn.o3.Linear`` maps onto ``tfn.nn.SelfInteraction`` (:func:`linear_weight_from_e3nn`).

e3nn is imported lazily, inside the functions that need it: tfn itself never requires it.
:func:`change_of_basis`, :func:`features_from_e3nn` and :func:`features_to_e3nn` work without it.
See ``docs/e3nn.md``.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import torch

from tfn.so3.clebsch_gordan import clebsch_gordan
from tfn.so3.irreps import Irreps

__all__ = [
    "change_of_basis",
    "features_from_e3nn",
    "features_to_e3nn",
    "cg_sign",
    "cg_from_e3nn_factor",
    "cartesian_change_of_basis",
    "linear_weight_from_e3nn",
    "self_interaction_from_e3nn",
]


def _import_e3nn() -> Any:
    try:
        import e3nn.o3  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this function compares with e3nn at runtime; install it with `pip install e3nn==0.6.0`"
        ) from error
    import e3nn

    return e3nn


def _as_irreps(irreps: Any) -> Irreps:
    """tfn :class:`Irreps` from tfn irreps, a string, or an ``e3nn.o3.Irreps`` (via its string)."""
    if isinstance(irreps, (Irreps, str)):
        return Irreps(irreps)
    if type(irreps).__module__.startswith("e3nn"):
        # e3nn's Irreps prints as "16x0e+8x1o", which tfn parses; its Irrep refuses len().
        return Irreps(str(irreps))
    return Irreps(irreps)


def change_of_basis(
    l: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The orthogonal ``Q [2l+1, 2l+1]`` with ``x_tfn = Q @ x_e3nn`` for one degree-``l`` block.

    It is the identity for every ``l``: both libraries use the same real harmonics (verified
    numerically against e3nn 0.6.0 in ``tests/interop/test_e3nn.py``).

    Example:
        >>> change_of_basis(1)
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """
    if l < 0:
        raise ValueError(f"change_of_basis: degree must be >= 0, got {l}")
    return torch.eye(2 * l + 1, dtype=dtype or torch.get_default_dtype(), device=device)


def _apply_blocks(x: torch.Tensor, irreps: Any, transpose: bool, where: str) -> torch.Tensor:
    irreps = _as_irreps(irreps)
    if x.shape[-1] != irreps.dim:
        raise ValueError(
            f"{where}: x has last dimension {x.shape[-1]}, but irreps {irreps} have dimension "
            f"{irreps.dim}"
        )
    pieces = []
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        Q = change_of_basis(ir.l, dtype=x.dtype, device=x.device)
        Q = Q.T if transpose else Q
        block = x[..., sl].reshape(x.shape[:-1] + (mul, ir.dim))
        pieces.append((block @ Q.T).reshape(x.shape[:-1] + (mul * ir.dim,)))
    if not pieces:
        return x.clone()
    return torch.cat(pieces, dim=-1)


def features_from_e3nn(x: torch.Tensor, irreps: Any) -> torch.Tensor:
    """tfn features ``[..., irreps.dim]`` from e3nn features laid out by the same ``irreps``.

    ``irreps`` may be a tfn :class:`~tfn.so3.Irreps`, a string or an ``e3nn.o3.Irreps``.

    Example:
        >>> x = torch.randn(4, 5)
        >>> bool(torch.equal(features_from_e3nn(x, "2x0e + 1x1o"), x))
        True
    """
    return _apply_blocks(x, irreps, transpose=False, where="features_from_e3nn")


def features_to_e3nn(x: torch.Tensor, irreps: Any) -> torch.Tensor:
    """e3nn features from tfn features ``[..., irreps.dim]``; the inverse of
    :func:`features_from_e3nn`."""
    return _apply_blocks(x, irreps, transpose=True, where="features_to_e3nn")


@cache
def cg_sign(l1: int, l2: int, l3: int) -> int:
    """``s = +-1`` with ``clebsch_gordan(l1, l2, l3) == s * sqrt(2l3+1) * wigner_3j(l1, l2, l3)``.

    Computed by comparing with ``e3nn.o3.wigner_3j`` at runtime (needs e3nn); raises
    ``RuntimeError`` if the two tensors are not proportional (a change of convention).
    """
    e3nn = _import_e3nn()
    C = clebsch_gordan(l1, l2, l3)  # raises ValueError outside the triangle rule
    W = e3nn.o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1)
    s = 1 if float((C * W).sum()) >= 0 else -1
    error = float((C - s * W).abs().max())
    if error > 1e-10:
        raise RuntimeError(
            f"cg_sign({l1}, {l2}, {l3}): tfn's Clebsch-Gordan tensor is not +-sqrt(2l3+1) times "
            f"e3nn's wigner_3j (max deviation {error:.3g}); the conventions have diverged"
        )
    return s


def cg_from_e3nn_factor(l1: int, l2: int, l3: int) -> float:
    """``s * sqrt(2l3+1)``: ``clebsch_gordan(l1, l2, l3) == factor * e3nn.o3.wigner_3j(...)``.

    A path weight ``w`` of an e3nn tensor product that uses ``wigner_3j`` becomes
    ``w / factor`` in a tfn layer that uses ``clebsch_gordan`` (needs e3nn, see :func:`cg_sign`).
    """
    return cg_sign(l1, l2, l3) * math.sqrt(2 * l3 + 1)


def cartesian_change_of_basis(formula: str) -> torch.Tensor:
    """Orthogonal ``M [dim, dim]`` with ``tfn.from_cartesian(T) == M @ e3nn.from_cartesian(T)``.

    Compares :class:`tfn.so3.CartesianTensor` with ``e3nn.io.CartesianTensor`` for the same
    formula at runtime (needs e3nn). Both are orthogonal change of bases onto the same irreps, so
    ``M`` is block diagonal by irrep type; for the common formulas (``"ij"``, ``"ij=ji"``) it is
    the identity.
    """
    _import_e3nn()
    from e3nn.io import CartesianTensor as E3nnCartesianTensor

    from tfn.so3.cartesian import CartesianTensor

    ours = CartesianTensor(formula)
    theirs = E3nnCartesianTensor(formula)
    if Irreps(str(theirs)) != ours.irreps:
        raise ValueError(
            f"cartesian_change_of_basis({formula!r}): tfn irreps {ours.irreps} differ from e3nn "
            f"irreps {theirs}"
        )
    Q_ours = ours.change_of_basis(dtype=torch.float64).reshape(ours.irreps.dim, -1)
    Q_theirs = theirs.reduced_tensor_products().change_of_basis.to(torch.float64)
    Q_theirs = Q_theirs.reshape(ours.irreps.dim, -1)
    return Q_ours @ Q_theirs.T


def linear_weight_from_e3nn(e3nn_linear: Any, bias: bool = True) -> dict[str, torch.Tensor]:
    """Weights of an ``e3nn.o3.Linear`` as a state dict for ``tfn.nn.SelfInteraction``.

    ``SelfInteraction(str(lin.irreps_in), str(lin.irreps_out), bias=bias)`` loaded with the
    result (``load_state_dict``) computes the same function as ``lin``. Per irrep type the tfn
    layer holds one matrix ``weights[ir] [total mul_in, total mul_out]`` (entries of that type
    concatenated in order) and divides by ``sqrt(total mul_in)``; e3nn holds one block
    ``[mul_in, mul_out]`` per instruction, scaled by its ``path_weight``. So block ``(i, j)`` is
    ``w_ij * path_weight_ij * sqrt(total mul_in)``, and pairs without an instruction are zero
    (any ``instructions`` or ``path_normalization`` is handled). The change of basis of the
    features is the identity, so nothing else changes.

    e3nn biases (``biases=True``: only on ``0e`` outputs, like tfn) go to ``"bias"``; with
    ``bias=True`` and no e3nn bias it is zero. Needs internal, shared weights (the default).

    Example:
        >>> from e3nn import o3  # doctest: +SKIP
        >>> lin = o3.Linear("4x0e + 2x1o", "3x0e + 1x1o", biases=True)  # doctest: +SKIP
        >>> si = SelfInteraction(str(lin.irreps_in), str(lin.irreps_out))  # doctest: +SKIP
        >>> si.load_state_dict(linear_weight_from_e3nn(lin))  # doctest: +SKIP
    """
    if not getattr(e3nn_linear, "internal_weights", False) or not getattr(
        e3nn_linear, "shared_weights", False
    ):
        raise ValueError("linear_weight_from_e3nn: the e3nn Linear must have internal weights")
    weight = e3nn_linear.weight.detach()
    if weight.dim() != 1:
        raise ValueError(
            "linear_weight_from_e3nn: f_in/f_out e3nn Linear layers are not supported "
            f"(weight shape {tuple(weight.shape)})"
        )
    irreps_in = _as_irreps(e3nn_linear.irreps_in)
    irreps_out = _as_irreps(e3nn_linear.irreps_out)

    def offsets(irreps: Irreps) -> list[int]:
        """Row offset of each entry among the entries of its irrep type (mul > 0 only)."""
        seen: dict[Any, int] = {}
        out = []
        for mul, ir in irreps:
            out.append(seen.get(ir, 0))
            seen[ir] = seen.get(ir, 0) + mul
        return out

    row, col = offsets(irreps_in), offsets(irreps_out)
    out: dict[str, torch.Tensor] = {}
    for _, ir in irreps_out:
        mul_in, mul_out = irreps_in.count(ir), irreps_out.count(ir)
        if mul_in > 0 and mul_out > 0 and f"weights.{ir}" not in out:
            out[f"weights.{ir}"] = weight.new_zeros(mul_in, mul_out)
    flat = 0
    e3nn_bias = weight.new_zeros(irreps_out.count("0e"))
    has_bias = False
    bias_flat = e3nn_linear.bias.detach().reshape(-1) if e3nn_linear.bias.numel() else None
    bias_offset = 0
    for ins in e3nn_linear.instructions:
        if ins.i_in == -1:  # a bias on output entry i_out
            mul = irreps_out[ins.i_out].mul
            e3nn_bias[col[ins.i_out] : col[ins.i_out] + mul] = bias_flat[
                bias_offset : bias_offset + mul
            ]
            bias_offset += mul
            has_bias = True
            continue
        mul_i, mul_j = ins.path_shape
        block = weight[flat : flat + mul_i * mul_j].reshape(mul_i, mul_j)
        flat += mul_i * mul_j
        if mul_i == 0 or mul_j == 0:
            continue
        ir = irreps_in[ins.i_in].ir
        scale = ins.path_weight * math.sqrt(irreps_in.count(ir))
        W = out[f"weights.{ir}"]
        W[row[ins.i_in] : row[ins.i_in] + mul_i, col[ins.i_out] : col[ins.i_out] + mul_j] += (
            block * scale
        )
    if bias and irreps_out.count("0e") > 0:
        out["bias"] = e3nn_bias
    elif has_bias and bool((e3nn_bias != 0).any()):
        raise ValueError(
            "linear_weight_from_e3nn: the e3nn Linear has nonzero biases; use bias=True"
        )
    return out


def self_interaction_from_e3nn(e3nn_linear: Any, bias: bool = True) -> torch.nn.Module:
    """A ``tfn.nn.SelfInteraction`` computing the same function as an ``e3nn.o3.Linear``."""
    from tfn.nn.self_interaction import SelfInteraction

    layer = SelfInteraction(
        _as_irreps(e3nn_linear.irreps_in), _as_irreps(e3nn_linear.irreps_out), bias=bias
    )
    state = linear_weight_from_e3nn(e3nn_linear, bias=bias)
    dtype = e3nn_linear.weight.dtype
    layer.to(dtype)
    layer.load_state_dict(state)
    return layer
