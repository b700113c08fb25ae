"""tools/benchmark.py end to end on a tiny network and a tiny JPEG folder."""

import importlib
import importlib.util
import os
import sys

import numpy as np
import pytest
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


def _rows_module(name):
    """A module of the tool's rows package, tools/benchmarks/ (imported as the tool does)."""
    tools = os.path.join(ROOT, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return importlib.import_module(f"benchmarks.{name}")


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


def _tiny_args(tmp_path):
    """The benchmark's flags for a tiny network on a tiny JPEG folder."""
    folder = _jpeg_folder(tmp_path / "faces")
    return ["--config=", f"--data_dir={folder}", "--max_images=32", "--test_fraction=0.2",
            "--crop=0", "--image_size=16", "--channels=1", "--filters=4,8", "--kernel_sizes=3",
            "--decoder_kernel_sizes=", "--batch_size=8", "--summary_images=2"]


@flagsaver.flagsaver
def test_benchmark_prints_every_row_and_target(tmp_path):
    tool, args = _load_tool(), _tiny_args(tmp_path)
    lines = []
    result = tool.main([*args, "--epochs=2", "--pipeline_seconds=0.1"], out=lines.append)
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
    images = _rows_module("inputs").synthetic_images(5, 16, 3, seed=1)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert np.abs(np.diff(images, axis=1)).mean() < 0.1  # neighbours are close


@pytest.mark.slow
@flagsaver.flagsaver
def test_whole_process_rows_print_memory_time_and_targets(tmp_path):
    tool, args = _load_tool(), _tiny_args(tmp_path)
    lines = []
    result = tool.main([
        *args, "--epochs=1", "--rows=memory,flat,plain,marginal", "--memory_sizes=16,0",
        "--flat_sizes=40,20", "--flat_image_size=8", "--marginal_epochs=2", f"--cache_dir={tmp_path / 'cache'}"],
        out=lines.append)
    text = "\n".join(lines)
    assert "| row | what | training images | wall s | CPU s | peak RSS MB |" in text
    whole = result["whole"]
    assert set(whole) == {"m1", "m2", "f1", "f2", "w1", "w2", "w3", "r1", "r2", "r3", "r4"}
    assert whole["m1"].images == 16 and whole["m2"].images == whole["w1"].images
    assert (whole["f1"].images, whole["f2"].images) == (20, 40)  # sizes in order
    for row in whole.values():
        assert row.process.wall_s > 0 and row.process.peak_rss_mb > 100  # TensorFlow's
    for key in ("m1 peak RSS", "m2-m1 peak RSS", "f2/f1 peak RSS", "w3/w2 plain",
                "w3/w1 plain", "marginal epoch recursive / stacked (wall",
                "marginal epoch recursive / stacked (CPU"):
        line = next(l for l in lines if l.startswith(key))
        assert ("PASS" in line or "MISS" in line) and "target" in line


@flagsaver.flagsaver
def test_synthetic_folder_holds_readable_pngs_grouped_by_identity(tmp_path):
    from rae_keras import sources

    memory_rows = _rows_module("memory_rows")
    memory_rows.write_synthetic_folder(str(tmp_path), 25, 8, per_identity=10)
    paths = sources.list_images(str(tmp_path))
    assert len(paths) == 25
    assert len({sources.identity_from_path(p, str(tmp_path)) for p in paths}) == 3
    image = tf.io.decode_png(tf.io.read_file(paths[0])).numpy()
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8 and image.std() > 0


@flagsaver.flagsaver
def test_whole_process_rows_from_the_children_they_run(tmp_path, monkeypatch):
    """The rows' logic with the children faked: what each runs, and its figures."""
    tool, children = _load_tool(), _rows_module("children")
    folder = _jpeg_folder(tmp_path / "faces")
    commands = []

    def fake(command):
        commands.append(list(command))
        images = int(next((a.split("=")[1] for a in command if a.startswith("--max_images=")),
                          "0")) or 38
        epochs = int(next(a.split("=")[1] for a in command if a.startswith("--epochs=")))
        recursive = "--scheme=recursive" in command
        seconds = 10.0 + epochs * (3.0 if recursive else 2.5)
        return children.Process(seconds, seconds / 2, 1000.0 + images,
                                f"data: {images} training and 8 test images (folder)\n")

    monkeypatch.setattr(children, "run_process", fake)
    opts = tool.parse_args([
        "--config=", f"--data_dir={folder}", "--max_images=32", "--filters=4,8",
        "--image_size=16", "--channels=1", "--batch_size=8", "--cache_frozen_prefix",
        "--rows=memory,plain,marginal", "--memory_sizes=16,0"])
    rows, lines = tool.run_whole_rows(opts, str(tmp_path), str(tmp_path / "cache"), [])
    assert [r.key for r in rows] == ["m1", "m2", "w1", "w2", "w3", "r1", "r2", "r3", "r4"]
    train = [c for c in commands if "rae_keras.train" in c]
    assert all("--dataset=folder" in c and f"--data_dir={folder}" in c and "--export_dir=" in c
               and "--filters=4,8" in c and "--cache_frozen_prefix" in c for c in train)
    plain = next(c for c in commands if any(a.startswith("--plain_fit_child=") for a in c))
    assert plain[1].endswith("benchmark.py")
    text = "\n".join(lines)
    assert "m1 peak RSS at 16 images (MB): 1,016 PASS" in text
    assert "m2-m1 peak RSS added by 38 images (MB): 22 PASS" in text
    # marginal: (10 + 3 x 3.0 - (10 + 3.0)) / 2 = 3.0 vs 2.5 for stacked
    assert "marginal epoch recursive / stacked (wall: 3.0 s / 2.5 s): 1.200 MISS" in text
