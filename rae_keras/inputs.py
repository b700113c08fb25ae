"""User data for `rae_keras.fit`: numpy arrays or tf.data, checked once, up front.

A mistake in the data (a missing batch axis, 0..255 pixels given as floats, labels
passed along with the images) would otherwise surface deep inside a training step or,
worse, train silently to a useless model. Every check here fails with one line that
names the problem.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

ValueRange = Optional[Tuple[float, float]]


class InputError(ValueError):
    """Data that cannot train or evaluate the model; the message names the problem."""


def as_array(x, sample_shape: Sequence[int], *, name: str = "x",
             value_range: ValueRange = (0.0, 1.0)) -> np.ndarray:
    """`x` (numpy array, array-like or tf.data.Dataset of inputs) as float32
    [n, *sample_shape]. uint8 is scaled by 1/255; other integer types are refused (their
    scale is unknown); floats must be finite and, unless `value_range` is None, inside it."""
    sample_shape = tuple(int(d) for d in sample_shape)
    if isinstance(x, tf.data.Dataset):
        array = _collect(x, sample_shape, name)
    else:
        try:
            array = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise InputError(f"{name} is not an array of samples: {e}") from None
    if array.ndim <= 1 and array.size == 0:  # [] or np.array([]): no samples at all
        raise InputError(f"{name} is empty: no samples to train on")
    if array.ndim == len(sample_shape) and array.shape == sample_shape:
        raise InputError(f"{name} is one sample of shape {sample_shape}; add the batch axis "
                         f"(x[None]) to pass a batch of one")
    if array.shape[1:] != sample_shape:
        raise InputError(f"{name} has samples of shape {array.shape[1:]} (array "
                         f"{array.shape}); the model takes {sample_shape}")
    if len(array) == 0:
        raise InputError(f"{name} is empty: no samples to train on")
    return _as_float(array, name, value_range)


def _as_float(array: np.ndarray, name: str, value_range: ValueRange) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(
            f"{name} has dtype {array.dtype}; give float32 values in [0, 1] or uint8 images "
            f"(0..255, scaled by 1/255)")
    array = np.asarray(array, np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{name} holds NaN or infinite values")
    if value_range is not None:
        low, high = float(array.min()), float(array.max())
        if low < value_range[0] or high > value_range[1]:
            hint = " (0..255 pixels? divide by 255 or pass uint8)" if high > 1.5 else ""
            raise InputError(f"{name} has values in [{low:g}, {high:g}], outside "
                             f"[{value_range[0]:g}, {value_range[1]:g}]{hint}")
    return array


def _collect(dataset: tf.data.Dataset, sample_shape: Tuple[int, ...], name: str) -> np.ndarray:
    """Every element of a dataset of inputs (batched or not) in one array.

    Training needs the whole set in a fixed order: exact resume replays the same
    shuffled batches, and recursive stages precompute each frozen prefix once.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tf.TensorSpec):
        raise InputError(f"{name} yields {spec}; give a dataset of input tensors only "
                         "(an autoencoder's target is its input: drop labels with "
                         ".map(lambda x, y: x))")
    rank = spec.shape.rank
    if rank is not None and rank == len(sample_shape):
        dataset = dataset.batch(1024)
    parts = [np.asarray(batch) for batch in dataset.as_numpy_iterator()]
    if not parts:
        return np.zeros((0, *sample_shape), spec.dtype.as_numpy_dtype)
    try:
        return np.concatenate(parts)
    except ValueError as e:
        raise InputError(f"{name} yields batches of different sample shapes: {e}") from None


def fingerprint(array: np.ndarray) -> str:
    """sha256 of the samples (shape, dtype and bytes): a run directory remembers what
    it was trained on, so running it again on other data is refused, not resumed."""
    digest = hashlib.sha256(f"{array.shape}|{array.dtype}|".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()
