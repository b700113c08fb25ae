"""The machine and TensorFlow's set-up: thread pools, the batching every row shares,
the environment lines of the report."""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import List

from .options import Options


def configure_threads(opts: Options) -> None:
    """Thread pools: must be set before TensorFlow's runtime starts."""
    import tensorflow as tf

    if opts.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(opts.intra_op_threads)
    if opts.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(opts.inter_op_threads)


@dataclasses.dataclass(frozen=True)
class Batching:
    """What every row shares: the strategy and the global batch, as `rae_keras.fit`
    sets them (per-replica batch x replicas; whole batches only with several replicas)."""
    strategy: object
    replicas: int
    global_batch: int
    drop_remainder: bool
    steps_per_epoch: int
    images_per_epoch: int  # images trained on per epoch

    @classmethod
    def of(cls, strategy, batch_size: int, n_train: int) -> "Batching":
        from rae_keras import phase_loop  # deferred like TensorFlow: thread pools come first

        replicas = int(strategy.num_replicas_in_sync)
        global_batch, drop, steps = phase_loop.batching(batch_size, replicas, n_train)
        return cls(strategy, replicas, global_batch, drop, steps,
                   steps * global_batch if drop else n_train)


def _cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def describe_environment() -> List[str]:
    import keras
    import tensorflow as tf

    cpu = _cpu_name()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    gpus = tf.config.list_physical_devices("GPU")
    logical = [d.name for d in tf.config.list_logical_devices()]
    return [
        f"device: {', '.join(g.name for g in gpus) or 'CPU only'}; CPU {cpu}; "
        f"{os.cpu_count()} cores ({usable} usable); logical devices {', '.join(logical)}",
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
        f"{platform.python_version()}; threads intra-op {intra or f'default ({usable})'}, "
        f"inter-op {inter or 'default'}",
    ]


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"
