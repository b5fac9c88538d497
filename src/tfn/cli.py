"""The ``tfn`` command line: ``tfn train``, ``tfn evaluate``, ``tfn demo``.

Examples::

    tfn train configs/tetris.yaml
    tfn train configs/gravity.yaml trainer.max_epochs=5 model.num_layers=2 --out runs/g1
    tfn train --resume runs/g1 trainer.max_epochs=10
    tfn evaluate runs/g1
    tfn demo
"""

from __future__ import annotations

import argparse
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
            text = f"{v:.2%}" if k.endswith(("acc", "chirality")) else f"{v:.6g}"
        else:
            text = str(v)
        lines.append(f"  {k:<{width}}  {text}")
    lines.append(f"paper: {result['paper']}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfn", description="Tensor Field Networks: train, evaluate, demo."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train from CONFIG.yaml with key=value overrides (dotted keys, e.g. "
        "trainer.max_epochs=5 model.num_layers=2), or continue a run with --resume DIR.",
    )
    t.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value")
    t.add_argument("--out", help="run folder (default runs/<dataset>-<time>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.ckpt")
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

    d = sub.add_parser("demo", help="train Tetris from scratch (about a minute on a laptop)")
    d.add_argument("--out", help="run folder (default runs/demo-<time>)")
    d.add_argument("--epochs", type=int, default=None, help="training epochs")
    d.add_argument("--threads", type=int, default=None, help="torch threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tfn.train.config import ConfigError

    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "demo":
            from tfn.train.demo import demo

            return demo(out=args.out, epochs=args.epochs, threads=args.threads)
    except ConfigError as e:
        print(f"tfn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"tfn {args.command}: error: {e}", file=sys.stderr)
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
        if not items or "=" in items[0]:
            raise ConfigError("missing CONFIG.yaml (e.g. tfn train configs/tetris.yaml)")
        config, items = items[0], items[1:]
    bad = [x for x in items if "=" not in x]
    if bad:
        raise ConfigError(f"expected key=value overrides after the config, got {bad[0]!r}")
    result = train(config, items, out=args.out, resume=args.resume, progress=args.progress)
    if result.metrics is not None:
        print(f"run folder: {result.run_dir}")
        print(format_metrics(result.metrics))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tfn.train.runner import evaluate

    result = evaluate(
        Path(args.run_dir), checkpoint=args.checkpoint, device=args.device, plots=not args.no_plots
    )
    print(format_metrics(result))
    print(f"written: {Path(args.run_dir) / 'metrics.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
