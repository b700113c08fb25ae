"""The image sets training reads: `ArraySet` (numpy, in memory) and `RecordSet`
(TFRecord shards on disk, read as a stream).

Both give the same batches API, so training does not care where images live:
`epoch_batches` (shuffled, each epoch's order a function of (seed, epoch) alone, so a
resumed run sees exactly the batches an uninterrupted one would), `batches` (in order),
`head` (the first few, for summaries) and `through` (a frozen block applied once,
for the recursive stages' prefix cache).

A RecordSet's shuffle keeps memory flat, so it is not a full permutation: every
epoch reads the shards in a seeded order, CYCLE of them interleaved, and permutes
each window of consecutive records (about SHUFFLE_WINDOW_BYTES) with a stateless
seed. Memory is one window, whatever the size of the data set; a set smaller than a
window gets a full permutation of its records (in interleaved shard order).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from rae_keras import inputs, preprocessing

SHUFFLE_WINDOW_BYTES = 64 << 20
MAX_WINDOW = 4096
CYCLE = 8  # shards read at once


class ArraySet:
    """Images held in memory as float32 (data given in Python, small bundled sets)."""

    def __init__(self, images: np.ndarray, identities: Optional[np.ndarray] = None):
        self.images = images
        self.identities = identities

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.images.shape[1:])

    def fingerprint(self) -> str:
        return inputs.fingerprint(self.images)

    def epoch_batches(self, batch_size: int, **kwargs) -> tf.data.Dataset:
        return epoch_batches(self.images, batch_size, **kwargs)

    def batches(self, batch_size: int, drop_remainder: bool = False) -> tf.data.Dataset:
        return make_dataset(self.images, batch_size, shuffle=False,
                            drop_remainder=drop_remainder)

    def head(self, count: int) -> np.ndarray:
        return self.images[:count]

    def to_numpy(self) -> np.ndarray:
        return self.images

    def through(self, block, shape: Sequence[int], directory: str) -> "ArraySet":
        del directory  # stays in memory
        if not len(self):
            return ArraySet(np.zeros((0,) + tuple(shape), np.float32))
        return ArraySet(np.asarray(block.predict(self.images, batch_size=256, verbose=0),
                                   np.float32))


class RecordSet:
    """Samples in TFRecord shards, one raw record (uint8 image or float32 array) each."""

    def __init__(self, paths: Sequence[str], counts: Sequence[int], shape: Sequence[int],
                 dtype: str = "uint8", fingerprint: str = "",
                 identities: Optional[np.ndarray] = None):
        self.paths, self.counts = tuple(paths), tuple(int(c) for c in counts)
        self.shape, self.dtype = tuple(int(d) for d in shape), dtype
        self._fingerprint, self.identities = fingerprint, identities

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def sample_shape(self) -> tuple:
        return self.shape

    def fingerprint(self) -> str:
        """sha256 of the shards' contents (from the cache manifest), not of the sources'
        paths or dates: a rebuilt cache of the same pictures is the same data."""
        return self._fingerprint

    @property
    def window(self) -> int:
        record = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        return int(max(1, min(MAX_WINDOW, SHUFFLE_WINDOW_BYTES // record)))

    def _decode(self, records: tf.Tensor) -> tf.Tensor:
        values = tf.reshape(tf.io.decode_raw(records, tf.dtypes.as_dtype(self.dtype)),
                            (-1,) + self.shape)
        return preprocessing.from_uint8(values) if self.dtype == "uint8" else values

    def for_worker(self, index: int, workers: int) -> "RecordSet":
        """The shards worker `index` of `workers` reads: every workers-th one."""
        return RecordSet(self.paths[index::workers], self.counts[index::workers], self.shape,
                         self.dtype, self._fingerprint)

    def worker_steps(self, global_batch: int, workers: int) -> int:
        """Steps per epoch that every worker can feed from its own shards (they must all
        take the same number: each step is a collective)."""
        return min(sum(self.counts[w::workers]) // (global_batch // workers)
                   for w in range(workers))

    def epoch_batches(self, batch_size: int, *, seed: int, first_epoch: int, epochs: int,
                      drop_remainder: bool = False, steps: Optional[int] = None
                      ) -> tf.data.Dataset:
        """Batches for epochs first_epoch..epochs-1 (see the module doc for the shuffle),
        at most `steps` of them per epoch."""
        paths, window = tf.constant(self.paths or ("",)), self.window
        cycle = max(1, min(CYCLE, len(self.paths)))
        seed = tf.constant(seed, tf.int64)

        def one_epoch(epoch):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(len(self.paths)), seed=tf.stack([seed, epoch]))
            records = tf.data.Dataset.from_tensor_slices(tf.gather(paths, order)).interleave(
                tf.data.TFRecordDataset, cycle_length=cycle, block_length=1,
                num_parallel_calls=cycle, deterministic=True)

            def mix(index, chunk):
                perm = tf.random.experimental.stateless_shuffle(
                    tf.range(tf.shape(chunk)[0]),
                    seed=tf.stack([seed, (epoch + 1) * (1 << 32) + index]))
                return tf.data.Dataset.from_tensor_slices(tf.gather(chunk, perm))

            batches = records.batch(window).enumerate().flat_map(mix).batch(batch_size,
                                                                             drop_remainder)
            return batches.take(steps) if steps else batches

        return _shard_by_batch(tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
                               .map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
                               .prefetch(tf.data.AUTOTUNE))

    def batches(self, batch_size: int, drop_remainder: bool = False) -> tf.data.Dataset:
        """Every sample once, in stored order (of a known number of batches, which Keras
        needs to validate on it without running out of data)."""
        count = len(self) // batch_size if drop_remainder else -(-len(self) // batch_size)
        return _shard_by_batch(
            tf.data.TFRecordDataset(list(self.paths)).batch(batch_size, drop_remainder)
            .apply(tf.data.experimental.assert_cardinality(count))
            .map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))

    def head(self, count: int) -> np.ndarray:
        if not len(self) or not count:
            return np.zeros((0,) + self.shape, np.float32)
        return next(iter(self.batches(count).take(1))).numpy()

    def to_numpy(self) -> np.ndarray:
        """Everything as float32 in memory (evaluation sets, tests)."""
        parts = [b.numpy() for b in self.batches(1024)]
        return np.concatenate(parts) if parts else np.zeros((0,) + self.shape, np.float32)

    def through(self, block, shape: Sequence[int], directory: str) -> "RecordSet":
        """`block` applied to every sample (giving `shape`), written as float32 shards in
        `directory`, shard by shard: memory is one shard."""
        os.makedirs(directory, exist_ok=True)
        paths = []
        for i, path in enumerate(self.paths):
            out = os.path.join(directory, f"shard-{i:05d}.tfrecord")
            with tf.io.TFRecordWriter(out) as writer:
                for batch in tf.data.TFRecordDataset(path).batch(256).map(self._decode):
                    values = np.asarray(block.predict_on_batch(batch), np.float32)
                    for value in values:
                        writer.write(value.tobytes())
            paths.append(out)
        return RecordSet(paths, self.counts, shape, "float32", self._fingerprint)


class PrefixCache:
    """h_d of the training and validation inputs of a StagedAutoencoder `model`, for
    phases that consume a frozen prefix's output (`Phase.input_depth`). Moving from
    h_(d-1) to h_d runs encoders[d-1] alone, so a recursive schedule encodes every input
    once per stage, through one block, instead of through the whole prefix. The values
    equal what the prefix computes every step (frozen layers, BatchNormalization
    included, run in inference mode). Arrays stay in memory; a RecordSet's h_d is
    written to a scratch directory (TMPDIR), one level at a time, removed by `close`."""

    def __init__(self, model, train_x, val_x):
        self.model = model
        self.inputs = (train_x, val_x)
        self.depth, self.arrays = 0, self.inputs
        self.scratch: Optional[str] = None

    def inputs_at(self, depth: int) -> tuple:
        """(train, validation) as h_`depth` (0: the inputs themselves)."""
        if depth < self.depth:  # e.g. fine-tuning after the stages: start over
            self._remove_level(self.depth)
            self.depth, self.arrays = 0, self.inputs
        while self.depth < depth:
            self.depth += 1
            block = self.model.encoder_block(self.depth)
            self.arrays = tuple(
                x.through(block, self.model.shape_at(self.depth), self._level_dir(which))
                for which, x in zip(("train", "val"), self.arrays))
            self._remove_level(self.depth - 1)  # h_(d-1) is not read again
        return self.arrays

    def _level_dir(self, which: str) -> str:
        if self.scratch is None:
            self.scratch = tempfile.mkdtemp(prefix="rae_keras_prefix-")
        return os.path.join(self.scratch, f"h{self.depth}", which)

    def _remove_level(self, depth: int) -> None:
        if self.scratch and depth >= 1:
            shutil.rmtree(os.path.join(self.scratch, f"h{depth}"), ignore_errors=True)

    def close(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _shard_by_batch(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Several workers split the stream by batch (each reads every record, keeps its
    share of the batches): sharding by file would give workers unequal step counts."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def as_image_set(x) -> object:
    """An ArraySet or RecordSet as is; anything else (numpy) as an ArraySet."""
    return x if isinstance(x, (ArraySet, RecordSet)) else ArraySet(x)


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
