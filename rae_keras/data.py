"""Data sources, identity split and the tf.data input pipeline.

Every source gives the same result, a `DataSplits` of float32 images in [0, 1]. The
sources are registered with `@register_source("name")` (`SOURCES`, which config
validation and the `--dataset` flag read):

- `lfw_subset`: scikit-image's bundled LFW subset (no download). Its first 100
  images are faces (the last 100 are not and are dropped). It carries no names,
  so each face is treated as its own identity (`lfw_subset_000`, ...).
- `folder`: an LFW-style tree (`Person/Person_0001.jpg`: identity = parent
  folder) or a flat folder (`Ann_0001.jpg`: identity = stem without `_NNNN`).
- `lfw`: TensorFlow Datasets' `lfw` builder (identity = its `label`), prepared
  from a local `lfw.tgz` because the upstream URL is dead.

Every image goes through `rae_keras.preprocessing`, the same code the exported
serving graph runs, so training and serving see identical tensors. Train and
test are split by identity so that evaluation uses people never trained on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Callable, Iterable, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from rae_keras import preprocessing
from rae_keras.config import DataConfig, Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
LFW_SUBSET_FACES = 100  # skimage.data.lfw_subset(): first 100 faces, then 100 non-faces
LFW_ARCHIVE = "lfw.tgz"
LFW_ARCHIVE_SHA256 = "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"
LFW_ARCHIVE_BYTES = 180566744
_BATCH = 256  # images per step when materialising a pipeline into numpy
_SHOW_SKIPPED = 5  # skipped files named in the log


class DataError(ValueError):
    """Bad or missing data; the one-line message names the problem and the path."""


@dataclasses.dataclass(frozen=True)
class Source:
    load: Callable[[DataConfig], tuple]  # -> (images, identities, skipped)
    needs_data_dir: bool = False  # config validation refuses it without --data_dir


SOURCES: Registry[Source] = Registry("dataset")


def register_source(name: str, *, needs_data_dir: bool = False):
    """Decorator: `load(config)` becomes `--dataset=name`. It returns (float32 images
    preprocessed to the config's size and channels, their identities, skipped files);
    `load_splits` splits them by identity."""
    def decorate(load):
        SOURCES.add(name, Source(load, needs_data_dir), load.__doc__)
        return load
    return decorate


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32 [N, image_size, image_size, channels] in [0, 1]
    identities: np.ndarray  # str, one per image (person name)

    def __len__(self) -> int:
        return len(self.images)


@dataclasses.dataclass(frozen=True)
class DataSplits:
    train: Split
    test: Split
    skipped: tuple[str, ...]  # unreadable/corrupt files that were skipped


# ---------------------------------------------------------------------------
# Public entry points


def load_splits(config: DataConfig) -> DataSplits:
    """Load the configured source, preprocess it and split it by identity."""
    images, identities, skipped = SOURCES.lookup(config.dataset).load(config)
    _log_loaded(config.dataset, identities, skipped)
    if len(images) == 0:
        raise DataError(f"no usable images in dataset {config.dataset} (data_dir "
                        f"{config.data_dir}): {len(skipped)} files skipped as unreadable "
                        f"or corrupt, none loaded")

    test_ids = split_identities(identities, config.test_fraction, config.seed)
    is_test = np.isin(identities, list(test_ids))
    train_idx = _cap(np.flatnonzero(~is_test), config.max_images, config.seed)
    test_idx = np.flatnonzero(is_test)
    logging.info("Split by identity (seed %d): train %d images / %d identities, "
                 "test %d images / %d identities", config.seed, len(train_idx),
                 len(np.unique(identities[train_idx])), len(test_idx), len(test_ids))
    return DataSplits(
        train=Split(images[train_idx], identities[train_idx]),
        test=Split(images[test_idx], identities[test_idx]),
        skipped=tuple(skipped),
    )


def make_dataset(images: np.ndarray, batch_size: int, *, shuffle: bool,
                 seed: int = 0, drop_remainder: bool = False) -> tf.data.Dataset:
    """Float32 image batches (no labels: an autoencoder's target is its input).

    Shuffling uses a buffer as large as the data (a true permutation) and a
    fixed seed, reshuffled every epoch, so runs are reproducible.
    """
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(images, np.float32)).cache()
    if shuffle:
        ds = ds.shuffle(max(len(images), 1), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def epoch_batches(images: np.ndarray, batch_size: int, *, seed: int, first_epoch: int,
                  epochs: int, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches for epochs first_epoch..epochs-1, each epoch's order a function of
    (seed, epoch) alone: a run resumed at epoch e sees exactly the batches an
    uninterrupted run would have seen from epoch e on."""
    images = tf.convert_to_tensor(images)
    count = int(images.shape[0])

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder)

    return (tf.data.Dataset.range(first_epoch, epochs)
            .flat_map(one_epoch)
            .map(lambda indices: tf.gather(images, indices), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def split_identities(identities: Sequence[str], test_fraction: float, seed: int) -> set:
    """The identities held out for test: a seeded choice of ceil(fraction * n).

    With a positive fraction and at least two identities, at least one is held
    out; never all of them, so there is always something to train on.
    """
    unique = np.unique(np.asarray(identities, dtype=str))  # sorted: order-independent
    n = len(unique)
    n_test = math.ceil(test_fraction * n - 1e-9) if test_fraction > 0 else 0
    if test_fraction > 0 and n >= 2:
        n_test = max(n_test, 1)
    n_test = min(n_test, n - 1) if n else 0
    order = np.random.default_rng(seed).permutation(n)
    return set(unique[order[:n_test]].tolist())


# ---------------------------------------------------------------------------
# Sources: each returns (images, identities, skipped)


@register_source("lfw_subset")
def _load_lfw_subset(config: DataConfig):
    """scikit-image's 100 bundled faces; no names, so one identity per face."""
    from skimage import data as skdata  # bundled file, no download

    faces = skdata.lfw_subset()[:LFW_SUBSET_FACES].astype(np.float32)[..., None]
    names = np.array([f"lfw_subset_{i:03d}" for i in range(len(faces))])
    ds = tf.data.Dataset.from_tensor_slices((faces, names))
    images, identities = _collect(_preprocess_arrays(ds, config))
    return images, _as_str(identities), []


@register_source("folder", needs_data_dir=True)
def _load_folder(config: DataConfig):
    """Every image file under data_dir, decoded in parallel; corrupt ones skipped."""
    paths = list_images(config.data_dir)
    identities_by_path = {p: identity_from_path(p, config.data_dir) for p in paths}
    ds = tf.data.Dataset.from_tensor_slices(np.array(paths))
    ds = ds.map(lambda path: (_decode_file(path, config), path),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images, loaded = _collect(ds.ignore_errors())
    loaded = _as_str(loaded).tolist()
    skipped = sorted(set(paths) - set(loaded))
    identities = np.array([identities_by_path[p] for p in loaded], dtype=str)
    return images, identities, skipped


@register_source("lfw")
def _load_tfds_lfw(config: DataConfig):
    """TFDS `lfw` (250x250 RGB, label = person), prepared from a local lfw.tgz."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("lfw", data_dir=config.tfds_data_dir)
    _prepare_lfw(builder, _lfw_manual_dir(builder, config))
    ds = builder.as_dataset(split="train", shuffle_files=False)
    ds = ds.map(lambda ex: (tf.image.convert_image_dtype(ex["image"], tf.float32), ex["label"]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images, labels = _collect(_preprocess_arrays(ds, config))
    return images, _as_str(labels), []


# ---------------------------------------------------------------------------
# Folder helpers


def list_images(data_dir: Optional[str]) -> list[str]:
    """Sorted image paths under data_dir (recursive, hidden files ignored)."""
    if not data_dir:
        raise DataError("no data_dir given; rerun with --data_dir=PATH (a folder of images)")
    if not os.path.exists(data_dir):
        raise DataError(f"data_dir {data_dir} does not exist; pass --data_dir=PATH "
                        "to an image folder (LFW-style Person/Person_0001.jpg or flat)")
    if not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} is not a directory; pass --data_dir=PATH "
                        "to an image folder (LFW-style Person/Person_0001.jpg or flat)")
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
    """Read and preprocess one file exactly as the serving graph would."""
    return preprocessing.preprocess_bytes(tf.io.read_file(path), config.crop,
                                          config.image_size, config.channels)


# ---------------------------------------------------------------------------
# TFDS lfw helpers


def _lfw_manual_dir(builder, config: DataConfig) -> str:
    """Where lfw.tgz is looked for: --data_dir, else TFDS' default manual dir."""
    if config.data_dir:
        return config.data_dir
    root = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))  # <root>/lfw/<ver>
    return os.path.join(root, "downloads", "manual")


def _prepare_lfw(builder, manual_dir: str) -> None:
    """Prepare TFDS lfw from manual_dir/lfw.tgz, or fail with what to do.

    Without the archive we fail at once instead of trying the dead URL (which
    only retries for minutes before failing).
    """
    import tensorflow_datasets as tfds

    if builder.is_prepared():
        return
    archive = os.path.join(manual_dir, LFW_ARCHIVE)
    how = (f"put {LFW_ARCHIVE} (sha256 {LFW_ARCHIVE_SHA256}, {LFW_ARCHIVE_BYTES} bytes; "
           f"any mirror of the original) in {manual_dir} and rerun with "
           f"--dataset=lfw --data_dir={manual_dir}, or extract it and use "
           f"--dataset=folder --data_dir=<extracted lfw folder>")
    if not os.path.isfile(archive):
        raise DataError(f"TFDS lfw is not prepared in {builder.data_dir} and its download "
                        f"URL is dead; {how}")
    logging.info("Preparing TFDS lfw from %s", archive)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # noqa: BLE001 - any failure becomes one actionable message
        cause = " ".join(f"{type(e).__name__}: {e}".split())[:400]
        raise DataError(f"preparing TFDS lfw from {archive} failed ({cause}); {how}") from e


# ---------------------------------------------------------------------------
# Shared pipeline pieces


def _preprocess_arrays(ds: tf.data.Dataset, config: DataConfig) -> tf.data.Dataset:
    """(float image [H, W, 1|3] in [0, 1], identity) -> (model input, identity)."""

    def prep(image, identity):
        image = preprocessing.to_channels(image, config.channels)
        return preprocessing.center_crop_and_resize(image, config.crop, config.image_size), identity

    return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _collect(ds: tf.data.Dataset):
    """Materialise an (image, key) dataset into (float32 images, keys as numpy)."""
    images, keys = [], []
    for image_batch, key_batch in ds.batch(_BATCH).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        images.append(image_batch)
        keys.append(key_batch)
    if not images:
        return np.zeros((0, 0, 0, 0), np.float32), np.array([], dtype=object)
    return np.concatenate(images).astype(np.float32), np.concatenate(keys)


def _as_str(keys) -> np.ndarray:
    """tf.string values (bytes) -> numpy str array."""
    return np.array([k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in keys],
                    dtype=str)


def _cap(indices: np.ndarray, max_images: int, seed: int) -> np.ndarray:
    """At most max_images of indices: a seeded sample, kept in source order."""
    if max_images <= 0 or len(indices) <= max_images:
        return indices
    chosen = np.random.default_rng(seed).permutation(len(indices))[:max_images]
    return indices[np.sort(chosen)]


def _log_loaded(dataset: str, identities: np.ndarray, skipped: Iterable[str]) -> None:
    skipped = list(skipped)
    logging.info("Loaded %d images of %d identities from %s", len(identities),
                 len(np.unique(identities)), dataset)
    if skipped:
        more = ", ..." if len(skipped) > _SHOW_SKIPPED else ""
        shown = ", ".join(skipped[:_SHOW_SKIPPED]) + more
        logging.warning("Skipped %d unreadable or corrupt files: %s", len(skipped), shown)
