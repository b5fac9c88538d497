"""Input checks shared by the graph builders and the models: one message for one problem.

Every check raises ``ValueError`` with a message that starts with ``where`` (the caller's
name) and names the offending point, cloud or edge, so that a bad input never turns into a
traceback from deep inside torch or a silent NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_points", "check_batch", "check_edge_lengths", "check_finite"]


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def check_batch(batch: Tensor | None, num_points: int, where: str = "") -> None:
    """``batch`` is ``None`` or a 1-d integer tensor of ``num_points`` non-negative cloud ids."""
    if batch is None:
        return
    p = _prefix(where)
    if not isinstance(batch, Tensor):
        raise ValueError(
            f"{p}batch must be a torch.Tensor of cloud ids, got {type(batch).__name__}"
        )
    if batch.dim() != 1 or batch.shape[0] != num_points:
        raise ValueError(
            f"{p}batch must have shape [{num_points}] (one cloud id per point), got {list(batch.shape)}"
        )
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise ValueError(f"{p}batch must be an integer tensor of cloud ids, got {batch.dtype}")
    if num_points and bool((batch < 0).any()):
        i = int(torch.nonzero(batch < 0)[0, 0])
        raise ValueError(f"{p}batch ids must be >= 0, got {int(batch[i])} for point {i}")


def check_finite(x: Tensor, what: str, where: str = "") -> None:
    """Every row of ``x`` is finite; otherwise name the first bad row."""
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        bad = ~torch.isfinite(x.detach().reshape(x.shape[0], -1)).all(-1)
        i = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"{_prefix(where)}{what} of point {i} are NaN or infinite: {x[i].detach().tolist()}"
        )


def check_points(pos: Tensor, batch: Tensor | None = None, where: str = "") -> None:
    """Positions ``[N, 3]`` (``N > 0``, real numbers, finite) and their cloud ids.

    Integer positions are accepted (callers cast them); complex or boolean ones are not.

    Example:
        >>> check_points(torch.zeros(2, 3))
        >>> check_points(torch.zeros(2, 2), where="net")
        Traceback (most recent call last):
        ...
        ValueError: net: pos must have shape [N, 3], got [2, 2]
    """
    p = _prefix(where)
    if not isinstance(pos, Tensor):
        raise ValueError(f"{p}pos must be a torch.Tensor, got {type(pos).__name__}")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"{p}pos must have shape [N, 3], got {list(pos.shape)}")
    if pos.shape[0] == 0:
        raise ValueError(f"{p}empty input: pos has no points")
    if pos.is_complex() or pos.dtype == torch.bool:
        raise ValueError(f"{p}pos must hold real coordinates, got {pos.dtype}")
    check_finite(pos, "coordinates", where)
    check_batch(batch, int(pos.shape[0]), where)


def check_edge_lengths(
    length: Tensor, edge_index: Tensor, min_distance: float = 1e-6, where: str = ""
) -> None:
    """No edge shorter than ``min_distance``: two points (or a point and an image) on top of
    each other have no direction, and their filters are undefined."""
    if length.numel() == 0:
        return
    short = length.detach() < min_distance
    if bool(short.any()):
        e = int(torch.nonzero(short)[0, 0])
        a, b = int(edge_index[1, e]), int(edge_index[0, e])
        what = (
            f"points {min(a, b)} and {max(a, b)} are"
            if a != b
            else f"point {a} and its periodic image are"
        )
        raise ValueError(
            f"{_prefix(where)}{what} on top of each other (distance {float(length[e].detach()):.3g} < {min_distance:g})"
        )
