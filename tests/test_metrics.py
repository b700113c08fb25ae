"""rae_keras.metrics: identity, blur, hand-made cases with known values, degenerate cases."""

import math

import numpy as np
import pytest
import tensorflow as tf

from rae_keras import metrics


def _faces(size=32, channels=1, n=4):
    """Real faces (scikit-image's bundled LFW subset) resized, in [0, 1]."""
    from skimage import data, transform

    faces = data.lfw_subset()[:n].astype(np.float32)
    faces = np.stack([transform.resize(f, (size, size), anti_aliasing=True) for f in faces])
    faces = faces[..., None]
    if channels == 3:  # a colour version with different channels
        faces = np.concatenate([faces, faces ** 1.5, np.sqrt(faces)], axis=-1)
    return faces.astype(np.float32)


def _box_blur(images):
    """3x3 mean filter (edge padding), per channel."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    return sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def _sinusoid(size, cycles, axis=1):
    """cos(2 pi cycles x / size) along one axis, [1, size, size, 1]."""
    t = np.arange(size)
    wave = np.cos(2 * np.pi * cycles * t / size)
    image = np.tile(wave[None, :], (size, 1)) if axis == 1 else np.tile(wave[:, None], (1, size))
    return image[None, :, :, None]


@pytest.mark.parametrize("size, channels", [(16, 1), (32, 1), (64, 3)])
def test_identity_is_perfect(size, channels):
    x = _faces(size, channels)
    values = metrics.evaluate_images(x, x)
    assert tuple(values) == metrics.METRIC_NAMES
    for v in values.values():
        assert v.shape == (len(x),) and v.dtype == np.float64
    np.testing.assert_array_equal(values["mse"], 0.0)
    assert np.all(np.isinf(values["psnr"])) and np.all(values["psnr"] > 0)
    for name in ("ssim", "ms_ssim", "laplacian_variance_ratio",
                 "high_frequency_energy_ratio", "detail_correlation"):
        np.testing.assert_allclose(values[name], 1.0, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("channels", [1, 3])
def test_blur_lowers_sharpness(channels):
    x = _faces(32, channels)
    blurred = _box_blur(x)
    values = metrics.evaluate_images(x, blurred)
    assert np.all(values["laplacian_variance_ratio"] < 0.5)
    assert np.all(values["high_frequency_energy_ratio"] < 0.5)
    assert np.all(values["detail_correlation"] < 0.95)
    assert np.all(values["ssim"] < 1.0) and np.all(np.isfinite(values["psnr"]))
    # More blur, less sharpness.
    twice = metrics.evaluate_images(x, _box_blur(blurred))
    for name in ("laplacian_variance_ratio", "high_frequency_energy_ratio"):
        assert np.all(twice[name] < values[name]), name


def test_mse_and_psnr_known_values():
    x = np.random.default_rng(0).uniform(0.0, 0.8, (3, 8, 8, 1))
    np.testing.assert_allclose(metrics.mse(x, x + 0.1), 0.01)
    np.testing.assert_allclose(metrics.psnr(x, x + 0.1), 20.0)
    np.testing.assert_allclose(metrics.psnr(x, x + 0.01), 40.0)


def test_ssim_and_ms_ssim_known_values_on_constant_images():
    """Flat images: the contrast-structure terms are 1, so SSIM is the luminance term
    (2ab + C1) / (a^2 + b^2 + C1), C1 = 0.01^2; MS-SSIM is it raised to the coarsest
    scale's power factor (32 px: two scales, 0.2856 / (0.0448 + 0.2856))."""
    a = np.full((2, 32, 32, 1), 0.5)
    b = np.full((2, 32, 32, 1), 0.4)
    luminance = (2 * 0.5 * 0.4 + 1e-4) / (0.25 + 0.16 + 1e-4)
    np.testing.assert_allclose(metrics.ssim(a, b), luminance, atol=2e-4)
    np.testing.assert_allclose(metrics.ms_ssim(a, b), luminance ** (0.2856 / 0.3304), atol=2e-4)


@pytest.mark.parametrize("size, scales", [(8, 1), (16, 1), (32, 2), (64, 3), (128, 4),
                                          (176, 5), (250, 5)])
def test_ms_ssim_scales_fit_the_image(size, scales):
    filter_size, factors = metrics.ms_ssim_settings(size, size)
    assert filter_size == min(11, size)
    assert len(factors) == scales and math.isclose(sum(factors), 1.0)
    assert size // 2 ** (scales - 1) >= filter_size  # the coarsest scale holds a window
    ratios = np.asarray(factors) / np.asarray(metrics.MS_SSIM_POWER_FACTORS[:scales])
    np.testing.assert_allclose(ratios, ratios[0])  # the paper's weights, renormalised


@pytest.mark.parametrize("size", [32, 64])
def test_ms_ssim_runs_at_small_sizes_and_ranks_noise(size):
    x = _faces(size, 3, n=2)
    noise = np.random.default_rng(1).normal(0, 1, x.shape)
    little = metrics.ms_ssim(x, np.clip(x + 0.02 * noise, 0, 1))
    much = metrics.ms_ssim(x, np.clip(x + 0.2 * noise, 0, 1))
    assert np.all((0 < much) & (much < little) & (little < 1))


def test_laplacian_of_a_point():
    gray = np.zeros((1, 5, 5))
    gray[0, 2, 2] = 1.0
    expected = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64)
    np.testing.assert_array_equal(metrics.laplacian(gray)[0], expected)
    image = gray[..., None]
    flat = np.zeros_like(image)
    # var of the 9 values above = (16 + 4) / 9; the ratio of a point at half height is 1/4.
    np.testing.assert_allclose(np.var(metrics.laplacian(gray)), 20 / 9)
    np.testing.assert_allclose(metrics.laplacian_variance_ratio(image, 0.5 * image), 0.25)
    np.testing.assert_allclose(metrics.laplacian_variance_ratio(image, flat), 0.0)


def test_affine_changes_have_known_ratios_and_correlation():
    x = _faces(32, 1).astype(np.float64)
    dimmer = 0.5 * x + 0.25  # half the contrast: a quarter of every energy
    np.testing.assert_allclose(metrics.laplacian_variance_ratio(x, dimmer), 0.25)
    np.testing.assert_allclose(metrics.high_frequency_energy_ratio(x, dimmer), 0.25)
    np.testing.assert_allclose(metrics.detail_correlation(x, dimmer), 1.0)
    np.testing.assert_allclose(metrics.detail_correlation(x, 1.0 - x), -1.0)


def test_high_frequency_energy_ratio_counts_only_frequencies_above_a_quarter():
    low = 0.25 * _sinusoid(64, 4)  # 4/64 = 0.0625 cycles/pixel
    high = 0.1 * _sinusoid(64, 24, axis=0)  # 24/64 = 0.375 cycles/pixel
    original = 0.5 + low + high
    assert metrics.high_frequency_energy_ratio(original, 0.5 + low)[0] < 1e-3
    np.testing.assert_allclose(
        metrics.high_frequency_energy_ratio(original, 0.5 + low + 0.5 * high), 0.25, atol=2e-3)
    np.testing.assert_allclose(
        metrics.high_frequency_energy_ratio(original, 0.5 + 2 * low + high), 1.0, atol=2e-3)


def test_radial_power_spectrum_peaks_at_the_sinusoid_frequency():
    image = 0.5 + 0.3 * _sinusoid(64, 8)
    frequencies, power = metrics.radial_power_spectrum(np.concatenate([image, image]))
    np.testing.assert_allclose(frequencies, np.arange(1, 33) / 64)
    assert frequencies[np.argmax(power)] == pytest.approx(8 / 64)
    assert power.shape == frequencies.shape and np.all(power >= 0)
    flat_f, flat_p = metrics.radial_power_spectrum(np.full((2, 16, 16, 3), 0.3))
    assert len(flat_f) == 8 and np.allclose(flat_p, 0.0)


def test_grayscale_matches_tensorflow():
    rgb = np.random.default_rng(2).random((2, 6, 6, 3)).astype(np.float32)
    expected = tf.image.rgb_to_grayscale(rgb).numpy()[..., 0]
    np.testing.assert_allclose(metrics.grayscale(rgb), expected, atol=1e-6)


def test_degenerate_flat_images():
    flat = np.full((1, 16, 16, 1), 0.5)
    textured = _faces(16, 1, n=1)
    both_flat = metrics.evaluate_images(flat, flat)
    assert both_flat["laplacian_variance_ratio"][0] == 1.0
    assert both_flat["high_frequency_energy_ratio"][0] == 1.0
    assert np.isnan(both_flat["detail_correlation"][0])
    assert np.isnan(metrics.laplacian_variance_ratio(flat, textured)[0])
    assert np.isnan(metrics.high_frequency_energy_ratio(flat, textured)[0])
    lost = metrics.evaluate_images(textured, flat)
    assert lost["detail_correlation"][0] == 0.0
    assert lost["laplacian_variance_ratio"][0] == 0.0
    assert lost["high_frequency_energy_ratio"][0] == 0.0


def test_accepts_tensors_and_rejects_bad_shapes():
    x = _faces(16, 1, n=2)
    from_tf = metrics.evaluate_images(tf.constant(x), tf.constant(x * 0.9))
    from_np = metrics.evaluate_images(x, x * 0.9)
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(from_tf[name], from_np[name], rtol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.mse(x, x[:1])
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        metrics.psnr(x[0], x[0])
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        metrics.ssim(np.zeros((1, 8, 8, 2)), np.zeros((1, 8, 8, 2)))


def test_the_metric_table_is_the_one_source():
    """Every metric is one row: evaluate_images computes exactly the rows, in order,
    and ranking uses the row's direction (ratios: closest to 1)."""
    assert metrics.METRIC_NAMES == tuple(metrics.METRICS)
    x = _faces(16, 1, n=2)
    assert tuple(metrics.evaluate_images(x, x * 0.9)) == metrics.METRIC_NAMES
    assert tuple(metrics.evaluate_images(x, x * 0.9, names=("ssim", "mse"))) == ("ssim", "mse")
    for name, row in metrics.METRICS.items():
        assert row.name == name and row.label and format(0.5, row.fmt)
        np.testing.assert_array_equal(row.function(x, x * 0.9),
                                      metrics.evaluate_images(x, x * 0.9)[name])
    shortfall = {name: row.shortfall for name, row in metrics.METRICS.items()}
    assert shortfall["mse"](0.1) < shortfall["mse"](0.2)
    assert shortfall["psnr"](30.0) < shortfall["psnr"](20.0)
    assert shortfall["laplacian_variance_ratio"](1.1) < shortfall["laplacian_variance_ratio"](0.8)


@pytest.mark.parametrize("shape", [(6, 64, 64, 3), (5, 25, 25, 1), (4, 37, 41, 3), (3, 9, 9, 1)])
def test_ssim_and_ms_ssim_equal_tensorflows(shape):
    """The numpy SSIM and MS-SSIM give tf.image's values (odd sides and narrow windows too)."""
    rng = np.random.default_rng(sum(shape))
    x = rng.random(shape).astype(np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(shape), 0, 1).astype(np.float32)
    filter_size, factors = metrics.ms_ssim_settings(*shape[1:3])
    expected_ssim = tf.image.ssim(x, y, 1.0, filter_size=filter_size, filter_sigma=1.5)
    np.testing.assert_allclose(metrics.ssim(x, y), expected_ssim, atol=1e-5)
    expected_ms = tf.image.ssim_multiscale(x, y, 1.0, power_factors=factors,
                                           filter_size=filter_size, filter_sigma=1.5)
    np.testing.assert_allclose(metrics.ms_ssim(x, y), expected_ms, atol=1e-5)
