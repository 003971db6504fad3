"""Every benchmark script runs (in its --quick smoke mode) and prints its table."""

from __future__ import annotations

import json
import math
import os
import re
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
    assert not re.search(r"\bnan\b", result.stdout.lower())  # a word: "banana" is a problem


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


def test_posterior_suite_runner_writes_runs_and_tables(tmp_path):
    """bench_posteriors.py: JSON lines with finite scores, --resume, and the rst tables."""
    script = BENCHMARKS[0].parent / "bench_posteriors.py"
    runs, table = tmp_path / "runs.jsonl", tmp_path / "table.rst"
    guides = 'AutoNormal;tiny=AutoFlow:{"num_layers": 1, "hidden_dims": [8], "init_scale": 1.0}'
    command = [sys.executable, str(script), "--quick", "--problems", "funnel2,banana,u1"]
    command += ["--guides", guides, "--json", str(runs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*extra):
        result = subprocess.run(
            command + list(extra), capture_output=True, text=True, env=env, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    run()
    records = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [(r["problem"], r["guide"]) for r in records] == [
        (p, g) for p in ("funnel2", "banana", "u1") for g in ("AutoNormal", "tiny")
    ]
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert r["config"]["guide"] in ("AutoNormal", "AutoFlow")
        for key in ("kl", "kl_se", "mean_error", "log_sd_error", "pareto_k", "ms_per_step"):
            assert math.isfinite(r[key]), (key, r)
        assert r["kl"] > -5 * r["kl_se"]  # a KL divergence, up to Monte Carlo error
    assert "0 runs" in run("--resume")  # every run is already in the file
    assert len(runs.read_text().splitlines()) == len(records)

    result = subprocess.run(
        [sys.executable, str(script), "--json", str(runs), "--table", str(table)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = table.read_text()
    assert text.count(".. list-table::") == 4
    assert "   * - funnel2 (*)" in text and "     - tiny" in text
    assert "failed" not in text
