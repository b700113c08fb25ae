"""Bad settings are one named error before any work; divergence stops training cleanly."""

import dataclasses
import math
import os

import numpy as np
import pytest
from absl.testing import flagsaver

from rae_keras import data as data_lib
from rae_keras import flags as flags_lib
from rae_keras import runs, train, training
from rae_keras.models import ConvAutoencoder
from rae_keras.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig


def _parse(*args):
    flags_lib.FLAGS.unparse_flags()
    flags_lib.FLAGS(["train", *args])
    return flags_lib.run_config_from_flags()


@pytest.mark.parametrize("flag, named", [
    ("--learning_rate=nan", "learning_rate"),
    ("--learning_rate=0", "learning_rate"),
    ("--learning_rate=-1", "learning_rate"),
    ("--activation=swishy", "activation"),
    ("--kernel_initializer=zeroish", "kernel_initializer"),
    ("--image_size=65536", "image_size"),
    ("--max_images=-1", "max_images"),
    ("--summary_images=-2", "summary_images"),
    ("--seed=-1", "seed"),
])
@flagsaver.flagsaver
def test_bad_flag_values_are_config_errors_naming_the_flag(flag, named):
    with pytest.raises(ConfigError, match=named) as raised:
        _parse("--filters=4,8", flag)
    assert "\n" not in str(raised.value)


@flagsaver.flagsaver
def test_keras_names_beyond_the_defaults_are_accepted():
    config = _parse("--filters=4,8", "--activation=gelu", "--kernel_initializer=he_uniform")
    assert (config.model.activation, config.model.kernel_initializer) == ("gelu", "he_uniform")


@pytest.mark.parametrize("weights", [(1.0, math.nan), (1.0, -0.5), (0.0, 0.0)])
def test_level_weights_must_be_finite_non_negative_and_not_all_zero(weights):
    with pytest.raises(ConfigError, match="level_weights"):
        TrainConfig(scheme="joint", level_weights=weights).validate()


def test_the_train_driver_reports_divergence_as_one_line():
    assert training.TrainingDiverged in train.ERRORS


# --------------------------------------------------------------------------- divergence
def _splits(n_train=32, n_test=8, size=16):
    images = np.random.default_rng(0).random((n_train + n_test, size, size, 1), np.float32)
    ids = np.array([f"p{i}" for i in range(len(images))])
    return data_lib.DataSplits(train=data_lib.Split(images[:n_train], ids[:n_train]),
                               test=data_lib.Split(images[n_train:], ids[n_train:]),
                               skipped=())


def _config(tmp_path, **train):
    return RunConfig(
        name="t", model_dir=str(tmp_path / "run"), data=DataConfig(image_size=16),
        model=ModelConfig(filters=(4, 8)),
        train=TrainConfig(scheme="recursive", batch_size=16, summary_images=2, **train),
    ).validate()


def _train(config):
    with runs.RunDirectory(config.model_dir, keep_checkpoints=100) as run:
        run.prepare(config)
        return run, training.train(config, _splits(), run, log=lambda s: None, verbose=0)


def _checkpoint_weights(config, path):
    autoencoder = ConvAutoencoder.from_model_config(config.model, runs.image_shape_of(config))
    autoencoder.full_model().load_weights(os.path.join(path, "model.weights.h5"))
    return [w.numpy() for w in autoencoder.full_model().weights]


def test_divergence_stops_naming_phase_and_epoch_and_keeps_the_finite_checkpoint(
        tmp_path, monkeypatch):
    """Epoch 2 of stage 1 is poisoned: its checkpoint must never be written."""
    poison = training._EpochEnd.on_epoch_begin

    def on_epoch_begin(self, epoch, logs=None):
        if (self.phase_index, epoch) == (0, 1):
            kernel = self.autoencoder.full_model().weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))
        poison(self, epoch, logs)

    monkeypatch.setattr(training._EpochEnd, "on_epoch_begin", on_epoch_begin)
    config = _config(tmp_path, epochs=3)
    with pytest.raises(training.TrainingDiverged, match=r"stage_1, epoch 2") as raised:
        _train(config)
    assert "ckpt-000001" in str(raised.value) and "\n" not in str(raised.value)
    run = runs.RunDirectory(config.model_dir)
    assert [n for n, _ in run.checkpoints()] == [1]
    assert all(np.isfinite(w).all() for w in _checkpoint_weights(config, run.checkpoints()[0][1]))


def test_a_huge_learning_rate_diverges_instead_of_training_through_nan(tmp_path):
    config = _config(tmp_path, epochs=2, learning_rate=1e6)
    with pytest.raises(training.TrainingDiverged, match="non-finite"):
        _train(config)
    run = runs.RunDirectory(config.model_dir)
    for _, path in run.checkpoints():  # whatever was kept is finite
        assert all(np.isfinite(w).all() for w in _checkpoint_weights(config, path))


def test_an_unchanged_learning_rate_trains_without_false_alarms(tmp_path):
    config = _config(tmp_path, epochs=1)
    _, (_, state) = _train(config)
    assert state.finished and all(np.isfinite(h["loss"]).all() for h in state.history)
    assert dataclasses.asdict(state)["history"][0]["phase"] == "stage_1"
