"""The learning curves of a run (the task draws its own plots: ``Task.plots``)."""

from __future__ import annotations

from pathlib import Path

from tfn.tasks.plotting import pyplot

__all__ = ["learning_curves"]


def _epoch_minutes(rows: list[dict[str, str]]) -> dict[float, float]:
    """Training minutes at the end of each epoch (``time/train_minutes``), where logged."""
    minutes: dict[float, float] = {}
    for r in rows:
        v, e = r.get("time/train_minutes", ""), r.get("epoch", "")
        if v not in ("", None) and e not in ("", None):
            minutes[float(e)] = max(minutes.get(float(e), 0.0), float(v))
    return minutes


def _floats(
    rows: list[dict[str, str]], key: str, minutes: dict[float, float] | None = None
) -> tuple[list[float], list[float]]:
    """(x, y) of a logged value: x the epoch (1-based), or the training minutes."""
    xs, ys = [], []
    for r in rows:
        v, e = r.get(key, ""), r.get("epoch", "")
        if v not in ("", None) and e not in ("", None):
            xs.append(minutes[float(e)] if minutes else float(e) + 1)
            ys.append(float(v))
    return xs, ys


def learning_curves(rows: list[dict[str, str]], path: Path, task) -> None:
    """Training and validation loss, and the task's ``curve_metrics``, against the training
    time in minutes when every epoch logged it (a wall-clock budget is what a CPU run spends),
    else against the epoch."""
    plt = pyplot()
    keys = sorted({k for r in rows for k in r})
    wanted = tuple(f"/{m}" for m in task.curve_metrics)
    metric_keys = [k for k in keys if k.startswith("val") and k.endswith(wanted)] if wanted else []
    minutes = _epoch_minutes(rows)
    epochs = {float(r["epoch"]) for r in rows if r.get("epoch") not in ("", None)}
    if not epochs or not epochs <= minutes.keys():
        minutes = {}
    xlabel = "training time (minutes)" if minutes else "epoch"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    for key, label in (("train/loss_epoch", "train"), ("val/loss", "val")):
        xs, ys = _floats(rows, key, minutes)
        if xs:
            ax.plot(xs, ys, marker=".", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(f"{task.name}: loss")
    ax.legend()
    ax = axes[1]
    for key in metric_keys:
        xs, ys = _floats(rows, key, minutes)
        if xs:
            ax.plot(xs, ys, marker=".", label=key)
    ax.set_xlabel(xlabel)
    ax.set_title(f"{task.name}: validation metrics")
    if metric_keys and not any(k.endswith(("/acc", "/accuracy")) for k in metric_keys):
        ax.set_yscale("log")
    if metric_keys:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
