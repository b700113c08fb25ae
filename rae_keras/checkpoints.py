"""One checkpoint directory's files: what a checkpoint holds and how it is verified.

`checkpoints/ckpt-NNNNNN/` holds the weights (model.weights.h5), the optimizer's
variables (optimizer.npz), the training state (state.json) and, written last,
manifest.json: the sha256 of every other file and the training fingerprint of the
configuration the checkpoint was made with. `checkpoint_folder` decides which checkpoint
to trust; this module reads, writes and checks one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

import rae_keras
from rae_keras import fileio
from rae_keras.models import StagedAutoencoder

WEIGHTS, OPTIMIZER, STATE, MANIFEST = ("model.weights.h5", "optimizer.npz", "state.json",
                                       "manifest.json")


class Unusable(Exception):
    """Why a checkpoint cannot be restored (damaged, truncated, edited)."""


@dataclasses.dataclass
class TrainingState:
    phase: int = 0  # index of the phase in progress
    epoch: int = 0  # epochs completed in that phase
    history: List[Dict] = dataclasses.field(default_factory=list)
    finished: bool = False
    exported: Optional[str] = None  # version dir written after the run finished

    @classmethod
    def from_dict(cls, d) -> "TrainingState":
        """A state.json's content; ValueError/TypeError if it does not describe progress."""
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        state = cls(**d)

        def count(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 0

        if not (count(state.phase) and count(state.epoch) and isinstance(state.finished, bool)
                and isinstance(state.exported, (str, type(None)))
                and isinstance(state.history, list)
                and all(isinstance(h, dict) and isinstance(h.get("loss"), list)
                        for h in state.history)):
            raise ValueError("a field has the wrong type")
        return state

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


def write_manifest(directory: str, fingerprint: dict) -> None:
    files = {name: file_sha256(os.path.join(directory, name))
             for name in sorted(os.listdir(directory))}
    fileio.atomic_write_json(os.path.join(directory, MANIFEST), {
        "files": files, "training_fingerprint": fingerprint,
        "rae_keras": rae_keras.__version__})


def read_manifest(path: str) -> Optional[dict]:
    """The checkpoint's manifest; None for a checkpoint written before manifests."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.exists(manifest_path):
        return None
    try:
        manifest = fileio.read_json(manifest_path)
        files = manifest["files"]
        ok = (isinstance(files, dict) and {WEIGHTS, STATE} <= set(files)
              and isinstance(manifest["training_fingerprint"], dict))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise Unusable(f"{MANIFEST} is unreadable ({one_line(e)})") from None
    if not ok:
        raise Unusable(f"{MANIFEST} is incomplete")
    return manifest


def verify(path: str) -> Tuple[TrainingState, Optional[dict]]:
    """Checks everything but the weights' content: the manifest's hashes, state.json,
    optimizer.npz. Returns the state and the recorded fingerprint (None: no manifest)."""
    manifest = read_manifest(path)
    if manifest is not None:
        present = set(os.listdir(path)) - {MANIFEST}
        if present != set(manifest["files"]):
            raise Unusable(f"its files ({', '.join(sorted(present))}) are not those its "
                            f"manifest lists")
        for name, digest in manifest["files"].items():
            if file_sha256(os.path.join(path, name)) != digest:
                raise Unusable(f"{name} does not match the sha256 in its manifest")
    try:
        state = TrainingState.from_dict(fileio.read_json(os.path.join(path, STATE)))
    except (OSError, ValueError, TypeError) as e:
        raise Unusable(f"{STATE} is invalid ({one_line(e)})") from None
    if os.path.exists(os.path.join(path, OPTIMIZER)):
        try:
            load_optimizer(os.path.join(path, OPTIMIZER))
        except Exception as e:  # a zip, npy or I/O error: any of them means unreadable
            raise Unusable(f"{OPTIMIZER} does not load ({one_line(e)})") from None
    return state, manifest and manifest["training_fingerprint"]


def load_weights(autoencoder: StagedAutoencoder, path: str) -> None:
    try:
        autoencoder.full_model().load_weights(os.path.join(path, WEIGHTS))
    except Exception as e:  # h5py and Keras raise many kinds for a damaged file
        raise Unusable(f"{WEIGHTS} does not load ({one_line(e)})") from None
    if autoencoder.first_non_finite_weight():
        raise Unusable(f"{WEIGHTS} holds non-finite weights")


def remember_keras_skipsets() -> None:
    """Makes Keras' weight saving reuse its attribute skip sets.

    Keras (3.x `saving_lib.get_attr_skipset`) caches each type's skip set under
    "saving_attr_skipset_<type>" but looks it up under "saving_attr_skiplist_<type>", so
    every `save_weights` builds throwaway reference layers again: most of a small
    model's checkpoint time. The same sets, stored under the key it reads, change no
    file. Keras keeps them per thread: call this in the thread that saves.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:  # another Keras layout: nothing to fix
        return
    for obj_type in _SKIPSET_TYPES:
        key = f"saving_attr_skiplist_{obj_type}"
        if global_state.get_global_attribute(key) is None:
            try:
                skipset = saving_lib.get_attr_skipset(obj_type)
            except Exception:  # a type this Keras does not know: leave it to Keras
                continue
            global_state.set_global_attribute(key, skipset)


_SKIPSET_TYPES = ("Layer", "Functional", "Sequential", "Operation", "Optimizer", "Metric",
                  "Loss")


def load_optimizer(path: str) -> List[np.ndarray]:
    with np.load(path, allow_pickle=False) as saved:
        return [saved[key] for key in sorted(saved.files)]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise Unusable(f"{os.path.basename(path)} is unreadable ({e.strerror or e})") from None
    return digest.hexdigest()


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
