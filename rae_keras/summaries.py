"""TensorBoard summaries: a loss curve per phase and image grids of reconstructions."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf


def image_grid(rows: Sequence[np.ndarray], pad: int = 1) -> np.ndarray:
    """Rows of [n, H, W, C] images in [0, 1] -> one [H', W', C] image (white gaps)."""
    rows = [np.clip(np.asarray(r, np.float32), 0.0, 1.0) for r in rows]
    n, h, w, c = rows[0].shape
    grid = np.ones((len(rows) * (h + pad) + pad, n * (w + pad) + pad, c), np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[top:top + h, left:left + w] = image
    return grid


class PhaseSummaries(keras.callbacks.Callback):
    """Writes, after every epoch of one phase: `loss/<phase>` and `val_loss/<phase>`
    (step = epoch within the phase), `reconstruction/<phase>` (originals above the
    phase's reconstructions) and, when `depth_models` is given, `depths/<phase>`
    (originals, then one row per depth). Image steps count epochs over the whole run,
    so TensorBoard's slider walks through training in order."""

    def __init__(self, writer: tf.summary.SummaryWriter, phase: str, images: np.ndarray,
                 image_model: keras.Model, depth_models: Sequence[keras.Model] = (),
                 global_epoch_offset: int = 0):
        super().__init__()
        self.writer = writer
        self.phase = phase
        self.images = np.asarray(images, np.float32)
        self.image_model = image_model
        self.depth_models = list(depth_models)
        self.global_epoch_offset = global_epoch_offset

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = logs or {}
        step = epoch + 1
        global_step = self.global_epoch_offset + step
        with self.writer.as_default():
            for key in ("loss", "val_loss"):
                if key in logs:
                    tf.summary.scalar(f"{key}/{self.phase}", logs[key], step=step)
            if len(self.images):
                reconstruction = self.image_model(self.images, training=False)
                tf.summary.image(f"reconstruction/{self.phase}",
                                 image_grid([self.images, reconstruction])[None],
                                 step=global_step)
                if self.depth_models:
                    rows = [self.images] + [m(self.images, training=False)
                                            for m in self.depth_models]
                    tf.summary.image(f"depths/{self.phase}", image_grid(rows)[None],
                                     step=global_step)
        self.writer.flush()
