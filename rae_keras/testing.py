"""Shared test helpers: tiny smooth images and configurations (every check runs in
seconds on a CPU), a `train` helper over a run directory, weight snapshots, stand-ins
for a process killed after a checkpoint (an exception there, or a copy of its run
directory as it was then), and user-defined models to train. Plain asserts and no
pytest, so the scripts that tests run in subprocesses import it too; the scheme
contract built on them is `rae_keras.contracts`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Sequence

import keras
import numpy as np

from rae_keras import data as data_lib
from rae_keras import runs, training
from rae_keras.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rae_keras.models import ConvAutoencoder, StagedAutoencoder

SIZE = 16  # side of every tiny image
Weights = Dict[str, List[np.ndarray]]  # {innermost layer name: its weight arrays}
QUIET = dict(log=lambda line: None, verbose=0)


# --------------------------------------------------------------------------- data
def smooth_images(n: int, size: int = SIZE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """n float32 [size, size, channels] Gaussian blobs in [0, 1]: they train more like
    faces than white noise does."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = []
    for _ in range(n):
        cx, cy, s = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.6)
        images.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / s)[..., None])
    return np.repeat(np.stack(images), channels, axis=-1).astype(np.float32)


def tiny_splits(n_train: int = 48, n_test: int = 8, size: int = SIZE,
                seed: int = 0) -> data_lib.DataSplits:
    """Smooth images as a data set's splits, one identity per image."""
    images = smooth_images(n_train + n_test, size, seed=seed)
    ids = np.array([f"p{i}" for i in range(len(images))])
    return data_lib.DataSplits(train=data_lib.Split(images[:n_train], ids[:n_train]),
                               test=data_lib.Split(images[n_train:], ids[n_train:]),
                               skipped=())


# --------------------------------------------------------------------------- models, runs
def tiny_autoencoder(filters: Sequence[int] = (4, 8), normalization: str = "none",
                     seed: Optional[int] = None, size: int = SIZE) -> ConvAutoencoder:
    """A gray size x size ConvAutoencoder; with `seed`, the same initial weights every time."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return ConvAutoencoder.from_model_config(
        ModelConfig(filters=tuple(filters), normalization=normalization), (size, size, 1))


def tiny_config(model_dir, scheme: str = "recursive", epochs: int = 1,
                normalization: str = "none", filters: Sequence[int] = (4, 8, 8),
                **train) -> RunConfig:
    """A validated run of a tiny network on 16x16 gray images (batch 16, learning rate
    3e-3); `train` overrides other TrainConfig fields."""
    train = {"batch_size": 16, "learning_rate": 3e-3, "summary_images": 4, **train}
    return RunConfig(
        name="t", model_dir=str(model_dir), data=DataConfig(image_size=SIZE, channels=1),
        model=ModelConfig(filters=tuple(filters), normalization=normalization),
        train=TrainConfig(scheme=scheme, epochs=epochs, **train),
    ).validate()


def train(config: RunConfig, splits: Optional[data_lib.DataSplits] = None, keep: int = 100):
    """(run, autoencoder, state) of `config` trained on `splits` (default `tiny_splits()`)
    in its run directory, which is closed (unlocked) again when this returns."""
    with runs.RunDirectory(config.model_dir, keep_checkpoints=keep) as run:
        run.prepare(config)
        autoencoder, state = training.train(config, splits or tiny_splits(), run, **QUIET)
    return run, autoencoder, state


# --------------------------------------------------------------------------- weights
def layer_weights(autoencoder: StagedAutoencoder) -> Weights:
    """A copy of every innermost layer's weights, trainable or not (BatchNormalization's
    moving statistics included)."""
    return {layer.name: [np.array(keras.ops.convert_to_numpy(v)) for v in layer.weights]
            for layer in autoencoder.stage_leaf_layers()}


def initial_weights(config: RunConfig) -> Weights:
    """The weights `train(config)` starts from: it seeds, then builds the autoencoder."""
    keras.utils.set_random_seed(config.train.seed)
    return layer_weights(ConvAutoencoder.from_model_config(config.model,
                                                           runs.image_shape_of(config)))


def checkpoint_weights(config: RunConfig, checkpoint: str) -> Weights:
    autoencoder = ConvAutoencoder.from_model_config(config.model, runs.image_shape_of(config))
    autoencoder.full_model().load_weights(os.path.join(checkpoint, "model.weights.h5"))
    return layer_weights(autoencoder)


def identical(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def all_changed(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    """Every weight array differs (in at least one element)."""
    return len(a) == len(b) and all(not np.array_equal(x, y) for x, y in zip(a, b))


def assert_weights_close(got: Weights, want: Weights, atol: float = 1e-6) -> None:
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for x, y in zip(got[name], want[name]):
            np.testing.assert_allclose(x, y, atol=atol, err_msg=name)


# --------------------------------------------------------------------------- kills
class Killed(Exception):
    """Stands in for the process dying right after a checkpoint was written."""


@contextlib.contextmanager
def _after_checkpoint(count: int, then: Callable[[runs.RunDirectory, str], None]
                      ) -> Iterator[List[str]]:
    """Within the block, calls `then(run, path)` right after the count-th checkpoint is
    written (a complete one); yields the paths written."""
    real = runs.RunDirectory.save_checkpoint
    written: List[str] = []

    def save_then(self, *args, **kwargs):
        path = real(self, *args, **kwargs)
        written.append(path)
        if len(written) == count:
            then(self, path)
        return path

    runs.RunDirectory.save_checkpoint = save_then
    try:
        yield written
    finally:
        runs.RunDirectory.save_checkpoint = real


def kill_after_checkpoints(count: int) -> ContextManager[List[str]]:
    """Within the block, raises `Killed` right after the count-th checkpoint is written
    (a complete one, as after a SIGKILL at that moment); yields the paths written."""
    def die(run: runs.RunDirectory, path: str) -> None:
        raise Killed(path)
    return _after_checkpoint(count, die)


def copy_after_checkpoint(count: int, into: str) -> ContextManager[List[str]]:
    """Within the block, copies the run directory to `into` right after the count-th
    checkpoint is written: what a process SIGKILLed at that moment leaves on disk (no
    cleanup runs), while this run goes on uninterrupted. Yields the paths written."""
    def copy(run: runs.RunDirectory, path: str) -> None:
        shutil.copytree(run.path, into)
    return _after_checkpoint(count, copy)


# --------------------------------------------------------------------------- user models
@keras.saving.register_keras_serializable(package="rae_keras.testing")
class ResidualDown(keras.layers.Layer):
    """A user's custom block: a stride-2 conv plus a strided 1x1 shortcut."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")
        self.skip = keras.layers.Conv2D(filters, 1, strides=2, padding="same")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.skip.build(input_shape)

    def call(self, x):
        return self.conv(x) + self.skip(x)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def dense_stack() -> StagedAutoencoder:
    """Two stages of Dense layers on 12-vectors."""
    return StagedAutoencoder(
        encoders=[keras.layers.Dense(8, activation="relu", name="enc1"),
                  keras.layers.Dense(4, name="enc2")],
        decoders=[keras.layers.Dense(12, activation="sigmoid", name="dec1"),
                  keras.layers.Dense(8, activation="relu", name="dec2")],
        input_shape=(12,))


def residual_stack(size: int = 8) -> StagedAutoencoder:
    """Two stages of `ResidualDown` blocks, mirrored by transposed convolutions."""
    return StagedAutoencoder(
        encoders=[ResidualDown(4, name="res1"), ResidualDown(8, name="res2")],
        decoders=[keras.Sequential([keras.layers.Conv2DTranspose(1, 3, strides=2,
                                                                 padding="same"),
                                    keras.layers.Activation("sigmoid")], name="up1"),
                  keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up2")],
        input_shape=(size, size, 1))
