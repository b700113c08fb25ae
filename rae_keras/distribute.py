"""tf.distribute strategy selection, logical CPU devices and worker roles.

Build the strategy before any other TensorFlow work in the process:
MultiWorkerMirroredStrategy must exist before the runtime starts, and logical CPU
devices can only be configured before it does.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import keras
import tensorflow as tf

from rae_keras.config import ConfigError, DistributeConfig


def configure_cpu_devices(count: int) -> None:
    """Splits the first physical CPU into `count` logical devices (count > 1)."""
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:  # the runtime already started
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise ConfigError(
                f"cannot split the CPU into {count} devices after TensorFlow started "
                f"({have} already exist); set --cpu_devices before anything else runs") from e


def make_strategy(config: DistributeConfig) -> tf.distribute.Strategy:
    """auto: mirrored over several GPUs (or over --cpu_devices > 1 without GPUs),
    else one device; multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG."""
    if config.strategy == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("--strategy=multi_worker reads the cluster from TF_CONFIG, "
                              "which is not set (see README: several machines)")
        configure_cpu_devices(config.cpu_devices)
        return tf.distribute.MultiWorkerMirroredStrategy()
    configure_cpu_devices(config.cpu_devices)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    name = config.strategy
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 or (not gpus and len(cpus) > 1) else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
    return tf.distribute.MirroredStrategy(devices=gpus or cpus)


def describe(strategy: tf.distribute.Strategy) -> str:
    kinds = {"MultiWorkerMirroredStrategy": tf.distribute.MultiWorkerMirroredStrategy,
             "MirroredStrategy": tf.distribute.MirroredStrategy,
             "OneDeviceStrategy": tf.distribute.OneDeviceStrategy}
    name = next((n for n, kind in kinds.items() if isinstance(strategy, kind)),
                type(strategy).__name__)
    devices = getattr(strategy.extended, "worker_devices", ())
    return (f"{name} with {strategy.num_replicas_in_sync} replica(s)"
            + (f" on {', '.join(devices)}" if devices else ""))


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_role(strategy: tf.distribute.Strategy) -> tuple[Optional[str], int]:
    """(task type, task id) of this process; (None, 0) outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker(strategy):
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief writes checkpoints, summaries and exports; the others scratch copies.
    Without a 'chief' task in TF_CONFIG, worker 0 is the chief."""
    task_type, task_id = worker_role(strategy)
    if task_type is None or task_type == "chief":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def scratch_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where a non-chief worker writes what the chief writes to model_dir (the pattern
    of the TF multi-worker guide: every worker saves, only the chief's copy counts).
    Kept after training so a restarted worker resumes from its own copy."""
    task_type, task_id = worker_role(strategy)
    return os.path.join(model_dir, "workers", f"{task_type}_{task_id}")


def mixed_precision_policy(enabled: bool) -> Optional[str]:
    """mixed_float16 (needs loss scaling) on GPU, mixed_bfloat16 on CPU, or None."""
    if not enabled:
        return None
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def make_optimizer(learning_rate: float, policy: Optional[str],
                   decay_steps: Optional[int] = None) -> keras.optimizers.Optimizer:
    """Adam; with `decay_steps`, its rate follows a cosine from `learning_rate` to 0 over
    that many steps (the schedule reads the optimizer's step count, which checkpoints
    restore, so a resumed phase continues on the same curve)."""
    if decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    optimizer = keras.optimizers.Adam(learning_rate)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
