"""ASE integration (``pip install 'tfn[chem]'``): :class:`TFNCalculator`; see
:mod:`tfn.interop.ase`."""

from tfn.interop.ase import TFNCalculator, atoms_to_tensors

__all__ = ["TFNCalculator", "atoms_to_tensors"]
