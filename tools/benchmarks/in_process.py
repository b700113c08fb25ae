"""The session in-process rows (a-d) share: one strategy, one data set loaded before
any timing (never counted), one batching, a warm-up fit; and the report's settings and
notes about them."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Callable, List, Optional

import numpy as np

from rae_keras import config as config_lib
from rae_keras import distribute

from .environment import Batching, configure_threads, describe_environment, load_average
from .inputs import in_memory, load_data
from .options import Options
from .training_rows import warm_up


@dataclasses.dataclass
class Session:
    strategy: object
    multi_worker: bool
    splits: object  # DataSplits, as `python -m rae_keras.train` reads them
    arrays: object  # the same in float32 arrays (plain Keras' row a), or `splits`
    source: str  # what the data is
    load_s: float
    batching: Batching
    workdir: str  # the rows' temporary run directories (and cache, without --cache_dir)
    cache_dir: str
    load_before: str  # the load average before anything ran


def start(opts: Options, cache_dir: Optional[str], fits: bool) -> Session:
    """Threads and strategy (before any other TensorFlow work), then the data in a fresh
    work directory; `fits`: rows that fit models will run, so warm the process up."""
    configure_threads(opts)
    try:
        strategy = distribute.make_strategy(opts.config.distribute)
    except config_lib.ConfigError as e:
        raise SystemExit(f"error: {e}")
    load_before = load_average()
    workdir = tempfile.mkdtemp(prefix="rae_benchmark_")
    try:
        return _prepare(opts, strategy, workdir, cache_dir or os.path.join(workdir, "cache"),
                        load_before, fits)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _without_test(opts: Options, splits):
    """No validation split when --test_fraction <= 0 (in-memory data)."""
    if opts.config.data.test_fraction > 0 or not isinstance(splits.test.images, np.ndarray):
        return splits
    return dataclasses.replace(splits, test=dataclasses.replace(
        splits.test, images=splits.test.images[:0], identities=splits.test.identities[:0]))


def _prepare(opts: Options, strategy, workdir: str, cache_dir: str, load_before: str,
             fits: bool) -> Session:
    started = time.perf_counter()
    try:
        splits, source = load_data(opts, cache_dir)
    except (config_lib.ConfigError, OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    load_s = time.perf_counter() - started
    splits = _without_test(opts, splits)
    n_train = len(splits.train.images)
    batching = Batching.of(strategy, opts.config.train.batch_size, n_train)
    if batching.steps_per_epoch < 1:
        raise SystemExit(f"error: {n_train} training images are fewer than one global "
                         f"batch ({batching.global_batch})")
    multi_worker = distribute.is_multi_worker(strategy)
    arrays = splits
    if fits and not multi_worker:
        arrays = in_memory(splits)
        warm_up(opts.config, arrays, batching)
    return Session(strategy, multi_worker, splits, arrays, source, load_s, batching, workdir,
                   cache_dir, load_before)


def finish(opts: Options, session: Session, out: Callable[[str], None]) -> None:
    """Removes the work directory, or says where it is kept (--keep_runs)."""
    if opts.keep_runs:
        out(f"kept run directories under {session.workdir}")
    else:
        shutil.rmtree(session.workdir, ignore_errors=True)


def notes(opts: Options, session: Session, keras_fit_rows: List[str]) -> List[str]:
    """What the in-process table's columns mean, and what these settings change."""
    lines = [
        "steady = epochs 2..E of every phase (each phase's first epoch traces the "
        "train/test functions and is excluded), each epoch from its begin to its end "
        "(training steps and validation; b and c from the run's history.json); wall = the "
        "whole call with everything included (b, c: model building, per-epoch checkpoints "
        "and summaries); img/s = schedule epochs x images per epoch / time; cores used = "
        "process CPU s / wall s"]
    if opts.epochs < 2:
        lines.append("--epochs=1: no steady numbers (the only epoch includes tracing)")
    if opts.config.train.cache_frozen_prefix:
        lines.append("--cache_frozen_prefix: each stage computes its cached h_(k-1) before "
                     "its first epoch; only the wall numbers include that")
    for key in keras_fit_rows:
        if session.multi_worker and key in opts.rows:
            lines.append(f"row {key} skipped: Keras fit does not run under "
                         "MultiWorkerMirroredStrategy")
    return lines


def settings(opts: Options, session: Session) -> List[str]:
    """The report's header: the data, the network, the training, the machine."""
    data, model, train = opts.config.data, opts.config.model, opts.config.train
    batching, dist = session.batching, opts.config.distribute
    kernels = ",".join(map(str, model.kernel_sizes))
    decoder = ",".join(map(str, model.decoder_kernel_sizes)) or "= encoder"
    policy = distribute.mixed_precision_policy(train.mixed_precision)
    return [
        "## rae_keras training benchmark",
        f"data: {session.source}; {len(session.splits.train.images)} training images "
        f"({batching.images_per_epoch} per epoch), {len(session.splits.test.images)} "
        "validation images (validated every epoch in a, b, c); "
        f"{data.image_size}x{data.image_size}x{data.channels}, crop {data.crop}; loaded in "
        f"{session.load_s:.1f} s (not timed)",
        f"network: filters {','.join(map(str, model.filters))}, kernels {kernels}, decoder "
        f"kernels {decoder}, {model.activation}, normalization {model.normalization}",
        f"training: {train.epochs} epoch(s) per phase, batch {train.batch_size} per replica x "
        f"{batching.replicas} = {batching.global_batch}, Adam {train.learning_rate:g}, "
        f"mixed_precision {train.mixed_precision} ({policy or 'float32'}), "
        f"cache_frozen_prefix {train.cache_frozen_prefix}, steps_per_execution "
        f"{train.steps_per_execution}; {distribute.describe(session.strategy)} "
        f"(--strategy={dist.strategy}, --cpu_devices={dist.cpu_devices})",
        *describe_environment(),
        f"load average (1/5/15 min): {session.load_before} before, {load_average()} after",
    ]
