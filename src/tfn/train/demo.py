"""``tfn demo``: train Tetris from scratch, then check rotations and mirror images.

Prints the progress, the accuracy on randomly rotated and translated test shapes, the
measured equivariance error of the trained network (float64) and the mirror check.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

__all__ = ["demo", "DEMO_CONFIG"]

#: The demo's run configuration (the same experiment as ``configs/tetris.yaml``, sized to take
#: about a minute on 2 CPU cores).
DEMO_CONFIG: dict = {
    "seed": 0,
    "dtype": "float32",
    "data": {"name": "tetris", "train_repeat": 32, "num_val_rotations": 64, "num_rotations": 4000},
    "model": {"pool": "sum", "num_layers": 2},
    "optim": {"lr": 1e-2, "scheduler": "cosine", "min_lr": 1e-4},
    "trainer": {"max_epochs": 8, "enable_progress_bar": False},
}


def demo(out: str | Path | None = None, epochs: int | None = None, threads: int | None = None):
    """Train Tetris and print the checks; returns 0 (the exit code)."""
    from tfn.train.runner import train

    if threads is None:
        threads = min(int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    overrides = [f"num_threads={threads}"]
    if epochs is not None:
        overrides.append(f"trainer.max_epochs={epochs}")
    if out is None:
        out = Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    print("tfn demo: Tensor Field Network on Tetris (Thomas et al. 2018, sec. 4.1)")
    print(
        "  train: the 8 shapes in one orientation each; test: 500 random rotations + "
        "translations of each shape"
    )
    print(f"  run folder: {out}   torch threads: {threads}")
    t0 = time.time()
    result = train(DEMO_CONFIG, overrides, out=out, progress="lines")
    t_train = time.time() - t0
    m = result.metrics["metrics"]

    from tfn.train.loading import load

    model = load(result.run_dir)
    test = model.task.test_sets()["test"]
    oracle = _oracle(model, test[:: max(1, len(test) // 64)])

    print()
    print(f"done in {t_train:.0f} s (training + test evaluation)")
    print(
        f"  test accuracy on {m['test/num_clouds']} rotated+translated shapes: "
        f"{m['test/acc']:.2%}   (paper: 100%)"
    )
    detail = ", ".join(f"{k} {v:.1e}" for k, v in oracle.items())
    print(
        "  equivariance error of the trained network (float64, tfn.testing oracle, "
        f"max |f(g x) - D(g) f(x)| / max |f|): {max(oracle.values()):.1e} ({detail})"
    )
    print(
        f"  mirror check: mirrored chiral shapes classified as their mirror partner: "
        f"{m['test/mirror_flips_chirality']:.2%}; accuracy on all mirrored shapes "
        f"(chiral labels swapped): {m['test/mirror_acc']:.2%}"
    )
    print(f"  plots: {result.run_dir / 'plots'}   metrics: {result.run_dir / 'metrics.json'}")
    return 0


def _oracle(model, clouds) -> dict[str, float]:
    """The project's equivariance oracle (``tfn.testing``) on the trained network, in float64:
    relative errors under rotations, reflections (the pseudoscalar changes sign),
    translations and point permutations."""
    import copy

    from tfn.data import collate
    from tfn.testing import Global, equivariance_error

    net = copy.deepcopy(model.net).to(torch.float64).eval()
    b = collate(clouds).to(torch.float64)
    with torch.no_grad():
        return equivariance_error(
            net,
            ["cartesian_points", model.irreps_in, "point_index"],
            Global(model.irreps_out),
            [b.pos, b.features, b.batch],
        )
