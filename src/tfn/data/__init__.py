"""Point clouds in batches and neighbour lists."""

from tfn.data.graph import Batch, PointCloud, collate
from tfn.data.neighbors import check_positions, edge_vectors, full_graph, radius_graph

__all__ = [
    "Batch",
    "PointCloud",
    "collate",
    "check_positions",
    "edge_vectors",
    "full_graph",
    "radius_graph",
]
