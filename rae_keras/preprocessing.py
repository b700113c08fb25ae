"""Image preprocessing shared by the training pipeline and the serving graph.

Both paths must turn a photo into exactly the same tensor, so there is one
implementation, written in TensorFlow ops (it runs inside tf.data and inside the
exported SavedModel, where no Python is available).
"""

from __future__ import annotations

import tensorflow as tf

# Leading bytes of the formats whose size `header_size` can read; tf.io.decode_image
# tells formats apart by the same bytes.
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BMP_MAGIC = b"BM"


def decode_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG/PNG/BMP/GIF bytes -> uint8 [H, W, 3]; InvalidArgumentError on corrupt bytes.

    Always RGB because BMP and GIF decoders refuse channels=1 (`to_channels` converts).
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_image(image_bytes: tf.Tensor, channels: int) -> tf.Tensor:
    """JPEG/PNG/BMP/GIF bytes -> float32 [H, W, channels] in [0, 1]."""
    return to_channels(tf.image.convert_image_dtype(decode_pixels(image_bytes), tf.float32),
                       channels)


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


def center_crop(image: tf.Tensor, crop: int) -> tf.Tensor:
    """Central square of side `crop` pixels of [H, W, C] (0 or larger than the image:
    the largest central square); any dtype."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    if crop > 0:
        side = tf.minimum(side, crop)
    top = (height - side) // 2
    left = (width - side) // 2
    return image[top:top + side, left:left + side, :]


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Float [H, W, C] in [0, 1] -> antialiased float32 [image_size, image_size, C] in [0, 1]."""
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def center_crop_and_resize(image: tf.Tensor, crop: int, image_size: int) -> tf.Tensor:
    """`center_crop` then `resize`: float [H, W, C] in [0, 1] in, float32
    [image_size, image_size, C] out."""
    return resize(center_crop(tf.convert_to_tensor(image, tf.float32), crop), image_size)


def preprocess_bytes(image_bytes: tf.Tensor, crop: int, image_size: int,
                     channels: int) -> tf.Tensor:
    """Encoded photo -> model input: what training sees and what serving applies.

    Crops the uint8 image before converting it, so only the crop ever exists as float32
    (4 bytes a value): a large photo costs its decoded size once, not five times. The
    conversions are per pixel, so the order does not change the result.
    """
    pixels = center_crop(decode_pixels(image_bytes), crop)
    image = to_channels(tf.image.convert_image_dtype(pixels, tf.float32), channels)
    return resize(image, image_size)


def header_size(image_bytes: tf.Tensor) -> tf.Tensor:
    """int64 [height, width] that a JPEG, PNG or BMP header declares, read without
    decoding anything; [-1, -1] for any other format.

    What a decoder would allocate is known before it runs, so a small file declaring
    a huge image (a decompression bomb) can be refused at the cost of reading a few
    bytes. Raises InvalidArgumentError when the header itself is cut short.
    """
    def jpeg():
        return tf.io.extract_jpeg_shape(image_bytes, output_type=tf.int64)[:2]

    def png():  # IHDR: width and height, big-endian, at bytes 16..24
        width_height = tf.io.decode_raw(tf.strings.substr(image_bytes, 16, 8), tf.int32,
                                        little_endian=False, fixed_length=8)
        return tf.cast(tf.reverse(width_height, [0]), tf.int64)

    def bmp():  # BITMAPINFOHEADER: width and height, little-endian, at bytes 18..26;
        # a negative height means rows stored top-down
        width_height = tf.io.decode_raw(tf.strings.substr(image_bytes, 18, 8), tf.int32,
                                        little_endian=True, fixed_length=8)
        return tf.abs(tf.cast(tf.reverse(width_height, [0]), tf.int64))

    def other():
        return tf.constant([-1, -1], tf.int64)

    def starts_with(magic: bytes) -> tf.Tensor:
        return tf.equal(tf.strings.substr(image_bytes, 0, len(magic)), magic)

    known = tf.stack([starts_with(JPEG_MAGIC), starts_with(PNG_MAGIC),
                      starts_with(BMP_MAGIC), tf.constant(True)])
    branch = tf.argmax(tf.cast(known, tf.int32), output_type=tf.int32)  # the first match
    return tf.switch_case(branch, [jpeg, png, bmp, other])


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Float in [0, 1] -> uint8, rounded: how preprocessed images are kept on disk
    (a quarter of float32's bytes; the rounding error is at most 1/510)."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)


def from_uint8(image: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 in [0, 1], made per batch when training reads the cache."""
    return tf.cast(image, tf.float32) / 255.0
