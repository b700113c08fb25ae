"""The committed pretrained models load and serve with plain TensorFlow and LiteRT, and
load into Keras (rae_keras.load) predicting what they serve, ready to fine-tune."""

import io
import json
import os

import numpy as np
import pytest
import skimage.data
import skimage.transform
import tensorflow as tf
from PIL import Image

import rae_keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMES = {"stacked", "recursive", "recursive_interleaved", "recursive_finetune", "joint"}
EXPORTS = sorted(os.path.join(ROOT, "exported", f"lfw64_{s}", "1") for s in SCHEMES)
# Every pretrained model is the same 64x64 RGB 6-stage network (only the weights differ):
# the fast suite serves and loads the paper's one; the full suite each of them.
EACH_EXPORT = [d if d.split(os.sep)[-2] == "lfw64_recursive" else
               pytest.param(d, marks=pytest.mark.slow) for d in EXPORTS]


def faces(count):
    """`count` bundled LFW faces (25x25 gray) as 64x64 RGB in [0, 1]."""
    small = skimage.data.lfw_subset()[:count]
    images = skimage.transform.resize(small, (count, 64, 64), anti_aliasing=True)
    return np.repeat(images[..., None], 3, axis=-1).astype(np.float32)


def test_every_scheme_has_a_pretrained_model():
    found = {json.load(open(os.path.join(d, "assets.extra", "rae_config.json")))["scheme"]
             for d in EXPORTS}
    assert found == SCHEMES


@pytest.mark.parametrize("version_dir", EACH_EXPORT, ids=lambda d: d.split(os.sep)[-2])
def test_pretrained_model_serves(version_dir):
    loaded = tf.saved_model.load(version_dir)
    config = json.load(open(os.path.join(version_dir, "assets.extra", "rae_config.json")))
    assert (config["image_size"], config["channels"], config["num_stages"]) == (64, 3, 6)
    photo = skimage.data.astronaut()  # bundled with scikit-image, 512x512 RGB
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG")
    result = loaded.signatures["reconstruct_image_bytes"](
        image_bytes=tf.constant([buffer.getvalue()]))
    reconstruction = result["reconstruction"].numpy()
    assert reconstruction.shape == (1, 64, 64, 3)
    assert 0.0 <= reconstruction.min() and reconstruction.max() <= 1.0
    png = tf.io.decode_png(result["reconstruction_bytes"][0]).numpy()
    assert png.shape == (64, 64, 3)
    images = tf.image.resize(photo[None].astype(np.float32) / 255.0, (64, 64), antialias=True)
    direct = loaded.signatures["serving_default"](images=images)["reconstruction"].numpy()
    # Trained models: 0.028-0.035 on this image; the same network untrained: 0.09.
    assert np.mean((direct - images.numpy()) ** 2) < 0.05


def test_pretrained_tflite_matches_saved_model():
    from ai_edge_litert.interpreter import Interpreter

    version_dir = EXPORTS[0]
    tflite = os.path.join(os.path.dirname(version_dir), "tflite", "1", "float32.tflite")
    runner = Interpreter(model_path=tflite).get_signature_runner("serving_default")
    images = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    expected = tf.saved_model.load(version_dir).signatures["serving_default"](
        images=images)["reconstruction"].numpy()
    np.testing.assert_allclose(runner(images=images)["reconstruction"], expected, atol=1e-4)


@pytest.mark.parametrize("version_dir", EACH_EXPORT, ids=lambda d: d.split(os.sep)[-2])
def test_pretrained_model_loads_and_predicts_what_it_serves(version_dir):
    model = rae_keras.load(os.path.dirname(version_dir))  # the export base: its newest version
    images = faces(4)
    served = tf.saved_model.load(version_dir).signatures["serving_default"](
        images=tf.constant(images))["reconstruction"].numpy()
    assert np.max(np.abs(model.reconstruct(images) - served)) <= 1e-5


def test_pretrained_model_fine_tunes():
    model = rae_keras.load(os.path.join(ROOT, "exported", "lfw64_recursive"))
    before = [w.numpy().copy() for w in model.weights]
    history = rae_keras.fit(model, faces(8), scheme="stacked", epochs=1, batch_size=8,
                            verbose=0, log=lambda message: None)
    losses = [loss for phase in history.values() for loss in phase["loss"]]
    assert losses and np.all(np.isfinite(losses))
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights))
