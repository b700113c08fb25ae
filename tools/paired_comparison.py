"""Each model group against a baseline group, paired by identity split (seed).

    python tools/paired_comparison.py docs/lfw64_search/metrics.json --baseline=stacked20

Seeds move the test identities, so a mean over seeds carries the split's difficulty in
its spread; the difference on the *same* split does not. Per group and metric: the mean
difference to the baseline over the shared splits and on how many splits the group is
better (closer to 1 for the ratios), from an `evaluate` metrics.json.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Dict, List

from rae_keras import report
from rae_keras.metrics import METRICS


def improvement(metric: str, candidate: float, baseline: float) -> float:
    """Positive when the candidate is better (closer to ideal in the metric's sense)."""
    return METRICS[metric].shortfall(baseline) - METRICS[metric].shortfall(candidate)


def paired_rows(summary: dict, baseline: str, depth: str = "full") -> List[Dict]:
    by_group: Dict[str, Dict[int, dict]] = defaultdict(dict)
    for model in summary["models"]:
        by_group[model["group"]][model["data"]["seed"]] = model["results"][depth]
    if baseline not in by_group:
        raise SystemExit(f"no group {baseline!r} in the metrics; groups: {sorted(by_group)}")
    reference = by_group[baseline]
    rows = []
    for group, per_seed in by_group.items():
        seeds = sorted(set(per_seed) & set(reference))
        if group == baseline or not seeds:
            continue
        row = {"group": group, "seeds": seeds, "metrics": {}}
        for metric in summary["metrics"]:
            diffs = [per_seed[s][metric]["mean"] - reference[s][metric]["mean"] for s in seeds]
            gains = [improvement(metric, per_seed[s][metric]["mean"],
                                 reference[s][metric]["mean"]) for s in seeds]
            row["metrics"][metric] = (sum(diffs) / len(diffs), sum(g > 0 for g in gains))
        rows.append(row)
    return rows


def markdown(rows: List[Dict], metrics: List[str], baseline: str) -> str:
    head = [METRICS[m].label for m in metrics]
    lines = [f"| vs {baseline} | splits | " + " | ".join(f"Δ {h} (better on)" for h in head)
             + " |", "|---|---|" + "--:|" * len(metrics)]
    for row in rows:
        n = len(row["seeds"])
        cells = [f"{d:+.4f} ({k}/{n})" if abs(d) < 0.01 else f"{d:+.3f} ({k}/{n})"
                 for d, k in (row["metrics"][m] for m in metrics)]
        seeds = ",".join(map(str, row["seeds"]))
        lines.append(f"| {row['group']} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics", nargs="+",
                        help="metrics.json written by rae_keras.evaluate (several: models merged)")
    parser.add_argument("--baseline", required=True, help="the group to compare against")
    parser.add_argument("--depth", default="full", help="full or depth_K")
    args = parser.parse_args(argv)
    summary = report.read_summaries(args.metrics)
    metrics = [m for m in summary["metrics"] if m != "mse"]
    print(markdown(paired_rows(summary, args.baseline, args.depth), metrics, args.baseline))


if __name__ == "__main__":
    sys.exit(main())
