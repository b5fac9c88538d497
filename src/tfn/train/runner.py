"""Training runs: validate everything first, then create the folder, train, evaluate.

Nothing is written before the config, the data and the model have been built: a run that
cannot start leaves no folder behind (and a failed ``--resume`` changes nothing in the run it
was asked to continue). Stopped runs (Ctrl-C, SIGTERM, ``trainer.max_time``) keep their
``last.ckpt`` and continue with ``tfn train --resume DIR``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfn.train.checkpoints import RunCheckpoints, StopOnSignal, read_checkpoint
from tfn.train.config import (
    Config,
    ConfigError,
    build_config,
    config_to_dict,
    load_yaml,
    save_config,
)
from tfn.train.distributed import RUN_DIR_ENV, RankHash, is_launched_child
from tfn.train.evaluation import evaluate
from tfn.train.module import TFNModule, apply_threads, quiet_lightning
from tfn.train.rundir import RunDir, merge_metrics

__all__ = ["RunResult", "train"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any] | None
    interrupted: bool = False


def _config(config: Config | dict | str | Path | None, overrides: list[str] | None) -> Config:
    if isinstance(config, Config):
        return build_config(config_to_dict(config), overrides)
    if isinstance(config, dict):
        return build_config(config, overrides)
    if config is None:
        raise ConfigError("no config given")
    return build_config(load_yaml(config), overrides)


def _build_module(cfg: Config) -> TFNModule:
    """The module of a config; model and data errors become one-line ConfigErrors."""
    try:
        module = TFNModule(config_to_dict(cfg))
        module.task.check_data()
        return module
    except (ConfigError, FileNotFoundError, ImportError):
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"cannot build the model: {' '.join(str(error).split())}") from None


def train(
    config: Config | dict | str | Path | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    callbacks: list | None = None,
    progress: str = "bar",
    evaluate_at_end: bool = True,
    checkpoint: str = "last",
) -> RunResult:
    """Train a model; returns the run folder and its final test metrics.

    Args:
        config: a YAML file, a raw dict or a :class:`Config` (not with ``resume``).
        overrides: ``key=value`` strings applied on top (dotted keys).
        out: the run folder (default ``runs/<task>-<time>``): new, or an empty folder.
        resume: a run folder to continue from its ``checkpoints/last.ckpt`` (with its
            ``config.yaml`` plus ``overrides``, e.g. a larger ``trainer.max_epochs``).
        callbacks: extra Lightning callbacks.
        progress: ``"bar"`` (Lightning's progress bar, if the config enables it), ``"lines"``
            (one printed line per epoch) or ``"none"``.
        evaluate_at_end: evaluate the best checkpoint on the test sets and write
            ``metrics.json`` and the plots.
        checkpoint: with ``resume``, the checkpoint to continue from (``last`` or ``best``).
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    from tfn.train.callbacks import PrintProgress
    from tfn.train.data import TFNDataModule

    quiet_lightning()
    child = is_launched_child()
    ckpt_path: Path | None = None
    if resume is not None:
        if config is not None:
            raise ConfigError("give either a config or resume=RUN_DIR, not both")
        run = RunDir(resume)
        ckpt_path = run.check_resumable(checkpoint)
        cfg = build_config(load_yaml(run.config), overrides)
        state = read_checkpoint(ckpt_path)  # a truncated file fails here, before any change
        resumed_at = (int(state.get("global_step", 0)), int(state.get("epoch", 0)))
        del state
    else:
        cfg = _config(config, overrides)
        if child and os.environ.get(RUN_DIR_ENV):
            run = RunDir(os.environ[RUN_DIR_ENV])
        else:
            run = RunDir(out) if out is not None else RunDir.default(cfg.data.name)
            run.check_new()

    apply_threads(cfg.num_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = _build_module(cfg)
    cfg, task = module.cfg, module.task  # the config as resolved by the task
    datamodule = TFNDataModule(task)

    # Everything is valid: now the folder may change.
    os.environ[RUN_DIR_ENV] = str(run.path.resolve())  # extra DDP processes use the same one
    t = cfg.trainer
    version = None
    if not child:
        run.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.config)
        version = run.next_log_version()
        if ckpt_path is not None:
            run.mark_resume(version, *resumed_at)
    logger = CSVLogger(
        run.path, name="logs", version=version, flush_logs_every_n_steps=t.log_every_n_steps
    )
    stop = StopOnSignal()
    cbs = [
        RunCheckpoints(run.checkpoints, task.monitor, task.monitor_goal, stop, t.snapshot_minutes),
        LearningRateMonitor(logging_interval="epoch"),
        RankHash(run.path),
    ]
    if progress == "lines":
        cbs.append(PrintProgress(task.progress_metrics))
    if t.snapshot_minutes and t.max_time is None:
        from lightning.pytorch.callbacks import Timer

        cbs.append(Timer(duration=None, verbose=False))  # snapshots count training time by it
    kwargs: dict[str, Any] = {
        "max_epochs": t.max_epochs,
        "max_time": t.max_time,
        "accelerator": t.accelerator,
        "devices": t.devices,
        "strategy": t.strategy,
        "num_nodes": t.num_nodes,
        "gradient_clip_val": t.gradient_clip_val,
        "log_every_n_steps": t.log_every_n_steps,
        "check_val_every_n_epoch": t.check_val_every_n_epoch,
        "enable_progress_bar": t.enable_progress_bar and progress == "bar",
        "deterministic": t.deterministic,
        # Tasks with forces take derivatives in validation too: no inference mode there.
        "inference_mode": not task.needs_grad,
    }
    for name in ("limit_train_batches", "limit_val_batches"):
        if getattr(t, name) is not None:
            kwargs[name] = getattr(t, name)
    trainer = pl.Trainer(
        default_root_dir=run.path,
        logger=logger,
        callbacks=cbs + list(callbacks or []),
        enable_model_summary=False,
        enable_checkpointing=True,  # by RunCheckpoints (Lightning then adds none of its own)
        **kwargs,
    )
    try:
        with stop:
            trainer.fit(
                module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None
            )
    except SystemExit as exit_:  # Ctrl-C / SIGTERM: last.ckpt is saved, say how to go on
        if not child:
            merge_metrics(run.path)
            saved = run.last.is_file()
            hint = (
                f"continue with `tfn train --resume {run.path}`" if saved else "no epoch was saved"
            )
            print(f"\ninterrupted: {hint}", file=sys.stderr)
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        code = 143 if isinstance(exit_, SIGTERMException) else exit_.code
        raise SystemExit(code if isinstance(code, int) else 1) from None
    if not trainer.is_global_zero or child:
        return RunResult(run.path, None)
    merge_metrics(run.path)
    if module.fitted and progress != "none":
        fitted = ", ".join(f"{k}: {v}" for k, v in module.fitted.items())
        print(f"fitted from the training data: {fitted}", flush=True)
    metrics = None
    if evaluate_at_end:
        metrics = evaluate(run.path, write=True, plots=True)
    return RunResult(run.path, metrics)
