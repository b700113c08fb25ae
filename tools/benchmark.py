#!/usr/bin/env python3
"""Training throughput: plain Keras vs rae_keras stacked vs the recursive schedule vs input.

    python tools/benchmark.py                                   # synthetic images
    python tools/benchmark.py --data_dir=/work/shared/data/lfw-deepfunneled-dev --max_images=4096
    python tools/benchmark.py --data_dir=... --cache_frozen_prefix --steps_per_execution=8

Rows a-d: one process, one data set (loaded before any timing, never counted; a folder
or data set is read as `python -m rae_keras.train` reads it, streamed from its image
cache in --cache_dir or a temporary one), one network and
one batch size for every row:

  a   plain Keras: `ConvAutoencoder(...)` compiled with Adam + "mse", fitted
      on `Dataset.from_tensor_slices((x, x)).shuffle(N).batch(B).prefetch(AUTOTUNE)`.
  b   rae_keras stacked training, as `python -m rae_keras.train` does it:
      `training.build_model` and `rae_keras.fit` with scheme "stacked" in a temporary
      run directory (per-epoch checkpoints and TensorBoard summaries included; no
      export).
  c   the whole recursive schedule: the same with scheme "recursive", E
      epochs per stage. Its throughput is (E x N) / time, i.e. one *schedule epoch*
      (an epoch of every stage) counts N images, so c/b compares the recursive
      schedule with stacked training for the same number of epochs.
  d1  the pipeline training consumes: the training set's `epoch_batches(...)` (what
      `rae_keras.fit` feeds Keras `fit`: streamed from the image cache for a folder or
      data set, as `python -m rae_keras.train` reads it) iterated with no model.
  d2  (folder source only) decoding the JPEG files into model inputs, as loading does
      (`preprocessing.preprocess_bytes` in a parallel tf.data map). It runs once at
      load time, not every epoch.

Whole-process rows (opt in with --rows; each runs `python -m rae_keras.train` with the
benchmark's network, data and speed flags, or a plain Keras script, as a child process,
timed from outside; peak RSS is the child's own high-water mark from wait4):

  memory    peak RSS of one stacked epoch at --memory_sizes training images (0: all),
            each from a cold image cache (targets: <= 2 GB at the first; the last adds
            <= 0.5 GB).
  flat      the same on a synthetic folder of small PNGs written here (>= 100,000 by
            default, --flat_sizes), with a small network: memory must stay flat
            (largest / smallest <= 1.1).
  plain     rae_keras train from a cold cache (w1), then from the warm cache (w2), against
            a plain Keras fit of the same network on the same files with a minimal
            tf.data pipeline (w3): w3/w2 >= 0.95 (whole-process time).
  marginal  recursive and stacked training, 1 and --marginal_epochs epochs each, warm
            cache: the recursive marginal epoch (every stage once) <= 1.1 x stacked's,
            wall and CPU (loading and start-up cancel in the differences).

    python tools/benchmark.py --config=configs/seed_lfw128.cfg --data_dir=DIR \
        --rows=d,memory,flat,plain --epochs=1 --max_images=3072
    python tools/benchmark.py --data_dir=DIR --max_images=3072 --cache_frozen_prefix \
        --steps_per_execution=8 --rows=marginal

Every training row validates on the held-out split each epoch when it is non-empty
(rae_keras does; row a is given the same validation data so a and b do the same work).

Two times per row, from per-epoch seconds (epoch begin to end: the training steps and
the validation), which rae_keras records in the run's history (history.json, "seconds"
per epoch) and a callback measures the same way for row a:
  steady  epochs 2..E of every phase (phase = one `fit`: 1 for a and b, one per stage
          for c): the first epoch of every phase is excluded because it traces the
          train/test functions (and does any other per-phase start-up work, e.g. a
          per-stage prefix cache). Needs --epochs >= 2.
  wall    the whole call with E epochs per phase: model building, every epoch, the
          per-epoch checkpoints and TensorBoard summaries (b, c), everything.
Throughput = schedule-epoch images / time. Ratios are printed for both, each with
PASS/MISS against its target. "cores used" = the process' CPU seconds / wall seconds:
well under the core count means the run waited (or other processes took the CPU).
On a shared or noisy machine use --repeats=R: rows a, b, c run R times interleaved and
the least time of each is reported (all repeats are listed too).

The command line is rae_keras' own flags (`python -m rae_keras.train --help`; absl
flagfiles work: `--flagfile=configs/lfw64.cfg` applies a whole config) plus the
benchmark's few (--help lists them under "benchmark"). Defaults: the network, data and
batch flags of --config (configs/lfw64.cfg; --config= for none), --epochs=2 and
--max_images=2048. Data: --data_dir (a folder) or --dataset loads through rae_keras'
loader; neither: synthetic images. Rows b and c set the scheme themselves; nothing is
exported.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

# rae_keras first: it starts TensorFlow quietly for the project's commands and tools.
from rae_keras import config as config_lib  # noqa: E402
from rae_keras import flags as flags_lib  # noqa: E402  (the package's flags)

import keras  # noqa: E402

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "lfw64.cfg")

TARGET_B_OVER_A = 0.95  # rae_keras stacked img/s >= 0.95 x plain Keras
TARGET_C_OVER_B_TIME = 1.10  # recursive schedule time <= 1.1 x stacked, same epochs
TARGET_D_OVER_B = 3.0  # input pipeline img/s >= 3 x stacked training
TARGET_PLAIN_OVER_RAE = 0.95  # plain Keras whole-process time >= 0.95 x rae_keras'
TARGET_RSS_MB = 2048.0  # peak RSS, one seed-network epoch on 1,000 images
TARGET_RSS_ADDED_MB = 512.0  # ... and what every training image adds to it
TARGET_FLAT = 1.10  # peak RSS at 100,000+ small images / at 10,000


# ---------------------------------------------------------------------------
# Command line

# The benchmark's defaults where they differ from training's.
DEFAULT_ARGS = ("--epochs=2", "--max_images=2048")
# What --config contributes (as defaults): the network, the data's shape, the batch.
# Its other flags (name, dataset, scheme, epochs, ...) are the benchmark's business.
CONFIG_FLAGS = ("crop", "image_size", "channels", "filters", "kernel_sizes",
                "decoder_kernel_sizes", "activation", "normalization", "kernel_initializer",
                "batch_size", "learning_rate", "test_fraction", "seed", "summary_images")
ROWS = ("a", "b", "c", "d")
# Whole-process rows (child processes; opt in with --rows): peak memory, synthetic flat
# memory, rae_keras vs plain Keras (cold and warm cache), the recursive marginal epoch.
WHOLE_ROWS = ("memory", "flat", "plain", "marginal")

flags.DEFINE_string("config", DEFAULT_CONFIG,
                    "benchmark: a flagfile whose network, data and batch flags are the "
                    "defaults (configs/lfw64.cfg; empty: none). --flagfile applies a whole "
                    "file instead.")
flags.DEFINE_list("rows", list(ROWS),
                  f"benchmark: rows to run, from {','.join(ROWS + WHOLE_ROWS)} (the last four "
                  "run `python -m rae_keras.train` as child processes).")
flags.DEFINE_integer("repeats", 1,
                     "benchmark: run rows a, b, c this many times, interleaved; report the "
                     "best (least time) of each (all repeats are listed too).")
flags.DEFINE_float("pipeline_seconds", 2.0,
                   "benchmark: row d1 repeats its E epochs until this long has passed.")
flags.DEFINE_integer("intra_op_threads", 0, "benchmark: 0 = TensorFlow's default.")
flags.DEFINE_integer("inter_op_threads", 0, "benchmark: 0 = TensorFlow's default.")
flags.DEFINE_bool("keep_runs", False, "benchmark: keep the temporary run directories.")
flags.DEFINE_list("memory_sizes", ["1000", "5000", "0"],
                  "benchmark, row memory: training images of each run (0: all).")
flags.DEFINE_list("flat_sizes", ["10000", "100000"],
                  "benchmark, row flat: synthetic training images of each run.")
flags.DEFINE_integer("flat_image_size", 32, "benchmark, row flat: synthetic image size.")
flags.DEFINE_integer("marginal_epochs", 3,
                     "benchmark, row marginal: the longer run's epochs (the other has 1).")
flags.DEFINE_string("plain_fit_child", None,
                    "benchmark (internal): run the plain Keras child of row plain.")
FLAGS = flags.FLAGS
_OWN_FLAGS = (("benchmark", ("config", "rows", "repeats", "pipeline_seconds",
                             "intra_op_threads", "inter_op_threads", "keep_runs",
                             "memory_sizes", "flat_sizes", "flat_image_size",
                             "marginal_epochs")),)


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


def _config_defaults(path: str) -> List[str]:
    """--config's CONFIG_FLAGS, as absl reads the file (comments, nested flagfiles)."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: --config {path} does not exist")
    args = FLAGS.read_flags_from_files([f"--flagfile={path}"], force_gnu=False)
    return [a for a in args if a.lstrip("-").split("=", 1)[0] in CONFIG_FLAGS]


def parse_args(argv: Optional[Sequence[str]] = None) -> Options:
    """rae_keras' flags and the benchmark's, parsed by absl into FLAGS."""
    argv = list(sys.argv[1:] if argv is None else argv)
    program = os.path.basename(__file__)
    FLAGS.unparse_flags()
    flags_lib.parse_flags_or_exit([program, *DEFAULT_ARGS, *argv], _OWN_FLAGS)
    defaults = _config_defaults(FLAGS.config) if FLAGS.config else []
    FLAGS.unparse_flags()
    flags_lib.parse_flags_or_exit([program, *DEFAULT_ARGS, *defaults, *argv], _OWN_FLAGS)
    unknown_rows = set(FLAGS.rows) - set(ROWS + WHOLE_ROWS)
    if unknown_rows:
        raise SystemExit(f"error: --rows: unknown {sorted(unknown_rows)}; use "
                         f"{','.join(ROWS + WHOLE_ROWS)}")
    if FLAGS.repeats < 1:
        raise SystemExit("error: --repeats must be >= 1")
    try:
        memory_sizes = tuple(int(v) for v in FLAGS.memory_sizes)
        flat_sizes = tuple(sorted(int(v) for v in FLAGS.flat_sizes))
    except ValueError:
        raise SystemExit("error: --memory_sizes and --flat_sizes take integers") from None
    if FLAGS.marginal_epochs < 2:
        raise SystemExit("error: --marginal_epochs must be >= 2")
    synthetic = not (FLAGS.data_dir or FLAGS["dataset"].present)
    try:
        config = flags_lib.run_config_from_flags()
        if FLAGS.data_dir and not FLAGS["dataset"].present:
            config = dataclasses.replace(
                config, data=dataclasses.replace(config.data, dataset="folder")).validate()
    except config_lib.ConfigError as e:
        raise SystemExit(f"error: {e}")
    return Options(config=config, synthetic=synthetic, rows=tuple(FLAGS.rows),
                   repeats=FLAGS.repeats, pipeline_seconds=FLAGS.pipeline_seconds,
                   intra_op_threads=FLAGS.intra_op_threads,
                   inter_op_threads=FLAGS.inter_op_threads, keep_runs=FLAGS.keep_runs,
                   memory_sizes=memory_sizes, flat_sizes=flat_sizes,
                   flat_image_size=FLAGS.flat_image_size,
                   marginal_epochs=FLAGS.marginal_epochs)


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


def load_data(opts: Options, cache_dir: Optional[str] = None):
    """(DataSplits, description): the flags' data set as `python -m rae_keras.train`
    reads it (streamed from the image cache in `cache_dir`, built if needed), or
    synthetic images in memory."""
    from rae_keras import data as data_lib

    data = opts.config.data
    if not opts.synthetic:
        splits = data_lib.stream_splits(data, cache_dir=cache_dir)
        where = f"folder {data.data_dir}" if data.dataset == "folder" else data.dataset
        return splits, f"{where} ({len(splits.skipped)} files skipped)"
    n_train = data.max_images or 2048
    n_test = math.ceil(data.test_fraction * n_train) if data.test_fraction > 0 else 0
    images = synthetic_images(n_train + n_test, data.image_size, data.channels, data.seed)
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


def steady_from_history(history: Sequence[Dict]
                        ) -> Tuple[Optional[float], float, List[Tuple[str, float, List[float]]]]:
    """history: per phase {"phase": name, "seconds": [per epoch]} (the run state's
    history). Returns (steady seconds: epochs 2.. of every phase, schedule epochs they
    cover, per phase (name, first-epoch s, steady epoch s))."""
    steady, epochs, detail = 0.0, 0, []
    for entry in history:
        seconds = list(entry.get("seconds", []))
        if not seconds:
            continue
        steady += sum(seconds[1:])
        epochs += len(seconds) - 1
        detail.append((str(entry["phase"]), seconds[0], seconds[1:]))
    if not detail or epochs == 0:
        return None, 0.0, detail
    return steady, epochs / len(detail), detail


# ---------------------------------------------------------------------------
# Environment: devices, threads, precision


def configure_threads(opts: Options) -> None:
    """Thread pools: must be set before TensorFlow's runtime starts."""
    import tensorflow as tf

    if opts.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(opts.intra_op_threads)
    if opts.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(opts.inter_op_threads)


def make_strategy(opts: Options):
    """The strategy rae_keras' driver would build (before any other TF work), shared
    by rows a, b and c."""
    from rae_keras import distribute

    return distribute.make_strategy(opts.config.distribute)


def mixed_policy_name(enabled: bool) -> Optional[str]:
    from rae_keras import distribute

    return distribute.mixed_precision_policy(enabled)


def describe_environment() -> List[str]:
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


def _run_config(opts: Options, scheme: str, model_dir: str) -> config_lib.RunConfig:
    """The flags' configuration with the row's scheme, in model_dir, exporting nothing."""
    config = opts.config
    return dataclasses.replace(config, name=f"bench_{scheme}", model_dir=model_dir,
                               export_dir="",
                               train=dataclasses.replace(config.train, scheme=scheme))


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
        replicas = int(strategy.num_replicas_in_sync)
        global_batch = batch_size * replicas
        drop = replicas > 1
        steps = n_train // global_batch if drop else math.ceil(n_train / global_batch)
        return cls(strategy, replicas, global_batch, drop, steps,
                   steps * global_batch if drop else n_train)


def _plain_fit(config: config_lib.RunConfig, splits, batching: Batching, images, *,
               epochs: int, seconds: Optional[list] = None) -> Tuple[float, float]:
    """Builds, compiles and fits the full network with plain Keras; returns (seconds,
    CPU seconds) of the fit. `seconds` receives each epoch's, measured as rae_keras
    measures its own (epoch begin to end, validation included)."""
    import tensorflow as tf

    from rae_keras import distribute
    from rae_keras.models import ConvAutoencoder
    from rae_keras.runs import image_shape_of

    train = config.train
    keras.utils.set_random_seed(train.seed)
    policy = mixed_policy_name(train.mixed_precision)
    with batching.strategy.scope():
        model = ConvAutoencoder.from_model_config(config.model, image_shape_of(config),
                                                  dtype=policy).full_model()
        model.compile(optimizer=distribute.make_optimizer(train.learning_rate, policy),
                      loss="mse", steps_per_execution=train.steps_per_execution)
    x = tf.convert_to_tensor(images)
    train_ds = (tf.data.Dataset.from_tensor_slices((x, x))
                .shuffle(len(images), seed=train.seed, reshuffle_each_iteration=True)
                .batch(batching.global_batch, drop_remainder=batching.drop_remainder)
                .prefetch(tf.data.AUTOTUNE))
    val_ds = None
    if seconds is not None and len(splits.test.images) >= (
            batching.global_batch if batching.drop_remainder else 1):
        v = tf.convert_to_tensor(splits.test.images)
        val_ds = (tf.data.Dataset.from_tensor_slices((v, v))
                  .batch(batching.global_batch, drop_remainder=batching.drop_remainder)
                  .prefetch(tf.data.AUTOTUNE))
    callbacks = [EpochSeconds(seconds)] if seconds is not None else []
    cpu, start = time.process_time(), time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0,
              shuffle=False)  # the dataset shuffles
    return time.perf_counter() - start, time.process_time() - cpu


class EpochSeconds(keras.callbacks.Callback):
    """Each epoch's seconds, begin to end (validation included), as rae_keras records
    them in its history."""

    def __init__(self, seconds: list):
        super().__init__()
        self.seconds, self._started = seconds, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def row_a(opts: Options, splits, batching: Batching) -> Row:
    seconds: List[float] = []
    wall, cpu = _plain_fit(opts.config, splits, batching, splits.train.images,
                           epochs=opts.epochs, seconds=seconds)
    steady, steady_epochs, phases = steady_from_history([{"phase": "fit", "seconds": seconds}])
    return Row("a", "plain Keras `model.fit`, full network, minimal tf.data",
               batching.images_per_epoch, opts.epochs, wall, steady, steady_epochs,
               phases=phases, cpu_s=cpu)


def row_rae(opts: Options, splits, batching: Batching, scheme: str, model_dir: str) -> Row:
    """What `python -m rae_keras.train` does, timed: build the model, `rae_keras.fit`
    in a fresh run directory (checkpoints and summaries every epoch; no export). The
    steady time comes from the epoch seconds fit records in the run's history."""
    from rae_keras import training

    config = _run_config(opts, scheme, model_dir)
    log: List[str] = []
    cpu, start = time.process_time(), time.perf_counter()
    model = training.build_model(config, batching.strategy)
    history = training.fit(model, splits.train.images, validation_data=splits.test.images,
                           model_dir=config.model_dir, strategy=batching.strategy,
                           run_config=config, log=log.append, verbose=0,
                           **dataclasses.asdict(config.train))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    steady, steady_epochs, phases = steady_from_history(
        [{"phase": name, **entry} for name, entry in history.items()])
    n_phases = max(len(phases), 1)
    epochs_done = sum(len(entry["seconds"]) for entry in history.values())
    if scheme == "stacked":
        key, what = "b", "rae_keras stacked (`rae_keras.fit`)"
    else:
        key, what = "c", (f"rae_keras recursive, whole schedule ({n_phases} stages x "
                          f"{opts.epochs} epochs; img/s per schedule epoch)")
    note = "" if epochs_done == n_phases * opts.epochs else (
        f"{epochs_done} epochs done, expected {n_phases * opts.epochs}")
    return Row(key, what, batching.images_per_epoch, opts.epochs, wall, steady, steady_epochs,
               note=note, phases=phases, cpu_s=cpu)


def row_d1(opts: Options, splits, batching: Batching, min_seconds: float = 2.0) -> Row:
    """The pipeline training consumes, iterated with no model: E epochs, repeated (a
    fresh iterator each time, as every `fit` makes) until min_seconds have passed, since
    with prefetching a short run mostly measures the buffer."""
    from rae_keras import records

    cpu, start = time.process_time(), time.perf_counter()
    ds = records.as_image_set(splits.train.images).epoch_batches(
        batching.global_batch, seed=opts.config.train.seed * 1000, first_epoch=0,
        epochs=opts.epochs, drop_remainder=batching.drop_remainder)
    iterate_from = time.perf_counter()
    batches, passes = 0, 0
    while passes < 1 or (time.perf_counter() - iterate_from < min_seconds and passes < 100):
        for _ in ds:
            batches += 1
        passes += 1
    end = time.perf_counter()
    if batches != passes * batching.steps_per_epoch * opts.epochs:
        raise RuntimeError(f"epoch_batches gave {batches} batches in {passes} passes, "
                           f"expected {batching.steps_per_epoch * opts.epochs} per pass")
    epochs = passes * opts.epochs
    where = ("in memory" if isinstance(splits.train.images, np.ndarray)
             else "streamed from the warm image cache")
    return Row("d1", f"input pipeline alone: `epoch_batches`, what training consumes "
               f"({where}, no model)", batching.images_per_epoch, epochs,
               end - start, end - iterate_from, epochs, cpu_s=time.process_time() - cpu,
               note=f"{passes} pass(es) over {opts.epochs} epochs; steady = iteration only, "
                    f"wall adds building the dataset (a copy of the images)")


def row_d2(opts: Options, splits, batching: Batching) -> Row:
    """JPEG files -> model inputs, decoded as the folder loader does; one pass."""
    import tensorflow as tf

    from rae_keras import data as data_lib
    from rae_keras import preprocessing

    data = opts.config.data
    paths = data_lib.list_images(data.data_dir)
    n = min(len(splits.train.images), len(paths))
    chosen = np.sort(np.random.default_rng(data.seed).permutation(len(paths))[:n])
    paths = np.array(paths)[chosen]
    cpu, start = time.process_time(), time.perf_counter()
    ds = (tf.data.Dataset.from_tensor_slices(paths)
          .map(lambda p: preprocessing.preprocess_bytes(tf.io.read_file(p), data.crop,
                                                        data.image_size, data.channels),
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
# Whole-process rows: child processes, timed and measured from outside


@dataclasses.dataclass
class Process:
    """One child process: its wall and CPU seconds and its peak resident memory."""
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # the child's own high-water mark (wait4's ru_maxrss)
    output: str

    @property
    def train_images(self) -> Optional[int]:
        """The training images `python -m rae_keras.train` reported loading."""
        for line in self.output.splitlines():
            if line.startswith("data: ") and " training and " in line:
                return int(line.split()[1])
        return None


def run_process(command: Sequence[str]) -> Process:
    """Runs `command` from the repository root; its wall time, CPU time and peak RSS
    (the whole process, as the kernel counts it). A failure is an error with its
    output's tail."""
    import subprocess

    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        child = subprocess.Popen(list(command), cwd=ROOT, stdout=output,
                                 stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}:\n"
                           f"{text[-3000:]}")
    return Process(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, text)


# The flags a training child takes from the benchmark's command line (the network, the
# data, the batch and the speed settings); each row adds its own.
CHILD_FLAGS = CONFIG_FLAGS + ("data_dir", "tfds_name", "tfds_data_dir",
                              "mixed_precision", "cache_frozen_prefix",
                              "steps_per_execution", "learning_rate_schedule", "strategy",
                              "cpu_devices")


def child_flags(opts: Options, overrides: Sequence[str] = ()) -> List[str]:
    """The benchmark's settings as `python -m rae_keras.train` flags, then `overrides`."""
    own = [s for s in (FLAGS[name].serialize() for name in CHILD_FLAGS) if s]
    return own + [f"--dataset={opts.config.data.dataset}", *overrides]


def train_process(opts: Options, workdir: str, cache_dir: str, *, max_images: int,
                  scheme: str = "stacked",
                  epochs: int = 1, flags_: Sequence[str] = ()) -> Process:
    """`python -m rae_keras.train` with the benchmark's settings in a fresh run directory
    (no export), reading and building the image cache in `cache_dir`."""
    model_dir = tempfile.mkdtemp(prefix=f"{scheme}_e{epochs}_", dir=workdir)
    try:
        return run_process([
            sys.executable, "-m", "rae_keras.train",
            *child_flags(opts, [*flags_, f"--max_images={max_images}", f"--scheme={scheme}",
                          f"--epochs={epochs}", "--finetune_epochs=0", "--name=benchmark",
                          f"--model_dir={model_dir}", "--export_dir=", "--notflite",
                          f"--cache_dir={cache_dir}"])])
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


@dataclasses.dataclass
class WholeRow:
    key: str
    what: str
    images: Optional[int]  # training images
    process: Process

    def line(self) -> str:
        p = self.process
        return (f"| {self.key} | {self.what} | {_fmt(self.images)} | {p.wall_s:.1f} | "
                f"{p.cpu_s:.1f} | {p.peak_rss_mb:,.0f} |")


def whole_memory(opts: Options, workdir: str) -> List[WholeRow]:
    """Peak RSS of one stacked epoch at each --memory_sizes (0: every training image),
    each from a cold cache (the process decodes and caches its images)."""
    rows = []
    for size in opts.memory_sizes:
        cache_dir = tempfile.mkdtemp(prefix="cache_", dir=workdir)
        process = train_process(opts, workdir, cache_dir, max_images=size)
        shutil.rmtree(cache_dir, ignore_errors=True)
        rows.append(WholeRow(f"m{len(rows) + 1}", f"peak RSS, one stacked epoch, "
                             f"{'all' if size == 0 else f'{size:,}'} images, cold cache",
                             process.train_images, process))
    return rows


def write_synthetic_folder(directory: str, count: int, size: int, seed: int = 0,
                           per_identity: int = 10) -> None:
    """`count` small PNGs (smooth random blobs, `synthetic_images`), `per_identity`
    files per identity (flat folder: identity_NNNN.png), written as fast as Python can."""
    import zlib

    def png(pixels: np.ndarray) -> bytes:  # minimal RGB PNG, no filter
        import struct

        h, w, _ = pixels.shape
        raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(
                ">I", zlib.crc32(body) & 0xFFFFFFFF)

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0,
                                                                  0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))

    os.makedirs(directory, exist_ok=True)
    chunk_size = 1024
    for start in range(0, count, chunk_size):
        n = min(chunk_size, count - start)
        images = (synthetic_images(n, size, 3, seed + start) * 255).astype(np.uint8)
        for i, pixels in enumerate(images):
            index = start + i
            name = f"s{index // per_identity:07d}_{index % per_identity + 1:04d}.png"
            with open(os.path.join(directory, name), "wb") as f:
                f.write(png(pixels))


# The flat-memory rows' network: small, for small images.
FLAT_NETWORK = ("--filters=8,16", "--kernel_sizes=3", "--decoder_kernel_sizes=",
                "--normalization=none", "--crop=0", "--channels=3", "--dataset=folder",
                "--steps_per_execution=8")


def whole_flat(opts: Options, workdir: str) -> Tuple[List[WholeRow], str]:
    """Peak RSS of one stacked epoch at each --flat_sizes on a synthetic folder of small
    PNGs generated here (enough for the largest size after the test identities are
    held out), each from a cold cache."""
    test_fraction = opts.config.data.test_fraction
    total = math.ceil(max(opts.flat_sizes) / (1.0 - test_fraction)) + 10
    folder = os.path.join(workdir, "synthetic_pngs")
    started = time.perf_counter()
    write_synthetic_folder(folder, total, opts.flat_image_size)
    note = (f"flat rows: {total:,} synthetic {opts.flat_image_size}x{opts.flat_image_size} "
            f"PNGs written in {time.perf_counter() - started:.1f} s (not timed); network "
            f"{' '.join(FLAT_NETWORK[:2])}, batch {opts.config.train.batch_size}")
    rows = []
    for size in opts.flat_sizes:
        cache_dir = tempfile.mkdtemp(prefix="cache_", dir=workdir)
        process = train_process(opts, workdir, cache_dir, max_images=size, flags_=(
            *FLAT_NETWORK, f"--data_dir={folder}", f"--image_size={opts.flat_image_size}"))
        shutil.rmtree(cache_dir, ignore_errors=True)
        rows.append(WholeRow(f"f{len(rows) + 1}", f"peak RSS, one stacked epoch, {size:,} "
                             f"synthetic {opts.flat_image_size}px images, cold cache",
                             process.train_images, process))
    shutil.rmtree(folder, ignore_errors=True)
    return rows, note


def plain_fit_child(spec_path: str) -> None:
    """The plain Keras side of the whole-process comparison, in its own process: the
    same network (ConvAutoencoder's full model) compiled with Adam + "mse", fitted on
    the same image files through a minimal tf.data pipeline (read, decode, crop and
    resize as rae_keras does, cache, shuffle, batch, prefetch), validated on the same
    test images every epoch."""
    import json

    import tensorflow as tf

    from rae_keras import distribute, preprocessing
    from rae_keras.models import ConvAutoencoder

    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    config = flags_lib.run_config_from_flags()
    data, train = config.data, config.train
    keras.utils.set_random_seed(train.seed)
    model = ConvAutoencoder.from_model_config(
        config.model, (data.image_size, data.image_size, data.channels)).full_model()
    model.compile(optimizer=distribute.make_optimizer(train.learning_rate, None), loss="mse",
                  steps_per_execution=train.steps_per_execution)

    def images(paths):
        return (tf.data.Dataset.from_tensor_slices(paths)
                .map(lambda p: preprocessing.preprocess_bytes(
                    tf.io.read_file(p), data.crop, data.image_size, data.channels),
                     num_parallel_calls=tf.data.AUTOTUNE)
                .ignore_errors().map(lambda x: (x, x)).cache())

    train_ds = (images(spec["train"]).shuffle(len(spec["train"]), seed=train.seed)
                .batch(train.batch_size).prefetch(tf.data.AUTOTUNE))
    val_ds = (images(spec["test"]).batch(train.batch_size).prefetch(tf.data.AUTOTUNE)
              if spec["test"] else None)
    model.fit(train_ds, validation_data=val_ds, epochs=train.epochs, verbose=0)
    print(f"data: {len(spec['train'])} training and {len(spec['test'])} test images")


def whole_versus_plain(opts: Options, workdir: str, cache_dir: str
                       ) -> Tuple[List[WholeRow], List[str]]:
    """`python -m rae_keras.train` (stacked, --epochs, from a cold and then the warm
    cache) against a plain Keras fit of the same network on the same image files in
    its own process (`plain_fit_child`)."""
    import json

    from rae_keras import data as data_lib
    from rae_keras import sources

    data = opts.config.data
    listed = sources.list_source(data)
    train_idx, test_idx = data_lib.split_indices(listed.identities, data)
    spec_path = os.path.join(workdir, "plain_fit.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump({"train": [listed.paths[i] for i in train_idx],
                   "test": [listed.paths[i] for i in test_idx]}, f)
    cold = train_process(opts, workdir, cache_dir, max_images=data.max_images, epochs=opts.epochs)
    warm = train_process(opts, workdir, cache_dir, max_images=data.max_images, epochs=opts.epochs)
    plain = run_process([sys.executable, os.path.abspath(__file__),
                         *child_flags(opts, [f"--max_images={data.max_images}",
                                       f"--epochs={opts.epochs}",
                                       f"--plain_fit_child={spec_path}"])])
    what = f"{opts.epochs} stacked epoch(s), whole process"
    rows = [WholeRow("w1", f"rae_keras train, cold cache (decodes, writes the cache); {what}",
                     cold.train_images, cold),
            WholeRow("w2", f"rae_keras train, warm cache; {what}", warm.train_images, warm),
            WholeRow("w3", f"plain Keras fit, same network and files, minimal tf.data; {what}",
                     plain.train_images, plain)]
    lines = [_ratio_line("w3/w2 plain Keras / rae_keras (warm cache), whole-process time",
                         _ratio(plain.wall_s, warm.wall_s), TARGET_PLAIN_OVER_RAE, True),
             _ratio_line("w3/w1 plain Keras / rae_keras (cold cache), whole-process time",
                         _ratio(plain.wall_s, cold.wall_s), TARGET_PLAIN_OVER_RAE, True),
             "w1/w2 cold / warm cache, whole-process time: "
             f"{_fmt(_ratio(cold.wall_s, warm.wall_s), 2)}"]
    return rows, lines


def whole_marginal(opts: Options, workdir: str, cache_dir: str
                   ) -> Tuple[List[WholeRow], List[str]]:
    """The recursive schedule's marginal epoch (every stage once) against stacked
    training's, whole process: (time with --marginal_epochs - time with 1) / (their
    difference), so loading and start-up cancel. Warm cache."""
    rows, times = [], {}
    high = opts.marginal_epochs
    for scheme in ("stacked", "recursive"):
        for epochs in (1, high):
            process = train_process(opts, workdir, cache_dir,
                                    max_images=opts.config.data.max_images, scheme=scheme,
                                    epochs=epochs)
            times[scheme, epochs] = process
            rows.append(WholeRow(f"r{len(rows) + 1}", f"{scheme}, {epochs} epoch(s)"
                                 f"{' per stage' if scheme == 'recursive' else ''}, whole process",
                                 process.train_images, process))
    lines = []
    for clock in ("wall_s", "cpu_s"):
        marginal = {s: (getattr(times[s, high], clock) - getattr(times[s, 1], clock)) / (high - 1)
                    for s in ("stacked", "recursive")}
        name = "wall" if clock == "wall_s" else "CPU"
        lines.append(_ratio_line(
            f"marginal epoch recursive / stacked ({name}: {marginal['recursive']:.1f} s / "
            f"{marginal['stacked']:.1f} s)", _ratio(marginal["recursive"], marginal["stacked"]),
            TARGET_C_OVER_B_TIME, False))
    return rows, lines


def _ratio_line(label: str, value: Optional[float], target: float, at_least: bool,
                digits: int = 3) -> str:
    op = ">=" if at_least else "<="
    return (f"{label}: {_fmt(value, digits)} {_verdict(value, target, at_least)} "
            f"(target {op} {target:g})")


def memory_lines(memory: List[WholeRow], flat: List[WholeRow]) -> List[str]:
    lines = []
    if memory:
        low, high = memory[0].process.peak_rss_mb, memory[-1].process.peak_rss_mb
        lines.append(_ratio_line(f"m1 peak RSS at {_fmt(memory[0].images)} images (MB)", low,
                                 TARGET_RSS_MB, False, digits=0))
        if len(memory) > 1:
            lines.append(_ratio_line(
                f"m{len(memory)}-m1 peak RSS added by {_fmt(memory[-1].images)} images (MB)",
                high - low, TARGET_RSS_ADDED_MB, False, digits=0))
    if len(flat) > 1:
        low, high = flat[0].process.peak_rss_mb, flat[-1].process.peak_rss_mb
        lines.append(_ratio_line(
            f"f{len(flat)}/f1 peak RSS, {_fmt(flat[-1].images)} / {_fmt(flat[0].images)} "
            "images (flat: <= 1.1)", _ratio(high, low), TARGET_FLAT, False))
    return lines


def whole_report(rows: List[WholeRow], lines: List[str], out: Callable[[str], None]) -> None:
    out("")
    out("| row | what | training images | wall s | CPU s | peak RSS MB |")
    out("|---|---|---:|---:|---:|---:|")
    for row in rows:
        out(row.line())
    out("")
    for line in lines:
        out(line)


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


def in_memory(splits):
    """`splits` with float32 arrays (plain Keras' rows take numpy)."""
    from rae_keras import records

    def arrays(split):
        return dataclasses.replace(split, images=records.as_image_set(split.images).to_numpy())

    return dataclasses.replace(splits, train=arrays(splits.train), test=arrays(splits.test))


def main(argv: Optional[Sequence[str]] = None, out: Callable[[str], None] = print) -> Dict:
    opts = parse_args(argv)
    if FLAGS.plain_fit_child:
        plain_fit_child(FLAGS.plain_fit_child)
        return {}
    config = opts.config
    configure_threads(opts)
    try:
        strategy = make_strategy(opts)  # before any other TensorFlow work
    except config_lib.ConfigError as e:
        raise SystemExit(f"error: {e}")
    load_before = load_average()
    workdir = tempfile.mkdtemp(prefix="rae_benchmark_")
    cache_dir = FLAGS.cache_dir or os.path.join(workdir, "cache")
    started = time.perf_counter()
    try:
        splits, source = load_data(opts, cache_dir)
    except (config_lib.ConfigError, OSError, ValueError) as e:
        shutil.rmtree(workdir, ignore_errors=True)
        raise SystemExit(f"error: {e}")
    load_s = time.perf_counter() - started
    if config.data.test_fraction <= 0 and isinstance(splits.test.images, np.ndarray):
        splits = dataclasses.replace(splits, test=dataclasses.replace(
            splits.test, images=splits.test.images[:0], identities=splits.test.identities[:0]))
    n_train, n_test = len(splits.train.images), len(splits.test.images)
    batching = Batching.of(strategy, config.train.batch_size, n_train)
    if batching.steps_per_epoch < 1:
        raise SystemExit(f"error: {n_train} training images are fewer than one global "
                         f"batch ({batching.global_batch})")

    from rae_keras import distribute

    multi_worker = distribute.is_multi_worker(strategy)
    notes = [
        "steady = epochs 2..E of every phase (each phase's first epoch traces the "
        "train/test functions and is excluded), each epoch from its begin to its end "
        "(training steps and validation; b and c from the run's history.json); wall = the "
        "whole call with everything included (b, c: model building, per-epoch checkpoints "
        "and summaries); img/s = schedule epochs x images per epoch / time; cores used = "
        "process CPU s / wall s"]
    if opts.epochs < 2:
        notes.append("--epochs=1: no steady numbers (the only epoch includes tracing)")
    if config.train.cache_frozen_prefix:
        notes.append("--cache_frozen_prefix: each stage computes its cached h_(k-1) before "
                     "its first epoch; only the wall numbers include that")
    if multi_worker and "a" in opts.rows:
        notes.append("row a skipped: Keras fit does not run under MultiWorkerMirroredStrategy")

    rows: List[Row] = []
    whole_rows: List[WholeRow] = []
    whole_lines: List[str] = []
    try:
        needs_arrays = {"a", "b", "c"} & set(opts.rows) and not multi_worker
        memory = in_memory(splits) if needs_arrays else splits  # plain Keras' arrays
        if {"a", "b", "c"} & set(opts.rows) and not multi_worker:
            # Process start-up costs (thread pools, oneDNN kernels for these shapes) go
            # to a throwaway fit, not to whichever row happens to run first.
            warm = memory.train.images[:min(n_train, 4 * batching.global_batch)]
            _plain_fit(config, memory, Batching.of(strategy, config.train.batch_size, len(warm)),
                       warm, epochs=1)
        runs: Dict[str, List[Row]] = {}
        for repeat in range(opts.repeats):
            if "a" in opts.rows and not multi_worker:
                runs.setdefault("a", []).append(row_a(opts, memory, batching))
            for key, scheme in (("b", "stacked"), ("c", "recursive")):
                if key in opts.rows:
                    model_dir = os.path.join(workdir, f"{scheme}_{repeat}")
                    runs.setdefault(key, []).append(
                        row_rae(opts, splits, batching, scheme, model_dir))
        rows.extend(best_of(repeats) for repeats in runs.values())
        if opts.repeats > 1:
            notes.append(f"best of {opts.repeats} interleaved repeats per column; all "
                         "repeats (steady s / wall s): " + "; ".join(
                             f"{key} " + ", ".join(f"{_fmt(r.steady_s, 2)}/{r.wall_s:.2f}"
                                                   for r in repeats)
                             for key, repeats in runs.items()))
        if "d" in opts.rows:
            rows.append(row_d1(opts, splits, batching, opts.pipeline_seconds))
            if not opts.synthetic and config.data.dataset == "folder":
                rows.append(row_d2(opts, splits, batching))
        whole_rows, whole_lines = run_whole_rows(opts, workdir, cache_dir, notes)
    finally:
        if opts.keep_runs:
            out(f"kept run directories under {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    data, model, train = config.data, config.model, config.train
    kernels = ",".join(map(str, model.kernel_sizes))
    decoder = ",".join(map(str, model.decoder_kernel_sizes)) or "= encoder"
    settings = [
        "## rae_keras training benchmark",
        f"data: {source}; {n_train} training images ({batching.images_per_epoch} per epoch), "
        f"{n_test} validation images (validated every epoch in a, b, c); "
        f"{data.image_size}x{data.image_size}x{data.channels}, crop {data.crop}; loaded in "
        f"{load_s:.1f} s (not timed)",
        f"network: filters {','.join(map(str, model.filters))}, kernels {kernels}, decoder "
        f"kernels {decoder}, {model.activation}, normalization {model.normalization}",
        f"training: {train.epochs} epoch(s) per phase, batch {train.batch_size} per replica x "
        f"{batching.replicas} = {batching.global_batch}, Adam {train.learning_rate:g}, "
        f"mixed_precision {train.mixed_precision} "
        f"({mixed_policy_name(train.mixed_precision) or 'float32'}), cache_frozen_prefix "
        f"{train.cache_frozen_prefix}, steps_per_execution {train.steps_per_execution}; "
        f"{distribute.describe(strategy)} (--strategy={config.distribute.strategy}, "
        f"--cpu_devices={config.distribute.cpu_devices})",
        *describe_environment(),
        f"load average (1/5/15 min): {load_before} before, {load_average()} after",
    ]
    values = report(rows, settings, notes, out)
    if whole_rows:
        whole_report(whole_rows, whole_lines, out)
    return {"rows": {r.key: r for r in rows}, "ratios": values,
            "whole": {r.key: r for r in whole_rows}, "whole_lines": whole_lines}


def run_whole_rows(opts: Options, workdir: str, cache_dir: str, notes: List[str]
                   ) -> Tuple[List[WholeRow], List[str]]:
    """The whole-process rows --rows asks for (child processes, one at a time)."""
    rows: List[WholeRow] = []
    lines: List[str] = []
    wanted = [key for key in WHOLE_ROWS if key in opts.rows]
    if opts.synthetic and set(wanted) - {"flat"}:
        notes.append("rows memory, plain and marginal skipped: they need --data_dir (or "
                     "--dataset)")
        wanted = [key for key in wanted if key == "flat"]
    memory, flat = [], []
    if "memory" in wanted:
        memory = whole_memory(opts, workdir)
    if "flat" in wanted:
        flat, note = whole_flat(opts, workdir)
        notes.append(note)
    rows += memory + flat
    lines += memory_lines(memory, flat)
    if "plain" in wanted:
        more, more_lines = whole_versus_plain(
            opts, workdir, tempfile.mkdtemp(prefix="cold_cache_", dir=workdir))
        rows += more
        lines += more_lines
    if "marginal" in wanted:
        more, more_lines = whole_marginal(opts, workdir, cache_dir)
        rows += more
        lines += more_lines
    if rows:
        notes.append("whole-process rows: `python -m rae_keras.train` (or the plain Keras "
                     "child) run as a child process, timed from outside: wall s from start "
                     "to exit, CPU s and peak RSS (ru_maxrss, the whole process) from its "
                     "rusage")
    return rows, lines


if __name__ == "__main__":
    main()
    sys.exit(0)
