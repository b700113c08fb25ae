#!/usr/bin/env python3
"""Training throughput: plain Keras vs rae_keras stacked vs the recursive schedule vs input.

    python tools/benchmark.py                                   # synthetic images
    python tools/benchmark.py --data_dir=/path/to/lfw-deepfunneled --max_images=4096
    python tools/benchmark.py --data_dir=... --cache_frozen_prefix --steps_per_execution=8

The command line and the row registry; the rows are in tools/benchmarks/, one module
per family (each module's docstring says exactly what its rows measure):

  a, b, c   benchmarks/training_rows.py: plain Keras `fit`, rae_keras stacked, the whole
            recursive schedule, in this process
  d         benchmarks/pipeline_rows.py: d1 the input pipeline alone, d2 JPEG decoding
  memory    benchmarks/memory_rows.py: peak RSS of one stacked epoch at --memory_sizes
  flat      benchmarks/memory_rows.py: the same at --flat_sizes synthetic small PNGs
  plain     benchmarks/time_rows.py: rae_keras train (cold, warm cache) vs plain Keras
  marginal  benchmarks/time_rows.py: the recursive vs stacked marginal epoch

Rows a-d: one process, one data set (loaded before any timing, never counted; a folder
or data set is read as `python -m rae_keras.train` reads it, streamed from its image
cache in --cache_dir or a temporary one), one network and one batch size for every
row. Each has two times, "steady" (epochs 2..E of every phase) and "wall" (the whole
call; benchmarks/timing.py), and ratios with PASS/MISS against their targets
(benchmarks/report.py). On a shared or noisy machine use --repeats=R: rows a, b, c run
R times interleaved and the least time of each is reported (all repeats are listed too).

Whole-process rows (opt in with --rows; each runs `python -m rae_keras.train` with the
benchmark's network, data and speed flags, or a plain Keras script, as a child process,
timed from outside; peak RSS is the child's own high-water mark from wait4):

    python tools/benchmark.py --config=configs/seed_lfw128.cfg --data_dir=DIR \
        --rows=d,memory,flat,plain --epochs=1 --max_images=3072
    python tools/benchmark.py --data_dir=DIR --max_images=3072 --cache_frozen_prefix \
        --steps_per_execution=8 --rows=marginal

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
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.dirname(HERE), HERE):  # rae_keras, then benchmarks/
    if _path not in sys.path:
        sys.path.insert(0, _path)

from absl import flags  # noqa: E402

# rae_keras first: it starts TensorFlow quietly for the project's commands and tools.
from rae_keras import config as config_lib  # noqa: E402
from rae_keras import flags as flags_lib  # noqa: E402  (the package's flags)

from benchmarks import (in_process, memory_rows, pipeline_rows, report,  # noqa: E402
                        time_rows, training_rows)
from benchmarks.children import WholeRow  # noqa: E402
from benchmarks.options import CONFIG_FLAGS, DEFAULT_ARGS, DEFAULT_CONFIG, Options  # noqa: E402
from benchmarks.timing import Row, best_of  # noqa: E402

# ---------------------------------------------------------------------------
# The row registry: --rows keys, in the order they run and print.

# In this process, sharing one data set and strategy (in_process.Session); run
# --repeats times, interleaved, the best of each reported: fn(opts, session, repeat).
REPEATED_ROWS: Dict[str, Callable[..., Row]] = {
    "a": training_rows.row_a, "b": training_rows.row_b, "c": training_rows.row_c}
KERAS_FIT_ROWS = ("a",)  # Keras fit: not under MultiWorkerMirroredStrategy
# In this process, once: fn(opts, session) -> rows.
ONCE_ROWS: Dict[str, Callable[..., List[Row]]] = {"d": pipeline_rows.rows_d}
# Child processes, one at a time: fn(opts, workdir, cache_dir, notes) -> (rows, lines).
WHOLE_ROWS: Dict[str, Callable[..., Tuple[List[WholeRow], List[str]]]] = {
    "memory": memory_rows.memory, "flat": memory_rows.flat,
    "plain": time_rows.versus_plain, "marginal": time_rows.marginal}
NEED_DATA = ("memory", "plain", "marginal")  # not on synthetic images
ROWS = (*REPEATED_ROWS, *ONCE_ROWS)  # the default
ALL_ROWS = (*ROWS, *WHOLE_ROWS)

# ---------------------------------------------------------------------------
# Command line

flags.DEFINE_string("config", DEFAULT_CONFIG,
                    "benchmark: a flagfile whose network, data and batch flags are the "
                    "defaults (configs/lfw64.cfg; empty: none). --flagfile applies a whole "
                    "file instead.")
flags.DEFINE_list("rows", list(ROWS),
                  f"benchmark: rows to run, from {','.join(ALL_ROWS)} (the last four "
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


def _config_defaults(path: str) -> List[str]:
    """--config's CONFIG_FLAGS, as absl reads the file (comments, nested flagfiles)."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: --config {path} does not exist")
    args = FLAGS.read_flags_from_files([f"--flagfile={path}"], force_gnu=False)
    return [a for a in args if a.lstrip("-").split("=", 1)[0] in CONFIG_FLAGS]


def _check_own_flags() -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The benchmark's flags checked; (memory sizes, flat sizes in order)."""
    unknown_rows = set(FLAGS.rows) - set(ALL_ROWS)
    if unknown_rows:
        raise SystemExit(f"error: --rows: unknown {sorted(unknown_rows)}; use "
                         f"{','.join(ALL_ROWS)}")
    if FLAGS.repeats < 1:
        raise SystemExit("error: --repeats must be >= 1")
    try:
        sizes = (tuple(int(v) for v in FLAGS.memory_sizes),
                 tuple(sorted(int(v) for v in FLAGS.flat_sizes)))
    except ValueError:
        raise SystemExit("error: --memory_sizes and --flat_sizes take integers") from None
    if FLAGS.marginal_epochs < 2:
        raise SystemExit("error: --marginal_epochs must be >= 2")
    return sizes


def _run_config() -> config_lib.RunConfig:
    """The package's run configuration of the flags; --data_dir alone means a folder."""
    try:
        config = flags_lib.run_config_from_flags()
        if FLAGS.data_dir and not FLAGS["dataset"].present:
            config = dataclasses.replace(
                config, data=dataclasses.replace(config.data, dataset="folder")).validate()
    except config_lib.ConfigError as e:
        raise SystemExit(f"error: {e}")
    return config


def parse_args(argv: Optional[Sequence[str]] = None) -> Options:
    """rae_keras' flags and the benchmark's, parsed by absl into FLAGS."""
    argv = list(sys.argv[1:] if argv is None else argv)
    program = os.path.basename(__file__)
    FLAGS.unparse_flags()
    flags_lib.parse_flags_or_exit([program, *DEFAULT_ARGS, *argv], _OWN_FLAGS)
    defaults = _config_defaults(FLAGS.config) if FLAGS.config else []
    FLAGS.unparse_flags()
    flags_lib.parse_flags_or_exit([program, *DEFAULT_ARGS, *defaults, *argv], _OWN_FLAGS)
    memory_sizes, flat_sizes = _check_own_flags()
    synthetic = not (FLAGS.data_dir or FLAGS["dataset"].present)
    return Options(config=_run_config(), synthetic=synthetic, rows=tuple(FLAGS.rows),
                   repeats=FLAGS.repeats,
                   pipeline_seconds=FLAGS.pipeline_seconds,
                   intra_op_threads=FLAGS.intra_op_threads,
                   inter_op_threads=FLAGS.inter_op_threads, keep_runs=FLAGS.keep_runs,
                   memory_sizes=memory_sizes, flat_sizes=flat_sizes,
                   flat_image_size=FLAGS.flat_image_size,
                   marginal_epochs=FLAGS.marginal_epochs)


# ---------------------------------------------------------------------------
# Running the rows


def run_in_process_rows(opts: Options, session: in_process.Session, notes: List[str]
                        ) -> List[Row]:
    """The in-process rows --rows asks for: the repeated ones interleaved, the best of
    each, then the others."""
    runs: Dict[str, List[Row]] = {}
    for repeat in range(opts.repeats):
        for key, row in REPEATED_ROWS.items():
            if key in opts.rows and not (session.multi_worker and key in KERAS_FIT_ROWS):
                runs.setdefault(key, []).append(row(opts, session, repeat))
    rows = [best_of(repeats) for repeats in runs.values()]
    if opts.repeats > 1:
        notes.append(f"best of {opts.repeats} interleaved repeats per column; all "
                     "repeats (steady s / wall s): " + "; ".join(
                         f"{key} " + ", ".join(f"{report.fmt(r.steady_s, 2)}/{r.wall_s:.2f}"
                                               for r in repeats)
                         for key, repeats in runs.items()))
    for key, more in ONCE_ROWS.items():
        if key in opts.rows:
            rows.extend(more(opts, session))
    return rows


def run_whole_rows(opts: Options, workdir: str, cache_dir: str, notes: List[str]
                   ) -> Tuple[List[WholeRow], List[str]]:
    """The whole-process rows --rows asks for (child processes, one at a time)."""
    rows: List[WholeRow] = []
    lines: List[str] = []
    wanted = [key for key in WHOLE_ROWS if key in opts.rows]
    if opts.synthetic and set(wanted) & set(NEED_DATA):
        notes.append("rows memory, plain and marginal skipped: they need --data_dir (or "
                     "--dataset)")
        wanted = [key for key in wanted if key not in NEED_DATA]
    for key in wanted:
        more, more_lines = WHOLE_ROWS[key](opts, workdir, cache_dir, notes)
        rows += more
        lines += more_lines
    if rows:
        notes.append("whole-process rows: `python -m rae_keras.train` (or the plain Keras "
                     "child) run as a child process, timed from outside: wall s from start "
                     "to exit, CPU s and peak RSS (ru_maxrss, the whole process) from its "
                     "rusage")
    return rows, lines


def main(argv: Optional[Sequence[str]] = None, out: Callable[[str], None] = print) -> Dict:
    opts = parse_args(argv)
    if FLAGS.plain_fit_child:
        time_rows.plain_fit_child(FLAGS.plain_fit_child)
        return {}
    session = in_process.start(opts, FLAGS.cache_dir,
                               fits=bool(set(REPEATED_ROWS) & set(opts.rows)))
    notes = in_process.notes(opts, session, KERAS_FIT_ROWS)
    try:
        rows = run_in_process_rows(opts, session, notes)
        whole_rows, whole_lines = run_whole_rows(opts, session.workdir, session.cache_dir,
                                                 notes)
    finally:
        in_process.finish(opts, session, out)
    values = report.report(rows, in_process.settings(opts, session), notes, out)
    if whole_rows:
        report.whole_report(whole_rows, whole_lines, out)
    return {"rows": {r.key: r for r in rows}, "ratios": values,
            "whole": {r.key: r for r in whole_rows}, "whole_lines": whole_lines}


if __name__ == "__main__":
    main()
    sys.exit(0)
