"""Tensor products: the description of an operation (paths) apart from its execution (kernels).

Executors (:data:`EXECUTORS`): ``"eager"`` (PyTorch operations, any device) and ``"fused"``
(:mod:`tfn.ops.fused`: the convolution as one C++ pass on the CPU, operators
``torch.ops.tfn.tp_conv`` and ``torch.ops.tfn.tp_conv_backward``); ``"auto"`` picks the fused
one for CPU float32/float64 inputs when it compiled.
"""

from tfn.ops.edge_plan import EdgePlan
from tfn.ops.paths import (
    Path,
    TensorProductDescription,
    channelwise_paths,
    fully_connected_paths,
    reachable_irreps,
)
from tfn.ops.tensor_product import EXECUTORS, TensorProduct

__all__ = [
    "EXECUTORS",
    "EdgePlan",
    "Path",
    "TensorProduct",
    "TensorProductDescription",
    "channelwise_paths",
    "fully_connected_paths",
    "reachable_irreps",
]
