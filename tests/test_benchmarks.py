"""The benchmark scripts run end to end (tiny sizes; no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

CASES = {
    "bench_harmonics.py": ["--n", "200", "--repeats", "1", "--lmax", "2"],
    "bench_tensor_product.py": ["--edges", "300", "--repeats", "1"],
    "bench_model.py": ["--molecules", "2", "--atoms", "6", "--repeats", "1"],
    "bench_neighbors.py": [
        "--molecules",
        "3",
        "--atoms",
        "6",
        "--liquid",
        "200",
        "--boxes",
        "60",
        "--repeats",
        "1",
    ],
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_script_runs(script, tmp_path):
    out = tmp_path / "result.json"
    cmd = [
        sys.executable,
        str(BENCH / script),
        "--threads",
        "1",
        "--json",
        str(out),
        *CASES[script],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.read_text())
