"""Every benchmark script runs (in its --quick smoke mode) and prints its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCHMARKS = sorted((Path(__file__).parents[2] / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=[s.stem for s in BENCHMARKS])
def test_benchmark_runs_in_quick_mode(script):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=script.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("#")  # the machine / settings line
    assert len(lines) >= 4, result.stdout  # header, rule and at least one row
    assert "nan" not in result.stdout.lower()


def test_dmm_benchmark_scores_every_draw_without_an_inverse(tmp_path):
    """bench_dmm.py --quick: Pyro's IAFs invert at every one of the T = 5 sites (2 layers),
    ours at none."""
    script = Path(__file__).parents[2] / "benchmarks" / "bench_dmm.py"
    out = tmp_path / "dmm.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(out)],
        check=True,
        capture_output=True,
        env=env,
        timeout=600,
        cwd=script.parent,
    )
    rows = {row["iafs"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["pyroflows"]["inverse_passes"] == 0
    assert rows["pyro.distributions.transforms"]["inverse_passes"] == 2 * 5
