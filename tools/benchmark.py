#!/usr/bin/env python3
"""Training throughput: plain Keras vs rae_keras stacked vs the recursive schedule vs input.

    python tools/benchmark.py                                   # synthetic images
    python tools/benchmark.py --data_dir=/work/shared/data/lfw-deepfunneled-dev --max_images=4096
    python tools/benchmark.py --data_dir=... --cache_frozen_prefix --steps_per_execution=8

One process, one data set (loaded before any timing, never counted), one network and
one batch size for every row:

  a   plain Keras: `ConvAutoencoder(...)` compiled with Adam + "mse", fitted
      on `Dataset.from_tensor_slices((x, x)).shuffle(N).batch(B).prefetch(AUTOTUNE)`.
  b   rae_keras stacked training: `training.train` with scheme "stacked" in a
      temporary run directory (per-epoch checkpoints and TensorBoard summaries
      included; no export).
  c   the whole recursive schedule: `training.train` with scheme "recursive", E
      epochs per stage. Its throughput is (E x N) / time, i.e. one *schedule epoch*
      (an epoch of every stage) counts N images, so c/b compares the recursive
      schedule with stacked training for the same number of epochs.
  d1  the pipeline training consumes: `data.epoch_batches(...)` (what `training.train`
      feeds `fit`) iterated with no model.
  d2  (folder source only) decoding the JPEG files into model inputs, as loading does
      (`preprocessing.preprocess_bytes` in a parallel tf.data map). It runs once at
      load time, not every epoch.

Every training row validates on the held-out split each epoch when it is non-empty
(rae_keras does; row a is given the same validation data so a and b do the same work).

Two times per row:
  steady  epochs 2..E of every phase (phase = one `fit`: 1 for a and b, one per stage
          for c): the first epoch of every phase is excluded because it traces the
          train/test functions (and does any other per-phase start-up work, e.g. a
          per-stage prefix cache). Epoch boundaries are taken after each epoch's
          checkpoint (b, c; a callback for a), so a steady epoch includes validation,
          checkpoint and summaries. Needs --epochs >= 2.
  wall    the whole `fit`/`train` call with E epochs per phase: everything included.
Throughput = schedule-epoch images / time. Ratios are printed for both, each with
PASS/MISS against its target. "cores used" = the process' CPU seconds / wall seconds:
well under the core count means the run waited (or other processes took the CPU).
On a shared or noisy machine use --repeats=R: rows a, b, c run R times interleaved and
the least time of each is reported (all repeats are listed too).

Defaults for the network, data and batch come from configs/lfw64.cfg (--config).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "lfw64.cfg")

TARGET_B_OVER_A = 0.95  # rae_keras stacked img/s >= 0.95 x plain Keras
TARGET_C_OVER_B_TIME = 1.10  # recursive schedule time <= 1.1 x stacked, same epochs
TARGET_D_OVER_B = 3.0  # input pipeline img/s >= 3 x stacked training


# ---------------------------------------------------------------------------
# Command line


def _ints(text: str) -> Tuple[int, ...]:
    return tuple(int(v) for v in str(text).split(",") if v.strip())


def _bool(text: str) -> bool:
    return str(text).lower() in ("1", "true", "yes")


# Keys read from --config (an absl flagfile of rae_keras' flags) as defaults; its
# other keys (name, dataset, scheme, epochs, ...) are the benchmark's own business.
_CONFIG_KEYS: Dict[str, Callable[[str], object]] = {
    "crop": int, "image_size": int, "channels": int, "filters": _ints,
    "kernel_sizes": _ints, "decoder_kernel_sizes": _ints, "activation": str,
    "normalization": str, "kernel_initializer": str, "batch_size": int,
    "learning_rate": float, "test_fraction": float, "seed": int, "summary_images": int,
}


def read_flagfile(path: str) -> Dict[str, object]:
    """The `--key=value` lines of `path` whose key is in _CONFIG_KEYS, converted."""
    values: Dict[str, object] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line.startswith("--") or "=" not in line:
                continue
            key, value = line[2:].split("=", 1)
            if key in _CONFIG_KEYS:
                values[key] = _CONFIG_KEYS[key](value)
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="rae_keras flagfile whose network/data/batch settings are the "
                        "defaults (default configs/lfw64.cfg; '' for none)")
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", default="",
                   help="image folder (LFW-style tree or flat); empty: synthetic images")
    g.add_argument("--max_images", type=int, default=2048,
                   help="training images (folder: a seeded sample of the training split, "
                        "0 = all; synthetic: how many are generated)")
    g.add_argument("--crop", type=int, default=128)
    g.add_argument("--image_size", type=int, default=64)
    g.add_argument("--channels", type=int, default=3, choices=(1, 3))
    g.add_argument("--test_fraction", type=float, default=0.1,
                   help="held-out fraction (identities for a folder, images for synthetic "
                        "data), validated on every epoch; 0: no validation")
    g = p.add_argument_group("network")
    g.add_argument("--filters", type=_ints, default=(6, 12, 24, 48, 96, 192))
    g.add_argument("--kernel_sizes", type=_ints, default=(5, 3, 3, 3, 3, 3))
    g.add_argument("--decoder_kernel_sizes", type=_ints, default=(4,),
                   help="empty: the encoder's")
    g.add_argument("--activation", default="selu")
    g.add_argument("--normalization", default="none")
    g.add_argument("--kernel_initializer", default="lecun_normal")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=2,
                   help="epochs per phase (per stage for c); the first of each phase is "
                        "excluded from the steady numbers, so >= 2 for them")
    g.add_argument("--batch_size", type=int, default=32)
    g.add_argument("--learning_rate", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--summary_images", type=int, default=8)
    g.add_argument("--mixed_precision", action="store_true",
                   help="TrainConfig.mixed_precision; row a uses the same Keras policy")
    g.add_argument("--cache_frozen_prefix", action="store_true",
                   help="TrainConfig.cache_frozen_prefix (recursive stages)")
    g.add_argument("--steps_per_execution", type=int, default=1,
                   help="TrainConfig.steps_per_execution; row a compiles with the same")
    g.add_argument("--strategy", default="auto",
                   choices=("auto", "one_device", "mirrored", "multi_worker"))
    g.add_argument("--cpu_devices", type=int, default=0,
                   help="split the CPU into N logical devices (set before TF starts)")
    g = p.add_argument_group("benchmark")
    g.add_argument("--rows", type=lambda s: tuple(v.strip() for v in s.split(",") if v.strip()),
                   default=("a", "b", "c", "d"), help="rows to run, from a,b,c,d")
    g.add_argument("--intra_op_threads", type=int, default=0, help="0: TensorFlow's default")
    g.add_argument("--inter_op_threads", type=int, default=0, help="0: TensorFlow's default")
    g.add_argument("--repeats", type=int, default=1,
                   help="run rows a, b, c this many times, interleaved; report the best "
                        "(least time) of each (all repeats are listed too)")
    g.add_argument("--pipeline_seconds", type=float, default=2.0,
                   help="row d1 repeats its E epochs until this long has passed")
    g.add_argument("--keep_runs", action="store_true", help="keep the temporary run dirs")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=DEFAULT_CONFIG)
    known, _ = pre.parse_known_args(argv)
    parser = build_parser()
    if known.config:
        if not os.path.isfile(known.config):
            parser.error(f"--config {known.config} does not exist")
        parser.set_defaults(**read_flagfile(known.config))
    args = parser.parse_args(argv)
    unknown_rows = set(args.rows) - {"a", "b", "c", "d"}
    if unknown_rows:
        parser.error(f"--rows: unknown {sorted(unknown_rows)}; use a,b,c,d")
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


# ---------------------------------------------------------------------------
# Data


def synthetic_images(n: int, size: int, channels: int, seed: int) -> np.ndarray:
    """n smooth random images in [0, 1]: a few coloured Gaussian blobs each."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    out = np.empty((n, size, size, channels), np.float32)
    blobs, chunk = 4, 256
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cx = rng.uniform(-0.7, 0.7, (m, blobs, 1, 1)).astype(np.float32)
        cy = rng.uniform(-0.7, 0.7, (m, blobs, 1, 1)).astype(np.float32)
        width = rng.uniform(0.05, 0.5, (m, blobs, 1, 1)).astype(np.float32)
        amp = rng.uniform(0.1, 1.0, (m, blobs, channels)).astype(np.float32)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / width)
        img = np.einsum("mbhw,mbc->mhwc", g, amp)
        img /= np.maximum(img.max(axis=(1, 2, 3), keepdims=True), 1e-6)
        out[start:start + m] = img
    return out


def load_data(args, data_config):
    """(DataSplits, description); the folder through rae_keras' own loader."""
    from rae_keras import data as data_lib

    if args.data_dir:
        splits = data_lib.load_splits(data_config)
        return splits, (f"folder {args.data_dir} ({len(splits.skipped)} files skipped)")
    n_train = args.max_images or 2048
    n_test = math.ceil(args.test_fraction * n_train) if args.test_fraction > 0 else 0
    images = synthetic_images(n_train + n_test, args.image_size, args.channels, args.seed)
    ids = np.array([f"synthetic_{i:06d}" for i in range(len(images))])
    splits = data_lib.DataSplits(
        train=data_lib.Split(images[:n_train], ids[:n_train]),
        test=data_lib.Split(images[n_train:], ids[n_train:]), skipped=())
    return splits, "synthetic smooth random images (Gaussian blobs)"


# ---------------------------------------------------------------------------
# Results


@dataclasses.dataclass
class Row:
    key: str
    what: str
    images: int  # images per (schedule) epoch
    epochs: int  # schedule epochs run (per phase)
    wall_s: float  # the whole call
    steady_s: Optional[float] = None  # the timed epochs only
    steady_epochs: float = 0.0  # schedule epochs those cover
    note: str = ""
    phases: List[Tuple[str, float, List[float]]] = dataclasses.field(default_factory=list)
    cpu_s: Optional[float] = None  # process CPU time during wall_s

    @property
    def cores(self) -> Optional[float]:
        return None if self.cpu_s is None else self.cpu_s / self.wall_s

    @property
    def wall_ips(self) -> float:
        return self.epochs * self.images / self.wall_s

    @property
    def steady_ips(self) -> Optional[float]:
        if not self.steady_s or not self.steady_epochs:
            return None
        return self.steady_epochs * self.images / self.steady_s


def best_of(repeats: List[Row]) -> Row:
    """The least steady time and, separately, the least wall time of the repeats."""
    with_steady = [r for r in repeats if r.steady_s is not None]
    best = min(with_steady, key=lambda r: r.steady_s) if with_steady else repeats[0]
    fastest = min(repeats, key=lambda r: r.wall_s)
    return dataclasses.replace(best, wall_s=fastest.wall_s, cpu_s=fastest.cpu_s)


def steady_from_marks(marks: List[Tuple[object, float]], start: float
                      ) -> Tuple[Optional[float], float, List[Tuple[str, float, List[float]]]]:
    """marks: (phase, time after the epoch's end) in order. Returns (steady seconds,
    schedule epochs they cover, per phase (name, first-epoch s, steady epoch s))."""
    phases: Dict[object, List[float]] = {}
    order: List[object] = []
    for phase, t in marks:
        if phase not in phases:
            phases[phase] = []
            order.append(phase)
        phases[phase].append(t)
    steady, epochs, detail, previous_end = 0.0, 0, [], start
    for phase in order:
        times = phases[phase]
        steady += times[-1] - times[0]
        epochs += len(times) - 1
        detail.append((str(phase), times[0] - previous_end,
                       [b - a for a, b in zip(times, times[1:])]))
        previous_end = times[-1]
    if not order or epochs == 0:
        return None, 0.0, detail
    return steady, epochs / len(order), detail


# ---------------------------------------------------------------------------
# Environment: devices, threads, precision


def configure_threads(args) -> None:
    """Thread pools: must be set before TensorFlow starts."""
    import tensorflow as tf

    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)


def make_strategy(args):
    """The strategy rae_keras' driver would build (before any other TF work), shared
    by rows a, b and c."""
    from rae_keras import config as config_lib
    from rae_keras import distribute

    return distribute.make_strategy(config_lib.DistributeConfig(
        strategy=args.strategy, cpu_devices=args.cpu_devices))


def mixed_policy_name(enabled: bool) -> Optional[str]:
    from rae_keras import distribute

    return distribute.mixed_precision_policy(enabled)


def describe_environment(args) -> List[str]:
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
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


# ---------------------------------------------------------------------------
# Rows


def _run_config(args, data_config, scheme: str, model_dir: str):
    from rae_keras import config as config_lib

    train_fields = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
    train_kwargs = dict(
        scheme=scheme, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed, summary_images=args.summary_images,
        mixed_precision=args.mixed_precision, cache_frozen_prefix=args.cache_frozen_prefix,
        steps_per_execution=args.steps_per_execution)
    missing = {k for k in train_kwargs if k not in train_fields}
    if missing:
        raise SystemExit(f"error: this rae_keras has no TrainConfig field(s) {sorted(missing)}")
    return config_lib.RunConfig(
        name=f"bench_{scheme}", model_dir=model_dir, export_dir="",
        data=data_config,
        model=config_lib.ModelConfig(
            filters=tuple(args.filters), kernel_sizes=tuple(args.kernel_sizes),
            decoder_kernel_sizes=tuple(args.decoder_kernel_sizes),
            activation=args.activation, normalization=args.normalization,
            kernel_initializer=args.kernel_initializer),
        train=config_lib.TrainConfig(**train_kwargs),
        distribute=config_lib.DistributeConfig(strategy=args.strategy,
                                               cpu_devices=args.cpu_devices),
    ).validate()


@dataclasses.dataclass(frozen=True)
class Batching:
    """What every row shares: the strategy and the global batch, as `training.train`
    sets them (per-replica batch x replicas; whole batches only with several replicas)."""
    strategy: object
    replicas: int
    global_batch: int
    drop_remainder: bool
    steps_per_epoch: int
    images_per_epoch: int  # images trained on per epoch

    @classmethod
    def of(cls, strategy, batch_size: int, n_train: int) -> "Batching":
        replicas = int(strategy.num_replicas_in_sync)
        global_batch = batch_size * replicas
        drop = replicas > 1
        steps = n_train // global_batch if drop else math.ceil(n_train / global_batch)
        return cls(strategy, replicas, global_batch, drop, steps,
                   steps * global_batch if drop else n_train)


def _plain_fit(args, config, splits, batching: Batching, images, *, epochs: int,
               marks: Optional[list] = None) -> Tuple[float, float, float]:
    """Builds, compiles and fits the full network with plain Keras; returns (start time,
    seconds, CPU seconds) of the fit."""
    import keras
    import tensorflow as tf

    from rae_keras import distribute
    from rae_keras.models import ConvAutoencoder
    from rae_keras.runs import image_shape_of

    keras.utils.set_random_seed(args.seed)
    policy = mixed_policy_name(args.mixed_precision)
    with batching.strategy.scope():
        model = ConvAutoencoder.from_model_config(config.model, image_shape_of(config), dtype=policy).full_model()
        model.compile(optimizer=distribute.make_optimizer(args.learning_rate, policy),
                      loss="mse", steps_per_execution=args.steps_per_execution)
    x = tf.convert_to_tensor(images)
    train_ds = (tf.data.Dataset.from_tensor_slices((x, x))
                .shuffle(len(images), seed=args.seed, reshuffle_each_iteration=True)
                .batch(batching.global_batch, drop_remainder=batching.drop_remainder)
                .prefetch(tf.data.AUTOTUNE))
    val_ds = None
    if marks is not None and len(splits.test.images) >= (
            batching.global_batch if batching.drop_remainder else 1):
        v = tf.convert_to_tensor(splits.test.images)
        val_ds = (tf.data.Dataset.from_tensor_slices((v, v))
                  .batch(batching.global_batch, drop_remainder=batching.drop_remainder)
                  .prefetch(tf.data.AUTOTUNE))
    callbacks = [_marks_callback(marks)] if marks is not None else []
    cpu, start = time.process_time(), time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0,
              shuffle=False)  # the dataset shuffles
    return start, time.perf_counter() - start, time.process_time() - cpu


def _marks_callback(marks: list):
    import keras

    class Marks(keras.callbacks.Callback):
        """Notes the time after every epoch (validation included); runs last."""

        def on_epoch_end(self, epoch, logs=None):
            marks.append(("fit", time.perf_counter()))

    return Marks()


def row_a(args, config, splits, batching: Batching) -> Row:
    marks: List[Tuple[object, float]] = []
    start, wall, cpu = _plain_fit(args, config, splits, batching, splits.train.images,
                                  epochs=args.epochs, marks=marks)
    steady, steady_epochs, phases = steady_from_marks(marks, start)
    return Row("a", "plain Keras `model.fit`, full network, minimal tf.data",
               batching.images_per_epoch, args.epochs, wall, steady, steady_epochs,
               phases=phases, cpu_s=cpu)


def _timed_run_directory(path: str):
    """A RunDirectory that notes the time after every per-epoch checkpoint."""
    from rae_keras import runs

    class TimedRunDirectory(runs.RunDirectory):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.marks: List[Tuple[object, float]] = []

        def save_checkpoint(self, *a, **kw):
            result = super().save_checkpoint(*a, **kw)
            state = kw.get("state", a[1] if len(a) > 1 else None)
            if state is not None and not getattr(state, "finished", False):
                name = (state.history[state.phase]["phase"]
                        if state.phase < len(state.history) else state.phase)
                self.marks.append((name, time.perf_counter()))
            return result

    return TimedRunDirectory(path, keep_checkpoints=1)


def row_rae(args, data_config, splits, batching: Batching, scheme: str, model_dir: str) -> Row:
    from rae_keras import training

    config = _run_config(args, data_config, scheme, model_dir)
    run = _timed_run_directory(config.model_dir)
    run.prepare(config)
    log: List[str] = []
    cpu, start = time.process_time(), time.perf_counter()
    _, state = training.train(config, splits, run, strategy=batching.strategy,
                              log=log.append, verbose=0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    steady, steady_epochs, phases = steady_from_marks(run.marks, start)
    n_phases = max(len(phases), 1)
    if scheme == "stacked":
        key, what = "b", "rae_keras stacked (`training.train`)"
    else:
        key, what = "c", (f"rae_keras recursive, whole schedule ({n_phases} stages x "
                          f"{args.epochs} epochs; img/s per schedule epoch)")
    note = "" if state.epochs_done == n_phases * args.epochs else (
        f"{state.epochs_done} epochs done, expected {n_phases * args.epochs}")
    return Row(key, what, batching.images_per_epoch, args.epochs, wall, steady, steady_epochs,
               note=note, phases=phases, cpu_s=cpu)


def row_d1(args, splits, batching: Batching, min_seconds: float = 2.0) -> Row:
    """The pipeline training consumes, iterated with no model: E epochs, repeated (a
    fresh iterator each time, as every `fit` makes) until min_seconds have passed, since
    with prefetching a short run mostly measures the buffer."""
    from rae_keras import data as data_lib

    cpu, start = time.process_time(), time.perf_counter()
    ds = data_lib.epoch_batches(splits.train.images, batching.global_batch,
                                seed=args.seed * 1000, first_epoch=0, epochs=args.epochs,
                                drop_remainder=batching.drop_remainder)
    iterate_from = time.perf_counter()
    batches, passes = 0, 0
    while passes < 1 or (time.perf_counter() - iterate_from < min_seconds and passes < 100):
        for _ in ds:
            batches += 1
        passes += 1
    end = time.perf_counter()
    if batches != passes * batching.steps_per_epoch * args.epochs:
        raise RuntimeError(f"epoch_batches gave {batches} batches in {passes} passes, "
                           f"expected {batching.steps_per_epoch * args.epochs} per pass")
    epochs = passes * args.epochs
    return Row("d1", "input pipeline alone: `data.epoch_batches`, what training consumes "
               "(in memory, no model)", batching.images_per_epoch, epochs,
               end - start, end - iterate_from, epochs, cpu_s=time.process_time() - cpu,
               note=f"{passes} pass(es) over {args.epochs} epochs; steady = iteration only, "
                    f"wall adds building the dataset (a copy of the images)")


def row_d2(args, splits, batching: Batching) -> Row:
    """JPEG files -> model inputs, decoded as the folder loader does; one pass."""
    import tensorflow as tf

    from rae_keras import data as data_lib
    from rae_keras import preprocessing

    paths = data_lib.list_images(args.data_dir)
    n = min(len(splits.train.images), len(paths))
    chosen = np.sort(np.random.default_rng(args.seed).permutation(len(paths))[:n])
    paths = np.array(paths)[chosen]
    cpu, start = time.process_time(), time.perf_counter()
    ds = (tf.data.Dataset.from_tensor_slices(paths)
          .map(lambda p: preprocessing.preprocess_bytes(tf.io.read_file(p), args.crop,
                                                        args.image_size, args.channels),
               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .ignore_errors().batch(batching.global_batch).prefetch(tf.data.AUTOTUNE))
    iterate_from = time.perf_counter()
    count = 0
    for batch in ds:
        count += int(batch.shape[0])
    end = time.perf_counter()
    return Row("d2", "input decoding alone: JPEG files -> crop -> resize, as the folder "
               "loader does (once, at load time; no model)",
               count, 1, end - start, end - iterate_from, 1.0, cpu_s=time.process_time() - cpu,
               note="steady = the one pass without building the dataset; the loader "
                    "has just read these files, so they come from the OS cache")


# ---------------------------------------------------------------------------
# Report


def _fmt(value: Optional[float], digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(x: Optional[float], y: Optional[float]) -> Optional[float]:
    return None if x is None or y is None or y == 0 else x / y


def _verdict(value: Optional[float], target: float, at_least: bool) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value >= target if at_least else value <= target) else "MISS"


def ratio_lines(rows: Dict[str, Row]) -> Tuple[List[str], Dict[str, Dict[str, Optional[float]]]]:
    a, b, c, d1, d2 = (rows.get(k) for k in ("a", "b", "c", "d1", "d2"))
    specs = []  # (label, steady, wall, target, at_least, comment)
    if a and b:
        specs.append(("b/a  rae_keras stacked / plain Keras fit (img/s)",
                      _ratio(b.steady_ips, a.steady_ips), _ratio(b.wall_ips, a.wall_ips),
                      TARGET_B_OVER_A, True, ""))
    if b and c:
        specs.append(("c/b  recursive schedule / stacked, *time* for the same epochs",
                      _ratio(c.steady_s and c.steady_s / c.steady_epochs,
                             b.steady_s and b.steady_s / b.steady_epochs),
                      _ratio(c.wall_s, b.wall_s), TARGET_C_OVER_B_TIME, False,
                      "(img/s ratio c/b is its inverse)"))
    if b and d1:
        specs.append(("d1/b epoch_batches pipeline / stacked training (img/s)",
                      _ratio(d1.steady_ips, b.steady_ips), _ratio(d1.wall_ips, b.wall_ips),
                      TARGET_D_OVER_B, True, ""))
    if b and d2:
        specs.append(("d2/b JPEG decode / stacked training (img/s)",
                      _ratio(d2.steady_ips, b.steady_ips), _ratio(d2.wall_ips, b.wall_ips),
                      TARGET_D_OVER_B, True,
                      "(decode runs once at load time, not per epoch)"))
    lines, values = [], {}
    for label, steady, wall, target, at_least, comment in specs:
        op = ">=" if at_least else "<="
        parts = [f"{name} {_fmt(value, 3)} {_verdict(value, target, at_least)}"
                 if value is not None else f"{name} n/a"
                 for name, value in (("steady", steady), ("wall", wall))]
        lines.append(f"{label}: {', '.join(parts)}  (target {op} {target:g}) {comment}"
                     .rstrip())
        values[label.split()[0]] = {"steady": steady, "wall": wall}
    return lines, values


def report(rows: List[Row], settings: List[str], notes: List[str],
           out: Callable[[str], None] = print) -> Dict[str, Dict[str, Optional[float]]]:
    out("")
    for line in settings:
        out(line)
    out("")
    out("| row | what | images/epoch | epochs | steady s | steady img/s | wall s | wall img/s "
        "| cores used |")
    out("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        steady_epochs = f"{r.steady_epochs:g}" if r.steady_s is not None else "0"
        out(f"| {r.key} | {r.what} | {r.images} | {steady_epochs} of {r.epochs} | "
            f"{_fmt(r.steady_s, 2)} | {_fmt(r.steady_ips)} | {r.wall_s:.2f} | "
            f"{r.wall_ips:,.0f} | {_fmt(r.cores, 2)} |")
    out("")
    lines, values = ratio_lines({r.key: r for r in rows})
    for line in lines:
        out(line)
    details = []
    for r in rows:
        if r.key in ("a", "b", "c") and r.phases:
            parts = [f"{name} {first:.2f}/{'+'.join(f'{s:.2f}' for s in rest) or '-'}"
                     for name, first, rest in r.phases]
            details.append(f"{r.key} per phase, first epoch (incl. tracing) / steady "
                           f"epoch s: {'; '.join(parts)}")
        if r.note:
            details.append(f"{r.key}: {r.note}")
    if details or notes:
        out("")
    for line in details + notes:
        out(line)
    return values


# ---------------------------------------------------------------------------
# Main


def main(argv: Optional[Sequence[str]] = None, out: Callable[[str], None] = print) -> Dict:
    args = parse_args(argv)
    configure_threads(args)

    from rae_keras import config as config_lib

    try:
        strategy = make_strategy(args)  # before any other TensorFlow work
    except config_lib.ConfigError as e:
        raise SystemExit(f"error: {e}")
    data_config = config_lib.DataConfig(
        dataset="folder" if args.data_dir else "lfw_subset", data_dir=args.data_dir or None,
        crop=args.crop, image_size=args.image_size, channels=args.channels,
        max_images=args.max_images, test_fraction=args.test_fraction, seed=args.seed)
    reference = _run_config(args, data_config, "stacked", "unused")  # validates the settings
    load_before = load_average()
    started = time.perf_counter()
    splits, source = load_data(args, data_config)
    load_s = time.perf_counter() - started
    if args.test_fraction <= 0:
        splits = dataclasses.replace(splits, test=dataclasses.replace(
            splits.test, images=splits.test.images[:0], identities=splits.test.identities[:0]))
    n_train, n_test = len(splits.train.images), len(splits.test.images)
    batching = Batching.of(strategy, args.batch_size, n_train)
    if batching.steps_per_epoch < 1:
        raise SystemExit(f"error: {n_train} training images are fewer than one global "
                         f"batch ({batching.global_batch})")

    from rae_keras import distribute

    multi_worker = distribute.is_multi_worker(strategy)
    notes = [
        "steady = epochs 2..E of every phase (each phase's first epoch traces the "
        "train/test functions and is excluded); wall = the whole fit/train call with "
        "everything included; img/s = schedule epochs x images per epoch / time; "
        "cores used = process CPU s / wall s"]
    if args.epochs < 2:
        notes.append("--epochs=1: no steady numbers (the only epoch includes tracing)")
    if args.cache_frozen_prefix:
        notes.append("--cache_frozen_prefix: each stage computes its cached h_(k-1) before "
                     "its first epoch; only the wall numbers include that")
    if multi_worker and "a" in args.rows:
        notes.append("row a skipped: Keras fit does not run under MultiWorkerMirroredStrategy")

    rows: List[Row] = []
    workdir = tempfile.mkdtemp(prefix="rae_benchmark_")
    try:
        if {"a", "b", "c"} & set(args.rows) and not multi_worker:
            # Process start-up costs (thread pools, oneDNN kernels for these shapes) go
            # to a throwaway fit, not to whichever row happens to run first.
            warm = splits.train.images[:min(n_train, 4 * batching.global_batch)]
            _plain_fit(args, reference, splits, Batching.of(strategy, args.batch_size, len(warm)),
                       warm, epochs=1)
        runs: Dict[str, List[Row]] = {}
        for repeat in range(args.repeats):
            if "a" in args.rows and not multi_worker:
                runs.setdefault("a", []).append(row_a(args, reference, splits, batching))
            for key, scheme in (("b", "stacked"), ("c", "recursive")):
                if key in args.rows:
                    model_dir = os.path.join(workdir, f"{scheme}_{repeat}")
                    runs.setdefault(key, []).append(
                        row_rae(args, data_config, splits, batching, scheme, model_dir))
        rows.extend(best_of(repeats) for repeats in runs.values())
        if args.repeats > 1:
            notes.append(f"best of {args.repeats} interleaved repeats per column; all "
                         "repeats (steady s / wall s): " + "; ".join(
                             f"{key} " + ", ".join(f"{_fmt(r.steady_s, 2)}/{r.wall_s:.2f}"
                                                   for r in repeats)
                             for key, repeats in runs.items()))
        if "d" in args.rows:
            rows.append(row_d1(args, splits, batching, args.pipeline_seconds))
            if args.data_dir:
                rows.append(row_d2(args, splits, batching))
    finally:
        if args.keep_runs:
            out(f"kept run directories under {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    kernels = ",".join(map(str, args.kernel_sizes))
    decoder = ",".join(map(str, args.decoder_kernel_sizes)) or "= encoder"
    settings = [
        "## rae_keras training benchmark",
        f"data: {source}; {n_train} training images ({batching.images_per_epoch} per epoch), "
        f"{n_test} validation images (validated every epoch in a, b, c); "
        f"{args.image_size}x{args.image_size}x{args.channels}, crop {args.crop}; loaded in "
        f"{load_s:.1f} s (not timed)",
        f"network: filters {','.join(map(str, args.filters))}, kernels {kernels}, decoder "
        f"kernels {decoder}, {args.activation}, normalization {args.normalization}",
        f"training: {args.epochs} epoch(s) per phase, batch {args.batch_size} per replica x "
        f"{batching.replicas} = {batching.global_batch}, Adam {args.learning_rate:g}, "
        f"mixed_precision {args.mixed_precision} "
        f"({mixed_policy_name(args.mixed_precision) or 'float32'}), cache_frozen_prefix "
        f"{args.cache_frozen_prefix}, steps_per_execution {args.steps_per_execution}; "
        f"{distribute.describe(strategy)} (--strategy={args.strategy}, "
        f"--cpu_devices={args.cpu_devices})",
        *describe_environment(args),
        f"load average (1/5/15 min): {load_before} before, {load_average()} after",
    ]
    values = report(rows, settings, notes, out)
    return {"rows": {r.key: r for r in rows}, "ratios": values}


if __name__ == "__main__":
    main()
    sys.exit(0)
