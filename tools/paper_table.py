"""The original paper's metric: per-image *sum* of squared error, averaged over images.

    python tools/paper_table.py --models=exported/seed_lfw128_stacked,... [--count=100]
                                [--data_dir=/path/to/lfw-deepfunneled]

For every export (grouped by seed suffix like `evaluate`), on the first `--count`
training images of its own run (what the paper reported) and on the first `--count`
images of its held-out identities, through the served `serving_default` signature.
Data as `evaluate` chooses it: the export's own configuration, `--data_dir` where the
stored one is not on this machine. Prints one markdown table: mean ± std over the
group's exports.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from rae_keras import data as data_lib
from rae_keras import eval_sets, evaluation, exports, report


def sse_per_image(loaded, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Sum of squared error of each image: its MSE times its number of values."""
    scores = evaluation.score(loaded, images, batch_size, [evaluation.FULL], names=("mse",))
    return scores.per_image[evaluation.FULL]["mse"] * np.prod(images.shape[1:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated exports")
    parser.add_argument("--count", type=int, default=100, help="images per split")
    parser.add_argument("--data_dir", help="the training data's folder on this machine")
    args = parser.parse_args(argv)
    overrides = {"data_dir": args.data_dir} if args.data_dir else {}

    rows, splits = {}, {}
    for export in exports.list_exports(args.models.split(",")):
        config = eval_sets.data_config_for(export, overrides)
        if config not in splits:
            splits[config] = data_lib.load_splits(config)
        loaded = evaluation.load_saved_model(export)
        sse = {name: float(sse_per_image(loaded, split.images[:args.count]).mean())
               for name, split in (("train", splits[config].train),
                                   ("test", splits[config].test))}
        rows.setdefault(export.group, []).append(sse)
        print(f"{export.path}: train {sse['train']:.1f}, test {sse['test']:.1f}",
              file=sys.stderr)

    print(f"| model | n | SSE/image, {args.count} training images | "
          f"SSE/image, {args.count} test-identity images |")
    print("|---|--:|--:|--:|")
    for group, values in rows.items():
        stats = report.aggregate_models(values)
        cells = [f"{v['mean']:.1f}" + (f" ± {v['std']:.1f}" if v["std"] is not None else "")
                 for v in (stats["train"], stats["test"])]
        print(f"| {group} | {len(values)} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
