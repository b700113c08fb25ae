"""The training loop: runs a scheme's phases with resume, checkpoints and summaries.

For every phase: set `trainable` on the layers, build a fresh trainer and optimizer,
compile (Keras reads `trainable` when it builds the train function, so the order
matters), restore the optimizer when resuming mid-phase, then `fit`. At the end every
layer is trainable again.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from rae_keras import data as data_lib
from rae_keras import distribute
from rae_keras.architecture import Autoencoder
from rae_keras.config import RunConfig
from rae_keras.loops import DistributedLoop
from rae_keras.runs import RunDirectory, TrainingState, image_shape_of
from rae_keras.schemes import Phase, phases_for
from rae_keras.summaries import PhaseSummaries


class TrainingDiverged(RuntimeError):
    """A non-finite loss or weight stopped training; the last finite checkpoint is kept."""


class _EpochCheckpoint(keras.callbacks.Callback):
    """Records the epoch in the state and writes a checkpoint after every epoch.

    An epoch whose loss or weights are not finite is never checkpointed: training stops
    with `TrainingDiverged`, so the run directory keeps the last finite state and a
    diverged model can never be resumed or exported as if it had trained.
    """

    def __init__(self, run: RunDirectory, autoencoder: Autoencoder, state: TrainingState,
                 phase_index: int, phase: Phase):
        super().__init__()
        self.run, self.autoencoder, self.state = run, autoencoder, state
        self.phase_index, self.phase = phase_index, phase
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self._refuse_non_finite(epoch, logs or {})
        self.state.record_epoch(self.phase_index, self.phase.name, logs or {},
                                time.perf_counter() - self._started)
        self.run.save_checkpoint(self.autoencoder, self.state, self.model.optimizer_variables())

    def _refuse_non_finite(self, epoch: int, logs: Dict[str, float]) -> None:
        bad = [f"{key} {float(value)}" for key, value in logs.items()
               if key in ("loss", "val_loss") and not math.isfinite(float(value))]
        bad += [f"weight {v.path}" for v in self.autoencoder.full_model().weights
                if not np.isfinite(keras.ops.convert_to_numpy(v)).all()][:1]
        if not bad:
            return
        kept = self.run.latest_checkpoint()
        raise TrainingDiverged(
            f"training diverged in {self.phase.name}, epoch {epoch + 1}: non-finite "
            f"{', '.join(bad)}; "
            + (f"the last finite checkpoint {os.path.basename(kept)} is kept"
               if kept else "no checkpoint was written")
            + "; lower --learning_rate (a changed setting needs --overwrite)")


def describe_phase(autoencoder: Autoencoder, phase: Phase) -> str:
    used = [layer for layer in autoencoder.layers
            if any(layer is l for l in phase.objective.layers)]
    training = [l.name for l in used if l.trainable]
    frozen = [l.name for l in used if not l.trainable]
    if phase.input_depth:
        prefix = autoencoder.encoder(phase.input_depth)
        frozen = [l.name for l in autoencoder.layers if any(l is p for p in prefix.layers)]
        frozen[-1] += f" (h{phase.input_depth} cached)"
    if phase.note:
        return f"{phase.name}: {phase.epochs} epoch(s); {phase.note}"
    return (f"{phase.name}: {phase.epochs} epoch(s); training {', '.join(training) or '-'}; "
            f"frozen {', '.join(frozen) or '-'}")


def train(config: RunConfig, splits: data_lib.DataSplits, run: RunDirectory, *,
          strategy: Optional[tf.distribute.Strategy] = None,
          custom_loop: Optional[bool] = None,
          log: Callable[[str], None] = print, verbose: Optional[int] = None
          ) -> tuple[Autoencoder, TrainingState]:
    """Trains (or resumes) the run; returns the trained autoencoder and final state.

    Every variable (layers, optimizers) is created under `strategy.scope()`;
    `config.train.batch_size` is per replica. MultiWorkerMirroredStrategy trains with
    the custom loop (Keras `fit` fails there), every other strategy with `fit`, unless
    `custom_loop` says otherwise.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    global_batch = config.train.batch_size * replicas
    policy = distribute.mixed_precision_policy(config.train.mixed_precision)
    keras.utils.set_random_seed(config.train.seed)
    with strategy.scope():
        autoencoder = Autoencoder(config.model, image_shape_of(config), dtype_policy=policy)
        autoencoder.full_model()  # creates every layer's variables inside the scope
        state = run.restore(autoencoder)
        phases = phases_for(autoencoder, config.train)
    if state.finished:
        log(f"{run.path}: training already finished ({state.epochs_done} epochs); not retraining")
        return autoencoder, state
    if len(splits.train.images) < global_batch:
        raise data_lib.DataError(
            f"{len(splits.train.images)} training images are fewer than one global batch "
            f"({config.train.batch_size} x {replicas} replicas)")
    if state.epochs_done:
        log(f"resuming {run.path} at phase {phases[state.phase].name}, epoch {state.epoch}")

    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    # Several replicas get equal whole batches: a partial batch could leave one empty.
    drop_remainder = replicas > 1
    steps_per_epoch = (len(splits.train.images) // global_batch if drop_remainder
                       else math.ceil(len(splits.train.images) / global_batch))
    summary_images = _summary_images(splits, config.train.summary_images)
    writer = tf.summary.create_file_writer(run.logs_dir)
    prefix_cache = _PrefixCache(autoencoder, splits)

    for index, phase in enumerate(phases):
        if index < state.phase:
            continue
        initial_epoch = state.epoch if index == state.phase else 0
        with strategy.scope():
            autoencoder.set_trainable(phase.trainable)
        log(describe_phase(autoencoder, phase))
        if initial_epoch >= phase.epochs:
            continue
        decay_steps = (phase.epochs * steps_per_epoch
                       if config.train.learning_rate_schedule == "cosine" else None)
        with strategy.scope():
            trainer = phase.build_trainer(
                lambda: distribute.make_optimizer(config.train.learning_rate, policy,
                                                  decay_steps),
                config.train.steps_per_execution)
            optimizer_variables = trainer.optimizer_variables()
            if initial_epoch and not run.restore_optimizer(optimizer_variables):
                log(f"warning: no optimizer state for {phase.name}; starting a fresh optimizer")
        train_inputs, test_inputs = prefix_cache.inputs_for(phase)
        train_ds = data_lib.epoch_batches(
            train_inputs, global_batch, seed=config.train.seed * 1000 + index,
            first_epoch=initial_epoch, epochs=phase.epochs, drop_remainder=drop_remainder)
        val_ds = (data_lib.make_dataset(test_inputs, global_batch, shuffle=False,
                                        drop_remainder=drop_remainder)
                  if len(test_inputs) >= (global_batch if drop_remainder else 1) else None)
        depth_models = ([autoencoder.depth_model(k) for k in range(1, phase.depth + 1)]
                        if phase.show_depths else [])
        callbacks = [
            _EpochCheckpoint(run, autoencoder, state, index, phase),
            PhaseSummaries(writer, phase.name, summary_images,
                           autoencoder.depth_model(phase.depth), depth_models,
                           global_epoch_offset=state.epochs_done - initial_epoch),
        ]
        fit_args = dict(epochs=phase.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch, validation_data=val_ds,
                        callbacks=callbacks, verbose=verbose)
        if custom_loop or (custom_loop is None and distribute.is_multi_worker(strategy)):
            DistributedLoop(trainer, strategy, config.train.steps_per_execution).fit(
                train_ds, **fit_args)
        else:
            trainer.fit(train_ds, shuffle=False, **fit_args)
        state.phase, state.epoch = index + 1, 0

    with strategy.scope():
        autoencoder.set_trainable(None)
    state.finished = True
    run.save_checkpoint(autoencoder, state)
    writer.close()
    log(f"finished {config.train.scheme} training: {state.epochs_done} epochs; "
        f"final losses {_final_losses(state)}")
    return autoencoder, state


class _PrefixCache:
    """h_d of the training and test images, for phases that consume a frozen prefix's
    output. Moving from h_(d-1) to h_d runs e_d alone, so a recursive schedule encodes
    every image once per stage, through one layer, instead of through the whole prefix.
    The values equal what the prefix computes every step (frozen layers, BatchNorm
    included, run in inference mode)."""

    def __init__(self, autoencoder: Autoencoder, splits: data_lib.DataSplits):
        self.autoencoder = autoencoder
        self.images = (splits.train.images, splits.test.images)
        self.depth, self.arrays = 0, self.images

    def inputs_for(self, phase: Phase):
        if phase.input_depth < self.depth:  # e.g. fine-tuning after the stages: start over
            self.depth, self.arrays = 0, self.images
        while self.depth < phase.input_depth:
            self.depth += 1
            block = self.autoencoder.encoder_block(self.depth)
            self.arrays = tuple(self._apply(block, a) for a in self.arrays)
        return self.arrays

    def _apply(self, block: keras.Model, images: np.ndarray) -> np.ndarray:
        if not len(images):
            return np.zeros((0,) + self.autoencoder.shape_at(self.depth), np.float32)
        return np.asarray(block.predict(images, batch_size=256, verbose=0), np.float32)


def _summary_images(splits: data_lib.DataSplits, count: int) -> np.ndarray:
    source = splits.test.images if len(splits.test.images) >= count else splits.train.images
    return source[:count]


def _final_losses(state: TrainingState) -> Dict[str, float]:
    return {h["phase"]: round(h["loss"][-1], 6) for h in state.history if h["loss"]}
