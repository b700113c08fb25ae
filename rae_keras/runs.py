"""The run directory (`--model_dir`): config.json, history.json, logs/, checkpoints/.

A checkpoint is a directory `checkpoints/ckpt-NNNNNN/` written atomically after every
epoch: the weights of every layer, the optimizer's variables and the training state
(phase, epochs done, history). A run killed at any moment resumes from the newest
complete checkpoint: same phase, same epoch, same optimizer state.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

import rae_keras
from rae_keras import fileio
from rae_keras.architecture import Autoencoder
from rae_keras.config import RunConfig

_CKPT = re.compile(r"^ckpt-(\d+)$")
KEEP_CHECKPOINTS = 2


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (e.g. another configuration)."""


@dataclasses.dataclass
class TrainingState:
    phase: int = 0  # index of the phase in progress
    epoch: int = 0  # epochs completed in that phase
    history: List[Dict] = dataclasses.field(default_factory=list)
    finished: bool = False
    exported: Optional[str] = None  # version dir written after the run finished

    @property
    def epochs_done(self) -> int:
        return sum(len(h["loss"]) for h in self.history)

    def record_epoch(self, phase_index: int, phase_name: str, logs: Dict[str, float],
                     seconds: float) -> None:
        while len(self.history) <= phase_index:
            self.history.append({"phase": phase_name, "loss": [], "val_loss": [], "seconds": []})
        entry = self.history[phase_index]
        entry["phase"] = phase_name
        entry["loss"].append(float(logs["loss"]))
        if "val_loss" in logs:
            entry["val_loss"].append(float(logs["val_loss"]))
        entry["seconds"].append(round(float(seconds), 3))
        self.phase, self.epoch = phase_index, len(entry["loss"])


class RunDirectory:
    def __init__(self, path: str, keep_checkpoints: int = KEEP_CHECKPOINTS):
        self.path = os.path.abspath(path)
        self.keep_checkpoints = keep_checkpoints
        self.config_path = os.path.join(self.path, "config.json")
        self.history_path = os.path.join(self.path, "history.json")
        self.logs_dir = os.path.join(self.path, "logs")
        self.checkpoints_dir = os.path.join(self.path, "checkpoints")

    # ------------------------------------------------------------- config
    def prepare(self, config: RunConfig, *, overwrite: bool = False) -> None:
        """Claims the directory for `config`; refuses one that holds another run."""
        if os.path.exists(self.config_path):
            stored = RunConfig.from_dict(fileio.read_json(self.config_path)["config"])
            differences = _differences(stored.training_fingerprint(), config.training_fingerprint())
            if differences and not overwrite:
                raise RunDirError(
                    f"{self.path} holds a run with another configuration "
                    f"({'; '.join(differences[:4])}); use another --model_dir or pass --overwrite "
                    "to delete it")
            if differences:
                shutil.rmtree(self.path)
        elif overwrite and os.path.isdir(self.path):
            shutil.rmtree(self.path)
        os.makedirs(self.checkpoints_dir, exist_ok=True)
        fileio.remove_stale_temporaries(self.checkpoints_dir)
        fileio.atomic_write_json(self.config_path, {
            "config": config.to_dict(),
            "versions": {"rae_keras": rae_keras.__version__, "tensorflow": tf.__version__,
                         "keras": keras.__version__, "numpy": np.__version__},
        })

    def load_config(self) -> RunConfig:
        if not os.path.exists(self.config_path):
            raise RunDirError(f"{self.path} is not a run directory (no config.json)")
        return RunConfig.from_dict(fileio.read_json(self.config_path)["config"])

    # ---------------------------------------------------------- checkpoints
    def checkpoints(self) -> List[Tuple[int, str]]:
        if not os.path.isdir(self.checkpoints_dir):
            return []
        found = []
        for entry in os.listdir(self.checkpoints_dir):
            match = _CKPT.match(entry)
            if match:
                found.append((int(match.group(1)), os.path.join(self.checkpoints_dir, entry)))
        return sorted(found)

    def latest_checkpoint(self) -> Optional[str]:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save_checkpoint(self, autoencoder: Autoencoder, state: TrainingState,
                        optimizer_variables: Optional[List[keras.Variable]] = None) -> str:
        existing = self.checkpoints()
        number = existing[-1][0] + 1 if existing else 1
        path = os.path.join(self.checkpoints_dir, f"ckpt-{number:06d}")
        with fileio.atomic_directory(path) as tmp:
            autoencoder.full_model().save_weights(os.path.join(tmp, "model.weights.h5"))
            if optimizer_variables is not None:
                np.savez(os.path.join(tmp, "optimizer.npz"),
                         **{f"{i:04d}": np.asarray(v.numpy())
                            for i, v in enumerate(optimizer_variables)})
            fileio.atomic_write_json(os.path.join(tmp, "state.json"), dataclasses.asdict(state))
        for _, old in self.checkpoints()[:-self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        fileio.atomic_write_json(self.history_path, state.history)
        return path

    def restore(self, autoencoder: Autoencoder) -> TrainingState:
        """Loads the newest checkpoint's weights into `autoencoder`; its training state."""
        path = self.latest_checkpoint()
        if path is None:
            return TrainingState()
        autoencoder.full_model().load_weights(os.path.join(path, "model.weights.h5"))
        return TrainingState(**fileio.read_json(os.path.join(path, "state.json")))

    def restore_optimizer(self, optimizer_variables: List[keras.Variable]) -> bool:
        """Loads the newest checkpoint's optimizer state into `optimizer_variables`
        (a trainer's `optimizer_variables()`, already built)."""
        path = self.latest_checkpoint()
        saved_path = path and os.path.join(path, "optimizer.npz")
        if not saved_path or not os.path.exists(saved_path):
            return False
        with np.load(saved_path) as saved:
            values = [saved[key] for key in sorted(saved.files)]
        if len(values) != len(optimizer_variables):
            raise RunDirError(
                f"checkpoint {path} holds {len(values)} optimizer variables, the trainer "
                f"has {len(optimizer_variables)}; was the run made by another version?")
        for variable, value in zip(optimizer_variables, values):
            variable.assign(value)
        return True

    def mark_exported(self, state: TrainingState, version_dir: str) -> None:
        state.exported = version_dir
        path = self.latest_checkpoint()
        fileio.atomic_write_json(os.path.join(path, "state.json"), dataclasses.asdict(state))


def load_trained_autoencoder(model_dir: str) -> Tuple[RunConfig, Autoencoder]:
    """The run's configuration and its autoencoder with the newest checkpoint's weights."""
    run = RunDirectory(model_dir)
    config = run.load_config()
    autoencoder = Autoencoder(config.model, image_shape_of(config))
    if run.latest_checkpoint() is None:
        raise RunDirError(f"{run.path} has no checkpoint yet; train it first")
    run.restore(autoencoder)
    return config, autoencoder


def image_shape_of(config: RunConfig) -> Tuple[int, int, int]:
    return (config.data.image_size, config.data.image_size, config.data.channels)


def _differences(old: Dict, new: Dict, prefix: str = "") -> List[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
