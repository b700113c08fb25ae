"""Rows memory and flat: peak RSS of one stacked epoch, whole process, cold cache.

  memory    peak RSS of one stacked epoch at --memory_sizes training images (0: all),
            each from a cold image cache (targets: <= 2 GB at the first; the last adds
            <= 0.5 GB).
  flat      the same on a synthetic folder of small PNGs written here (>= 100,000 by
            default, --flat_sizes), with a small network: memory must stay flat
            (largest / smallest <= 1.1).
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import time
import zlib
from typing import List, Tuple

import numpy as np

from .children import WholeRow, cold_train_process
from .inputs import synthetic_images
from .options import Options
from .report import TARGET_FLAT, TARGET_RSS_ADDED_MB, TARGET_RSS_MB, fmt, ratio, ratio_line

# The flat-memory rows' network: small, for small images.
FLAT_NETWORK = ("--filters=8,16", "--kernel_sizes=3", "--decoder_kernel_sizes=",
                "--normalization=none", "--crop=0", "--channels=3", "--dataset=folder",
                "--steps_per_execution=8")


def memory(opts: Options, workdir: str, cache_dir: str, notes: List[str]
           ) -> Tuple[List[WholeRow], List[str]]:
    """Peak RSS of one stacked epoch at each --memory_sizes (0: every training image),
    each from a cold cache (the process decodes and caches its images)."""
    del cache_dir, notes  # every run has its own cold cache
    rows = []
    for size in opts.memory_sizes:
        process = cold_train_process(opts, workdir, max_images=size)
        rows.append(WholeRow(f"m{len(rows) + 1}", f"peak RSS, one stacked epoch, "
                             f"{'all' if size == 0 else f'{size:,}'} images, cold cache",
                             process.train_images, process))
    lines = []
    if rows:
        low, high = rows[0].process.peak_rss_mb, rows[-1].process.peak_rss_mb
        lines.append(ratio_line(f"m1 peak RSS at {fmt(rows[0].images)} images (MB)", low,
                                TARGET_RSS_MB, False, digits=0))
        if len(rows) > 1:
            lines.append(ratio_line(
                f"m{len(rows)}-m1 peak RSS added by {fmt(rows[-1].images)} images (MB)",
                high - low, TARGET_RSS_ADDED_MB, False, digits=0))
    return rows, lines


def flat(opts: Options, workdir: str, cache_dir: str, notes: List[str]
         ) -> Tuple[List[WholeRow], List[str]]:
    """Peak RSS of one stacked epoch at each --flat_sizes on a synthetic folder of small
    PNGs generated here (enough for the largest size after the test identities are
    held out), each from a cold cache."""
    del cache_dir  # every run has its own cold cache
    test_fraction = opts.config.data.test_fraction
    total = math.ceil(max(opts.flat_sizes) / (1.0 - test_fraction)) + 10
    folder = os.path.join(workdir, "synthetic_pngs")
    started = time.perf_counter()
    write_synthetic_folder(folder, total, opts.flat_image_size)
    notes.append(f"flat rows: {total:,} synthetic {opts.flat_image_size}x"
                 f"{opts.flat_image_size} PNGs written in {time.perf_counter() - started:.1f} "
                 f"s (not timed); network {' '.join(FLAT_NETWORK[:2])}, batch "
                 f"{opts.config.train.batch_size}")
    rows = []
    for size in opts.flat_sizes:
        process = cold_train_process(opts, workdir, max_images=size, flags_=(
            *FLAT_NETWORK, f"--data_dir={folder}", f"--image_size={opts.flat_image_size}"))
        rows.append(WholeRow(f"f{len(rows) + 1}", f"peak RSS, one stacked epoch, {size:,} "
                             f"synthetic {opts.flat_image_size}px images, cold cache",
                             process.train_images, process))
    shutil.rmtree(folder, ignore_errors=True)
    if len(rows) < 2:
        return rows, []
    low, high = rows[0].process.peak_rss_mb, rows[-1].process.peak_rss_mb
    return rows, [ratio_line(
        f"f{len(rows)}/f1 peak RSS, {fmt(rows[-1].images)} / {fmt(rows[0].images)} "
        "images (flat: <= 1.1)", ratio(high, low), TARGET_FLAT, False)]


def _png(pixels: np.ndarray) -> bytes:
    """A minimal 8-bit RGB PNG of `pixels` (no filter)."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(
            ">I", zlib.crc32(body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def write_synthetic_folder(directory: str, count: int, size: int, seed: int = 0,
                           per_identity: int = 10) -> None:
    """`count` small PNGs (smooth random blobs, `synthetic_images`), `per_identity`
    files per identity (flat folder: identity_NNNN.png), written as fast as Python can."""
    os.makedirs(directory, exist_ok=True)
    chunk_size = 1024
    for start in range(0, count, chunk_size):
        n = min(chunk_size, count - start)
        images = (synthetic_images(n, size, 3, seed + start) * 255).astype(np.uint8)
        for i, pixels in enumerate(images):
            index = start + i
            name = f"s{index // per_identity:07d}_{index % per_identity + 1:04d}.png"
            with open(os.path.join(directory, name), "wb") as f:
                f.write(_png(pixels))
