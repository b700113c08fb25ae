"""The interleaved, fine-tune and joint schemes (the first two in test_training.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from dataclasses import replace

from rae_keras import objectives, schemes
from rae_keras.models import ConvAutoencoder
from rae_keras.config import ModelConfig, TrainConfig
from rae_keras.objectives import ReconstructionTrainer

from test_training import (_Killed, _config, _initial_weights, _kill_after_checkpoints,
                           _layer_weights, _splits, _train)


def _sgd():
    return keras.optimizers.SGD(0.5)


def _twin_autoencoders(filters=(4, 8)):
    """Two autoencoders with identical initial weights."""
    a = ConvAutoencoder.from_model_config(ModelConfig(filters=filters), (16, 16, 1))
    b = ConvAutoencoder.from_model_config(ModelConfig(filters=filters), (16, 16, 1))
    b.full_model().set_weights(a.full_model().get_weights())
    return a, b


def test_interleaved_step_is_stage_steps_in_turn():
    images = _splits().train.images[:16]
    a, b = _twin_autoencoders()
    phase = schemes.recursive_interleaved(a, TrainConfig(epochs=1))[0]
    trainer = phase.build_trainer(_sgd)
    trainer.replica_train_step(tf.constant(images))

    # By hand: stage 1 steps, then stage 2 steps on h_1 from the *updated* e1.
    for k in (1, 2):
        b.set_trainable(b.stage_layers(k))
        stage = ReconstructionTrainer(objectives.stage_objective(b, k))
        stage.compile(optimizer=_sgd())
        stage.optimizer_variables()
        stage.replica_train_step(tf.constant(images))
    b.set_trainable(None)
    got, expected = _layer_weights(a), _layer_weights(b)
    for name in expected:
        for x, y in zip(got[name], expected[name]):
            np.testing.assert_allclose(x, y, atol=1e-6, err_msg=name)
    assert [int(o.iterations.numpy()) for o in trainer.stage_optimizers] == [1, 1]


def test_interleaved_stage_optimizers_own_only_their_pair():
    autoencoder = ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8, 8), normalization="batch"), (16, 16, 1))
    trainer = schemes.recursive_interleaved(autoencoder, TrainConfig())[0].build_trainer(_sgd)
    for k, variables in enumerate(trainer.stage_variables, start=1):
        own = {id(v) for l in autoencoder.stage_layers(k) for v in l.trainable_weights}
        assert {id(v) for v in variables} == own


@pytest.mark.parametrize("scheme", ["recursive_interleaved", "recursive_finetune", "joint"])
def test_scheme_trains_every_layer_and_leaves_all_trainable(tmp_path, scheme):
    config = _config(tmp_path, scheme=scheme, filters=(4, 8))
    config = replace(config, train=replace(config.train, finetune_epochs=1))
    _, autoencoder, state = _train(config)
    before, after = _initial_weights(config), _layer_weights(autoencoder)
    for name in before:
        assert all(not np.array_equal(x, y) for x, y in zip(before[name], after[name])), name
    assert all(layer.trainable for layer in autoencoder.stage_leaf_layers())
    expected_phases = {"recursive_interleaved": ["interleaved"], "joint": ["joint"],
                       "recursive_finetune": ["stage_1", "stage_2", "finetune"]}[scheme]
    assert [h["phase"] for h in state.history] == expected_phases


def test_finetune_zero_epochs_is_plain_recursive(tmp_path):
    autoencoder = ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8)), (16, 16, 1))
    phases = schemes.recursive_finetune(autoencoder, TrainConfig(finetune_epochs=0))
    assert [p.name for p in phases] == ["stage_1", "stage_2"]


def test_resume_interleaved_restores_every_stage_optimizer(tmp_path, monkeypatch):
    splits = _splits()
    straight = _config(tmp_path / "a", scheme="recursive_interleaved", epochs=3, filters=(4, 8))
    _, uninterrupted, _ = _train(straight, splits)
    config = _config(tmp_path / "b", scheme="recursive_interleaved", epochs=3, filters=(4, 8))
    with monkeypatch.context() as m:
        _kill_after_checkpoints(m, 2)
        with pytest.raises(_Killed):
            _train(config, splits)
    _, resumed, state = _train(config, splits)
    assert len(state.history[0]["loss"]) == 3
    expected = _layer_weights(uninterrupted)
    for name, values in _layer_weights(resumed).items():
        for x, y in zip(values, expected[name]):
            np.testing.assert_allclose(x, y, atol=1e-6)


def test_joint_loss_is_the_sum_over_levels_by_hand():
    keras.utils.set_random_seed(2)
    autoencoder = ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8)), (16, 16, 1))
    x = _splits().train.images[:8]
    e1, e2 = autoencoder.encoders
    d1, d2 = autoencoder.decoders
    h1 = np.asarray(e1(x))
    r1 = np.asarray(d2(e2(h1)))
    r0 = np.asarray(d1(r1))  # d1 ends in the sigmoid
    expected = 0.25 * np.mean((r0 - x) ** 2) + 2.0 * np.mean((r1 - h1) ** 2)
    trainer = ReconstructionTrainer(objectives.joint_objective(autoencoder), (0.25, 2.0))
    trainer.compile(optimizer="adam")
    np.testing.assert_allclose(trainer.evaluate(x, batch_size=8, verbose=0), expected,
                               rtol=1e-5)


def test_joint_targets_carry_no_gradient():
    autoencoder = ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8)), (16, 16, 1))
    x = tf.constant(_splits().train.images[:8])
    e1, e2 = autoencoder.encoders
    d2 = autoencoder.decoders[1]
    trainer = ReconstructionTrainer(objectives.joint_objective(autoencoder), (0.0, 1.0))  # level 1 only
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_mean(trainer.per_example_loss_for(x, training=True))
        h1 = e1(x)
        through_prediction_only = tf.reduce_mean(tf.square(d2(e2(h1)) - tf.stop_gradient(h1)))
        through_both = tf.reduce_mean(tf.square(d2(e2(h1)) - h1))
    grad = tape.gradient(loss, e1.kernel)
    np.testing.assert_allclose(grad, tape.gradient(through_prediction_only, e1.kernel),
                               rtol=1e-4, atol=1e-7)
    assert not np.allclose(grad, tape.gradient(through_both, e1.kernel), rtol=1e-3)
