"""The original paper's metric: per-image *sum* of squared error, averaged over images.

    python tools/paper_table.py --models=exported/seed_lfw128_stacked,... [--count=100]

For every export (grouped by seed suffix like `evaluate`), on the first `--count`
training images of its own run (what the paper reported) and on the first `--count`
images of its held-out identities, through the served `serving_default` signature.
Prints one markdown table: mean ± std over the group's exports.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rae_keras import data as data_lib  # noqa: E402
from rae_keras import evaluate  # noqa: E402


def per_image_sse(loaded, images: np.ndarray, batch: int = 64) -> np.ndarray:
    sse = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        out = loaded.signatures["serving_default"](images=chunk)["reconstruction"].numpy()
        sse.append(np.sum((out - chunk) ** 2, axis=(1, 2, 3)))
    return np.concatenate(sse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated exports")
    parser.add_argument("--count", type=int, default=100, help="images per split")
    args = parser.parse_args()

    import tensorflow as tf

    rows = {}
    for export in evaluate.load_exports(args.models.split(",")):
        config = evaluate.data_config_for(export, {})
        splits = data_lib.load_splits(config)
        loaded = tf.saved_model.load(export.version_dir)
        train = per_image_sse(loaded, splits.train.images[:args.count]).mean()
        test = per_image_sse(loaded, splits.test.images[:args.count]).mean()
        rows.setdefault(export.group, []).append((train, test))
        print(f"{export.path}: train {train:.1f}, test {test:.1f}", file=sys.stderr)

    print(f"| model | n | SSE/image, {args.count} training images | "
          f"SSE/image, {args.count} test-identity images |")
    print("|---|--:|--:|--:|")
    for group, values in rows.items():
        values = np.array(values)
        spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(2)
        cells = [f"{m:.1f} ± {s:.1f}" if len(values) > 1 else f"{m:.1f}"
                 for m, s in zip(values.mean(axis=0), spread)]
        print(f"| {group} | {len(values)} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
