"""PNG plots of a run: learning curves and task plots (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["learning_curves", "task_plots", "first_layer_radials", "RADIAL_REFERENCES"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _floats(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v, e = r.get(key, ""), r.get("epoch", "")
        if v not in ("", None) and e not in ("", None):
            xs.append(float(e) + 1)
            ys.append(float(v))
    return xs, ys


def learning_curves(rows: list[dict[str, str]], path: Path, task) -> None:
    """Training and validation loss, and the validation metrics, against the epoch."""
    plt = _plt()
    keys = sorted({k for r in rows for k in r})
    metric_keys = [
        k for k in keys if k.startswith("val") and k.endswith(("/acc", "/rel_error", "/rmse_ratio"))
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    for key, label in (("train/loss_epoch", "train"), ("val/loss", "val")):
        xs, ys = _floats(rows, key)
        if xs:
            ax.plot(xs, ys, marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(f"{task.name}: loss")
    ax.legend()
    ax = axes[1]
    for key in metric_keys:
        xs, ys = _floats(rows, key)
        if xs:
            ax.plot(xs, ys, marker=".", label=key)
    ax.set_xlabel("epoch")
    ax.set_title(f"{task.name}: validation metrics")
    if metric_keys and not any(k.endswith("/acc") for k in metric_keys):
        ax.set_yscale("log")
    if metric_keys:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Radial functions: the hook into the network
# ----------------------------------------------------------------------------------------------

#: Reference radial functions of the paper, by task and filter degree l.
RADIAL_REFERENCES: dict[str, dict[int, tuple[str, Any]]] = {
    "gravity": {1: ("-1/r^2", lambda r: -1.0 / r**2)},
    "inertia": {0: ("2/3 r^2", lambda r: 2.0 / 3.0 * r**2), 2: ("-r^2", lambda r: -(r**2))},
}


def first_layer_radials(net: torch.nn.Module, r: torch.Tensor) -> dict[int, torch.Tensor] | None:
    """The learned radial functions of the network's first convolution, by filter degree.

    The hook into :class:`tfn.nn.TensorFieldNetwork`: ``net.radial_functions(r)`` gives
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


def radial_plot(model, path: Path, r_min: float, r_max: float) -> dict[str, float]:
    """Learned radial functions of the first layer against the paper's references (each
    learned curve scaled by its best-fit factor). Returns the best fit residual per degree."""
    refs = RADIAL_REFERENCES.get(model.task.name, {})
    net = model.net
    p = next(net.parameters())
    r = torch.linspace(r_min, r_max, 200, dtype=p.dtype, device=p.device)
    curves = first_layer_radials(net, r)
    if not refs or curves is None:
        return {}
    plt = _plt()
    ls = [l for l in refs if l in curves]
    if not ls:
        return {}
    fig, axes = plt.subplots(1, len(ls), figsize=(5 * len(ls), 4), squeeze=False)
    out: dict[str, float] = {}
    rr = r.detach().cpu().double()
    for ax, l in zip(axes[0], ls):
        name, fn = refs[l]
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
        ax.set_title(f"{model.task.name}: first-layer radial functions, l={l}")
        ax.legend()
        out[f"radial_l{l}_fit_residual"] = fits[best][1]
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------------


def _confusion(model, clouds, path: Path, device) -> None:
    plt = _plt()
    task = model.task
    preds, batches = task.run(model.net, clouds, device)
    n = len(task.class_names)
    cm = torch.zeros(n, n, dtype=torch.long)
    for p, b in zip(preds, batches):
        for t, q in zip(b.targets["label"].long().tolist(), p.argmax(-1).tolist()):
            cm[t, q] += 1
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(cm.numpy(), cmap="Blues")
    ax.set_xticks(range(n), task.class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), task.class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7)
    acc = cm.diag().sum().item() / max(cm.sum().item(), 1)
    ax.set_title(f"tetris: rotated test shapes, accuracy {acc:.2%}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scatter(model, sets: dict[str, list], path: Path, device) -> None:
    plt = _plt()
    task = model.task
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.5), squeeze=False)
    for ax, (name, clouds) in zip(axes[0], sets.items()):
        preds, batches = task.run(model.net, clouds, device)
        p = torch.cat([x.reshape(-1) for x in preds]).cpu()
        y = torch.cat([b.targets[task.target].reshape(-1) for b in batches]).cpu()
        ax.scatter(y, p, s=2, alpha=0.4)
        lim = float(y.abs().max()) * 1.05
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=1)
        ax.set_xlabel(f"true {task.target} (components)")
        ax.set_ylabel("predicted")
        ax.set_title(f"{task.name}: {name} ({len(clouds)} clouds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def task_plots(model, sets: dict[str, list], out: Path, device) -> dict[str, float]:
    """Task plots into ``out``; returns numbers measured on the way (radial fits)."""
    name = model.task.name
    if name == "tetris":
        _confusion(model, sets["test"], out / "confusion.png", device)
        return {}
    _scatter(model, sets, out / "predictions.png", device)
    d = model.config.data
    if name == "gravity":
        return radial_plot(model, out / "radial.png", d.min_separation, 2 * d.box)
    return radial_plot(model, out / "radial.png", 0.05, d.box * 3**0.5)
