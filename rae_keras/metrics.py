"""Reconstruction and sharpness metrics, and METRICS: the one table of them.

Each metric is one row of METRICS (name, function, column label, which direction is
better, number format): evaluation scores with the functions, the report and the tools
label, format and rank with the same rows, so adding a metric is adding a row.

Every function takes float images in [0, 1] shaped [N, H, W, C] (C = 1 or 3; numpy
arrays or TensorFlow tensors) and returns one value per image as a float64 numpy array
of shape [N]. Averaging over a data set is the caller's business (`evaluation`).

Fidelity, computed on every channel:
- `mse`: mean squared error per image.
- `psnr`: 10 log10(1 / MSE) in dB (peak 1.0); +inf for identical images.
- `ssim`: `tf.image.ssim(max_val=1)`, 11x11 Gaussian window (sigma 1.5), narrowed to
  the image side for images smaller than 11 pixels. Computed in numpy with the
  window's two 1-D factors (equal to TensorFlow's to float precision, and tested so).
- `ms_ssim`: `tf.image.ssim_multiscale(max_val=1)`, computed the same way. Its default
  five scales need images of at least 11 * 2**4 = 176 pixels, so the scales are fitted to the image:
  the window stays Wang et al.'s 11x11 (sigma 1.5, so the finest scale is exactly
  SSIM's), and as many of the paper's five scales are used as keep the coarsest
  scale at least 11 pixels wide, their power factors (0.0448, 0.2856, 0.3001, 0.2363,
  0.1333) truncated and renormalised to sum to 1 (`ms_ssim_settings`):
  16 px -> 1 scale (= SSIM), 32 -> 2, 64 -> 3, 128 -> 4, >= 176 -> all 5.
  Scores at different image sizes therefore use different scales; compare MS-SSIM
  only between models evaluated at the same size.

Sharpness, computed on the grayscale (luma, `tf.image.rgb_to_grayscale`'s weights)
image, where 1.0 means "as sharp as the original":
- `laplacian_variance_ratio`: var(L(reconstruction)) / var(L(original)), L the 3x3
  Laplacian [[0,1,0],[1,-4,1],[0,1,0]] with valid padding.
- `high_frequency_energy_ratio`: power-spectrum energy above half the Nyquist
  frequency (radius > 0.25 cycles/pixel) of the reconstruction over the original's.
  The spectrum is that of the mean-removed image under a separable Hann window (the
  window keeps the image's border discontinuity from leaking broadband energy into
  every frequency, which would hide blur); `radial_power_spectrum` uses the same.
- `detail_correlation`: Pearson correlation between L(original) and
  L(reconstruction). Artefacts (checkerboards, colour patches) push the two ratios
  above 1 without being detail; this one only rises with detail really recovered.

Degenerate cases: when the original has no Laplacian (or high-frequency) energy at
all, a ratio is 1.0 if the reconstruction has none either and NaN (undefined)
otherwise; `detail_correlation` is NaN for a flat original and 0.0 for a flat
reconstruction of a textured one (no detail recovered). Aggregate with `np.nanmean`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale's
HIGH_FREQUENCY_CUTOFF = 0.25  # cycles/pixel: half the Nyquist frequency
SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
MS_SSIM_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


# --------------------------------------------------------------------------- helpers
def _as_array(images, name: str = "images") -> np.ndarray:
    array = np.asarray(images.numpy() if hasattr(images, "numpy") else images, np.float64)
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must be [N, H, W, C] with C = 1 or 3, got shape "
                         f"{array.shape}")
    return array


def _pair(originals, reconstructions) -> Tuple[np.ndarray, np.ndarray]:
    a = _as_array(originals, "originals")
    b = _as_array(reconstructions, "reconstructions")
    if a.shape != b.shape:
        raise ValueError(f"originals {a.shape} and reconstructions {b.shape} differ in shape")
    return a, b


def grayscale(images) -> np.ndarray:
    """[N, H, W, C] -> [N, H, W] luma (`tf.image.rgb_to_grayscale`'s weights)."""
    images = _as_array(images)
    if images.shape[-1] == 1:
        return images[..., 0]
    return images @ np.asarray(LUMA_WEIGHTS, np.float64)


def laplacian(gray: np.ndarray) -> np.ndarray:
    """[N, H, W] -> [N, H-2, W-2]: the 3x3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]], valid."""
    return (gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:]
            - 4.0 * gray[:, 1:-1, 1:-1])


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator; 0/0 -> 1 (both flat), x/0 -> NaN (undefined)."""
    tiny = 1e-20
    flat = denominator <= tiny
    ratio = numerator / np.where(flat, 1.0, denominator)
    return np.where(flat, np.where(numerator <= tiny, 1.0, np.nan), ratio)


def power_spectrum(images) -> np.ndarray:
    """[N, H, W, C] -> [N, H, W] power |F|^2 of the mean-removed, Hann-windowed grayscale
    image, normalised by the window's energy (unshifted: index 0 is the DC term)."""
    gray = grayscale(images)
    _, h, w = gray.shape
    window = np.outer(np.hanning(h), np.hanning(w)) if min(h, w) > 2 else np.ones((h, w))
    gray = (gray - gray.mean(axis=(1, 2), keepdims=True)) * window
    return np.abs(np.fft.fft2(gray)) ** 2 / np.sum(window ** 2)


def _radius(h: int, w: int) -> np.ndarray:
    """Spatial frequency magnitude in cycles/pixel for an unshifted [h, w] FFT."""
    return np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])


# --------------------------------------------------------------------------- fidelity
def mse(originals, reconstructions) -> np.ndarray:
    a, b = _pair(originals, reconstructions)
    return np.mean((a - b) ** 2, axis=(1, 2, 3))


def psnr(originals, reconstructions) -> np.ndarray:
    """Peak signal-to-noise ratio in dB for a peak of 1.0; +inf for identical images."""
    errors = mse(originals, reconstructions)
    with np.errstate(divide="ignore"):
        return np.where(errors > 0, -10.0 * np.log10(np.where(errors > 0, errors, 1.0)),
                        np.inf)


def _filter_size(h: int, w: int) -> int:
    return min(SSIM_FILTER_SIZE, h, w)


def _gaussian(size: int) -> np.ndarray:
    """tf.image.ssim's window is the outer product of this normalised 1-D Gaussian."""
    coords = np.arange(size) - (size - 1) / 2.0
    window = np.exp(-0.5 * coords ** 2 / SSIM_FILTER_SIGMA ** 2)
    return window / window.sum()


def _blur(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """[N, H, W, C] filtered by window x window with 'VALID' padding, as two 1-D passes."""
    size = len(window)
    h, w = x.shape[1] - size + 1, x.shape[2] - size + 1
    rows = sum(window[t] * x[:, t:t + h] for t in range(size))
    return sum(window[t] * rows[:, :, t:t + w] for t in range(size))


def _ssim_and_cs(a: np.ndarray, b: np.ndarray, filter_size: int,
                 k1: float = 0.01, k2: float = 0.03) -> Tuple[np.ndarray, np.ndarray]:
    """[N, C] mean SSIM and contrast-structure term per image and channel: tf.image's
    formulas (max_val 1) with the separable window applied as 1-D filters, which gives
    its values to float precision and is ~50x faster on CPU than its depthwise 2-D
    convolution (evaluate spent nearly all its time there)."""
    window = _gaussian(filter_size)
    c1, c2 = k1 ** 2, k2 ** 2
    mean_a, mean_b = _blur(a, window), _blur(b, window)
    num0 = 2.0 * mean_a * mean_b
    den0 = mean_a ** 2 + mean_b ** 2
    luminance = (num0 + c1) / (den0 + c1)
    cs = (2.0 * _blur(a * b, window) - num0 + c2) / (_blur(a * a + b * b, window) - den0 + c2)
    return np.mean(luminance * cs, axis=(1, 2)), np.mean(cs, axis=(1, 2))


def ssim(originals, reconstructions) -> np.ndarray:
    a, b = _pair(originals, reconstructions)
    return _ssim_and_cs(a, b, _filter_size(*a.shape[1:3]))[0].mean(axis=-1)


def ms_ssim_settings(height: int, width: int) -> Tuple[int, Tuple[float, ...]]:
    """(filter_size, power_factors) for MS-SSIM on height x width images: the 11-pixel
    window (narrower only for images under 11 pixels) and as many of the standard
    five scales as keep the coarsest one at least a window wide, renormalised."""
    filter_size = _filter_size(height, width)
    side, scales = min(height, width), 1
    while scales < len(MS_SSIM_POWER_FACTORS) and side // 2 ** scales >= filter_size:
        scales += 1
    factors = np.asarray(MS_SSIM_POWER_FACTORS[:scales], np.float64)
    return filter_size, tuple(float(f) for f in factors / factors.sum())


def _downsample(x: np.ndarray) -> np.ndarray:
    """tf.image.ssim_multiscale's 2x2 average pooling (an odd side first repeats its
    last row or column: TensorFlow's SYMMETRIC padding)."""
    x = np.pad(x, [(0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)], mode="symmetric")
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim(originals, reconstructions) -> np.ndarray:
    """`tf.image.ssim_multiscale`'s definition with scales fitted to the image size
    (module doc): the product over scales of the contrast-structure terms, the coarsest
    scale's full SSIM, each to its power factor (negative terms clipped to 0)."""
    a, b = _pair(originals, reconstructions)
    filter_size, power_factors = ms_ssim_settings(*a.shape[1:3])
    terms = []
    for scale in range(len(power_factors)):
        if scale:
            a, b = _downsample(a), _downsample(b)
        value, cs = _ssim_and_cs(a, b, filter_size)
        terms.append(np.maximum(cs, 0.0))
    terms[-1] = np.maximum(value, 0.0)
    return np.prod([t ** f for t, f in zip(terms, power_factors)], axis=0).mean(axis=-1)


# --------------------------------------------------------------------------- sharpness
def laplacian_variance_ratio(originals, reconstructions) -> np.ndarray:
    """var(Laplacian of gray reconstruction) / var(Laplacian of gray original)."""
    a, b = _pair(originals, reconstructions)
    return _safe_ratio(np.var(laplacian(grayscale(b)), axis=(1, 2)),
                       np.var(laplacian(grayscale(a)), axis=(1, 2)))


def high_frequency_energy_ratio(originals, reconstructions) -> np.ndarray:
    """Spectral energy above 0.25 cycles/pixel, reconstruction over original."""
    a, b = _pair(originals, reconstructions)
    high = _radius(*a.shape[1:3]) > HIGH_FREQUENCY_CUTOFF
    return _safe_ratio(power_spectrum(b)[:, high].sum(axis=1),
                       power_spectrum(a)[:, high].sum(axis=1))


def detail_correlation(originals, reconstructions) -> np.ndarray:
    """Pearson correlation of the gray Laplacians of original and reconstruction."""
    a, b = _pair(originals, reconstructions)
    la = laplacian(grayscale(a)).reshape(len(a), -1)
    lb = laplacian(grayscale(b)).reshape(len(b), -1)
    la = la - la.mean(axis=1, keepdims=True)
    lb = lb - lb.mean(axis=1, keepdims=True)
    norm_a, norm_b = np.linalg.norm(la, axis=1), np.linalg.norm(lb, axis=1)
    tiny = 1e-12
    corr = np.sum(la * lb, axis=1) / np.maximum(norm_a * norm_b, tiny)
    corr = np.where(norm_b <= tiny, 0.0, corr)  # flat reconstruction: nothing recovered
    return np.where(norm_a <= tiny, np.nan, np.clip(corr, -1.0, 1.0))


# --------------------------------------------------------------------------- spectra
def radial_power_spectrum(images) -> Tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the gray images, averaged over the batch.

    Returns (frequencies, power): frequencies k / S in cycles/pixel for k = 1 .. S//2
    (S the smaller image side; the DC term is left out since the mean is removed) and
    the mean power of the frequencies whose radius rounds to each bin.
    """
    spectrum = power_spectrum(images).mean(axis=0)
    h, w = spectrum.shape
    side = min(h, w)
    bins = np.rint(_radius(h, w) * side).astype(int).ravel()
    keep = (bins >= 1) & (bins <= side // 2)
    totals = np.bincount(bins[keep], weights=spectrum.ravel()[keep], minlength=side // 2 + 1)
    counts = np.bincount(bins[keep], minlength=side // 2 + 1)
    k = np.arange(1, side // 2 + 1)
    return k / side, totals[k] / np.maximum(counts[k], 1)


# --------------------------------------------------------------------------- the table
LOWER, HIGHER, CLOSEST_TO_ONE = "lower", "higher", "closest_to_1"


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    function: Callable[..., np.ndarray]  # (originals, reconstructions) -> [N]
    label: str  # column header
    better: str  # LOWER | HIGHER | CLOSEST_TO_ONE
    fmt: str  # format spec of a displayed value
    description: str

    def shortfall(self, value: float) -> float:
        """How far `value` is from ideal in this metric's sense: smaller is better, so
        one comparison ranks every metric (ratios by their distance to 1)."""
        if self.better == HIGHER:
            return -value
        return abs(value - 1.0) if self.better == CLOSEST_TO_ONE else value


METRICS: Dict[str, Metric] = {m.name: m for m in (
    Metric("mse", mse, "MSE", LOWER, ".5f", "mean squared error per pixel"),
    Metric("psnr", psnr, "PSNR (dB)", HIGHER, ".2f", "peak signal-to-noise ratio, peak 1.0"),
    Metric("ssim", ssim, "SSIM", HIGHER, ".4f",
           "structural similarity, 11x11 Gaussian window"),
    Metric("ms_ssim", ms_ssim, "MS-SSIM", HIGHER, ".4f",
           "multi-scale SSIM over the scales that fit the image size"),
    Metric("laplacian_variance_ratio", laplacian_variance_ratio, "Laplacian var. ratio",
           CLOSEST_TO_ONE, ".3f", "variance of the grayscale Laplacian, reconstruction over "
           "original (1 = as sharp)"),
    Metric("high_frequency_energy_ratio", high_frequency_energy_ratio, "HF energy ratio",
           CLOSEST_TO_ONE, ".3f", f"spectral energy above {HIGH_FREQUENCY_CUTOFF} "
           f"cycles/pixel, reconstruction over original (1 = as sharp)"),
    Metric("detail_correlation", detail_correlation, "Detail corr.", HIGHER, ".3f",
           "Pearson correlation of the grayscale Laplacians of original and reconstruction"),
)}
METRIC_NAMES = tuple(METRICS)


def evaluate_images(originals, reconstructions,
                    names: Sequence[str] = METRIC_NAMES) -> Dict[str, np.ndarray]:
    """The metrics `names` (default all), per image: name -> float64 array [N]."""
    a, b = _pair(originals, reconstructions)
    return {name: METRICS[name].function(a, b) for name in names}
