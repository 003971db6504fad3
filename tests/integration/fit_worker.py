"""A training run in its own process, for the kill-and-resume and distributed tests.

Usage: python tests/integration/fit_worker.py CHECKPOINT OUT [--resume] [--slow]
  (or under ``torchrun --nproc_per_node 2`` for the distributed test)
Trains the same small model on the same data every time; writes the final state_dict to OUT.
``--slow`` sleeps a little after every step so that a test can kill the run mid-epoch.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from pyroflows.data import make_toy
from pyroflows.distributions import Flow
from pyroflows.train import fit

EPOCHS, BATCH, ROWS = 3, 64, 640  # 9 training batches per epoch (576 rows after validation)


def model_and_data():
    torch.manual_seed(0)
    model = Flow.build("realnvp", 2, num_layers=2, hidden_dims=[16])
    return model, make_toy("moons", ROWS, seed=3)


def main() -> None:
    torch.set_num_threads(1)
    checkpoint, out = sys.argv[1], sys.argv[2]
    model, data = model_and_data()
    if "--slow" in sys.argv:
        original = model.forward

        def slow_forward(*args, **kwargs):
            time.sleep(0.05)
            return original(*args, **kwargs)

        model.forward = slow_forward
    fit(
        model,
        data,
        epochs=EPOCHS,
        batch_size=BATCH,
        checkpoint=checkpoint,
        checkpoint_every=2,
        resume="--resume" in sys.argv,
        progress=False,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 writes the result
        torch.save(model.state_dict(), out)


if __name__ == "__main__":
    main()
