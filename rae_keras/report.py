"""Tables and figures for `evaluate`: aggregation, a markdown table, PNG figures.

Nothing here reads flags or models; `evaluate` passes numbers and images in.

Which value is best (marked in bold, among the models at the same depth):
lowest MSE; highest PSNR, SSIM, MS-SSIM and detail correlation; for the two
sharpness ratios the one closest to 1.0 ("as sharp as the original": below 1 is
blur, above 1 is artefacts or noise the original does not have). Values are
compared as displayed, so equal-looking values are all marked.

Figures are drawn with Pillow (no matplotlib): rows of faces with labels, and a
line plot of radially averaged power spectra on a log scale.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rae_keras.metrics import METRIC_NAMES
from rae_keras.summaries import image_grid

LOWER, HIGHER, CLOSEST_TO_ONE = "lower", "higher", "closest_to_1"


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    label: str  # column header
    better: str  # LOWER | HIGHER | CLOSEST_TO_ONE
    fmt: str  # format spec of a displayed value
    description: str


METRICS: Dict[str, MetricInfo] = {
    "mse": MetricInfo("MSE", LOWER, ".5f", "mean squared error per pixel"),
    "psnr": MetricInfo("PSNR (dB)", HIGHER, ".2f", "peak signal-to-noise ratio, peak 1.0"),
    "ssim": MetricInfo("SSIM", HIGHER, ".4f", "structural similarity, 11x11 Gaussian window"),
    "ms_ssim": MetricInfo("MS-SSIM", HIGHER, ".4f",
                          "multi-scale SSIM over the scales that fit the image size"),
    "laplacian_variance_ratio": MetricInfo(
        "Laplacian var. ratio", CLOSEST_TO_ONE, ".3f",
        "variance of the grayscale Laplacian, reconstruction over original (1 = as sharp)"),
    "high_frequency_energy_ratio": MetricInfo(
        "HF energy ratio", CLOSEST_TO_ONE, ".3f",
        "spectral energy above 0.25 cycles/pixel, reconstruction over original "
        "(1 = as sharp)"),
    "detail_correlation": MetricInfo(
        "Detail corr.", HIGHER, ".3f",
        "Pearson correlation of the grayscale Laplacians of original and reconstruction"),
}
assert tuple(METRICS) == METRIC_NAMES

_ARROWS = {LOWER: "↓", HIGHER: "↑", CLOSEST_TO_ONE: "→1"}


# --------------------------------------------------------------------------- numbers
def summarize_images(values: Mapping[str, np.ndarray]) -> Dict[str, dict]:
    """Per-image values -> {metric: {"mean", "std", "n"}} over the images (NaNs, the
    undefined cases of `metrics`, left out; n counts the images that were used)."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        kept = v[~np.isnan(v)]
        if len(kept) == 0:
            out[name] = {"mean": math.nan, "std": math.nan, "n": 0}
            continue
        with np.errstate(invalid="ignore"):  # inf - inf in the std of an all-inf PSNR
            std = float(np.std(kept))
        out[name] = {"mean": float(np.mean(kept)), "std": std, "n": int(len(kept))}
    return out


def aggregate_models(means: Sequence[Mapping[str, float]]) -> Dict[str, dict]:
    """Several exports' mean values (e.g. one per seed) -> {metric: {"mean", "std", "n"}}:
    the mean over exports and the sample standard deviation (ddof=1; None for one)."""
    out = {}
    for name in means[0]:
        v = np.asarray([m[name] for m in means], np.float64)
        with np.errstate(invalid="ignore"):
            std = float(np.std(v, ddof=1)) if len(v) > 1 else None
        out[name] = {"mean": float(np.mean(v)), "std": std, "n": int(len(v))}
    return out


def format_value(metric: str, mean: float, std: Optional[float] = None) -> str:
    """A displayed value: `24.13`, or `24.13 ± 0.05` with a spread; inf/nan spelled out."""
    fmt = METRICS[metric].fmt

    def one(v: float) -> str:
        if v is None or math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = format(v, fmt)
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"

    return one(mean) if std is None else f"{one(mean)} ± {one(std)}"


def best_rows(metric: str, means: Sequence[float]) -> List[int]:
    """Indices of the best of `means` for `metric` as displayed (ties all win)."""
    shown = []
    for m in means:
        try:
            shown.append(float(format_value(metric, m)))
        except ValueError:
            shown.append(math.nan)
    better = METRICS[metric].better
    keys = [(-s if better == HIGHER else abs(s - 1.0) if better == CLOSEST_TO_ONE else s)
            for s in shown]
    finite = [k for k in keys if not math.isnan(k)]
    if not finite:
        return []
    best = min(finite)
    return [i for i, k in enumerate(keys) if k == best]


@dataclasses.dataclass(frozen=True)
class TableRow:
    model: str
    depth: str  # "full", "1", "2", ...
    values: Mapping[str, Tuple[float, Optional[float]]]  # metric -> (mean, std or None)
    exports: int = 1


def markdown_table(rows: Sequence[TableRow], metrics: Sequence[str] = METRIC_NAMES) -> str:
    """One markdown table; the best value of each column is bold among the rows of
    the same depth (the models compared at equal depth), when there are two or more."""
    show_n = any(r.exports > 1 for r in rows)
    header = ["Model", "Depth"] + (["n"] if show_n else [])
    header += [f"{METRICS[m].label} {_ARROWS[METRICS[m].better]}" for m in metrics]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 2 + ["--:"] * (len(header) - 2)) + "|"]
    cells = [[format_value(m, *r.values[m]) for m in metrics] for r in rows]
    by_depth: Dict[str, List[int]] = {}
    for i, r in enumerate(rows):
        by_depth.setdefault(r.depth, []).append(i)
    for indices in by_depth.values():
        if len(indices) < 2:
            continue
        for j, m in enumerate(metrics):
            for b in best_rows(m, [rows[i].values[m][0] for i in indices]):
                cells[indices[b]][j] = f"**{cells[indices[b]][j]}**"
    for r, c in zip(rows, cells):
        lines.append("| " + " | ".join([r.model, r.depth] + ([str(r.exports)] if show_n else [])
                                       + c) + " |")
    return "\n".join(lines)


def metric_legend(metrics: Sequence[str] = METRIC_NAMES) -> str:
    """Markdown bullets describing the columns."""
    words = {LOWER: "lower is better", HIGHER: "higher is better",
             CLOSEST_TO_ONE: "closest to 1 is best"}
    return "\n".join(f"- **{METRICS[m].label}**: {METRICS[m].description}; "
                     f"{words[METRICS[m].better]}." for m in metrics)


# --------------------------------------------------------------------------- drawing
def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> Tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Float [H, W, 1|3] in [0, 1] -> uint8 [H, W, 3]."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.round(image * 255.0).astype(np.uint8)


def labelled_rows(rows: Sequence[Tuple[str, np.ndarray]], *, title: str = "",
                  min_cell: int = 96) -> np.ndarray:
    """Rows of faces, a label left of each row: [(label, [n, H, W, C] in [0, 1]), ...]
    -> uint8 [H', W', 3]. Faces are enlarged (nearest neighbour, an integer factor) to
    at least `min_cell` pixels so that small images stay readable."""
    h = rows[0][1].shape[1]
    scale = max(1, math.ceil(min_cell / h))
    enlarged = [np.repeat(np.repeat(np.asarray(images, np.float32), scale, 1), scale, 2)
                for _, images in rows]
    grid = to_uint8_rgb(image_grid(enlarged, pad=3))
    font, title_font = _font(14), _font(16)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(_text_size(probe, label, font)[0] for label, _ in rows) + 16
    title_w, title_h = _text_size(probe, title, title_font) if title else (0, -14)
    title_h += 14
    canvas = Image.new("RGB", (max(label_w + grid.shape[1], title_w + 16),
                               title_h + grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (label_w, title_h))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((8, 6), title, fill="black", font=title_font)
    cell = h * scale + 3
    for i, (label, _) in enumerate(rows):
        _, th = _text_size(draw, label, font)
        y = title_h + 3 + i * cell + (h * scale - th) // 2
        draw.text((8, y), label, fill="black", font=font)
    return np.asarray(canvas)


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def _log_ticks(lo: float, hi: float) -> List[float]:
    """1-2-5 ticks (or decades, for wide ranges) between 10**lo and 10**hi."""
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    mantissas = (1,) if hi - lo > 4 else (1, 2, 5)
    ticks = [m * 10.0 ** d for d in decades for m in mantissas]
    ticks = [t for t in ticks if lo - 1e-9 <= math.log10(t) <= hi + 1e-9]
    if len(ticks) > 12:
        ticks = [t for t in ticks if math.isclose(math.log10(t), round(math.log10(t)))]
    return ticks


def _tick_label(v: float) -> str:
    if 0.01 <= v < 10000:
        return f"{v:g}"
    exponent = math.floor(math.log10(v) + 1e-9)
    mantissa = v / 10 ** exponent
    return (f"{mantissa:g}e{exponent}" if not math.isclose(mantissa, 1.0)
            else f"1e{exponent}")


class _LogAxes:
    """A panel with a linear x axis and a log10 y axis, drawn on a Pillow image."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: Tuple[int, int, int, int],
                 xlim: Tuple[float, float], ylim_log: Tuple[float, float]):
        self.draw, self.box, self.xlim, self.ylim = draw, box, xlim, ylim_log
        self.font = _font(13)

    def point(self, x: float, y: float) -> Tuple[float, float]:
        x0, y0, x1, y1 = self.box
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (math.log10(y) - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    def frame(self, title: str, xlabel: str, ylabel: str, xticks: Sequence[float]) -> None:
        d, (x0, y0, x1, y1) = self.draw, self.box
        for t in _log_ticks(*self.ylim):
            _, y = self.point(self.xlim[0], t)
            d.line([(x0, y), (x1, y)], fill="#e6e6e6")
            label = _tick_label(t)
            w, h = _text_size(d, label, self.font)
            d.text((x0 - w - 6, y - h / 2 - 2), label, fill="black", font=self.font)
        for t in xticks:
            x, _ = self.point(t, 10 ** self.ylim[0])
            d.line([(x, y0), (x, y1)], fill="#e6e6e6")
            label = f"{t:g}"
            w, _ = _text_size(d, label, self.font)
            d.text((x - w / 2, y1 + 6), label, fill="black", font=self.font)
        d.rectangle([x0, y0, x1, y1], outline="black")
        w, _ = _text_size(d, title, _font(15))
        d.text(((x0 + x1 - w) / 2, y0 - 26), title, fill="black", font=_font(15))
        w, _ = _text_size(d, xlabel, self.font)
        d.text(((x0 + x1 - w) / 2, y1 + 26), xlabel, fill="black", font=self.font)
        d.text((x0 - 62, y0 - 26), ylabel, fill="black", font=self.font)

    def vline(self, x: float, color: str = "#555555", label: str = "") -> None:
        px, _ = self.point(x, 10 ** self.ylim[0])
        y0, y1 = self.box[1], self.box[3]
        y = y0
        while y < y1:  # dashed
            self.draw.line([(px, y), (px, min(y + 6, y1))], fill=color, width=1)
            y += 11
        if label:
            self.draw.text((px + 4, y0 + 4), label, fill=color, font=self.font)

    def hline(self, y: float, color: str = "#555555") -> None:
        _, py = self.point(self.xlim[0], y)
        self.draw.line([(self.box[0], py), (self.box[2], py)], fill=color, width=1)

    def plot(self, xs: Sequence[float], ys: Sequence[float], color: str,
             width: int = 2) -> None:
        points = [self.point(x, y) for x, y in zip(xs, ys) if y > 0 and math.isfinite(y)]
        if len(points) > 1:
            self.draw.line(points, fill=color, width=width, joint="curve")

    def legend(self, entries: Sequence[Tuple[str, str]]) -> None:
        x0, y0, x1, _ = self.box
        w = max(_text_size(self.draw, label, self.font)[0] for label, _ in entries) + 44
        left, top = x1 - w - 8, y0 + 8
        self.draw.rectangle([left, top, x1 - 8, top + 20 * len(entries) + 6],
                            fill="white", outline="#999999")
        for i, (label, color) in enumerate(entries):
            y = top + 13 + 20 * i
            self.draw.line([(left + 6, y), (left + 30, y)], fill=color, width=3)
            self.draw.text((left + 36, y - 9), label, fill="black", font=self.font)


def _log_limits(curves: Sequence[np.ndarray], pad: float = 0.05,
                include: Sequence[float] = ()) -> Tuple[float, float]:
    values = np.concatenate([np.asarray(c, np.float64).ravel() for c in curves]
                            + [np.asarray(include, np.float64)])
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) == 0:
        return -1.0, 1.0
    lo, hi = math.log10(values.min()), math.log10(values.max())
    span = max(hi - lo, 0.3)
    return lo - pad * span, hi + pad * span


def power_spectrum_plot(frequencies: np.ndarray, originals: np.ndarray,
                        models: Sequence[Tuple[str, np.ndarray]], *,
                        reference: Optional[Sequence[np.ndarray]] = None,
                        cutoff: float = 0.25) -> np.ndarray:
    """Two panels as uint8 [H, W, 3]: the radially averaged power spectra of the originals
    and of each model (log y), and each model's spectrum over the originals' (log y;
    1 = all the original's energy at that frequency, below 1 = blur). `reference[i]`
    is model i's own originals' spectrum when the models saw different images."""
    frequencies = np.asarray(frequencies, np.float64)
    reference = list(reference) if reference is not None else [originals] * len(models)
    ratios = [np.asarray(p, np.float64) / np.maximum(np.asarray(r, np.float64), 1e-30)
              for (_, p), r in zip(models, reference)]
    width, height = 1240, 500
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    xlim = (0.0, 0.5)
    xticks = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(models))]

    left = _LogAxes(draw, (80, 50, 590, height - 70), xlim,
                    _log_limits([originals] + [p for _, p in models]))
    left.frame("Radially averaged power spectrum", "spatial frequency (cycles/pixel)",
               "power", xticks)
    left.vline(cutoff, label="HF cutoff")
    left.plot(frequencies, originals, "black", width=3)
    for (_, p), c in zip(models, colors):
        left.plot(frequencies, p, c)
    left.legend([("originals", "black")] + [(label, c) for (label, _), c in zip(models, colors)])

    right = _LogAxes(draw, (710, 50, width - 30, height - 70), xlim,
                     _log_limits(ratios, include=(1.0,)))
    right.frame("Power relative to the originals", "spatial frequency (cycles/pixel)",
                "model / originals", xticks)
    right.vline(cutoff)
    right.hline(1.0, color="black")
    for r, c in zip(ratios, colors):
        right.plot(frequencies, r, c)
    return np.asarray(image)


def save_png(path: str, image: np.ndarray) -> str:
    """A uint8 [H, W, 3] (or float [H, W, C] in [0, 1]) image -> PNG file."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8_rgb(image)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path


# --------------------------------------------------------------------------- report.md
FULL = "full"


def depth_keys(num_stages: int) -> List[str]:
    """"full" (serving_default), then "depth_1" .. "depth_N"."""
    return [FULL] + [f"depth_{k}" for k in range(1, num_stages + 1)]


def _depth_label(key: str) -> str:
    return key if key == FULL else key.split("_")[1]


def table_rows(summary: Mapping) -> List[TableRow]:
    """Report rows: every group at "full", then at depth 1, 2, ... (models side by side
    at each depth, so the best of each column is marked among equals)."""
    max_depth = max(g["num_stages"] for g in summary["groups"])
    rows = []
    for key in depth_keys(max_depth):
        for g in summary["groups"]:
            if key not in g["results"]:
                continue
            rows.append(TableRow(
                model=g["label"], depth=_depth_label(key), exports=g["n"],
                values={m: (v["mean"], v["std"]) for m, v in g["results"][key].items()}))
    return rows


def render_report(summary: Mapping) -> str:
    groups, models = summary["groups"], summary["models"]
    seeds = any(g["n"] > 1 for g in groups)
    sets = sorted({m["evaluation_set"] for m in models})
    data = models[0]["data"]
    source = data["dataset"] + (f" ({data['data_dir']})" if data.get("data_dir") else "")
    lines = [
        "# Evaluation", "",
        f"Exported SavedModels evaluated through their serving signatures on {source}, "
        f"{data['image_size']}x{data['image_size']}x{data['channels']}"
        + (f", central {data['crop']}-pixel crop" if data.get("crop") else "")
        + f"; images: {'; '.join(sets)}.",
        "",
        "Each value is the mean over the evaluation images"
        + ("; where n > 1 the row groups n exports (seeds) and shows the mean ± sample "
           "standard deviation of their means." if seeds else ".")
        + " Depth *full* is the `serving_default` signature, depth k is "
          "`reconstruct_depth_k` (encoder and decoder stages 1..k; depth N is the full "
          "model). Best value per column among the models at the same depth in **bold**.",
        "",
        markdown_table_from(summary),
        "",
        metric_legend(),
        "",
        "## Models", "",
        "| Model | Export | Scheme | Stages | Images | Identities |",
        "|---|---|---|--:|--:|--:|",
    ]
    for m in models:
        lines.append(f"| {m['group']} | `{m['version_dir']}` | {m['scheme']} | "
                     f"{m['num_stages']} | {m['num_images']} | {m['num_identities']} |")
    ms = summary["ms_ssim"]
    lines += ["", f"MS-SSIM: filter size {ms['filter_size']}, "
              f"{len(ms['power_factors'])} scale(s), power factors "
              + ", ".join(f"{p:.4f}" for p in ms["power_factors"]) + ".", "",
              "## Figures", ""]
    figures = summary["figures"]
    lines += ["Originals, then each model's reconstruction (the first export of a group):", "",
              f"![reconstructions]({figures['reconstructions']})", ""]
    if summary.get("figure_note"):
        lines += [summary["figure_note"], ""]
    lines += ["Reconstructions at every depth:", ""]
    lines += [f"![{name}]({path})" for name, path in figures.items() if name.startswith("depths_")]
    lines += ["", "Radially averaged power spectra of the grayscale images (Hann window, log "
              "scale); right, each model over the originals: below 1 is lost detail (blur), "
              "the dashed line is the high-frequency cutoff of the HF energy ratio:", "",
              f"![power spectrum]({figures['power_spectrum']})", ""]
    return "\n".join(lines)


def markdown_table_from(summary: Mapping) -> str:
    return markdown_table(table_rows(summary))
