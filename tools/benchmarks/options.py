"""The benchmark's defaults, the flags it passes on to children, its parsed settings.

The flags themselves are defined and parsed by tools/benchmark.py (the command line).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Tuple

from rae_keras import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(ROOT, "tools", "benchmark.py")  # the command line (row plain's child)
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "lfw64.cfg")

# The benchmark's defaults where they differ from training's.
DEFAULT_ARGS = ("--epochs=2", "--max_images=2048")
# What --config contributes (as defaults): the network, the data's shape, the batch.
# Its other flags (name, dataset, scheme, epochs, ...) are the benchmark's business.
CONFIG_FLAGS = ("crop", "image_size", "channels", "filters", "kernel_sizes",
                "decoder_kernel_sizes", "activation", "normalization", "kernel_initializer",
                "batch_size", "learning_rate", "test_fraction", "seed", "summary_images")
# The flags a training child takes from the benchmark's command line (the network, the
# data, the batch and the speed settings); each row adds its own.
CHILD_FLAGS = CONFIG_FLAGS + ("data_dir", "tfds_name", "tfds_data_dir",
                              "mixed_precision", "cache_frozen_prefix",
                              "steps_per_execution", "learning_rate_schedule", "strategy",
                              "cpu_devices")


@dataclasses.dataclass(frozen=True)
class Options:
    """The benchmark's own settings; everything else is in `config`."""
    config: config_lib.RunConfig  # the flags' run configuration (scheme set per row)
    synthetic: bool  # no --data_dir / --dataset: generated images
    rows: Tuple[str, ...]
    repeats: int
    pipeline_seconds: float
    intra_op_threads: int
    inter_op_threads: int
    keep_runs: bool
    memory_sizes: Tuple[int, ...] = (1000, 5000, 0)
    flat_sizes: Tuple[int, ...] = (10000, 100000)
    flat_image_size: int = 32
    marginal_epochs: int = 3

    @property
    def epochs(self) -> int:
        return self.config.train.epochs
