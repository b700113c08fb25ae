"""The preprocessed-image cache: uint8 TFRecord shards on disk, decoded once.

An entry holds the images one split of one source uses, preprocessed to one
(crop, image_size, channels). It lives in `<root>/<dataset>-<split>-<hash>/`, where
root is `cache_dir`, else `$RAE_KERAS_CACHE`, else `~/.cache/rae_keras`. Its
manifest.json holds a key (a hash of the chosen files' paths, sizes and mtimes and of
the preprocessing) and every shard's record count, size and sha256:
- a changed source (files added, removed, modified) changes the key: rebuilt;
- a shard whose size or sha256 differs is named in a warning and the entry rebuilt;
- an entry is written in a temporary directory and renamed into place when complete,
  so a build that fails (a full disk: one-line `DataError`) or is killed is never read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from typing import List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from rae_keras.config import DataConfig
from rae_keras.records import RecordSet
from rae_keras.sources import DataError, Listing

FORMAT = "rae_keras.cache/1"
ENV = "RAE_KERAS_CACHE"
MANIFEST = "manifest.json"
SHARD_RECORDS = 256


def cache_root(cache_dir: Optional[str] = None) -> str:
    """Where entries live: cache_dir, else $RAE_KERAS_CACHE, else ~/.cache/rae_keras."""
    return os.path.abspath(os.path.expanduser(
        cache_dir or os.environ.get(ENV) or os.path.join("~", ".cache", "rae_keras")))


@dataclasses.dataclass(frozen=True)
class Entry:
    path: str  # the entry's directory
    key: str  # what its manifest must say


def cached_images(listing: Listing, indices: np.ndarray, config: DataConfig, split: str,
                  cache_dir: Optional[str] = None) -> Tuple[RecordSet, List[str]]:
    """The chosen items (`indices` into the listing, ascending) as a RecordSet, from the
    cache when it holds them, else decoded once and cached; and the skipped files."""
    shape = (config.image_size, config.image_size, config.channels)
    if not len(indices):
        return RecordSet((), (), shape, identities=np.array([], str)), []
    entry = _entry(listing, indices, config, split, cache_root(cache_dir))
    manifest = _usable(entry) or _build(listing, indices, config, entry)
    kept = np.setdiff1d(np.arange(len(indices)), manifest["skipped"])
    shards = manifest["shards"]
    images = RecordSet([os.path.join(entry.path, s["file"]) for s in shards],
                       [s["count"] for s in shards], shape, "uint8",
                       _content_hash(shards, shape), listing.identities[indices[kept]])
    return images, [listing.name(indices[p]) for p in manifest["skipped"]]


def _entry(listing: Listing, indices, config: DataConfig, split: str, root: str) -> Entry:
    prep = f"crop={config.crop}|size={config.image_size}|channels={config.channels}"
    slot = hashlib.sha256(f"{listing.origin}|{split}|{prep}".encode()).hexdigest()[:16]
    key = hashlib.sha256(f"{FORMAT}|{prep}|{len(indices)}".encode())
    for part in listing.key_parts(indices):
        key.update(part.encode() + b"\n")
    name = f"{config.dataset}-{split}-{slot}".replace(os.sep, "_")
    return Entry(os.path.join(root, name), key.hexdigest())


def _content_hash(shards, shape) -> str:
    digest = hashlib.sha256(f"{FORMAT}|{tuple(shape)}".encode())
    for shard in shards:
        digest.update(shard["sha256"].encode())
    return digest.hexdigest()


def _usable(entry: Entry) -> Optional[dict]:
    """The entry's manifest if it is complete, current and intact, else None (logged)."""
    try:
        with open(os.path.join(entry.path, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        logging.info("Building the data cache %s", entry.path)
        return None
    if manifest.get("format") != FORMAT or manifest.get("key") != entry.key:
        logging.warning("The source of the data cache %s changed (files added, removed or "
                        "modified, or another preprocessing); rebuilding it", entry.path)
        return None
    for shard in manifest["shards"]:
        path = os.path.join(entry.path, shard["file"])
        problem = _shard_problem(path, shard)
        if problem:
            logging.warning("Data cache shard %s is corrupt (%s); rebuilding %s", path,
                            problem, entry.path)
            return None
    return manifest


def _shard_problem(path: str, shard: dict) -> str:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return e.strerror or "unreadable"
    if size != shard["bytes"]:
        return f"{size} bytes, the manifest says {shard['bytes']}"
    if _sha256(path) != shard["sha256"]:
        return "sha256 differs from the manifest"
    return ""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build(listing: Listing, indices, config: DataConfig, entry: Entry) -> dict:
    """Decodes the chosen items into a temporary directory, then renames it into place."""
    root = os.path.dirname(entry.path)
    tmp, found = None, _inode(entry.path)  # what this build replaces
    try:
        os.makedirs(root, exist_ok=True)
        _remove_abandoned(entry)
        tmp = tempfile.mkdtemp(prefix=f"{os.path.basename(entry.path)}.tmp-{os.getpid()}-",
                               dir=root)
        shards, kept = _write_shards(listing.decode(indices, config), tmp)
        manifest = {"format": FORMAT, "key": entry.key, "origin": listing.origin,
                    "count": len(kept), "shards": shards,
                    "skipped": sorted(set(range(len(indices))) - set(kept))}
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f)
        return _install(tmp, entry, manifest, found)
    except OSError as e:
        reason = e.strerror or str(e)
        hint = "free space there" if e.errno == errno.ENOSPC else "check that it is writable"
        raise DataError(f"cannot write the data cache in {root} ({' '.join(reason.split())})"
                        f"; {hint} or pass --cache_dir=PATH (or set ${ENV}); nothing "
                        f"half-written is kept") from None
    finally:
        if tmp and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _write_shards(ds: tf.data.Dataset, directory: str):
    """Writes (position, uint8 image) elements as shards of SHARD_RECORDS records;
    returns the shards' manifest rows and the positions written."""
    shards, kept, writer, count = [], [], None, 0

    def finish():
        with _disk_errors():
            writer.close()
        path = os.path.join(directory, shards[-1]["file"])
        shards[-1].update(count=count, bytes=os.path.getsize(path), sha256=_sha256(path))

    for positions, images in ds.batch(64).prefetch(2).as_numpy_iterator():
        for position, image in zip(positions, images):
            if writer is None or count == SHARD_RECORDS:
                if writer is not None:
                    finish()
                shards.append({"file": f"shard-{len(shards):05d}.tfrecord"})
                with _disk_errors():
                    writer = tf.io.TFRecordWriter(os.path.join(directory, shards[-1]["file"]))
                count = 0
            with _disk_errors():
                _write_record(writer, image)
            kept.append(int(position))
            count += 1
    if writer is not None:
        finish()
    return shards, kept


def _write_record(writer: tf.io.TFRecordWriter, image: np.ndarray) -> None:
    writer.write(image.tobytes())


@contextlib.contextmanager
def _disk_errors():
    """TensorFlow's file errors (a full disk while writing a record) as OSError."""
    try:
        yield
    except tf.errors.OpError as e:
        full = "no space left" in e.message.lower()
        raise OSError(errno.ENOSPC if full else errno.EIO, " ".join(e.message.split())) from e


def _install(tmp: str, entry: Entry, manifest: dict, found: Optional[int]) -> dict:
    """Swaps the finished entry in (rename is atomic: readers see old or new) and returns
    its manifest. When another process (a worker of the same run) installed the same
    key since this build began, its entry is kept: it may already be reading it."""
    path = entry.path
    if _inode(path) not in (None, found):
        try:
            with open(os.path.join(path, MANIFEST)) as f:
                theirs = json.load(f)
            if theirs.get("key") == entry.key:
                return theirs
        except (OSError, ValueError):
            pass
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=f"{os.path.basename(path)}.old-",
                               dir=os.path.dirname(path))
        os.rename(path, os.path.join(old, "entry"))
    os.rename(tmp, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    return manifest


def _inode(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _remove_abandoned(entry: Entry) -> None:
    """Temporary directories of builds of this entry whose process is gone."""
    for tmp in glob.glob(f"{entry.path}.tmp-*") + glob.glob(f"{entry.path}.old-*"):
        pid = os.path.basename(tmp)[len(os.path.basename(entry.path)) + 5:].split("-")[0]
        if pid.isdigit() and _alive(int(pid)) and ".tmp-" in tmp:
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
