"""Run folders: where a run lives, what makes a folder a run, and its merged metrics.

Layout::

    config.yaml             the resolved configuration (every option, defaults filled in)
    checkpoints/last.ckpt   end of every epoch, and where a run was stopped (the resume point)
    checkpoints/best.ckpt   best validation metric so far (its score kept across resumes)
    logs/version_K/         Lightning's CSV logger, one version per (re)start
    metrics.csv             all versions merged (rows after a resume point replace the old)
    metrics.json            test metrics of the best checkpoint (``tfn evaluate`` rewrites it)
    plots/*.png             learning curves and task plots
    ddp/rank*.json          with several processes: a hash of each rank's final weights
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from tfn.train.config import ConfigError
from tfn.train.files import atomic_write_text

__all__ = ["RunDir", "merge_metrics"]

_RESUME_MARK = "resumed_at.json"


class RunDir:
    """Paths of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    config = property(lambda self: self.path / "config.yaml")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last.ckpt")
    best = property(lambda self: self.path / "checkpoints" / "best.ckpt")
    logs = property(lambda self: self.path / "logs")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    metrics_json = property(lambda self: self.path / "metrics.json")
    plots = property(lambda self: self.path / "plots")

    def is_run(self) -> bool:
        return self.config.is_file()

    @staticmethod
    def default(task_name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{task_name}-{stamp}"
        path, k = base, 1
        while path.exists():
            path, k = Path(f"{base}-{k}"), k + 1
        return RunDir(path)

    def check_new(self) -> None:
        """Refuse a folder that holds a run, a non-empty folder that is not a run, and a file."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--out {p} is a file, not a folder; pick another --out")
        if self.is_run():
            raise ConfigError(
                f"{p} already holds a run; continue it with `tfn train --resume {p}` or pick "
                "another --out"
            )
        if p.is_dir() and any(p.iterdir()):
            raise ConfigError(
                f"--out {p} is a folder that is not empty and not a run; pick another --out "
                "(or empty it)"
            )

    def check_resumable(self, checkpoint: str = "last") -> Path:
        """The checkpoint to resume from; a clear error when the folder cannot be resumed."""
        p = self.path
        if not p.is_dir() or not self.is_run():
            raise ConfigError(f"cannot resume {p}: no config.yaml there (not a run folder)")
        path = (
            self.checkpoints / f"{checkpoint}.ckpt" if "/" not in checkpoint else Path(checkpoint)
        )
        if not path.is_file():
            others = (
                sorted(q.name for q in self.checkpoints.glob("*.ckpt"))
                if self.checkpoints.is_dir()
                else []
            )
            hint = (
                f"; it has {', '.join(others)}: resume from one with --checkpoint NAME"
                if others
                else "; no epoch finished before it stopped: start it again with tfn train CONFIG"
            )
            raise ConfigError(f"cannot resume {p}: no {path.name} in {self.checkpoints}{hint}")
        return path

    def next_log_version(self) -> int:
        versions = [
            int(q.name.split("_")[1])
            for q in self.logs.glob("version_*")
            if q.name.split("_")[1].isdigit()
        ]
        return max(versions, default=-1) + 1

    def mark_resume(self, version: int, global_step: int, epoch: int) -> None:
        """Record where version ``version`` of the logs resumed (for :func:`merge_metrics`)."""
        folder = self.logs / f"version_{version}"
        folder.mkdir(parents=True, exist_ok=True)
        mark = {"global_step": global_step, "epoch": epoch}
        atomic_write_text(folder / _RESUME_MARK, json.dumps(mark))


def _step(row: dict[str, str]) -> int | None:
    value = row.get("step")
    return int(float(value)) if value not in (None, "") else None


def merge_metrics(run_dir: str | Path) -> list[dict[str, str]]:
    """Merge ``logs/version_*/metrics.csv`` into ``metrics.csv`` and return the rows.

    A later version (a resumed run) replaces the rows an earlier one logged after the resume
    point (its checkpoint's global step): the work after that point was lost and redone, so
    every step appears once.
    """
    run = RunDir(run_dir)
    merged: list[dict[str, str]] = []
    versions = sorted(
        (q for q in run.logs.glob("version_*") if q.name.split("_")[1].isdigit()),
        key=lambda q: int(q.name.split("_")[1]),
    )
    for folder in versions:
        rows: list[dict[str, str]] = []
        if (folder / "metrics.csv").is_file():
            with open(folder / "metrics.csv", newline="") as f:
                rows = list(csv.DictReader(f))
        mark = folder / _RESUME_MARK
        if mark.is_file():
            cut = json.loads(mark.read_text())["global_step"]
            merged = [r for r in merged if (_step(r) is None or _step(r) < cut)]
        merged.extend(rows)
    keys: list[str] = []
    for r in merged:
        keys.extend(k for k in r if k not in keys)
    front = [k for k in ("epoch", "step") if k in keys]
    keys = front + sorted(k for k in keys if k not in front)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(merged)
    if run.path.is_dir():
        atomic_write_text(run.metrics_csv, buffer.getvalue())
    return merged
