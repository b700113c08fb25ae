"""TensorFlow Datasets sources: `--dataset=tfds --tfds_name=BUILDER` and `--dataset=lfw`.

Any TFDS builder with an image feature works. Its examples are listed (identity only,
images left encoded), split by identity and decoded only where a run uses them. The
identity is the builder's person feature where it has one (`label` for lfw; a feature
named identity/person/celebrity elsewhere), else every example is its own person.
A builder that is not prepared is prepared from its manual dir (`--data_dir`, else
TFDS' default), never by trying a download URL that may be gone.
"""

from __future__ import annotations

import glob
import hashlib
import os

from absl import logging
import numpy as np
import tensorflow as tf

from rae_keras import preprocessing
from rae_keras.config import DataConfig
from rae_keras.sources import DataError, Listing, as_str, register_source

LFW_ARCHIVE = "lfw.tgz"
LFW_ARCHIVE_SHA256 = "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"
LFW_ARCHIVE_BYTES = 180566744
IDENTITY_FEATURES = {"lfw": "label"}  # builders whose identity feature has another name
GENERIC_IDENTITY_FEATURES = ("identity", "person", "celebrity")


class TfdsListing(Listing):
    """Every example of every split of a prepared TFDS builder, in TFDS order."""

    def __init__(self, builder):
        import tensorflow_datasets as tfds

        self.builder = builder
        self.origin = f"tfds:{builder.info.full_name} in {builder.data_dir}"
        features = builder.info.features
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        if not images:
            raise DataError(f"TFDS {builder.name} has no image feature (features: "
                            f"{', '.join(features.keys())}); pick an image data set")
        self.image_key = images[0]
        self.identity_key = _identity_feature(builder.name, features.keys())
        self.splits = "+".join(sorted(builder.info.splits.keys())) or "train"
        self.identities = self._list_identities()

    def _examples(self) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        return self.builder.as_dataset(split=self.splits, shuffle_files=False,
                                       decoders={self.image_key: tfds.decode.SkipDecoding()})

    def _list_identities(self) -> np.ndarray:
        key = self.identity_key
        ds = self._examples().map(lambda ex: ex[key] if key else tf.constant(0))
        values = np.concatenate([np.atleast_1d(b) for b in ds.batch(4096).as_numpy_iterator()]
                                or [np.array([])])
        if key:
            return as_str(values)
        return np.array([f"{self.builder.name}_{i:07d}" for i in range(len(values))])

    def key_parts(self, indices):
        yield f"{self.builder.info.full_name}|{self.splits}|{len(self.identities)}"
        for path in sorted(glob.glob(os.path.join(os.fspath(self.builder.data_dir), "*"))):
            stat = os.stat(path)
            yield f"{os.path.basename(path)}|{stat.st_size}|{stat.st_mtime_ns}"
        yield hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()

    def decode(self, indices, config):
        chosen = np.zeros(len(self.identities), bool)
        chosen[indices] = True
        position = np.full(len(self.identities), -1, np.int64)
        position[indices] = np.arange(len(indices))
        chosen, position = tf.constant(chosen), tf.constant(position)
        image_key = self.image_key

        def prep(i, example):
            return tf.gather(position, i), _preprocess(example[image_key], config)

        return (self._examples().enumerate()
                .filter(lambda i, example: tf.gather(chosen, i))
                .map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .ignore_errors())


def _identity_feature(name: str, keys) -> str:
    wanted = IDENTITY_FEATURES.get(name)
    if wanted in keys:
        return wanted
    return next((k for k in GENERIC_IDENTITY_FEATURES if k in keys), "")


def _preprocess(image: tf.Tensor, config: DataConfig) -> tf.Tensor:
    """Encoded bytes (SkipDecoding) or decoded pixels -> uint8 model input."""
    if image.dtype == tf.string:
        out = preprocessing.preprocess_bytes(image, config.crop, config.image_size,
                                             config.channels)
    else:
        pixels = preprocessing.to_channels(tf.image.convert_image_dtype(image, tf.float32),
                                           config.channels)
        out = preprocessing.center_crop_and_resize(pixels, config.crop, config.image_size)
    return preprocessing.to_uint8(out)


@register_source("lfw")
def _load_tfds_lfw(config: DataConfig) -> TfdsListing:
    """TFDS `lfw` (250x250 RGB, label = person), prepared from a local lfw.tgz."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("lfw", data_dir=config.tfds_data_dir)
    manual = _manual_dir(builder, config)
    how = (f"put {LFW_ARCHIVE} (sha256 {LFW_ARCHIVE_SHA256}, {LFW_ARCHIVE_BYTES} bytes; "
           f"any mirror of the original) in {manual} and rerun with "
           f"--dataset=lfw --data_dir={manual}, or extract it and use "
           f"--dataset=folder --data_dir=<extracted lfw folder>")
    if not builder.is_prepared() and not os.path.isfile(os.path.join(manual, LFW_ARCHIVE)):
        # Fail at once instead of trying the dead URL (which retries for minutes).
        raise DataError(f"TFDS lfw is not prepared in {builder.data_dir} and its download "
                        f"URL is dead; {how}")
    _prepare(builder, manual, how, os.path.join(manual, LFW_ARCHIVE))
    return TfdsListing(builder)


@register_source("tfds")
def _load_tfds(config: DataConfig) -> TfdsListing:
    """Any TFDS image builder (--tfds_name), prepared from --data_dir as its manual dir."""
    import tensorflow_datasets as tfds

    name = getattr(config, "tfds_name", "")
    if not name:
        raise DataError("--dataset=tfds needs --tfds_name=BUILDER (a TFDS image data set, "
                        "e.g. lfw or celeb_a)")
    try:
        builder = tfds.builder(name, data_dir=config.tfds_data_dir)
    except Exception as e:  # noqa: BLE001 - an unknown name becomes one line
        raise DataError(f"no TFDS builder {name!r}: {' '.join(str(e).split())[:300]}") from e
    manual = _manual_dir(builder, config)
    _prepare(builder, manual, f"put the files TFDS {name} needs in {manual} (its manual "
                              f"dir) and rerun with --data_dir={manual}")
    return TfdsListing(builder)


def _manual_dir(builder, config: DataConfig) -> str:
    """Where a builder's manual files are looked for: --data_dir, else TFDS' default."""
    if config.data_dir:
        return config.data_dir
    root = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))  # <root>/<name>/<ver>
    return os.path.join(root, "downloads", "manual")


def _prepare(builder, manual_dir: str, how: str, what: str = "") -> None:
    """Prepares `builder` from manual_dir without a download, or fails with `how`."""
    import tensorflow_datasets as tfds

    if builder.is_prepared():
        return
    what = what or manual_dir
    logging.info("Preparing TFDS %s from %s", builder.name, what)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # noqa: BLE001 - any failure becomes one actionable message
        cause = " ".join(f"{type(e).__name__}: {e}".split())[:400]
        raise DataError(f"preparing TFDS {builder.name} from {what} failed ({cause}); "
                        f"{how}") from e
