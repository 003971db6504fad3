"""Distributed training: ``torchrun`` with 2 CPU processes gives the one-process result."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pyroflows.checkpoint import load_checkpoint

from ..test_train import ENV, WORKER, _assert_same_state, _small_model

pytestmark = pytest.mark.integration


def test_two_process_distributed_training_matches_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP, sharded global batches, rank-0 output."""
    run = [sys.executable, str(WORKER)]
    subprocess.run(
        [*run, str(tmp_path / "one.pt"), str(tmp_path / "one_out.pt")], env=ENV, check=True
    )
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run(
        [*launcher, str(WORKER), str(tmp_path / "two.pt"), str(tmp_path / "two_out.pt")],
        env=ENV,
        check=True,
        timeout=300,
    )
    one = torch.load(tmp_path / "one_out.pt", weights_only=True)
    two = torch.load(tmp_path / "two_out.pt", weights_only=True)
    _assert_same_state(two, one, atol=1e-5)
    # ... and the parameters did move: this is not two untrained models compared
    assert not torch.equal(
        one["flow.layers.0.conditioner.0.weight"],
        _small_model().state_dict()["flow.layers.0.conditioner.0.weight"],
    )
    history = load_checkpoint(tmp_path / "two.pt")["history"]
    assert len(history["epoch"]) == 3
