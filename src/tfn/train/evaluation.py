"""Test metrics of a trained run, written to ``metrics.json`` with its plots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from tfn.train.files import atomic_write_text
from tfn.train.loading import load
from tfn.train.rundir import RunDir, merge_metrics

__all__ = ["evaluate", "default_device"]


def default_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def metrics_file(run: RunDir, checkpoint_name: str) -> Path:
    """``metrics.json`` for the run's ``best`` and ``last`` checkpoints; ``metrics_NAME.json``
    for any other (snapshots such as ``minutes_10.ckpt``), so none overwrites the run's own."""
    stem = Path(checkpoint_name).stem
    if stem in ("best", "last"):
        return run.metrics_json
    return run.metrics_json.with_name(f"metrics_{stem}.json")


def evaluate(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str | torch.device | None = None,
    write: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Test metrics of a run's checkpoint on its test sets (regenerated or reloaded from the
    config). Writes ``metrics.json`` (and the plots) into the run folder when ``write``."""
    from tfn.train.plots import learning_curves

    run = RunDir(run_dir)
    dev = default_device(device)
    model = load(run.path, checkpoint, device=dev)
    task = model.task
    t0 = time.time()
    metrics: dict[str, Any] = {}
    sets = task.test_sets()
    for name, items in sets.items():
        for k, v in task.evaluate(model.net, items, dev).items():
            metrics[f"{name}/{k}"] = v
        metrics[f"{name}/num_clouds"] = len(items)
    for k, v in task.extra_test_metrics(model.net, dev).items():
        metrics[f"test/{k}"] = v
    if plots:
        run.plots.mkdir(parents=True, exist_ok=True)
        if run.logs.is_dir():
            learning_curves(merge_metrics(run.path), run.plots / "learning_curves.png", task)
        for k, v in task.plots(model.net, sets, run.plots, dev).items():
            metrics[f"test/{k}"] = v
    result = {
        "dataset": task.name,
        "checkpoint": Path(model.info["checkpoint"]).name,
        "epoch": model.info["epoch"],
        "global_step": model.info["step"],
        "metrics": metrics,
        "paper": task.paper,
        "eval_seconds": round(time.time() - t0, 2),
    }
    if write:
        atomic_write_text(
            metrics_file(run, result["checkpoint"]), json.dumps(result, indent=2) + "\n"
        )
    return result
