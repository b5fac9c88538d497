"""Atoms in; any equivariant property out, per atom or per molecule.

Each atom starts from a one-hot vector of its species; a :class:`~tfn.models.TensorFieldNetwork`
maps it to per-atom outputs ``x_i`` of any irreps (``"1x0e"``, ``"0e + 2e"``, ``"0e + 1o"``...),
made physical by a per-channel scale and per-species shifts of the even scalars
(``x_i * scale + shift[s_i]``, fitted from the training data by :meth:`PropertyModel.fit_statistics`)
and read out as ``readout`` says:

========================  =======================  =============================================
readout                   output                   what it is
========================  =======================  =============================================
``"atom"``                ``[N, dim]``             the per-atom outputs as they are
``"charges"``             ``[N, dim]`` (scalars)   per-atom scalars minus their molecule's mean:
                                                   charges that sum to zero in every molecule
``"sum"``, ``"mean"``     ``[B, dim]``             sum (extensive) or mean (intensive) over each
                                                   molecule's atoms
``"dipole"``              ``[B, 3]``               ``sum_i q_i r_i + p_i`` from charges ``q_i``
                                                   (``0e``, made to sum to zero, so the result
                                                   does not depend on the origin) and atomic
                                                   dipoles ``p_i`` (``1o``): ``irreps_out`` is
                                                   ``"0e + 1o"``
``"spatial_extent"``      ``[B, 1]``               ``sum_i a_i + b_i |r_i - c|^2`` about the
                                                   centre of nuclear charge ``c``, with
                                                   ``irreps_out = "2x0e"`` (``a_i``, ``b_i``): the
                                                   form of ``<R^2>`` (an atom's own extent plus
                                                   its electrons' distance from the centre)
========================  =======================  =============================================

Every readout is linear in the per-atom outputs, so the prediction is the sum of a learned part
and a *reference* (the readout of the shifts alone, e.g. the per-element reference energies of
an extensive energy). :meth:`PropertyModel.reference` computes the reference in float64;
``forward(..., reference=False)`` returns the learned part only. Training on
``target - reference`` keeps float32 training exact where targets are large (QM9's total
energies are ~10^4 eV, whose float32 rounding alone is ~1 meV).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from tfn.data.graph import Graph
from tfn.data.validation import check_points
from tfn.models._atoms import AtomsNetwork, least_squares_shifts
from tfn.so3.irreps import Irrep, Irreps, IrrepsLike

__all__ = ["PropertyModel", "READOUTS"]

READOUTS = ("atom", "charges", "sum", "mean", "dipole", "spatial_extent")
_PER_ATOM = ("atom", "charges")
_EVEN_SCALAR = Irrep(0, 1)


def _segment_sum(x: torch.Tensor, batch: torch.Tensor, num: int) -> torch.Tensor:
    return x.new_zeros((num,) + x.shape[1:]).index_add(0, batch, x)


class PropertyModel(AtomsNetwork):
    """Equivariant properties of molecules (or any atoms) from species and positions.

    Args:
        species: the chemical symbols the model knows, e.g. ``["H", "C", "N", "O", "F"]``.
        irreps_out: the per-atom outputs (see the module docstring for what each readout needs).
        readout: ``"atom"``, ``"charges"``, ``"sum"``, ``"mean"``, ``"dipole"`` or
            ``"spatial_extent"`` (module docstring).
        irreps_hidden, num_layers, lmax, cutoff, num_basis, radial_basis, radial_hidden,
            nonlinearity, self_connection, executor: the network
            (:class:`~tfn.models.TensorFieldNetwork`); ``cutoff`` in A.
        num_neighbors: sums over neighbours are divided by ``sqrt(num_neighbors)``; fitted by
            :meth:`fit_statistics`.
        shifts: per-species shifts of the even scalar outputs, ``{"H": -13.6}`` (one scalar) or
            ``{"H": [a, b]}`` (one per ``0e`` channel); default 0; fitted by
            :meth:`fit_statistics`.
        scale: one scale for every output channel, or one per channel (``irreps_out`` counted
            by copies: ``"2x0e + 1x2e"`` has 3 channels); fitted by :meth:`fit_statistics`.
        validate: check inputs on every call.

    ``forward(numbers [N], pos [N, 3], batch [N] or None, graph=None, *, reference=True)``
    returns ``[N, dim]`` (per-atom readouts) or ``[B, dim]`` (per-molecule readouts;
    ``[B, 3]`` for ``"dipole"``, ``[B, 1]`` for ``"spatial_extent"``).

    Example:
        >>> model = PropertyModel(["H", "O"], "0e + 1o", "dipole", "8x0e + 4x1o", 1, cutoff=3.0)
        >>> numbers = torch.tensor([8, 1, 1])
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
        >>> model(numbers, pos).shape  # one dipole vector
        torch.Size([1, 3])
        >>> charges = PropertyModel(["H", "O"], "0e", "charges", "8x0e + 4x1o", 1, cutoff=3.0)
        >>> abs(float(charges(numbers, pos).sum())) < 1e-6  # a neutral molecule
        True
    """

    def __init__(
        self,
        species: Sequence[str],
        irreps_out: IrrepsLike = "1x0e",
        readout: Literal["atom", "charges", "sum", "mean", "dipole", "spatial_extent"] = "sum",
        irreps_hidden: IrrepsLike = "32x0e + 16x1o + 8x2e",
        num_layers: int = 3,
        lmax: int = 2,
        cutoff: float = 5.0,
        *,
        num_basis: int = 8,
        radial_basis: Literal["gaussian", "bessel"] = "bessel",
        radial_hidden: tuple[int, ...] = (64,),
        nonlinearity: Literal["gate", "norm"] = "gate",
        self_connection: bool = True,
        num_neighbors: float = 1.0,
        shifts: Mapping[str, float | Sequence[float]] | None = None,
        scale: float | Sequence[float] = 1.0,
        executor: str = "auto",
        validate: bool = True,
    ) -> None:
        where = "PropertyModel"
        if readout not in READOUTS:
            raise ValueError(
                f"{where}: unknown readout {readout!r}; expected one of {', '.join(READOUTS)}"
            )
        irreps = Irreps(irreps_out).simplify()
        required = {"dipole": Irreps("1x0e + 1x1o"), "spatial_extent": Irreps("2x0e")}
        if readout in required and irreps != required[readout]:
            raise ValueError(
                f"{where}: readout {readout!r} needs irreps_out={str(required[readout])!r}, "
                f"got {str(irreps)!r}"
            )
        if readout == "charges" and any(ir != _EVEN_SCALAR for _, ir in irreps):
            raise ValueError(
                f"{where}: readout 'charges' reads even scalars (e.g. '1x0e'), got {irreps}"
            )
        super().__init__(
            where,
            species,
            irreps,
            irreps_hidden,
            num_layers,
            lmax,
            cutoff,
            num_basis=num_basis,
            radial_basis=radial_basis,
            radial_hidden=radial_hidden,
            nonlinearity=nonlinearity,
            self_connection=self_connection,
            num_neighbors=num_neighbors,
            executor=executor,
            validate=validate,
        )
        self.readout = readout
        self.irreps_out = irreps
        # Which output channel (copy of an irrep) each dimension belongs to, and where the even
        # scalars are (only they may be shifted: a shift of anything else breaks equivariance).
        channel: list[int] = []
        scalar_dims: list[int] = []
        for mul, ir in irreps:
            for _ in range(mul):
                if ir == _EVEN_SCALAR:
                    scalar_dims.append(len(channel))
                index = channel[-1] + 1 if channel else 0
                channel.extend([index] * ir.dim)
        self.register_buffer("channel_of_dim", torch.tensor(channel), persistent=False)
        self.register_buffer("scalar_dims", torch.tensor(scalar_dims, dtype=torch.long), False)
        self.num_channels = int(irreps.num_irreps)
        self.register_buffer("output_shift", torch.zeros(len(self.species), len(scalar_dims)))
        self.register_buffer("output_scale", torch.ones(self.num_channels))
        self.set_statistics(shifts=shifts, scale=scale)

    # ----------------------------------------------------------------------------- statistics
    @property
    def num_scalars(self) -> int:
        """Number of even scalar output channels (those that get per-species shifts)."""
        return int(self.scalar_dims.numel())

    @property
    def shifts(self) -> dict[str, list[float]]:
        """The per-species shifts, ``{"H": [one per 0e channel]}``."""
        return {s: [float(v) for v in row] for s, row in zip(self.species, self.output_shift)}

    @property
    def scale(self) -> list[float]:
        return [float(v) for v in self.output_scale]

    def set_statistics(
        self,
        shifts: Mapping[str, float | Sequence[float]] | None = None,
        scale: float | Sequence[float] | None = None,
        num_neighbors: float | None = None,
    ) -> None:
        """Set the shifts, scales and neighbour normalisation (``None``: keep)."""
        where = "PropertyModel"
        if shifts is not None:
            extra = sorted(set(shifts) - set(self.species))
            if extra:
                raise ValueError(f"{where}: shifts for elements not in species: {extra}")
            table = torch.zeros(len(self.species), self.num_scalars, dtype=torch.float64)
            for k, s in enumerate(self.species):
                if s not in shifts:
                    continue
                value = torch.as_tensor(shifts[s], dtype=torch.float64).reshape(-1)
                if value.numel() == 1 and self.num_scalars > 1:
                    value = value.expand(self.num_scalars)
                if value.numel() != self.num_scalars:
                    raise ValueError(
                        f"{where}: shifts[{s!r}] has {value.numel()} values, but irreps_out "
                        f"{self.irreps_out} has {self.num_scalars} even scalar channel(s)"
                    )
                table[k] = value
            if not bool(torch.isfinite(table).all()):
                raise ValueError(f"{where}: shifts must be finite")
            self.output_shift.copy_(table.to(self.output_shift.dtype))
        if scale is not None:
            value = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
            if value.numel() == 1:
                value = value.expand(self.num_channels)
            if value.numel() != self.num_channels:
                raise ValueError(
                    f"{where}: scale has {value.numel()} values, but irreps_out "
                    f"{self.irreps_out} has {self.num_channels} channels"
                )
            if not bool((value > 0).all()) or not bool(torch.isfinite(value).all()):
                raise ValueError(f"{where}: scale must be positive, got {value.tolist()}")
            self.output_scale.copy_(value.to(self.output_scale.dtype))
        if num_neighbors is not None:
            self.set_num_neighbors(num_neighbors)

    def _design(self, numbers: Sequence[torch.Tensor], positions: Sequence[torch.Tensor] | None):
        """Per-molecule design matrices of the reference, ``[M, K, scalars]`` (how much each
        species' shift of each scalar channel contributes to each molecule's readout)."""
        counts = self.species_counts(numbers)  # [M, K]
        k = len(self.species)
        if self.readout == "sum":
            return counts[:, :, None].expand(-1, -1, self.num_scalars)
        if self.readout == "mean":
            fractions = counts / counts.sum(1, keepdim=True).clamp_min(1)
            return fractions[:, :, None].expand(-1, -1, self.num_scalars)
        if self.readout == "spatial_extent":
            if positions is None:
                raise ValueError("fit_statistics: readout 'spatial_extent' needs positions")
            extent = torch.zeros(len(numbers), k, dtype=torch.float64)
            for m, (z, pos) in enumerate(zip(numbers, positions)):
                z = torch.as_tensor(z)
                pos = torch.as_tensor(pos, dtype=torch.float64)
                d2 = (pos - self._charge_centre(z, pos)).pow(2).sum(-1)
                idx = self.species_indices(z.to(self.species_index.device)).cpu()
                extent[m] = torch.zeros(k, dtype=torch.float64).index_add(0, idx, d2)
            return torch.stack([counts, extent], dim=-1)  # channel a, channel b
        raise AssertionError(self.readout)

    def fit_statistics(
        self,
        numbers: Sequence[torch.Tensor],
        targets: torch.Tensor | Sequence[torch.Tensor] | None = None,
        positions: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, object]:
        """Fit shifts, scales and ``num_neighbors`` from training structures.

        ``targets`` are in the units of the model's output: per molecule ``[M, dim]`` (or
        ``[M]``) for ``sum``, ``mean``, ``spatial_extent``; for ``dipole`` the norms ``[M]``
        (the data usually give only ``|mu|``); per atom (one ``[n_m, dim]`` per structure) for
        ``atom`` and ``charges``.

        * shifts (even scalar channels): least squares of the targets on the per-species design
          of the readout (compositions for ``sum``, fractions for ``mean``, counts and summed
          squared distances from the charge centre for ``spatial_extent``, per-species means for
          per-atom readouts); none for ``dipole`` (a charge shift per species would be fitted
          to norms, which are not linear in it);
        * scale (all channels alike, as in NequIP): the RMS of the residual per atom
          (``sqrt(mean(residual^2 / n))`` for sums, since independent atomic errors add up as
          ``sqrt(n)``); for ``dipole`` the RMS norm over ``sqrt(n)``; for ``spatial_extent``
          the ``b`` channel is divided by the mean squared distance, so that both terms start at
          the same size;
        * ``num_neighbors``: the average number of neighbours within the cutoff (needs
          ``positions``).

        Returns the fitted values.
        """
        result: dict[str, object] = {}
        if targets is not None:
            counts = self.species_counts(numbers)
            atoms = counts.sum(1)
            absent = [s for s, c in zip(self.species, counts.sum(0)) if c == 0]
            if absent:
                warnings.warn(
                    f"fit_statistics: no training atom of {absent}: their shifts stay 0",
                    stacklevel=2,
                )
            scale: list[float] | float
            if self.readout in _PER_ATOM:
                y = torch.cat([torch.as_tensor(t, dtype=torch.float64).reshape(len(z), -1)
                               for t, z in zip(targets, numbers)])  # fmt: skip
                if y.shape[-1] != self.irreps_out.dim:
                    raise ValueError(
                        f"fit_statistics: per-atom targets have {y.shape[-1]} components, "
                        f"irreps_out {self.irreps_out} has {self.irreps_out.dim}"
                    )
                idx = torch.cat(
                    [self.species_indices(torch.as_tensor(z).to(self.species_index.device)).cpu()
                     for z in numbers]
                )  # fmt: skip
                onehot = torch.nn.functional.one_hot(idx, len(self.species)).double()
                sd = self.scalar_dims.cpu()
                shift = least_squares_shifts(onehot, y[:, sd]) if len(sd) else None
                residual = y.clone()
                if shift is not None:
                    residual[:, sd] -= onehot @ shift
                    if self.readout == "charges":
                        # the readout removes each molecule's mean: so does the residual
                        sizes = [len(z) for z in numbers]
                        parts = torch.split(residual, sizes)
                        residual = torch.cat([p - p.mean(0, keepdim=True) for p in parts])
                scale = float(residual.pow(2).mean().sqrt())
            elif self.readout == "dipole":
                y = torch.as_tensor(targets, dtype=torch.float64).reshape(-1)
                shift = None
                scale = float((y.pow(2) / atoms.clamp_min(1)).mean().sqrt())
            else:
                y = torch.as_tensor(targets, dtype=torch.float64).reshape(len(numbers), -1)
                dim = 1 if self.readout == "spatial_extent" else self.irreps_out.dim
                if y.shape[-1] != dim:
                    raise ValueError(
                        f"fit_statistics: targets have {y.shape[-1]} components per structure, "
                        f"the readout gives {dim}"
                    )
                design = self._design(numbers, positions)
                residual = y.clone()
                if self.readout == "spatial_extent":
                    # one target, two scalar channels: solve for both at once
                    flat = design.reshape(len(numbers), -1)
                    shift = least_squares_shifts(flat, y[:, 0]).reshape(len(self.species), 2)
                    residual[:, 0] -= flat @ shift.reshape(-1)
                else:
                    sd = self.scalar_dims.cpu()
                    shift = torch.zeros(len(self.species), self.num_scalars, dtype=torch.float64)
                    for c, d in enumerate(sd.tolist()):
                        shift[:, c] = least_squares_shifts(design[:, :, c], y[:, d])
                        residual[:, d] -= design[:, :, c] @ shift[:, c]
                norm = (
                    atoms if self.readout in ("sum", "spatial_extent") else torch.ones_like(atoms)
                )
                scale = float((residual.pow(2) / norm[:, None].clamp_min(1)).mean().sqrt())
                if self.readout == "spatial_extent":
                    extent = design[:, :, 1].sum(1) / atoms.clamp_min(1)  # mean |r - c|^2
                    scale = [scale, scale / max(float(extent.mean()), 1e-12)]
            if shift is not None:
                self.set_statistics(shifts=dict(zip(self.species, shift.tolist())))
                result["shifts"] = self.shifts
            values = [scale] if isinstance(scale, float) else scale
            if not all(v > 0 for v in values):
                raise ValueError(f"fit_statistics: the fitted scale is {scale}; check the data")
            self.set_statistics(scale=scale)
            result["scale"] = scale
        if positions is not None:
            value = self.average_num_neighbors(positions)
            self.set_statistics(num_neighbors=value)
            result["num_neighbors"] = value
        return result

    # --------------------------------------------------------------------------------- forward
    @staticmethod
    def _charge_centre(numbers: torch.Tensor, pos: torch.Tensor, batch=None, num=1):
        z = numbers.to(pos.dtype)
        if batch is None:
            return (z[:, None] * pos).sum(0) / z.sum().clamp_min(1e-12)
        total = _segment_sum(z[:, None] * pos, batch, num)
        return total / _segment_sum(z, batch, num).clamp_min(1e-12)[:, None]

    def _read(
        self,
        x: torch.Tensor,
        numbers: torch.Tensor,
        pos: torch.Tensor,
        batch: torch.Tensor,
        num: int,
    ) -> torch.Tensor:
        """The readout of per-atom values ``x`` (linear in ``x``)."""
        readout = self.readout
        if readout == "atom":
            return x
        counts = torch.bincount(batch, minlength=num).clamp_min(1).to(x.dtype)
        if readout == "charges":
            mean = _segment_sum(x, batch, num) / counts[:, None]
            return x - mean[batch]
        if readout == "sum":
            return _segment_sum(x, batch, num)
        if readout == "mean":
            return _segment_sum(x, batch, num) / counts[:, None]
        if readout == "dipole":
            q, p = x[:, 0], x[:, 1:4]
            q = q - (_segment_sum(q, batch, num) / counts)[batch]
            # sum_i q_i = 0, so any origin gives the same dipole; the centroid keeps the
            # products small (fewer rounding errors far from the origin)
            centre = _segment_sum(pos, batch, num) / counts[:, None]
            return _segment_sum(q[:, None] * (pos - centre[batch]) + p, batch, num)
        # spatial_extent
        centre = self._charge_centre(numbers, pos, batch, num)
        d2 = (pos - centre[batch]).pow(2).sum(-1)
        return _segment_sum((x[:, 0] + x[:, 1] * d2)[:, None], batch, num)

    def _inputs(self, numbers, pos, batch):
        where = "PropertyModel"
        if self.validate:
            check_points(pos, batch, where)
        if not isinstance(numbers, torch.Tensor) or numbers.shape != pos.shape[:1]:
            raise ValueError(
                f"{where}: numbers must have shape [{pos.shape[0]}] (one atomic number per atom)"
            )
        idx = self.species_indices(numbers)
        num = 1 if batch is None else int(batch.max()) + 1 if batch.numel() else 0
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        return idx, batch, num

    def _shift_field(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        field = torch.zeros(idx.shape[0], self.irreps_out.dim, dtype=dtype, device=idx.device)
        if self.num_scalars:
            field[:, self.scalar_dims] = self.output_shift.to(dtype)[idx]
        return field

    def reference(
        self, numbers: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The readout of the per-species shifts alone, in float64 (see the module docstring):
        ``forward(...) = forward(..., reference=False) + reference(...)``."""
        idx, batch, num = self._inputs(numbers, pos, batch)
        return self._read(self._shift_field(idx, torch.float64), numbers, pos.double(), batch, num)

    def forward(
        self,
        numbers: torch.Tensor,
        pos: torch.Tensor,
        batch: torch.Tensor | None = None,
        graph: Graph | None = None,
        *,
        reference: bool = True,
    ) -> torch.Tensor:
        """See the class docstring; ``reference=False`` leaves out the readout of the shifts."""
        idx, atom_batch, num = self._inputs(numbers, pos, batch)
        dtype = self.output_scale.dtype
        if pos.dtype != dtype:
            pos = pos.to(dtype)
        y = self.network(pos, self.one_hot(idx, dtype), batch, graph=graph)
        x = y * self.output_scale[self.channel_of_dim]
        if reference:
            x = x + self._shift_field(idx, dtype)
        return self._read(x, numbers, pos, atom_batch, num)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, irreps_out={self.irreps_out}, readout={self.readout!r}"
