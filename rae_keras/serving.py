"""Export for serving: signatures, an atomic versioned SavedModel, TFLite files.

Layout written under an export base (`exported/NAME`), TF Serving's layout:

    EXPORT_BASE/VERSION/                     SavedModel (plain TensorFlow loads it)
    EXPORT_BASE/VERSION/assets.extra/rae_config.json
    EXPORT_BASE/tflite/VERSION/{float32,float16,dynamic_int8}.tflite

Signatures and what a request gets: `rae_keras.signatures`; the export base's versions
and their repair: `rae_keras.versions`.

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
from typing import Any, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

import rae_keras
from rae_keras import fileio
from rae_keras.config import ARRAYS, DataConfig, ModelConfig, RunConfig
from rae_keras.models import StagedAutoencoder
# The signatures and the version layout, re-exported: this module is where exports are made.
from rae_keras.signatures import (  # noqa: F401
    DECODE, DEFAULT_MAX_IMAGE_PIXELS, ENCODE, RECONSTRUCT_IMAGE_BYTES, SERVING_DEFAULT,
    build_export_archive, depth_signature, serving_functions, signature_names,
    tflite_signature_names, to_png_pixels)
from rae_keras.versions import (  # noqa: F401
    TFLITE_DIRNAME, TFLITE_QUANTIZATIONS, latest_version, list_versions, next_version,
    repair_export_base, tflite_dir, version_dir)
from rae_keras.versions import _settle_version

CONFIG_FILENAME = "rae_config.json"
# The Keras model beside the SavedModel, for `rae_keras.load` (TF Serving ignores
# assets.extra): an export can be fine-tuned, not only served.
KERAS_FILENAME = "model.keras"
ASSETS_EXTRA = "assets.extra"


class ExportError(RuntimeError):
    """An export that cannot be done or did not complete; nothing was left behind."""


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
    non_finite = autoencoder.first_non_finite_weight()
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
