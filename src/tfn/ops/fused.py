"""The fused convolution: gather, tensor product and scatter in one pass of C++ on the CPU.

``out[a] = sum over edges e = (b -> a) of TP(x[b], y[e], w[e])`` without storing a message
per edge: the edges are walked grouped by destination (:class:`~tfn.ops.EdgePlan`'s CSR rows),
each destination's sum stays in a small buffer, channels are innermost so that one SIMD
register holds a row of channels, and the Clebsch-Gordan tensors enter as a table of their
non-zero entries (:class:`FusedProgram`, built once per :class:`~tfn.ops.TensorProduct`).

Two operators, registered with :mod:`torch.library` (namespace ``tfn``) with fake
implementations, so ``torch.compile`` traces through them and ``torch.export`` keeps them:

* ``tfn::tp_conv(x, y, w, *plan, program, coefficients, out_dim) -> out``;
* ``tfn::tp_conv_backward(grad_out, x, y, w, *plan, program, coefficients, need_x, need_y,
  need_w) -> (grad_x, grad_y, grad_w)``: the three gradients in one pass over the edges
  grouped by source (unrequested ones come back empty).

The product is linear in each of x, y, w, so every derivative of these two operators is again
made of them (with other arguments): the backward of ``tp_conv_backward`` calls
``tp_conv_backward`` and ``tp_conv``. Derivatives of any order therefore stay fused, which
training on forces (a double backward) needs.

The C++ sources (``csrc/``) are compiled at first use by :func:`tfn._extension.load_extension`;
:func:`available` says whether that worked (``TFN_NO_EXTENSIONS=1`` forces ``False``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from tfn._extension import extensions_disabled, failure_reason, load_extension
from tfn.ops.edge_plan import EdgePlan
from tfn.ops.paths import TensorProductDescription
from tfn.so3.clebsch_gordan import clebsch_gordan

__all__ = ["FusedProgram", "available", "convolve", "unavailable_reason"]

_NAME = "tfn_tp_conv"
_CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = [_CSRC / f for f in ("tp_conv_ops.cpp", "tp_conv_forward.cpp", "tp_conv_backward.cpp")]
_HEADERS = [_CSRC / "tp_conv.h"]
_CONNECTIONS = {"uvu": 0, "uvw": 1}
_ZERO = 1e-12  # Clebsch-Gordan entries below this (rounding noise of exact zeros) are dropped

_lock = threading.Lock()
_registered = False


@dataclass(frozen=True)
class FusedProgram:
    """The plan-time table a :class:`~tfn.ops.paths.TensorProductDescription` runs from.

    ``ints`` (int64) lists the irreps entries, the paths and, per path, the pairs ``(i, k)``
    of input-1 and output components that the Clebsch-Gordan tensor couples, each with its
    terms ``j``; ``coefficients`` (float64) holds ``C[i, j, k] * path.coefficient`` per term.
    The layout is documented in ``csrc/tp_conv.h``. Both stay on the CPU in float64, whatever
    the module's device and dtype.

    Example:
        >>> from tfn.ops import channelwise_paths
        >>> program = FusedProgram.build(channelwise_paths("4x0e + 2x1o", "0e + 1o"))
        >>> program.out_dim, program.num_terms
        (40, 27)
    """

    ints: torch.Tensor
    coefficients: torch.Tensor
    out_dim: int

    @property
    def num_terms(self) -> int:
        return int(self.coefficients.numel())

    @classmethod
    def build(cls, description: TensorProductDescription) -> FusedProgram:
        d = description
        connections = {p.connection for p in d.paths}
        if len(connections) > 1:
            raise ValueError(f"FusedProgram: paths mix connections {sorted(connections)}")
        connection = _CONNECTIONS[connections.pop() if connections else "uvu"]
        entries: list[int] = []
        for irreps in (d.irreps_in1, d.irreps_in2, d.irreps_out):
            for mul, ir in irreps:
                entries += [mul, ir.dim]
        paths: list[int] = []
        pairs: list[int] = []
        by_i: list[int] = []
        terms: list[int] = []
        values: list[float] = []
        cache: dict[tuple[int, int, int], torch.Tensor] = {}
        for p in d.paths:
            ir1, ir2, ir3 = d.path_irreps(p)
            key = (ir1.l, ir2.l, ir3.l)
            if key not in cache:
                cache[key] = clebsch_gordan(*key).to(torch.float64)
            C = cache[key]
            scale = float(C.abs().max()) if C.numel() else 0.0
            begin = len(pairs) // 4
            path_pairs = []
            for k in range(ir3.dim):
                for i in range(ir1.dim):
                    js = [j for j in range(ir2.dim) if abs(float(C[i, j, k])) > _ZERO * scale]
                    if not js or p.coefficient == 0.0:
                        continue
                    path_pairs.append((i, k))
                    pairs += [i, k, len(terms), len(terms) + len(js)]
                    terms += js
                    values += [float(C[i, j, k]) * p.coefficient for j in js]
            order = sorted(range(len(path_pairs)), key=lambda r: path_pairs[r])
            by_i += [begin + r for r in order]
            paths += [p.i_in1, p.i_in2, p.i_out, p.weight_start, begin, begin + len(path_pairs)]
        header = [1, connection, len(d.irreps_in1), len(d.irreps_in2), len(d.irreps_out)]
        header += [len(d.paths), len(pairs) // 4, len(terms)]
        ints = torch.tensor(header + entries + paths + pairs + by_i + terms, dtype=torch.int64)
        coefficients = torch.tensor(values, dtype=torch.float64)
        return cls(ints, coefficients, d.irreps_out.dim)


def _load() -> bool:
    global _registered
    with _lock:
        if _registered:
            return True
        if load_extension(_NAME, _SOURCES, depends=_HEADERS, python_module=False) is None:
            return False
        _register_python_parts()
        _registered = True
        return True


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the fused kernels can run (compiles them at the first call, then cached;
    ``False`` while ``TFN_NO_EXTENSIONS`` is set)."""
    return not extensions_disabled() and _load()


def unavailable_reason() -> str:
    """Why :func:`available` is ``False`` (for error messages)."""
    return failure_reason(_NAME) or "the C++ extension did not load"


def _graph(plan: EdgePlan) -> tuple[torch.Tensor, ...]:
    return (plan.src, plan.dst, plan.dst_ptr, plan.dst_perm, plan.src_ptr, plan.src_perm)


def convolve(
    program: FusedProgram, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, plan: EdgePlan
) -> torch.Tensor:
    """``out [plan.num_nodes, out_dim]``: the fused convolution of ``x [plan.num_sources,
    dim1]`` with ``y [E, dim2]`` and ``w [E, weight_numel]`` (a row stride of 0, from
    ``expand``, shares one weight vector). Needs :func:`available`; checks are the caller's
    (:meth:`tfn.ops.TensorProduct.convolve`)."""
    if not available():
        raise RuntimeError(f"tfn: the fused convolution is unavailable: {unavailable_reason()}")
    return torch.ops.tfn.tp_conv(
        x, y, w, *_graph(plan), program.ints, program.coefficients, program.out_dim
    )


# --------------------------------------------------------------------------- registration


def _register_python_parts() -> None:
    """Fake implementations and autograd formulas of the two operators."""
    conv = torch.ops.tfn.tp_conv.default
    conv_backward = torch.ops.tfn.tp_conv_backward.default

    @torch.library.register_fake("tfn::tp_conv")
    def _conv_fake(x, y, w, src, dst, dst_ptr, dst_perm, src_ptr, src_perm, ints, coef, out_dim):
        return x.new_empty(dst_ptr.shape[0] - 1, out_dim)

    @torch.library.register_fake("tfn::tp_conv_backward")
    def _conv_backward_fake(g, x, y, w, *graph_and_program_and_flags):
        need_x, need_y, need_w = graph_and_program_and_flags[-3:]
        return (
            x.new_empty(x.shape) if need_x else x.new_empty(0),
            y.new_empty(y.shape) if need_y else y.new_empty(0),
            w.new_empty(w.shape) if need_w else w.new_empty(0),
        )

    def conv_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:11])  # x, y, w, the graph, the program
        ctx.set_materialize_grads(False)

    def conv_vjp(ctx, grad):
        x, y, w, *rest = ctx.saved_tensors
        need_x, need_y, need_w = ctx.needs_input_grad[:3]
        if grad is None or not (need_x or need_y or need_w):
            return (None,) * 12
        gx, gy, gw = conv_backward(grad, x, y, w, *rest, need_x, need_y, need_w)
        return (gx if need_x else None, gy if need_y else None, gw if need_w else None) + (
            None,
        ) * 9

    def backward_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:12])  # grad_out, x, y, w, the graph, the program
        ctx.computed = tuple(bool(f) for f in inputs[12:15])
        ctx.out_dim = inputs[0].shape[1]
        ctx.set_materialize_grads(False)

    def backward_vjp(ctx, hx, hy, hw):
        # The outputs are dT/dx, dT/dy, dT/dw of T = sum_e <g[dst e], TP(x[src e], y[e], w[e])>,
        # trilinear in (x, y, w) and linear in g: the derivative of <hx, dT/dx> + <hy, dT/dy> +
        # <hw, dT/dw> with respect to each input is again a forward or backward pass.
        g, x, y, w, *rest = ctx.saved_tensors
        computed_x, computed_y, computed_w = ctx.computed
        need_g, need_x, need_y, need_w = ctx.needs_input_grad[:4]
        hx = hx if computed_x else None
        hy = hy if computed_y else None
        hw = hw if computed_w else None
        dg = dx = dy = dw = None

        def add(total, term):
            return term if total is None else total + term

        if hx is not None:
            if need_y or need_w:
                _, ay, aw = conv_backward(g, hx, y, w, *rest, False, need_y, need_w)
                dy = add(dy, ay) if need_y else dy
                dw = add(dw, aw) if need_w else dw
            if need_g:
                dg = add(dg, conv(hx, y, w, *rest, ctx.out_dim))
        if hy is not None:
            if need_x or need_w:
                bx, _, bw = conv_backward(g, x, hy, w, *rest, need_x, False, need_w)
                dx = add(dx, bx) if need_x else dx
                dw = add(dw, bw) if need_w else dw
            if need_g:
                dg = add(dg, conv(x, hy, w, *rest, ctx.out_dim))
        if hw is not None:
            if need_x or need_y:
                cx, cy, _ = conv_backward(g, x, y, hw, *rest, need_x, need_y, False)
                dx = add(dx, cx) if need_x else dx
                dy = add(dy, cy) if need_y else dy
            if need_g:
                dg = add(dg, conv(x, y, hw, *rest, ctx.out_dim))
        return (dg, dx, dy, dw) + (None,) * 11

    torch.library.register_autograd("tfn::tp_conv", conv_vjp, setup_context=conv_setup)
    torch.library.register_autograd(
        "tfn::tp_conv_backward", backward_vjp, setup_context=backward_setup
    )
