"""The data every in-process row uses: the flags' data set, read as
`python -m rae_keras.train` reads it, or synthetic images."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from rae_keras import data as data_lib
from rae_keras import records

from .options import Options


def synthetic_images(n: int, size: int, channels: int, seed: int) -> np.ndarray:
    """n smooth random images in [0, 1]: a few coloured Gaussian blobs each."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    out = np.empty((n, size, size, channels), np.float32)
    blobs, chunk = 4, 256
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cx = rng.uniform(-0.7, 0.7, (m, blobs, 1, 1)).astype(np.float32)
        cy = rng.uniform(-0.7, 0.7, (m, blobs, 1, 1)).astype(np.float32)
        width = rng.uniform(0.05, 0.5, (m, blobs, 1, 1)).astype(np.float32)
        amp = rng.uniform(0.1, 1.0, (m, blobs, channels)).astype(np.float32)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / width)
        img = np.einsum("mbhw,mbc->mhwc", g, amp)
        img /= np.maximum(img.max(axis=(1, 2, 3), keepdims=True), 1e-6)
        out[start:start + m] = img
    return out


def load_data(opts: Options, cache_dir: Optional[str] = None):
    """(DataSplits, description): the flags' data set as `python -m rae_keras.train`
    reads it (streamed from the image cache in `cache_dir`, built if needed), or
    synthetic images in memory (no test split when --test_fraction <= 0)."""
    data = opts.config.data
    if not opts.synthetic:
        splits = data_lib.stream_splits(data, cache_dir=cache_dir)
        where = f"folder {data.data_dir}" if data.dataset == "folder" else data.dataset
        return splits, f"{where} ({len(splits.skipped)} files skipped)"
    n_train = data.max_images or 2048
    n_test = math.ceil(data.test_fraction * n_train) if data.test_fraction > 0 else 0
    images = synthetic_images(n_train + n_test, data.image_size, data.channels, data.seed)
    ids = np.array([f"synthetic_{i:06d}" for i in range(len(images))])
    splits = data_lib.DataSplits(
        train=data_lib.Split(images[:n_train], ids[:n_train]),
        test=data_lib.Split(images[n_train:], ids[n_train:]), skipped=())
    return splits, "synthetic smooth random images (Gaussian blobs)"


def in_memory(splits):
    """`splits` with float32 arrays (plain Keras' rows take numpy)."""
    def arrays(split):
        return dataclasses.replace(split, images=records.as_image_set(split.images).to_numpy())

    return dataclasses.replace(splits, train=arrays(splits.train), test=arrays(splits.test))
