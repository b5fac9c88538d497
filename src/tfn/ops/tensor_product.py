"""Kernels that execute a :class:`~tfn.ops.paths.TensorProductDescription`.

:class:`TensorProduct` is a weightless module: the weights come in as an argument (one vector
per edge, or one shared vector), as in e3nn-jax, so learnable parts (a radial network, a
parameter) live elsewhere.

How it runs.

* Channel-wise (``"uvu"``): paths are grouped by their entry of input 1 (multiplicity ``U``,
  dimension ``d1``). Input 2 is contracted once with all the group's Clebsch-Gordan tensors
  (one small matmul giving ``B [E, d1, K]``, ``K`` the summed output dimension of the
  group's paths); one batched matmul ``x1 [E, U, d1] @ B`` then yields every path's output for
  every channel; each path's block is scaled by its per-channel weight.
* Fully connected (``"uvw"``): the same grouped products first, then per path one batched
  matmul ``W^T [E, W, U] @ Z [E, U, d3]`` mixes the channels and accumulates the output.

These are the "eager" executor. The "fused" executor (:mod:`tfn.ops.fused`, C++ on the CPU)
runs :meth:`TensorProduct.convolve` as one pass, gather, product and sum onto the destinations,
without storing a message per edge; ``executor="auto"`` picks it for CPU tensors whenever the
extension compiled, and the eager kernels otherwise (CUDA, other dtypes, no compiler).

Inputs, weights and results are cut and joined with :func:`_split` and :func:`_cat`: a split
whose derivative is a concatenation and a concatenation whose derivative is a split, at every
order. ``torch.split``/``torch.cat`` are only half that: the derivative of ``cat`` is made of
slices, and the derivative of a slice allocates a zero tensor of the whole input per slice, so
with forces (double backward) every cut costs full-size zero fills.
"""

from __future__ import annotations

import torch
from torch import nn

from tfn.ops import fused
from tfn.ops.edge_plan import EdgePlan
from tfn.ops.paths import TensorProductDescription
from tfn.so3.clebsch_gordan import clebsch_gordan

__all__ = ["TensorProduct", "EXECUTORS"]

#: Names accepted by ``TensorProduct(..., executor=...)``: ``"eager"`` (PyTorch operations, any
#: device), ``"fused"`` (the C++ CPU kernel of :mod:`tfn.ops.fused`) and ``"auto"``: ``"fused"``
#: for CPU float32/float64 inputs when the extension is available, else ``"eager"``.
EXECUTORS = ("auto", "eager", "fused")
_FUSED_DTYPES = (torch.float32, torch.float64)


class _Cat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dim: int, *xs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.dim = dim
        ctx.sizes = [x.shape[dim] for x in xs]
        return torch.cat(xs, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return (None, *_Split.apply(grad, ctx.dim, ctx.sizes))


class _Split(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, sizes: list[int]):  # type: ignore[override]
        ctx.dim = dim
        # Contiguous pieces: what follows (bmm, broadcasting) runs faster on them than on
        # strided views, and the copy costs less than slicing costs in the backward passes.
        return tuple(t.contiguous() for t in x.split(sizes, dim))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):  # type: ignore[override]
        return _Cat.apply(ctx.dim, *grads), None, None


def _split(x: torch.Tensor, sizes: list[int], dim: int) -> tuple[torch.Tensor, ...]:
    """``x.split(sizes, dim)`` whose derivative (at any order) is one concatenation."""
    if len(sizes) == 1:
        return (x,)
    if x.dim() == 1:  # shared weights: small, plain split
        return tuple(x.split(sizes, dim))
    return _Split.apply(x, dim % x.dim(), list(sizes))


def _cat(xs: list[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat(xs, dim)`` whose derivative (at any order) is one split."""
    if len(xs) == 1:
        return xs[0]
    return _Cat.apply(dim % xs[0].dim(), *xs)


class TensorProduct(nn.Module):
    """Execute a tensor-product description: ``forward(x1, x2, weight) -> out``.

    Args:
        description: the paths, from :func:`tfn.ops.channelwise_paths` or
            :func:`tfn.ops.fully_connected_paths`.
        executor: which kernel runs it (one of :data:`EXECUTORS`; ``"auto"``: the fused C++
            kernel for CPU float32/float64 inputs when it compiled, else the eager one;
            ``"fused"`` raises instead of falling back).

    ``x1 [..., irreps_in1.dim]``, ``x2 [..., irreps_in2.dim]`` and ``weight [..., weight_numel]``
    (or ``[weight_numel]``, shared) broadcast over their leading dimension.

    Example:
        >>> from tfn.ops import channelwise_paths
        >>> tp = TensorProduct(channelwise_paths("8x0e + 8x1o", "0e + 1o + 2e"))
        >>> out = tp(torch.randn(10, 32), torch.randn(10, 9), torch.randn(10, tp.weight_numel))
        >>> out.shape[-1] == tp.irreps_out.dim
        True
    """

    def __init__(self, description: TensorProductDescription, executor: str = "auto") -> None:
        super().__init__()
        if executor not in EXECUTORS:
            raise ValueError(
                f"TensorProduct: unknown executor {executor!r}; expected one of {EXECUTORS}"
            )
        d = description
        self.description = d
        self.executor = executor
        self.irreps_in1, self.irreps_in2, self.irreps_out = d.irreps_in1, d.irreps_in2, d.irreps_out
        self.weight_numel = d.weight_numel
        self.connection = d.paths[0].connection if d.paths else "uvu"
        self._in1_sizes = [mi.dim for mi in d.irreps_in1]
        self._out = [(mul, ir.dim) for mul, ir in d.irreps_out]
        self._masters: dict[str, torch.Tensor] = {}  # float64 originals of the buffers: see _apply
        self._plan_groups(d)
        # The fused kernel's table: plain CPU float64 tensors, never moved or cast with the module.
        self._program = fused.FusedProgram.build(d)

    def resolve_executor(self, *tensors: torch.Tensor) -> str:
        """The executor that runs on these inputs: ``"fused"`` or ``"eager"``.

        Example:
            >>> from tfn.ops import channelwise_paths
            >>> TensorProduct(channelwise_paths("2x0e", "0e"), executor="eager").resolve_executor(
            ...     torch.zeros(1, 2)
            ... )
            'eager'
        """
        if self.executor == "eager":
            return "eager"
        dtypes = {t.dtype for t in tensors}
        devices = {t.device.type for t in tensors}
        suitable = devices == {"cpu"} and len(dtypes) == 1 and dtypes <= set(_FUSED_DTYPES)
        if self.executor == "fused":
            if not fused.available():
                raise RuntimeError(
                    f"TensorProduct: executor='fused' is unavailable ({fused.unavailable_reason()}); "
                    "use executor='auto' to fall back to the eager kernel"
                )
            if not suitable:
                raise ValueError(
                    "TensorProduct: executor='fused' runs on CPU tensors of one dtype, float32 or "
                    f"float64; got dtypes {sorted(map(str, dtypes))} on {sorted(devices)}"
                )
            return "fused"
        return "fused" if suitable and fused.available() else "eager"

    def _buffer(self, name: str, value: torch.Tensor) -> None:
        self._masters[name] = value
        self.register_buffer(name, value.to(torch.get_default_dtype()), persistent=False)

    def _cg_block(self, path_index: int) -> torch.Tensor:
        path = self.description.paths[path_index]
        ir1, ir2, ir3 = self.description.path_irreps(path)
        return clebsch_gordan(ir1.l, ir2.l, ir3.l) * path.coefficient  # [d1, d2, d3]

    def _plan_groups(self, d: TensorProductDescription) -> None:
        in2_offsets = [s.start for s in d.irreps_in2.slices()]
        by_in1: dict[int, list[int]] = {}
        for index, path in enumerate(d.paths):
            by_in1.setdefault(path.i_in1, []).append(index)
        # One group per entry of input 1; its columns are the sub-paths (path, copy v of in2).
        self._groups: list[tuple[int, int, int, list[tuple[int, int, int]]]] = []
        for g, (i1, indices) in enumerate(sorted(by_in1.items())):
            mul1, d1 = d.irreps_in1[i1].mul, d.irreps_in1[i1].ir.dim
            columns, width = [], 0
            for index in indices:
                path = d.paths[index]
                for v in range(d.irreps_in2[path.i_in2].mul):
                    columns.append((index, v, d.irreps_out[path.i_out].ir.dim))
                    width += d.irreps_out[path.i_out].ir.dim
            cg = torch.zeros(d.irreps_in2.dim, d1, width, dtype=torch.float64)
            start = 0
            for index, v, d3 in columns:
                path = d.paths[index]
                d2 = d.irreps_in2[path.i_in2].ir.dim
                row = in2_offsets[path.i_in2] + v * d2
                cg[row : row + d2, :, start : start + d3] = self._cg_block(index).permute(1, 0, 2)
                start += d3
            self._buffer(f"cg_{g}", cg.reshape(d.irreps_in2.dim, d1 * width))
            self._groups.append((i1, mul1, d1, columns))

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # .float() then .double() must not leave float32-rounded coefficients behind: rebuild
        # the Clebsch-Gordan buffers from their float64 masters at the new dtype and device.
        super()._apply(fn, recurse)
        for name, master in self._masters.items():
            current = getattr(self, name)
            setattr(self, name, master.to(dtype=current.dtype, device=current.device))
        return self

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        weight: torch.Tensor,
        dst: torch.Tensor | None = None,
        num_nodes: int | None = None,
    ) -> torch.Tensor:
        """``out [..., irreps_out.dim]``; with ``dst [E]`` (and ``num_nodes``), the rows are
        summed onto ``num_nodes`` destinations instead, ``[num_nodes, irreps_out.dim]``, block by
        block, so the per-edge output is never stored whole (the convolution's scatter)."""
        if x1.shape[-1] != self.irreps_in1.dim:
            raise ValueError(
                f"TensorProduct: x1 has dimension {x1.shape[-1]}, irreps_in1 {self.irreps_in1} need {self.irreps_in1.dim}"
            )
        if x2.shape[-1] != self.irreps_in2.dim:
            raise ValueError(
                f"TensorProduct: x2 has dimension {x2.shape[-1]}, irreps_in2 {self.irreps_in2} need {self.irreps_in2.dim}"
            )
        if weight.shape[-1] != self.weight_numel:
            raise ValueError(
                f"TensorProduct: weight has size {weight.shape[-1]}, expected {self.weight_numel}"
            )
        lead = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1], weight.shape[:-1])
        x1 = x1.expand(lead + x1.shape[-1:]).reshape(-1, x1.shape[-1])
        x2 = x2.expand(lead + x2.shape[-1:]).reshape(-1, x2.shape[-1])
        if weight.dim() > 1:
            weight = weight.expand(lead + weight.shape[-1:]).reshape(-1, weight.shape[-1])
        if dst is not None:
            if num_nodes is None:
                raise ValueError("TensorProduct: dst needs num_nodes")
            if dst.shape != (x1.shape[0],):
                raise ValueError(
                    f"TensorProduct: dst must have shape [{x1.shape[0]}], got {tuple(dst.shape)}"
                )
        if self.resolve_executor(x1, x2, weight) == "fused":
            E = x1.shape[0]
            w = weight if weight.dim() == 2 else weight.expand(E, -1)
            if dst is None:  # every row its own source and destination
                plan = EdgePlan.per_edge(E, device=x1.device)
                return fused.convolve(self._program, x1, x2, w, plan).reshape(
                    lead + (self.irreps_out.dim,)
                )
            src = torch.arange(E, device=x1.device)
            plan = EdgePlan.build(src, dst, int(num_nodes), num_sources=E)
            return fused.convolve(self._program, x1, x2, w, plan)
        if self.connection == "uvu":
            outputs = self._channelwise(x1, x2, weight)
        else:
            outputs = self._fully_connected(x1, x2, weight)
        E = x1.shape[0]
        if dst is not None:
            pieces = []
            for o, (mul, dim) in zip(outputs, self._out):
                node = x1.new_zeros(num_nodes, mul * dim)
                pieces.append(
                    node if o is None else node.index_add(0, dst, o.reshape(E, mul * dim))
                )
            return _cat(pieces, dim=-1) if pieces else x1.new_zeros(num_nodes, 0)
        blocks = [
            o.reshape(E, mul * dim) if o is not None else x1.new_zeros(E, mul * dim)
            for o, (mul, dim) in zip(outputs, self._out)
        ]
        out = _cat(blocks, dim=-1) if blocks else x1.new_zeros(E, 0)
        return out.reshape(lead + (self.irreps_out.dim,))

    def convolve(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        plan: EdgePlan,
    ) -> torch.Tensor:
        """The convolution: gather, product, scatter.

        ``out[a] = sum over edges e = (b -> a) of TP(x[b], y[e], weight[e])``, with
        ``x [plan.num_sources, irreps_in1.dim]`` node features (``num_sources`` is
        ``num_nodes`` unless the plan is bipartite), ``y [E, irreps_in2.dim]`` and ``weight
        [E, weight_numel]`` per edge (or ``[weight_numel]``, shared), and ``plan`` the edges
        (:class:`EdgePlan`, built once per graph and shared by every convolution on it).
        Returns ``[plan.num_nodes, irreps_out.dim]``. The fused executor does it in one pass
        without a per-edge output; the eager one gathers, multiplies and sums with ``index_add``.

        Example:
            >>> from tfn.ops import channelwise_paths
            >>> tp = TensorProduct(channelwise_paths("4x0e + 2x1o", "0e + 1o"))
            >>> plan = EdgePlan.build(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 1]), num_nodes=3)
            >>> w = torch.randn(3, tp.weight_numel)
            >>> tp.convolve(torch.randn(3, 10), torch.randn(3, 4), w, plan).shape
            torch.Size([3, 40])
        """
        if not isinstance(plan, EdgePlan):
            raise TypeError(
                f"TensorProduct.convolve: plan must be a tfn.ops.EdgePlan, got {type(plan).__name__}"
            )
        E = plan.num_edges
        if x.dim() != 2 or x.shape != (plan.num_sources, self.irreps_in1.dim):
            raise ValueError(
                f"TensorProduct.convolve: x must be [{plan.num_sources}, {self.irreps_in1.dim}] "
                f"(the plan's source nodes, irreps_in1 {self.irreps_in1}), got {tuple(x.shape)}"
            )
        if y.dim() != 2 or y.shape != (E, self.irreps_in2.dim):
            raise ValueError(
                f"TensorProduct.convolve: y must be [{E}, {self.irreps_in2.dim}] (one row per "
                f"edge, irreps_in2 {self.irreps_in2}), got {tuple(y.shape)}"
            )
        if weight.shape not in ((E, self.weight_numel), (self.weight_numel,)):
            raise ValueError(
                f"TensorProduct.convolve: weight must be [{E}, {self.weight_numel}] or "
                f"[{self.weight_numel}], got {tuple(weight.shape)}"
            )
        if self.resolve_executor(x, y, weight) == "fused":
            w = weight if weight.dim() == 2 else weight.expand(E, -1)
            return fused.convolve(self._program, x, y, w, plan)
        return self(x.index_select(0, plan.src), y, weight, dst=plan.dst, num_nodes=plan.num_nodes)

    def _path_blocks(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor):
        """For every sub-path (path, copy ``v`` of input 2): ``(path, v, Z [E, U, d3], w)``.

        ``Z`` is the Clebsch-Gordan product of the path for every channel of input 1, before
        any weight; ``w`` is the path's slice of the weights (``[E|1, numel]``).
        """
        d = self.description
        E = x1.shape[0]
        x_blocks = _split(x1, self._in1_sizes, dim=-1)
        w_paths = _split(weight, [p.weight_numel for p in d.paths], dim=-1)
        for g, (i1, mul1, d1, columns) in enumerate(self._groups):
            widths = [d3 for _, _, d3 in columns]
            B = (x2 @ getattr(self, f"cg_{g}").to(x2.dtype)).view(E, d1, sum(widths))
            x = x_blocks[i1].view(E, mul1, d1)
            # d1 = 1: an outer product; bmm would pay its per-matrix overhead E times for it.
            Z = x * B if d1 == 1 else torch.bmm(x, B)  # every path, every channel
            for (index, v, _), block in zip(columns, _split(Z, widths, dim=-1)):
                yield d.paths[index], v, block, w_paths[index]

    def _channelwise(
        self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor
    ) -> list[torch.Tensor | None]:
        outputs: list[torch.Tensor | None] = [None] * len(self._out)
        for path, v, block, w_path in self._path_blocks(x1, x2, weight):
            mul1, mul2 = path.weight_shape
            w = w_path.view(-1, mul1, mul2)
            w = w if mul2 == 1 else w[:, :, v : v + 1]
            o = path.i_out
            # Scale by the per-channel weight and accumulate in one pass.
            outputs[o] = block * w if outputs[o] is None else torch.addcmul(outputs[o], block, w)
        return outputs

    def _fully_connected(
        self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor
    ) -> list[torch.Tensor | None]:
        E = x1.shape[0]
        outputs: list[torch.Tensor | None] = [None] * len(self._out)
        for path, v, block, w_path in self._path_blocks(x1, x2, weight):
            mul1, mul2, mul_out = path.weight_shape
            W = w_path.view(-1, mul1, mul2, mul_out)
            Wt = (W[:, :, 0] if mul2 == 1 else W[:, :, v]).transpose(1, 2)  # [E|1, W, U]
            o = path.i_out
            if Wt.shape[0] == E:  # per-edge weights: mix channels and accumulate at once
                acc = outputs[o]
                outputs[o] = torch.bmm(Wt, block) if acc is None else torch.baddbmm(acc, Wt, block)
            else:  # shared weights broadcast over the edges
                mixed = torch.matmul(Wt, block)
                outputs[o] = mixed if outputs[o] is None else outputs[o] + mixed
        return outputs

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, {len(self.description.paths)} paths, {self.weight_numel} weights"
