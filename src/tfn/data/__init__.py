"""Point clouds in batches, graphs (with periodic images) and neighbour lists."""

from tfn.data.batch import Batch, PointCloud, collate
from tfn.data.graph import Graph
from tfn.data.neighbors import (
    check_positions,
    edge_vectors,
    full_graph,
    neighbor_list,
    radius_graph,
)

__all__ = [
    "Batch",
    "Graph",
    "PointCloud",
    "collate",
    "check_positions",
    "edge_vectors",
    "full_graph",
    "neighbor_list",
    "radius_graph",
]
