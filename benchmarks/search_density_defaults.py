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

# (label, contender options, data sets): the rule, the flows it was chosen against, then
# changes of one or two settings. "logit_alpha" applies to the digits only (the command
# line's). The rows with "defaults" pin every setting the rule has changed since they ran
# (the first rule had 4 bins and random orders above 2-D, a rate of 1e-3 and no weight decay
# everywhere), so that each row reruns what it ran. rule1s600*: epochs for about 600 steps
# instead of 2,000 (wine 600 epochs of one step, the others 300 of two).
OLD_RULE = {"defaults": True, "count_bins": 4, "orders": "random"}


def _first_rule(**changes: Any) -> dict[str, Any]:
    """The first rule above 2-D (4 bins, random orders, lr 1e-3, no weight decay), changed."""
    bins = changes.pop("count_bins", 4)
    return {**OLD_RULE, "count_bins": bins, "fit": {"lr": 1e-3, "weight_decay": 0.0, **changes}}


SEARCH: tuple[tuple[str, dict[str, Any], tuple[str, ...]], ...] = (
    (RULE, {"defaults": True}, ALL),
    ("maf", {"flow": "maf", "logit_alpha": 1e-3}, ALL),
    ("nsf", {"flow": "nsf", "logit_alpha": 1e-3}, ALL),
    ("nsfar5", {"flow": "nsf_autoregressive", "num_layers": 5, "logit_alpha": 1e-3}, ALL),
    ("nsfar5r", {"flow": "nsf_autoregressive", "num_layers": 5, "orders": "random",
                 "logit_alpha": 1e-3}, ALL),
    ("nsfar5rb4", {"flow": "nsf_autoregressive", "num_layers": 5, "count_bins": 4,
                   "orders": "random", "logit_alpha": 1e-3}, ALL),
    # the toys (D = 2: 8 bins, alternating orders, as the rule)
    ("lr1ep200", {"defaults": True, "fit": {"lr": 1e-3, "epochs": 200}}, TOYS),
    ("lr1h64", {"defaults": True, "hidden_dims": [64, 64], "fit": {"lr": 1e-3}}, TOYS),
    ("lr1L8", {"defaults": True, "num_layers": 8, "fit": {"lr": 1e-3}}, TOYS),
    ("lr1p50", {"defaults": True, "fit": {"lr": 1e-3, "patience": 50}}, TOYS),
    ("lr2", {"defaults": True, "fit": {"lr": 2e-3}}, TOYS),
    ("lr3h64", {"defaults": True, "hidden_dims": [64, 64], "fit": {"lr": 3e-3}}, TOYS),
    ("lr3ep200", {"defaults": True, "fit": {"lr": 3e-3, "epochs": 200}}, TOYS),
    # more than two dimensions, from the first rule
    ("rule1", _first_rule(), WIDE),
    ("rule1wd1", _first_rule(weight_decay=1.0), WIDE),
    ("rule1p50", _first_rule(patience=50), WIDE),
    ("rule1lr3", _first_rule(lr=3e-3), WIDE),
    ("rule1p200", _first_rule(patience=200), TABULAR),
    ("rule1p200lr3", _first_rule(lr=3e-3, patience=200), TABULAR),
    # the rule without its weight decay where it has one (D > 8)
    ("wd0", {"defaults": True, "fit": {"weight_decay": 0.0}}, ("sphere16", "digits", *TABULAR)),
    ("rule1b8", _first_rule(count_bins=8), ("digits",)),
    ("rule1s600w", _first_rule(epochs=600), ("wine",)),
    ("rule1s600", _first_rule(epochs=300), ("breast_cancer", "diabetes")),
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
