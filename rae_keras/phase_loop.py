"""The loop under `fit`: one Keras `fit` (or custom distributed loop) per phase.

For every phase: set `trainable` on the layers, build a fresh trainer and optimizer,
compile (Keras reads `trainable` when it builds the train function, so the order
matters), restore the optimizer when resuming mid-phase, then train. Every epoch ends
in `_EpochEnd`: the divergence check, then the checkpoint, so a killed run resumes
exactly where it stopped. `training` holds the entry points that set this up.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from rae_keras import checkpoints, distribute, inputs, records
from rae_keras.config import TrainConfig
from rae_keras.loops import DistributedLoop
from rae_keras.models import StagedAutoencoder
from rae_keras.runs import RunDirectory, TrainingState
from rae_keras.schemes import Phase, phases_for
from rae_keras import summaries
from rae_keras.summaries import PhaseSummaries

History = Dict[str, Dict[str, List[float]]]


class TrainingDiverged(RuntimeError):
    """A non-finite loss or weight stopped training; the last finite checkpoint is kept."""


def history_of(state: TrainingState) -> History:
    return {h["phase"]: {key: list(h[key]) for key in ("loss", "val_loss", "seconds")}
            for h in state.history}


# --------------------------------------------------------------------------- phases
def run_phases(model: StagedAutoencoder, config: TrainConfig, train_x, val_x,
               run: Optional[RunDirectory], *,
               strategy: Optional[tf.distribute.Strategy] = None,
               callbacks: Sequence[keras.callbacks.Callback] = (),
               custom_loop: Optional[bool] = None, log: Callable[[str], None] = print,
               verbose="auto") -> TrainingState:
    """Runs (or resumes) the scheme's phases on `model`; returns the final state.

    `config.batch_size` is per replica. MultiWorkerMirroredStrategy trains with the
    custom loop (Keras `fit` fails there), every other strategy with `fit`, unless
    `custom_loop` says otherwise.
    """
    strategy = strategy or tf.distribute.get_strategy()
    train_x = records.as_image_set(train_x)  # numpy arrays or a RecordSet
    val_x = records.as_image_set(val_x if val_x is not None else
                                 np.zeros((0,) + tuple(train_x.sample_shape), np.float32))
    with strategy.scope():
        state = run.restore(model) if run else TrainingState()
        phases = phases_for(model, config)
    if state.finished:
        log(f"{run.path}: training already finished ({state.epochs_done} epochs); not retraining")
        return state
    replicas = strategy.num_replicas_in_sync
    if len(train_x) < config.batch_size * replicas:
        raise inputs.InputError(
            f"{len(train_x)} training samples are fewer than one global batch "
            f"({config.batch_size} x {replicas} replicas)")
    if state.epochs_done:
        log(f"resuming {run.path} at phase {phases[state.phase].name}, epoch {state.epoch}")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    runner = _PhaseRunner(model, config, train_x, val_x, run, state, strategy, list(callbacks),
                          custom_loop, log, verbose)
    for index, phase in enumerate(phases):
        if index >= state.phase:
            runner.train_phase(index, phase, state.epoch if index == state.phase else 0)
            state.phase, state.epoch = index + 1, 0
    with strategy.scope():
        model.set_trainable(None)
    state.finished = True
    if run:
        run.save_checkpoint(model, state)
    runner.close()
    log(f"finished {config.scheme} training: {state.epochs_done} epochs")
    return state


def batching(batch_size: int, replicas: int, num_samples: int):
    """(global batch, drop_remainder, steps per epoch) of `batch_size` per replica.
    Several replicas get equal whole batches: a partial batch could leave one empty."""
    global_batch = batch_size * replicas
    drop_remainder = replicas > 1
    steps = (num_samples // global_batch if drop_remainder
             else math.ceil(num_samples / global_batch))
    return global_batch, drop_remainder, steps


class _PhaseRunner:
    """What every phase of one run shares (batches, summaries, the prefix cache), and
    one phase's work: freeze, build a fresh trainer, restore its optimizer when
    resuming, then Keras `fit` (or the custom loop) over exactly the remaining epochs."""

    def __init__(self, model, config, train_x, val_x, run, state, strategy, callbacks,
                 custom_loop, log, verbose):
        self.model, self.config, self.run, self.state = model, config, run, state
        self.strategy, self.callbacks, self.log, self.verbose = strategy, callbacks, log, verbose
        self.custom_loop = custom_loop if custom_loop is not None else \
            distribute.is_multi_worker(strategy)
        self.global_batch, self.drop_remainder, self.steps_per_epoch = batching(
            config.batch_size, strategy.num_replicas_in_sync, len(train_x))
        self.workers = _input_workers(strategy, train_x) if self.custom_loop else 1
        if self.workers > 1:  # each worker reads its own shards
            self.steps_per_epoch = train_x.worker_steps(self.global_batch, self.workers)
            if not self.steps_per_epoch:
                raise inputs.InputError(f"a worker's shards of the {len(train_x)} training "
                                        f"samples hold less than its share of one batch")
        name = model.dtype_policy.name
        self.policy = name if name.startswith("mixed") else None
        self.writer = (summaries.summary_writer(run.logs_dir, summaries.run_name(run.path))
                       if run else None)
        shown = val_x if len(val_x) >= config.summary_images else train_x
        self.summary_images = shown.head(config.summary_images if model.is_image_model else 0)
        self.prefix_cache = records.PrefixCache(model, train_x, val_x)

    def train_phase(self, index: int, phase: Phase, initial_epoch: int) -> None:
        with self.strategy.scope():
            self.model.set_trainable(phase.trainable)
        self.log(phase.describe(self.model))
        if initial_epoch >= phase.epochs:
            return
        trainer = self._trainer(phase, initial_epoch)
        train_ds, val_ds = self._datasets(index, phase, initial_epoch)
        for callback in self.callbacks:
            if hasattr(callback, "on_phase_begin"):
                callback.on_phase_begin(phase.name, index)
        fit_args = dict(epochs=phase.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=self.steps_per_epoch, validation_data=val_ds,
                        callbacks=self._callbacks(index, phase, initial_epoch),
                        verbose=self.verbose)
        if self.custom_loop:
            DistributedLoop(trainer, self.strategy, self.config.steps_per_execution).fit(
                train_ds, **fit_args)
        else:
            trainer.fit(train_ds, shuffle=False, **fit_args)

    def _trainer(self, phase: Phase, initial_epoch: int) -> keras.Model:
        """A trainer compiled after `trainable` was set, with a fresh optimizer (its
        state restored from the checkpoint when the phase is resumed)."""
        config = self.config
        decay_steps = (phase.epochs * self.steps_per_epoch
                       if config.learning_rate_schedule == "cosine" else None)
        with self.strategy.scope():
            trainer = phase.build_trainer(
                lambda: distribute.make_optimizer(config.learning_rate, self.policy,
                                                  decay_steps),
                config.steps_per_execution)
            variables = trainer.optimizer_variables()
            if initial_epoch and self.run and not self.run.restore_optimizer(variables):
                self.log(f"warning: no optimizer state for {phase.name}; starting a fresh "
                         "optimizer")
        return trainer

    def _datasets(self, index: int, phase: Phase, initial_epoch: int):
        """The batches of the remaining epochs (each epoch's order a function of the
        seed, phase and epoch alone: a resumed run sees the same ones) and validation."""
        train_inputs, val_inputs = self.prefix_cache.inputs_at(phase.input_depth)
        seed = self.config.seed * 1000 + index
        train_ds = train_inputs.epoch_batches(
            self.global_batch, seed=seed, first_epoch=initial_epoch, epochs=phase.epochs,
            drop_remainder=self.drop_remainder)
        if self.workers > 1:
            train_ds = functools.partial(self._worker_batches, train_inputs, seed, initial_epoch,
                                         phase.epochs)
        enough = len(val_inputs) >= (self.global_batch if self.drop_remainder else 1)
        val_ds = (val_inputs.batches(self.global_batch, drop_remainder=self.drop_remainder)
                  if enough else None)
        return train_ds, val_ds

    def _worker_batches(self, inputs, seed, first_epoch, epochs, context):
        """One worker's batches, from its own shards (distribute_datasets_from_function):
        per-replica batches, steps_per_epoch for each of its replicas every epoch."""
        per_replica = context.get_per_replica_batch_size(self.global_batch)
        local = self.global_batch // per_replica // context.num_input_pipelines
        return inputs.for_worker(context.input_pipeline_id, context.num_input_pipelines
                                 ).epoch_batches(per_replica, seed=seed, first_epoch=first_epoch,
                                                 epochs=epochs, drop_remainder=True,
                                                 steps=self.steps_per_epoch * local)

    def _callbacks(self, index: int, phase: Phase, initial_epoch: int) -> list:
        own = [_EpochEnd(self.model, self.run, self.state, index, phase)]
        if self.writer is not None:
            depths = (range(1, phase.depth + 1) if phase.show_depths else ())
            own.append(PhaseSummaries(
                self.writer, phase.name, self.summary_images,
                self.model.depth_model(phase.depth), [self.model.depth_model(k) for k in depths],
                global_epoch_offset=self.state.epochs_done - initial_epoch,
                last_epoch=phase.epochs - 1))
        return own + self.callbacks

    def close(self) -> None:
        self.prefix_cache.close()
        if self.writer is not None:
            self.writer.close()


class _EpochEnd(keras.callbacks.Callback):
    """Records every epoch in the state and checkpoints it (with a run directory).

    An epoch whose loss or weights are not finite is never recorded: training stops
    with `TrainingDiverged`, so the run directory keeps the last finite state and a
    diverged model can never be resumed or exported as if it had trained.
    """

    def __init__(self, model: StagedAutoencoder, run: Optional[RunDirectory],
                 state: TrainingState, phase_index: int, phase: Phase):
        super().__init__()
        self.autoencoder, self.run, self.state = model, run, state
        self.phase_index, self.phase = phase_index, phase
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self._refuse_non_finite(epoch, logs or {})
        self.state.record_epoch(self.phase_index, self.phase.name, logs or {},
                                time.perf_counter() - self._started)
        if self.run:
            checkpoints.remember_keras_skipsets()
            self.run.save_checkpoint(self.autoencoder, self.state,
                                     self.model.optimizer_variables())

    def _refuse_non_finite(self, epoch: int, logs: Dict[str, float]) -> None:
        bad = [f"{key} {float(value)}" for key, value in logs.items()
               if key in ("loss", "val_loss") and not math.isfinite(float(value))]
        weight = self.autoencoder.first_non_finite_weight()
        bad += [f"weight {weight}"] if weight else []
        if not bad:
            return
        kept = self.run.latest_checkpoint() if self.run else None
        raise TrainingDiverged(
            f"training diverged in {self.phase.name}, epoch {epoch + 1}: non-finite "
            f"{', '.join(bad)}; "
            + (f"the last finite checkpoint {os.path.basename(kept)} is kept"
               if kept else "no checkpoint was written")
            + "; lower the learning rate (a changed setting needs --overwrite)")


def _input_workers(strategy: tf.distribute.Strategy, train_x) -> int:
    """How many workers read their own shards of the training stream: the workers of a
    multi-worker run on a RecordSet; 1 otherwise (every replica's batch cut from one)."""
    if not (distribute.is_multi_worker(strategy) and isinstance(train_x, records.RecordSet)):
        return 1
    return strategy.num_replicas_in_sync // max(1, len(strategy.extended.worker_devices))
