"""Export for serving: signatures, an atomic versioned SavedModel, TFLite files.

Layout written under an export base (`exported/NAME`), TF Serving's layout:

    EXPORT_BASE/VERSION/                     SavedModel (plain TensorFlow loads it)
    EXPORT_BASE/VERSION/assets.extra/rae_config.json
    EXPORT_BASE/tflite/VERSION/{float32,float16,dynamic_int8}.tflite

Signatures (DESIGN section 5), every one with a dynamic batch dimension B:

    serving_default          images float32 [B,S,S,C] in [0,1] -> reconstruction [B,S,S,C]
    encode                   images                             -> code [B,s,s,c]
    decode                   code                               -> reconstruction
    reconstruct_depth_K      images                             -> reconstruction (K = 1..N)
    reconstruct_image_bytes  image_bytes string [B] (JPEG/PNG, any size)
                             -> reconstruction_bytes string [B] (PNG), reconstruction

Each version is built in a hidden temporary sibling directory (`.tmp-...`, a name TF
Serving never takes for a version) and renamed into place only when complete, so a
watcher never sees half a version and a failure leaves nothing behind. The TFLite
files carry every signature but the bytes one (its decode/encode ops are not TFLite
builtins); their batch dimension is dynamic too (`SignatureRunner` resizes the input
to the array it is given).

This module never reads flags; the `export` and `train` drivers pass a RunConfig.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable, Dict, List, Optional, Sequence

import keras
import tensorflow as tf

import rae_keras
from rae_keras import fileio
from rae_keras.architecture import Autoencoder
from rae_keras.config import RunConfig
from rae_keras.preprocessing import preprocess_bytes

SERVING_DEFAULT = "serving_default"
ENCODE = "encode"
DECODE = "decode"
RECONSTRUCT_IMAGE_BYTES = "reconstruct_image_bytes"
CONFIG_FILENAME = "rae_config.json"
ASSETS_EXTRA = "assets.extra"
TFLITE_DIRNAME = "tflite"
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic_int8")


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
    """One past the highest version present (SavedModel or TFLite); 1 for a new base."""
    taken = _integer_entries(export_base) + _integer_entries(
        os.path.join(export_base, TFLITE_DIRNAME))
    return max(taken) + 1 if taken else 1


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


def serving_functions(autoencoder: Autoencoder, config: RunConfig
                      ) -> Dict[str, tuple]:
    """Signature name -> (fn, input_signature). Every fn returns a dict of named outputs."""
    size, _, channels = autoencoder.image_shape
    crop = config.data.crop
    images_spec = tf.TensorSpec([None, *autoencoder.image_shape], tf.float32, name="images")
    code_spec = tf.TensorSpec([None, *autoencoder.code_shape], tf.float32, name="code")
    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    full = autoencoder.full_model()
    encoder = autoencoder.encoder()
    decoder = autoencoder.decoder()

    def serving_default(images):
        return {"reconstruction": full(images, training=False)}

    def encode(images):
        return {"code": encoder(images, training=False)}

    def decode(code):
        return {"reconstruction": decoder(code, training=False)}

    def depth_fn(depth: int) -> Callable:
        model = autoencoder.depth_model(depth)

        def reconstruct_depth(images):
            return {"reconstruction": model(images, training=False)}

        return reconstruct_depth

    def reconstruct_image_bytes(image_bytes):
        images = tf.map_fn(
            lambda b: preprocess_bytes(b, crop, size, channels), image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, channels], tf.float32))
        reconstruction = full(images, training=False)
        pngs = tf.map_fn(tf.io.encode_png, to_png_pixels(reconstruction),
                         fn_output_signature=tf.TensorSpec([], tf.string))
        return {"reconstruction_bytes": pngs, "reconstruction": reconstruction}

    functions = {
        SERVING_DEFAULT: (serving_default, [images_spec]),
        ENCODE: (encode, [images_spec]),
        DECODE: (decode, [code_spec]),
    }
    for k in range(1, autoencoder.num_stages + 1):
        functions[depth_signature(k)] = (depth_fn(k), [images_spec])
    functions[RECONSTRUCT_IMAGE_BYTES] = (reconstruct_image_bytes, [bytes_spec])
    return functions


def build_export_archive(autoencoder: Autoencoder, config: RunConfig
                         ) -> keras.export.ExportArchive:
    """An ExportArchive over the autoencoder's variables with every signature."""
    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoints capture every variable they use, and
    # tracking the Keras model as well stores each weight twice (once as the Keras
    # variable, once as the tf.Variable under it), doubling the SavedModel on disk.
    for name, (fn, input_signature) in serving_functions(autoencoder, config).items():
        archive.add_endpoint(name=name, fn=fn, input_signature=input_signature)
    return archive


def rae_config(autoencoder: Autoencoder, config: RunConfig, version: int) -> dict:
    """What assets.extra/rae_config.json holds: enough to use the export without the run."""
    model = config.model
    return {
        "format": "rae_keras.serving/1",
        "name": config.name,
        "version": int(version),
        "image_size": autoencoder.image_shape[0],
        "channels": autoencoder.image_shape[-1],
        "crop": config.data.crop,
        "num_stages": autoencoder.num_stages,
        "filters": list(model.filters),
        "kernel_sizes": [model.encoder_kernel(k) for k in range(1, model.num_stages + 1)],
        "decoder_kernel_sizes": [model.decoder_kernel(k)
                                 for k in range(1, model.num_stages + 1)],
        "activation": model.activation,
        "normalization": model.normalization,
        "scheme": config.train.scheme,
        "input_shape": list(autoencoder.image_shape),
        "code_shape": list(autoencoder.code_shape),
        "input_range": [0.0, 1.0],
        "signatures": signature_names(autoencoder.num_stages),
        "tflite_signatures": tflite_signature_names(autoencoder.num_stages),
        "rae_keras_version": rae_keras.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "run_config": config.training_fingerprint(),
    }


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


def write_saved_model(autoencoder: Autoencoder, config: RunConfig, path: str,
                      version: int) -> None:
    """The SavedModel with every signature and its rae_config.json, into `path`."""
    build_export_archive(autoencoder, config).write_out(path, verbose=False)
    write_rae_config(path, rae_config(autoencoder, config, version))


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


# --------------------------------------------------------------------------- atomic dirs
# --------------------------------------------------------------------------- export
def export_model(autoencoder: Autoencoder, config: RunConfig, export_base: str, *,
                 version: Optional[int] = None, overwrite: bool = False,
                 tflite: bool = True) -> str:
    """Export `autoencoder` as EXPORT_BASE/VERSION (and tflite/VERSION); returns the
    version directory. Without `version`, the next integer after the highest present.

    Everything is built in temporary siblings and renamed into place at the end (the
    TFLite directory first, the SavedModel last), so either the whole version appears
    or, on any failure, nothing does and an ExportError says why.
    """
    if not export_base:
        raise ExportError("no export directory given")
    expected = (config.data.image_size, config.data.image_size, config.data.channels)
    if tuple(autoencoder.image_shape) != expected:
        raise ExportError(
            f"model input {autoencoder.image_shape} does not match the config's "
            f"image_size/channels {expected}; the bytes signature would preprocess wrongly")
    if version is None:
        version = next_version(export_base)
    if int(version) < 0:
        raise ExportError(f"version must be a non-negative integer, got {version}")
    version = int(version)
    saved_model_final = version_dir(export_base, version)
    tflite_final = tflite_dir(export_base, version)
    for final in (saved_model_final, tflite_final) if tflite else (saved_model_final,):
        if os.path.lexists(final) and not overwrite:
            raise ExportError(f"version {version} already exists at {final}; pass --overwrite")

    staged: List[fileio.StagedDirectory] = []
    try:
        saved_model = fileio.StagedDirectory(saved_model_final)
        staged.append(saved_model)
        write_saved_model(autoencoder, config, saved_model.tmp, version)
        if tflite:
            lite = fileio.StagedDirectory(tflite_final)
            staged.append(lite)
            write_tflite(saved_model.tmp, lite.tmp,
                         tflite_signature_names(autoencoder.num_stages))
            lite.commit(overwrite)
        saved_model.commit(overwrite)  # last: what TF Serving watches
    except BaseException as e:
        for s in reversed(staged):
            s.rollback()
        if isinstance(e, ExportError) or not isinstance(e, Exception):
            raise
        raise ExportError(f"export of version {version} to {export_base} failed "
                          f"(nothing was written): {type(e).__name__}: {e}") from e
    for s in staged:
        s.finish()
    if overwrite and not tflite and os.path.isdir(tflite_final):
        shutil.rmtree(tflite_final)  # it belonged to the version just replaced
    return os.path.abspath(saved_model_final)
