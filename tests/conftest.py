"""Shared fixtures: tiny configurations and images, so every test runs in seconds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rae_keras.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402


@pytest.fixture
def tiny_model_config():
    return ModelConfig(filters=(4, 8, 8), kernel_sizes=(3,))


@pytest.fixture
def tiny_images():
    """32 random 16x16 gray images in [0, 1]."""
    return np.random.default_rng(0).random((32, 16, 16, 1), dtype=np.float32)


@pytest.fixture
def tiny_run_config(tmp_path):
    """A complete quickstart-like run: lfw_subset at 16x16, 2 stages, 1 epoch."""
    return RunConfig(
        name="tiny",
        model_dir=str(tmp_path / "run"),
        export_dir="",
        data=DataConfig(dataset="lfw_subset", image_size=16, channels=1, max_images=48),
        model=ModelConfig(filters=(4, 8), kernel_sizes=(3,)),
        train=TrainConfig(scheme="recursive", epochs=1, batch_size=16, summary_images=4),
    )
