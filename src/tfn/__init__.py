"""tfn: Tensor Field Networks, equivariant to 3D rotations, reflections and translations.

The floors, from the maths up (each imports only from the floors below it):

* :mod:`tfn.so3`: irreps, spherical harmonics, Clebsch-Gordan coefficients, Wigner D, rotations;
* :mod:`tfn.data`: point clouds in batches, graphs with periodic images, neighbour lists;
* :mod:`tfn.ops`: tensor products (descriptions apart from the kernels that run them);
  :mod:`tfn.testing`: the equivariance oracle;
* :mod:`tfn.nn`: radial functions, convolution, self-interaction, nonlinearities;
* :mod:`tfn.models`: :class:`TensorFieldNetwork` (irreps in and out) and
  :class:`~tfn.models.EnergyModel` (atoms in; energy, forces, stress out);
  :mod:`tfn.datasets`: the paper's synthetic data, molecules and trajectories;
* :mod:`tfn.tasks`: one module per task (data, loss, metrics, plots); :mod:`tfn.interop`:
  e3nn converters and the ASE calculator (:mod:`tfn.ase`);
* :mod:`tfn.train`: training, evaluation and :func:`tfn.load` (needs ``tfn[train]``);
  :mod:`tfn.cli`: the ``tfn`` command.

Example:
    >>> import torch, tfn
    >>> net = tfn.TensorFieldNetwork("1x0e", "1o", irreps_hidden="8x0e + 4x1o", num_layers=1)
    >>> net(torch.randn(4, 3), torch.ones(4, 1)).shape
    torch.Size([4, 3])
"""

from typing import Any

from tfn.models.network import TensorFieldNetwork
from tfn.so3.irreps import Irrep, Irreps

__version__ = "0.1.0"

__all__ = ["Irrep", "Irreps", "TensorFieldNetwork", "load", "__version__"]


def load(run_dir: Any, checkpoint: str = "best", device: Any = "cpu") -> Any:
    """The trained model of a run folder (see :func:`tfn.train.load`)."""
    from tfn.train import load as _load

    return _load(run_dir, checkpoint, device)
