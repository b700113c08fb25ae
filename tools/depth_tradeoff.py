"""Every depth's PSNR per group, and each group's trade-off against a reference group.

    python tools/depth_tradeoff.py docs/lfw64_depths/metrics.json --reference=recursive \
        [--figure=docs/lfw64_depths/tradeoff.png]

A model "for every depth" must be good at full depth *and* keep each shallower
reconstruction (e_1..e_k, d_k..d_1) near the purely recursive model's. Per seed (identity
split) the deficit at depth k is reference PSNR_k - group PSNR_k; the worst deficit is
the largest over k < N. Prints markdown: the per-depth PSNR table (mean ± std over
seeds), then full-depth PSNR against the worst deficit (mean ± std of the paired
values), and draws that as the Pareto picture.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Dict, List

import numpy as np

from rae_keras import figures, report


def psnr_by_group(summary: dict) -> Dict[str, Dict[int, Dict[str, float]]]:
    """group -> seed -> result name ('full', 'depth_1', ...) -> mean PSNR."""
    table: Dict[str, Dict[int, Dict[str, float]]] = defaultdict(dict)
    for model in summary["models"]:
        table[model["group"]][model["data"]["seed"]] = {
            name: result["psnr"]["mean"] for name, result in model["results"].items()}
    return table


def depths_of(table) -> List[str]:
    names = {name for per_seed in table.values() for r in per_seed.values() for name in r}
    return sorted((n for n in names if n.startswith("depth_")), key=lambda n: int(n[6:]))


def _mean_std(values) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if values else "–"


def depth_table(table) -> str:
    depths = depths_of(table)
    lines = ["| group | seeds | " + " | ".join(f"depth {d[6:]}" for d in depths) + " |",
             "|---|---|" + "--:|" * len(depths)]
    for group, per_seed in table.items():
        cells = [_mean_std([r[d] for r in per_seed.values() if d in r]) for d in depths]
        lines.append(f"| {group} | {len(per_seed)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tradeoffs(table, reference: str) -> Dict[str, Dict[str, List[float]]]:
    """group -> {'full': [PSNR per shared seed], 'worst_deficit': [...], 'worst_depth': [...]}."""
    if reference not in table:
        raise SystemExit(f"no group {reference!r} in the metrics; groups: {sorted(table)}")
    shallow = depths_of(table)[:-1]  # the deepest depth is the full model
    out = {}
    for group, per_seed in table.items():
        seeds = sorted(set(per_seed) & set(table[reference]))
        rows = {"full": [], "worst_deficit": [], "worst_depth": []}
        for seed in seeds:
            deficits = [table[reference][seed][d] - per_seed[seed][d] for d in shallow]
            worst = int(np.argmax(deficits))
            rows["full"].append(per_seed[seed]["full"])
            rows["worst_deficit"].append(deficits[worst])
            rows["worst_depth"].append(worst + 1)
        if seeds:
            out[group] = rows
    return out


def tradeoff_table(rows, reference: str) -> str:
    lines = [f"| group | full-depth PSNR dB | worst depth deficit vs {reference} dB "
             "(depth, per seed) |", "|---|--:|--:|"]
    for group, r in rows.items():
        where = ",".join(map(str, r["worst_depth"]))
        lines.append(f"| {group} | {_mean_std(r['full'])} | "
                     f"{_mean_std(r['worst_deficit'])} ({where}) |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics", nargs="+",
                        help="metrics.json written by rae_keras.evaluate (several: models merged)")
    parser.add_argument("--reference", required=True, help="group whose depths are the bar")
    parser.add_argument("--figure", help="write the Pareto picture to this PNG")
    args = parser.parse_args(argv)
    table = psnr_by_group(report.read_summaries(args.metrics))
    rows = tradeoffs(table, args.reference)
    print(depth_table(table) + "\n\n" + tradeoff_table(rows, args.reference))
    if args.figure:
        points = {g: (np.mean(r["worst_deficit"]), np.std(r["worst_deficit"]),
                      np.mean(r["full"]), np.std(r["full"])) for g, r in rows.items()}
        figures.save_png(args.figure, figures.tradeoff_plot(
            points, xlabel=f"worst shallow-depth PSNR deficit vs {args.reference} (dB)",
            ylabel="full-depth PSNR (dB)", title="Full depth against every depth"))


if __name__ == "__main__":
    sys.exit(main())
