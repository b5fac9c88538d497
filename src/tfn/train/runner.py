"""Training runs: one folder per run, resumable, evaluated at the end.

Layout of a run folder::

    config.yaml             the resolved configuration (every option, defaults filled in)
    checkpoints/last.ckpt   saved at the end of every epoch (resume point)
    checkpoints/best.ckpt   best validation metric so far
    logs/version_K/         Lightning's CSV logger, one version per (re)start
    metrics.csv             all versions merged (epochs re-run after a resume replace the old)
    metrics.json            test metrics of the best checkpoint (``tfn evaluate`` rewrites it)
    plots/*.png             learning curves and task plots
    ddp/rank*.json          with several processes: a hash of each rank's final weights
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Config, ConfigError, build_config, config_to_dict, load_yaml, save_config

__all__ = [
    "RunResult",
    "train",
    "evaluate",
    "load",
    "TrainedModel",
    "merge_metrics",
    "params_hash",
]

_RUN_DIR_ENV = "TFN_RUN_DIR"


def _is_launched_child() -> bool:
    """True in the extra processes that Lightning's ``ddp`` launcher starts (rank > 0)."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (
        ".*does not have many workers.*",
        ".*Checkpoint directory .* exists and is not empty.*",
        ".*The number of training batches .* is smaller than the logging interval.*",
        ".*Experiment logs directory .* exists.*",
        ".*You are using `torch.load` with `weights_only=False`.*",
        ".*Found .* module.* in eval mode at the start of training.*",
        ".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
        # validation metrics are all-reduced by hand before logging
        ".*when logging on epoch level in distributed setting.*",
        ".*Grad strides do not match bucket view strides.*",
    ):
        warnings.filterwarnings("ignore", message=msg)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any] | None
    interrupted: bool = False


def params_hash(module: torch.nn.Module) -> str:
    """SHA-256 of all parameters (in order, as float64 bytes)."""
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


def _default_run_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.data.name}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def _next_log_version(run_dir: Path) -> int:
    logs = run_dir / "logs"
    versions = [
        int(p.name.split("_")[1]) for p in logs.glob("version_*") if p.name.split("_")[1].isdigit()
    ]
    return max(versions, default=-1) + 1


def merge_metrics(run_dir: str | Path) -> list[dict[str, str]]:
    """Merge ``logs/version_*/metrics.csv`` into ``metrics.csv``: a later version (a resumed
    run) replaces the rows of the epochs it re-ran. Returns the merged rows."""
    run_dir = Path(run_dir)
    parts = []
    for p in sorted(
        (run_dir / "logs").glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    ):
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            parts.append(rows)
    merged: list[dict[str, str]] = []
    for rows in parts:
        epochs = [int(r["epoch"]) for r in rows if r.get("epoch") not in (None, "")]
        if not epochs:
            continue
        first = min(epochs)
        merged = [r for r in merged if r.get("epoch") in (None, "") or int(r["epoch"]) < first]
        merged.extend(rows)
    keys: list[str] = []
    for r in merged:
        keys.extend(k for k in r if k not in keys)
    front = [k for k in ("epoch", "step") if k in keys]
    keys = front + sorted(k for k in keys if k not in front)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(merged)
    return merged


def _callbacks(run_dir: Path, task, progress: str, extra: list) -> list:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from .callbacks import PrintProgress, RankHash

    cbs = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=f"val/{task.monitor}",
            mode=task.mode,
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        LearningRateMonitor(logging_interval="epoch"),
        RankHash(run_dir),
    ]
    if progress == "lines":
        cbs.append(PrintProgress())
    return cbs + list(extra)


def train(
    config: Config | dict | str | Path | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    callbacks: list | None = None,
    progress: str = "bar",
    evaluate_at_end: bool = True,
) -> RunResult:
    """Train a model; returns the run folder and its final test metrics.

    Args:
        config: a YAML file, a raw dict or a :class:`Config` (not with ``resume``).
        overrides: ``key=value`` strings applied on top (dotted keys).
        out: the run folder (default ``runs/<dataset>-<time>``); must not hold a run already.
        resume: a run folder to continue from its ``checkpoints/last.ckpt`` (with its
            ``config.yaml`` plus ``overrides``, e.g. a larger ``trainer.max_epochs``).
        callbacks: extra Lightning callbacks.
        progress: ``"bar"`` (Lightning's progress bar, if the config enables it), ``"lines"``
            (one printed line per epoch) or ``"none"``.
        evaluate_at_end: evaluate the best checkpoint on the test sets and write
            ``metrics.json`` and the plots.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from .module import TFNDataModule, TFNModule

    _quiet_lightning()
    child = _is_launched_child()
    if resume is not None:
        if config is not None:
            raise ConfigError("give either a config or resume=RUN_DIR, not both")
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"cannot resume {run_dir}: no config.yaml there (not a run folder)")
        cfg = build_config(load_yaml(run_dir / "config.yaml"), overrides)
    else:
        if isinstance(config, Config):
            cfg = build_config(config_to_dict(config), overrides)
        elif isinstance(config, dict):
            cfg = build_config(config, overrides)
        elif config is None:
            raise ConfigError("no config given")
        else:
            cfg = build_config(load_yaml(config), overrides)
        if child and os.environ.get(_RUN_DIR_ENV):
            run_dir = Path(os.environ[_RUN_DIR_ENV])
        else:
            run_dir = Path(out) if out is not None else _default_run_dir(cfg)
            if (run_dir / "config.yaml").exists():
                raise ConfigError(
                    f"{run_dir} already holds a run; continue it with "
                    f"`tfn train --resume {run_dir}` or pick another --out"
                )
    # Extra DDP processes re-run this command line: make them use the same folder.
    os.environ[_RUN_DIR_ENV] = str(run_dir.resolve())
    if not child:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = TFNModule(config_to_dict(cfg))
    datamodule = TFNDataModule(module)

    t = cfg.trainer
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume is not None and last.is_file() else None
    logger = CSVLogger(
        run_dir,
        name="logs",
        version=_next_log_version(run_dir) if not child else None,
        flush_logs_every_n_steps=t.log_every_n_steps,
    )
    kwargs: dict[str, Any] = {
        "max_epochs": t.max_epochs,
        "accelerator": t.accelerator,
        "devices": t.devices,
        "strategy": t.strategy,
        "num_nodes": t.num_nodes,
        "gradient_clip_val": t.gradient_clip_val,
        "log_every_n_steps": t.log_every_n_steps,
        "check_val_every_n_epoch": t.check_val_every_n_epoch,
        "enable_progress_bar": t.enable_progress_bar and progress == "bar",
        "deterministic": t.deterministic,
    }
    for name in ("limit_train_batches", "limit_val_batches"):
        if getattr(t, name) is not None:
            kwargs[name] = getattr(t, name)
    trainer = pl.Trainer(
        default_root_dir=run_dir,
        logger=logger,
        callbacks=_callbacks(run_dir, module.task, progress, callbacks or []),
        enable_model_summary=False,
        **kwargs,
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning's graceful shutdown after Ctrl-C
        if not child:
            merge_metrics(run_dir)
            print(f"\ninterrupted: continue with `tfn train --resume {run_dir}`", file=sys.stderr)
        raise
    if not trainer.is_global_zero or child:
        return RunResult(run_dir, None)
    merge_metrics(run_dir)
    metrics = None
    if evaluate_at_end:
        metrics = evaluate(run_dir, write=True, plots=True)
    return RunResult(run_dir, metrics)


# ----------------------------------------------------------------------------------------------
# Loading and evaluation (plain torch: no Lightning needed)
# ----------------------------------------------------------------------------------------------


class TrainedModel(torch.nn.Module):
    """A trained network with its config and task.

    ``model(pos, features, batch)`` returns the network output in the flat irreps layout
    (``model.irreps_out``); ``model.predict(...)`` returns the task's prediction (class logits
    for tetris, accelerations ``[N, 3]`` for gravity, inertia tensors ``[C, 3, 3]``).
    """

    def __init__(self, net: torch.nn.Module, cfg: Config, task, info: dict[str, Any]):
        super().__init__()
        self.net = net
        self.config = cfg
        self.task = task
        self.irreps_in = task.irreps_in
        self.irreps_out = task.irreps_out
        self.info = info

    def forward(self, pos: torch.Tensor, features: torch.Tensor, batch: torch.Tensor | None = None):
        return self.net(pos, features, batch)

    def predict(self, pos: torch.Tensor, features: torch.Tensor, batch: torch.Tensor | None = None):
        return self.task.predict(self.net(pos, features, batch), batch)


def _find_checkpoint(run_dir: Path, checkpoint: str | Path) -> Path:
    if Path(checkpoint).suffix == ".ckpt" and Path(checkpoint).is_file():
        return Path(checkpoint)
    ckdir = run_dir / "checkpoints"
    name = str(checkpoint)
    path = ckdir / f"{name}.ckpt"
    if path.is_file():
        return path
    if name == "best" and (ckdir / "last.ckpt").is_file():
        return ckdir / "last.ckpt"  # no validation metric was ever logged
    raise FileNotFoundError(f"no checkpoint {name!r} in {ckdir}")


def load(
    run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> TrainedModel:
    """The trained model of a run folder (``best`` or ``last`` checkpoint, or a ``.ckpt``
    path), in eval mode, callable as ``model(pos, features, batch)``."""
    from .module import build_network
    from .tasks import get_task

    run_dir = Path(run_dir)
    path = _find_checkpoint(run_dir, checkpoint)
    ckpt = torch.load(path, map_location=device, weights_only=True)
    cfg = build_config(ckpt["hyper_parameters"]["config"])
    task = get_task(cfg)
    net = build_network(cfg, task)
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    info = {"checkpoint": str(path), "epoch": ckpt.get("epoch"), "step": ckpt.get("global_step")}
    return TrainedModel(net, cfg, task, info).to(device).eval()


def _device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str | torch.device | None = None,
    write: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Test metrics of a run's checkpoint on freshly generated (same seed) test sets.

    Writes ``metrics.json`` (and the plots) into the run folder when ``write``.
    """
    from .plots import learning_curves, task_plots
    from .tasks import PAPER

    run_dir = Path(run_dir)
    dev = _device(device)
    model = load(run_dir, checkpoint, device=dev)
    task = model.task
    t0 = time.time()
    metrics: dict[str, float] = {}
    sets = task.test_sets()
    for name, clouds in sets.items():
        for k, v in task.evaluate(model.net, clouds, dev).items():
            metrics[f"{name}/{k}"] = v
        metrics[f"{name}/num_clouds"] = len(clouds)
    for k, v in task.extra_test_metrics(model.net, dev).items():
        metrics[f"test/{k}"] = v
    if plots:
        out = run_dir / "plots"
        out.mkdir(exist_ok=True)
        if (run_dir / "logs").is_dir():
            learning_curves(merge_metrics(run_dir), out / "learning_curves.png", task)
        for k, v in task_plots(model, sets, out, dev).items():
            metrics[f"test/{k}"] = v
    result = {
        "dataset": task.name,
        "checkpoint": Path(model.info["checkpoint"]).name,
        "epoch": model.info["epoch"],
        "global_step": model.info["step"],
        "metrics": metrics,
        "paper": PAPER[task.name],
        "eval_seconds": round(time.time() - t0, 2),
    }
    if write:
        (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
