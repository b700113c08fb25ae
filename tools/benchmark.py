#!/usr/bin/env python3
"""Training throughput: plain Keras vs rae_keras stacked vs the recursive schedule vs input.

    python tools/benchmark.py                                   # synthetic images
    python tools/benchmark.py --data_dir=/work/shared/data/lfw-deepfunneled-dev --max_images=4096
    python tools/benchmark.py --data_dir=... --cache_frozen_prefix --steps_per_execution=8

One process, one data set (loaded before any timing, never counted), one network and
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
  d1  the pipeline training consumes: `data.epoch_batches(...)` (what `rae_keras.fit`
      feeds Keras `fit`) iterated with no model.
  d2  (folder source only) decoding the JPEG files into model inputs, as loading does
      (`preprocessing.preprocess_bytes` in a parallel tf.data map). It runs once at
      load time, not every epoch.

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

flags.DEFINE_string("config", DEFAULT_CONFIG,
                    "benchmark: a flagfile whose network, data and batch flags are the "
                    "defaults (configs/lfw64.cfg; empty: none). --flagfile applies a whole "
                    "file instead.")
flags.DEFINE_list("rows", list(ROWS), "benchmark: rows to run, from a,b,c,d.")
flags.DEFINE_integer("repeats", 1,
                     "benchmark: run rows a, b, c this many times, interleaved; report the "
                     "best (least time) of each (all repeats are listed too).")
flags.DEFINE_float("pipeline_seconds", 2.0,
                   "benchmark: row d1 repeats its E epochs until this long has passed.")
flags.DEFINE_integer("intra_op_threads", 0, "benchmark: 0 = TensorFlow's default.")
flags.DEFINE_integer("inter_op_threads", 0, "benchmark: 0 = TensorFlow's default.")
flags.DEFINE_bool("keep_runs", False, "benchmark: keep the temporary run directories.")
FLAGS = flags.FLAGS
_OWN_FLAGS = (("benchmark", ("config", "rows", "repeats", "pipeline_seconds",
                             "intra_op_threads", "inter_op_threads", "keep_runs")),)


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
    unknown_rows = set(FLAGS.rows) - set(ROWS)
    if unknown_rows:
        raise SystemExit(f"error: --rows: unknown {sorted(unknown_rows)}; use a,b,c,d")
    if FLAGS.repeats < 1:
        raise SystemExit("error: --repeats must be >= 1")
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
                   inter_op_threads=FLAGS.inter_op_threads, keep_runs=FLAGS.keep_runs)


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


def load_data(opts: Options):
    """(DataSplits, description): the flags' data set through rae_keras' own loader,
    or synthetic images."""
    from rae_keras import data as data_lib

    data = opts.config.data
    if not opts.synthetic:
        splits = data_lib.load_splits(data)
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
    from rae_keras import data as data_lib

    cpu, start = time.process_time(), time.perf_counter()
    ds = data_lib.epoch_batches(splits.train.images, batching.global_batch,
                                seed=opts.config.train.seed * 1000, first_epoch=0,
                                epochs=opts.epochs,
                                drop_remainder=batching.drop_remainder)
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
    return Row("d1", "input pipeline alone: `data.epoch_batches`, what training consumes "
               "(in memory, no model)", batching.images_per_epoch, epochs,
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
    opts = parse_args(argv)
    config = opts.config
    configure_threads(opts)
    try:
        strategy = make_strategy(opts)  # before any other TensorFlow work
    except config_lib.ConfigError as e:
        raise SystemExit(f"error: {e}")
    load_before = load_average()
    started = time.perf_counter()
    try:
        splits, source = load_data(opts)
    except (config_lib.ConfigError, OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    load_s = time.perf_counter() - started
    if config.data.test_fraction <= 0:
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
    workdir = tempfile.mkdtemp(prefix="rae_benchmark_")
    try:
        if {"a", "b", "c"} & set(opts.rows) and not multi_worker:
            # Process start-up costs (thread pools, oneDNN kernels for these shapes) go
            # to a throwaway fit, not to whichever row happens to run first.
            warm = splits.train.images[:min(n_train, 4 * batching.global_batch)]
            _plain_fit(config, splits, Batching.of(strategy, config.train.batch_size, len(warm)),
                       warm, epochs=1)
        runs: Dict[str, List[Row]] = {}
        for repeat in range(opts.repeats):
            if "a" in opts.rows and not multi_worker:
                runs.setdefault("a", []).append(row_a(opts, splits, batching))
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
    return {"rows": {r.key: r for r in rows}, "ratios": values}


if __name__ == "__main__":
    main()
    sys.exit(0)
