"""The training schemes: freezing proven on weights, losses proven on a batch, resume."""

import dataclasses
import glob
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from rae_keras import data as data_lib
from rae_keras import distribute, objectives, runs, training
from rae_keras.models import ConvAutoencoder
from rae_keras.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rae_keras.objectives import ReconstructionTrainer


def _splits(n_train=48, n_test=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth random images (sums of blobs) train more like faces than white noise.
    grid = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = []
    for _ in range(n_train + n_test):
        cx, cy, s = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.6)
        images.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / s)[..., None])
    images = np.stack(images).astype(np.float32)
    ids = np.array([f"p{i}" for i in range(len(images))])
    return data_lib.DataSplits(
        train=data_lib.Split(images[:n_train], ids[:n_train]),
        test=data_lib.Split(images[n_train:], ids[n_train:]),
        skipped=())


def _config(tmp_path, scheme="recursive", epochs=1, normalization="none", filters=(4, 8, 8),
            schedule="constant"):
    return RunConfig(
        name="t", model_dir=str(tmp_path / "run"),
        data=DataConfig(image_size=16, channels=1),
        model=ModelConfig(filters=filters, normalization=normalization),
        train=TrainConfig(scheme=scheme, epochs=epochs, batch_size=16, learning_rate=3e-3,
                          learning_rate_schedule=schedule, summary_images=4),
    ).validate()


def _train(config, splits=None, keep=100):
    """Trains in a run directory that is closed (unlocked) again when this returns."""
    with runs.RunDirectory(config.model_dir, keep_checkpoints=keep) as run:
        run.prepare(config)
        autoencoder, state = training.train(config, splits or _splits(), run,
                                            log=lambda s: None, verbose=0)
    return run, autoencoder, state


def _initial_weights(config):
    """The weights `train` starts from: it seeds, then builds the autoencoder."""
    keras.utils.set_random_seed(config.train.seed)
    return _layer_weights(ConvAutoencoder.from_model_config(config.model, runs.image_shape_of(config)))


def _layer_weights(autoencoder):
    return {layer.name: [v.numpy().copy() for v in layer.weights] for layer in autoencoder.stage_leaf_layers()}


def _checkpoint_weights(config, checkpoint):
    autoencoder = ConvAutoencoder.from_model_config(config.model, runs.image_shape_of(config))
    autoencoder.full_model().load_weights(os.path.join(checkpoint, "model.weights.h5"))
    return _layer_weights(autoencoder)


def _identical(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _all_changed(a, b):
    return all(not np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("normalization", ["none", "batch", "shared_batch"])
def test_each_recursive_stage_changes_exactly_its_own_layers(tmp_path, normalization):
    config = _config(tmp_path, normalization=normalization)
    run, autoencoder, _ = _train(config)
    # One epoch per stage: checkpoint k holds the weights at the end of stage k.
    stage_ends = [path for _, path in run.checkpoints()][:autoencoder.num_stages]
    before = _initial_weights(config)
    for k, checkpoint in enumerate(stage_ends, start=1):
        after = _checkpoint_weights(config, checkpoint)
        own = {layer.name for layer in autoencoder.stage_layers(k)}
        for name in before:
            if name in own:
                assert _all_changed(before[name], after[name]), f"stage {k} left {name} unchanged"
            else:
                assert _identical(before[name], after[name]), f"stage {k} changed {name}"
        before = after


def test_stacked_changes_every_layer_and_leaves_all_trainable(tmp_path):
    config = _config(tmp_path, scheme="stacked", normalization="batch")
    _, autoencoder, _ = _train(config)
    before, after = _initial_weights(config), _layer_weights(autoencoder)
    for name in before:
        assert _all_changed(before[name], after[name]), f"stacked left {name} unchanged"


@pytest.mark.parametrize("scheme", ["stacked", "recursive"])
def test_no_layer_is_left_frozen(tmp_path, scheme):
    _, autoencoder, _ = _train(_config(tmp_path, scheme=scheme))
    assert all(layer.trainable for layer in autoencoder.stage_leaf_layers())
    full = autoencoder.full_model()
    assert len(full.trainable_weights) == len(full.weights)


def test_recursive_stage_loss_targets_previous_activation():
    keras.utils.set_random_seed(1)
    autoencoder = ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8)), (16, 16, 1))
    x = _splits().train.images[:8]
    # By hand, layer by layer: stage 2 reconstructs h_1 = e1(x), not the image.
    h1 = np.asarray(autoencoder.encoders[0](x))
    reconstruction = np.asarray(autoencoder.decoders[1](autoencoder.encoders[1](h1)))
    expected = np.mean((reconstruction - h1) ** 2)

    trainer = ReconstructionTrainer(objectives.stage_objective(autoencoder, 2))
    trainer.compile(optimizer="adam")
    loss = trainer.evaluate(x, batch_size=8, verbose=0)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    image_loss = np.mean((np.asarray(autoencoder.full_model()(x)) - x) ** 2)
    assert abs(loss - image_loss) > 1e-4


def test_recursive_stage_gradient_reaches_only_its_pair():
    autoencoder = ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8, 8)), (16, 16, 1))
    autoencoder.set_trainable(autoencoder.stage_layers(2))
    trainer = ReconstructionTrainer(objectives.stage_objective(autoencoder, 2))
    names = sorted({v.path.split("/")[0] for v in trainer.trainable_weights})
    assert names == ["d2", "e2"]
    autoencoder.set_trainable(None)


class _Killed(Exception):
    pass


def _kill_after_checkpoints(monkeypatch, count):
    real = runs.RunDirectory.save_checkpoint
    calls = {"n": 0}

    def save_then_maybe_die(self, *args, **kwargs):
        path = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == count:
            raise _Killed(path)
        return path

    monkeypatch.setattr(runs.RunDirectory, "save_checkpoint", save_then_maybe_die)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_mid_stage_equals_an_uninterrupted_run(tmp_path, monkeypatch, schedule):
    """Same batches and the restored optimizer state (its step count drives the cosine)."""
    splits = _splits()
    straight = _config(tmp_path / "a", epochs=2, filters=(4, 8), schedule=schedule)
    _, uninterrupted, straight_state = _train(straight, splits)

    config = _config(tmp_path / "b", epochs=2, filters=(4, 8), schedule=schedule)
    with monkeypatch.context() as m:
        _kill_after_checkpoints(m, 3)  # stage 1 done (2 epochs), stage 2 after epoch 1
        with pytest.raises(_Killed):
            _train(config, splits)
    run = runs.RunDirectory(config.model_dir)
    end_of_stage_1 = _checkpoint_weights(config, run.checkpoints()[1][1])
    _, resumed, state = _train(config, splits)

    assert [len(h["loss"]) for h in state.history] == [2, 2]
    assert state.history[0]["loss"] == straight_state.history[0]["loss"]
    np.testing.assert_allclose(state.history[1]["loss"], straight_state.history[1]["loss"],
                               rtol=1e-6)
    final = _layer_weights(resumed)
    assert _identical(final["e1"], end_of_stage_1["e1"])
    assert _identical(final["d1"], end_of_stage_1["d1"])
    expected = _layer_weights(uninterrupted)
    for name in expected:  # same batches and optimizer state -> the same weights
        for a, b in zip(final[name], expected[name]):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_finished_run_is_not_retrained(tmp_path):
    config = _config(tmp_path, filters=(4, 8))
    run, _, state = _train(config)
    checkpoints = run.checkpoints()
    _, autoencoder, again = _train(config)
    assert again.finished and run.checkpoints() == checkpoints
    assert again.history == state.history


def test_other_configuration_is_refused_unless_overwrite(tmp_path):
    config = _config(tmp_path, filters=(4, 8))
    _train(config)
    other = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3))
    with pytest.raises(runs.RunDirError, match="epochs"):
        runs.RunDirectory(other.model_dir).prepare(other)
    with runs.RunDirectory(other.model_dir) as run:
        run.prepare(other, overwrite=True)
        assert run.latest_checkpoint() is None


def test_tensorboard_has_losses_per_stage_and_image_grids(tmp_path):
    config = _config(tmp_path, filters=(4, 8))
    run, _, _ = _train(config)
    tags = set()
    for event_file in glob.glob(os.path.join(run.logs_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags.update(value.tag for value in event.summary.value)
    assert {"loss/stage_1", "loss/stage_2", "val_loss/stage_2",
            "reconstruction/stage_1", "depths/stage_2"} <= tags


def test_cosine_schedule_decays_each_phase_to_zero(tmp_path):
    optimizer = distribute.make_optimizer(1e-3, None, decay_steps=10)
    rates = []
    for step in (0, 5, 10):
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    np.testing.assert_allclose(rates, [1e-3, 5e-4, 0.0], atol=1e-9)
    constant = distribute.make_optimizer(1e-3, None)
    constant.iterations.assign(10)
    assert float(keras.ops.convert_to_numpy(constant.learning_rate)) == pytest.approx(1e-3)


def test_cosine_schedule_spans_each_phase(tmp_path, monkeypatch):
    splits = _splits()  # 48 training images, batch 16: 3 steps per epoch
    made = []

    def recording(learning_rate, policy, decay_steps=None):
        made.append(decay_steps)
        return make_optimizer(learning_rate, policy, decay_steps)

    make_optimizer = distribute.make_optimizer
    monkeypatch.setattr(distribute, "make_optimizer", recording)
    _train(_config(tmp_path / "k", epochs=2, filters=(4, 8), schedule="cosine"), splits)
    steps = math.ceil(len(splits.train.images) / 16)
    assert made == [2 * steps, 2 * steps]
    made.clear()
    _train(_config(tmp_path / "c", epochs=2, filters=(4, 8)), splits)
    assert made == [None, None]
