"""Plots tasks draw into their run folders (matplotlib, Agg backend, imported on use)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["pyplot", "parity_plot", "radial_plot", "first_layer_radials", "confusion_plot"]


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def parity_plot(
    panels: list[tuple[str, torch.Tensor, torch.Tensor]],
    path: Path,
    xlabel: str = "true",
    ylabel: str = "predicted",
) -> None:
    """Predicted against true values, one panel per ``(title, true, predicted)``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (title, y, p) in zip(axes[0], panels):
        y, p = y.detach().reshape(-1).cpu().double(), p.detach().reshape(-1).cpu().double()
        ax.scatter(y, p, s=2, alpha=0.4)
        lo = float(torch.minimum(y.min(), p.min())) if y.numel() else -1.0
        hi = float(torch.maximum(y.max(), p.max())) if y.numel() else 1.0
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def first_layer_radials(net: torch.nn.Module, r: torch.Tensor) -> dict[int, torch.Tensor] | None:
    """The learned radial functions of the network's first convolution, by filter degree.

    The hook into :class:`tfn.models.TensorFieldNetwork`: ``net.radial_functions(r)`` gives
    ``[(label, values [len(r), channels])]`` with labels ``"layer k: 0e x 1o -> 1o"`` (input
    irrep x filter irrep -> output irrep; ``"output: ..."`` for the output convolution).
    Returns ``{l: [len(r), k]}``: every radial function of the first convolution (layer 0, or
    the output convolution of a network without hidden layers) whose filter has degree ``l``;
    ``None`` if the network exposes none.
    """
    fn = getattr(net, "radial_functions", None)
    if fn is None:
        return None
    with torch.no_grad():
        entries = list(fn(r))
    if not entries:
        return None
    layers = [label.split(":")[0] for label, _ in entries]
    first = "layer 0" if "layer 0" in layers else layers[0]
    result: dict[int, list[torch.Tensor]] = {}
    for label, values in entries:
        name, _, path = label.partition(":")
        if name != first:
            continue
        try:
            filt = path.split("->")[0].split("x")[1].strip()
            l = int(filt[:-1])
        except (IndexError, ValueError):
            continue
        result.setdefault(l, []).append(values.reshape(len(r), -1))
    return {l: torch.cat(v, dim=1) for l, v in result.items()} or None


def _fit(curve: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """Best scale ``c`` with ``c * curve ~ ref`` and the relative residual."""
    c = float((curve * ref).sum() / (curve * curve).sum().clamp_min(1e-30))
    resid = float((c * curve - ref).norm() / ref.norm().clamp_min(1e-30))
    return c, resid


def radial_plot(
    net: torch.nn.Module,
    title: str,
    references: dict[int, tuple[str, Callable[[torch.Tensor], torch.Tensor]]],
    path: Path,
    r_min: float,
    r_max: float,
) -> dict[str, float]:
    """Learned radial functions of the first layer against reference curves (each learned
    curve scaled by its best-fit factor). Returns the best-fit residual per degree,
    ``{"radial_l1_fit_residual": ...}``."""
    p = next(net.parameters())
    r = torch.linspace(r_min, r_max, 200, dtype=p.dtype, device=p.device)
    curves = first_layer_radials(net, r)
    if not references or curves is None:
        return {}
    ls = [l for l in references if l in curves]
    if not ls:
        return {}
    plt = pyplot()
    fig, axes = plt.subplots(1, len(ls), figsize=(5 * len(ls), 4), squeeze=False)
    out: dict[str, float] = {}
    rr = r.detach().cpu().double()
    for ax, l in zip(axes[0], ls):
        name, fn = references[l]
        ref = fn(rr)
        cs = curves[l].detach().cpu().double()
        fits = [_fit(cs[:, j], ref) for j in range(cs.shape[1])]
        best = min(range(len(fits)), key=lambda j: fits[j][1])
        for j in range(cs.shape[1]):
            c, res = fits[j]
            ax.plot(
                rr,
                c * cs[:, j],
                lw=2.0 if j == best else 0.8,
                alpha=1.0 if j == best else 0.35,
                label=f"learned (best fit, residual {res:.3f})" if j == best else None,
            )
        ax.plot(rr, ref, "k--", lw=2, label=f"reference {name}")
        ax.set_xlabel("r")
        ax.set_title(f"{title}: first-layer radial functions, l={l}")
        ax.legend()
        out[f"radial_l{l}_fit_residual"] = fits[best][1]
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return out


def confusion_plot(
    true: torch.Tensor, predicted: torch.Tensor, class_names: list[str], path: Path, title: str
) -> Any:
    """A confusion matrix (counts) of class labels; returns the matrix."""
    plt = pyplot()
    n = len(class_names)
    cm = torch.zeros(n, n, dtype=torch.long)
    for t, q in zip(true.long().tolist(), predicted.long().tolist()):
        cm[t, q] += 1
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(cm.numpy(), cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7)
    acc = cm.diag().sum().item() / max(cm.sum().item(), 1)
    ax.set_title(f"{title}, accuracy {acc:.2%}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return cm
