"""Rows a, b, c: training speed in this process, one data set, one network, one batch.

  a   plain Keras: `ConvAutoencoder(...)` compiled with Adam + "mse", fitted
      on `Dataset.from_tensor_slices((x, x)).shuffle(N).batch(B).prefetch(AUTOTUNE)`.
  b   rae_keras stacked training, as `python -m rae_keras.train` does it:
      `training.build_model` and `rae_keras.fit` with scheme "stacked" in a temporary
      run directory (per-epoch checkpoints and TensorBoard summaries included; no
      export).
  c   the whole recursive schedule: the same with scheme "recursive", E
      epochs per stage. Its throughput is (E x N) / time, i.e. one *schedule epoch*
      (an epoch of every stage) counts N images, so c/b compares the recursive
      schedule with stacked training for the same number of epochs.

Every row validates on the held-out split each epoch when it is non-empty (rae_keras
does; row a is given the same validation data so a and b do the same work).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import List, Optional, Tuple

from rae_keras import config as config_lib
from rae_keras import distribute, training
from rae_keras.models import ConvAutoencoder
from rae_keras.runs import image_shape_of

import keras  # after rae_keras: it starts TensorFlow quietly

from .environment import Batching
from .options import Options
from .timing import Row, steady_from_history


class EpochSeconds(keras.callbacks.Callback):
    """Each epoch's seconds, begin to end (validation included), as rae_keras records
    them in its history."""

    def __init__(self, seconds: list):
        super().__init__()
        self.seconds, self._started = seconds, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def _plain_datasets(config: config_lib.RunConfig, splits, batching: Batching, images,
                    validate: bool):
    """(training, validation or None) datasets of plain Keras' minimal tf.data."""
    import tensorflow as tf

    seed = config.train.seed
    x = tf.convert_to_tensor(images)
    train_ds = (tf.data.Dataset.from_tensor_slices((x, x))
                .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
                .batch(batching.global_batch, drop_remainder=batching.drop_remainder)
                .prefetch(tf.data.AUTOTUNE))
    if not validate or len(splits.test.images) < (
            batching.global_batch if batching.drop_remainder else 1):
        return train_ds, None
    v = tf.convert_to_tensor(splits.test.images)
    return train_ds, (tf.data.Dataset.from_tensor_slices((v, v))
                      .batch(batching.global_batch, drop_remainder=batching.drop_remainder)
                      .prefetch(tf.data.AUTOTUNE))


def plain_fit(config: config_lib.RunConfig, splits, batching: Batching, images, *,
              epochs: int, seconds: Optional[list] = None) -> Tuple[float, float]:
    """Builds, compiles and fits the full network with plain Keras; returns (seconds,
    CPU seconds) of the fit. `seconds` receives each epoch's, measured as rae_keras
    measures its own (epoch begin to end, validation included)."""
    train = config.train
    keras.utils.set_random_seed(train.seed)
    policy = distribute.mixed_precision_policy(train.mixed_precision)
    with batching.strategy.scope():
        model = ConvAutoencoder.from_model_config(config.model, image_shape_of(config),
                                                  dtype=policy).full_model()
        model.compile(optimizer=distribute.make_optimizer(train.learning_rate, policy),
                      loss="mse", steps_per_execution=train.steps_per_execution)
    train_ds, val_ds = _plain_datasets(config, splits, batching, images,
                                       validate=seconds is not None)
    callbacks = [EpochSeconds(seconds)] if seconds is not None else []
    cpu, start = time.process_time(), time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0,
              shuffle=False)  # the dataset shuffles
    return time.perf_counter() - start, time.process_time() - cpu


def warm_up(config: config_lib.RunConfig, arrays, batching: Batching) -> None:
    """Process start-up costs (thread pools, oneDNN kernels for these shapes) go to a
    throwaway fit, not to whichever row happens to run first."""
    warm = arrays.train.images[:min(len(arrays.train.images), 4 * batching.global_batch)]
    plain_fit(config, arrays, Batching.of(batching.strategy, config.train.batch_size,
                                          len(warm)), warm, epochs=1)


def row_a(opts: Options, session, repeat: int) -> Row:
    """Plain Keras `fit` of the full network on the in-memory arrays."""
    del repeat
    batching, seconds = session.batching, []
    wall, cpu = plain_fit(opts.config, session.arrays, batching, session.arrays.train.images,
                          epochs=opts.epochs, seconds=seconds)
    steady, steady_epochs, phases = steady_from_history([{"phase": "fit", "seconds": seconds}])
    return Row("a", "plain Keras `model.fit`, full network, minimal tf.data",
               batching.images_per_epoch, opts.epochs, wall, steady, steady_epochs,
               phases=phases, cpu_s=cpu)


def row_b(opts: Options, session, repeat: int) -> Row:
    return row_rae(opts, session.splits, session.batching, "stacked",
                   os.path.join(session.workdir, f"stacked_{repeat}"))


def row_c(opts: Options, session, repeat: int) -> Row:
    return row_rae(opts, session.splits, session.batching, "recursive",
                   os.path.join(session.workdir, f"recursive_{repeat}"))


def _run_config(opts: Options, scheme: str, model_dir: str) -> config_lib.RunConfig:
    """The flags' configuration with the row's scheme, in model_dir, exporting nothing."""
    config = opts.config
    return dataclasses.replace(config, name=f"bench_{scheme}", model_dir=model_dir,
                               export_dir="",
                               train=dataclasses.replace(config.train, scheme=scheme))


def row_rae(opts: Options, splits, batching: Batching, scheme: str, model_dir: str) -> Row:
    """What `python -m rae_keras.train` does, timed: build the model, `rae_keras.fit`
    in a fresh run directory (checkpoints and summaries every epoch; no export). The
    steady time comes from the epoch seconds fit records in the run's history."""
    config = _run_config(opts, scheme, model_dir)
    log: List[str] = []
    cpu, start = time.process_time(), time.perf_counter()
    model = training.build_model(config, batching.strategy)
    history = training.fit(model, splits.train.images, validation_data=splits.test.images,
                           model_dir=config.model_dir, strategy=batching.strategy,
                           run_config=config, log=log.append, verbose=0,
                           **dataclasses.asdict(config.train))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    steady, steady_epochs, phases = steady_from_history(
        [{"phase": name, **entry} for name, entry in history.items()])
    n_phases = max(len(phases), 1)
    epochs_done = sum(len(entry["seconds"]) for entry in history.values())
    if scheme == "stacked":
        key, what = "b", "rae_keras stacked (`rae_keras.fit`)"
    else:
        key, what = "c", (f"rae_keras recursive, whole schedule ({n_phases} stages x "
                          f"{opts.epochs} epochs; img/s per schedule epoch)")
    note = "" if epochs_done == n_phases * opts.epochs else (
        f"{epochs_done} epochs done, expected {n_phases * opts.epochs}")
    return Row(key, what, batching.images_per_epoch, opts.epochs, wall, steady, steady_epochs,
               note=note, phases=phases, cpu_s=cpu)
