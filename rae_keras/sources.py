"""Data sources: what a data set holds, listed before anything is decoded.

A source is registered with `@register_source("name")` (`SOURCES`, which config
validation and the `--dataset` flag read). Its function returns a `Listing`: one
identity per item and a way to decode any chosen items. The identity split and
`--max_images` are applied to the listing, so only the images a run uses are ever
decoded, and `rae_keras.cache` keeps them on disk as uint8 for later runs.

A function may instead return `(float32 images, identities, skipped)` already in
memory (small bundled sets such as `lfw_subset`); those are split the same way and
are never cached.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Iterable, List, Optional

import numpy as np
import tensorflow as tf

from rae_keras import preprocessing
from rae_keras.config import DataConfig, Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
LFW_SUBSET_FACES = 100  # skimage.data.lfw_subset(): first 100 faces, then 100 non-faces


class DataError(ValueError):
    """Bad or missing data; the one-line message names the problem and the path."""


@dataclasses.dataclass(frozen=True)
class Source:
    load: Callable[[DataConfig], object]  # -> Listing, or (images, identities, skipped)
    needs_data_dir: bool = False  # config validation refuses it without --data_dir


SOURCES: Registry[Source] = Registry("dataset")


def register_source(name: str, *, needs_data_dir: bool = False):
    """Decorator: `load(config)` becomes `--dataset=name`. It returns a `Listing` (decoded
    lazily, cached on disk) or (float32 images preprocessed to the config's size and
    channels, their identities, skipped files) held in memory."""
    def decorate(load):
        SOURCES.add(name, Source(load, needs_data_dir), load.__doc__)
        return load
    return decorate


class Listing:
    """The items of a source, not yet decoded: `identities[i]` is item i's person."""

    identities: np.ndarray  # str, one per item
    origin: str  # where the items come from (a folder, a TFDS builder), for messages

    def key_parts(self, indices: np.ndarray) -> Iterable[str]:
        """What identifies the chosen items' content (paths, sizes, mtimes): the cache
        key hashes it, so a changed source is never read from a stale cache."""
        raise NotImplementedError

    def decode(self, indices: np.ndarray, config: DataConfig) -> tf.data.Dataset:
        """(position in `indices`, uint8 [size, size, channels]) of the chosen items in
        order, preprocessed as serving does; unreadable items are left out."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """Item `index` as a message names it (its path)."""
        return f"{self.origin}[{index}]"


@dataclasses.dataclass(frozen=True)
class InMemory:
    """A source's images already decoded and preprocessed (float32 in [0, 1])."""
    images: np.ndarray
    identities: np.ndarray
    skipped: tuple


def list_source(config: DataConfig):
    """The configured source's `Listing` (or `InMemory` images)."""
    listed = SOURCES.lookup(config.dataset).load(config)
    if isinstance(listed, tuple):
        images, identities, skipped = listed
        return InMemory(np.asarray(images, np.float32), as_str(identities), tuple(skipped))
    return listed


def as_str(keys) -> np.ndarray:
    """tf.string values (bytes) or numbers -> numpy str array."""
    return np.array([k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in keys],
                    dtype=str)


# ---------------------------------------------------------------------------
# lfw_subset and folder


@register_source("lfw_subset")
def _load_lfw_subset(config: DataConfig):
    """scikit-image's 100 bundled faces; no names, so one identity per face."""
    from skimage import data as skdata  # bundled file, no download

    faces = skdata.lfw_subset()[:LFW_SUBSET_FACES].astype(np.float32)[..., None]
    prep = lambda image: preprocessing.center_crop_and_resize(  # noqa: E731
        preprocessing.to_channels(image, config.channels), config.crop, config.image_size)
    ds = tf.data.Dataset.from_tensor_slices(faces).map(prep).batch(LFW_SUBSET_FACES)
    images = np.concatenate(list(ds.as_numpy_iterator()))
    return images, np.array([f"lfw_subset_{i:03d}" for i in range(len(faces))]), []


class FileListing(Listing):
    """Image files; identity from the path (see `identity_from_path`)."""

    def __init__(self, data_dir: str):
        self.root = os.path.abspath(data_dir)
        self.paths = list_images(data_dir)
        self.identities = np.array([identity_from_path(p, data_dir) for p in self.paths],
                                   dtype=str)
        self.origin = self.root

    def key_parts(self, indices):
        for i in indices:
            path = self.paths[i]
            stat = os.stat(path)
            yield f"{os.path.relpath(path, self.root)}|{stat.st_size}|{stat.st_mtime_ns}"

    def decode(self, indices, config):
        paths = tf.constant([self.paths[i] for i in indices], tf.string)
        ds = tf.data.Dataset.from_tensor_slices(paths).enumerate()
        return ds.map(lambda i, path: (i, _decode_file(path, config)),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()

    def name(self, index):
        return self.paths[index]


@register_source("folder", needs_data_dir=True)
def _load_folder(config: DataConfig) -> FileListing:
    """Every image file under data_dir, decoded in parallel; corrupt ones skipped."""
    return FileListing(config.data_dir)


def list_images(data_dir: Optional[str]) -> List[str]:
    """Sorted image paths under data_dir (recursive, hidden files ignored)."""
    if not data_dir:
        raise DataError("no data_dir given; rerun with --data_dir=PATH (a folder of images)")
    how = ("pass --data_dir=PATH to an image folder (LFW-style Person/Person_0001.jpg "
           "or flat)")
    if not os.path.exists(data_dir):
        raise DataError(f"data_dir {data_dir} does not exist; {how}")
    if not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} is not a directory; {how}")
    paths = []
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths.extend(os.path.join(root, f) for f in files
                     if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise DataError(f"no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) found "
                        f"under data_dir {data_dir}")
    return sorted(paths)


def identity_from_path(path: str, data_dir: str) -> str:
    """Parent folder name in an LFW-style tree; in a flat folder the file stem
    without a trailing `_NNNN`, so `Ann_0001.jpg` and `Ann_0002.jpg` are one person."""
    parent = os.path.dirname(path)
    if os.path.normpath(parent) != os.path.normpath(data_dir):
        return os.path.basename(parent)
    stem = os.path.splitext(os.path.basename(path))[0]
    return re.sub(r"_\d+$", "", stem) or stem


def _decode_file(path: tf.Tensor, config: DataConfig) -> tf.Tensor:
    """Read and preprocess one file exactly as the serving graph would, as uint8."""
    return preprocessing.to_uint8(preprocessing.preprocess_bytes(
        tf.io.read_file(path), config.crop, config.image_size, config.channels))
