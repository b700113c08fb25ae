"""Reading exports and runs back: `load` turns any of them into a trainable model.

An export version holds, beside the SavedModel that TF Serving runs,
`assets.extra/model.keras`: the same network as a Keras model, so a pretrained export
can be fine-tuned, evaluated layer by layer or re-exported. A SavedModel is a program:
load and serve only exports you trust.
"""

from __future__ import annotations

import os

import keras

from rae_keras import runs, serving
from rae_keras.models import StagedAutoencoder


class LoadError(ValueError):
    """A path that is not a .keras file, a run directory or an export."""


def resolve_version(path: str) -> str:
    """An export version directory: `path` itself, or the newest version of an export base."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    version = serving.latest_version(path)
    if version is None:
        raise LoadError(f"{path} is not an export: no SavedModel and no integer version "
                        "directory in it")
    return serving.version_dir(path, version)


def load(path: str) -> StagedAutoencoder:
    """A trainable model from a `.keras` file, a run directory (its newest verified
    checkpoint) or an export (a base: its newest version; or one version directory)."""
    path = os.fspath(path)
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise LoadError(f"{path}: no such .keras file")
        return keras.models.load_model(path)
    if not os.path.isdir(path):
        raise LoadError(f"{path}: no such file or directory")
    if os.path.exists(os.path.join(path, "config.json")):
        return runs.load_trained(path)[1]
    version = resolve_version(path)
    keras_file = os.path.join(version, serving.ASSETS_EXTRA, serving.KERAS_FILENAME)
    if not os.path.isfile(keras_file):
        raise LoadError(f"{version} holds no {serving.ASSETS_EXTRA}/{serving.KERAS_FILENAME} "
                        "(exported by an older rae_keras); it can be served but not loaded")
    return keras.models.load_model(keras_file)
