"""Row d: the input side alone, with no model.

  d1  the pipeline training consumes: the training set's `epoch_batches(...)` (what
      `rae_keras.fit` feeds Keras `fit`: streamed from the image cache for a folder or
      data set, as `python -m rae_keras.train` reads it) iterated with no model.
  d2  (folder source only) decoding the JPEG files into model inputs, as loading does
      (`preprocessing.preprocess_bytes` in a parallel tf.data map). It runs once at
      load time, not every epoch.
"""

from __future__ import annotations

import time
from typing import List

import numpy as np

from rae_keras import data as data_lib
from rae_keras import preprocessing, records

from .environment import Batching
from .options import Options
from .timing import Row


def rows_d(opts: Options, session) -> List[Row]:
    """d1, and d2 where the data is a folder of image files."""
    rows = [row_d1(opts, session.splits, session.batching, opts.pipeline_seconds)]
    if not opts.synthetic and opts.config.data.dataset == "folder":
        rows.append(row_d2(opts, session.splits, session.batching))
    return rows


def row_d1(opts: Options, splits, batching: Batching, min_seconds: float = 2.0) -> Row:
    """The pipeline training consumes, iterated with no model: E epochs, repeated (a
    fresh iterator each time, as every `fit` makes) until min_seconds have passed, since
    with prefetching a short run mostly measures the buffer."""
    cpu, start = time.process_time(), time.perf_counter()
    ds = records.as_image_set(splits.train.images).epoch_batches(
        batching.global_batch, seed=opts.config.train.seed * 1000, first_epoch=0,
        epochs=opts.epochs, drop_remainder=batching.drop_remainder)
    iterate_from = time.perf_counter()
    batches, passes = 0, 0
    while passes < 1 or (time.perf_counter() - iterate_from < min_seconds and passes < 100):
        for _ in ds:
            batches += 1
        passes += 1
    end = time.perf_counter()
    if batches != passes * batching.steps_per_epoch * opts.epochs:
        raise RuntimeError(f"epoch_batches gave {batches} batches in {passes} passes, "
                           f"expected {batching.steps_per_epoch * opts.epochs} per pass")
    epochs = passes * opts.epochs
    where = ("in memory" if isinstance(splits.train.images, np.ndarray)
             else "streamed from the warm image cache")
    return Row("d1", f"input pipeline alone: `epoch_batches`, what training consumes "
               f"({where}, no model)", batching.images_per_epoch, epochs,
               end - start, end - iterate_from, epochs, cpu_s=time.process_time() - cpu,
               note=f"{passes} pass(es) over {opts.epochs} epochs; steady = iteration only, "
                    f"wall adds building the dataset (a copy of the images)")


def row_d2(opts: Options, splits, batching: Batching) -> Row:
    """JPEG files -> model inputs, decoded as the folder loader does; one pass."""
    import tensorflow as tf

    data = opts.config.data
    paths = data_lib.list_images(data.data_dir)
    n = min(len(splits.train.images), len(paths))
    chosen = np.sort(np.random.default_rng(data.seed).permutation(len(paths))[:n])
    paths = np.array(paths)[chosen]
    cpu, start = time.process_time(), time.perf_counter()
    ds = (tf.data.Dataset.from_tensor_slices(paths)
          .map(lambda p: preprocessing.preprocess_bytes(tf.io.read_file(p), data.crop,
                                                        data.image_size, data.channels),
               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .ignore_errors().batch(batching.global_batch).prefetch(tf.data.AUTOTUNE))
    iterate_from = time.perf_counter()
    count = 0
    for batch in ds:
        count += int(batch.shape[0])
    end = time.perf_counter()
    return Row("d2", "input decoding alone: JPEG files -> crop -> resize, as the folder "
               "loader does (once, at load time; no model)",
               count, 1, end - start, end - iterate_from, 1.0, cpu_s=time.process_time() - cpu,
               note="steady = the one pass without building the dataset; the loader "
                    "has just read these files, so they come from the OS cache")
