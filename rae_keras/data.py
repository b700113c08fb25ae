"""Data sets for training and evaluation: identity split, then images.

Sources (`rae_keras.sources`, `rae_keras.tfds_sources`) list what a data set holds
before anything is decoded:
- `lfw_subset`: scikit-image's bundled LFW subset (no download). Its first 100
  images are faces (the last 100 are not and are dropped). It carries no names,
  so each face is treated as its own identity (`lfw_subset_000`, ...).
- `folder`: an LFW-style tree (`Person/Person_0001.jpg`: identity = parent
  folder) or a flat folder (`Ann_0001.jpg`: identity = stem without `_NNNN`).
- `lfw`: TensorFlow Datasets' `lfw` builder (identity = its `label`), prepared
  from a local `lfw.tgz` because the upstream URL is dead.
- `tfds`: any TFDS image builder (`--tfds_name`).

Train and test are split by identity from that listing, so evaluation uses people
never trained on, and `max_images` caps the training items; only then are the chosen
images decoded, through `rae_keras.preprocessing` (the code the exported serving
graph runs), into the on-disk cache (`rae_keras.cache`) that later runs and
`evaluate` reuse. `stream_splits` gives the splits as streams from that cache
(`records.RecordSet`); `load_splits` as float32 arrays in memory.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Optional, Sequence, Tuple, Union

from absl import logging
import numpy as np

from rae_keras import cache, records, sources
from rae_keras.config import DataConfig
from rae_keras.records import ArraySet, RecordSet, epoch_batches, make_dataset  # noqa: F401
from rae_keras.sources import (SOURCES, DataError, identity_from_path,  # noqa: F401
                               list_images, register_source)
# Importing tfds_sources registers the lfw and tfds sources.
from rae_keras.tfds_sources import (LFW_ARCHIVE, LFW_ARCHIVE_BYTES,  # noqa: F401
                                    LFW_ARCHIVE_SHA256)

_SHOW_SKIPPED = 5  # skipped files named in the log
SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Split:
    images: Union[np.ndarray, RecordSet]  # float32 [N, size, size, channels] in [0, 1]
    identities: np.ndarray  # str, one per image (person name)

    def __len__(self) -> int:
        return len(self.images)


@dataclasses.dataclass(frozen=True)
class DataSplits:
    train: Split
    test: Split
    skipped: tuple[str, ...]  # unreadable/corrupt files that were skipped


def stream_splits(config: DataConfig, cache_dir: Optional[str] = None,
                  which: Sequence[str] = SPLITS) -> DataSplits:
    """The configured source split by identity; the splits in `which` are loaded (the
    others are empty). A cached source's images are RecordSets read from disk (built
    on first use, in `cache_dir`, see `cache.cache_root`); an in-memory one's arrays."""
    listed = sources.list_source(config)
    if not len(listed.identities):
        raise DataError(f"no usable images in dataset {config.dataset} (data_dir "
                        f"{config.data_dir}): none listed")
    chosen = dict(zip(SPLITS, split_indices(listed.identities, config)))
    names = {"train": f"train-s{config.seed}-t{config.test_fraction:g}-m{config.max_images}",
             "test": f"test-s{config.seed}-t{config.test_fraction:g}"}
    loaded, skipped = {}, []
    for split in SPLITS:
        indices = chosen[split] if split in which else chosen[split][:0]
        loaded[split], lost = _take(listed, indices, config, names[split], cache_dir)
        skipped += lost
    if isinstance(listed, sources.InMemory):
        skipped = list(listed.skipped)
    _log_loaded(config, loaded, skipped)
    if not sum(len(s) for s in loaded.values()) and any(len(chosen[s]) for s in which):
        raise DataError(f"no usable images in dataset {config.dataset} (data_dir "
                        f"{config.data_dir}): {len(skipped)} files skipped as unreadable "
                        f"or corrupt, none loaded")
    return DataSplits(train=loaded["train"], test=loaded["test"], skipped=tuple(skipped))


def load_splits(config: DataConfig, cache_dir: Optional[str] = None,
                which: Sequence[str] = SPLITS) -> DataSplits:
    """`stream_splits` with every image in memory as float32 (small sets, evaluation)."""
    splits = stream_splits(config, cache_dir, which)
    in_memory = {s: Split(records.as_image_set(getattr(splits, s).images).to_numpy(),
                          getattr(splits, s).identities) for s in SPLITS}
    return DataSplits(train=in_memory["train"], test=in_memory["test"],
                      skipped=splits.skipped)


def split_indices(identities: np.ndarray, config: DataConfig
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """(train, test) item indices, ascending: test identities held out, then at most
    max_images training items (a seeded sample)."""
    test_ids = split_identities(identities, config.test_fraction, config.seed)
    is_test = np.isin(identities, list(test_ids))
    return (_cap(np.flatnonzero(~is_test), config.max_images, config.seed),
            np.flatnonzero(is_test))


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


def _take(listed, indices: np.ndarray, config: DataConfig, split: str,
          cache_dir: Optional[str]) -> Tuple[Split, list]:
    if isinstance(listed, sources.InMemory):
        return Split(listed.images[indices], listed.identities[indices]), []
    images, skipped = cache.cached_images(listed, indices, config, split, cache_dir)
    return Split(images, images.identities), skipped


def _cap(indices: np.ndarray, max_images: int, seed: int) -> np.ndarray:
    """At most max_images of indices: a seeded sample, kept in source order."""
    if max_images <= 0 or len(indices) <= max_images:
        return indices
    chosen = np.random.default_rng(seed).permutation(len(indices))[:max_images]
    return indices[np.sort(chosen)]


def _log_loaded(config: DataConfig, loaded, skipped: Iterable[str]) -> None:
    skipped = list(skipped)
    train, test = loaded["train"], loaded["test"]
    logging.info("Split by identity (seed %d): train %d images / %d identities, "
                 "test %d images / %d identities (%s)", config.seed, len(train),
                 len(np.unique(train.identities)), len(test), len(np.unique(test.identities)),
                 config.dataset)
    if skipped:
        more = ", ..." if len(skipped) > _SHOW_SKIPPED else ""
        shown = ", ".join(skipped[:_SHOW_SKIPPED]) + more
        logging.warning("Skipped %d unreadable or corrupt files: %s", len(skipped), shown)

