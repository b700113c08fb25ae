"""TensorBoard summaries: a loss curve per phase and image grids of reconstructions.

Every summary's step is the epoch over the whole run (stage_2's first epoch after 40
epochs of stage_1 is step 41), so scalars and images line up and TensorBoard's step
axis and image slider walk through training in order; tags are per phase.

TensorBoard names a run after the directory holding its event files, relative to
`--logdir`: events written straight into `--logdir` show as the run ".".
`summary_writer` writes a run's events to `MODEL_DIR/logs/<run name>/`, so that
`tensorboard --logdir MODEL_DIR/logs` shows the run by its name (and `--logdir runs`
every run under runs/, as `<run name>/logs/<run name>`).
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

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


def run_name(model_dir: str) -> str:
    """The name TensorBoard shows for a run directory: its base name."""
    return os.path.basename(os.path.normpath(os.path.abspath(model_dir))) or "run"


def summary_writer(logs_dir: str, name: str) -> tf.summary.SummaryWriter:
    """The writer of one run's events: `logs_dir/name/`, so TensorBoard names the run."""
    return tf.summary.create_file_writer(os.path.join(logs_dir, name))


class PhaseSummaries(keras.callbacks.Callback):
    """Writes, at step = the epoch over the whole run (`global_epoch_offset` epochs
    before this phase, plus the epoch within it): after every epoch of one phase
    `loss/<phase>` and `val_loss/<phase>`; after its last epoch (`last_epoch`, 0-based;
    None: every epoch) the image grids `reconstruction/<phase>` (originals above the
    phase's reconstructions) and, when `depth_models` is given, `depths/<phase>`
    (originals, then one row per depth). Grids once per phase keep a recursive
    schedule's epochs (one per stage) as cheap as a stacked one's."""

    def __init__(self, writer: tf.summary.SummaryWriter, phase: str, images: np.ndarray,
                 image_model: keras.Model, depth_models: Sequence[keras.Model] = (),
                 global_epoch_offset: int = 0, last_epoch: Optional[int] = None):
        super().__init__()
        self.writer = writer
        self.phase = phase
        self.images = np.asarray(images, np.float32)
        self.global_epoch_offset = global_epoch_offset
        self.last_epoch = last_epoch
        self.show_depths = bool(depth_models)
        self._models = [image_model] + list(depth_models)

    def _render(self, images: np.ndarray) -> list:
        """Every row's images. Eager: a grid drawn once per phase is cheaper than
        tracing a function for it."""
        return [m(images, training=False) for m in self._models]

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = logs or {}
        step = self.global_epoch_offset + epoch + 1
        with self.writer.as_default():
            for key in ("loss", "val_loss"):
                if key in logs:
                    tf.summary.scalar(f"{key}/{self.phase}", logs[key], step=step)
            if len(self.images) and self.last_epoch in (None, epoch):
                reconstruction, *depths = [keras.ops.convert_to_numpy(r)
                                           for r in self._render(self.images)]
                tf.summary.image(f"reconstruction/{self.phase}",
                                 image_grid([self.images, reconstruction])[None], step=step)
                if self.show_depths:
                    tf.summary.image(f"depths/{self.phase}",
                                     image_grid([self.images] + depths)[None], step=step)
        self.writer.flush()
