"""tfn: Tensor Field Networks, equivariant to 3D rotations, reflections and translations.

The layers, from the maths up:

* :mod:`tfn.so3`: irreps, spherical harmonics, Clebsch-Gordan coefficients, Wigner D, rotations;
* :mod:`tfn.data`: point clouds in batches and neighbour lists; :mod:`tfn.datasets`: tasks;
* :mod:`tfn.ops`: tensor products (descriptions and kernels);
* :mod:`tfn.nn`: radial functions, convolution, self-interaction, nonlinearities, the network;
* :mod:`tfn.testing`: the equivariance oracle;
* :mod:`tfn.train`: training, evaluation and :func:`tfn.load` (needs ``tfn[train]``).

Example:
    >>> import torch, tfn
    >>> net = tfn.TensorFieldNetwork("1x0e", "1o", irreps_hidden="8x0e + 4x1o", num_layers=1)
    >>> net(torch.randn(4, 3), torch.ones(4, 1)).shape
    torch.Size([4, 3])
"""

from typing import Any

from tfn.nn.network import TensorFieldNetwork
from tfn.so3.irreps import Irrep, Irreps

__version__ = "0.1.0"

__all__ = ["Irrep", "Irreps", "TensorFieldNetwork", "load", "__version__"]


def load(run_dir: Any, checkpoint: str = "best", device: Any = "cpu") -> Any:
    """The trained model of a run folder (see :func:`tfn.train.load`)."""
    from tfn.train import load as _load

    return _load(run_dir, checkpoint, device)
