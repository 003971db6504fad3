"""The flow and training settings a density fit uses where the caller gives none.

One rule, :func:`density_defaults`, for ``pyroflows fit`` and :func:`~pyroflows.runs.fit_run`,
chosen on the density suite (``benchmarks/density_suite.py``; the search and its table are
on the benchmarks page, "Density defaults"). The caller's settings always win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DensityDefaults", "density_defaults"]

# The flow of every data kind: rational-quadratic spline MADE layers, inverted (parallel
# density). On the suite it beat the affine MAF on every data set (moons 2.42 against 2.54
# nats, circles 3.32 against 3.62) and the spline couplings on most.
FLOW = "nsf_autoregressive"
NUM_LAYERS = 5
# Up to this dimension MADE orders alternate natural and reversed; above it each layer draws a
# random order. A random order of two coordinates may repeat the previous layer's: on the 2-D
# toys alternating orders won on all six (by 0.005 to 0.05 nats); on the sphere mixture (4, 8,
# 16 dimensions) random orders won by 0.06 to 0.34 nats, and on the digits by 0.065 bits/dim.
ALTERNATE_MAX_DIM = 2
# Up to this dimension, and for images, 8 spline bins; 4 above it: 8 bins won on the six toys
# (0.01 to 0.09 nats), the 4-D sphere mixture (0.13) and the digits (1.963 against 1.984
# bits/dim), 4 bins in 8 and 16 dimensions (0.07, 0.09) and on the three tables (0.2 to 2.7
# nats, within their large test-set noise).
MANY_BINS_MAX_DIM = 4
# Widest MADE hidden layer: [max(32, 4 D)] * 2 grows with D up to this cap.
MAX_HIDDEN = 512
# Steps a run may take at least: small data sets get more epochs (up to MAX_EPOCHS), so that a
# 100-row table is not stopped after 100 optimizer steps. Early stopping still ends them.
MIN_STEPS = 2000
MIN_EPOCHS, MAX_EPOCHS = 100, 1000
BATCH_SIZE = 256
# Adam's learning rate: 3e-3 up to this dimension (the MADEs of the 32-unit floor), 1e-3 above.
# On the toys 3e-3 closed the gap to the best configuration found on two spirals (0.039) and
# the checkerboard (0.047) and cost at most 0.013 elsewhere; it also won on the 4- and 8-D
# sphere mixtures; 1e-3 won in 16 dimensions (0.03) and on the digits (0.012 bits/dim).
FAST_LR_MAX_DIM = 8
# Decoupled weight decay (AdamW) above FAST_LR_MAX_DIM: 1.0 (at lr 1e-3, a shrink of 1e-3 per
# step). It won on the 16-D sphere mixture (0.077 nats), the digits (0.004 bits/dim) and
# diabetes (0.17), tied on wine and lost on breast cancer (0.6, within its test noise of 2.4);
# on the 4- and 8-D spheres it cost 0.11, so the narrow MADEs get none.
WEIGHT_DECAY = 1.0

# Multi-scale image flows (``image_flow=True``), chosen on the image suite
# (``benchmarks/search_image_defaults.py``): Glow's architecture with rational-quadratic spline
# couplings (Durkan et al.'s Glow-like RQ-NSF) beat Glow's affine couplings on the 8x8 digits
# (1.991 against 2.065 bits/dim) and on MNIST cropped to 12x12; Glow's own training settings
# (batch 64, Adam 1e-3, no weight decay) beat the vector rule's (batch 256, weight decay 1.0:
# 2.085) and a smaller network (hidden 32: 2.084; 4 steps a level: 2.095).
IMAGE_FLOW = "glow"
IMAGE_OPTIONS = {"coupling": "spline"}
IMAGE_BATCH_SIZE = 64
IMAGE_LR = 1e-3


@dataclass(frozen=True)
class DensityDefaults:
    """A flow and its training settings: what :func:`density_defaults` returns.

    ``flow`` and ``options`` go to :meth:`Flow.build <pyroflows.distributions.Flow.build>`,
    ``fit`` to :func:`~pyroflows.train.fit`.

    Example:
        >>> import torch
        >>> from pyroflows.distributions import Flow
        >>> from pyroflows.train import fit
        >>> data = torch.randn(300, 3)
        >>> settings = density_defaults(len(data), 3)
        >>> model = Flow.build(settings.flow, 3, **settings.options)
        >>> history = fit(model, data, **{**settings.fit, "epochs": 1}, progress=False)
        >>> len(history.epoch)
        1
    """

    flow: str
    options: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)


def density_defaults(
    num_rows: int, dim: int, *, image: bool = False, image_flow: bool = False
) -> DensityDefaults:
    r"""The flow and ``fit()`` settings for ``num_rows`` training rows of ``dim`` coordinates.

    The rule, chosen on the density suite (2-D toys, the sphere mixture in 4, 8 and 16
    dimensions, the 8x8 digits, three scikit-learn tables):

    * flow ``nsf_autoregressive`` with 5 layers and MADE hidden sizes
      :math:`[\min(\max(32, 4D), 512)] \times 2`; MADE orders alternating natural and
      reversed for :math:`D \le 2`, a random order per layer above; 8 spline bins for
      :math:`D \le 4` and for images, 4 otherwise;
    * ``fit()``: batch 256, Adam with the cosine schedule at 3e-3 for :math:`D \le 8`; above,
      1e-3 with decoupled weight decay 1.0 (AdamW); patience 20, and
      :math:`\text{epochs} = \min(1000, \max(100, \lceil 2000 / \text{steps per epoch}\rceil))`,
      so that small tables still take about 2,000 steps.

    ``image=True`` is for dequantised pixels in :math:`[0, 1)` (the caller models them in
    logit space, ``logit_alpha``). ``image_flow=True`` is the rule for a multi-scale image flow
    on ``(C, H, W)`` images of ``dim`` pixels, chosen on the image suite
    (``benchmarks/search_image_defaults.py``): ``glow`` with ``coupling="spline"`` (the
    builder's other defaults: 2 levels of 8 steps, 64 hidden channels), and ``fit()`` with
    Glow's batch 64, Adam at 1e-3 without weight decay, the cosine schedule, patience 20 and the
    epochs of the same rule for about 2,000 steps at least.

    Example:
        >>> settings = density_defaults(1293, 64, image=True)
        >>> settings.flow, settings.options["count_bins"], settings.fit["epochs"]
        ('nsf_autoregressive', 8, 334)
        >>> settings = density_defaults(1293, 64, image_flow=True)
        >>> settings.flow, settings.options, settings.fit["batch_size"], settings.fit["epochs"]
        ('glow', {'coupling': 'spline'}, 64, 100)
    """
    if num_rows < 1 or dim < 1:
        raise ValueError(f"expected at least one row and one coordinate, got {num_rows} x {dim}")
    if image_flow:
        fitting = {
            "epochs": _epochs(num_rows, IMAGE_BATCH_SIZE),
            "batch_size": IMAGE_BATCH_SIZE,
            "lr": IMAGE_LR,
            "weight_decay": 0.0,
            "patience": 20,
        }
        return DensityDefaults(IMAGE_FLOW, dict(IMAGE_OPTIONS), fitting)
    hidden = min(max(32, 4 * dim), MAX_HIDDEN)
    options = {
        "num_layers": NUM_LAYERS,
        "hidden_dims": [hidden, hidden],
        "count_bins": 8 if dim <= MANY_BINS_MAX_DIM or image else 4,
        "orders": "alternate" if dim <= ALTERNATE_MAX_DIM else "random",
    }
    narrow = dim <= FAST_LR_MAX_DIM
    settings = {
        "epochs": _epochs(num_rows, BATCH_SIZE),
        "batch_size": BATCH_SIZE,
        "lr": 3e-3 if narrow else 1e-3,
        "weight_decay": 0.0 if narrow else WEIGHT_DECAY,
    }
    return DensityDefaults(FLOW, options, {**settings, "patience": 20})


def _epochs(num_rows: int, batch_size: int) -> int:
    """Epochs for about ``MIN_STEPS`` steps at least, within ``[MIN_EPOCHS, MAX_EPOCHS]``."""
    steps_per_epoch = math.ceil(num_rows / batch_size)
    return min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))
