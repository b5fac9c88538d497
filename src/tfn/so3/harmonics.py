"""Real spherical harmonics of any degree.

Convention (used by every part of tfn): the block of degree ``l`` has ``2l + 1`` components
ordered ``m = -l .. l``; they are the standard real spherical harmonics (no Condon-Shortley
phase: ``Y_l^m ~ cos(m phi)`` for ``m > 0`` and ``sin(|m| phi)`` for ``m < 0``) taken with ``y``
as the polar axis, i.e. evaluated at the cyclically permuted point ``(x', y', z') = (z, x, y)``.
With this choice the ``l = 1`` block is proportional to ``(x, y, z)`` in that order, so a
degree-1 feature is a Cartesian vector.

Algorithm. The harmonics are the solid harmonics (homogeneous harmonic polynomials) at the
unit vector, and those obey, in the normalisation of the output and with ``r = 1`` when
normalizing,

* ``Y_l^m = a_lm z' Y_{l-1}^m - b_lm r^2 Y_{l-2}^m`` for ``|m| < l`` (all these orders at once),
* ``Y_l^{-l} + i Y_l^l = d_l (x' + i y') (Y_{l-1}^{-(l-1)} + i Y_{l-1}^{l-1})``,

with bounded coefficients (no factorials: no overflow at any degree). Two implementations
share these coefficients:

* on the CPU (float32 and float64), a C++ kernel (``csrc/harmonics.cpp``, compiled at first
  use by :func:`tfn._extension.load_extension`, registered as the operator
  ``torch.ops.tfn_harmonics.forward``): blocks of points, the recurrence vectorised over the
  points of a block in cache, each block written straight into its ``[points, components]``
  output rows;
* everywhere else, and as the fallback when no C++ compiler is available
  (``TFN_NO_EXTENSIONS=1`` forces it) or under ``torch.compile`` / ``torch.export`` (which
  trace it like any PyTorch code): elementwise torch operations on the rows of a
  ``[components, points]`` buffer, transposed into the output once. On the CPU the points go
  through in chunks (small, reused buffers: cache, no page faults); on other devices and under
  ``torch.compile`` in one piece.

Both agree to rounding (tested to 1e-13 in float64).

Derivatives come from a :class:`torch.autograd.Function` rather than autograd through the
recurrence (which would store every intermediate): the derivative of a solid harmonic of degree
``l`` is a solid harmonic of degree ``l - 1``, so ``dY_l/dx_j = G_l[j] Y_{l-1}`` with a fixed
sparse matrix ``G_l`` (one small matrix product per degree in the backward), followed by the
projection through ``x / |x|``. The backward uses only differentiable torch operations on the
saved input and output, so it is differentiable again (forces, gradgradcheck, Laplacians).

Zero, tiny and huge vectors. Every vector is divided by its largest absolute component (by the
power of two just above it when not normalizing, which is exact) before anything is squared,
so that no intermediate overflows or underflows:

* ``normalize=True``: the harmonics of any finite nonzero vector, subnormal or near the largest
  float, are as accurate as those of a unit vector; so is the gradient, which is of the order
  of ``1 / |x|`` and therefore overflows to ``inf`` (never NaN) only where its exact value
  does (vectors below about ``1 / finfo.max``, i.e. subnormal ones). At ``x = 0``, where the
  direction is undefined, ``Y_0`` keeps its constant value, ``Y_l = 0`` for ``l > 0`` (the
  average over all directions), and the gradient is 0; all derivatives through the backward
  are finite there.
* ``normalize=False`` (the solid harmonics ``r^l Y_l``, polynomials): each value is computed at
  the scaled vector and multiplied by ``2^(l e)`` once, so it is accurate to rounding,
  overflows to ``+-inf`` exactly when its value exceeds the range of the dtype (e.g. ``l >= 2``
  at ``|x| = 1e30`` in float32) and underflows to 0 when below it; at ``x = 0`` the value is
  ``Y_0`` for ``l = 0`` and 0 otherwise, with the exact gradient. Gradients are formed from the
  saved degree-``(l - 1)`` values: where those overflow, so does the gradient (``inf``, or NaN
  from ``inf * 0``).
* Non-finite input gives non-finite output (NaN, or ``inf`` when not normalizing).

Timings against e3nn and sphericart: ``docs/benchmarks_harmonics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import NamedTuple

import torch

from tfn._extension import extensions_disabled, load_extension
from tfn.so3.irreps import Irreps

__all__ = ["spherical_harmonics", "SphericalHarmonics"]

_NORMALIZATIONS = ("component", "integral", "norm")

# CPU chunking (see _chunk_size and docs/benchmarks_harmonics.md): at most this many working
# entries per chunk (8 MiB in float32).
_CHUNK_ENTRIES = 1 << 21


def _as_degrees(ls: int | Sequence[int] | Irreps | str) -> list[int]:
    if isinstance(ls, int):
        degrees = [ls]
    elif isinstance(ls, (Irreps, str)):
        degrees = []
        for mul, ir in Irreps(ls):
            if ir.p != (-1) ** ir.l:
                raise ValueError(
                    f"spherical harmonics of degree {ir.l} have parity {'e' if ir.l % 2 == 0 else 'o'}, "
                    f"but the irreps ask for {ir}"
                )
            degrees.extend([ir.l] * mul)
    else:
        degrees = [int(l) for l in ls]
    if not degrees:
        raise ValueError("spherical_harmonics: no degree requested")
    if min(degrees) < 0:
        raise ValueError(f"spherical_harmonics: negative degree in {degrees}")
    return degrees


# ----------------------------------------------------------------------------- coefficients
#
# In the primed frame let u = x' + i y' and, for m >= 0,
#     T_l^m = sum_k u^(m+k) conj(u)^k z'^(l-m-2k) (-1/4)^k / ((m+k)! k! (l-m-2k)!),
# a harmonic polynomial. The real basis is e_l^m = Re T_l^m (m >= 0), Im T_l^|m| (m < 0), and the
# output is Y_l^m = kappa_lm e_l^m with
#     kappa_lm^2 = c_l * (2 if m != 0 else 1) * (l+|m|)! (l-|m|)! / 4^|m|,
# c_l = 2l+1 ("component"), (2l+1)/(4 pi) ("integral") or 1 ("norm"). The T obey
#     (l-m)(l+m) T_l^m = (2l-1) z' T_{l-1}^m - r^2 T_{l-2}^m,    T_l^l = u T_{l-1}^{l-1} / l,
#     d/dz' T_l^m = T_{l-1}^m,    d/du T_l^m = T_{l-1}^(m-1) (m >= 1),
#     d/d(conj u) T_l^m = -T_{l-1}^(m+1) / 4,    d/du T_l^0 = -conj(T_{l-1}^1) / 4,
# from which every coefficient below follows; only ratios kappa_lm / kappa_l'm' of neighbouring
# degrees appear, square roots of small rationals.


def _c_ratio(normalization: str, l: int, l2: int) -> float:
    """c_l / c_l2 (the 4 pi of "integral" cancels)."""
    return 1.0 if normalization == "norm" else (2 * l + 1) / (2 * l2 + 1)


def _kappa_ratio(normalization: str, l: int, m: int, mp: int) -> float:
    """kappa_{l,m} / kappa_{l-1,mp} for |mp| in {|m| - 1, |m|, |m| + 1}."""
    p, q = abs(m), abs(mp)
    sigma = (2 if m else 1) / (2 if mp else 1)
    if q == p:
        factor = (l + p) * (l - p)
    elif q == p - 1:
        factor = sigma * (l + p) * (l + p - 1) / 4
    else:
        factor = sigma * (l - p) * (l - p - 1) * 4
    return math.sqrt(_c_ratio(normalization, l, l - 1) * factor)


def _derivative_terms(l: int) -> list[tuple[int, int, int, float]]:
    """``(j, m, mp, coefficient)``: ``d e_l^m / d x_j`` contains ``coefficient * e_{l-1}^mp``.

    ``j`` is the unprimed axis (0, 1, 2 = x, y, z); ``x' = z``, ``y' = x``, ``z' = y``.
    """
    jx, jy, jz = 2, 0, 1  # x', y', z'
    terms = []
    for m in range(-l, l + 1):
        p = abs(m)
        terms.append((jz, m, m, 1.0))
        if m == 0:
            terms += [(jx, 0, 1, -0.5), (jy, 0, -1, -0.5)]
        elif m > 0:  # Re T^m: d/dx' = Re T^(m-1) - Re T^(m+1)/4, d/dy' = -Im T^(m-1) - Im T^(m+1)/4
            terms += [(jx, m, m - 1, 1.0), (jx, m, m + 1, -0.25), (jy, m, -(p + 1), -0.25)]
            if p > 1:
                terms.append((jy, m, -(p - 1), -1.0))
        else:  # Im T^p: d/dx' = Im T^(p-1) - Im T^(p+1)/4, d/dy' = Re T^(p-1) + Re T^(p+1)/4
            terms += [(jx, m, -(p + 1), -0.25), (jy, m, p - 1, 1.0), (jy, m, p + 1, 0.25)]
            if p > 1:
                terms.append((jx, m, -(p - 1), 1.0))
    return [t for t in terms if abs(t[2]) <= l - 1]


class _Plan(NamedTuple):
    """Coefficients of one (lmax, normalization, dtype, device); entry ``l`` of a tuple is for
    degree ``l`` (``None`` where unused)."""

    y0: float  # Y_0 (a constant)
    y1: float  # Y_1 = y1 * (x, y, z) / r (or y1 * (x, y, z) when not normalize)
    # The rows of Y_1, y1 * (x', y', z'), serve as the coordinates in the recurrence, so a and d
    # include a factor 1 / y1.
    a: tuple[torch.Tensor | None, ...]  # [2l-1, 1]: a_lm, m = -(l-1) .. l-1
    b: tuple[torch.Tensor | None, ...]  # [2l-3, 1]: -b_lm, m = -(l-2) .. l-2
    d: tuple[float, ...]
    grad: tuple[
        torch.Tensor | None, ...
    ]  # [(2l-1) * 3, 2l+1]: G_l, rows (mp, j), columns m (l >= 2)


@cache
def _plan(lmax: int, normalization: str, dtype: torch.dtype, device: torch.device) -> _Plan:
    c0 = 1 / (4 * math.pi) if normalization == "integral" else 1.0
    y0 = math.sqrt(c0)
    y1 = math.sqrt(c0 * (1.0 if normalization == "norm" else 3.0))

    def tensor(values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).to(dtype=dtype, device=device)

    # a_lm = (2l-1) / (l^2-m^2) kappa_lm / kappa_(l-1)m,  b_lm = kappa_lm / kappa_(l-2)m / (l^2-m^2),
    # d_l = kappa_ll / kappa_(l-1)(l-1) / l.
    a, b, d, grad = [None, None], [None, None], [0.0, 0.0], [None, None]
    for l in range(2, lmax + 1):
        ca, cb = _c_ratio(normalization, l, l - 1), _c_ratio(normalization, l, l - 2)
        a.append(
            tensor([[(2 * l - 1) * math.sqrt(ca / (l * l - m * m)) / y1] for m in range(1 - l, l)])
        )
        b.append(
            tensor(
                [
                    [-math.sqrt(cb * ((l - 1) ** 2 - m * m) / (l * l - m * m))]
                    for m in range(2 - l, l - 1)
                ]
            )
        )
        d.append(math.sqrt(ca * (2 * l - 1) / (2 * l)) / y1)
    for l in range(2, lmax + 1):  # (degree 1: dY_1/dx_j = y1 e_j, no matrix needed)
        g = [[[0.0] * (2 * l + 1) for _ in range(3)] for _ in range(2 * l - 1)]
        for j, m, mp, coefficient in _derivative_terms(l):
            g[mp + l - 1][j][m + l] += coefficient * _kappa_ratio(normalization, l, m, mp)
        grad.append(tensor(g).reshape(3 * (2 * l - 1), 2 * l + 1))
    return _Plan(y0, y1, tuple(a), tuple(b), tuple(d), tuple(grad))


# ----------------------------------------------------------------------------- evaluation


def _transposed(t: torch.Tensor) -> torch.Tensor:
    """Contiguous transpose of a 2-d tensor, by the faster of ATen's two CPU copy kernels.

    ATen's blocked 2-d transpose (single-threaded; taken for ``t.t().contiguous()`` when ``t``
    is contiguous) wins when ``t`` has many rows of more than 16 entries; otherwise the general
    strided copy, reached through a 3-d view, is several times faster (short rows: the ``[n, 3]``
    points, the ``[components, points]`` buffer).
    """
    rows, cols = t.shape
    if rows > cols > 16 and t.is_contiguous():
        return t.t().contiguous()
    return t.unsqueeze(0).transpose(1, 2).contiguous().squeeze(0)


def _chunk_size(n: int, entries_per_point: int, min_points: int, device: torch.device) -> int:
    """Points per chunk when the working buffers hold ``entries_per_point`` values per point.

    On the CPU the points go through in chunks so that the working buffers stay small: in
    cache, and well below the output's size, so that they do not push glibc's heap over its
    trim threshold (which would return the memory to the system and page-fault it back in on
    the next call, the dominant cost when it happens). ``min_points`` bounds the number of
    operations (each has a fixed cost) and, at 2^15, keeps every row one parallel grain of
    torch long, so that with several threads each operation is split.
    """
    # A GPU wants few, large kernels; a compiler fuses the loop anyway (and one chunk keeps
    # every `out=` below contiguous, which torch.compile requires).
    if device.type != "cpu" or torch.compiler.is_compiling():
        return max(n, 1)
    size = max(min_points, min(_CHUNK_ENTRIES // entries_per_point, -(-n // 2)))
    # Rows of a buffer are `size` entries apart: an odd multiple of 8 entries keeps rows
    # 32-byte aligned but never a large power of two apart (cache-set conflicts in the
    # transposition, measured 3x slower).
    return size // 16 * 16 + 8


def _squared_norm(xt: torch.Tensor) -> torch.Tensor:
    """``x^2 + y^2 + z^2`` of ``[3, n]`` rows (fewer passes than ``square().sum(0)``)."""
    return (xt[0] * xt[0]).addcmul_(xt[1], xt[1]).addcmul_(xt[2], xt[2])


def _largest_component(xt: torch.Tensor) -> torch.Tensor:
    """``max_j |x_j|`` of ``[3, n]`` rows (NaN where a component is NaN)."""
    return xt.abs().amax(0)


def _direction(xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x / |x|, 1 / |u|, s)`` of ``[3, n]`` rows, without squaring ``x`` itself (for the
    backward; the forward has a cheaper, non-differentiable variant).

    ``s = max_j |x_j|`` and ``u = x / s``, so that ``1 <= |u| <= sqrt(3)``: nothing overflows or
    underflows for any finite ``x``, subnormal or huge, and ``1 / |x| = (1 / |u|) / s``. At
    ``x = 0``: direction 0, ``1 / |u|`` 0 and ``s`` 1. Plain differentiable operations with no
    ``inf * 0`` anywhere, even at ``x = 0``, so that a backward built from them is
    differentiable again.
    """
    s = _largest_component(xt)
    # 1 at x = 0, else 0 (no gradient: the result does not depend on s at all). Arithmetic
    # rather than `== 0` and `where`, which cost several times more.
    zero = 1 - s.detach().sign()
    s = s + zero
    u = xt / s
    inv_norm = torch.rsqrt(_squared_norm(u) + zero) * (1 - zero)  # 1 / |u|, 0 at x = 0
    return u * inv_norm, inv_norm, s


def _ldexp(t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``t * 2^k`` (``k`` an integer tensor) rounded once: it overflows or underflows only
    where the result does (``torch.ldexp`` forms ``2^k`` first, which can overflow on its own).
    """
    info = torch.finfo(t.dtype)
    top = round(math.log2(info.max))  # 2^top overflows
    bottom = round(math.log2(info.tiny * info.eps))  # the smallest subnormal is 2^bottom
    mantissa, exponent = torch.frexp(t)  # |mantissa| in [1/2, 1)
    # Beyond these bounds the result is 0 or +-inf whatever the mantissa; within them each
    # half-power below is representable (possibly subnormal), and only the last product rounds.
    total = (exponent + k).clamp_(2 * bottom, 2 * (top - 1))
    half = torch.div(total, 2, rounding_mode="floor")
    return mantissa * torch.exp2(half.to(t.dtype)) * torch.exp2((total - half).to(t.dtype))


def _evaluate(x: torch.Tensor, lmax: int, normalize: bool, plan: _Plan) -> torch.Tensor:
    """All degrees ``0..lmax`` at ``x [n, 3]``: ``[n, (lmax+1)^2]``. No autograd. The eager
    PyTorch path (any device and dtype; the reference of the C++ kernel)."""
    n, components = x.shape[0], (lmax + 1) ** 2
    out = x.new_empty(n, components)
    chunk = _chunk_size(n, components, 1 << 15, x.device)
    buffer = x.new_empty(components, min(chunk, n))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        y = buffer[:, : stop - start]
        y[0] = plan.y0
        if lmax >= 1:
            xt = _transposed(x[start:stop])  # [3, points]
            if normalize:
                # divided by s = max_j |x_j| first, so that 1 <= |u| <= sqrt 3: no overflow or
                # underflow for any finite x. At x = 0, u = 0 / (the smallest subnormal) = 0
                # and its squared norm is clamped to 1 (no 0 * inf). Clamps and sign rather
                # than `where` and `== 0`, which cost 6-12x more each.
                s = _largest_component(xt)
                r2 = s.sign()  # |x / |x||^2: 1, or 0 at x = 0 (degree 2 needs it)
                info = torch.finfo(x.dtype)
                torch.div(xt, s.clamp_min_(info.tiny * info.eps), out=y[1:4])
                y[1:4].mul_(_squared_norm(y[1:4]).clamp_min_(1).rsqrt_().mul_(plan.y1))
            else:
                # exactly x / 2^e, e the exponent of max |x_j|: |u| in [1/2, sqrt 3)
                exponent = torch.frexp(_largest_component(xt)).exponent  # 0 at 0, inf, NaN
                u = _ldexp(xt, -exponent)
                torch.mul(u, plan.y1, out=y[1:4])
                r2 = _squared_norm(u)
            xp, yp, zp = y[3], y[1], y[2]  # y1 * (x', y', z'): y is the polar axis
        for l in range(2, lmax + 1):
            older, prev, cur = (
                y[(l - 2) ** 2 : (l - 1) ** 2],
                y[(l - 1) ** 2 : l * l],
                y[l * l : (l + 1) ** 2],
            )
            # m = -l, l (first and last row) from m = -(l-1), l-1 (S, C): d (x' + i y') (C + i S).
            d = plan.d[l]
            sc = prev[:: 2 * l - 2] * (xp * d)  # d x' (S, C)
            torch.addcmul(sc[0], prev[-1], yp, value=d, out=cur[0])
            torch.addcmul(sc[1], prev[0], yp, value=-d, out=cur[-1])
            # |m| <= l-1: three-term recurrence in l, all orders at once. Normalized, r^2 = 1
            # except at x = 0, where it matters for l = 2 only (Y_{l-2} = 0 for l > 2 there).
            torch.mul(prev, zp, out=cur[1:-1])
            cur[1:-1].mul_(plan.a[l])
            cur[2:-2].addcmul_(older * r2 if l == 2 or not normalize else older, plan.b[l])
        if not normalize:  # degree l times 2^(l e)
            for l in range(1, lmax + 1):
                block = y[l * l : (l + 1) ** 2]
                block.copy_(_ldexp(block, l * exponent))
        out[start:stop].unsqueeze(0).copy_(y.unsqueeze(0).transpose(1, 2))  # see _transposed
    return out


# ----------------------------------------------------------------------------- C++ kernel

_KERNEL_SOURCES = [Path(__file__).resolve().parent / "csrc" / "harmonics.cpp"]
_KERNEL_DTYPES = (torch.float32, torch.float64)
_fakes_registered = False


def _kernels():
    """``torch.ops.tfn_harmonics`` (``forward``, ``backward``), compiled at first use; ``None``
    when C++ extensions are disabled (``TFN_NO_EXTENSIONS=1``) or cannot be built (a warning
    says why, once)."""
    global _fakes_registered
    if extensions_disabled():
        return None
    # -fno-math-errno: without it the sqrt in the block loop is a libm call (errno) and the
    # loop does not vectorise (measured 4x slower).
    if load_extension("tfn_harmonics", _KERNEL_SOURCES, extra_cflags=("-fno-math-errno",)) is None:
        return None
    if not _fakes_registered:  # shapes for FakeTensor tracing (torch.export, torch.compile)

        @torch.library.register_fake("tfn_harmonics::forward")
        def _(vectors, lmax, normalize, coefficients):
            return vectors.new_empty(vectors.shape[0], (lmax + 1) ** 2)

        @torch.library.register_fake("tfn_harmonics::backward")
        def _(grad_out, out, vectors, lmax, normalize, terms):
            return vectors.new_empty(vectors.shape)

        _fakes_registered = True
    return torch.ops.tfn_harmonics


def _kernel_applies(x: torch.Tensor) -> bool:
    # traced code (torch.compile, torch.export) keeps the portable eager path
    return (
        x.device.type == "cpu" and x.dtype in _KERNEL_DTYPES and not torch.compiler.is_compiling()
    )


@cache
def _packed_coefficients(lmax: int, normalization: str) -> torch.Tensor:
    """The plan's recurrence coefficients for the C++ kernel, float64: ``y0, y1``, then per
    degree ``l >= 2``: ``d_l, a_l (2l - 1), b_l (2l - 3)``."""
    plan = _plan(lmax, normalization, torch.float64, torch.device("cpu"))
    values = [plan.y0, plan.y1]
    for l in range(2, lmax + 1):
        values += [plan.d[l], *plan.a[l].flatten().tolist(), *plan.b[l].flatten().tolist()]
    return torch.tensor(values, dtype=torch.float64)


@cache
def _packed_derivative_terms(lmax: int, normalization: str) -> torch.Tensor:
    """The nonzero entries of the plan's ``G_l`` for the C++ backward, float64 ``[T, 4]``:
    ``(k, k', j, c)``, ``dY_k / dx_j`` contains ``c Y_k'`` (``k' = -1``: ``c``, degree 1)."""
    plan = _plan(lmax, normalization, torch.float64, torch.device("cpu"))
    rows = [[1 + j, -1, j, plan.y1] for j in range(3)] if lmax >= 1 else []
    for l in range(2, lmax + 1):
        g = plan.grad[l].view(2 * l - 1, 3, 2 * l + 1)  # [mp, j, m]
        for mp, j, m in g.nonzero().tolist():
            rows.append([l * l + m, (l - 1) ** 2 + mp, j, float(g[mp, j, m])])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def _forward(x: torch.Tensor, lmax: int, normalize: bool, normalization: str) -> torch.Tensor:
    """The harmonics of ``x [n, 3]``, by the C++ kernel where it applies, else eagerly."""
    if _kernel_applies(x):
        kernels = _kernels()
        if kernels is not None:
            coefficients = _packed_coefficients(lmax, normalization)
            return kernels.forward(x, lmax, normalize, coefficients)
    return _evaluate(x, lmax, normalize, _plan(lmax, normalization, x.dtype, x.device))


def _gradient(
    grad_out: torch.Tensor,
    out: torch.Tensor,
    x: torch.Tensor,
    lmax: int,
    normalize: bool,
    plan: _Plan,
) -> torch.Tensor:
    """``sum_k grad_out[:, k] dY_k/dx``: ``[n, 3]``. Differentiable (plain out-of-place ops)."""
    n = x.shape[0]
    if lmax == 0 or n == 0:
        return torch.zeros_like(x)
    # Per point about 8 (lmax+1)^2 working entries (the transposed harmonics, h, the product);
    # smaller chunks than in the forward measured best here.
    chunk = _chunk_size(n, 8 * (lmax + 1) ** 2, 1 << 11, x.device)
    pieces = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        g = grad_out[start:stop].t()  # [components, points]: a matrix operand as it is
        grad = g[1:4] * plan.y1  # degree 1: dY_1 / dx_j = y1 e_j
        if lmax >= 2:
            # h[(mp, j)] = sum_m G_l[(mp, j), m] g_l^m for every degree l >= 2, then
            # grad_j += sum_(l, mp) h[(mp, j)] Y_{l-1}^mp.
            h = [torch.mm(plan.grad[l], g[l * l : (l + 1) ** 2]) for l in range(2, lmax + 1)]
            h = h[0] if len(h) == 1 else torch.cat(h)
            # Y_1 .. Y_{lmax-1}, transposed; a contiguous block transposes faster in long rows.
            prev = out[start:stop]
            prev = _transposed(prev if prev.shape[1] > 16 else prev[:, : lmax * lmax])
            prev = prev[1 : lmax * lmax]
            grad = grad + (h.view(lmax * lmax - 1, 3, stop - start) * prev.unsqueeze(1)).sum(0)
        if normalize:
            # through x / |x|: (1 - u u^T) grad / |x|, with 1 / |x| = (1 / |u|) / s (0 at
            # x = 0); dividing by s last keeps it finite wherever the exact value is.
            unit, inv_norm, s = _direction(_transposed(x[start:stop]))
            grad = (grad - unit * (unit * grad).sum(0)) * inv_norm / s
        pieces.append(grad.t())
    return pieces[0].contiguous() if len(pieces) == 1 else torch.cat(pieces)


class _SphericalHarmonicsFunction(torch.autograd.Function):
    """``[n, 3] -> [n, (lmax+1)^2]`` with the analytic (and again differentiable) backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lmax: int, normalize: bool, normalization: str):
        out = _forward(x, lmax, normalize, normalization)
        ctx.save_for_backward(x, out)
        ctx.lmax, ctx.normalize, ctx.normalization = lmax, normalize, normalization
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, out = ctx.saved_tensors
        lmax, normalize, normalization = ctx.lmax, ctx.normalize, ctx.normalization
        # Grad mode is on here exactly when the backward's graph is recorded (create_graph,
        # e.g. forces for training): then the differentiable PyTorch formula, else the kernel.
        if not torch.is_grad_enabled() and _kernel_applies(x):
            kernels = _kernels()
            if kernels is not None:
                terms = _packed_derivative_terms(lmax, normalization)
                return kernels.backward(grad_out, out, x, lmax, normalize, terms), None, None, None
        plan = _plan(lmax, normalization, x.dtype, x.device)
        return _gradient(grad_out, out, x, lmax, normalize, plan), None, None, None


def spherical_harmonics(
    ls: int | Sequence[int] | Irreps | str,
    vectors: torch.Tensor,
    normalize: bool = True,
    normalization: str = "component",
) -> torch.Tensor:
    """Real spherical harmonics of the degrees ``ls`` at ``vectors [..., 3]``.

    Args:
        ls: one degree, a list of degrees, or irreps such as ``"0e + 1o + 2e"`` (the parity
            of degree ``l`` must be ``(-1)^l``). Blocks are concatenated in the order given.
        vectors: points ``[..., 3]``.
        normalize: evaluate at ``vectors / |vectors|``; with ``False`` the result is the solid
            harmonic ``r^l Y_l``, a homogeneous polynomial.
        normalization: ``"component"`` (each block has squared norm ``2l + 1`` on unit
            vectors), ``"integral"`` (orthonormal on the sphere) or ``"norm"`` (norm 1).

    Returns:
        ``[..., sum(2l + 1)]``.

    Zero, tiny and huge vectors (details in the module docstring): with ``normalize=True`` the
    zero vector gives ``Y_0`` (its usual constant) and ``Y_l = 0`` for ``l > 0``, with a zero
    gradient (the direction is undefined there); every other finite vector, subnormal or huge,
    gives accurate harmonics, and a gradient (of size ``~1 / |x|``) that overflows to ``inf``
    only where its exact value does. With ``normalize=False`` the polynomials are rounded once
    from their exact values, so they overflow to ``+-inf`` only where those exceed the dtype's
    range (``l >= 2`` at ``|x| = 1e30`` in float32, say). Non-finite input gives non-finite
    output.

    Example:
        >>> spherical_harmonics(1, torch.tensor([[0.0, 0.0, 2.0]]))
        tensor([[0.0000, 0.0000, 1.7321]])
        >>> spherical_harmonics([0, 1, 2], torch.randn(10, 3)).shape
        torch.Size([10, 9])
        >>> spherical_harmonics([0, 1], torch.tensor([[0.0, 0.0, 0.0], [1e-30, 0.0, 0.0]]))
        tensor([[1.0000, 0.0000, 0.0000, 0.0000],
                [1.0000, 1.7321, 0.0000, 0.0000]])
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if vectors.shape[-1] != 3:
        raise ValueError(
            f"spherical_harmonics: vectors must have shape [..., 3], got {tuple(vectors.shape)}"
        )
    degrees = _as_degrees(ls)
    lmax = max(degrees)
    batch_shape = vectors.shape[:-1]
    out = _SphericalHarmonicsFunction.apply(vectors.reshape(-1, 3), lmax, normalize, normalization)
    if degrees != list(range(lmax + 1)):
        index = torch.cat([torch.arange(l * l, (l + 1) * (l + 1)) for l in degrees]).to(out.device)
        out = out.index_select(-1, index)
    return out.reshape(*batch_shape, out.shape[-1])


class SphericalHarmonics(torch.nn.Module):
    """Module form of :func:`spherical_harmonics` with the degrees fixed at construction.

    Example:
        >>> sh = SphericalHarmonics("0e + 1o + 2e")
        >>> sh(torch.randn(5, 3)).shape, sh.irreps_out
        (torch.Size([5, 9]), Irreps('1x0e+1x1o+1x2e'))
    """

    def __init__(
        self,
        irreps_out: int | Sequence[int] | Irreps | str,
        normalize: bool = True,
        normalization: str = "component",
    ) -> None:
        super().__init__()
        self.degrees = _as_degrees(irreps_out)
        self.irreps_out = Irreps([(1, (l, (-1) ** l)) for l in self.degrees]).simplify()
        self.normalize = normalize
        self.normalization = normalization

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(self.degrees, vectors, self.normalize, self.normalization)
