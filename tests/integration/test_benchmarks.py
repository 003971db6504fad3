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


def test_density_suite_runner_writes_runs_and_tables(tmp_path):
    """bench_density.py: JSON lines with finite scores, the clock, --resume and the tables."""
    script = BENCHMARKS[0].parent / "bench_density.py"
    runs, table = tmp_path / "runs.jsonl", tmp_path / "table.rst"
    tiny = '"num_layers": 1, "hidden_dims": [64]'
    contenders = [
        f"flow=pyroflows:{{{tiny}}}",
        f'loop=pyroflows:{{{tiny}, "loop": "plain", "logit_alpha": 0.001}}',
        f'pyro=pyro:{{"flow": "nsf_autoregressive", {tiny}, "fit": {{"lr": 0.002}}}}',
        "gaussian",
    ]
    command = [sys.executable, str(script), "--quick", "--datasets", "moons,digits,diabetes"]
    command += [arg for spec in contenders for arg in ("--contender", spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*extra, base=command):
        result = subprocess.run(
            base + list(extra), capture_output=True, text=True, env=env, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    run("--json", str(runs))
    records = [json.loads(line) for line in runs.read_text().splitlines()]
    labels = ["flow", "loop", "pyro", "gaussian"]
    assert [(r["dataset"], r["contender"]) for r in records] == [
        (d, c) for d in ("moons", "digits", "diabetes") for c in labels
    ]
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert math.isfinite(r["test"]) and r["test_se"] > 0, r
        if r["contender"] != "gaussian":
            assert r["epochs"] == 2 and r["steps"] > 0 and r["stopped"] == "epochs", r
            assert r["params"] > 0 and r["best_epoch"] in (1, 2)
    units = {r["dataset"]: r["unit"] for r in records}
    assert units == {"moons": "nats", "digits": "bits/dim", "diabetes": "nats"}
    floors = {r["dataset"]: r["floor"] for r in records}
    assert floors["moons"] is not None and floors["digits"] is None
    # logit_alpha applies to the images only
    assert [r["logit_alpha"] for r in records if r["contender"] == "loop"] == [None, 0.001, None]
    digits = [r["test"] for r in records if r["dataset"] == "digits"]
    assert all(1.0 < value < 4.1 for value in digits)  # bits/dim of 17 levels: log2(17) = 4.09
    assert "0 runs" in run("--json", str(runs), "--resume")
    assert len(runs.read_text().splitlines()) == len(records)

    # the clock: an uncapped number of epochs stops at the deadline, for fit() and the peers
    clock = tmp_path / "clock.jsonl"
    base = [sys.executable, str(script), "--quick", "--datasets", "moons", "--seconds", "0.5"]
    base += ["--epochs", "100000", "--json", str(clock)]
    run(*(arg for spec in contenders[:3] for arg in ("--contender", spec)), base=base)
    for r in (json.loads(line) for line in clock.read_text().splitlines()):
        assert r["status"] == "ok" and r["stopped"] == "deadline", r
        assert r["steps"] > 0 and 0.5 <= r["seconds"] < 5, r

    run("--json", str(runs), "--table", str(table), base=[sys.executable, str(script)])
    text = table.read_text()
    assert text.count(".. list-table::") == 3
    assert "   * - digits (bits/dim)" in text and "     - gaussian" in text
    assert "**" in text and "failed" not in text
