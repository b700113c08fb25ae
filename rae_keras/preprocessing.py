"""Image preprocessing shared by the training pipeline and the serving graph.

Both paths must turn a photo into exactly the same tensor, so there is one
implementation, written in TensorFlow ops (it runs inside tf.data and inside the
exported SavedModel, where no Python is available).
"""

from __future__ import annotations

import tensorflow as tf


def decode_image(image_bytes: tf.Tensor, channels: int) -> tf.Tensor:
    """JPEG/PNG/BMP/GIF bytes -> float32 [H, W, channels] in [0, 1].

    Grayscale sources are replicated to RGB and RGB sources converted to gray as
    `channels` asks. Decodes to RGB first because BMP and GIF decoders refuse
    channels=1. Raises tf.errors.InvalidArgumentError on corrupt bytes.
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return to_channels(tf.image.convert_image_dtype(image, tf.float32), channels)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Float [H, W, 1 or 3] -> [H, W, channels] (gray replicated, RGB to luma)."""
    source = image.shape[-1]
    if source == channels:
        return image
    if source == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if source == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(f"cannot convert {source} channels to {channels}")


def center_crop_and_resize(image: tf.Tensor, crop: int, image_size: int) -> tf.Tensor:
    """Central square crop of side `crop` pixels (0 or larger than the image: the
    largest central square), then an antialiased resize to image_size x image_size.

    Float [H, W, C] in [0, 1] in, float32 [image_size, image_size, C] in [0, 1] out.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    if crop > 0:
        side = tf.minimum(side, crop)
    top = (height - side) // 2
    left = (width - side) // 2
    image = image[top:top + side, left:left + side, :]
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def preprocess_bytes(image_bytes: tf.Tensor, crop: int, image_size: int,
                     channels: int) -> tf.Tensor:
    """Encoded photo -> model input: what training sees and what serving applies."""
    return center_crop_and_resize(decode_image(image_bytes, channels), crop, image_size)
