"""A run's checkpoints/ folder: which checkpoint to write next, which to keep, which
to trust.

Checkpoints are numbered `ckpt-NNNNNN/`, each written whole or not at all (its
manifest last) and never changed afterwards; the newest `keep` survive. Restoring
takes the newest that verifies, so a run killed at any moment, or one whose last
checkpoint was damaged, resumes from the last good epoch. `checkpoints` reads, writes
and checks one checkpoint; `runs.RunDirectory` owns the folder and its lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import shutil
from typing import Callable, List, Optional, Tuple

import keras
import numpy as np

from rae_keras import fileio, run_guard
from rae_keras.checkpoints import (OPTIMIZER, STATE, WEIGHTS, TrainingState, Unusable,
                                   load_optimizer, load_weights, one_line, verify,
                                   write_manifest)
from rae_keras.models import StagedAutoencoder
from rae_keras.run_guard import RunDirError

NAME = "checkpoints"
_CKPT = re.compile(r"^ckpt-(\d+)$")


class CheckpointFolder:
    """`run`/checkpoints. Anyone may list and restore; only the run's writer, which
    sets `fingerprint` (its configuration's), commits checkpoints or sets damaged
    ones aside. Errors name the run directory `run`, the path the user typed."""

    def __init__(self, run: str, keep: int, log: Callable[[str], None]):
        self.run, self.keep, self.log = run, keep, log
        self.path = os.path.join(run, NAME)
        self.fingerprint: Optional[dict] = None  # set while this process writes the run
        self.current: Optional[str] = None  # checkpoint last restored or written

    def list(self) -> List[Tuple[int, str]]:
        """(number, path) of every checkpoint, oldest first; none verified."""
        if not os.path.isdir(self.path):
            return []
        found = []
        for entry in os.listdir(self.path):
            match = _CKPT.match(entry)
            if match:
                found.append((int(match.group(1)), os.path.join(self.path, entry)))
        return sorted(found)

    def latest(self) -> Optional[str]:
        found = self.list()
        return found[-1][1] if found else None

    # -------------------------------------------------------------- writing
    def save(self, autoencoder: StagedAutoencoder, state: TrainingState,
             optimizer_variables: Optional[List[keras.Variable]] = None) -> str:
        def write(tmp: str) -> None:
            autoencoder.full_model().save_weights(os.path.join(tmp, WEIGHTS))
            if optimizer_variables is not None:
                np.savez(os.path.join(tmp, OPTIMIZER),
                         **{f"{i:04d}": np.asarray(v.numpy())
                            for i, v in enumerate(optimizer_variables)})

        return self._commit(write, state)

    def copy_current(self, state: TrainingState) -> str:
        """A new checkpoint with the current one's weights and optimizer and `state`:
        how a changed state is recorded, since a written checkpoint is never changed
        (its manifest stays true)."""
        source = self.current or self.latest()
        if source is None:
            raise RunDirError(f"{self.run} has no checkpoint to mark as exported")

        def copy(tmp: str) -> None:
            for name in (WEIGHTS, OPTIMIZER):
                if os.path.exists(os.path.join(source, name)):
                    shutil.copyfile(os.path.join(source, name), os.path.join(tmp, name))

        return self._commit(copy, state)

    def _commit(self, write_files: Callable[[str], None], state: TrainingState) -> str:
        """Writes the next checkpoint atomically, its manifest last; prunes old ones.
        A failed write (a full disk) leaves no partial checkpoint and is a RunDirError."""
        if self.fingerprint is None:
            raise RunDirError(f"{self.run} is not open for writing; call prepare() first")
        existing = self.list()
        number = existing[-1][0] + 1 if existing else 1
        path = os.path.join(self.path, f"ckpt-{number:06d}")
        previous = self.current or (existing[-1][1] if existing else None)
        kept = (f"the previous checkpoint {os.path.basename(previous)} is kept" if previous
                else "no earlier checkpoint exists")
        try:
            with fileio.atomic_directory(path) as tmp:
                write_files(tmp)
                fileio.atomic_write_json(os.path.join(tmp, STATE), dataclasses.asdict(state))
                write_manifest(tmp, self.fingerprint)
        except OSError as e:
            raise write_error(self.run, f"checkpoint {os.path.basename(path)}", e,
                              kept) from None
        self.current = path
        for _, old in self.list()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    # ------------------------------------------------------------ restoring
    def restore(self, autoencoder: StagedAutoencoder) -> TrainingState:
        """Loads the newest checkpoint that verifies into `autoencoder`; its training
        state (a fresh one if there is no checkpoint)."""
        chosen = self._usable(autoencoder)
        self.current = chosen and chosen[0]
        return chosen[1] if chosen else TrainingState()

    def restore_optimizer(self, optimizer_variables: List[keras.Variable]) -> bool:
        """Loads the restored checkpoint's optimizer state into `optimizer_variables`;
        False if it holds none."""
        if self.current is None:
            chosen = self._usable()
            self.current = chosen and chosen[0]
        saved_path = self.current and os.path.join(self.current, OPTIMIZER)
        if not saved_path or not os.path.exists(saved_path):
            return False
        try:
            values = load_optimizer(saved_path)
        except Exception as e:  # a zip, npy or I/O error: any of them means unreadable
            raise RunDirError(f"{saved_path} does not load ({one_line(e)})") from None
        if len(values) != len(optimizer_variables):
            raise RunDirError(
                f"checkpoint {self.current} holds {len(values)} optimizer variables, the "
                f"trainer has {len(optimizer_variables)}; was the run made by another version?")
        for variable, value in zip(optimizer_variables, values):
            variable.assign(value)
        return True

    def _usable(self, autoencoder: Optional[StagedAutoencoder] = None
                ) -> Optional[Tuple[str, TrainingState]]:
        """The newest checkpoint that verifies (and whose weights load into
        `autoencoder`), with its state; None if there is none at all. Each damaged one
        is reported (see `_set_aside`)."""
        found = self.list()
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
            raise RunDirError(f"no usable checkpoint in {self.path} "
                              f"({'; '.join(reasons)}); delete it to start over")
        if found and self.list() != found:  # all pruned meanwhile: look again
            return self._usable(autoencoder)
        return None

    def _set_aside(self, path: str, reason: str) -> None:
        """Reports a damaged checkpoint. The writer also renames it ckpt-N.unusable (out
        of numbering and pruning) so that pruning never keeps it instead of a good one;
        a reader changes nothing."""
        outcome = "trying an older checkpoint"
        if self.fingerprint is not None:
            with contextlib.suppress(OSError):
                run_guard.remove(path + ".unusable")
                os.rename(path, path + ".unusable")
                outcome = f"set aside as {os.path.basename(path)}.unusable, {outcome}"
        self.log(f"warning: checkpoint {path} is unusable ({reason}); {outcome}")


def write_error(run: str, what: str, error: OSError, kept: str) -> RunDirError:
    """One line for a failed write in run directory `run`, saying what survived it."""
    if error.errno == errno.ENOSPC or "No space left" in str(error):
        return RunDirError(f"no space left on device while writing {what} in {run}; {kept}")
    return RunDirError(f"could not write {what} in {run} ({one_line(error)}); {kept}")
