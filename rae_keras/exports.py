"""Reading exports and runs back: `load` turns any of them into a trainable model.

An export version holds, beside the SavedModel that TF Serving runs,
`assets.extra/model.keras`: the same network as a Keras model, so a pretrained export
can be fine-tuned, evaluated layer by layer or re-exported. A SavedModel is a program:
load and serve only exports you trust.
"""

from __future__ import annotations

import dataclasses
import os
from typing import List, Sequence, Tuple

import keras

from rae_keras import config as config_lib
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


# --------------------------------------------------------------------------- export lists
@dataclasses.dataclass(frozen=True)
class ListedExport:
    """One export of a model list (`--models`), its rae_config.json read."""
    group: str  # the report row it belongs to
    path: str  # as given
    version_dir: str  # absolute
    rae_config: dict

    @property
    def name(self) -> str:
        return self.rae_config.get("name") or os.path.basename(self.path.rstrip("/"))

    @property
    def num_stages(self) -> int:
        return int(self.rae_config["num_stages"])

    @property
    def shape(self) -> Tuple[int, int]:
        """(image_size, channels)."""
        return int(self.rae_config["image_size"]), int(self.rae_config["channels"])


def resolve_export(path: str) -> str:
    """`resolve_version` as an absolute path, with a message for a path that is missing."""
    if not os.path.exists(path):
        raise LoadError(f"model {path} does not exist; pass an export base "
                        f"(exported/NAME) or a version dir (exported/NAME/1)")
    return os.path.abspath(resolve_version(path))


def default_group(path: str, version_dir: str) -> str:
    """The export's directory name without a trailing seed suffix (`_seed3`, `-s3`), so
    seeds of one setting share a row; a version dir given explicitly keeps its version
    (`NAME/v2`)."""
    given_version = os.path.abspath(path.rstrip("/")) == version_dir
    base = os.path.dirname(version_dir) if given_version else path.rstrip("/")
    name = config_lib.seed_group(os.path.basename(os.path.abspath(base)))
    return f"{name}/v{os.path.basename(version_dir)}" if given_version else name


def parse_models(entries: Sequence[str]) -> List[Tuple[str, str]]:
    """Model list entries -> [(group or "", path)]; `LABEL=P1+P2` names a group."""
    parsed = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        label, sep, paths = entry.partition("=")
        if not sep:
            label, paths = "", entry
        elif not label.strip() or not paths.strip():
            raise LoadError(f"bad --models entry {entry!r}: write LABEL=PATH[+PATH...]")
        for path in paths.split("+"):
            if not path.strip():
                raise LoadError(f"bad --models entry {entry!r}: empty path")
            parsed.append((label.strip(), path.strip()))
    if not parsed:
        raise LoadError("--models is required: export bases (exported/NAME) or version "
                        "dirs, comma-separated; LABEL=PATH+PATH groups seeds")
    return parsed


def list_exports(entries: Sequence[str]) -> List[ListedExport]:
    """Resolve and read every export of a model list, in the order given; each counts once."""
    exports, seen = [], {}
    for label, path in parse_models(entries):
        version_dir = resolve_export(path)
        if version_dir in seen:
            raise LoadError(f"{path} is listed twice (as {seen[version_dir]!r} and "
                            f"{path!r}); each export counts once")
        seen[version_dir] = path
        try:
            rae_config = serving.read_rae_config(version_dir)
        except (OSError, ValueError) as e:
            raise LoadError(
                f"{version_dir} has no readable {serving.ASSETS_EXTRA}/{serving.CONFIG_FILENAME} "
                f"({type(e).__name__}); was it exported by rae_keras?") from e
        exports.append(ListedExport(label or default_group(path, version_dir), path,
                                    version_dir, rae_config))
    return exports
