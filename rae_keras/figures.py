"""The evaluation's figures, drawn with matplotlib's Agg backend (no display needed).

- reconstructions.png: the originals, then each group's full-model reconstruction.
- depths_<group>.png: the originals, then the group's reconstruction at every depth.
- power_spectrum.png: radially averaged power spectra (log scale), and each model's
  spectrum over the originals' (below 1 is lost detail).

Faces are placed pixel for pixel, enlarged by an integer factor (nearest neighbour), so
a figure shows exactly what the model returned; labels and curves are antialiased. The
same images, with the report's text, also go to TensorBoard (`write_tensorboard`).
Figures use matplotlib's object API (Figure + FigureCanvasAgg), never pyplot's global
state, so drawing changes no backend setting of the caller's.
"""

from __future__ import annotations

import math
import os
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.textpath import TextPath
from PIL import Image

from rae_keras.evaluation import FULL, Evaluation
from rae_keras.metrics import HIGH_FREQUENCY_CUTOFF
from rae_keras.summaries import image_grid

DPI = 100
LABEL_POINTS, TITLE_POINTS = 11, 13
_PAD = 3  # white pixels between faces


def _figure(width: int, height: int) -> Figure:
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")


def _pixels(figure: Figure) -> np.ndarray:
    """The figure rendered: uint8 [H, W, 3]."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _text_width(text: str, points: float) -> int:
    """Pixels `text` takes in matplotlib's default font."""
    return math.ceil(TextPath((0, 0), text, size=points).get_extents().width * DPI / 72)


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Float [H, W, 1|3] in [0, 1] -> uint8 [H, W, 3]."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.round(image * 255.0).astype(np.uint8)


def face_rows(rows: Sequence[Tuple[str, np.ndarray]], *, title: str = "",
              min_cell: int = 96) -> np.ndarray:
    """Rows of faces, a label left of each: [(label, [n, H, W, C] in [0, 1]), ...] ->
    uint8 [H', W', 3]. Faces are enlarged to at least `min_cell` pixels so that small
    images stay readable."""
    side = rows[0][1].shape[1]
    scale = max(1, math.ceil(min_cell / side))
    grid = to_uint8_rgb(image_grid(
        [np.repeat(np.repeat(np.asarray(faces, np.float32), scale, 1), scale, 2)
         for _, faces in rows], pad=_PAD))
    label_width = max(_text_width(label, LABEL_POINTS) for label, _ in rows) + 16
    title_height = math.ceil(TITLE_POINTS * DPI / 72 * 1.8) if title else 0
    width = max(label_width + grid.shape[1], _text_width(title, TITLE_POINTS) + 16)
    height = title_height + grid.shape[0]
    figure = _figure(width, height)
    figure.figimage(grid, xo=label_width, yo=0, origin="upper")  # pixels, not resampled
    if title:
        figure.text(8 / width, 1 - 6 / height, title, fontsize=TITLE_POINTS, va="top")
    cell = side * scale
    for i, (label, _) in enumerate(rows):
        middle = title_height + _PAD + i * (cell + _PAD) + cell / 2
        figure.text(8 / width, 1 - middle / height, label, fontsize=LABEL_POINTS, va="center")
    return _pixels(figure)


def _positive(values) -> np.ndarray:
    """Values for a log axis: non-positive and non-finite ones left out (NaN)."""
    values = np.asarray(values, np.float64)
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


def _spectrum_axes(axes, frequencies: np.ndarray, title: str, ylabel: str, cutoff: float,
                   curves: Sequence[tuple]) -> None:
    """One log-scale panel of (label, values, color, line width) curves."""
    for label, values, color, width in curves:
        axes.plot(frequencies, _positive(values), color=color, linewidth=width,
                  label=label)
    axes.set_yscale("log")
    if not any(np.isfinite(_positive(v)).any() for _, v, _, _ in curves):
        axes.set_ylim(0.1, 10.0)  # nothing positive to draw: still a readable frame
    axes.set(title=title, xlabel="spatial frequency (cycles/pixel)", ylabel=ylabel,
             xlim=(0.0, 0.5))
    axes.axvline(cutoff, color="0.35", linestyle="--", linewidth=1)
    axes.grid(True, which="major", color="0.9")


def power_spectrum_plot(frequencies: np.ndarray, originals: np.ndarray,
                        models: Sequence[Tuple[str, np.ndarray]], *,
                        reference: Optional[Sequence[np.ndarray]] = None,
                        cutoff: float = HIGH_FREQUENCY_CUTOFF) -> np.ndarray:
    """Two panels as uint8 [H, W, 3]: the power spectra of the originals and of each
    model, and each model's over the originals' (1 = all of the original's energy at
    that frequency). `reference[i]` is model i's own originals' spectrum when the
    models saw different images."""
    reference = list(reference) if reference is not None else [originals] * len(models)
    colors = [f"C{i % 10}" for i in range(len(models))]
    figure = _figure(1240, 500)
    left, right = figure.subplots(1, 2)
    frequencies = np.asarray(frequencies, np.float64)
    _spectrum_axes(left, frequencies, "Radially averaged power spectrum", "power", cutoff,
                   [("originals", originals, "black", 2.4)]
                   + [(label, p, c, 1.6) for (label, p), c in zip(models, colors)])
    left.text(cutoff, 0.98, " HF cutoff", transform=left.get_xaxis_transform(), va="top",
              color="0.35")
    left.legend(loc="upper right")
    ratios = [np.asarray(p, np.float64) / np.maximum(np.asarray(r, np.float64), 1e-30)
              for (_, p), r in zip(models, reference)]
    _spectrum_axes(right, frequencies, "Power relative to the originals", "model / originals", cutoff,
                   [(label, r, c, 1.6) for (label, _), r, c in zip(models, ratios, colors)])
    right.axhline(1.0, color="black", linewidth=1)
    figure.tight_layout()
    return _pixels(figure)


def tradeoff_plot(points: Mapping[str, Tuple[float, float, float, float]], *,
                  xlabel: str, ylabel: str, title: str) -> np.ndarray:
    """One labelled point per group with its spread as error bars, (x, x_err, y, y_err),
    as uint8 [H, W, 3]: e.g. full-depth PSNR against the worst depth's deficit."""
    figure = _figure(760, 520)
    axes = figure.subplots()
    for i, (label, (x, x_err, y, y_err)) in enumerate(points.items()):
        color = f"C{i % 10}"
        axes.errorbar([x], [y], xerr=[x_err], yerr=[y_err], fmt="o", color=color, capsize=3)
        axes.annotate(label, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=9,
                      color=color)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(True, color="0.9")
    figure.tight_layout()
    return _pixels(figure)


def _safe_filename(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def draw(evaluation: Evaluation) -> Dict[str, np.ndarray]:
    """Every figure of an evaluation: name -> uint8 [H, W, 3]. A group's faces are its
    first export's; its spectra are the mean over its exports."""
    groups, faces = evaluation.groups(), evaluation.faces
    images = {"reconstructions": face_rows(
        [("originals", faces)] + [(label, members[0].figures[FULL])
                                  for label, members in groups.items()],
        title="Originals and reconstructions (full model)")}
    for label, members in groups.items():
        n = members[0].export.num_stages
        images[f"depths_{_safe_filename(label)}"] = face_rows(
            [("originals", faces)] + [(f"depth {k}" + (" (full)" if k == n else ""),
                                       members[0].figures[f"depth_{k}"])
                                      for k in range(1, n + 1)],
            title=f"{label}: reconstruction at each depth")
    first = evaluation.scored[0].scores
    images["power_spectrum"] = power_spectrum_plot(
        first.frequencies, first.originals_spectrum,
        [(label, np.mean([s.scores.full_spectrum for s in members], axis=0))
         for label, members in groups.items()],
        reference=[np.mean([s.scores.originals_spectrum for s in members], axis=0)
                   for members in groups.values()])
    return images


def save_png(path: str, image: np.ndarray) -> str:
    """A uint8 [H, W, 3] (or float [H, W, C] in [0, 1]) image -> PNG file."""
    image = np.asarray(image)
    Image.fromarray(image if image.dtype == np.uint8 else to_uint8_rgb(image)).save(path, "PNG")
    return path


def write(output_dir: str, images: Mapping[str, np.ndarray]) -> Dict[str, str]:
    """Each figure as output_dir/<name>.png; returns name -> file name (for the report)."""
    os.makedirs(output_dir, exist_ok=True)
    return {name: os.path.basename(save_png(os.path.join(output_dir, f"{name}.png"), image))
            for name, image in images.items()}


def write_tensorboard(log_dir: str, images: Mapping[str, np.ndarray], markdown: str) -> None:
    """The figures and the report as TensorBoard summaries (`evaluate/<name>`)."""
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for name, image in images.items():
            tf.summary.image(f"evaluate/{name}", np.asarray(image)[None], step=0)
        tf.summary.text("evaluate/report", markdown, step=0)
    writer.flush()
    writer.close()
