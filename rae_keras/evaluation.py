"""Scoring exports on data: the per-image scoring loop and the numbers.

What is measured is what is served: every export is loaded with plain
`tf.saved_model.load` and run through its `serving_default` ("full") and
`reconstruct_depth_K` signatures, and each image is scored with `metrics.METRICS`.
`evaluate_exports` returns the numbers (what metrics.json holds) and the images the
figures need; it writes no file and reads no flags, so Python callers and tools use it
as the `evaluate` command does. Which images each export is scored on is `eval_sets`'s.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from rae_keras import config as config_lib
from rae_keras import exports as exports_lib
from rae_keras import metrics as metrics_lib
from rae_keras import serving
from rae_keras.exports import ListedExport
from rae_keras.eval_sets import EvalSet, EvaluateError, build_eval_sets, figure_images

FORMAT = "rae_keras.evaluate/1"
FULL = "full"
DEFAULT_BATCH_SIZE = 256


def depth_keys(num_stages: int) -> List[str]:
    """"full" (serving_default), then "depth_1" .. "depth_N"."""
    return [FULL] + [f"depth_{k}" for k in range(1, num_stages + 1)]


def _signature(depth_key: str) -> str:
    if depth_key == FULL:
        return serving.SERVING_DEFAULT
    return serving.depth_signature(int(depth_key.split("_")[1]))


def check_comparable(exports: Sequence[ListedExport]) -> None:
    """One report compares models on the same images, and a row's exports at each depth."""
    if len({e.shape for e in exports}) > 1:
        listed = ", ".join(f"{e.path} {e.shape[0]}x{e.shape[0]}x{e.shape[1]}" for e in exports)
        raise EvaluateError(f"models take different image sizes or channels ({listed}); "
                            f"one report compares models on the same images: evaluate them "
                            f"separately")
    for group in {e.group for e in exports}:
        stages = {e.num_stages for e in exports if e.group == group}
        if len(stages) > 1:
            raise EvaluateError(f"exports grouped as {group!r} have different numbers of "
                                f"stages {sorted(stages)}; give them different labels "
                                f"(--models=A=PATH,B=PATH)")


# --------------------------------------------------------------------------- scoring
def load_saved_model(export: ListedExport):
    """The export's SavedModel, checked to serve every depth."""
    try:
        loaded = tf.saved_model.load(export.version_dir)
    except Exception as e:  # noqa: BLE001 - any load failure is one clear message
        raise EvaluateError(f"cannot load the SavedModel {export.version_dir}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    missing = [_signature(k) for k in depth_keys(export.num_stages)
               if _signature(k) not in loaded.signatures]
    if missing:
        raise EvaluateError(f"{export.version_dir} lacks the signatures {missing}")
    return loaded


def reconstruct(loaded, depth_key: str, images: np.ndarray) -> np.ndarray:
    """What the served signature of `depth_key` returns for `images`."""
    signature = loaded.signatures[_signature(depth_key)]
    return signature(images=tf.constant(images, tf.float32))["reconstruction"].numpy()


@dataclasses.dataclass(frozen=True)
class Scores:
    per_image: Dict[str, Dict[str, np.ndarray]]  # depth key -> metric -> [N]
    frequencies: np.ndarray
    originals_spectrum: np.ndarray  # radially averaged power, mean over the images
    full_spectrum: np.ndarray  # the same of the full model's reconstructions


def score(loaded, images: np.ndarray, batch_size: int, depths: Sequence[str],
          names: Sequence[str] = metrics_lib.METRIC_NAMES,
          on_batch: Callable[[], None] = lambda: None) -> Scores:
    """Every metric `names` of every depth of `loaded` on each image, in batches;
    `on_batch` is called after each batch of each depth."""
    per_image: Dict[str, Dict[str, List[np.ndarray]]] = {k: {m: [] for m in names}
                                                          for k in depths}
    frequencies, spectra = None, {"originals": 0.0, FULL: 0.0}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        frequencies, power = metrics_lib.radial_power_spectrum(batch)
        spectra["originals"] = spectra["originals"] + power * len(batch)
        for key in depths:
            reconstruction = reconstruct(loaded, key, batch)
            for name, values in metrics_lib.evaluate_images(batch, reconstruction,
                                                            names).items():
                per_image[key][name].append(values)
            if key == FULL:
                power = metrics_lib.radial_power_spectrum(reconstruction)[1]
                spectra[FULL] = spectra[FULL] + power * len(batch)
            on_batch()
    return Scores({k: {m: np.concatenate(v) for m, v in d.items()} for k, d in per_image.items()},
                  frequencies, spectra["originals"] / len(images), spectra[FULL] / len(images))


# --------------------------------------------------------------------------- all of it
@dataclasses.dataclass(frozen=True)
class Scored:
    """One export scored on its evaluation set."""
    export: ListedExport
    data: config_lib.DataConfig
    eval_set: EvalSet
    scores: Scores
    figures: Dict[str, np.ndarray]  # depth key -> reconstructions of the figure faces


@dataclasses.dataclass(frozen=True)
class Evaluation:
    split: str
    scored: List[Scored]  # in the order listed
    faces: np.ndarray  # the originals the figures show
    figure_note: str  # why some faces may be training faces of some model ("" if none)

    def groups(self) -> Dict[str, List[Scored]]:
        """Report rows: group label -> its exports, in first-mention order."""
        out: Dict[str, List[Scored]] = {}
        for s in self.scored:
            out.setdefault(s.export.group, []).append(s)
        return out


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm  # installed with tensorflow-datasets
    return tqdm(total=total, unit="batch", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def evaluate_exports(entries: Sequence[str], *, split: str = "test",
                     data_overrides: Optional[Mapping[str, object]] = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, num_figure_images: int = 8,
                     progress: bool = True, log: Callable[[str], None] = print,
                     cache_dir: Optional[str] = None) -> Evaluation:
    """Score the exports a model list names (`--models` syntax) at every depth."""
    if split not in ("test", "all"):
        raise EvaluateError(f"--split must be test or all, got {split!r}")
    if batch_size < 1:
        raise EvaluateError(f"batch size must be >= 1, got {batch_size}")
    exports = exports_lib.list_exports(entries)
    check_comparable(exports)
    data, sets = build_eval_sets(exports, dict(data_overrides or {}), split, log, cache_dir)
    faces, note = figure_images(exports, sets, max(1, num_figure_images))
    total = sum(math.ceil(len(s.images) / batch_size) * (e.num_stages + 1)
                for e, s in zip(exports, sets))
    scored = []
    with _progress(total, progress) as bar:
        for e, d, s in zip(exports, data, sets):
            bar.set_description(e.group if e.group == e.name else f"{e.group} ({e.name})")
            loaded, depths = load_saved_model(e), depth_keys(e.num_stages)
            scores = score(loaded, s.images, batch_size, depths, on_batch=lambda: bar.update(1))
            scored.append(Scored(e, d, s, scores,
                                 {k: reconstruct(loaded, k, faces) for k in depths}))
    return Evaluation(split, scored, faces, note)
