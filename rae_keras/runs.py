"""The run directory (`--model_dir`): config.json, history.json, logs/, checkpoints/.

A checkpoint is a directory `checkpoints/ckpt-NNNNNN/` written atomically after every
epoch: the weights of every layer, the optimizer's variables, the training state
(phase, epochs done, history) and, written last, manifest.json (the sha256 of every
file and the training fingerprint of the configuration it was made with). A run killed
at any moment resumes from the newest checkpoint that verifies: same phase, same epoch,
same optimizer state.

Safety rules, because `--model_dir` is whatever the user typed: rae_keras deletes only
what it writes, and one process at a time writes a run directory (`run_guard`); a run
resumes only under the configuration its checkpoints recorded (`config_file`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import sys
import weakref
from typing import Callable, List, Optional, Tuple

import keras
import numpy as np

from rae_keras import config_file, fileio, run_guard
from rae_keras.checkpoints import (  # noqa: F401  (TrainingState and the names: runs' API)
    MANIFEST, OPTIMIZER, STATE, WEIGHTS, TrainingState, Unusable, load_optimizer, load_weights,
    one_line, read_manifest, verify, write_manifest)
from rae_keras.models import ConvAutoencoder, StagedAutoencoder
from rae_keras.config import RunConfig
from rae_keras.run_guard import LOCK_NAME, RunDirError  # noqa: F401  (runs' API)

_CKPT = re.compile(r"^ckpt-(\d+)$")
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
        self.checkpoints_dir = os.path.join(self.path, "checkpoints")
        self.lock_path = os.path.join(self.path, LOCK_NAME)
        self._unlock: Optional[weakref.finalize] = None  # set while this object is the writer
        self._fingerprint: Optional[dict] = None  # the writer's configuration
        self._current: Optional[str] = None  # checkpoint last restored or written

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases the lock; the directory can still be read through this object."""
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
        self._fingerprint = config_file.fingerprint(config)

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
        if not os.path.isdir(self.checkpoints_dir):
            return []
        found = []
        for entry in os.listdir(self.checkpoints_dir):
            match = _CKPT.match(entry)
            if match:
                found.append((int(match.group(1)), os.path.join(self.checkpoints_dir, entry)))
        return sorted(found)

    def latest_checkpoint(self) -> Optional[str]:
        """The newest checkpoint by number, not verified (see `restore`)."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save_checkpoint(self, autoencoder: StagedAutoencoder, state: TrainingState,
                        optimizer_variables: Optional[List[keras.Variable]] = None) -> str:
        def write(tmp: str) -> None:
            autoencoder.full_model().save_weights(os.path.join(tmp, WEIGHTS))
            if optimizer_variables is not None:
                np.savez(os.path.join(tmp, OPTIMIZER),
                         **{f"{i:04d}": np.asarray(v.numpy())
                            for i, v in enumerate(optimizer_variables)})

        return self._commit_checkpoint(write, state)

    def mark_exported(self, state: TrainingState, version_dir: str) -> None:
        """Records the export in a new checkpoint holding the current one's files: a
        written checkpoint is never changed, so its manifest stays true."""
        state.exported = version_dir
        source = self._current or self.latest_checkpoint()
        if source is None:
            raise RunDirError(f"{self.path} has no checkpoint to mark as exported")

        def copy(tmp: str) -> None:
            for name in (WEIGHTS, OPTIMIZER):
                if os.path.exists(os.path.join(source, name)):
                    shutil.copyfile(os.path.join(source, name), os.path.join(tmp, name))

        self._commit_checkpoint(copy, state)

    def _commit_checkpoint(self, write_files: Callable[[str], None],
                           state: TrainingState) -> str:
        """Writes the next checkpoint atomically, its manifest last; prunes old ones.
        A failed write (a full disk) leaves no partial checkpoint and is a RunDirError."""
        if self._unlock is None or self._fingerprint is None:
            raise RunDirError(f"{self.path} is not open for writing; call prepare() first")
        existing = self.checkpoints()
        number = existing[-1][0] + 1 if existing else 1
        path = os.path.join(self.checkpoints_dir, f"ckpt-{number:06d}")
        previous = self._current or (existing[-1][1] if existing else None)
        kept = (f"the previous checkpoint {os.path.basename(previous)} is kept" if previous
                else "no earlier checkpoint exists")
        try:
            with fileio.atomic_directory(path) as tmp:
                write_files(tmp)
                fileio.atomic_write_json(os.path.join(tmp, STATE), dataclasses.asdict(state))
                write_manifest(tmp, self._fingerprint)
        except OSError as e:
            raise self._write_error(f"checkpoint {os.path.basename(path)}", e, kept) from None
        self._current = path
        for _, old in self.checkpoints()[:-self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        try:
            fileio.atomic_write_json(self.history_path, state.history)
        except OSError as e:
            raise self._write_error("history.json", e,
                                    f"checkpoint {os.path.basename(path)} is complete") from None
        return path

    def _write_error(self, what: str, error: OSError, kept: str) -> RunDirError:
        if error.errno == errno.ENOSPC or "No space left" in str(error):
            return RunDirError(f"no space left on device while writing {what} in {self.path}; "
                               f"{kept}")
        return RunDirError(f"could not write {what} in {self.path} ({one_line(error)}); {kept}")

    def restore(self, autoencoder: StagedAutoencoder) -> TrainingState:
        """Loads the newest checkpoint that verifies into `autoencoder`; its training
        state (a fresh one if there is no checkpoint). `restore_optimizer` then reads
        the same checkpoint."""
        chosen = self._usable_checkpoint(autoencoder)
        self._current = chosen and chosen[0]
        return chosen[1] if chosen else TrainingState()

    def restore_optimizer(self, optimizer_variables: List[keras.Variable]) -> bool:
        """Loads the restored checkpoint's optimizer state into `optimizer_variables`
        (a trainer's `optimizer_variables()`, already built)."""
        if self._current is None:
            chosen = self._usable_checkpoint()
            self._current = chosen and chosen[0]
        saved_path = self._current and os.path.join(self._current, OPTIMIZER)
        if not saved_path or not os.path.exists(saved_path):
            return False
        try:
            values = load_optimizer(saved_path)
        except Exception as e:  # a zip, npy or I/O error: any of them means unreadable
            raise RunDirError(f"{saved_path} does not load ({one_line(e)})") from None
        if len(values) != len(optimizer_variables):
            raise RunDirError(
                f"checkpoint {self._current} holds {len(values)} optimizer variables, the "
                f"trainer has {len(optimizer_variables)}; was the run made by another version?")
        for variable, value in zip(optimizer_variables, values):
            variable.assign(value)
        return True

    def _usable_checkpoint(self, autoencoder: Optional[StagedAutoencoder] = None
                           ) -> Optional[Tuple[str, TrainingState]]:
        """The newest checkpoint that verifies (and whose weights load into
        `autoencoder`), with its state; None if there is none at all. Each damaged one
        is reported (see `_set_aside`)."""
        found = self.checkpoints()
        reasons = []
        for _, path in reversed(found):
            try:
                state, fingerprint = verify(path)
                if autoencoder is not None:
                    load_weights(autoencoder, path)
            except Unusable as e:
                if os.path.isdir(path):  # else the writer pruned it while we read it
                    reasons.append(f"{os.path.basename(path)}: {e}")
                    self._set_aside(path, str(e))
                continue
            if fingerprint is None:
                self.log(f"warning: checkpoint {path} has no manifest (written before "
                         "rae_keras verified checkpoints); using it unverified")
            return path, state
        if reasons:
            raise RunDirError(f"no usable checkpoint in {self.checkpoints_dir} "
                              f"({'; '.join(reasons)}); delete it to start over")
        if found and self.checkpoints() != found:  # all pruned meanwhile: look again
            return self._usable_checkpoint(autoencoder)
        return None

    def _set_aside(self, path: str, reason: str) -> None:
        """Reports a damaged checkpoint. The writer also renames it ckpt-N.unusable (out
        of numbering and pruning) so that pruning never keeps it instead of a good one;
        a reader changes nothing."""
        outcome = "trying an older checkpoint"
        if self._unlock is not None:
            with contextlib.suppress(OSError):
                run_guard.remove(path + ".unusable")
                os.rename(path, path + ".unusable")
                outcome = f"set aside as {os.path.basename(path)}.unusable, {outcome}"
        self.log(f"warning: checkpoint {path} is unusable ({reason}); {outcome}")

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
