"""The equivariance oracle: one function that tests any layer or model the same way.

:func:`assert_equivariant` draws random rotations, reflections, translations and permutations
of points, applies them to the inputs of a function and to its outputs as their irreps say,
and raises with the largest error found.

Each argument and each output is described by a *spec*:

* irreps (``"16x0e + 8x1o"`` or :class:`~tfn.so3.Irreps`): per-point features ``[N, dim]``,
  transformed by ``D(R)`` and permuted with the points;
* ``"cartesian_points"``: positions ``[N, 3]``, rotated, translated and permuted;
* ``"point_index"``: per-point data that is only permuted (a batch index, atom types);
* ``Global(irreps)``: a quantity with no point dimension (a pooled output, one row per cloud),
  transformed by ``D(R)`` and never permuted;
* ``None``: left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tfn.so3.irreps import Irreps
from tfn.so3.wigner import random_rotation

__all__ = ["assert_equivariant", "equivariance_error", "Global"]


@dataclass(frozen=True)
class Global:
    """Spec of a quantity without a point dimension (e.g. a pooled output ``[clouds, dim]``)."""

    irreps: Irreps | str

    def __post_init__(self) -> None:
        object.__setattr__(self, "irreps", Irreps(self.irreps))


Spec = Irreps | str | Global | None

_POINTS = "cartesian_points"
_INDEX = "point_index"


def _normalize_spec(spec: Any) -> Any:
    if spec is None or isinstance(spec, (Global, Irreps)):
        return spec
    if isinstance(spec, str):
        if spec in (_POINTS, _INDEX):
            return spec
        return Irreps(spec)
    raise TypeError(f"assert_equivariant: unknown spec {spec!r}")


def _as_list(specs: Any) -> tuple[list[Any], bool]:
    if isinstance(specs, (list, tuple)) and not isinstance(specs, Irreps):
        return [_normalize_spec(s) for s in specs], True
    return [_normalize_spec(specs)], False


def _random_input(
    spec: Any, num_points: int, dtype: torch.dtype, generator: torch.Generator
) -> Any:
    if isinstance(spec, Irreps):
        return torch.randn(num_points, spec.dim, dtype=dtype, generator=generator)
    if isinstance(spec, Global):
        return torch.randn(spec.irreps.dim, dtype=dtype, generator=generator)
    if spec == _POINTS:
        return 2.0 * torch.randn(num_points, 3, dtype=dtype, generator=generator)
    if spec == _INDEX:
        return torch.zeros(num_points, dtype=torch.long)
    raise ValueError(f"assert_equivariant: cannot draw a random input for spec {spec!r}; pass args")


@dataclass
class _Transform:
    R: torch.Tensor  # [3, 3] orthogonal
    t: torch.Tensor  # [3]
    perm: torch.Tensor | None  # [N] or None


def _apply(spec: Any, x: Any, g: _Transform) -> Any:
    if spec is None or not torch.is_tensor(x):
        return x
    R = g.R.to(device=x.device, dtype=x.dtype if x.is_floating_point() else g.R.dtype)
    if isinstance(spec, Global):
        return x @ spec.irreps.D_from_matrix(R).transpose(-1, -2)
    if spec == _INDEX:
        out = x
    elif spec == _POINTS:
        out = x @ R.T + g.t.to(device=x.device, dtype=x.dtype)
    else:
        out = x @ spec.D_from_matrix(R).transpose(-1, -2)
    if g.perm is not None:
        out = out[g.perm.to(x.device)]
    return out


def _check_shapes(specs: list[Any], values: list[Any], where: str) -> None:
    for i, (spec, x) in enumerate(zip(specs, values)):
        if spec is None or not torch.is_tensor(x):
            continue
        if isinstance(spec, (Irreps, Global)):
            irreps = spec if isinstance(spec, Irreps) else spec.irreps
            if x.shape[-1] != irreps.dim:
                raise ValueError(
                    f"assert_equivariant: {where} {i} has last dimension {x.shape[-1]}, "
                    f"but its irreps {irreps} have dimension {irreps.dim}"
                )
        elif spec == _POINTS and x.shape[-1] != 3:
            raise ValueError(f"assert_equivariant: {where} {i} (cartesian_points) must be [N, 3]")


def equivariance_error(
    fn: Callable[..., Any],
    irreps_in: Spec | Sequence[Spec],
    irreps_out: Spec | Sequence[Spec],
    args: Sequence[Any] | None = None,
    *,
    num_points: int = 6,
    trials: int = 3,
    reflections: bool = True,
    translations: bool = True,
    permutations: bool = True,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Largest relative error of ``fn`` under each kind of transformation.

    The error of one check is ``max |fn(g x) - g fn(x)| / max(1, max |fn(x)|)`` over all outputs.
    Returns a dict with keys among ``"rotation"``, ``"reflection"``, ``"translation"``,
    ``"permutation"`` and ``"combined"`` (all at once).
    """
    specs_in, _ = _as_list(irreps_in)
    specs_out, multiple_out = _as_list(irreps_out)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if args is None:
        args = [_random_input(s, num_points, dtype, generator) for s in specs_in]
    else:
        args = [a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    if len(args) != len(specs_in):
        raise ValueError(
            f"assert_equivariant: {len(args)} arguments but {len(specs_in)} input specs"
        )
    _check_shapes(specs_in, list(args), "argument")

    point_counts = {
        int(a.shape[0])
        for s, a in zip(specs_in, args)
        if torch.is_tensor(a) and s is not None and not isinstance(s, Global)
    }
    if len(point_counts) > 1:
        raise ValueError(
            f"assert_equivariant: per-point arguments disagree on the number of points {point_counts}"
        )
    n = point_counts.pop() if point_counts else 0

    def call(inputs: Sequence[Any]) -> list[Any]:
        out = fn(*inputs)
        outs = list(out) if multiple_out else [out]
        if len(outs) != len(specs_out):
            raise ValueError(
                f"assert_equivariant: fn returned {len(outs)} outputs, specs give {len(specs_out)}"
            )
        return outs

    reference = call(args)
    _check_shapes(specs_out, reference, "output")
    scale = max(
        [1.0]
        + [float(o.detach().abs().max()) for o in reference if torch.is_tensor(o) and o.numel() > 0]
    )

    identity = torch.eye(3, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    kinds: dict[str, Callable[[], _Transform]] = {
        "rotation": lambda: _Transform(random_rotation(1, generator, torch.float64)[0], zero, None),
    }
    if reflections:
        kinds["reflection"] = lambda: _Transform(
            -random_rotation(1, generator, torch.float64)[0], zero, None
        )
    if translations:
        kinds["translation"] = lambda: _Transform(
            identity, 3 * torch.randn(3, generator=generator, dtype=torch.float64), None
        )
    if permutations and n > 1:
        # The first draw is a cyclic shift, so that no point keeps its place.
        drawn = []

        def permutation() -> _Transform:
            perm = (
                torch.roll(torch.arange(n), 1)
                if not drawn
                else torch.randperm(n, generator=generator)
            )
            drawn.append(perm)
            return _Transform(identity, zero, perm)

        kinds["permutation"] = permutation

    def combined() -> _Transform:
        R = random_rotation(1, generator, torch.float64)[0]
        if reflections:
            R = -R
        t = 3 * torch.randn(3, generator=generator, dtype=torch.float64) if translations else zero
        perm = torch.randperm(n, generator=generator) if permutations and n > 1 else None
        return _Transform(R, t, perm)

    kinds["combined"] = combined
    errors: dict[str, float] = {}
    for name, draw in kinds.items():
        worst = 0.0
        for _ in range(trials):
            g = draw()
            moved = call([_apply(s, a, g) for s, a in zip(specs_in, args)])
            expected = [_apply(s, o, g) for s, o in zip(specs_out, reference)]
            for m, e in zip(moved, expected):
                if torch.is_tensor(m):
                    worst = max(worst, float((m.detach() - e.detach()).abs().max()) / scale)
        errors[name] = worst
    return errors


def assert_equivariant(
    fn: Callable[..., Any],
    irreps_in: Spec | Sequence[Spec],
    irreps_out: Spec | Sequence[Spec],
    args: Sequence[Any] | None = None,
    *,
    atol: float | None = None,
    num_points: int = 6,
    trials: int = 3,
    reflections: bool = True,
    translations: bool = True,
    permutations: bool = True,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Check that ``fn`` is equivariant; raise ``AssertionError`` naming the largest error.

    Args:
        fn: the function or module to test, called as ``fn(*args)``.
        irreps_in: one spec per argument (see the module docstring); a single spec for one.
        irreps_out: one spec per output; a single spec when ``fn`` returns one tensor.
        args: the inputs; random ones are drawn from the specs when omitted.
        atol: tolerance on the relative error; default ``1e-10`` in float64, ``1e-5`` in float32.
        num_points: number of points of random inputs.
        trials: random transformations drawn for each kind.
        reflections: also test improper rotations (parity); turn off for SO(3)-only functions.
        translations: translate ``cartesian_points`` inputs.
        permutations: permute the points of per-point inputs and outputs.
        dtype: floating dtype the inputs are cast to (float64 by default).
        generator: source of randomness (default: seeded, so failures reproduce).

    Returns:
        The errors by kind (``rotation``, ``reflection``, ``translation``, ``permutation``,
        ``combined``).

    Example:
        >>> from tfn.so3 import spherical_harmonics
        >>> errors = assert_equivariant(
        ...     lambda pos: spherical_harmonics([0, 1, 2], pos), "cartesian_points", "0e + 1o + 2e",
        ...     translations=False)
        >>> errors["rotation"] < 1e-12
        True
    """
    errors = equivariance_error(
        fn,
        irreps_in,
        irreps_out,
        args,
        num_points=num_points,
        trials=trials,
        reflections=reflections,
        translations=translations,
        permutations=permutations,
        dtype=dtype,
        generator=generator,
    )
    if atol is None:
        atol = 1e-10 if dtype == torch.float64 else 1e-5
    worst_kind = max(errors, key=errors.get)
    if errors[worst_kind] > atol:
        detail = ", ".join(f"{k}: {v:.3g}" for k, v in errors.items())
        raise AssertionError(
            f"not equivariant: largest relative error {errors[worst_kind]:.3g} under {worst_kind} "
            f"(tolerance {atol:.1g}; {detail})"
        )
    return errors
