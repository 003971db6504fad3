r"""The search behind ``pyroflows.train.density_defaults``: configurations on the density suite.

Every configuration below is a ``bench_density.py`` contender, run on the data sets it names
(one thread, one seed unless ``--seeds``; the epochs, not the clock, end the runs: the clock is
15 minutes). ``"defaults": true`` starts from the rule (``density_defaults`` of the data
set's rows and dimension) and changes the keys given, so each row of :data:`SEARCH` varies
one setting of the rule or replaces it.

``--table OUT`` writes the summary the docs show: for each data set the rule's test score,
the best configuration found and its score, and the gap (the rule's score minus the best's;
the target is a gap of at most 0.02 nats, or bits/dim, per data set); and the full table of
every configuration's score.

Usage: python benchmarks/search_density_defaults.py [--seeds 0] [--json PATH] [--only LABEL,...]
       python benchmarks/search_density_defaults.py --json PATH --table OUT_OR_-
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_density
from _suite_runs import ordered, read_records
from density_suite import SPHERE_DIMS, TABULAR, TOYS

DEFAULT_JSON = Path(__file__).parent / "data" / "density_search_runs.jsonl"
RULE = "defaults"  # the label of the rule itself
SPHERES = tuple(f"sphere{d}" for d in SPHERE_DIMS)
ALL = (*TOYS, *SPHERES, "digits", *TABULAR)
WIDE = (*SPHERES, "digits", *TABULAR)  # the data sets of more than 2 dimensions

# (label, contender options, data sets): the rule, the flows it was chosen against, then one
# change of the rule at a time. "logit_alpha" applies to the digits only (the command line's).
SEARCH: tuple[tuple[str, dict[str, Any], tuple[str, ...]], ...] = (
    (RULE, {"defaults": True}, ALL),
    ("maf", {"flow": "maf", "logit_alpha": 1e-3}, ALL),
    ("nsf", {"flow": "nsf", "logit_alpha": 1e-3}, ALL),
    ("nsfar5", {"flow": "nsf_autoregressive", "num_layers": 5, "logit_alpha": 1e-3}, ALL),
    ("nsfar5r", {"flow": "nsf_autoregressive", "num_layers": 5, "orders": "random",
                 "logit_alpha": 1e-3}, ALL),
    ("nsfar5rb4", {"flow": "nsf_autoregressive", "num_layers": 5, "count_bins": 4,
                   "orders": "random", "logit_alpha": 1e-3}, ALL),
    ("ep200", {"defaults": True, "orders": "alternate", "fit": {"epochs": 200}}, TOYS),
    ("lr3", {"defaults": True, "orders": "alternate", "fit": {"lr": 3e-3}}, TOYS),
    ("h64", {"defaults": True, "orders": "alternate", "hidden_dims": [64, 64]}, TOYS),
    ("L8", {"defaults": True, "orders": "alternate", "num_layers": 8}, TOYS),
    ("p50", {"defaults": True, "orders": "alternate", "fit": {"patience": 50}}, TOYS),
    ("Dwd1", {"defaults": True, "fit": {"weight_decay": 1.0}}, WIDE),
    ("Dp50", {"defaults": True, "fit": {"patience": 50}}, WIDE),
    ("Dlr3", {"defaults": True, "fit": {"lr": 3e-3}}, WIDE),
)  # fmt: skip


def contender_text(label: str, options: dict[str, Any]) -> str:
    """The ``--contender`` text of a configuration."""
    import json

    return f"{label}=pyroflows:{json.dumps(options)}"


def run(seeds: str, json_path: Path, only: Sequence[str] | None) -> None:
    """Run every configuration (or those in ``only``) on its data sets, resuming ``json_path``."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for label, options, names in SEARCH:
        if only is None or label in only:
            groups.setdefault(names, []).append(contender_text(label, options))
    for names, texts in groups.items():
        argv = ["--datasets", ",".join(names), "--seeds", seeds, "--seconds", "900"]
        argv += ["--json", str(json_path), "--resume"]
        for text in texts:
            argv += ["--contender", text]
        bench_density.main(argv)


def _means(records: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    groups: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if r["status"] == "ok" and not r.get("quick"):
            groups.setdefault((r["dataset"], r["contender"]), []).append(r["test"])
    return {key: statistics.fmean(values) for key, values in groups.items()}


def render(records: list[dict[str, Any]]) -> str:
    """The summary table (rule against the best found) and the full table, reStructuredText."""
    means = _means(records)
    names = ordered([name for name, _ in means], list(ALL))
    labels = ordered([label for _, label in means], [label for label, _, _ in SEARCH])
    seeds = sorted({r["seed"] for r in records})
    out = [
        f"Configurations: {len(labels)}; seeds {seeds}; one thread; every run ended by its "
        "epochs or by early stopping.",
        "",
        ".. list-table:: the rule against the best configuration found (test NLL: nats per "
        "row, bits/dim for the digits; gap = rule - best)",
        "   :header-rows: 1",
        "",
        "   * - data set",
        "     - rule",
        "     - best found",
        "     - gap",
    ]
    for name in names:
        scores = {label: means[name, label] for label in labels if (name, label) in means}
        best = min(scores, key=scores.get)
        rule = scores.get(RULE)
        gap = "" if rule is None else f"{rule - scores[best]:+.3f}"
        out += [
            f"   * - {name}",
            f"     - {'' if rule is None else f'{rule:.3f}'}",
            f"     - {best} {scores[best]:.3f}",
            f"     - {gap}",
        ]
    out += ["", ".. list-table:: every configuration's test NLL", "   :header-rows: 1", ""]
    out += ["   * - data set", *(f"     - {label}" for label in labels)]
    for name in names:
        scores = [means.get((name, label)) for label in labels]
        best = min(s for s in scores if s is not None)
        cells = ["" if s is None else (f"**{s:.3f}**" if s == best else f"{s:.3f}") for s in scores]
        out += [f"   * - {name}", *(f"     - {cell}" for cell in cells)]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--only", default=None, help="comma-separated labels of SEARCH")
    parser.add_argument("--table", default=None, help="render --json to this file or -")
    args = parser.parse_args(argv)
    if args.table is not None:
        text = render(read_records(args.json))
        if args.table == "-":
            print(text)
        else:
            Path(args.table).write_text(text)
        return
    run(args.seeds, args.json, args.only.split(",") if args.only else None)


if __name__ == "__main__":
    main()
