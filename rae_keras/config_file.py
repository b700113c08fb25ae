"""A run directory's config.json: written by the run's writer, read back validated, and
compared with the configuration the run's checkpoints recorded.

config.json is the one file of a run that people open and edit, and a run may only
continue under the configuration its checkpoints were made with (other settings would
misdescribe the weights, or silently train something else). So reading is strict: a
damaged file, a missing section or a value of the wrong JSON type is one `Invalid`
line, never a half-read configuration; and comparisons name the fields that differ.
`runs.RunDirectory` turns these answers into its errors.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

import rae_keras
from rae_keras import fileio
from rae_keras.checkpoints import Unusable, one_line, read_manifest
from rae_keras.config import RunConfig

FILE_NAME = "config.json"
# The sections every version wrote: a file without one of them is not a configuration.
SECTIONS = ("data", "model", "train")


class Invalid(ValueError):
    """config.json is damaged, or was edited into something that is not a configuration."""


def read(path: str) -> Optional[RunConfig]:
    """config.json at `path` as a validated RunConfig, None if absent; a damaged or
    hand-edited file is one `Invalid` line. Fields missing from a section take their
    defaults, because older versions did not write fields added since."""
    if not os.path.exists(path):
        return None
    try:
        saved = fileio.read_json(path)
        values = saved.get("config") if isinstance(saved, dict) else None
        if not isinstance(values, dict):
            raise ValueError("no 'config' object")
        missing = [s for s in SECTIONS if s not in values]
        if missing:
            raise ValueError(f"no {', '.join(missing)} section")
        check_types(values, RunConfig().to_dict())
        return RunConfig.from_dict(values).validate()
    except (OSError, ValueError, TypeError) as e:
        raise Invalid(f"{path} is not a valid rae_keras configuration ({one_line(e)})") from None


def holds_config(path: str) -> bool:
    """Whether `path` looks like a config.json rae_keras wrote (valid or not): enough to
    tell a run directory from someone else's folder, which must never be touched."""
    try:
        return isinstance(fileio.read_json(path).get("config"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def write(path: str, config: RunConfig) -> None:
    """Writes config.json atomically, with the library versions that made the run
    (provenance for whoever reads the run later)."""
    fileio.atomic_write_json(path, {
        "config": config.to_dict(),
        "versions": {"rae_keras": rae_keras.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__},
    })


def fingerprint(config: RunConfig) -> dict:
    """The training fingerprint as JSON stores it (lists, not tuples), so that one
    read back from a checkpoint's manifest compares equal."""
    return json.loads(json.dumps(config.training_fingerprint()))


def recorded_fingerprint(checkpoints: List[str]) -> Optional[dict]:
    """The fingerprint the newest of `checkpoints` with a manifest recorded, None if
    none has one. Read back through RunConfig so that fields added since take their
    defaults, as they do when config.json is read."""
    for path in reversed(checkpoints):
        try:
            manifest = read_manifest(path)
        except Unusable:
            continue
        if manifest is not None:
            return fingerprint(RunConfig.from_dict(manifest["training_fingerprint"]))
    return None


def continuation_problem(run: str, stored: Optional[RunConfig], recorded: Optional[dict],
                         config: RunConfig, *, has_checkpoints: bool) -> Optional[str]:
    """Why the run in directory `run` (its config.json `stored`, its checkpoints'
    `recorded` fingerprint) cannot be continued with `config`; None if it can, or if
    there is no run yet. Resuming under other settings would mix two trainings."""
    problem = edited(os.path.join(run, FILE_NAME), stored, recorded)
    if problem:
        return problem
    reference = recorded or (stored and fingerprint(stored))
    if reference is None:
        if has_checkpoints:  # made before checkpoints recorded their configuration
            return (f"{run} holds checkpoints but no config.json, and they do not "
                    "record which configuration made them")
        return None
    found = differences(reference, fingerprint(config))
    if found:
        return f"{run} holds a run with another configuration ({'; '.join(found[:4])})"
    return None


def edited(path: str, stored: Optional[RunConfig], recorded: Optional[dict]) -> Optional[str]:
    """Why config.json (`stored`) is not the configuration the checkpoints `recorded`
    (a hand edit would misdescribe the weights); None if it is, or if either is absent."""
    if stored is None or recorded is None:
        return None
    found = differences(recorded, fingerprint(stored))
    if not found:
        return None
    return (f"{path} differs from the configuration its checkpoints were made with "
            f"({'; '.join(found[:4])}); it was edited")


def differences(old: Dict, new: Dict, prefix: str = "") -> List[str]:
    """'field: old -> new' for every leaf that differs, dotted names, sorted: what an
    error message shows so that the user sees which setting made the run another one."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def check_types(values: dict, defaults: dict, prefix: str = "") -> None:
    """Refuses a value whose JSON type differs from its field's default (a hand edit
    such as "epochs": "10"), before RunConfig would carry it into training."""
    for key, default in defaults.items():
        if key not in values:
            continue
        value, name = values[key], prefix + key
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise TypeError(f"{name} is not an object")
            check_types(value, default, f"{name}.")
        elif not _fits(value, default):
            raise TypeError(f"{name} is {value!r}, not like {default!r}")


def _fits(value, default) -> bool:
    """Whether a JSON value can stand for a field whose default is `default`: an int
    passes for a float, never a bool for a number, and None only for optional paths."""
    if default is None:  # optional paths
        return value is None or isinstance(value, str)
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, list) and all(
            _fits(v, default[0] if default else 0.0) for v in value)
    return type(value) is type(default)
