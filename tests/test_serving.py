"""The serving export: signatures, numerics, plain-TF loading, bytes, TFLite, atomicity.

One export per model for the whole module (module-scoped fixtures; gray's TFLite files
in the full suite only). The failure tests start from a copy of the gray export where
they need a version 1 already there, and fake the TFLite conversions that succeed
before the injected failure (the real conversion is tested on the module's exports).
"""

import base64
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import rae_keras
from rae_keras import serving
from rae_keras.models import ConvAutoencoder
from rae_keras.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rae_keras.preprocessing import preprocess_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# LiteRT vs SavedModel, max abs difference on outputs in [0, 1] (codes: relative to
# their scale). float16 stores weights in half precision; dynamic_int8 quantizes the
# weights (tensors of >= 1024 elements) and the activations feeding them, per batch.
TFLITE_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "dynamic_int8": 5e-2}

GRAY = dict(filters=(4, 8), channels=1, crop=0)
# Wide enough that dynamic_int8 really quantizes (3*3*8*32 >= 1024 weights), and a crop.
RGB = dict(filters=(8, 32), channels=3, crop=40)
SIZE = 16


def _config(spec) -> RunConfig:
    return RunConfig(
        name="test",
        data=DataConfig(image_size=SIZE, channels=spec["channels"], crop=spec["crop"]),
        model=ModelConfig(filters=spec["filters"], kernel_sizes=(3,)),
        train=TrainConfig(scheme="recursive"))


def _autoencoder(spec, seed=0) -> ConvAutoencoder:
    import keras
    keras.utils.set_random_seed(seed)
    config = _config(spec)
    ae = ConvAutoencoder.from_model_config(config.model, (SIZE, SIZE, spec["channels"]))
    ae.full_model()  # builds every layer
    return ae


class Export:
    def __init__(self, spec, base, tflite=True):
        self.spec = spec
        self.config = _config(spec)
        self.ae = _autoencoder(spec)
        self.base = str(base)
        self.dir = serving.export_model(self.ae, self.base, self.config, tflite=tflite)
        self.loaded = tf.saved_model.load(self.dir)
        self.n = self.ae.num_stages

    def sig(self, name):
        return self.loaded.signatures[name]

    def images(self, batch=5, seed=1):
        shape = (batch, *self.ae.image_shape)
        return np.random.default_rng(seed).random(shape, dtype=np.float32)

    def codes(self, batch=5, seed=2):
        shape = (batch, *self.ae.code_shape)
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """Without TFLite: rgb's LiteRT files are checked in the fast suite (each conversion
    costs seconds), gray_tflite's in the full one."""
    return Export(GRAY, tmp_path_factory.mktemp("gray") / "exported" / "gray", tflite=False)


@pytest.fixture(scope="module")
def gray_tflite(tmp_path_factory):
    return Export(GRAY, tmp_path_factory.mktemp("gray_tflite") / "exported" / "gray")


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    return Export(RGB, tmp_path_factory.mktemp("rgb") / "exported" / "rgb")


@pytest.fixture(params=["gray", "rgb"])
def export(request):
    return request.getfixturevalue(request.param)


def _photo(size, mode, fmt, seed=0) -> bytes:
    """A smooth synthetic 'photo' (gradients plus a little noise) as JPEG/PNG bytes."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], -1)
    rgb = rgb + 0.05 * rng.standard_normal((h, w, 3))
    pixels = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


# ------------------------------------------------------------------ interface contract
def test_signature_names_inputs_outputs(export):
    s, c = export.ae.image_shape, export.ae.code_shape
    images = {"images": ((None, *s), tf.float32)}
    recon = {"reconstruction": ((None, *s), tf.float32)}
    expected = {
        "serving_default": (images, recon),
        "encode": (images, {"code": ((None, *c), tf.float32)}),
        "decode": ({"code": ((None, *c), tf.float32)}, recon),
        "reconstruct_image_bytes": (
            {"image_bytes": ((None,), tf.string)},
            {"reconstruction_bytes": ((None,), tf.string), **recon,
             "valid": ((None,), tf.bool), "error": ((None,), tf.string)}),
    }
    for k in range(1, export.n + 1):
        expected[f"reconstruct_depth_{k}"] = (images, recon)

    assert set(export.loaded.signatures) == set(expected)
    assert set(serving.signature_names(export.n)) == set(expected)

    def spec_dict(specs):
        return {k: (tuple(v.shape.as_list()), v.dtype) for k, v in specs.items()}

    for name, (inputs, outputs) in expected.items():
        fn = export.sig(name)
        args, kwargs = fn.structured_input_signature
        assert args == ()
        assert spec_dict(kwargs) == inputs, name
        assert spec_dict(fn.structured_outputs) == outputs, name


def test_rae_config(export):
    cfg = serving.read_rae_config(export.dir)
    assert cfg["image_size"] == SIZE
    assert cfg["channels"] == export.spec["channels"]
    assert cfg["crop"] == export.spec["crop"]
    assert cfg["num_stages"] == export.n
    assert cfg["filters"] == list(export.spec["filters"])
    assert cfg["scheme"] == "recursive"
    assert cfg["rae_keras_version"] == rae_keras.__version__
    assert cfg["input_shape"] == list(export.ae.image_shape)
    assert cfg["code_shape"] == list(export.ae.code_shape)
    assert cfg["version"] == 1 and os.path.basename(export.dir) == "1"


# ------------------------------------------------------------------ numerics
def test_saved_model_matches_keras(export):
    x, code = export.images(), export.codes()
    ae = export.ae
    pairs = {
        "serving_default": (ae.full_model(), x, "images", "reconstruction"),
        "encode": (ae.encoder(), x, "images", "code"),
        "decode": (ae.decoder(), code, "code", "reconstruction"),
    }
    for k in range(1, export.n + 1):
        pairs[f"reconstruct_depth_{k}"] = (ae.depth_model(k), x, "images", "reconstruction")
    for name, (model, inputs, in_name, out_name) in pairs.items():
        want = np.asarray(model(inputs, training=False))
        got = export.sig(name)(**{in_name: tf.constant(inputs)})[out_name].numpy()
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=name)


def test_signatures_compose(export):
    x = tf.constant(export.images(batch=3))
    full = export.sig("serving_default")(images=x)["reconstruction"].numpy()
    code = export.sig("encode")(images=x)["code"]
    np.testing.assert_allclose(export.sig("decode")(code=code)["reconstruction"].numpy(), full,
                               atol=1e-6, rtol=0)
    deepest = export.sig(f"reconstruct_depth_{export.n}")(images=x)["reconstruction"].numpy()
    np.testing.assert_allclose(deepest, full, atol=1e-6, rtol=0)


def test_saved_model_stores_each_weight_once(export):
    reader = tf.train.load_checkpoint(os.path.join(export.dir, "variables", "variables"))
    stored = sum(int(np.prod(shape)) for shape in reader.get_variable_to_shape_map().values())
    # Each weight once, plus at most a few scalar counters of the SavedModel's own.
    assert 0 <= stored - export.ae.full_model().count_params() <= 4


def test_dynamic_batch(export):
    fn = export.sig("serving_default")
    for batch in (1, 7):
        assert fn(images=tf.constant(export.images(batch)))["reconstruction"].shape[0] == batch
    # (An empty batch is not tested: TF 2.21's oneDNN fused Conv2D fails on batch 0, in
    # Keras as in the SavedModel; TF Serving rejects empty "instances" anyway.)


# ------------------------------------------------------------------ bytes signature
def test_bytes_signature_formats_and_channels(export):
    photos = [
        _photo((40, 30), "RGB", "JPEG", seed=1),   # JPEG, landscape
        _photo((23, 57), "RGB", "PNG", seed=2),    # PNG of another size, portrait
        _photo((50, 50), "L", "JPEG", seed=3),     # grayscale photo
        _photo((64, 48), "RGB", "PNG", seed=4),    # larger than the crop of the RGB model
    ]
    if export.spec["channels"] == 1:
        photos.append(_photo((33, 21), "RGB", "JPEG", seed=5))  # RGB photo for a gray model
    size, _, channels = export.ae.image_shape
    out = export.sig("reconstruct_image_bytes")(image_bytes=tf.constant(photos))
    preprocessed = np.stack([preprocess_bytes(tf.constant(p), export.spec["crop"], size,
                                              channels).numpy() for p in photos])
    want = np.asarray(export.ae.full_model()(preprocessed, training=False))
    np.testing.assert_allclose(out["reconstruction"].numpy(), want, atol=1e-5, rtol=0)

    pngs = out["reconstruction_bytes"].numpy()
    assert pngs.shape == (len(photos),)
    for png, recon in zip(pngs, out["reconstruction"].numpy()):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = tf.io.decode_png(png).numpy()
        assert pixels.shape == (size, size, channels)
        np.testing.assert_array_equal(pixels, np.round(np.clip(recon, 0, 1) * 255).astype(np.uint8))


@pytest.mark.parametrize("corrupt", ["garbage", "truncated_jpeg", "empty", "one_bad_in_batch"])
def test_bytes_signature_rejects_corrupt_input(gray, corrupt):
    """A corrupt photo fails only itself (valid=False, a reason, no PNG, zeros), alone
    or next to a good photo, which is reconstructed as if sent alone."""
    good = _photo((30, 30), "RGB", "JPEG")
    batch = {
        "garbage": [b"this is not an image at all"],
        "truncated_jpeg": [good[: len(good) // 2]],
        "empty": [b""],
        "one_bad_in_batch": [good, b"\x89PNG\r\n\x1a\n" + b"\0" * 40],
    }[corrupt]
    fn = gray.sig("reconstruct_image_bytes")
    out = {k: v.numpy() for k, v in fn(image_bytes=tf.constant(batch)).items()}
    bad = len(batch) - 1
    assert out["valid"].tolist() == [True] * bad + [False]
    assert out["error"][bad] and out["reconstruction_bytes"][bad] == b""
    assert not out["reconstruction"][bad].any()
    if bad:
        alone = fn(image_bytes=tf.constant([good]))
        assert out["error"][0] == b""
        np.testing.assert_allclose(out["reconstruction"][0], alone["reconstruction"][0],
                                   atol=1e-5, rtol=0)


# ------------------------------------------------------------------ plain TensorFlow
PLAIN_TF_SCRIPT = textwrap.dedent("""
    import sys
    for name in ("keras", "rae_keras", "tf_keras"):
        sys.modules[name] = None          # any import of them now raises ImportError
    import json
    import numpy as np
    import tensorflow as tf
    for name in ("keras", "rae_keras"):
        try:
            __import__(name)
            raise SystemExit(f"{name} is importable")
        except ImportError:
            pass
    export_dir, inputs_path, photo_path, out_path = sys.argv[1:]
    loaded = tf.saved_model.load(export_dir)
    data = np.load(inputs_path)
    results = {}
    for name, fn in loaded.signatures.items():
        (arg, spec), = fn.structured_input_signature[1].items()
        if spec.dtype == tf.string:
            value = tf.constant([open(photo_path, "rb").read()])
        else:
            value = tf.constant(data[arg])
        for key, tensor in fn(**{arg: value}).items():
            value = tensor.numpy()
            if tensor.dtype == tf.string:  # no object arrays in .npz: hex strings
                value = np.array([v.hex() for v in value])
            results[f"{name}/{key}"] = value
    np.savez(out_path, **results)
    print(json.dumps(sorted(results)))
""")


@pytest.mark.slow  # a subprocess
def test_loads_with_plain_tensorflow(rgb, tmp_path):
    script = tmp_path / "plain_tf.py"
    script.write_text(PLAIN_TF_SCRIPT)
    inputs = {"images": rgb.images(batch=2), "code": rgb.codes(batch=2)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_photo((45, 60), "RGB", "JPEG"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(script), rgb.dir, str(tmp_path / "inputs.npz"), str(photo),
         str(tmp_path / "out.npz")],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert len(got.files) == len(serving.signature_names(rgb.n)) + 3  # bytes: 4 outputs
    for key in got.files:
        name, output = key.split("/")
        if name == "reconstruct_image_bytes":
            want = rgb.sig(name)(image_bytes=tf.constant([photo.read_bytes()]))[output].numpy()
        else:
            arg = "code" if name == "decode" else "images"
            want = rgb.sig(name)(**{arg: tf.constant(inputs[arg])})[output].numpy()
        if want.dtype == object:
            assert [bytes.fromhex(v) for v in got[key]] == list(want), key
        else:
            np.testing.assert_allclose(got[key], want, atol=1e-6, rtol=0, err_msg=key)


# ------------------------------------------------------------------ TFLite / LiteRT
def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter
    return Interpreter(model_path=path)


@pytest.mark.parametrize("which", ["rgb", pytest.param("gray_tflite", marks=pytest.mark.slow)])
@pytest.mark.parametrize("quantization", serving.TFLITE_QUANTIZATIONS)
def test_tflite_matches_saved_model(request, which, quantization):
    export = request.getfixturevalue(which)
    path = os.path.join(serving.tflite_dir(export.base, 1), f"{quantization}.tflite")
    interpreter = _interpreter(path)
    signatures = interpreter.get_signature_list()
    assert set(signatures) == set(serving.tflite_signature_names(export.n))
    assert "reconstruct_image_bytes" not in signatures
    tolerance = TFLITE_TOLERANCE[quantization]
    for name, io_names in signatures.items():
        (in_name,), (out_name,) = io_names["inputs"], io_names["outputs"]
        runner = interpreter.get_signature_runner(name)
        for batch in (1, 4):  # the batch dimension is dynamic
            x = export.codes(batch) if in_name == "code" else export.images(batch)
            want = export.sig(name)(**{in_name: tf.constant(x)})[out_name].numpy()
            got = runner(**{in_name: x})[out_name]
            assert got.shape == want.shape, (name, batch)
            scale = max(1.0, float(np.abs(want).max()))  # codes are not in [0, 1]
            err = float(np.abs(got - want).max())
            assert err <= tolerance * scale, f"{quantization}/{name}: {err}"


def test_tflite_quantizations_differ(rgb):
    base = serving.tflite_dir(rgb.base, 1)
    sizes = {q: os.path.getsize(os.path.join(base, f"{q}.tflite"))
             for q in serving.TFLITE_QUANTIZATIONS}
    assert sizes["float16"] < sizes["float32"] and sizes["dynamic_int8"] < sizes["float16"]
    dtypes = {d["dtype"] for d in _interpreter(
        os.path.join(base, "dynamic_int8.tflite")).get_tensor_details()}
    assert np.int8 in dtypes


# ------------------------------------------------------------------ atomic, versioned
def _listing(root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, dirs, files in os.walk(root) for n in dirs + files)


def _leftovers(root):
    return [p for p in _listing(root) if ".tmp-" in p]


def _copy_of(export, base):
    """A copy of a module export's base (its version 1) at `base`: a version 1 already
    there, without exporting it again."""
    shutil.copytree(export.base, base)
    return str(base)


def test_next_version_and_refusal(tmp_path):
    base = str(tmp_path / "exported" / "m")
    assert serving.next_version(base) == 1
    ae, config = _autoencoder(GRAY), _config(GRAY)
    # A stale tflite/1 (no SavedModel 1) takes version 1 too; overwriting without TFLite
    # drops it, since it could never belong to the new version.
    stale = serving.tflite_dir(base, 1)
    os.makedirs(stale)
    open(os.path.join(stale, "float32.tflite"), "wb").close()
    with pytest.raises(serving.ExportError, match="already exists"):
        serving.export_model(ae, base, config, version=1)
    first = serving.export_model(ae, base, config, version=1, overwrite=True, tflite=False)
    assert first == os.path.join(os.path.abspath(base), "1")
    assert not os.path.exists(stale)
    os.makedirs(os.path.join(base, "7"))  # e.g. copied in by hand
    assert serving.next_version(base) == 8
    marker = os.path.join(base, "1", "marker")
    open(marker, "w").close()
    with pytest.raises(serving.ExportError, match="already exists.*--overwrite"):
        serving.export_model(ae, base, config, version=1, tflite=False)
    assert os.path.exists(marker)  # untouched
    serving.export_model(ae, base, config, version=1, overwrite=True, tflite=False)
    assert not os.path.exists(marker)  # replaced by a complete new version
    assert os.path.exists(os.path.join(base, "1", "saved_model.pb"))
    assert _leftovers(str(tmp_path)) == []


def test_failure_in_saved_model_leaves_nothing(tmp_path, monkeypatch):
    base = str(tmp_path / "exported" / "m")

    def fail(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(serving, "write_rae_config", fail)  # after the SavedModel is written
    with pytest.raises(serving.ExportError, match="injected"):
        serving.export_model(_autoencoder(GRAY), base, _config(GRAY))
    assert not os.path.exists(base)  # it created the base, so it removed it
    assert _listing(str(tmp_path)) == []


def test_failure_in_tflite_leaves_nothing(gray, tmp_path, monkeypatch):
    base = _copy_of(gray, tmp_path / "exported" / "m")  # version 1 exists and survives
    ae, config = gray.ae, gray.config
    before = _listing(base)
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:  # float32.tflite is written, float16 fails
            raise RuntimeError("converter crashed (injected)")
        return b"a converted float32 model"

    monkeypatch.setattr(serving, "convert_tflite", fail_second)
    with pytest.raises(serving.ExportError, match="version 2.*injected"):
        serving.export_model(ae, base, config)
    assert len(calls) == 2
    assert _listing(base) == before  # no 2/, no tflite/2, no .tmp-*
    assert serving.next_version(base) == 2


def test_failure_while_overwriting_keeps_the_old_version(gray, tmp_path, monkeypatch):
    base = _copy_of(gray, tmp_path / "m")
    ae, config = gray.ae, gray.config
    marker = os.path.join(base, "1", "marker")
    open(marker, "w").close()
    monkeypatch.setattr(serving, "write_rae_config",
                        lambda *a, **k: (_ for _ in ()).throw(ValueError("injected")))
    with pytest.raises(serving.ExportError):
        serving.export_model(ae, base, config, version=1, overwrite=True, tflite=False)
    assert os.path.exists(marker)
    assert _leftovers(base) == []


def test_mismatched_config_is_refused(tmp_path):
    config = _config(dict(GRAY, channels=3))
    with pytest.raises(serving.ExportError, match="does not match"):
        serving.export_model(_autoencoder(GRAY), str(tmp_path / "m"), config)
    assert not os.path.exists(tmp_path / "m")


# ------------------------------------------------------------------ REST client
def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_tf_serving(loaded, body: dict) -> dict:
    """What TF Serving's REST predict API answers for `body`, computed in-process.

    Row format ("instances"): each instance is a dict of named inputs (or a bare value for
    a one-input signature); {"b64": ...} is binary. The reply's "predictions" hold one
    dict per instance when the signature has several outputs, bare values otherwise;
    string outputs whose names end in `_bytes` are sent as {"b64": ...}.
    """
    body = json.loads(json.dumps(body))  # it went over the wire
    fn = loaded.signatures[body.get("signature_name", "serving_default")]
    input_names = list(fn.structured_input_signature[1])

    def decode(value):
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        return value

    rows = [inst if isinstance(inst, dict) and set(inst) != {"b64"} else {input_names[0]: inst}
            for inst in body["instances"]]
    inputs = {name: tf.constant([decode(row[name]) for row in rows]) for name in input_names}
    try:
        outputs = fn(**inputs)
    except tf.errors.InvalidArgumentError as e:
        return {"error": e.message}

    def encode(name, value):
        if isinstance(value, bytes):
            return {"b64": base64.b64encode(value).decode()} if name.endswith("_bytes") \
                else value.decode()
        return value.tolist()

    per_instance = [{name: encode(name, t.numpy()[i]) for name, t in outputs.items()}
                    for i in range(len(rows))]
    if len(outputs) == 1:
        per_instance = [next(iter(p.values())) for p in per_instance]
    return json.loads(json.dumps({"predictions": per_instance}))


def test_serve_client_against_signature(export):
    client = _load_tool("serve_client")
    photo = _photo((70, 52), "RGB", "JPEG", seed=7)
    request = client.build_request(photo)
    assert request["signature_name"] == "reconstruct_image_bytes"
    json.dumps(request)  # serializable as is
    response = fake_tf_serving(export.loaded, request)
    png = client.parse_response(response)
    want = export.sig("reconstruct_image_bytes")(image_bytes=tf.constant([photo]))
    assert png == want["reconstruction_bytes"].numpy()[0]
    assert tf.io.decode_png(png).shape == export.ae.image_shape

    # The columnar reply format works too.
    columnar = {"outputs": {"reconstruction_bytes": [response["predictions"][0]
                                                     ["reconstruction_bytes"]]}}
    assert client.parse_response(columnar) == png


def test_serve_client_float_instances_and_errors(gray):
    client = _load_tool("serve_client")
    # The README's float request: {"instances": images} to serving_default.
    x = gray.images(batch=2)
    reply = fake_tf_serving(gray.loaded, {"instances": x.tolist()})
    np.testing.assert_allclose(
        np.array(reply["predictions"], np.float32),
        gray.sig("serving_default")(images=tf.constant(x))["reconstruction"].numpy(), atol=1e-6)
    # A corrupt photo comes back as TF Serving's {"error": ...}, which the client raises.
    reply = fake_tf_serving(gray.loaded, client.build_request(b"not an image"))
    with pytest.raises(client.ServingError, match="server error"):
        client.parse_response(reply)


def test_serve_client_main_writes_png(gray, tmp_path, monkeypatch):
    client = _load_tool("serve_client")
    photo = tmp_path / "face.png"
    photo.write_bytes(_photo((30, 40), "L", "PNG"))
    monkeypatch.setattr(client, "post_json",
                        lambda url, body, timeout: fake_tf_serving(gray.loaded, body))
    out = tmp_path / "out.png"
    assert client.main([str(photo), "--url", "http://x:8501/v1/models/m:predict",
                        "--output", str(out)]) == 0
    assert tf.io.decode_png(out.read_bytes()).shape == (SIZE, SIZE, 1)


def test_serve_client_over_http(gray, tmp_path):
    """The real HTTP path (urllib) against a local stand-in for TF Serving's REST API."""
    import http.server
    import threading

    client = _load_tool("serve_client")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = fake_tf_serving(gray.loaded, body)
            data = json.dumps(reply).encode()
            self.send_response(400 if "error" in reply else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/models/m:predict"
        photo = tmp_path / "face.jpg"
        photo.write_bytes(_photo((48, 36), "RGB", "JPEG"))
        out = tmp_path / "out.png"
        assert client.main([str(photo), "--url", url, "--output", str(out)]) == 0
        want = gray.sig("reconstruct_image_bytes")(image_bytes=tf.constant([photo.read_bytes()]))
        assert out.read_bytes() == want["reconstruction_bytes"].numpy()[0]
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"not a jpeg")
        assert client.main([str(bad), "--url", url, "--output", str(tmp_path / "x.png")]) == 1
        assert not (tmp_path / "x.png").exists()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("normalization", ["batch", "shared_batch"])
def test_normalized_models_export_in_inference_mode(tmp_path, normalization):
    config = RunConfig(data=DataConfig(image_size=SIZE, channels=1),
                       model=ModelConfig(filters=(4, 8), normalization=normalization))
    ae = ConvAutoencoder.from_model_config(config.model, (SIZE, SIZE, 1))
    model = ae.full_model()
    rng = np.random.default_rng(3)
    for layer in ae.stage_leaf_layers():  # non-trivial moving statistics
        if "bn" in layer.name:
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape) * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
    path = serving.export_model(ae, str(tmp_path / "m"), config, tflite=False)
    loaded = tf.saved_model.load(path)
    x = rng.random((3, SIZE, SIZE, 1), dtype=np.float32)
    for name, m in [("serving_default", model), ("encode", ae.encoder())]:
        want = np.asarray(m(x, training=False))
        got = loaded.signatures[name](images=tf.constant(x))
        np.testing.assert_allclose(next(iter(got.values())).numpy(), want, atol=1e-5, rtol=0)
