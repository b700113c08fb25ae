"""StagedAutoencoder over any layers, ConvAutoencoder, `.keras` round trips, user data checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rae_keras import testing
from rae_keras.inputs import InputError, as_array, fingerprint
from rae_keras.models import ConvAutoencoder, StagedAutoencoder


MODELS = {
    "conv": lambda: ConvAutoencoder((16, 16, 1), (4, 8, 8)),
    "conv_batch": lambda: ConvAutoencoder((16, 16, 3), (4, 8), normalization="batch"),
    "conv_shared_batch": lambda: ConvAutoencoder((16, 16, 1), (4, 8), normalization="shared_batch"),
    "dense": testing.dense_stack,
    "residual": testing.residual_stack,
}


def _inputs(model, n=3, seed=0):
    return np.random.default_rng(seed).random((n, *model.sample_shape), dtype=np.float32)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_keras_round_trip_equal_at_every_depth(kind, tmp_path):
    model = MODELS[kind]()
    x = _inputs(model)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: registered serializables
    assert type(loaded) is type(model) and loaded.num_stages == model.num_stages
    for depth in range(1, model.num_stages + 1):
        np.testing.assert_array_equal(loaded.reconstruct(x, depth=depth),
                                      model.reconstruct(x, depth=depth))
    assert [[l.name for l in loaded.stage_layers(k)] for k in range(1, model.num_stages + 1)] == \
        [[l.name for l in model.stage_layers(k)] for k in range(1, model.num_stages + 1)]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_submodel_shares_the_layer_objects(kind):
    model = MODELS[kind]()
    x = _inputs(model)
    n = model.num_stages
    np.testing.assert_allclose(model.predict(x, verbose=0), model.reconstruct(x), atol=1e-6)
    np.testing.assert_allclose(model.decode(model.encode(x)), model.reconstruct(x), atol=1e-6)
    weights = {id(w) for w in model.weights}
    for sub in [model.depth_model(1), model.encoder(1), model.decoder(n), model.stage_model(n),
                model.encoder_block(n)]:
        assert sub.weights and {id(w) for w in sub.weights} <= weights
    before = model.reconstruct(x, depth=1)
    kernel = model.stage_layers(1)[0].weights[0]
    kernel.assign(kernel * 0.0)  # a change to the layer shows through every model over it
    assert not np.allclose(model.depth_model(1).predict(x, verbose=0), before)


def test_shape_mismatch_names_the_stage_and_both_shapes():
    with pytest.raises(ValueError, match=r"stage 2: decoder 'bad'.*\(4,\) to \(7,\).*\(8,\)"):
        StagedAutoencoder([keras.layers.Dense(8), keras.layers.Dense(4)],
                          [keras.layers.Dense(12), keras.layers.Dense(7, name="bad")],
                          input_shape=(12,))


def test_set_trainable_freezes_exactly_the_other_stages_shared_norm_owned_by_first_stage():
    model = ConvAutoencoder((16, 16, 1), (4, 8, 8), normalization="shared_batch")
    names = [[l.name for l in model.stage_layers(k)] for k in (1, 2, 3)]
    assert names == [["e1", "h1_bn", "d1", "d1_sigmoid"], ["e2", "h2_bn", "d2"],
                     ["e3", "h3_bn", "d3"]]
    model.set_trainable(model.stage_layers(2))
    trainable = {l.name for l in model.stage_leaf_layers() if l.trainable}
    assert trainable == {"e2", "h2_bn", "d2"}
    model.set_trainable(None)
    assert all(l.trainable for l in model.stage_leaf_layers())


def test_a_custom_block_freezes_as_one_unit():
    model = testing.residual_stack()
    assert [l.name for l in model.stage_layers(2)] == ["res2", "up2"]
    model.set_trainable(model.stage_layers(1))
    assert not model.encoders[1].trainable and not model.encoders[1].conv.trainable
    assert model.encoders[0].trainable and model.encoders[0].skip.trainable


# --------------------------------------------------------------------------- user data
SHAPE = (4, 4, 1)


def test_uint8_images_are_scaled_and_floats_pass_through():
    pixels = np.full((2, *SHAPE), 255, np.uint8)
    assert as_array(pixels, SHAPE).max() == 1.0
    floats = np.random.default_rng(0).random((2, *SHAPE)).astype(np.float64)
    out = as_array(floats, SHAPE)
    assert out.dtype == np.float32 and np.allclose(out, floats)


def test_a_dataset_batched_or_not_gives_the_same_array():
    x = np.random.default_rng(0).random((10, *SHAPE), dtype=np.float32)
    unbatched = as_array(tf.data.Dataset.from_tensor_slices(x), SHAPE)
    batched = as_array(tf.data.Dataset.from_tensor_slices(x).batch(3), SHAPE)
    np.testing.assert_array_equal(unbatched, x)
    np.testing.assert_array_equal(batched, x)


@pytest.mark.parametrize("x, named", [
    (np.zeros(SHAPE, np.float32), "add the batch axis"),
    (np.zeros((2, 5, 5, 1), np.float32), r"shape \(5, 5, 1\)"),
    (np.zeros((0, *SHAPE), np.float32), "empty"),
    (np.zeros((2, *SHAPE), np.int32), "dtype int32"),
    (np.full((2, *SHAPE), 200.0, np.float32), "divide by 255"),
    (np.full((2, *SHAPE), -0.5, np.float32), "outside"),
    (np.full((2, *SHAPE), np.nan, np.float32), "NaN"),
    (tf.data.Dataset.from_tensor_slices((np.zeros((2, *SHAPE)), np.zeros(2))), "drop labels"),
])
def test_bad_data_is_one_line_naming_it(x, named):
    with pytest.raises(InputError, match=named) as raised:
        as_array(x, SHAPE)
    assert "\n" not in str(raised.value)


def test_fingerprint_tells_data_apart():
    x = np.zeros((2, *SHAPE), np.float32)
    y = x.copy()
    assert fingerprint(x) == fingerprint(y)
    y[1, 0, 0, 0] = 1e-7
    assert fingerprint(x) != fingerprint(y)
