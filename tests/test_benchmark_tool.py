"""tools/benchmark.py end to end on a tiny network and a tiny JPEG folder."""

import importlib.util
import os
import sys

import numpy as np
import tensorflow as tf
from absl.testing import flagsaver

# The package's flags are defined once, outside the flagsavers (a flag defined inside one
# is gone when it restores); the tool's own are defined again by each _load_tool().
from rae_keras import flags as _package_flags  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "benchmark_tool", os.path.join(ROOT, "tools", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _jpeg_folder(path, people=6, per_person=8, size=24):
    rng = np.random.default_rng(0)
    for p in range(people):
        person = path / f"Person_{p}"
        person.mkdir(parents=True)
        for i in range(per_person):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            (person / f"Person_{p}_{i + 1:04d}.jpg").write_bytes(
                tf.io.encode_jpeg(pixels).numpy())
    return path


@flagsaver.flagsaver
def test_benchmark_prints_every_row_and_target(tmp_path):
    tool = _load_tool()
    folder = _jpeg_folder(tmp_path / "faces")
    lines = []
    result = tool.main([
        "--config=", f"--data_dir={folder}", "--max_images=32", "--test_fraction=0.2",
        "--crop=0", "--image_size=16", "--channels=1", "--filters=4,8", "--kernel_sizes=3",
        "--decoder_kernel_sizes=", "--batch_size=8", "--epochs=2", "--summary_images=2",
        "--pipeline_seconds=0.1"], out=lines.append)
    text = "\n".join(lines)
    assert "| row | what |" in text
    assert set(result["rows"]) == {"a", "b", "c", "d1", "d2"}
    for row in result["rows"].values():
        assert row.wall_s > 0 and row.steady_s and row.steady_s > 0
    assert result["rows"]["c"].steady_epochs == 1  # epoch 2 of each of the 2 stages
    assert len(result["rows"]["c"].phases) == 2
    for key in ("b/a", "c/b", "d1/b", "d2/b"):
        line = next(l for l in lines if l.startswith(key))
        assert ("PASS" in line or "MISS" in line) and "target" in line


@flagsaver.flagsaver
def test_command_line_is_the_package_flags_plus_its_own():
    tool = _load_tool()
    opts = tool.parse_args(["--rows=a,c", "--repeats=2"])  # defaults: configs/lfw64.cfg's network
    assert opts.config.model.filters == (6, 12, 24, 48, 96, 192)
    assert (opts.config.data.image_size, opts.config.data.channels) == (64, 3)
    assert opts.epochs == 2 and opts.config.data.max_images == 2048 and opts.synthetic
    assert not opts.config.train.cache_frozen_prefix  # not a network/data/batch setting
    assert (opts.rows, opts.repeats) == (("a", "c"), 2)
    opts = tool.parse_args([f"--flagfile={os.path.join(ROOT, 'configs', 'quickstart.cfg')}",
                            "--epochs=3"])  # a whole flagfile, absl's way
    assert opts.config.model.filters == (8, 16, 32) and opts.epochs == 3
    assert opts.config.data.dataset == "lfw_subset" and not opts.synthetic


@flagsaver.flagsaver
def test_synthetic_images_are_smooth_and_in_range():
    images = _load_tool().synthetic_images(5, 16, 3, seed=1)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert np.abs(np.diff(images, axis=1)).mean() < 0.1  # neighbours are close
