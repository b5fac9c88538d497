"""Tensor products: the description of an operation (paths) apart from its execution (kernels)."""

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
