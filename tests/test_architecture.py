"""ConvAutoencoder: shapes, parameter counts and layer sharing of its models."""

import numpy as np
import pytest

from rae_keras import testing
from rae_keras.models import ConvAutoencoder, leaf_layers
from rae_keras.config import ConfigError, ModelConfig


def _conv_params(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


@pytest.mark.parametrize("normalization", ["none", "batch", "shared_batch"])
def test_models_share_layer_and_variable_objects(normalization):
    ae = testing.tiny_autoencoder((4, 8, 8), normalization)
    full = ae.full_model()
    for k in range(1, ae.num_stages + 1):
        stage = ae.stage_model(k)
        depth = ae.depth_model(k)
        for layer in ae.stage_layers(k):
            for model in (full, stage, depth):
                assert any(layer is leaf for top in model.layers for leaf in leaf_layers(top))
        e_k = ae.encoders[k - 1]
        assert any(e_k is l for l in stage.layers)
    assert any(ae.encoders[0] is l for l in ae.encoder().layers)
    assert any(ae.decoders[0] is l for l in ae.decoder().layers)
    # Every variable of every model is one of the full model's variables.
    full_ids = {id(v) for v in full.weights}
    for model in [ae.encoder(), ae.decoder()] + [ae.stage_model(k) for k in (1, 2, 3)]:
        assert {id(v) for v in model.weights} <= full_ids


def test_shapes_and_ranges():
    ae = ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8, 16)), (32, 32, 3))
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    assert ae.encoder()(x).shape == (2, 4, 4, 16)
    assert ae.code_shape == (4, 4, 16)
    y = np.asarray(ae.full_model()(x))
    assert y.shape == x.shape and y.min() >= 0.0 and y.max() <= 1.0
    for k in (1, 2, 3):
        assert ae.stage_model(k)(x).shape == (2,) + ae.shape_at(k - 1)
        assert ae.depth_model(k)(x).shape == x.shape
    np.testing.assert_allclose(ae.decoder()(ae.encoder()(x)), y, atol=1e-6)


def test_parameter_count_matches_hand_count():
    ae = ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8), kernel_sizes=(5, 3), decoder_kernel_sizes=(4,)),
                     (16, 16, 3))
    expected = (_conv_params(5, 3, 4) + _conv_params(3, 4, 8)      # e1, e2
                + _conv_params(4, 4, 3) + _conv_params(4, 8, 4))   # d1, d2 (kernel 4)
    assert ae.full_model().count_params() == expected


def test_shared_batch_norm_is_one_object_per_code():
    ae = testing.tiny_autoencoder((4, 8, 8), "shared_batch")
    # The norm after e_k is the norm after d_(k+1), and it belongs to stage k.
    for k in (1, 2):
        norm = ae.encoders[k - 1].layers[-1]
        assert norm is ae.decoders[k].layers[-1]
        assert any(norm is l for l in ae.stage_layers(k))
        assert not any(norm is l for l in ae.stage_layers(k + 1))
    assert len(ae.stage_leaf_layers()) == 3 * 3 + 1  # e, bn, d per stage; d1's sigmoid


def test_batch_norm_layers_belong_to_their_stage():
    ae = testing.tiny_autoencoder((4, 8), "batch")
    assert [l.name for l in ae.stage_layers(1)] == ["e1", "e1_bn", "d1", "d1_sigmoid"]
    assert [l.name for l in ae.stage_layers(2)] == ["e2", "e2_bn", "d2", "d2_bn"]


def test_image_size_must_divide_by_stride_product():
    with pytest.raises(ConfigError, match="divisible"):
        ConvAutoencoder.from_model_config(ModelConfig(filters=(4, 8, 8)), (20, 20, 1))
