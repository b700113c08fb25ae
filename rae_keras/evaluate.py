"""python -m rae_keras.evaluate --models=A,B[,..] --output_dir=DIR [--split=test|all]
                               [--dataset=... --data_dir=... (any data flag)]

Evaluates exported SavedModels (what is measured is what is served): every model is
loaded with plain `tf.saved_model.load` and run through its `serving_default` ("full")
and `reconstruct_depth_K` signatures, and scored with `rae_keras.metrics` per image.
This module only turns flags into calls: `evaluation` scores, `report` writes
metrics.json and report.md, `figures` draws.

Models (`--models`, comma-separated):
- `exported/NAME`: an export base (its latest version), or `exported/NAME/3`: one version.
- Exports whose names differ only by a trailing seed suffix (`_seed1`, `-seed1`, `_s1`,
  `-s1`) form one group, reported as mean ± standard deviation over the exports;
  `exported/rec_seed0,exported/rec_seed1,exported/rec_seed2` is one row `rec` (n = 3).
- `LABEL=PATH[+PATH...]` names a group explicitly: `--models=rec=a+b+c,stacked=d+e+f`
  (entries with the same LABEL are merged too).

Data: by default each export's own training data configuration (`run_config.data` in
its rae_config.json: data set, crop, size, identity-split seed and test fraction), so
`--split=test` scores every model on identities it never trained on. Data flags given
on the command line (`--dataset`, `--data_dir`, `--tfds_data_dir`, `--crop`, `--seed`,
`--test_fraction`; `--image_size`/`--channels` must match the models) override that for
every model. The `data_dir` (and `tfds_data_dir`) stored in an export is provenance,
the training machine's path: it is used only if that directory exists on this machine
(a relative one from the working directory); otherwise evaluation stops with a one-line
error asking for `--data_dir`, rather than failing deep in data loading on a path
that only existed where the model was trained. An export trained on arrays given in
Python stores no data: name the images with `--dataset`. All models in one report must share the image source (data set, data_dir, crop, size,
channels); models trained with different split seeds are each scored on their own test
identities, and the figures show faces that are test faces for all of them where there
are such.

Writes to --output_dir: `metrics.json`, `report.md`, `reconstructions.png` (originals,
then one row per model), `depths_<model>.png` (reconstructions at every depth),
`power_spectrum.png`, and the figures and the report as TensorBoard summaries in `logs/`.
`--batch_size` is the evaluation batch (default here 256 unless given), `--summary_images`
the number of faces in the figures.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence

from rae_keras import config as config_lib
from rae_keras import data as data_lib
from rae_keras import evaluation, figures, report, report_markdown
from rae_keras import flags as flags_lib
from rae_keras.evaluation import DEFAULT_BATCH_SIZE, EvaluateError
from rae_keras.exports import LoadError

FLAGS = flags_lib.FLAGS

# Data flags that override the exports' training data configuration when given.
DATA_FLAGS = ("dataset", "data_dir", "tfds_data_dir", "tfds_name", "crop", "image_size",
              "channels", "test_fraction", "seed")


def evaluate(entries: Sequence[str], output_dir: Optional[str] = None, *, split: str = "test",
             data_overrides: Optional[Mapping[str, object]] = None,
             batch_size: int = DEFAULT_BATCH_SIZE, num_figure_images: int = 8,
             progress: bool = True, cache_dir: Optional[str] = None) -> dict:
    """Evaluate the exports named by `entries` (`--models` syntax); returns the numbers
    (what metrics.json holds). With `output_dir`, also writes metrics.json, report.md,
    the PNG figures and TensorBoard summaries there; without it, writes nothing."""
    scored = evaluation.evaluate_exports(
        entries, split=split, data_overrides=data_overrides, batch_size=batch_size,
        num_figure_images=num_figure_images, progress=progress, cache_dir=cache_dir)
    numbers = report.summary(scored)
    if output_dir:
        images = figures.draw(scored)
        numbers["figures"] = figures.write(output_dir, images)
        markdown = report.write(output_dir, numbers)
        figures.write_tensorboard(os.path.join(output_dir, "logs"), images, markdown)
    return numbers

# --help: only the flags evaluate reads.
HELP_GROUPS = (
    ("What to evaluate", ("models", "output_dir", "split", "batch_size", "summary_images",
                          "cache_dir")),
    ("The data (each export's own unless given)", DATA_FLAGS),
)


def data_overrides_from_flags() -> Dict[str, object]:
    """The data flags given on the command line (or in a flagfile), as DataConfig fields."""
    return {name: int(FLAGS[name].value) if name == "channels" else FLAGS[name].value
            for name in DATA_FLAGS if FLAGS[name].present}


def main(argv) -> None:
    del argv
    if not FLAGS.output_dir:
        raise EvaluateError("--output_dir=DIR is required (where the report goes)")
    numbers = evaluate(
        FLAGS.models, FLAGS.output_dir, split=FLAGS.split,
        data_overrides=data_overrides_from_flags(),
        batch_size=FLAGS.batch_size if FLAGS["batch_size"].present else DEFAULT_BATCH_SIZE,
        num_figure_images=FLAGS.summary_images, progress=True, cache_dir=FLAGS.cache_dir)
    print(report_markdown.markdown_table_from(numbers))
    print(f"wrote {os.path.join(FLAGS.output_dir, 'report.md')}, metrics.json and "
          f"{len(numbers['figures'])} figures")


ERRORS = (EvaluateError, LoadError, config_lib.ConfigError, data_lib.DataError)

if __name__ == "__main__":
    flags_lib.run_main(main, ERRORS, help_groups=HELP_GROUPS)
