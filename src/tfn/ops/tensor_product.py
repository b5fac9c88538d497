"""Kernels that execute a :class:`~tfn.ops.paths.TensorProductDescription`.

:class:`TensorProduct` is a weightless module: the weights come in as an argument (one vector
per edge, or one shared vector), as in e3nn-jax, so learnable parts (a radial network, a
parameter) live elsewhere.

How it runs. Paths are grouped by their entry of input 1 (multiplicity ``U``, dimension
``d1``). For each group, input 2 is contracted once with all the group's Clebsch-Gordan
tensors (a single small matmul giving ``B [E, d1, K]``, ``K`` the summed output dimension of
the group's paths), then one batched matmul ``x1 [E, U, d1] @ B`` produces every path's output
for every channel at once. Channel-wise weights are then one gather and one multiply; fully
connected weights one batched matmul per path. Work is a handful of large operations per
entry of input 1, never a loop over channels or components.
"""

from __future__ import annotations

import torch
from torch import nn

from tfn.ops.paths import TensorProductDescription
from tfn.so3.clebsch_gordan import clebsch_gordan

__all__ = ["TensorProduct"]


class _Group:
    """Static plan for the paths that share one entry of input 1."""

    def __init__(self, i_in1: int) -> None:
        self.i_in1 = i_in1
        self.columns: list[tuple[int, int, int, int]] = []  # (path index, copy v, col start, d3)
        self.width = 0


class TensorProduct(nn.Module):
    """Execute a tensor-product description: ``forward(x1, x2, weight) -> out``.

    Args:
        description: the paths, from :func:`tfn.ops.channelwise_paths` or
            :func:`tfn.ops.fully_connected_paths`.

    ``x1 [..., irreps_in1.dim]``, ``x2 [..., irreps_in2.dim]`` and ``weight [..., weight_numel]``
    (or ``[weight_numel]``, shared) broadcast over their leading dimension.

    Example:
        >>> from tfn.ops import channelwise_paths
        >>> tp = TensorProduct(channelwise_paths("8x0e + 8x1o", "0e + 1o + 2e"))
        >>> out = tp(torch.randn(10, 32), torch.randn(10, 9), torch.randn(10, tp.weight_numel))
        >>> out.shape[-1] == tp.irreps_out.dim
        True
    """

    def __init__(self, description: TensorProductDescription) -> None:
        super().__init__()
        self.description = description
        d = description
        self.irreps_in1, self.irreps_in2, self.irreps_out = d.irreps_in1, d.irreps_in2, d.irreps_out
        self.weight_numel = d.weight_numel
        in1_offsets = [s.start for s in d.irreps_in1.slices()]
        in2_offsets = [s.start for s in d.irreps_in2.slices()]
        self._in1 = [(in1_offsets[i], mul, ir.dim) for i, (mul, ir) in enumerate(d.irreps_in1)]
        self._out = [(mul, ir.dim) for mul, ir in d.irreps_out]

        groups: dict[int, _Group] = {}
        for index, path in enumerate(d.paths):
            group = groups.setdefault(path.i_in1, _Group(path.i_in1))
            mul2 = d.irreps_in2[path.i_in2].mul
            d3 = d.irreps_out[path.i_out].ir.dim
            for v in range(mul2):
                group.columns.append((index, v, group.width, d3))
                group.width += d3
        self._groups = [groups[i] for i in sorted(groups)]

        self._cg64: list[torch.Tensor] = []  # float64 masters: see _apply
        for g, group in enumerate(self._groups):
            _, mul1, d1 = self._in1[group.i_in1]
            # Contraction of input 2 with the group's Clebsch-Gordan tensors.
            cg = torch.zeros(d.irreps_in2.dim, d1, group.width, dtype=torch.float64)
            # Where each output column lands: (out entry, component); and channel-wise weights.
            targets = []
            weight_index = torch.zeros(mul1, group.width, dtype=torch.long)
            for index, v, start, d3 in group.columns:
                path = d.paths[index]
                ir1, ir2, ir3 = d.path_irreps(path)
                C = clebsch_gordan(ir1.l, ir2.l, ir3.l) * path.coefficient
                row = in2_offsets[path.i_in2] + v * ir2.dim
                cg[row : row + ir2.dim, :, start : start + d3] = C.permute(1, 0, 2)
                targets.append((path.i_out, start, d3))
                if path.mode == "uvu":
                    mul2 = path.weight_shape[1]
                    u = torch.arange(mul1)[:, None]
                    weight_index[:, start : start + d3] = path.weight_start + u * mul2 + v
            cg = cg.reshape(d.irreps_in2.dim, d1 * group.width)
            self._cg64.append(cg)
            self.register_buffer(f"cg_{g}", cg.to(torch.get_default_dtype()), persistent=False)
            self.register_buffer(f"weight_index_{g}", weight_index.reshape(-1), persistent=False)
            group.targets = targets  # type: ignore[attr-defined]
        self._mode = d.paths[0].mode if d.paths else "uvu"

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # .float() then .double() must not leave float32-rounded coefficients behind: rebuild
        # the Clebsch-Gordan buffers from their float64 masters at the new dtype and device.
        super()._apply(fn, recurse)
        for g, master in enumerate(self._cg64):
            current = getattr(self, f"cg_{g}")
            setattr(self, f"cg_{g}", master.to(dtype=current.dtype, device=current.device))
        return self

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        d = self.description
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
        shared = weight.dim() == 1
        if not shared:
            weight = weight.expand(lead + weight.shape[-1:]).reshape(-1, weight.shape[-1])
        E = x1.shape[0]
        outputs: list[torch.Tensor | None] = [None] * len(self._out)
        for g, group in enumerate(self._groups):
            start1, mul1, d1 = self._in1[group.i_in1]
            cg = getattr(self, f"cg_{g}").to(x2.dtype)
            B = (x2 @ cg).view(E, d1, group.width)
            x = x1[:, start1 : start1 + mul1 * d1].view(E, mul1, d1)
            Z = torch.bmm(x, B)  # [E, U, width]: every path of the group, every channel
            if self._mode == "uvu":
                index = getattr(self, f"weight_index_{g}")
                if shared:
                    W = weight.index_select(0, index).view(1, mul1, group.width)
                else:
                    W = weight.index_select(1, index).view(E, mul1, group.width)
                Z = Z * W
                for i_out, start, d3 in group.targets:  # type: ignore[attr-defined]
                    block = Z[:, :, start : start + d3]
                    outputs[i_out] = block if outputs[i_out] is None else outputs[i_out] + block
            else:
                for (index, v, start, d3), (i_out, _, _) in zip(group.columns, group.targets):  # type: ignore[attr-defined]
                    path = d.paths[index]
                    mul_out = path.weight_shape[2]
                    mul2 = path.weight_shape[1]
                    if shared:
                        W = weight[path.weight_slice].view(mul1, mul2, mul_out)[:, v].T
                        block = torch.matmul(W, Z[:, :, start : start + d3])
                    else:
                        W = weight[:, path.weight_slice].view(E, mul1, mul2, mul_out)[:, :, v]
                        block = torch.bmm(W.transpose(1, 2), Z[:, :, start : start + d3])
                    outputs[i_out] = block if outputs[i_out] is None else outputs[i_out] + block
        blocks = [
            o.reshape(E, mul * dim) if o is not None else x1.new_zeros(E, mul * dim)
            for o, (mul, dim) in zip(outputs, self._out)
        ]
        out = torch.cat(blocks, dim=-1) if blocks else x1.new_zeros(E, 0)
        return out.reshape(lead + (self.irreps_out.dim,))

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, {len(self.description.paths)} paths, {self.weight_numel} weights"
