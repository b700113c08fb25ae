"""Bad settings are one named error before any work; divergence stops training cleanly."""

import dataclasses
import math

import numpy as np
import pytest
from absl.testing import flagsaver

from rae_keras import flags as flags_lib
from rae_keras import phase_loop, runs, testing, train, training
from rae_keras.config import ConfigError, TrainConfig


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
def _config(tmp_path, **train):
    return testing.tiny_config(tmp_path / "run", filters=(4, 8), **train)


def _finite(config, checkpoint):
    return all(np.isfinite(w).all()
               for ws in testing.checkpoint_weights(config, checkpoint).values() for w in ws)


def test_divergence_stops_naming_phase_and_epoch_and_keeps_the_finite_checkpoint(
        tmp_path, monkeypatch):
    """Epoch 2 of stage 1 is poisoned: its checkpoint must never be written."""
    poison = phase_loop._EpochEnd.on_epoch_begin

    def on_epoch_begin(self, epoch, logs=None):
        if (self.phase_index, epoch) == (0, 1):
            kernel = self.autoencoder.full_model().weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))
        poison(self, epoch, logs)

    monkeypatch.setattr(phase_loop._EpochEnd, "on_epoch_begin", on_epoch_begin)
    config = _config(tmp_path, epochs=3)
    with pytest.raises(training.TrainingDiverged, match=r"stage_1, epoch 2") as raised:
        testing.train(config)
    assert "ckpt-000001" in str(raised.value) and "\n" not in str(raised.value)
    run = runs.RunDirectory(config.model_dir)
    assert [n for n, _ in run.checkpoints()] == [1]
    assert _finite(config, run.checkpoints()[0][1])


def test_a_huge_learning_rate_diverges_instead_of_training_through_nan(tmp_path):
    config = _config(tmp_path, epochs=2, learning_rate=1e6)
    with pytest.raises(training.TrainingDiverged, match="non-finite"):
        testing.train(config)
    run = runs.RunDirectory(config.model_dir)
    assert all(_finite(config, path) for _, path in run.checkpoints())  # what was kept


def test_an_unchanged_learning_rate_trains_without_false_alarms(tmp_path):
    config = _config(tmp_path, epochs=1)
    _, _, state = testing.train(config)
    assert state.finished and all(np.isfinite(h["loss"]).all() for h in state.history)
    assert dataclasses.asdict(state)["history"][0]["phase"] == "stage_1"
