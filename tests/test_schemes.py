"""Schemes: every registered one meets the contract (`rae_keras.contracts.check_scheme`),
the registry is the one list of names, and each scheme's own maths by hand."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from rae_keras import flags as flags_lib
from rae_keras import contracts, objectives, schemes, testing
from rae_keras.config import ConfigError, TrainConfig
from rae_keras.objectives import InterleavedTrainer, ReconstructionTrainer

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _sgd():
    return keras.optimizers.SGD(0.5)


# Schemes whose phases other fast contract checks run as they are: recursive's stages
# are the first phases of recursive_finetune, recursive_depths and recursive_depths_routed
# (and test_training checks recursive itself, with shared BatchNormalization);
# stacked's end-to-end phase is recursive_finetune's fine-tune. The full suite checks
# them too; any other scheme, a new one included, is checked in the fast suite.
COVERED_BY_OTHERS = {"recursive", "stacked"}


@pytest.mark.parametrize("scheme", [
    pytest.param(s, marks=pytest.mark.slow) if s in COVERED_BY_OTHERS else s
    for s in schemes.SCHEMES])
def test_every_registered_scheme_meets_the_contract(scheme):
    contracts.check_scheme(scheme)


@pytest.mark.parametrize("scheme", schemes.SCHEMES)
def test_every_phase_trainer_implements_the_trainer_contract(scheme):
    autoencoder = testing.tiny_autoencoder()
    for phase in schemes.phases_for(autoencoder, TrainConfig(scheme=scheme)):
        contracts.check_trainer(phase.build_trainer(_sgd), testing.smooth_images(4))


def test_the_contract_catches_a_trainer_that_ignores_freezing():
    @schemes.register_scheme("leaky")
    def leaky(autoencoder, config):
        """Declares stage 2 alone trainable; its trainer updates every variable anyway."""
        variables = [v for layer in autoencoder.stage_leaf_layers()
                     for v in layer.trainable_weights]  # taken before freezing
        phase = schemes.recursive(autoencoder, config)[1]
        phase.make_trainer = lambda: InterleavedTrainer(
            [None], [objectives.full_objective(autoencoder)], [variables])
        return [phase]

    try:
        with pytest.raises(AssertionError, match="changed frozen e1"):
            contracts.check_scheme("leaky", normalization="none")
    finally:
        schemes.SCHEMES.unregister("leaky")


def test_scheme_names_come_from_the_registry():
    assert flags_lib.FLAGS["scheme"].parser.enum_values == list(schemes.SCHEMES)
    with pytest.raises(ConfigError, match=r"unknown scheme 'bogus'; expected one of \('stacked'"):
        TrainConfig(scheme="bogus").validate()
    with pytest.raises(ValueError, match="already registered"):
        schemes.register_scheme("recursive")(schemes.stacked)
    documented = re.findall(r"^\| `(\w+)` \|", open(README).read(), re.M)
    assert set(schemes.SCHEMES) <= set(documented), "README's scheme table misses a scheme"


def test_interleaved_step_is_stage_steps_in_turn():
    images = testing.smooth_images(16)
    a, b = testing.tiny_autoencoder(seed=0), testing.tiny_autoencoder(seed=0)
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
    testing.assert_weights_close(testing.layer_weights(a), testing.layer_weights(b))
    assert [int(o.iterations.numpy()) for o in trainer.stage_optimizers] == [1, 1]


def test_interleaved_stage_optimizers_own_only_their_pair():
    autoencoder = testing.tiny_autoencoder(filters=(4, 8, 8), normalization="batch")
    trainer = schemes.recursive_interleaved(autoencoder, TrainConfig())[0].build_trainer(_sgd)
    for k, variables in enumerate(trainer.stage_variables, start=1):
        own = {id(v) for l in autoencoder.stage_layers(k) for v in l.trainable_weights}
        assert {id(v) for v in variables} == own


def test_finetune_zero_epochs_is_plain_recursive(tmp_path):
    autoencoder = testing.tiny_autoencoder()
    phases = schemes.recursive_finetune(autoencoder, TrainConfig(finetune_epochs=0))
    assert [p.name for p in phases] == ["stage_1", "stage_2"]


def test_joint_loss_is_the_sum_over_levels_by_hand():
    autoencoder = testing.tiny_autoencoder(seed=2)
    x = testing.smooth_images(8)
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
    autoencoder = testing.tiny_autoencoder()
    x = tf.constant(testing.smooth_images(8))
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


def test_depth_loss_is_the_weighted_sum_of_every_depths_image_loss_by_hand():
    autoencoder = testing.tiny_autoencoder(seed=3)
    x = testing.smooth_images(8)
    depth_1 = np.asarray(autoencoder.depth_model(1)(x))
    depth_2 = np.asarray(autoencoder.depth_model(2)(x))
    expected = 0.5 * np.mean((depth_1 - x) ** 2) + 3.0 * np.mean((depth_2 - x) ** 2)
    trainer = ReconstructionTrainer(objectives.depth_objective(autoencoder), (0.5, 3.0))
    trainer.compile(optimizer="adam")
    np.testing.assert_allclose(trainer.evaluate(x, batch_size=8, verbose=0), expected, rtol=1e-5)


def test_depth_finetune_follows_the_recursive_stages_and_routes_every_depth_to_d1():
    autoencoder = testing.tiny_autoencoder()
    phases = schemes.recursive_depths(autoencoder, TrainConfig(finetune_epochs=2,
                                                               level_weights=(1.0, 0.0)))
    assert [p.name for p in phases] == ["stage_1", "stage_2", "depth_finetune"]
    finetune = phases[-1]
    assert finetune.trainable is None and finetune.epochs == 2
    # Depth 1 alone (weights 1, 0): d1 and e1 get gradient, the deep pair none.
    x = tf.constant(testing.smooth_images(8))
    trainer = ReconstructionTrainer(finetune.objective, finetune.level_weights)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(trainer.per_example_loss_for(x, training=True))
    (e1, e2), (d1, d2) = autoencoder.encoders, autoencoder.decoders
    blocks = [e1, d1, e2, d2]
    grads = tape.gradient(loss, [block.trainable_weights for block in blocks])
    routed = [any(g is not None and np.any(np.asarray(g)) for g in block) for block in grads]
    assert routed == [True, True, False, False]
    assert schemes.recursive_depths(autoencoder, TrainConfig(finetune_epochs=0))[-1].name == "stage_2"


def test_routed_depth_loss_by_hand():
    """Each example: full depth plus one shallow depth in turn (3 stages: example i
    from depth 1 + i mod 2), the routed part weighted N-1 = 2."""
    autoencoder = testing.tiny_autoencoder(filters=(4, 8, 8), seed=4)
    x = testing.smooth_images(5)
    full, d1, d2 = (np.asarray(autoencoder.depth_model(k)(x)) for k in (3, 1, 2))
    routed = np.where((np.arange(5) % 2 == 0)[:, None, None, None], d1, d2)
    per_example = (np.mean((full - x) ** 2, axis=(1, 2, 3))
                   + 2.0 * np.mean((routed - x) ** 2, axis=(1, 2, 3)))
    phase = schemes.recursive_depths_routed(autoencoder, TrainConfig(finetune_epochs=1))[-1]
    trainer = ReconstructionTrainer(phase.objective, phase.level_weights)
    np.testing.assert_allclose(trainer.per_example_loss_for(tf.constant(x)), per_example,
                               rtol=1e-5)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_routed_depths_take_batches_smaller_than_the_depth_count(batch):
    autoencoder = testing.tiny_autoencoder(filters=(4, 4, 4, 4), seed=5)
    x = testing.smooth_images(batch)
    phase = schemes.recursive_depths_routed(autoencoder, TrainConfig(finetune_epochs=1))[-1]
    outputs = phase.objective(tf.constant(x))
    depth = 1 + np.arange(batch) % 3  # shallow depth of each example
    expected = np.stack([np.asarray(autoencoder.depth_model(int(k))(x[i:i + 1]))[0]
                         for i, k in enumerate(depth)])
    np.testing.assert_allclose(outputs[2], expected, atol=1e-6)
