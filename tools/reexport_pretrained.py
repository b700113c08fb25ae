"""Re-exports pretrained exports made before exports shipped assets.extra/model.keras.

    python tools/reexport_pretrained.py exported/lfw64_*/1

For each export version directory: builds the ConvAutoencoder its rae_config.json
describes, copies every weight from the SavedModel's variables (by layer/weight name;
refuses a weight without a variable or a variable without a weight), checks that the
model computes what every float signature serves, then re-exports it in place as the
same version (SavedModel, model.keras, TFLite) with the old run_config and a
provenance note, and checks that the new export serves what the old one did.
A version that already holds model.keras is left alone.
"""

from __future__ import annotations

import io
import json
import os
import sys

import numpy as np
import skimage.data
import skimage.transform
import tensorflow as tf
from PIL import Image

import rae_keras
from rae_keras import serving
from rae_keras.config import RunConfig

TOLERANCE = 1e-6
# What export_model records of a run's training state (rae_keras.export.training_provenance).
TRAINING_STATE_KEYS = ("finished", "phase", "phase_name", "epoch", "epochs_done")


def sample_images(size: int, channels: int) -> np.ndarray:
    """12 images in [0, 1]: 8 LFW faces, 2 photos and 2 uniform-noise images."""
    faces = [np.repeat(f[..., None], 3, -1) for f in skimage.data.lfw_subset()[:8]]
    photos = [skimage.data.astronaut() / 255.0, skimage.data.coffee() / 255.0]
    images = [skimage.transform.resize(i, (size, size), anti_aliasing=True)
              for i in faces + photos]
    images = np.stack(images).astype(np.float32)[..., :channels]
    noise = np.random.default_rng(0).random((2, size, size, channels), dtype=np.float32)
    return np.concatenate([images, noise])


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, format="JPEG")
    return buffer.getvalue()


def serve_all(saved_model, images: np.ndarray) -> dict:
    """Every signature's output on `images` (decode: on their code)."""
    out = {}
    for name, fn in saved_model.signatures.items():
        if name == serving.DECODE:
            continue
        if name == serving.RECONSTRUCT_IMAGE_BYTES:
            out[name] = fn(image_bytes=tf.constant([jpeg_bytes()]))["reconstruction"].numpy()
        else:
            out[name] = next(iter(fn(images=tf.constant(images)).values())).numpy()
    out[serving.DECODE] = saved_model.signatures[serving.DECODE](
        code=tf.constant(out[serving.ENCODE]))["reconstruction"].numpy()
    return out


def serve_tflite(path: str, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner(serving.SERVING_DEFAULT)
    return runner(images=images)["reconstruction"]


def saved_model_variables(saved_model, version_dir: str) -> dict:
    """layer/weight name -> every variable the signatures capture (the loaded object's
    own `.variables` is empty: the export tracks no model); checks that they are all
    the checkpoint holds."""
    variables = {}
    for fn in saved_model.signatures.values():
        for v in fn.variables:
            variables[v.name.split(":")[0]] = v
    stored = [n for n, _ in tf.train.list_variables(os.path.join(version_dir, "variables",
                                                                 "variables"))
              if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    if len(stored) != len(variables):
        sys.exit(f"{version_dir}: the checkpoint holds {len(stored)} variables, the "
                 f"signatures use {len(variables)}")
    by_key = {"/".join(name.split("/")[-2:]): v for name, v in variables.items()}
    if len(by_key) != len(variables):
        sys.exit(f"{version_dir}: variable names are ambiguous: {sorted(variables)}")
    return by_key


def build_model(old: dict) -> rae_keras.ConvAutoencoder:
    return rae_keras.ConvAutoencoder(
        old["input_shape"], old["filters"], old["kernel_sizes"], old["decoder_kernel_sizes"],
        old["activation"], old["normalization"],
        old["run_config"]["model"].get("kernel_initializer", "lecun_normal"))


def copy_weights(model, variables: dict, version_dir: str) -> None:
    unused = dict(variables)
    for weight in model.weights:
        key = "/".join(weight.path.split("/")[-2:])
        source = unused.pop(key, None)
        if source is None or tuple(source.shape) != tuple(weight.shape):
            sys.exit(f"{version_dir}: no variable of shape {tuple(weight.shape)} for the "
                     f"model's weight {weight.path}")
        weight.assign(source.numpy())
    if unused:
        sys.exit(f"{version_dir}: variables the model has no weight for: {sorted(unused)}")


def model_outputs(model, images: np.ndarray, code: np.ndarray) -> dict:
    out = {serving.SERVING_DEFAULT: model.full_model()(images, training=False),
           serving.ENCODE: model.encoder()(images, training=False),
           serving.DECODE: model.decoder()(code, training=False)}
    for k in range(1, model.num_stages + 1):
        out[serving.depth_signature(k)] = model.depth_model(k)(images, training=False)
    return {name: np.asarray(value) for name, value in out.items()}


def max_diffs(a: dict, b: dict) -> dict:
    return {name: float(np.max(np.abs(a[name] - b[name]))) for name in a}


def check(what: str, diffs: dict, tolerance: float = TOLERANCE) -> None:
    worst = max(diffs, key=diffs.get)
    print(f"  {what}: max |diff| {diffs[worst]:.3g} ({worst}) over {len(diffs)} outputs")
    bad = {name: d for name, d in diffs.items() if not d <= tolerance}
    if bad:
        sys.exit(f"  {what}: differences above {tolerance}: {bad}")


def flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(old: dict, new: dict) -> list:
    old, new = flatten(old), flatten(new)
    return ([f"+ {k} = {json.dumps(new[k])}" for k in sorted(set(new) - set(old))]
            + [f"- {k} (was {json.dumps(old[k])})" for k in sorted(set(old) - set(new))]
            + [f"~ {k}: {json.dumps(old[k])} -> {json.dumps(new[k])}"
               for k in sorted(set(old) & set(new)) if old[k] != new[k]])


def reexport(version_dir: str) -> None:
    version_dir = os.path.normpath(version_dir)
    export_base, version = os.path.dirname(version_dir), int(os.path.basename(version_dir))
    print(f"{version_dir}:")
    if os.path.exists(os.path.join(version_dir, serving.ASSETS_EXTRA, serving.KERAS_FILENAME)):
        print("  already holds model.keras; left alone")
        return
    old = serving.read_rae_config(version_dir)
    images = sample_images(old["image_size"], old["channels"])
    old_model = tf.saved_model.load(version_dir)
    old_outputs = serve_all(old_model, images)
    old_tflite = serve_tflite(os.path.join(serving.tflite_dir(export_base, version),
                                           "float32.tflite"), images)

    model = build_model(old)
    copy_weights(model, saved_model_variables(old_model, version_dir), version_dir)
    del old_model
    check("model vs old SavedModel",
          max_diffs(model_outputs(model, images, old_outputs[serving.ENCODE]), old_outputs))

    config = RunConfig.from_dict(dict(old["run_config"], name=old["name"])).validate()
    state = {k: old[k] for k in TRAINING_STATE_KEYS if k in old}
    provenance = dict(state, reexported_from={
        "version": version,
        "weights": "the SavedModel's variables (that export had no model.keras)",
        "tool": "tools/reexport_pretrained.py",
        **{key: old.get(key) for key in ("rae_keras_version", "tensorflow_version",
                                          "keras_version")},
        "training_state": state or "not recorded by that export"})
    serving.export_model(model, export_base, config, version=version, overwrite=True,
                         tflite=True, provenance=provenance)

    new_outputs = serve_all(tf.saved_model.load(version_dir), images)
    check("new SavedModel vs old", max_diffs(new_outputs, old_outputs))
    loaded = rae_keras.load(export_base)
    check("rae_keras.load vs new SavedModel",
          max_diffs(model_outputs(loaded, images, new_outputs[serving.ENCODE]), new_outputs))
    new_tflite = serve_tflite(os.path.join(serving.tflite_dir(export_base, version),
                                           "float32.tflite"), images)
    check("new float32.tflite vs old", {"serving_default": float(np.max(np.abs(
        new_tflite - old_tflite)))})
    print("  rae_config.json changes:")
    for line in config_changes(old, serving.read_rae_config(version_dir)):
        print("    " + line)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        reexport(path)
