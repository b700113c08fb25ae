#!/usr/bin/env python3
"""Serving latency and throughput of one model, every way it can be run, in one table.

    python tools/bench_serving.py --image_size=64 --channels=3 --filters=6,12,24,48,96,192
    python tools/bench_serving.py --export_dir=exported/NAME        # latest version
    python tools/bench_serving.py --export_dir=exported/NAME/3
    python tools/bench_serving.py --model_dir=runs/NAME              # a trained run

Rows: Keras `predict` and direct call (only with a Keras model, built here or loaded from
--model_dir: an export holds none), the SavedModel's `serving_default` signature, and LiteRT float32,
float16 and dynamic_int8 (`serving_default` signature runner). Columns: batch-1 latency
(median and p95 over --iters calls, output fetched as numpy) and batch-64 throughput.
A built or loaded model (random weights are fine: speed does not depend on them) is
exported to a temporary directory first, unless --export_dir is given too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # rae_keras, when it is not installed

import numpy as np  # noqa: E402


def _ints(text: str) -> tuple:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export_dir", default="",
                   help="an existing export: a base (latest version is used) or a version dir")
    p.add_argument("--model_dir", default="",
                   help="a trained run directory: its Keras model (and, without "
                        "--export_dir, a temporary export of it)")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--filters", type=_ints, default=(6, 12, 24, 48, 96, 192))
    p.add_argument("--kernel_sizes", type=_ints, default=(3,))
    p.add_argument("--iters", type=int, default=300, help="timed batch-1 calls per row")
    p.add_argument("--batch", type=int, default=64, help="batch size for throughput")
    p.add_argument("--batch_iters", type=int, default=30, help="timed large-batch calls per row")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="LiteRT threads (TensorFlow uses all cores by default)")
    p.add_argument("--keep", action="store_true", help="keep the temporary export")
    return p.parse_args(argv)


def time_calls(fn: Callable[[], object], iters: int, warmup: int) -> List[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench(fn_for_batch: Callable[[np.ndarray], Callable[[], object]], image_shape, args) -> Dict:
    rng = np.random.default_rng(0)
    x1 = rng.random((1, *image_shape), dtype=np.float32)
    xb = rng.random((args.batch, *image_shape), dtype=np.float32)
    lat = time_calls(fn_for_batch(x1), args.iters, args.warmup)
    big = time_calls(fn_for_batch(xb), args.batch_iters, max(2, args.warmup // 5))
    lat_ms = sorted(t * 1e3 for t in lat)
    return {
        "median_ms": statistics.median(lat_ms),
        "p95_ms": lat_ms[min(len(lat_ms) - 1, int(round(0.95 * (len(lat_ms) - 1))))],
        "images_per_s": args.batch * len(big) / sum(big),
    }


def load_model(args) -> Tuple[Optional[object], Optional[object], str]:
    """(config, Keras model, description): the run of --model_dir, an untrained model
    of the flags' shape, or (None, None, "") for an export alone."""
    from rae_keras import runs

    if args.model_dir:
        config, autoencoder, _ = runs.load_trained(args.model_dir)
        return config, autoencoder, f"run {args.model_dir}"
    if args.export_dir:
        return None, None, ""
    import keras
    from rae_keras.config import DataConfig, ModelConfig, RunConfig
    from rae_keras.models import ConvAutoencoder

    keras.utils.set_random_seed(0)
    config = RunConfig(
        name="bench",
        data=DataConfig(image_size=args.image_size, channels=args.channels),
        model=ModelConfig(filters=args.filters, kernel_sizes=args.kernel_sizes)).validate()
    autoencoder = ConvAutoencoder.from_model_config(config.model, runs.image_shape_of(config))
    return config, autoencoder, (f"untrained {args.image_size}x{args.image_size}x"
                                 f"{args.channels}, filters {','.join(map(str, args.filters))}")


def find_export(args, config, autoencoder, source: str
                ) -> Tuple[str, Optional[str], str, Optional[str]]:
    """(SavedModel version dir, its TFLite dir if any, description, temporary dir or None):
    --export_dir (its newest version, or the version given), or a temporary export of
    the Keras model."""
    from rae_keras import exports, serving

    if args.export_dir:
        try:
            version_dir = exports.resolve_version(args.export_dir)
        except exports.LoadError as e:
            sys.exit(str(e))
        base, version = os.path.split(os.path.normpath(version_dir))
        source = version_dir if autoencoder is None else f"{source}, export {version_dir}"
        tflite = serving.tflite_dir(base, int(version)) if version.isdigit() else None
        return version_dir, tflite, source, None
    tmp = tempfile.mkdtemp(prefix="bench_serving_")
    start = time.perf_counter()
    version_dir = serving.export_model(autoencoder, os.path.join(tmp, "bench"), config)
    print(f"exported to {version_dir} in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    return version_dir, serving.tflite_dir(os.path.join(tmp, "bench"), 1), source, tmp


Rows = List[Tuple[str, Optional[Dict]]]  # (runtime, stats or None: not measured)


def keras_rows(autoencoder, image_shape, args) -> Rows:
    """Keras `predict` and a direct call (n/a without a Keras model)."""
    if autoencoder is None:
        return [("Keras model.predict", None), ("Keras direct call", None)]
    model = autoencoder.full_model()
    return [("Keras model.predict",
             bench(lambda x: lambda: model.predict(x, verbose=0, batch_size=len(x)),
                   image_shape, args)),
            ("Keras direct call",
             bench(lambda x: lambda: np.asarray(model(x, training=False)), image_shape, args))]


def saved_model_row(signature, image_shape, args) -> Rows:
    import tensorflow as tf

    def saved_model_fn(x):
        t = tf.constant(x)
        return lambda: signature(images=t)["reconstruction"].numpy()

    return [("SavedModel serving_default", bench(saved_model_fn, image_shape, args))]


def litert_rows(tflite_dir: Optional[str], image_shape, args) -> Rows:
    """LiteRT's `serving_default` runner of each quantization (n/a where not exported)."""
    from ai_edge_litert.interpreter import Interpreter
    from rae_keras.serving import TFLITE_QUANTIZATIONS

    rows: Rows = []
    for quantization in TFLITE_QUANTIZATIONS:
        path = os.path.join(tflite_dir or "", f"{quantization}.tflite")
        if not tflite_dir or not os.path.exists(path):
            rows.append((f"LiteRT {quantization}", None))
            continue

        def litert_fn(x, path=path):
            # One interpreter per batch size, so the timed calls never reallocate.
            runner = Interpreter(model_path=path, num_threads=args.threads) \
                .get_signature_runner("serving_default")
            return lambda: runner(images=x)["reconstruction"]

        rows.append((f"LiteRT {quantization}", bench(litert_fn, image_shape, args)))
    return rows


def print_table(rows: Rows, source: str, args) -> None:
    """The table, then LiteRT float32 against the SavedModel's <= 0.5x latency target."""
    import tensorflow as tf

    print(f"\nModel: {source}; {os.cpu_count()} CPU cores, LiteRT threads {args.threads}, "
          f"TF {tf.__version__}; batch-1 over {args.iters} calls, "
          f"batch-{args.batch} over {args.batch_iters} calls\n")
    print("| runtime | batch-1 median (ms) | batch-1 p95 (ms) | "
          f"batch-{args.batch} throughput (images/s) |")
    print("|---|---:|---:|---:|")
    for name, stats in rows:
        if stats is None:
            print(f"| {name} | n/a | n/a | n/a |")
        else:
            print(f"| {name} | {stats['median_ms']:.3f} | {stats['p95_ms']:.3f} | "
                  f"{stats['images_per_s']:.0f} |")
    by_name = dict(rows)
    sm, lite = by_name.get("SavedModel serving_default"), by_name.get("LiteRT float32")
    if sm and lite:
        ratio = lite["median_ms"] / sm["median_ms"]
        verdict = "meets" if ratio <= 0.5 else "MISSES"
        print(f"\nLiteRT float32 / SavedModel batch-1 median latency: {ratio:.2f}x "
              f"({verdict} the <= 0.5x target)")


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401  (missing: fail now)

    config, autoencoder, source = load_model(args)
    version_dir, tflite_dir, source, tmp = find_export(args, config, autoencoder, source)
    loaded = tf.saved_model.load(version_dir)  # kept: the signature needs its variables
    signature = loaded.signatures["serving_default"]
    image_shape = tuple(signature.structured_input_signature[1]["images"].shape[1:])
    rows = (keras_rows(autoencoder, image_shape, args)
            + saved_model_row(signature, image_shape, args)
            + litert_rows(tflite_dir, image_shape, args))
    print_table(rows, source, args)
    if tmp and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp:
        print(f"kept {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
