"""The training loop: runs a scheme's phases with resume, checkpoints and summaries.

For every phase: set `trainable` on the layers, build a fresh trainer and optimizer,
compile (Keras reads `trainable` when it builds the train function, so the order
matters), restore the optimizer when resuming mid-phase, then `fit`. At the end every
layer is trainable again.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from rae_keras import data as data_lib
from rae_keras.architecture import Autoencoder
from rae_keras.config import RunConfig
from rae_keras.runs import RunDirectory, TrainingState, image_shape_of
from rae_keras.schemes import Phase, phases_for
from rae_keras.summaries import PhaseSummaries


class _EpochCheckpoint(keras.callbacks.Callback):
    """Records the epoch in the state and writes a checkpoint after every epoch."""

    def __init__(self, run: RunDirectory, autoencoder: Autoencoder, state: TrainingState,
                 phase_index: int, phase: Phase):
        super().__init__()
        self.run, self.autoencoder, self.state = run, autoencoder, state
        self.phase_index, self.phase = phase_index, phase
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.state.record_epoch(self.phase_index, self.phase.name, logs or {},
                                time.perf_counter() - self._started)
        self.run.save_checkpoint(self.autoencoder, self.state, self.model.optimizer)


def describe_phase(autoencoder: Autoencoder, phase: Phase) -> str:
    used = [layer for layer in autoencoder.layers
            if any(layer is l for l in phase.objective.layers)]
    training = [l.name for l in used if l.trainable]
    frozen = [l.name for l in used if not l.trainable]
    return (f"{phase.name}: {phase.epochs} epoch(s); training {', '.join(training) or '-'}; "
            f"frozen {', '.join(frozen) or '-'}")


def train(config: RunConfig, splits: data_lib.DataSplits, run: RunDirectory, *,
          log: Callable[[str], None] = print, verbose: Optional[int] = None
          ) -> tuple[Autoencoder, TrainingState]:
    """Trains (or resumes) the run; returns the trained autoencoder and final state."""
    keras.utils.set_random_seed(config.train.seed)
    autoencoder = Autoencoder(config.model, image_shape_of(config))
    state = run.restore(autoencoder)
    phases = phases_for(autoencoder, config.train)
    if state.finished:
        log(f"{run.path}: training already finished ({state.epochs_done} epochs); not retraining")
        return autoencoder, state
    if state.epochs_done:
        log(f"resuming {run.path} at phase {phases[state.phase].name}, epoch {state.epoch}")

    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    val_ds = (data_lib.make_dataset(splits.test.images, config.train.batch_size, shuffle=False)
              if len(splits.test.images) else None)
    summary_images = _summary_images(splits, config.train.summary_images)
    writer = tf.summary.create_file_writer(run.logs_dir)

    for index, phase in enumerate(phases):
        if index < state.phase:
            continue
        initial_epoch = state.epoch if index == state.phase else 0
        autoencoder.set_trainable(phase.trainable)
        log(describe_phase(autoencoder, phase))
        if initial_epoch >= phase.epochs:
            continue
        trainer = phase.build_trainer()
        trainer.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate))
        if initial_epoch and not run.restore_optimizer(trainer.optimizer,
                                                       trainer.trainable_variables):
            log(f"warning: no optimizer state for {phase.name}; starting a fresh optimizer")
        train_ds = epoch_batches(splits.train.images, config.train.batch_size,
                                 seed=config.train.seed * 1000 + index,
                                 first_epoch=initial_epoch, epochs=phase.epochs)
        depth_models = ([autoencoder.depth_model(k) for k in range(1, phase.depth + 1)]
                        if phase.show_depths else [])
        callbacks = [
            _EpochCheckpoint(run, autoencoder, state, index, phase),
            PhaseSummaries(writer, phase.name, summary_images,
                           autoencoder.depth_model(phase.depth), depth_models,
                           global_epoch_offset=state.epochs_done - initial_epoch),
        ]
        trainer.fit(train_ds, validation_data=val_ds, epochs=phase.epochs,
                    initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                    steps_per_epoch=math.ceil(len(splits.train.images) / config.train.batch_size),
                    shuffle=False)
        state.phase, state.epoch = index + 1, 0

    autoencoder.set_trainable(None)
    state.finished = True
    run.save_checkpoint(autoencoder, state)
    writer.close()
    log(f"finished {config.train.scheme} training: {state.epochs_done} epochs; "
        f"final losses {_final_losses(state)}")
    return autoencoder, state


def epoch_batches(images: np.ndarray, batch_size: int, *, seed: int, first_epoch: int,
                  epochs: int) -> tf.data.Dataset:
    """Batches for epochs first_epoch..epochs-1, each epoch's order a function of
    (seed, epoch) alone: a run resumed at epoch e sees exactly the batches an
    uninterrupted run would have seen from epoch e on."""
    images = tf.convert_to_tensor(images)
    count = int(images.shape[0])

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    return (tf.data.Dataset.range(first_epoch, epochs)
            .flat_map(one_epoch)
            .map(lambda indices: tf.gather(images, indices), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def _summary_images(splits: data_lib.DataSplits, count: int) -> np.ndarray:
    source = splits.test.images if len(splits.test.images) >= count else splits.train.images
    return source[:count]


def _final_losses(state: TrainingState) -> Dict[str, float]:
    return {h["phase"]: round(h["loss"][-1], 6) for h in state.history if h["loss"]}
