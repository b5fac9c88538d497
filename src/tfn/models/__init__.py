"""Models built from the layers: irreps in and out, or atoms in and energies out.

* :class:`TensorFieldNetwork`: per-point features of any irreps to outputs of any irreps;
* :class:`EnergyModel`: chemical species and positions to energies, forces and stress.
"""

from tfn.models.energy import EnergyModel
from tfn.models.network import TensorFieldNetwork

__all__ = ["EnergyModel", "TensorFieldNetwork"]
