"""Rows plain and marginal: whole-process time, child processes, timed from outside.

  plain     rae_keras train from a cold cache (w1), then from the warm cache (w2), against
            a plain Keras fit of the same network on the same files with a minimal
            tf.data pipeline (w3): w3/w2 >= 0.95 (whole-process time).
  marginal  recursive and stacked training, 1 and --marginal_epochs epochs each, warm
            cache: the recursive marginal epoch (every stage once) <= 1.1 x stacked's,
            wall and CPU (loading and start-up cancel in the differences).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import List, Tuple

from rae_keras import data as data_lib
from rae_keras import distribute
from rae_keras import flags as flags_lib
from rae_keras import preprocessing, sources
from rae_keras.models import ConvAutoencoder
from rae_keras.runs import image_shape_of

import keras  # after rae_keras: it starts TensorFlow quietly

from . import children
from .children import WholeRow, child_flags, train_process
from .options import CLI, Options
from .report import TARGET_C_OVER_B_TIME, TARGET_PLAIN_OVER_RAE, fmt, ratio, ratio_line


def _plain_child_datasets(spec: dict, data, train):
    """(training, validation or None): the spec's image files read, decoded, cropped and
    resized as rae_keras does, cached, shuffled, batched, prefetched."""
    import tensorflow as tf

    def images(paths):
        return (tf.data.Dataset.from_tensor_slices(paths)
                .map(lambda p: preprocessing.preprocess_bytes(
                    tf.io.read_file(p), data.crop, data.image_size, data.channels),
                     num_parallel_calls=tf.data.AUTOTUNE)
                .ignore_errors().map(lambda x: (x, x)).cache())

    train_ds = (images(spec["train"]).shuffle(len(spec["train"]), seed=train.seed)
                .batch(train.batch_size).prefetch(tf.data.AUTOTUNE))
    val_ds = (images(spec["test"]).batch(train.batch_size).prefetch(tf.data.AUTOTUNE)
              if spec["test"] else None)
    return train_ds, val_ds


def plain_fit_child(spec_path: str) -> None:
    """The plain Keras side of the whole-process comparison, in its own process: the
    same network (ConvAutoencoder's full model) compiled with Adam + "mse", fitted on
    the same image files through a minimal tf.data pipeline, validated on the same
    test images every epoch."""
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    config = flags_lib.run_config_from_flags()
    train = config.train
    keras.utils.set_random_seed(train.seed)
    model = ConvAutoencoder.from_model_config(config.model, image_shape_of(config)).full_model()
    model.compile(optimizer=distribute.make_optimizer(train.learning_rate, None), loss="mse",
                  steps_per_execution=train.steps_per_execution)
    train_ds, val_ds = _plain_child_datasets(spec, config.data, train)
    model.fit(train_ds, validation_data=val_ds, epochs=train.epochs, verbose=0)
    print(f"data: {len(spec['train'])} training and {len(spec['test'])} test images")


def _write_split_spec(opts: Options, path: str) -> None:
    """The training and test files, split as rae_keras splits them, for the plain child."""
    listed = sources.list_source(opts.config.data)
    train_idx, test_idx = data_lib.split_indices(listed.identities, opts.config.data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"train": [listed.paths[i] for i in train_idx],
                   "test": [listed.paths[i] for i in test_idx]}, f)


def versus_plain(opts: Options, workdir: str, cache_dir: str, notes: List[str]
                 ) -> Tuple[List[WholeRow], List[str]]:
    """`python -m rae_keras.train` (stacked, --epochs, from a cold and then the warm
    cache) against a plain Keras fit of the same network on the same image files in
    its own process (`plain_fit_child`)."""
    del cache_dir, notes  # a cache of its own, cold at first
    cold_cache = tempfile.mkdtemp(prefix="cold_cache_", dir=workdir)
    max_images = opts.config.data.max_images
    spec_path = os.path.join(workdir, "plain_fit.json")
    _write_split_spec(opts, spec_path)
    cold, warm = (train_process(opts, workdir, cold_cache, max_images=max_images,
                                epochs=opts.epochs) for _ in ("cold", "warm"))
    plain = children.run_process([sys.executable, CLI, *child_flags(opts, [
        f"--max_images={max_images}", f"--epochs={opts.epochs}",
        f"--plain_fit_child={spec_path}"])])
    what = f"{opts.epochs} stacked epoch(s), whole process"
    rows = [WholeRow("w1", f"rae_keras train, cold cache (decodes, writes the cache); {what}",
                     cold.train_images, cold),
            WholeRow("w2", f"rae_keras train, warm cache; {what}", warm.train_images, warm),
            WholeRow("w3", f"plain Keras fit, same network and files, minimal tf.data; {what}",
                     plain.train_images, plain)]
    lines = [ratio_line("w3/w2 plain Keras / rae_keras (warm cache), whole-process time",
                        ratio(plain.wall_s, warm.wall_s), TARGET_PLAIN_OVER_RAE, True),
             ratio_line("w3/w1 plain Keras / rae_keras (cold cache), whole-process time",
                        ratio(plain.wall_s, cold.wall_s), TARGET_PLAIN_OVER_RAE, True),
             "w1/w2 cold / warm cache, whole-process time: "
             f"{fmt(ratio(cold.wall_s, warm.wall_s), 2)}"]
    return rows, lines


def marginal(opts: Options, workdir: str, cache_dir: str, notes: List[str]
             ) -> Tuple[List[WholeRow], List[str]]:
    """The recursive schedule's marginal epoch (every stage once) against stacked
    training's, whole process: (time with --marginal_epochs - time with 1) / (their
    difference), so loading and start-up cancel. Warm cache."""
    del notes
    rows, times = [], {}
    high = opts.marginal_epochs
    for scheme in ("stacked", "recursive"):
        for epochs in (1, high):
            process = train_process(opts, workdir, cache_dir,
                                    max_images=opts.config.data.max_images, scheme=scheme,
                                    epochs=epochs)
            times[scheme, epochs] = process
            rows.append(WholeRow(f"r{len(rows) + 1}", f"{scheme}, {epochs} epoch(s)"
                                 f"{' per stage' if scheme == 'recursive' else ''}, whole process",
                                 process.train_images, process))
    lines = []
    for clock, name in (("wall_s", "wall"), ("cpu_s", "CPU")):
        per_epoch = {s: (getattr(times[s, high], clock) - getattr(times[s, 1], clock))
                     / (high - 1) for s in ("stacked", "recursive")}
        lines.append(ratio_line(
            f"marginal epoch recursive / stacked ({name}: {per_epoch['recursive']:.1f} s / "
            f"{per_epoch['stacked']:.1f} s)", ratio(per_epoch["recursive"], per_epoch["stacked"]),
            TARGET_C_OVER_B_TIME, False))
    return rows, lines
