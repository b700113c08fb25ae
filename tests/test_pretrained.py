"""The committed pretrained models load and serve with plain TensorFlow and LiteRT."""

import io
import json
import os

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMES = {"stacked", "recursive", "recursive_interleaved", "recursive_finetune", "joint"}
EXPORTS = sorted(os.path.join(ROOT, "exported", f"lfw64_{s}", "1") for s in SCHEMES)


def test_every_scheme_has_a_pretrained_model():
    found = {json.load(open(os.path.join(d, "assets.extra", "rae_config.json")))["scheme"]
             for d in EXPORTS}
    assert found == SCHEMES


@pytest.mark.parametrize("version_dir", EXPORTS, ids=lambda d: d.split(os.sep)[-2])
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
