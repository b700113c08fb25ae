"""Atomic writes: a reader (a resumed run, TF Serving's version watcher) sees a file or
directory complete or not at all, even if the writer is killed half-way."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, Optional


def atomic_write_text(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


class StagedDirectory:
    """A directory built under a temporary sibling name (`.NAME.tmp-*`), then renamed
    to `final`. Several can be committed together and rolled back together.

    commit() renames it into place (moving an existing `final` aside when overwriting),
    finish() drops what was moved aside, rollback() undoes everything, including parent
    directories this staging created.
    """

    def __init__(self, final: str):
        self.final = os.path.abspath(final)
        self.parent, name = os.path.split(self.final)
        self.created = []  # missing ancestors, outermost first
        d = self.parent
        while d and not os.path.isdir(d):
            self.created.insert(0, d)
            d = os.path.dirname(d)
        os.makedirs(self.parent, exist_ok=True)
        self.tmp = tempfile.mkdtemp(dir=self.parent, prefix=f".{name}.tmp-")
        self.aside: Optional[str] = None  # the replaced directory, until finish()
        self.committed = False

    def commit(self, overwrite: bool = False) -> None:
        if os.path.lexists(self.final):
            if not overwrite:
                raise FileExistsError(self.final)
            self.aside = tempfile.mkdtemp(dir=self.parent,
                                          prefix=f".{os.path.basename(self.final)}.old-")
            os.rename(self.final, os.path.join(self.aside, "old"))
        # rename(2) refuses an existing non-empty directory: a concurrent writer of the
        # same path fails here instead of mixing files.
        os.rename(self.tmp, self.final)
        self.committed = True

    def finish(self) -> None:
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def rollback(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.committed:
            shutil.rmtree(self.final, ignore_errors=True)
            self.committed = False
        if self.aside is not None:
            os.rename(os.path.join(self.aside, "old"), self.final)
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None
        for d in reversed(self.created):  # parents this staging created, if still empty
            with contextlib.suppress(OSError):
                os.rmdir(d)


@contextlib.contextmanager
def atomic_directory(path: str, *, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary sibling of `path` to fill; renames it to `path` on success.

    On any exception the temporary directory is removed and `path` is untouched. With
    `overwrite`, an existing `path` is replaced only once the new content is complete.
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(path)
    staged = StagedDirectory(path)
    try:
        yield staged.tmp
        staged.commit(overwrite)
    except BaseException:
        staged.rollback()
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
