"""The ``tfn`` command line.

Examples::

    tfn train configs/tetris.yaml
    tfn train configs/gravity.yaml trainer.max_epochs=5 --out runs/g1 model.num_layers=2
    tfn train --resume runs/g1 trainer.max_epochs=10
    tfn evaluate runs/g1
    tfn tasks
    tfn demo

Errors in what the user typed (configs, paths, checkpoints, models that cannot be built, data
that cannot be used) are one line on stderr and exit code 2; ``TFN_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["main", "format_metrics"]


def format_metrics(result: dict[str, Any]) -> str:
    """A readable block of a ``metrics.json`` result."""
    lines = [
        f"dataset: {result['dataset']}   checkpoint: {result['checkpoint']} "
        f"(epoch {result['epoch']}, step {result['global_step']})"
    ]
    width = max((len(k) for k in result["metrics"]), default=0)
    for k, v in result["metrics"].items():
        if isinstance(v, float):
            text = f"{v:.2%}" if k.endswith(("acc", "chirality", "accuracy")) else f"{v:.6g}"
        else:
            text = str(v)
        lines.append(f"  {k:<{width}}  {text}")
    if result.get("paper"):
        lines.append(f"paper: {result['paper']}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line that says what is wrong (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    p = _Parser(prog="tfn", description="Tensor Field Networks: train, evaluate, demo.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train from CONFIG.yaml with key=value overrides (dotted keys, e.g. "
        "trainer.max_epochs=5 model.num_layers=2; anywhere on the line), or continue a run "
        "with --resume DIR.",
    )
    t.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value")
    t.add_argument("--out", help="run folder (default runs/<task>-<time>); new or empty")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.ckpt")
    t.add_argument(
        "--checkpoint",
        default="last",
        help="with --resume: the checkpoint to continue from (last, the default, or best)",
    )
    t.add_argument(
        "--progress",
        choices=["bar", "lines", "none"],
        default="bar",
        help="progress display: Lightning's bar, one line per epoch, or none",
    )

    e = sub.add_parser("evaluate", help="re-evaluate a run's best checkpoint on its test sets")
    e.add_argument("run_dir", metavar="DIR")
    e.add_argument("--checkpoint", default="best", help="best (default), last or a .ckpt path")
    e.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    e.add_argument("--no-plots", action="store_true", help="do not redraw the plots")

    sub.add_parser("tasks", help="list the tasks (values of data.name)")

    data = sub.add_parser("data", help="make data sets (molecular dynamics with GFN2-xTB)")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    g = data_sub.add_parser(
        "md",
        help="an MD17-style trajectory: xTB energies and forces along Langevin dynamics",
        description="Embed a molecule (an MD17 name or any SMILES), relax it with GFN2-xTB, "
        "equilibrate, then run Langevin dynamics (0.5 fs steps) keeping a frame every --stride "
        "steps, with energies (eV) and forces (eV/A) in extxyz. Seeded; an interrupted run "
        "continues where it stopped. Needs tfn[md].",
    )
    g.add_argument("molecule", metavar="NAME_OR_SMILES")
    g.add_argument("--frames", type=int, required=True, help="frames in the file at the end")
    g.add_argument("--temperature", type=float, default=500.0, help="K (default 500)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, metavar="FILE.extxyz")
    g.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    g.add_argument("--stride", type=int, default=None, help="steps between frames")
    g.add_argument("--equilibration", type=int, default=None, help="steps before the first frame")
    g.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    g.add_argument("--no-progress", action="store_true")

    m = sub.add_parser(
        "md",
        help="molecular dynamics with a trained energy model (ASE)",
        description="Run NVE (velocity Verlet) or Langevin dynamics from a structure with the "
        "model of a run folder through tfn.ase.TFNCalculator; writes the trajectory and a CSV "
        "log of energies and temperature, prints the speed and the energy drift.",
    )
    m.add_argument("run_dir", metavar="RUN")
    m.add_argument("--atoms", required=True, metavar="START.xyz", help="starting structure")
    m.add_argument("--ensemble", choices=["nve", "langevin"], default="nve")
    m.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    m.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    m.add_argument("--steps", type=int, required=True)
    m.add_argument("--out", required=True, metavar="TRAJ", help=".extxyz or .traj")
    m.add_argument("--interval", type=int, default=10, help="steps between saved frames")
    m.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--device", default=None)
    m.add_argument("--dtype", choices=["float32", "float64"], default=None)
    m.add_argument("--no-progress", action="store_true")

    d = sub.add_parser("demo", help="train Tetris from scratch (about a minute on a laptop)")
    d.add_argument("--out", help="run folder (default runs/demo-<time>)")
    d.add_argument("--epochs", type=int, default=None, help="training epochs")
    d.add_argument("--threads", type=int, default=None, help="torch threads")
    return p, {"train": t}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, commands = _parser()
    if argv and argv[0] in commands:
        # Options and key=value overrides in any order (argparse cannot intermix positionals
        # and options below a subcommand by itself).
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
    else:
        args = parser.parse_args(argv)
    from tfn.train.checkpoints import CheckpointError
    from tfn.train.config import ConfigError

    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "tasks":
            return _tasks()
        if args.command == "data":
            return _data(args)
        if args.command == "md":
            return _md(args)
        if args.command == "demo":
            from tfn.train.demo import demo

            return demo(out=args.out, epochs=args.epochs, threads=args.threads)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, ImportError) as e:
        if os.environ.get("TFN_DEBUG"):  # the whole traceback, for bug reports
            raise
        message = " ".join(str(e).split())
        print(f"tfn {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover


def _train(args: argparse.Namespace) -> int:
    from tfn.train.config import ConfigError
    from tfn.train.runner import train

    items = list(args.args)
    if args.resume:
        config = None
        if args.out:
            raise ConfigError("--out cannot be used with --resume (the run folder is DIR)")
    else:
        configs = [x for x in items if "=" not in x]
        if not configs:
            raise ConfigError("missing CONFIG.yaml (e.g. tfn train configs/tetris.yaml)")
        config = configs[0]
        items.remove(config)
    bad = [x for x in items if "=" not in x]
    if bad:
        raise ConfigError(f"expected key=value overrides besides the config, got {bad[0]!r}")
    result = train(
        config,
        items,
        out=args.out,
        resume=args.resume,
        progress=args.progress,
        checkpoint=args.checkpoint,
    )
    if result.metrics is not None:
        print(f"run folder: {result.run_dir}")
        print(format_metrics(result.metrics))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tfn.train.evaluation import evaluate, metrics_file
    from tfn.train.rundir import RunDir

    result = evaluate(
        Path(args.run_dir), checkpoint=args.checkpoint, device=args.device, plots=not args.no_plots
    )
    print(format_metrics(result))
    print(f"written: {metrics_file(RunDir(args.run_dir), result['checkpoint'])}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from tfn.datasets.md import generate_md

    try:
        return _generate(args, generate_md)
    except KeyboardInterrupt:  # the state is saved: the same command continues
        print(f"\ninterrupted: run the same command again to continue {args.out}", file=sys.stderr)
        return 130
    except RuntimeError as e:  # xTB failed; the frames so far are kept
        print(f"tfn data md: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


def _generate(args: argparse.Namespace, generate_md) -> int:
    kwargs: dict[str, Any] = {}
    if args.stride is not None:
        kwargs["stride"] = args.stride
    if args.equilibration is not None:
        kwargs["equilibration_steps"] = args.equilibration
    out = generate_md(
        args.molecule,
        args.out,
        frames=args.frames,
        temperature=args.temperature,
        seed=args.seed,
        timestep_fs=args.timestep,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        **kwargs,
    )
    print(f"written: {out}")
    return 0


def _md(args: argparse.Namespace) -> int:
    from tfn.interop.dynamics import read_start, run_md

    result = run_md(
        args.run_dir,
        read_start(args.atoms),
        ensemble=args.ensemble,
        temperature=args.temperature,
        timestep_fs=args.timestep,
        steps=args.steps,
        out=args.out,
        interval=args.interval,
        friction_per_fs=args.friction,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
    )
    print(
        f"{result.steps} steps in {result.seconds:.1f} s ({result.steps_per_second:.1f} steps/s); "
        f"total-energy drift {result.drift_mev_per_atom_ps:+.3f} meV/atom/ps; max temperature "
        f"{result.max_temperature:.0f} K; shortest distance {result.min_distance:.3f} A"
    )
    print(f"written: {result.trajectory} and {result.log}")
    return 0


def _tasks() -> int:
    from tfn.tasks import available_tasks, get_task

    for name in available_tasks():
        doc = (get_task(name).__module__ and sys.modules[get_task(name).__module__].__doc__) or ""
        print(f"{name:<20} {doc.strip().splitlines()[0] if doc.strip() else ''}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
