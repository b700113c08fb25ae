"""Export for serving: signatures, an atomic versioned SavedModel, TFLite files.

Layout written under an export base (`exported/NAME`), TF Serving's layout:

    EXPORT_BASE/VERSION/                     SavedModel (plain TensorFlow loads it)
    EXPORT_BASE/VERSION/assets.extra/rae_config.json
    EXPORT_BASE/tflite/VERSION/{float32,float16,dynamic_int8}.tflite

Signatures, every one with a dynamic batch dimension B (B = 0 included):

    serving_default          images float32 [B,S,S,C] in [0,1] -> reconstruction [B,S,S,C]
    encode                   images                             -> code [B,s,s,c]
    decode                   code                               -> reconstruction
    reconstruct_depth_K      images                             -> reconstruction (K = 1..N)
    reconstruct_image_bytes  image_bytes string [B] (JPEG/PNG/BMP, any size)
                             -> reconstruction_bytes string [B] (PNG), reconstruction,
                                valid bool [B], error string [B]

What a request gets:

- A tensor of another shape than declared (no batch axis, a rank-5 tensor, another
  image size) fails the request with InvalidArgumentError naming the expected shape,
  checked before any op runs, also when fed by tensor name as TF Serving does.
- NaN or infinite values are not refused: they give non-finite outputs for that image
  only, and the other images of the batch are unaffected (refusing them would let one
  client fail a whole batch that TF Serving's request batching assembled).
- A photo the bytes signature cannot use fails only itself, for the same reason: it
  gets valid=false, an empty reconstruction_bytes, a zero reconstruction and the reason
  in `error`; a batch of one such photo is answered the same way, not with an error.
  Refused are corrupt or truncated data, formats other than JPEG, PNG and BMP (GIF's
  frame count is unbounded), and photos whose header declares more than
  `max_image_pixels` pixels (4096*4096 unless set at export; in rae_config.json):
  those are refused from the header, before any decoding, so a small file declaring a
  huge image costs nothing.

Each version is built in a hidden temporary sibling directory (`.N.tmp-*`, a name TF
Serving never takes for a version) and renamed into place only when complete, so a
watcher never sees half a version and a failure leaves nothing behind; what a killed
export leaves (`.N.tmp-*`, an old copy `.N.old-*`) the next export repairs. The TFLite
files carry every signature but the bytes one (its decode/encode ops are not TFLite
builtins); their batch dimension is dynamic too (`SignatureRunner` resizes the input
to the array it is given).

This module never reads flags; the `export` and `train` drivers pass a RunConfig.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

import rae_keras
from rae_keras import fileio
from rae_keras.config import ARRAYS, DataConfig, ModelConfig, RunConfig
from rae_keras.models import StagedAutoencoder
from rae_keras.preprocessing import header_size, preprocess_bytes

SERVING_DEFAULT = "serving_default"
ENCODE = "encode"
DECODE = "decode"
RECONSTRUCT_IMAGE_BYTES = "reconstruct_image_bytes"
CONFIG_FILENAME = "rae_config.json"
# The Keras model beside the SavedModel, for `rae_keras.load` (TF Serving ignores
# assets.extra): an export can be fine-tuned, not only served.
KERAS_FILENAME = "model.keras"
ASSETS_EXTRA = "assets.extra"
TFLITE_DIRNAME = "tflite"
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic_int8")
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


class ExportError(RuntimeError):
    """An export that cannot be done or did not complete; nothing was left behind."""


# --------------------------------------------------------------------------- layout
def version_dir(export_base: str, version: int) -> str:
    return os.path.join(export_base, str(int(version)))


def tflite_dir(export_base: str, version: int) -> str:
    return os.path.join(export_base, TFLITE_DIRNAME, str(int(version)))


def _integer_entries(path: str) -> List[int]:
    if not os.path.isdir(path):
        return []
    return sorted(int(name) for name in os.listdir(path)
                  if name.isdigit() and os.path.isdir(os.path.join(path, name)))


def list_versions(export_base: str) -> List[int]:
    """The SavedModel versions under `export_base`, ascending."""
    return _integer_entries(export_base)


def latest_version(export_base: str) -> Optional[int]:
    versions = list_versions(export_base)
    return versions[-1] if versions else None


def next_version(export_base: str) -> int:
    """One past the highest version present; 1 for a new base. Counts a version that
    a killed overwrite left aside (the next export restores it) and TFLite directories,
    but not orphans the next export removes."""
    orphans = _orphan_tflite_versions(export_base)
    taken = _integer_entries(export_base) + [
        v for v in _integer_entries(os.path.join(export_base, TFLITE_DIRNAME))
        if v not in orphans]
    taken += [int(name) for name, kind, _ in fileio.staged_leftovers(export_base)
              if kind == "old" and name.isdigit()]
    return max(taken) + 1 if taken else 1


def _orphan_tflite_versions(export_base: str) -> List[int]:
    """tflite/N without SavedModel N (or an old copy of it) holding exactly the files an
    export writes: an export killed between its two commits left it. Anything else
    there was not written by rae_keras and is kept (and its number stays taken)."""
    versions = set(list_versions(export_base))
    lite_base = os.path.join(export_base, TFLITE_DIRNAME)
    ours = {f"{q}.tflite" for q in TFLITE_QUANTIZATIONS}
    return [v for v in _integer_entries(lite_base)
            if v not in versions and not fileio.asides(version_dir(export_base, v))
            and set(os.listdir(os.path.join(lite_base, str(v)))) == ours]


def repair_export_base(export_base: str) -> None:
    """Undoes what killed exports left in `export_base`: removes their `.N.tmp-*`
    temporaries and settles every version with an old copy aside or an orphan TFLite
    directory (see `_settle_version`). Only for a writer holding the base's lock."""
    lite_base = os.path.join(export_base, TFLITE_DIRNAME)
    unsettled = set(_orphan_tflite_versions(export_base))
    for directory in (export_base, lite_base):
        for name, kind, path in fileio.staged_leftovers(directory):
            if not name.isdigit():
                continue  # not a version: not ours
            if kind == "tmp":
                fileio.remove_trees([path])
            else:
                unsettled.add(int(name))
    for version in sorted(unsettled):
        _settle_version(export_base, version)


def _settle_version(export_base: str, version: int) -> None:
    """Leaves version N whole after its swap finished, failed or was killed.

    Overwriting an existing N, export_model moves the old tflite/N aside, then the old
    N, then renames the new tflite/N in and the new N last (the commit point); no old
    tflite/N is moved aside without an old N. So an old N aside next to N means the
    swap committed: drop the old copies, TFLite first. An old N aside without N means
    it did not, and a tflite/N there is the new one: remove it, put N back, then the
    old tflite/N. Without N at all, a tflite/N is an orphan (see
    `_orphan_tflite_versions`). Each step can be redone after a kill.
    """
    final, lite = version_dir(export_base, version), tflite_dir(export_base, version)
    old, old_lite = fileio.asides(final), fileio.asides(lite)
    if old and os.path.isdir(final):
        fileio.remove_trees(old_lite + old)
        return
    if old:
        fileio.remove_trees([lite])
        os.rename(old[0], final)
        fileio.remove_trees(old[1:])
    if not os.path.isdir(final):
        if version in _orphan_tflite_versions(export_base):
            fileio.remove_trees([lite])
        fileio.remove_trees(old_lite)
    elif old_lite:
        fileio.remove_trees([lite])
        os.rename(old_lite[0], lite)
        fileio.remove_trees(old_lite[1:])


def weights_sha256(autoencoder: StagedAutoencoder) -> str:
    """Identifies the weights (every variable's path, dtype, shape and values), so a
    rerun can tell an export of these very weights from another one."""
    digest = hashlib.sha256()
    for variable in autoencoder.full_model().weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{variable.path}:{value.dtype}:{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def latest_export_of(autoencoder: StagedAutoencoder, export_base: str) -> Optional[str]:
    """The newest version directory in `export_base` if it holds these weights."""
    version = latest_version(export_base)
    if version is None:
        return None
    try:
        recorded = read_rae_config(version_dir(export_base, version)).get("weights_sha256")
    except (OSError, ValueError):
        return None  # not an export of ours, or from before the weights were recorded
    if recorded != weights_sha256(autoencoder):
        return None
    return os.path.abspath(version_dir(export_base, version))


def _first_non_finite(autoencoder: StagedAutoencoder) -> Optional[str]:
    for variable in autoencoder.full_model().weights:
        if not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
            return variable.path
    return None


def depth_signature(depth: int) -> str:
    return f"reconstruct_depth_{depth}"


def signature_names(num_stages: int, include_bytes: bool = True) -> List[str]:
    """Every SavedModel signature key, in the order they are registered."""
    names = [SERVING_DEFAULT, ENCODE, DECODE]
    names += [depth_signature(k) for k in range(1, num_stages + 1)]
    if include_bytes:
        names.append(RECONSTRUCT_IMAGE_BYTES)
    return names


def tflite_signature_names(num_stages: int) -> List[str]:
    """The signatures converted to TFLite: all but the bytes one."""
    return signature_names(num_stages, include_bytes=False)


# --------------------------------------------------------------------------- signatures
def to_png_pixels(images: tf.Tensor) -> tf.Tensor:
    """Float [.., H, W, C] in [0, 1] -> uint8, rounded to the nearest level."""
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def _checked(inputs: tf.Tensor) -> tf.Tensor:
    """`inputs` after a run-time check that the request matches the declared shape.

    The placeholder's declared shape is checked only by Python front ends; a C++ Session
    fed by tensor name (TF Serving) passes any shape on, and oneDNN's Conv2D aborts the
    process on a missing batch axis while a wrong spatial size is silently resampled.
    EnsureShape on the data path runs before every op that uses the input, and grappler
    keeps it (tests/test_serving_requests.py feeds such a Session); its
    InvalidArgumentError names the expected shape. The dtype needs no check: a Session
    refuses a feed of another dtype itself.
    """
    return tf.ensure_shape(inputs, inputs.shape)


def _any_batch(model: Callable, inputs: tf.Tensor) -> tf.Tensor:
    """model(inputs) for every batch size B, 0 included.

    oneDNN's Conv2D fails on an empty batch, so B=0 runs on one appended zero row that
    is sliced off again; other batches only pay for a copy of the input.
    """
    batch = tf.shape(inputs)[0]
    missing = tf.maximum(1 - batch, 0)
    padding = tf.zeros(tf.concat([[missing], tf.shape(inputs)[1:]], 0), inputs.dtype)
    padded = tf.ensure_shape(tf.concat([inputs, padding], 0), inputs.shape)
    return model(padded, training=False)[:batch]


# Why an image of the bytes signature got no reconstruction: its `error` output.
IMAGE_OK, IMAGE_UNSUPPORTED, IMAGE_TOO_LARGE, IMAGE_CORRUPT = range(4)
_IMAGE_ERRORS = ("", "not a JPEG, PNG or BMP image", "too large",
                 "corrupt or truncated image data")


def _preprocess_each(image_bytes: tf.Tensor, crop: int, size: int, channels: int,
                     max_pixels: int):
    """Every photo of a bytes batch preprocessed on its own: (images [B,S,S,C], zero
    for a bad photo; status [B], an IMAGE_* code; height_width [B, 2] from its header).

    A bad photo must not fail the batch: under TF Serving's request batching the batch
    holds other clients' requests too. A graph can catch a decoder's error only in
    tf.data's `ignore_errors`, which drops the element, so each photo travels with its
    index and one that never comes back is IMAGE_CORRUPT. Each header is read first, and
    a photo declaring more than `max_pixels` pixels, or in a format whose header is not
    read (GIF: any number of frames; WebP), is refused without being decoded.
    """
    def prepare(index, data):
        height_width = header_size(data)
        status = tf.where(height_width[0] < 0, IMAGE_UNSUPPORTED,
                          tf.where(height_width[0] * height_width[1] > max_pixels,
                                   IMAGE_TOO_LARGE, IMAGE_OK))
        image = tf.cond(tf.equal(status, IMAGE_OK),
                        lambda: preprocess_bytes(data, crop, size, channels),
                        lambda: tf.zeros([size, size, channels]))
        return index, status, height_width, image

    count = tf.shape(image_bytes)[0]
    kept = (tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
            .map(prepare).ignore_errors())
    nothing = (tf.zeros([0], tf.int32), tf.zeros([0], tf.int32), tf.zeros([0, 2], tf.int64),
               tf.zeros([0, size, size, channels]))
    one_batch = kept.batch(tf.cast(tf.maximum(count, 1), tf.int64))
    index, status, height_width, images = one_batch.reduce(
        nothing, lambda done, batch: tuple(tf.concat(pair, 0) for pair in zip(done, batch)))

    def place(values, default):
        return tf.tensor_scatter_nd_update(default, index[:, None], values)

    return (place(images, tf.zeros([count, size, size, channels])),
            place(status, tf.fill([count], IMAGE_CORRUPT)),
            place(height_width, tf.zeros([count, 2], tf.int64)))


def _image_errors(status: tf.Tensor, height_width: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """string [B]: "" for a good photo, else why it got no reconstruction."""
    size = tf.strings.as_string(height_width)
    too_large = tf.strings.join([
        "image of ", size[:, 1], "x", size[:, 0],
        f" pixels is larger than max_image_pixels={max_pixels}; not decoded"])
    return tf.where(tf.equal(status, IMAGE_TOO_LARGE), too_large,
                    tf.gather(_IMAGE_ERRORS, status))


def serving_functions(autoencoder: StagedAutoencoder, config: RunConfig, *,
                      max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
                      ) -> Dict[str, tuple]:
    """Signature name -> (fn, input_signature). Every fn returns a dict of named outputs.

    `max_image_pixels`: the bytes signature refuses photos whose header declares more.
    """
    if int(max_image_pixels) < 1:
        raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels}")
    max_image_pixels = int(max_image_pixels)
    crop = config.data.crop
    images_spec = tf.TensorSpec([None, *autoencoder.image_shape], tf.float32, name="images")
    code_spec = tf.TensorSpec([None, *autoencoder.code_shape], tf.float32, name="code")
    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    full = autoencoder.full_model()
    encoder = autoencoder.encoder()
    decoder = autoencoder.decoder()

    def serving_default(images):
        return {"reconstruction": _any_batch(full, _checked(images))}

    def encode(images):
        return {"code": _any_batch(encoder, _checked(images))}

    def decode(code):
        return {"reconstruction": _any_batch(decoder, _checked(code))}

    def depth_fn(depth: int) -> Callable:
        model = autoencoder.depth_model(depth)

        def reconstruct_depth(images):
            return {"reconstruction": _any_batch(model, _checked(images))}

        return reconstruct_depth

    def reconstruct_image_bytes(image_bytes):
        size, _, channels = autoencoder.image_shape
        images, status, height_width = _preprocess_each(
            _checked(image_bytes), crop, size, channels, max_image_pixels)
        valid = tf.equal(status, IMAGE_OK)
        reconstruction = tf.where(valid[:, None, None, None], _any_batch(full, images), 0.0)
        pngs = tf.map_fn(tf.io.encode_png, to_png_pixels(reconstruction),
                         fn_output_signature=tf.TensorSpec([], tf.string))
        return {"reconstruction_bytes": tf.where(valid, pngs, ""),
                "reconstruction": reconstruction,
                "valid": valid,
                "error": _image_errors(status, height_width, max_image_pixels)}

    functions = {
        SERVING_DEFAULT: (serving_default, [images_spec]),
        ENCODE: (encode, [images_spec]),
        DECODE: (decode, [code_spec]),
    }
    for k in range(1, autoencoder.num_stages + 1):
        functions[depth_signature(k)] = (depth_fn(k), [images_spec])
    if autoencoder.is_image_model:  # photos in, PNGs out; other inputs get floats only
        functions[RECONSTRUCT_IMAGE_BYTES] = (reconstruct_image_bytes, [bytes_spec])
    return functions


def build_export_archive(autoencoder: StagedAutoencoder, config: RunConfig, *,
                         max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
                         ) -> keras.export.ExportArchive:
    """An ExportArchive over the autoencoder's variables with every signature."""
    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoints capture every variable they use, and
    # tracking the Keras model as well stores each weight twice (once as the Keras
    # variable, once as the tf.Variable under it), doubling the SavedModel on disk.
    functions = serving_functions(autoencoder, config, max_image_pixels=max_image_pixels)
    for name, (fn, input_signature) in functions.items():
        archive.add_endpoint(name=name, fn=fn, input_signature=input_signature)
    return archive


def rae_config(autoencoder: StagedAutoencoder, config: RunConfig, version: int, *,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict:
    """What assets.extra/rae_config.json holds: enough to use the export without the run."""
    image = autoencoder.is_image_model
    return {
        "format": "rae_keras.serving/1",
        "name": config.name,
        "version": int(version),
        "image_size": autoencoder.image_shape[0] if image else None,
        "channels": autoencoder.image_shape[-1] if image else None,
        "crop": config.data.crop,
        "num_stages": autoencoder.num_stages,
        **_network_description(autoencoder),
        "scheme": config.train.scheme,
        "input_shape": list(autoencoder.image_shape),
        "code_shape": list(autoencoder.code_shape),
        "input_range": [0.0, 1.0],
        "max_image_pixels": int(max_image_pixels),
        "signatures": signature_names(autoencoder.num_stages, include_bytes=image),
        "tflite_signatures": tflite_signature_names(autoencoder.num_stages),
        "keras_model": KERAS_FILENAME,
        "rae_keras_version": rae_keras.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "run_config": config.training_fingerprint(),
    }


def _network_description(autoencoder: StagedAutoencoder) -> dict:
    """The ConvAutoencoder's settings; other networks are described by model.keras."""
    model = getattr(autoencoder, "model_config", None)
    if model is None:
        return {"network": type(autoencoder).__name__}
    stages = range(1, model.num_stages + 1)
    return {"network": type(autoencoder).__name__, "filters": list(model.filters),
            "kernel_sizes": [model.encoder_kernel(k) for k in stages],
            "decoder_kernel_sizes": [model.decoder_kernel(k) for k in stages],
            "activation": model.activation, "normalization": model.normalization}


def export_config(autoencoder: StagedAutoencoder, export_base: str) -> RunConfig:
    """The configuration an export records for a model trained from Python: its data
    is arrays already at the model's input size (crop 0)."""
    image = autoencoder.is_image_model
    return RunConfig(
        name=os.path.basename(os.path.normpath(export_base)) or "model", export_dir=export_base,
        data=DataConfig(dataset=ARRAYS, image_size=autoencoder.image_shape[0] if image else 0,
                        channels=autoencoder.image_shape[-1] if image else 0),
        model=getattr(autoencoder, "model_config", ModelConfig()))


def write_rae_config(saved_model_dir: str, config_dict: dict) -> str:
    path = os.path.join(saved_model_dir, ASSETS_EXTRA, CONFIG_FILENAME)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def read_rae_config(saved_model_dir: str) -> dict:
    with open(os.path.join(saved_model_dir, ASSETS_EXTRA, CONFIG_FILENAME)) as f:
        return json.load(f)


def write_saved_model(autoencoder: StagedAutoencoder, config: RunConfig, path: str,
                      version: int, *,
                      max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """The SavedModel with every signature and its rae_config.json, into `path`."""
    build_export_archive(autoencoder, config, max_image_pixels=max_image_pixels
                         ).write_out(path, verbose=False)
    os.makedirs(os.path.join(path, ASSETS_EXTRA), exist_ok=True)
    autoencoder.save(os.path.join(path, ASSETS_EXTRA, KERAS_FILENAME))
    write_rae_config(path, rae_config(autoencoder, config, version,
                                      max_image_pixels=max_image_pixels))


# --------------------------------------------------------------------------- TFLite
def convert_tflite(saved_model_dir: str, signature_keys: Sequence[str],
                   quantization: str) -> bytes:
    """One TFLite flatbuffer with `signature_keys` (none may be named `serve`)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=list(signature_keys))
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization != "float32":
        raise ValueError(f"unknown quantization {quantization!r}; "
                         f"expected one of {TFLITE_QUANTIZATIONS}")
    return converter.convert()


def write_tflite(saved_model_dir: str, out_dir: str, signature_keys: Sequence[str],
                 quantizations: Sequence[str] = TFLITE_QUANTIZATIONS) -> List[str]:
    """`out_dir/{quantization}.tflite` for each quantization; returns the paths."""
    if "serve" in signature_keys:
        # With an endpoint named `serve`, multi-signature conversion silently keeps only
        # serving_default; refuse rather than write an incomplete file.
        raise ExportError("a signature named 'serve' breaks TFLite multi-signature conversion")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for quantization in quantizations:
        flatbuffer = convert_tflite(saved_model_dir, signature_keys, quantization)
        path = os.path.join(out_dir, f"{quantization}.tflite")
        with open(path, "wb") as f:
            f.write(flatbuffer)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- export
def export_model(autoencoder: StagedAutoencoder, export_base: str,
                 config: Optional[RunConfig] = None, *, version: Optional[int] = None, overwrite: bool = False,
                 tflite: bool = True, provenance: Optional[Dict[str, Any]] = None,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """Export `autoencoder` as EXPORT_BASE/VERSION (and tflite/VERSION); returns the
    version directory. Without `version`, the next integer after the highest present.
    `config`: the run's configuration (the bytes signature's crop, what rae_config.json
    records); without it, one for inputs already at the model's size.
    `provenance` (e.g. the training state the weights come from) is added to
    rae_config.json, with the weights' sha256. `max_image_pixels`: see `serving_functions`.

    Everything is built in temporary siblings and renamed into place at the end (the
    TFLite directory first, the SavedModel last), so either the whole version appears
    or, on any failure, nothing does and an ExportError says why in one line. What a
    killed export left is repaired by the next one (`repair_export_base`), under a lock
    that keeps two exports from writing one base at once.
    """
    if not export_base:
        raise ExportError("no export directory given")
    config = config or export_config(autoencoder, export_base)
    expected = (config.data.image_size, config.data.image_size, config.data.channels)
    if autoencoder.is_image_model and tuple(autoencoder.image_shape) != expected:
        raise ExportError(
            f"model input {autoencoder.image_shape} does not match the config's "
            f"image_size/channels {expected}; the bytes signature would preprocess wrongly")
    non_finite = _first_non_finite(autoencoder)
    if non_finite:
        raise ExportError(f"refusing to export non-finite weights: {non_finite} holds NaN "
                          "or infinity")
    if version is not None and int(version) < 0:
        raise ExportError(f"version must be a non-negative integer, got {version}")
    base = os.path.abspath(export_base)
    created: List[str] = []
    try:
        created = fileio.make_dirs(base)
        with fileio.exclusive(base):
            repair_export_base(base)
            version = next_version(base) if version is None else int(version)
            recorded = dict(provenance or {}, weights_sha256=weights_sha256(autoencoder))
            return _write_version(autoencoder, config, base, version, overwrite, tflite,
                                  recorded, max_image_pixels=max_image_pixels)
    except BaseException as e:
        fileio.remove_empty_dirs(created)
        if isinstance(e, ExportError) or not isinstance(e, Exception):
            raise
        raise ExportError(_failure_message(e, base, version)) from e


def _write_version(autoencoder: StagedAutoencoder, config: RunConfig, export_base: str,
                   version: int, overwrite: bool, tflite: bool, recorded: Dict[str, Any],
                   *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """export_model's work on a locked, repaired base; on failure leaves it as it was."""
    saved_model_final = version_dir(export_base, version)
    tflite_final = tflite_dir(export_base, version)
    for final in (saved_model_final, tflite_final):
        if os.path.lexists(final) and not overwrite:
            raise ExportError(f"version {version} already exists at {final}; pass --overwrite")

    staged: List[fileio.StagedDirectory] = []
    try:
        saved_model = fileio.StagedDirectory(saved_model_final)
        staged.append(saved_model)
        write_saved_model(autoencoder, config, saved_model.tmp, version,
                          max_image_pixels=max_image_pixels)
        write_rae_config(saved_model.tmp, dict(read_rae_config(saved_model.tmp), **recorded))
        if tflite:
            lite = fileio.StagedDirectory(tflite_final)
            staged.append(lite)
            write_tflite(saved_model.tmp, lite.tmp,
                         tflite_signature_names(autoencoder.num_stages))
        # The swap, in the order _settle_version relies on.
        if overwrite and os.path.isdir(saved_model_final):
            fileio.move_aside(tflite_final)  # also when not writing TFLite: it is stale
            fileio.move_aside(saved_model_final)
        elif overwrite:
            fileio.remove_trees([tflite_final])  # no version it could belong to
        if tflite:
            lite.commit()
        saved_model.commit()  # last: what TF Serving watches
    except BaseException:
        with contextlib.suppress(OSError):  # else left as after a kill: repaired next time
            _settle_version(export_base, version)  # puts the old copies back
        for s in reversed(staged):
            s.rollback()
        raise
    with contextlib.suppress(OSError):
        _settle_version(export_base, version)  # drops the old copies
    return saved_model_final


def _failure_message(e: Exception, export_base: str, version: Optional[int]) -> str:
    """One line: an OSError's strerror and file, else the exception's first line."""
    if isinstance(e, fileio.Busy):
        return f"another export to {export_base} is in progress; try again when it ends"
    if isinstance(e, OSError) and e.strerror:
        reason = e.strerror + (f": {e.filename}" if e.filename else "")
    else:
        reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    what = f"version {version} to {export_base}" if version is not None else export_base
    return f"export of {what} failed (nothing was written): {reason}"
