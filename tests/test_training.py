"""Training: the recursive stage objective by hand, shared BatchNormalization and the
cosine schedule under the scheme contract, run directories, TensorBoard. Every scheme's freezing and resume contract is checked in
test_schemes.py (`rae_keras.contracts.check_scheme`)."""

import dataclasses
import glob
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from rae_keras import contracts, distribute, objectives, runs, testing
from rae_keras.objectives import ReconstructionTrainer


def test_recursive_contract_holds_with_shared_batch_norm_and_cosine_schedule():
    """One BatchNormalization shared by e_k and d_(k+1) belongs to stage k and is frozen
    after it; a resumed phase continues the cosine (the restored optimizer's step count)."""
    contracts.check_scheme("recursive", normalization="shared_batch",
                         learning_rate_schedule="cosine")


def test_recursive_stage_loss_targets_previous_activation():
    autoencoder = testing.tiny_autoencoder(seed=1)
    x = testing.smooth_images(8)
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
    autoencoder = testing.tiny_autoencoder(filters=(4, 8, 8))
    autoencoder.set_trainable(autoencoder.stage_layers(2))
    trainer = ReconstructionTrainer(objectives.stage_objective(autoencoder, 2))
    names = sorted({v.path.split("/")[0] for v in trainer.trainable_weights})
    assert names == ["d2", "e2"]
    autoencoder.set_trainable(None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run (2 stages, 2 epochs each, constant learning rate) that several
    tests read: (config, run, state, the decay_steps of each optimizer it made)."""
    made = []
    make_optimizer = distribute.make_optimizer

    def recording(learning_rate, policy, decay_steps=None):
        made.append(decay_steps)
        return make_optimizer(learning_rate, policy, decay_steps)

    config = testing.tiny_config(tmp_path_factory.mktemp("finished") / "run", epochs=2,
                                 filters=(4, 8))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distribute, "make_optimizer", recording)
        run, _, state = testing.train(config)
    return config, run, state, made


def test_tensorboard_has_losses_per_stage_and_image_grids(finished):
    _, run, _, _ = finished
    steps = {}
    for event_file in glob.glob(os.path.join(run.logs_dir, "**", "events.out.tfevents.*"),
                                recursive=True):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    assert {"loss/stage_1", "loss/stage_2", "val_loss/stage_2",
            "reconstruction/stage_1", "depths/stage_2"} <= set(steps)
    assert sorted(steps["loss/stage_2"]) == [3, 4]  # every epoch, counted over the run
    # image grids once per stage, at its last epoch
    assert steps["reconstruction/stage_1"] == [2] and steps["depths/stage_2"] == [4]


def test_finished_run_is_not_retrained(finished):
    config, run, state, _ = finished
    checkpoints = run.checkpoints()
    _, autoencoder, again = testing.train(config)
    assert again.finished and run.checkpoints() == checkpoints
    assert again.history == state.history


def test_other_configuration_is_refused_unless_overwrite(tmp_path):
    config = testing.tiny_config(tmp_path / "run", filters=(4, 8))
    testing.train(config)
    other = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3))
    with pytest.raises(runs.RunDirError, match="epochs"):
        runs.RunDirectory(other.model_dir).prepare(other)
    with runs.RunDirectory(other.model_dir) as run:
        run.prepare(other, overwrite=True)
        assert run.latest_checkpoint() is None


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


def test_cosine_schedule_spans_each_phase(tmp_path, monkeypatch, finished):
    splits = testing.tiny_splits()  # 48 training images, batch 16: 3 steps per epoch
    made = []

    def recording(learning_rate, policy, decay_steps=None):
        made.append(decay_steps)
        return make_optimizer(learning_rate, policy, decay_steps)

    make_optimizer = distribute.make_optimizer
    monkeypatch.setattr(distribute, "make_optimizer", recording)
    testing.train(testing.tiny_config(tmp_path / "k", epochs=2, filters=(4, 8),
                                      learning_rate_schedule="cosine"), splits)
    steps = math.ceil(len(splits.train.images) / 16)
    assert made == [2 * steps, 2 * steps]
    assert finished[3] == [None, None]  # the same run with a constant learning rate


def test_saving_with_remembered_skipsets_writes_the_same_weights_file(tmp_path):
    import h5py

    from rae_keras import checkpoints

    def contents(path):
        found = []
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, item: found.append(
                (name, sorted(item.attrs.items()),
                 item[()].tobytes() if isinstance(item, h5py.Dataset) else None)))
        return found

    from keras.src.backend.common import global_state

    for obj_type in checkpoints._SKIPSET_TYPES:  # as Keras has them: not remembered
        global_state.set_global_attribute(f"saving_attr_skiplist_{obj_type}", None)
    model = testing.tiny_autoencoder().full_model()
    model.save_weights(str(tmp_path / "keras.weights.h5"))
    checkpoints.remember_keras_skipsets()
    model.save_weights(str(tmp_path / "remembered.weights.h5"))
    assert contents(tmp_path / "keras.weights.h5") == contents(tmp_path / "remembered.weights.h5")
