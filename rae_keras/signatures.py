"""The serving signatures of an export, and what a request gets.

Signatures, every one with a dynamic batch dimension B (B = 0 included):

    serving_default          images float32 [B,S,S,C] in [0,1] -> reconstruction [B,S,S,C]
    encode                   images                             -> code [B,s,s,c]
    decode                   code                               -> reconstruction
    reconstruct_depth_K      images                             -> reconstruction (K = 1..N)
    reconstruct_image_bytes  image_bytes string [B] (JPEG/PNG/BMP, any size)
                             -> reconstruction_bytes string [B] (PNG), reconstruction,
                                valid bool [B], error string [B]

What a request gets:

- A tensor of another shape than declared (no batch axis, a rank-5 tensor, another
  image size) fails the request with InvalidArgumentError naming the expected shape,
  checked before any op runs, also when fed by tensor name as TF Serving does.
- NaN or infinite values are not refused: they give non-finite outputs for that image
  only, and the other images of the batch are unaffected (refusing them would let one
  client fail a whole batch that TF Serving's request batching assembled).
- A photo the bytes signature cannot use fails only itself, for the same reason: it
  gets valid=false, an empty reconstruction_bytes, a zero reconstruction and the reason
  in `error`; a batch of one such photo is answered the same way, not with an error.
  Refused are corrupt or truncated data, formats other than JPEG, PNG and BMP (GIF's
  frame count is unbounded), and photos whose header declares more than
  `max_image_pixels` pixels (4096*4096 unless set at export; in rae_config.json):
  those are refused from the header, before any decoding, so a small file declaring a
  huge image costs nothing.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import keras
import tensorflow as tf

from rae_keras.config import RunConfig
from rae_keras.models import StagedAutoencoder
from rae_keras.preprocessing import header_size, preprocess_bytes

SERVING_DEFAULT = "serving_default"
ENCODE = "encode"
DECODE = "decode"
RECONSTRUCT_IMAGE_BYTES = "reconstruct_image_bytes"
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def depth_signature(depth: int) -> str:
    return f"reconstruct_depth_{depth}"


def signature_names(num_stages: int, include_bytes: bool = True) -> List[str]:
    """Every SavedModel signature key, in the order they are registered."""
    names = [SERVING_DEFAULT, ENCODE, DECODE]
    names += [depth_signature(k) for k in range(1, num_stages + 1)]
    if include_bytes:
        names.append(RECONSTRUCT_IMAGE_BYTES)
    return names


def tflite_signature_names(num_stages: int) -> List[str]:
    """The signatures converted to TFLite: all but the bytes one."""
    return signature_names(num_stages, include_bytes=False)


# --------------------------------------------------------------------------- signatures
def to_png_pixels(images: tf.Tensor) -> tf.Tensor:
    """Float [.., H, W, C] in [0, 1] -> uint8, rounded to the nearest level."""
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def _checked(inputs: tf.Tensor) -> tf.Tensor:
    """`inputs` after a run-time check that the request matches the declared shape.

    The placeholder's declared shape is checked only by Python front ends; a C++ Session
    fed by tensor name (TF Serving) passes any shape on, and oneDNN's Conv2D aborts the
    process on a missing batch axis while a wrong spatial size is silently resampled.
    EnsureShape on the data path runs before every op that uses the input, and grappler
    keeps it (tests/test_serving_requests.py feeds such a Session); its
    InvalidArgumentError names the expected shape. The dtype needs no check: a Session
    refuses a feed of another dtype itself.
    """
    return tf.ensure_shape(inputs, inputs.shape)


def _any_batch(model: Callable, inputs: tf.Tensor) -> tf.Tensor:
    """model(inputs) for every batch size B, 0 included.

    oneDNN's Conv2D fails on an empty batch, so B=0 runs on one appended zero row that
    is sliced off again; other batches only pay for a copy of the input.
    """
    batch = tf.shape(inputs)[0]
    missing = tf.maximum(1 - batch, 0)
    padding = tf.zeros(tf.concat([[missing], tf.shape(inputs)[1:]], 0), inputs.dtype)
    padded = tf.ensure_shape(tf.concat([inputs, padding], 0), inputs.shape)
    return model(padded, training=False)[:batch]


# Why an image of the bytes signature got no reconstruction: its `error` output.
IMAGE_OK, IMAGE_UNSUPPORTED, IMAGE_TOO_LARGE, IMAGE_CORRUPT = range(4)
_IMAGE_ERRORS = ("", "not a JPEG, PNG or BMP image", "too large",
                 "corrupt or truncated image data")


def _preprocess_each(image_bytes: tf.Tensor, crop: int, size: int, channels: int,
                     max_pixels: int):
    """Every photo of a bytes batch preprocessed on its own: (images [B,S,S,C], zero
    for a bad photo; status [B], an IMAGE_* code; height_width [B, 2] from its header).

    A bad photo must not fail the batch: under TF Serving's request batching the batch
    holds other clients' requests too. A graph can catch a decoder's error only in
    tf.data's `ignore_errors`, which drops the element, so each photo travels with its
    index and one that never comes back is IMAGE_CORRUPT. Each header is read first, and
    a photo declaring more than `max_pixels` pixels, or in a format whose header is not
    read (GIF: any number of frames; WebP), is refused without being decoded.
    """
    def prepare(index, data):
        height_width = header_size(data)
        status = tf.where(height_width[0] < 0, IMAGE_UNSUPPORTED,
                          tf.where(height_width[0] * height_width[1] > max_pixels,
                                   IMAGE_TOO_LARGE, IMAGE_OK))
        image = tf.cond(tf.equal(status, IMAGE_OK),
                        lambda: preprocess_bytes(data, crop, size, channels),
                        lambda: tf.zeros([size, size, channels]))
        return index, status, height_width, image

    count = tf.shape(image_bytes)[0]
    kept = (tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
            .map(prepare).ignore_errors())
    nothing = (tf.zeros([0], tf.int32), tf.zeros([0], tf.int32), tf.zeros([0, 2], tf.int64),
               tf.zeros([0, size, size, channels]))
    one_batch = kept.batch(tf.cast(tf.maximum(count, 1), tf.int64))
    index, status, height_width, images = one_batch.reduce(
        nothing, lambda done, batch: tuple(tf.concat(pair, 0) for pair in zip(done, batch)))

    def place(values, default):
        return tf.tensor_scatter_nd_update(default, index[:, None], values)

    return (place(images, tf.zeros([count, size, size, channels])),
            place(status, tf.fill([count], IMAGE_CORRUPT)),
            place(height_width, tf.zeros([count, 2], tf.int64)))


def _image_errors(status: tf.Tensor, height_width: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """string [B]: "" for a good photo, else why it got no reconstruction."""
    size = tf.strings.as_string(height_width)
    too_large = tf.strings.join([
        "image of ", size[:, 1], "x", size[:, 0],
        f" pixels is larger than max_image_pixels={max_pixels}; not decoded"])
    return tf.where(tf.equal(status, IMAGE_TOO_LARGE), too_large,
                    tf.gather(_IMAGE_ERRORS, status))


def serving_functions(autoencoder: StagedAutoencoder, config: RunConfig, *,
                      max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
                      ) -> Dict[str, tuple]:
    """Signature name -> (fn, input_signature). Every fn returns a dict of named outputs.

    `max_image_pixels`: the bytes signature refuses photos whose header declares more.
    """
    if int(max_image_pixels) < 1:
        raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels}")
    max_image_pixels = int(max_image_pixels)
    crop = config.data.crop
    images_spec = tf.TensorSpec([None, *autoencoder.image_shape], tf.float32, name="images")
    code_spec = tf.TensorSpec([None, *autoencoder.code_shape], tf.float32, name="code")
    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    full = autoencoder.full_model()
    encoder = autoencoder.encoder()
    decoder = autoencoder.decoder()

    def serving_default(images):
        return {"reconstruction": _any_batch(full, _checked(images))}

    def encode(images):
        return {"code": _any_batch(encoder, _checked(images))}

    def decode(code):
        return {"reconstruction": _any_batch(decoder, _checked(code))}

    def depth_fn(depth: int) -> Callable:
        model = autoencoder.depth_model(depth)

        def reconstruct_depth(images):
            return {"reconstruction": _any_batch(model, _checked(images))}

        return reconstruct_depth

    def reconstruct_image_bytes(image_bytes):
        size, _, channels = autoencoder.image_shape
        images, status, height_width = _preprocess_each(
            _checked(image_bytes), crop, size, channels, max_image_pixels)
        valid = tf.equal(status, IMAGE_OK)
        reconstruction = tf.where(valid[:, None, None, None], _any_batch(full, images), 0.0)
        pngs = tf.map_fn(tf.io.encode_png, to_png_pixels(reconstruction),
                         fn_output_signature=tf.TensorSpec([], tf.string))
        return {"reconstruction_bytes": tf.where(valid, pngs, ""),
                "reconstruction": reconstruction,
                "valid": valid,
                "error": _image_errors(status, height_width, max_image_pixels)}

    functions = {
        SERVING_DEFAULT: (serving_default, [images_spec]),
        ENCODE: (encode, [images_spec]),
        DECODE: (decode, [code_spec]),
    }
    for k in range(1, autoencoder.num_stages + 1):
        functions[depth_signature(k)] = (depth_fn(k), [images_spec])
    if autoencoder.is_image_model:  # photos in, PNGs out; other inputs get floats only
        functions[RECONSTRUCT_IMAGE_BYTES] = (reconstruct_image_bytes, [bytes_spec])
    return functions


def build_export_archive(autoencoder: StagedAutoencoder, config: RunConfig, *,
                         max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
                         ) -> keras.export.ExportArchive:
    """An ExportArchive over the autoencoder's variables with every signature."""
    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoints capture every variable they use, and
    # tracking the Keras model as well stores each weight twice (once as the Keras
    # variable, once as the tf.Variable under it), doubling the SavedModel on disk.
    functions = serving_functions(autoencoder, config, max_image_pixels=max_image_pixels)
    for name, (fn, input_signature) in functions.items():
        archive.add_endpoint(name=name, fn=fn, input_signature=input_signature)
    return archive
