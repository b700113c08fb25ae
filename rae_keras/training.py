"""Stage-wise training of a StagedAutoencoder: `fit` runs a scheme's phases.

For every phase: set `trainable` on the layers, build a fresh trainer and optimizer,
compile (Keras reads `trainable` when it builds the train function, so the order
matters), restore the optimizer when resuming mid-phase, then Keras `fit`. At the end
every layer is trainable again. With a run directory every epoch is checkpointed, a
killed run resumes exactly where it stopped, and a finished run is not retrained.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from rae_keras import data as data_lib
from rae_keras import distribute, inputs, records
from rae_keras.config import (ARRAYS, ConfigError, DataConfig, ModelConfig, RunConfig,
                              TrainConfig)
from rae_keras.models import ConvAutoencoder, StagedAutoencoder
from rae_keras.runs import RunDirectory, TrainingState, image_shape_of
# TrainingDiverged is part of the public API (rae_keras.TrainingDiverged).
from rae_keras.phase_loop import History, TrainingDiverged, history_of, run_phases  # noqa: F401


def fit(model: StagedAutoencoder, x, scheme: str = "recursive", epochs: int = 1,
        batch_size: int = 32, validation_data=None, model_dir: Optional[str] = None,
        callbacks: Sequence[keras.callbacks.Callback] = (), *, overwrite: bool = False,
        strategy: Optional[tf.distribute.Strategy] = None, custom_loop: Optional[bool] = None,
        verbose="auto", log: Callable[[str], None] = print,
        run_config: Optional[RunConfig] = None, **options) -> History:
    """Trains `model` with `scheme` on `x` and returns the history of every phase
    (`{phase: {"loss": [...], "val_loss": [...], "seconds": [...]}}`).

    `x` and `validation_data`: numpy arrays or tf.data.Datasets of inputs (floats in
    [0, 1]; uint8 is scaled by 1/255). `epochs` is per stage for the recursive schemes;
    `options` are the other TrainConfig fields (learning_rate, finetune_epochs,
    level_weights, learning_rate_schedule, seed, cache_frozen_prefix, ...).
    With `model_dir` the run is written there and resumed from there: a directory that
    holds a run of another model, scheme or data is refused unless `overwrite`.
    `callbacks` see every phase's events (one `fit` per phase; a callback with an
    `on_phase_begin(name, index)` method is told which phase starts). Build the model in
    `strategy.scope()` to train it under that strategy.
    """
    try:
        config = TrainConfig(scheme=scheme, epochs=epochs, batch_size=batch_size, **options)
    except TypeError as e:
        raise ConfigError(f"fit: {e}") from None
    config.validate()
    if config.level_weights and len(config.level_weights) != model.num_stages:
        raise ConfigError(f"level_weights has {len(config.level_weights)} values for a model "
                          f"of {model.num_stages} stages (one per level)")
    train_x = _as_images(x, model, "x")
    val_x = (_as_images(validation_data, model, "validation_data")
             if validation_data is not None else None)
    if not model_dir:
        state = run_phases(model, config, train_x, val_x, None, strategy=strategy,
                           callbacks=callbacks, custom_loop=custom_loop, log=log,
                           verbose=verbose)
        return history_of(state)
    run_config = describe_run(model, config, train_x, model_dir, run_config)
    if not overwrite:
        _refuse_other_data(model_dir, run_config.data_fingerprint)
    with RunDirectory(model_dir, log=log) as run:
        run.prepare(run_config, overwrite=overwrite)
        state = run_phases(model, config, train_x, val_x, run, strategy=strategy,
                           callbacks=callbacks, custom_loop=custom_loop, log=log,
                           verbose=verbose)
    return history_of(state)


def _as_images(x, model: StagedAutoencoder, name: str):
    """A RecordSet (`data.stream_splits`) streams from disk as it is; anything else is
    checked and held in memory (an ArraySet)."""
    if isinstance(x, records.RecordSet):
        if x.sample_shape != tuple(model.sample_shape):
            raise inputs.InputError(f"{name} has samples of shape {x.sample_shape}; the "
                                    f"model takes {tuple(model.sample_shape)}")
        return x
    return records.ArraySet(inputs.as_array(x, model.sample_shape, name=name))


def build_model(config: RunConfig, strategy: Optional[tf.distribute.Strategy] = None
                ) -> ConvAutoencoder:
    """`config`'s ConvAutoencoder, seeded by its training seed, every variable created
    under `strategy` (mixed precision as the config asks)."""
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.train.seed)
    with strategy.scope():
        return ConvAutoencoder.from_model_config(
            config.model, image_shape_of(config),
            dtype=distribute.mixed_precision_policy(config.train.mixed_precision))


def train(config: RunConfig, splits: data_lib.DataSplits, run: RunDirectory, *,
          strategy: Optional[tf.distribute.Strategy] = None, custom_loop: Optional[bool] = None,
          log: Callable[[str], None] = print, verbose="auto"
          ) -> tuple[ConvAutoencoder, TrainingState]:
    """`config`'s network trained on `splits` in `run` (already prepared with `config`)."""
    model = build_model(config, strategy)
    state = run_phases(model, config.train, splits.train.images, splits.test.images, run,
                       strategy=strategy, custom_loop=custom_loop, log=log, verbose=verbose)
    return model, state


def describe_run(model: StagedAutoencoder, config: TrainConfig, train_x,
                 model_dir: str, run_config: Optional[RunConfig] = None) -> RunConfig:
    """What the run directory records: the driver's configuration (or one for data
    given in Python), the model's Keras config for `load`, and fingerprints of the
    architecture and the training data, so a rerun on other data is refused.
    The model section describes the network (a ConvAutoencoder's settings; for another
    network the channels of h_1..h_N): reading config.json back checks level_weights
    against its number of stages."""
    if run_config is None:
        shape = model.sample_shape
        image = model.is_image_model
        model_config = getattr(model, "model_config", None) or ModelConfig(
            filters=tuple(model.shape_at(k)[-1] for k in range(1, model.num_stages + 1)))
        run_config = RunConfig(
            name=os.path.basename(os.path.normpath(model_dir)) or "run", model_dir=model_dir,
            data=DataConfig(dataset=ARRAYS, image_size=shape[0] if image else 0,
                            channels=shape[-1] if image else 0),
            model=model_config)
    return dataclasses.replace(
        run_config, train=config, data_fingerprint=records.as_image_set(train_x).fingerprint(),
        model_fingerprint=model.structure_fingerprint(),
        keras_model=json.dumps(keras.saving.serialize_keras_object(model)))


def _refuse_other_data(model_dir: str, fingerprint: str) -> None:
    """The one mismatch a notebook makes by accident gets its own message."""
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        return
    recorded = RunDirectory(model_dir).load_config().data_fingerprint
    if recorded and recorded != fingerprint:
        raise inputs.InputError(
            f"{model_dir} was trained on other data (fingerprint {recorded[:12]}, this x is "
            f"{fingerprint[:12]}); pass overwrite=True to start over, or another model_dir")
