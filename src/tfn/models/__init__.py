"""Models built from the layers: irreps in and out, or atoms in and energies out.

* :class:`TensorFieldNetwork`: per-point features of any irreps to outputs of any irreps;
* :class:`EnergyModel`: chemical species and positions to energies, forces and stress;
* :class:`PropertyModel`: chemical species and positions to any equivariant property, per atom
  or per molecule (charges, dipoles, tensors, extensive and intensive scalars).
"""

from tfn.models.energy import EnergyModel
from tfn.models.network import TensorFieldNetwork
from tfn.models.property import PropertyModel

__all__ = ["EnergyModel", "PropertyModel", "TensorFieldNetwork"]
