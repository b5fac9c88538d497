"""The Tensor Field Network: irreps in, irreps out.

Each hidden layer is the paper's block (:class:`tfn.nn.TFNLayer`): a channel-wise point
convolution whose path outputs are concatenated, a self-interaction that mixes them into the
hidden irreps, and an equivariant nonlinearity. A last convolution (channel-wise followed by a
self-interaction, or fully connected) produces ``irreps_out`` per point, optionally pooled over
each cloud.

The graph is data: pass a :class:`tfn.data.Graph` (edges, and for periodic systems the integer
cell shifts and the cells), or let the network build one from the positions (all pairs of each
cloud, or the pairs within ``cutoff``). The edge harmonics and radial basis are computed once per
forward and shared by every layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tfn.data.graph import Graph
from tfn.data.neighbors import full_graph, radius_graph
from tfn.data.validation import check_edge_lengths, check_finite, check_points
from tfn.nn.block import TFNLayer
from tfn.nn.convolution import Convolution
from tfn.nn.edges import EdgeEmbedding, Edges
from tfn.nn.self_interaction import SelfInteraction
from tfn.ops.edge_plan import EdgePlan
from tfn.ops.paths import reachable_irreps
from tfn.so3.irreps import Irrep, Irreps, IrrepsLike

__all__ = ["TensorFieldNetwork"]

_EVEN_SCALAR = Irrep(0, 1)


def _types(irreps: Irreps) -> set[Irrep]:
    return {ir for mul, ir in irreps if mul > 0}


class TensorFieldNetwork(nn.Module):
    """A Tensor Field Network from irreps in to irreps out.

    Args:
        irreps_in: per-point input features, e.g. ``"1x0e"`` (a constant) or ``"5x0e"``
            (one-hot atom types).
        irreps_out: per-point (or per-cloud with ``pool``) outputs: any degrees and parities,
            e.g. ``"1o"`` (a vector), ``"0e + 2e"`` (a symmetric tensor), ``"1e"``, ``"3o"``.
        irreps_hidden: features between layers (each layer keeps the entries it can reach).
        num_layers: number of hidden blocks (the output convolution comes on top).
        lmax: largest degree of the filters ``Y_l``.
        cutoff: neighbours within this distance, with a smooth envelope; ``None`` connects all
            pairs of points within each cloud (as in the paper).
        pool: ``None`` (per point), ``"sum"`` or ``"mean"`` over each cloud.
        max_radius: range of the radial basis (default: ``cutoff``, or 5 without one).
        num_basis, radial_basis, radial_hidden: the radial networks.
        nonlinearity: ``"gate"`` or ``"norm"`` (the paper's).
        output_connection: the output convolution: ``"channelwise"`` (then a self-interaction
            mixes its paths into ``irreps_out``) or ``"fully_connected"``. Hidden convolutions are
            always channel-wise, the paper's; their self-interactions mix channels.
        num_neighbors: the convolution sums are divided by ``sqrt(num_neighbors)`` (``> 0``).
        self_connection: add a self-interaction of each block's input (residual-like).
        executor: tensor-product kernel of every convolution (:data:`tfn.ops.EXECUTORS`;
            ``"auto"``: the fastest available).
        validate: check inputs (shapes, NaN, coincident points) on every call; the checks also
            run in front of a ``torch.compile``d network.

    ``forward(pos [N, 3], features [N, irreps_in.dim], batch [N] or None, graph=None)`` returns
    ``[N, irreps_out.dim]``, or ``[num_clouds, irreps_out.dim]`` when pooled. Positions and
    features are cast to the network's dtype (integer coordinates, or float64 into a float32
    network, are converted, not rejected).

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
        pool: Literal["sum", "mean"] | None = None,
        *,
        max_radius: float | None = None,
        num_basis: int = 8,
        radial_basis: Literal["gaussian", "bessel"] = "gaussian",
        radial_hidden: tuple[int, ...] = (32,),
        nonlinearity: Literal["gate", "norm"] = "gate",
        output_connection: Literal["channelwise", "fully_connected"] = "channelwise",
        num_neighbors: float = 1.0,
        self_connection: bool = True,
        executor: str = "auto",
        validate: bool = True,
    ) -> None:
        super().__init__()
        where = "TensorFieldNetwork"
        # Zero multiplicities carry no data: dropped, so that "1x0e + 0x1o" is just "1x0e".
        self.irreps_in = Irreps(irreps_in).simplify()
        self.irreps_out = Irreps(irreps_out)
        self.irreps_hidden = Irreps(irreps_hidden).simplify()
        if self.irreps_in.dim == 0 or self.irreps_out.dim == 0:
            raise ValueError(f"{where}: irreps_in and irreps_out must not be empty")
        if any(mul == 0 for mul, _ in self.irreps_out):
            self.irreps_out = self.irreps_out.simplify()
        if pool not in (None, "sum", "mean"):
            raise ValueError(f"{where}: pool must be None, 'sum' or 'mean', got {pool!r}")
        if num_layers < 0:
            raise ValueError(f"{where}: num_layers must be >= 0, got {num_layers}")
        if lmax < 0:
            raise ValueError(f"{where}: lmax must be >= 0, got {lmax}")
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f"{where}: cutoff must be positive, got {cutoff}")
        if not num_neighbors > 0:
            raise ValueError(f"{where}: num_neighbors must be > 0, got {num_neighbors}")
        if output_connection not in ("channelwise", "fully_connected"):
            raise ValueError(
                f"{where}: unknown output_connection {output_connection!r}; expected 'channelwise' or 'fully_connected'"
            )
        self.cutoff = cutoff
        self.pool = pool
        self.lmax = lmax
        self.validate = validate
        radius = max_radius if max_radius is not None else (cutoff if cutoff is not None else 5.0)
        self.embedding = EdgeEmbedding(lmax, radius, num_basis, radial_basis, cutoff)
        conv_kwargs = dict(
            max_radius=radius,
            num_basis=num_basis,
            radial_basis=radial_basis,
            radial_hidden=tuple(radial_hidden),
            cutoff=cutoff,
            num_neighbors=num_neighbors,
            executor=executor,
        )
        sh = Irreps.spherical_harmonics(lmax)

        self.layers = nn.ModuleList()
        irreps = self.irreps_in
        for i in range(num_layers):
            available = _types(irreps)
            reachable = reachable_irreps(Irreps([(1, ir) for ir in sorted(available)]), sh)
            hidden = Irreps(
                [mi for mi in self.irreps_hidden if mi.ir in reachable or mi.ir == _EVEN_SCALAR]
            )
            if not hidden:
                raise ValueError(
                    f"{where}: layer {i} can produce none of irreps_hidden {self.irreps_hidden}"
                )
            layer = TFNLayer(irreps, hidden, lmax, nonlinearity, self_connection, **conv_kwargs)
            self.layers.append(layer)
            irreps = layer.irreps_out

        available = _types(irreps)
        reachable = reachable_irreps(Irreps([(1, ir) for ir in sorted(available)]), sh)
        missing = [str(ir) for _, ir in self.irreps_out if ir not in reachable]
        if missing:
            raise ValueError(
                f"{where}: irreps_out {self.irreps_out} cannot be reached: {', '.join(missing)} "
                f"is not produced by the last features ({Irreps(sorted((1, ir) for ir in available)).simplify()}) "
                f"times filters {sh}. Add irreps to irreps_hidden (e.g. 1e and 0o for pseudo-quantities), "
                f"add layers or raise lmax."
            )
        self.output_connection = output_connection
        if output_connection == "fully_connected":
            self.output_conv = Convolution(
                irreps, self.irreps_out, lmax, connection="fully_connected", **conv_kwargs
            )
            self.output_si = None
        else:
            out_types = Irreps([(1, ir) for _, ir in self.irreps_out])
            self.output_conv = Convolution(
                irreps, None, lmax, filter_irreps=out_types, **conv_kwargs
            )
            self.output_si = SelfInteraction(self.output_conv.irreps_out, self.irreps_out)

    # -------------------------------------------------------------------------------- inputs
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def build_graph(self, pos: torch.Tensor, batch: torch.Tensor | None = None) -> Graph:
        """The graph the network builds when none is given: all pairs of each cloud
        (``cutoff=None``) or the pairs closer than ``cutoff`` (no periodic images)."""
        if self.cutoff is None:
            if batch is None:  # one cloud; the index also fixes the device of the edges
                batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
            return Graph(full_graph(batch, pos.shape[0]))
        return Graph(radius_graph(pos, self.cutoff, batch))

    @torch.compiler.disable
    def _check(self, pos: torch.Tensor, features: torch.Tensor, batch: torch.Tensor | None):
        """Checks run eagerly even inside a compiled network (never a silent NaN)."""
        where = "TensorFieldNetwork"
        check_points(pos, batch, where)
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else features
            raise ValueError(
                f"{where}: features must have shape [N, {self.irreps_in.dim}], got {shape}"
            )
        if features.shape[0] != pos.shape[0]:
            raise ValueError(
                f"{where}: features must have shape [N, {self.irreps_in.dim}] with N = {pos.shape[0]}, "
                f"got {tuple(features.shape)}"
            )
        if features.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"{where}: features have dimension {features.shape[-1]}, but irreps_in "
                f"{self.irreps_in} have dimension {self.irreps_in.dim}"
            )
        check_finite(features, "features", where)

    @torch.compiler.disable
    def _check_graph(self, graph: Graph, num_points: int) -> None:
        if graph.num_edges:
            lo, hi = int(graph.edge_index.min()), int(graph.edge_index.max())
            if lo < 0 or hi >= num_points:
                raise ValueError(
                    f"TensorFieldNetwork: graph.edge_index refers to point {lo if lo < 0 else hi}, "
                    f"but there are {num_points} points"
                )

    @torch.compiler.disable
    def _check_edges(self, edges: Edges, graph: Graph) -> None:
        check_edge_lengths(edges.length, graph.edge_index, where="TensorFieldNetwork")

    def embed_edges(
        self,
        pos: torch.Tensor,
        batch: torch.Tensor | None = None,
        graph: Graph | None = None,
        cell: torch.Tensor | None = None,
    ) -> Edges:
        """The edges of one forward: vectors from the positions (and cells: ``cell`` overrides
        the graph's, e.g. a strained copy), harmonics, radial basis and the kernels' plan."""
        if graph is None:
            graph = self.build_graph(pos, batch)
        elif self.validate:
            self._check_graph(graph, pos.shape[0])
        vec = graph.edge_vectors(pos, batch, cell)
        plan = EdgePlan.build(graph.src, graph.dst, pos.shape[0])
        edges = self.embedding(vec, plan)
        if self.validate:
            self._check_edges(edges, graph)
        return edges

    # ------------------------------------------------------------------------------- forward
    def forward(
        self,
        pos: torch.Tensor,
        features: torch.Tensor,
        batch: torch.Tensor | None = None,
        graph: Graph | None = None,
        cell: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.validate:
            self._check(pos, features, batch)
        dtype = self.dtype
        if pos.dtype != dtype:
            pos = pos.to(dtype)
        if features.dtype != dtype:
            features = features.to(dtype)
        edges = self.embed_edges(pos, batch, graph, cell)
        return self.readout(self.point_features(features, edges), batch)

    def point_features(self, features: torch.Tensor, edges: Edges) -> torch.Tensor:
        """Per-point ``irreps_out`` before pooling."""
        x = features
        for layer in self.layers:
            x = layer(x, edges)
        x = self.output_conv(x, edges)
        if self.output_si is not None:
            x = self.output_si(x)
        return x

    def readout(self, x: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
        """Pool per-point outputs over each cloud (``pool``), or return them as they are."""
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
