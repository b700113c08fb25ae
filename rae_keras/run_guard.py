"""What guards a run directory before a process writes to it, because `--model_dir` is
whatever the user typed:

- rae_keras deletes only what it writes. A directory that holds other files and no run
  is refused, with or without --overwrite; --overwrite deletes config.json,
  history.json, logs/ and checkpoints/ and keeps everything else.
- One writer per run directory: an flock on run.lock, which the kernel releases when
  the process ends, however it ends (so there is never a stale lock). Readers take no
  lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
import weakref

LOCK_NAME = "run.lock"
# What --overwrite deletes: everything rae_keras writes at the top of a run directory
# except the lock (held by the writer doing the deleting) and workers/ (each worker's
# scratch run directory, which that worker owns and overwrites itself).
OVERWRITTEN = ("checkpoints", "logs", "history.json", "config.json")
_OWN = OVERWRITTEN + (LOCK_NAME, "workers")
_OWN_TEMPORARY = re.compile(r"^\.(config|history)\.json\..*\.tmp$")  # fileio's temporaries


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (e.g. another configuration)."""


def refuse_foreign(path: str, holds_a_run: bool) -> None:
    """Refuses a path that is a file, or a directory holding something other than
    rae_keras's files and no run: nothing there may be deleted or mixed with a run."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise RunDirError(f"--model_dir {path} is a file, not a directory")
    if not os.path.isdir(path) or holds_a_run:
        return
    foreign = sorted(e for e in os.listdir(path)
                     if e not in _OWN and not _OWN_TEMPORARY.match(e))
    if foreign:
        listing = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(
            f"{path} is not a run directory and not empty (it holds {listing}); "
            "rae_keras neither uses nor deletes it, even with --overwrite: give a new "
            "or empty --model_dir")


def lock(owner: object, path: str) -> weakref.finalize:
    """Takes the flock on `path`/run.lock for `owner`, recording who holds it (for the
    next writer's error message); calling the result, or collecting `owner`, releases it.
    Another writer holding it is a RunDirError at once: runs never wait."""
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        os.makedirs(path, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunDirError(f"cannot create {lock_path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise RunDirError(
                f"{path} is in use by another writer ({holder}, holding {LOCK_NAME}); "
                "wait for it to finish or use another --model_dir") from None
        raise RunDirError(f"cannot lock {lock_path}: {e.strerror or e}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return weakref.finalize(owner, os.close, fd)


def clear(path: str, *, delete_run: bool) -> None:
    """Removes the temporaries a killed writer left at the top of `path` and, with
    `delete_run`, the run itself (OVERWRITTEN); nothing else. The caller holds the lock."""
    if delete_run:
        for name in OVERWRITTEN:
            remove(os.path.join(path, name))
    for entry in os.listdir(path):
        if _OWN_TEMPORARY.match(entry):
            remove(os.path.join(path, entry))


def remove(path: str) -> None:
    """Deletes a file, a link (never what it points to) or a directory tree, if present."""
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
