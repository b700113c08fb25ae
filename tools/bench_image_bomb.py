#!/usr/bin/env python3
"""Peak memory and time of one decompression-bomb request to reconstruct_image_bytes.

    python tools/bench_image_bomb.py [--side 16000]

Exports a tiny model with `rae_keras.serving.export_model` (in a child process, so
that this one holds only what a server holds), loads it with `tf.saved_model.load`,
sends one small photo (warm-up), then one valid PNG declaring SIDE x SIDE gray pixels,
all black so the file stays small (243 KiB at 16000). Prints the peak RSS
(`ru_maxrss`) before and after the bomb request and the request's wall time.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def png_bomb(side: int) -> bytes:
    """A valid 8-bit gray PNG of side x side black pixels, compressed row by row so
    that making it never holds the image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    compressor = zlib.compressobj(9)
    row = bytes(side + 1)  # filter type 0, then the pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit gray
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def make_export(export_base: str) -> None:
    import keras
    from rae_keras import serving
    from rae_keras.models import ConvAutoencoder
    from rae_keras.config import DataConfig, ModelConfig, RunConfig

    keras.utils.set_random_seed(0)
    config = RunConfig(name="bomb", data=DataConfig(image_size=32, channels=1),
                       model=ModelConfig(filters=(4, 8)))
    autoencoder = ConvAutoencoder.from_model_config(config.model, (32, 32, 1))
    autoencoder.full_model()
    print(serving.export_model(autoencoder, export_base, config, tflite=False))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=16000)
    parser.add_argument("--make_export", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_export:
        make_export(args.make_export)
        return 0

    bomb = png_bomb(args.side)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = subprocess.run(
            [sys.executable, __file__, "--make_export", os.path.join(tmp, "m")],
            check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        import numpy as np
        import tensorflow as tf
        from PIL import Image

        import rae_keras
        fn = tf.saved_model.load(export_dir).signatures["reconstruct_image_bytes"]
        small = io.BytesIO()
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(small, format="PNG")
        fn(image_bytes=tf.constant([small.getvalue()]))  # warm-up
        before = peak_rss_mb()
        start = time.perf_counter()
        try:
            out = fn(image_bytes=tf.constant([bomb]))
            answer = {k: v.numpy().tolist() for k, v in out.items() if k in ("valid", "error")}
            answer = answer or "reconstructed"
        except tf.errors.OpError as e:
            answer = f"{type(e).__name__}: {e.message[:200]}"
        seconds = time.perf_counter() - start
    print(f"rae_keras {os.path.dirname(rae_keras.__file__)}")
    print(f"bomb: {args.side}x{args.side} gray PNG, {len(bomb) / 1024:.0f} KiB")
    print(f"answer: {answer}")
    print(f"peak RSS before the request {before:.0f} MiB, after {peak_rss_mb():.0f} MiB; "
          f"request {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
