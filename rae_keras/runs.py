"""The run directory (`--model_dir`): config.json, history.json, logs/, checkpoints/.

A checkpoint (`checkpoints/ckpt-NNNNNN/`, see `checkpoints`) is written atomically after
every epoch: the weights of every layer, the optimizer's variables, the training state
(phase, epochs done, history) and, written last, manifest.json (the sha256 of every
file and the training fingerprint of the configuration it was made with). A run killed
at any moment resumes from the newest checkpoint that verifies (`checkpoint_folder`):
same phase, same epoch, same optimizer state.

Safety rules, because `--model_dir` is whatever the user typed: rae_keras deletes only
what it writes, and one process at a time writes a run directory (`run_guard`); a run
resumes only under the configuration its checkpoints recorded (`config_file`).
"""

from __future__ import annotations

import json
import os
import sys
import weakref
from typing import Callable, List, Optional, Tuple

import keras

from rae_keras import checkpoint_folder, config_file, fileio, run_guard
# TrainingState and MANIFEST: runs' API.
from rae_keras.checkpoints import MANIFEST, STATE, TrainingState, one_line  # noqa: F401
from rae_keras.models import ConvAutoencoder, StagedAutoencoder
from rae_keras.config import RunConfig
from rae_keras.run_guard import LOCK_NAME, RunDirError  # noqa: F401  (runs' API)

KEEP_CHECKPOINTS = 2


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RunDirectory:
    """One run directory. Reading needs nothing; writing needs `prepare` (the lock).

    `log` receives one-line warnings ("warning: ..."), e.g. a damaged checkpoint
    skipped on restore; by default they go to stderr. Use as a context manager, or call
    `close()`, to release the lock before the object is garbage-collected.
    """

    def __init__(self, path: str, keep_checkpoints: int = KEEP_CHECKPOINTS, *,
                 log: Optional[Callable[[str], None]] = None):
        self.path = os.path.abspath(path)
        self.keep_checkpoints = keep_checkpoints
        self.log = log or _warn
        self.config_path = os.path.join(self.path, config_file.FILE_NAME)
        self.history_path = os.path.join(self.path, "history.json")
        self.logs_dir = os.path.join(self.path, "logs")
        self.lock_path = os.path.join(self.path, LOCK_NAME)
        self._checkpoints = checkpoint_folder.CheckpointFolder(self.path, keep_checkpoints,
                                                               self.log)
        self.checkpoints_dir = self._checkpoints.path
        self._unlock: Optional[weakref.finalize] = None  # set while this object is the writer

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases the lock; the directory can still be read through this object."""
        self._checkpoints.fingerprint = None
        if self._unlock is not None:
            self._unlock()
            self._unlock = None

    # ------------------------------------------------------------- config
    def prepare(self, config: RunConfig, *, overwrite: bool = False) -> None:
        """Makes this object the directory's only writer, for `config`.

        A run made with the same training settings is resumed. Another run, or a
        damaged or edited config.json, is refused; with `overwrite` rae_keras's files
        are deleted instead (nothing else in the directory is). On failure the lock is
        released again.
        """
        run_guard.refuse_foreign(self.path, self._holds_a_run())
        if self._unlock is None:
            self._unlock = run_guard.lock(self, self.path)
        try:
            problem = self._incompatibility(config)
            if problem and not overwrite:
                raise RunDirError(f"{problem}; use another --model_dir, or pass --overwrite "
                                  "to delete that run (only rae_keras's files in it)")
            self._write_config(config, delete_run=bool(problem))
        except BaseException:
            self.close()
            raise
        self._checkpoints.fingerprint = config_file.fingerprint(config)

    def load_config(self) -> RunConfig:
        """The run's configuration, refused if config.json differs from what its
        checkpoints were made with (a hand edit would misdescribe the weights)."""
        config = self._read_config()
        if config is None:
            raise RunDirError(f"{self.path} is not a run directory (no config.json)")
        problem = config_file.edited(self.config_path, config, self._recorded_fingerprint())
        if problem:
            raise RunDirError(problem)
        return config

    def _holds_a_run(self) -> bool:
        if any(os.path.exists(os.path.join(path, STATE)) for _, path in self.checkpoints()):
            return True
        return config_file.holds_config(self.config_path)

    def _incompatibility(self, config: RunConfig) -> Optional[str]:
        """Why the directory's run cannot be continued with `config`; None if it can."""
        try:
            stored = self._read_config()
        except RunDirError as e:
            return str(e)
        return config_file.continuation_problem(self.path, stored, self._recorded_fingerprint(),
                                                config, has_checkpoints=bool(self.checkpoints()))

    def _read_config(self) -> Optional[RunConfig]:
        """config.json as a validated RunConfig (see `config_file.read`), None if absent."""
        try:
            return config_file.read(self.config_path)
        except config_file.Invalid as e:
            raise RunDirError(str(e)) from None

    def _write_config(self, config: RunConfig, *, delete_run: bool) -> None:
        try:
            run_guard.clear(self.path, delete_run=delete_run)
            os.makedirs(self.checkpoints_dir, exist_ok=True)
            fileio.remove_stale_temporaries(self.checkpoints_dir)
            config_file.write(self.config_path, config)
        except OSError as e:
            raise RunDirError(f"cannot prepare {self.path}: {one_line(e)}") from None

    # ---------------------------------------------------------- checkpoints
    def checkpoints(self) -> List[Tuple[int, str]]:
        return self._checkpoints.list()

    def latest_checkpoint(self) -> Optional[str]:
        """The newest checkpoint by number, not verified (see `restore`)."""
        return self._checkpoints.latest()

    def save_checkpoint(self, autoencoder: StagedAutoencoder, state: TrainingState,
                        optimizer_variables: Optional[List[keras.Variable]] = None) -> str:
        path = self._checkpoints.save(autoencoder, state, optimizer_variables)
        return self._write_history(path, state)

    def mark_exported(self, state: TrainingState, version_dir: str) -> None:
        """Records the export in a new checkpoint holding the current one's files."""
        state.exported = version_dir
        self._write_history(self._checkpoints.copy_current(state), state)

    def _write_history(self, checkpoint: str, state: TrainingState) -> str:
        """history.json after each checkpoint: the losses, readable without TensorFlow."""
        try:
            fileio.atomic_write_json(self.history_path, state.history)
        except OSError as e:
            raise checkpoint_folder.write_error(
                self.path, "history.json", e,
                f"checkpoint {os.path.basename(checkpoint)} is complete") from None
        return checkpoint

    def restore(self, autoencoder: StagedAutoencoder) -> TrainingState:
        """Loads the newest checkpoint that verifies into `autoencoder`; its training
        state (a fresh one if there is no checkpoint). `restore_optimizer` then reads
        the same checkpoint."""
        return self._checkpoints.restore(autoencoder)

    def restore_optimizer(self, optimizer_variables: List[keras.Variable]) -> bool:
        """Loads the restored checkpoint's optimizer state into `optimizer_variables`
        (a trainer's `optimizer_variables()`, already built)."""
        return self._checkpoints.restore_optimizer(optimizer_variables)

    def _recorded_fingerprint(self) -> Optional[dict]:
        return config_file.recorded_fingerprint([path for _, path in self.checkpoints()])


def load_trained(model_dir: str, *, log: Optional[Callable[[str], None]] = None
                 ) -> Tuple[RunConfig, StagedAutoencoder, TrainingState]:
    """The run's configuration, its model with the newest verified checkpoint's weights,
    and that checkpoint's training state. A reader: it takes no lock and changes
    nothing in the directory."""
    run = RunDirectory(model_dir, log=log)
    config = run.load_config()
    if run.latest_checkpoint() is None:
        raise RunDirError(f"{run.path} has no checkpoint yet; train it first")
    model = _untrained_model(config)
    state = run.restore(model)
    return config, model, state


def _untrained_model(config: RunConfig) -> StagedAutoencoder:
    """The untrained model a run trains: the Keras config `fit` recorded, or the
    command line's ConvAutoencoder."""
    if config.keras_model:
        try:
            return keras.saving.deserialize_keras_object(json.loads(config.keras_model))
        except Exception as e:  # a custom layer that is not registered, or a damaged file
            raise RunDirError(f"cannot rebuild the model of this run ({one_line(e)}); import "
                              "the module that registers its custom layers first") from None
    return ConvAutoencoder.from_model_config(config.model, image_shape_of(config))


def image_shape_of(config: RunConfig) -> Tuple[int, int, int]:
    return (config.data.image_size, config.data.image_size, config.data.channels)
