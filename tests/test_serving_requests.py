"""Hostile and odd requests to the serving signatures: wrong shapes and dtypes, empty
batches, non-finite values, bad photos and decompression bombs.

One tiny export (16x16 gray, 2 stages, no TFLite) for the module, with a low
max_image_pixels so that small test photos can exceed it.
"""

import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from rae_keras import preprocessing, serving
from rae_keras.models import ConvAutoencoder
from rae_keras.config import DataConfig, ModelConfig, RunConfig, TrainConfig

SIZE = 16
MAX_PIXELS = 40 * 40
FLOAT_SIGNATURES = ["serving_default", "encode", "decode", "reconstruct_depth_1",
                    "reconstruct_depth_2"]


class Export:
    def __init__(self, base):
        import keras
        keras.utils.set_random_seed(0)
        self.config = RunConfig(
            name="requests", data=DataConfig(image_size=SIZE, channels=1, crop=0),
            model=ModelConfig(filters=(4, 8), kernel_sizes=(3,)),
            train=TrainConfig(scheme="recursive"))
        self.ae = ConvAutoencoder.from_model_config(self.config.model, (SIZE, SIZE, 1))
        self.ae.full_model()
        self.dir = serving.export_model(self.ae, str(base), self.config, tflite=False,
                                        max_image_pixels=MAX_PIXELS)
        self.loaded = tf.saved_model.load(self.dir)

    def sig(self, name):
        return self.loaded.signatures[name]

    def item_shape(self, name):
        """An input's shape without the batch axis."""
        return tuple(self.ae.code_shape if name == "decode" else self.ae.image_shape)

    def call(self, name, value):
        (arg,) = self.sig(name).structured_input_signature[1]
        return {k: v.numpy() for k, v in self.sig(name)(**{arg: tf.constant(value)}).items()}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return Export(tmp_path_factory.mktemp("requests") / "exported" / "m")


def _inputs(export, name, batch, seed=0):
    shape = (batch, *export.item_shape(name))
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _encoded(size, fmt, mode="RGB", seed=0) -> bytes:
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(out, format=fmt)
    return out.getvalue()


def _declaring(size, fmt) -> bytes:
    """A tiny photo whose header is patched to declare `size` (w, h): a decoder would
    fail on its data (or allocate the declared size), the header reads fine."""
    w, h = size
    data = bytearray(_encoded((8, 8), fmt))
    if fmt == "PNG":  # IHDR, big-endian; its CRC is now wrong too
        data[16:24] = struct.pack(">II", w, h)
    elif fmt == "JPEG":  # SOF0: length, precision, height, width
        sof = data.index(b"\xff\xc0")
        data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    else:  # BMP, negative height: rows stored top-down
        data[18:26] = struct.pack("<ii", w, -h)
    return bytes(data)


# ------------------------------------------------------------------ shapes and dtypes
def _bad_shapes(item_shape):
    h, w, c = item_shape
    return {"no_batch_axis": (h, w, c), "no_batch_no_channels": (h, w),
            "rank_5": (1, 1, h, w, c), "other_size": (2, h - 1, w - 1, c),
            "other_channels": (2, h, w, c + 1)}


@pytest.mark.parametrize("name", FLOAT_SIGNATURES)
def test_wrong_shapes_are_refused_naming_the_expected_shape(export, name):
    expected = re.escape("expected shape [?,%d,%d,%d]" % export.item_shape(name))
    for kind, shape in _bad_shapes(export.item_shape(name)).items():
        with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
            export.call(name, np.zeros(shape, np.float32))
            pytest.fail(f"{name} accepted {kind} {shape}")


def test_bytes_signature_refuses_other_ranks(export):
    photo = _encoded((20, 20), "PNG")
    for value in (photo, [[photo]]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("expected shape [?]")):
            export.call("reconstruct_image_bytes", value)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_wrong_dtype_is_refused(export, dtype):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float"):
        export.call("serving_default", _inputs(export, "serving_default", 2).astype(dtype))


# ------------------------------------------------------------------ empty batches
def test_empty_batch_gives_empty_outputs(export):
    for name in FLOAT_SIGNATURES:
        outputs = export.call(name, _inputs(export, name, 0))
        for key, spec in export.sig(name).structured_outputs.items():
            assert outputs[key].shape == (0, *spec.shape[1:]), (name, key)
    outputs = export.call("reconstruct_image_bytes", np.array([], object))
    assert {k: v.shape for k, v in outputs.items()} == {
        "reconstruction_bytes": (0,), "reconstruction": (0, SIZE, SIZE, 1),
        "valid": (0,), "error": (0,)}


# ------------------------------------------------------------------ C++ Session path
# TF Serving runs a signature in a C++ Session fed by tensor name, where nothing checks
# the feed against the placeholder's shape (tf.compat.v1.Session.run would, in Python;
# a callable made from CallableOptions does not). With oneDNN on (as on Intel CPUs by
# default) a rank-3 request used to abort the process (exit 134), and an empty batch
# failed.
SESSION_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    export_dir, names = sys.argv[1], sys.argv[2:]
    results = {}
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        for name in names:
            signature = meta_graph.signature_def[name]
            (feed,) = signature.inputs.values()
            fetches = sorted(signature.outputs)
            run = sess._make_callable_from_options(config_pb2.CallableOptions(
                feed=[feed.name], fetch=[signature.outputs[k].name for k in fetches]))
            item = [d.size for d in feed.tensor_shape.dim[1:]]
            for kind, value in [("rank_3", np.zeros(item, np.float32)),
                                ("float64", np.zeros([1] + item, np.float64)),
                                ("empty", np.zeros([0] + item, np.float32))]:
                try:
                    shapes = [list(v.shape) for v in run(value)]
                    results[f"{name}/{kind}"] = dict(zip(fetches, shapes))
                except tf.errors.InvalidArgumentError as e:
                    results[f"{name}/{kind}"] = "InvalidArgumentError: " + e.message
    print(json.dumps(results))
""")


@pytest.mark.slow
def test_session_by_tensor_name_refuses_bad_shapes_without_aborting(export, tmp_path):
    script = tmp_path / "session.py"
    script.write_text(SESSION_SCRIPT)
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, str(script), export.dir, *FLOAT_SIGNATURES],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for name in FLOAT_SIGNATURES:
        expected = "expected shape [?,%d,%d,%d]" % export.item_shape(name)
        assert results[f"{name}/rank_3"].startswith("InvalidArgumentError"), name
        assert expected in results[f"{name}/rank_3"], name
        assert results[f"{name}/float64"].startswith("InvalidArgumentError"), name
        for key, shape in results[f"{name}/empty"].items():
            assert shape[0] == 0, (name, key)


# ------------------------------------------------------------------ non-finite values
@pytest.mark.parametrize("name", FLOAT_SIGNATURES)
def test_non_finite_values_stay_in_their_image(export, name):
    clean = _inputs(export, name, 4)
    dirty = clean.copy()
    dirty[1, 2, 3, 0] = np.nan
    dirty[2, 1, 1, 0] = np.inf
    (want,) = export.call(name, clean).values()
    (got,) = export.call(name, dirty).values()
    np.testing.assert_array_equal(got[[0, 3]], want[[0, 3]])
    assert not np.isfinite(got[1]).all() and not np.isfinite(got[2]).all()


# ------------------------------------------------------------------ bad photos
def test_bad_photos_fail_only_themselves(export):
    good = [_encoded((30, 20), "JPEG", seed=1), _encoded((40, 40), "PNG", "L", seed=2),
            _encoded((20, 30), "BMP", seed=3)]  # 40x40: exactly MAX_PIXELS
    bad = {b"not an image": "not a JPEG, PNG or BMP image",
           good[1][:len(good[1]) // 2]: "corrupt or truncated",
           _encoded((20, 20), "GIF"): "not a JPEG, PNG or BMP image",
           _encoded((41, 40), "PNG", seed=4): f"41x40 pixels is larger than "
                                              f"max_image_pixels={MAX_PIXELS}"}
    batch = [good[0], *bad, good[1], good[2]]
    out = export.call("reconstruct_image_bytes", np.array(batch, object))
    assert out["valid"].tolist() == [True, False, False, False, False, True, True]
    for error, reason in zip(out["error"][1:5], bad.values()):
        assert reason in error.decode()
    assert list(out["reconstruction_bytes"][1:5]) == [b""] * 4
    assert not out["reconstruction"][1:5].any()
    for i, photo in [(0, good[0]), (5, good[1]), (6, good[2])]:
        alone = export.call("reconstruct_image_bytes", np.array([photo], object))
        assert out["error"][i] == b""
        np.testing.assert_allclose(out["reconstruction"][i], alone["reconstruction"][0],
                                   atol=1e-5, rtol=0)
        assert tf.io.decode_png(out["reconstruction_bytes"][i]).shape == (SIZE, SIZE, 1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_bombs_are_refused_from_the_header(export, fmt):
    """A header declaring 16000x16000 is refused as too large: had the photo been
    decoded, its data (8x8 pixels) would have made it corrupt instead."""
    bomb = _declaring((16000, 16000), fmt)
    assert preprocessing.header_size(tf.constant(bomb)).numpy().tolist() == [16000, 16000]
    out = export.call("reconstruct_image_bytes", np.array([bomb], object))
    assert out["valid"].tolist() == [False]
    assert out["error"][0].decode() == (
        f"image of 16000x16000 pixels is larger than max_image_pixels={MAX_PIXELS}; "
        "not decoded")


def test_max_image_pixels_is_recorded_and_checked(export):
    assert serving.read_rae_config(export.dir)["max_image_pixels"] == MAX_PIXELS
    with pytest.raises(ValueError, match="max_image_pixels"):
        serving.serving_functions(export.ae, export.config, max_image_pixels=0)


# ------------------------------------------------------------------ preprocessing
def test_header_size():
    for fmt, mode in [("JPEG", "RGB"), ("PNG", "L"), ("BMP", "RGB")]:
        size = preprocessing.header_size(tf.constant(_encoded((37, 23), fmt, mode)))
        assert size.numpy().tolist() == [23, 37], fmt
    for other in [_encoded((5, 5), "GIF"), b"", b"BM"[:1], b"garbage"]:
        assert preprocessing.header_size(tf.constant(other)).numpy().tolist() == [-1, -1]


@pytest.mark.parametrize("crop,channels", [(0, 1), (24, 1), (24, 3), (1000, 3)])
def test_crop_before_conversion_changes_nothing(crop, channels):
    """preprocess_bytes crops the uint8 photo, then converts it: the same result, to the
    bit, as converting the whole photo to float first."""
    for seed, (fmt, mode) in enumerate([("JPEG", "RGB"), ("PNG", "L"), ("BMP", "RGB")]):
        photo = tf.constant(_encoded((45, 31), fmt, mode, seed=seed))
        whole_first = preprocessing.center_crop_and_resize(
            preprocessing.decode_image(photo, channels), crop, SIZE)
        np.testing.assert_array_equal(
            preprocessing.preprocess_bytes(photo, crop, SIZE, channels), whole_first)
