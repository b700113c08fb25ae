"""Atomic writes: a reader (a resumed run, TF Serving's version watcher) sees a file or
directory complete or not at all, even if the writer is killed half-way.

Everything is written with the user's umask (as `open` and `mkdir` would), not the
owner-only modes of `tempfile`, so an export can be read by a TF Serving running as
another user. An OSError while writing comes out as a `WriteError`: one line naming
the path, with nothing left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
from typing import Any, Iterator, List, Optional, Tuple

# `.NAME.tmp-XXXXXXXX` (a StagedDirectory being built) and `.NAME.old-XXXXXXXX` (what
# its commit moved aside); XXXXXXXX as tempfile and `secrets.token_hex(4)` make them.
_STAGED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[a-z0-9_]{8}$")


class WriteError(OSError):
    """A write failed (disk full, permission denied, ...); what it had written is gone."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


class Busy(RuntimeError):
    """Another process holds the directory's lock (see `exclusive`)."""


def umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be
    creating files meanwhile)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o077)  # the strict value for the instant it is in force
    os.umask(mask)
    return mask


def _write_error(e: OSError, path: str) -> WriteError:
    return WriteError(e.errno or errno.EIO, e.strerror or str(e), path)


def atomic_write_text(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                   suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask())  # mkstemp makes it 0600
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        if isinstance(e, OSError):
            raise _write_error(e, path) from e
        raise


def atomic_write_json(path: str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def make_dirs(path: str) -> List[str]:
    """os.makedirs(path, exist_ok=True); returns the directories it created, outermost
    first, for `remove_empty_dirs` to undo."""
    created = []
    d = os.path.abspath(path)
    while d and not os.path.isdir(d):
        created.insert(0, d)
        d = os.path.dirname(d)
    os.makedirs(path, exist_ok=True)
    return created


def remove_empty_dirs(dirs: List[str]) -> None:
    """Removes `dirs` (as `make_dirs` returned them) innermost first, where still empty."""
    for d in reversed(dirs):
        with contextlib.suppress(OSError):
            os.rmdir(d)


def remove_trees(paths: List[str]) -> None:
    """Removes each directory (or file) in order; a missing one is fine."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def staged_leftovers(directory: str) -> List[Tuple[str, str, str]]:
    """(NAME, "tmp" or "old", path) of every `.NAME.tmp-*` / `.NAME.old-*` entry in
    `directory`: a StagedDirectory being built, or an old copy its commit moved aside.
    Only names this module makes match; other hidden entries are not ours to touch."""
    if not os.path.isdir(directory):
        return []
    found = []
    for entry in sorted(os.listdir(directory)):
        match = _STAGED.match(entry)
        if match:
            found.append((match["name"], match["kind"], os.path.join(directory, entry)))
    return found


def asides(path: str) -> List[str]:
    """The copies of `path` that `move_aside` made and nobody removed yet."""
    parent, name = os.path.split(os.path.abspath(path))
    return [p for n, kind, p in staged_leftovers(parent) if n == name and kind == "old"]


def move_aside(path: str) -> Optional[str]:
    """Renames `path` to a hidden sibling `.NAME.old-XXXXXXXX` and returns it (None if
    there is no `path`). One rename: a kill leaves it in place or aside, never lost."""
    if not os.path.lexists(path):
        return None
    parent, name = os.path.split(os.path.abspath(path))
    aside = os.path.join(parent, f".{name}.old-{secrets.token_hex(4)}")
    os.rename(path, aside)
    return aside


@contextlib.contextmanager
def exclusive(directory: str) -> Iterator[None]:
    """Holds an exclusive advisory lock (flock) on `directory` for the block, so one
    writer at a time repairs and writes it; the kernel drops it when a writer dies.
    Raises Busy at once if another process holds it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{directory} is being written by another process") from None
        yield
    finally:
        os.close(fd)


class StagedDirectory:
    """A directory built under a temporary sibling name (`.NAME.tmp-*`), then renamed
    to `final`.

    commit() renames it into place (moving an existing `final` aside when overwriting),
    finish() drops what was moved aside, rollback() undoes a commit not done or failed,
    including parent directories this staging created.
    """

    def __init__(self, final: str):
        self.final = os.path.abspath(final)
        self.parent, name = os.path.split(self.final)
        self.created = make_dirs(self.parent)
        self.tmp = tempfile.mkdtemp(dir=self.parent, prefix=f".{name}.tmp-")
        os.chmod(self.tmp, 0o777 & ~umask())  # mkdtemp makes it 0700
        self.aside: Optional[str] = None  # the replaced directory, until finish()

    def commit(self, overwrite: bool = False) -> None:
        if os.path.lexists(self.final):
            if not overwrite:
                raise FileExistsError(errno.EEXIST, "already exists", self.final)
            self.aside = move_aside(self.final)
        # rename(2) refuses an existing non-empty directory: a concurrent writer of the
        # same path fails here instead of mixing files.
        os.rename(self.tmp, self.final)

    def finish(self) -> None:
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def rollback(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.aside is not None:
            os.rename(self.aside, self.final)
            self.aside = None
        remove_empty_dirs(self.created)


@contextlib.contextmanager
def atomic_directory(path: str, *, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary sibling of `path` to fill; renames it to `path` on success.

    On any exception the temporary directory is removed and `path` is untouched (an
    OSError comes out as a WriteError naming `path`). With `overwrite`, an existing
    `path` is replaced only once the new content is complete.
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(errno.EEXIST, "already exists", path)
    staged = None
    try:
        staged = StagedDirectory(path)
        yield staged.tmp
        staged.commit(overwrite)
    except BaseException as e:
        if staged is not None:
            staged.rollback()
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise _write_error(e, path) from e
        raise
    staged.finish()


def remove_stale_temporaries(directory: str) -> None:
    """Deletes `.NAME.tmp-*` / `.NAME.old-*` left by a writer that was killed."""
    if not os.path.isdir(directory):
        return
    for entry in os.listdir(directory):
        if entry.startswith(".") and (".tmp-" in entry or ".old-" in entry or entry.endswith(".tmp")):
            full = os.path.join(directory, entry)
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(full)
