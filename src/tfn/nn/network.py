"""The Tensor Field Network: convolution, self-interaction, nonlinearity, repeated.

Each layer is the paper's block: a point convolution whose path outputs are concatenated,
a self-interaction that mixes them into the hidden irreps, and an equivariant nonlinearity.
An optional self-connection (a self-interaction of the layer's input, added before the
nonlinearity) helps deeper networks train. A last convolution and self-interaction produce
``irreps_out`` per point, optionally pooled over each cloud.
"""

from __future__ import annotations

import torch
from torch import nn

from tfn.data.neighbors import edge_vectors, full_graph, radius_graph
from tfn.nn.convolution import Convolution
from tfn.nn.nonlinearity import Gate, Nonlinearity
from tfn.nn.self_interaction import SelfInteraction
from tfn.ops.paths import reachable_irreps
from tfn.so3.irreps import Irrep, Irreps, IrrepsLike

__all__ = ["TensorFieldNetwork", "TFNLayer"]

_EVEN_SCALAR = Irrep(0, 1)


def _types(irreps: Irreps) -> set[Irrep]:
    return {ir for mul, ir in irreps if mul > 0}


class TFNLayer(nn.Module):
    """One block: ``nonlinearity(SI(conv(x)) + SC(x))``.

    ``irreps_out`` are the hidden irreps; the layer outputs them with the scalars first. With
    ``nonlinearity="gate"`` the self-interaction also produces one ``0e`` gate per non-scalar
    channel.
    """

    def __init__(
        self,
        irreps_in: IrrepsLike,
        irreps_out: IrrepsLike,
        lmax: int,
        nonlinearity: str = "gate",
        self_connection: bool = True,
        **conv_kwargs,
    ) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        scalars = Irreps([mi for mi in self.irreps_out if mi.ir.l == 0])
        gated = Irreps([mi for mi in self.irreps_out if mi.ir.l > 0])
        if nonlinearity == "gate":
            self.activation: nn.Module = Gate(
                scalars, Irreps([(gated.num_irreps, (0, 1))]) if gated else "", gated
            )
            irreps_si = self.activation.irreps_in
        elif nonlinearity == "norm":
            self.activation = Nonlinearity(scalars + gated)
            irreps_si = scalars + gated
        else:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected 'gate' or 'norm'")
        self.conv = Convolution(self.irreps_in, None, lmax, filter_irreps=irreps_si, **conv_kwargs)
        self.self_interaction = SelfInteraction(self.conv.irreps_out, irreps_si)
        self.self_connection = (
            SelfInteraction(self.irreps_in, irreps_si) if self_connection else None
        )
        # Both nonlinearities put the scalars first: that is the order the layer outputs.
        self.irreps_out = self.activation.irreps_out

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vec: torch.Tensor,
        edge_length: torch.Tensor,
    ) -> torch.Tensor:
        h = self.self_interaction(self.conv(x, edge_index, edge_vec, edge_length))
        if self.self_connection is not None:
            h = h + self.self_connection(x)
        return self.activation(h)


class TensorFieldNetwork(nn.Module):
    """A Tensor Field Network from irreps in to irreps out.

    Args:
        irreps_in: per-point input features, e.g. ``"1x0e"`` (a constant) or ``"5x0e"``
            (one-hot atom types).
        irreps_out: per-point (or per-cloud with ``pool``) outputs: any degrees and parities,
            e.g. ``"1o"`` (a vector), ``"0e + 2e"`` (a symmetric tensor), ``"1e"``, ``"3o"``.
        irreps_hidden: features between layers.
        num_layers: number of hidden blocks (the output convolution comes on top).
        lmax: largest degree of the filters ``Y_l``.
        cutoff: neighbours within this distance, with a smooth envelope; ``None`` connects all
            pairs of points within each cloud (as in the paper).
        pool: ``None`` (per point), ``"sum"`` or ``"mean"`` over each cloud.
        max_radius: range of the radial basis (default: ``cutoff``, or 5 without one).
        num_basis, radial_basis, radial_hidden: the radial networks.
        nonlinearity: ``"gate"`` or ``"norm"`` (the paper's).
        mode: ``"channelwise"`` (paper) or ``"fully_connected"`` for the output convolution
            and the hidden ones.
        num_neighbors: the convolution sums are divided by ``sqrt(num_neighbors)``.
        self_connection: add a self-interaction of each block's input (residual-like).
        validate: check inputs (shapes, NaN, coincident points) on every call.

    ``forward(pos [N, 3], features [N, irreps_in.dim], batch [N] or None)`` returns
    ``[N, irreps_out.dim]``, or ``[num_clouds, irreps_out.dim]`` when pooled.

    Example:
        >>> net = TensorFieldNetwork("1x0e", "1o", irreps_hidden="8x0e + 4x1o + 4x2e", num_layers=1)
        >>> pos = torch.randn(5, 3)
        >>> net(pos, torch.ones(5, 1)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        irreps_in: IrrepsLike,
        irreps_out: IrrepsLike,
        irreps_hidden: IrrepsLike = "16x0e + 4x0o + 8x1o + 8x1e + 4x2e + 4x2o",
        num_layers: int = 3,
        lmax: int = 2,
        cutoff: float | None = None,
        pool: str | None = None,
        *,
        max_radius: float | None = None,
        num_basis: int = 8,
        radial_basis: str = "gaussian",
        radial_hidden: tuple[int, ...] = (32,),
        nonlinearity: str = "gate",
        mode: str = "channelwise",
        num_neighbors: float = 1.0,
        self_connection: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        self.irreps_hidden = Irreps(irreps_hidden)
        if self.irreps_in.dim == 0 or self.irreps_out.dim == 0:
            raise ValueError("TensorFieldNetwork: irreps_in and irreps_out must not be empty")
        if pool not in (None, "sum", "mean"):
            raise ValueError(
                f"TensorFieldNetwork: pool must be None, 'sum' or 'mean', got {pool!r}"
            )
        if num_layers < 0:
            raise ValueError(f"TensorFieldNetwork: num_layers must be >= 0, got {num_layers}")
        if cutoff is not None and cutoff <= 0:
            raise ValueError(f"TensorFieldNetwork: cutoff must be positive, got {cutoff}")
        self.cutoff = cutoff
        self.pool = pool
        self.lmax = lmax
        self.validate = validate
        conv_kwargs = dict(
            mode=mode,
            max_radius=max_radius
            if max_radius is not None
            else (cutoff if cutoff is not None else 5.0),
            num_basis=num_basis,
            radial_basis=radial_basis,
            radial_hidden=tuple(radial_hidden),
            cutoff=cutoff,
            num_neighbors=num_neighbors,
        )
        if mode not in ("channelwise", "fully_connected"):
            raise ValueError(f"TensorFieldNetwork: unknown mode {mode!r}")
        layer_kwargs = dict(conv_kwargs)
        layer_kwargs["mode"] = "channelwise"  # hidden layers concatenate paths; SI mixes them
        sh = Irreps.spherical_harmonics(lmax)

        self.layers = nn.ModuleList()
        irreps = self.irreps_in
        available = _types(irreps)
        for i in range(num_layers):
            reachable = reachable_irreps(Irreps([(1, ir) for ir in sorted(available)]), sh)
            hidden = Irreps(
                [mi for mi in self.irreps_hidden if mi.ir in reachable or mi.ir == _EVEN_SCALAR]
            )
            if not hidden:
                raise ValueError(
                    f"TensorFieldNetwork: layer {i} can produce none of irreps_hidden {self.irreps_hidden}"
                )
            layer = TFNLayer(irreps, hidden, lmax, nonlinearity, self_connection, **layer_kwargs)
            self.layers.append(layer)
            irreps = layer.irreps_out
            available = _types(irreps)

        reachable = reachable_irreps(Irreps([(1, ir) for ir in sorted(available)]), sh)
        missing = [str(ir) for _, ir in self.irreps_out if ir not in reachable]
        if missing:
            raise ValueError(
                f"TensorFieldNetwork: irreps_out {self.irreps_out} cannot be reached: {', '.join(missing)} "
                f"is not produced by the last features ({Irreps(sorted((1, ir) for ir in available)).simplify()}) "
                f"times filters {sh}. Add irreps to irreps_hidden (e.g. 1e and 0o for pseudo-quantities), "
                f"add layers or raise lmax."
            )
        if mode == "fully_connected":
            self.output_conv = Convolution(irreps, self.irreps_out, lmax, **conv_kwargs)
            self.output_si = None
        else:
            out_types = Irreps([(1, ir) for _, ir in self.irreps_out])
            self.output_conv = Convolution(
                irreps, None, lmax, filter_irreps=out_types, **conv_kwargs
            )
            self.output_si = SelfInteraction(self.output_conv.irreps_out, self.irreps_out)

    def _graph(self, pos: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
        if self.cutoff is None:
            if batch is None:  # one cloud; the index also fixes the device of the edges
                batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
            return full_graph(batch, pos.shape[0])
        return radius_graph(pos, self.cutoff, batch)

    def _validate(
        self, pos: torch.Tensor, features: torch.Tensor, batch: torch.Tensor | None
    ) -> None:
        if pos.dim() != 2 or pos.shape[-1] != 3:
            raise ValueError(
                f"TensorFieldNetwork: pos must have shape [N, 3], got {tuple(pos.shape)}"
            )
        if pos.shape[0] == 0:
            raise ValueError("TensorFieldNetwork: empty batch (no points)")
        if features.dim() != 2 or features.shape[0] != pos.shape[0]:
            raise ValueError(
                f"TensorFieldNetwork: features must have shape [N, {self.irreps_in.dim}] with N = {pos.shape[0]}, "
                f"got {tuple(features.shape)}"
            )
        if features.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"TensorFieldNetwork: features have dimension {features.shape[-1]}, but irreps_in "
                f"{self.irreps_in} have dimension {self.irreps_in.dim}"
            )
        if batch is not None and (
            batch.shape != pos.shape[:1]
            or batch.dtype not in (torch.long, torch.int32, torch.int64)
        ):
            raise ValueError(
                f"TensorFieldNetwork: batch must be an integer tensor of shape [{pos.shape[0]}], got {tuple(batch.shape)} {batch.dtype}"
            )
        if not torch.isfinite(features).all():
            bad = int(torch.nonzero(~torch.isfinite(features).all(-1))[0, 0])
            raise ValueError(f"TensorFieldNetwork: features of point {bad} are NaN or infinite")
        if not torch.isfinite(pos).all():
            bad = int(torch.nonzero(~torch.isfinite(pos).all(-1))[0, 0])
            raise ValueError(
                f"TensorFieldNetwork: coordinates of point {bad} are NaN or infinite: {pos[bad].tolist()}"
            )

    def forward(
        self, pos: torch.Tensor, features: torch.Tensor, batch: torch.Tensor | None = None
    ) -> torch.Tensor:
        checking = (
            self.validate and not torch.compiler.is_compiling() and not torch.jit.is_scripting()
        )
        if checking:
            self._validate(pos, features, batch)
        edge_index = self._graph(pos, batch)
        edge_vec, edge_length = edge_vectors(pos, edge_index)
        if checking and edge_length.numel() > 0 and bool((edge_length < 1e-6).any()):
            e = int(torch.nonzero(edge_length < 1e-6)[0, 0])
            a, b = int(edge_index[1, e]), int(edge_index[0, e])
            raise ValueError(
                f"TensorFieldNetwork: points {min(a, b)} and {max(a, b)} are on top of each other (distance {float(edge_length[e]):.3g})"
            )
        x = features
        for layer in self.layers:
            x = layer(x, edge_index, edge_vec, edge_length)
        x = self.output_conv(x, edge_index, edge_vec, edge_length)
        if self.output_si is not None:
            x = self.output_si(x)
        if self.pool is None:
            return x
        if batch is None:
            pooled = x.sum(0, keepdim=True)
            return pooled / x.shape[0] if self.pool == "mean" else pooled
        num_clouds = int(batch.max()) + 1
        pooled = x.new_zeros(num_clouds, x.shape[-1]).index_add(0, batch, x)
        if self.pool == "mean":
            counts = torch.bincount(batch, minlength=num_clouds).clamp_min(1).to(x.dtype)
            pooled = pooled / counts[:, None]
        return pooled

    def radial_functions(self, r: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Learned radial functions of every convolution, labelled ``"layer k: 0e x 1o -> 1o"``.

        Each entry is ``(label, values [len(r), channels])``; useful for plots such as the
        gravity experiment's comparison with ``-1/r^2``.
        """
        convs = [(f"layer {i}", layer.conv) for i, layer in enumerate(self.layers)]
        convs.append(("output", self.output_conv))
        out = []
        with torch.no_grad():
            for name, conv in convs:
                values = conv.radial_functions(r)
                for p in conv.description.paths:
                    a, b, c = conv.description.path_irreps(p)
                    out.append((f"{name}: {a} x {b} -> {c}", values[:, p.weight_slice]))
        return out
