"""Scoring exports on data: evaluation sets, the per-image scoring loop, the numbers.

What is measured is what is served: every export is loaded with plain
`tf.saved_model.load` and run through its `serving_default` ("full") and
`reconstruct_depth_K` signatures, and each image is scored with `metrics.METRICS`.
`evaluate_exports` returns the numbers (what metrics.json holds) and the images the
figures need; it writes no file and reads no flags, so Python callers and tools use it
as the `evaluate` command does.

Data: each export's own training data configuration (`run_config.data` in its
rae_config.json), so split="test" scores it on identities it never trained on; the
`overrides` (DataConfig fields) replace any of it for every export. A stored `data_dir`
or `tfds_data_dir` is where the training machine kept the data: it is used only where
it exists on this machine (a relative one from the working directory), else
`EvaluateError` asks for it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from rae_keras import config as config_lib
from rae_keras import data as data_lib
from rae_keras import exports as exports_lib
from rae_keras import metrics as metrics_lib
from rae_keras import serving
from rae_keras.exports import ListedExport

FORMAT = "rae_keras.evaluate/1"
FULL = "full"
DEFAULT_BATCH_SIZE = 256
# What makes two exports' images the same pictures (the split aside).
SOURCE_FIELDS = ("dataset", "data_dir", "tfds_data_dir", "tfds_name", "crop", "image_size",
                 "channels")
# The paths each data set reads: a training machine's, unless they exist here.
_PATHS_READ = {"folder": ("data_dir",), "lfw": ("data_dir", "tfds_data_dir"),
               "tfds": ("tfds_data_dir",)}


class EvaluateError(ValueError):
    """Exports or a data choice that cannot be evaluated; one-line message."""


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


# --------------------------------------------------------------------------- data
def data_config_for(export: ListedExport,
                    overrides: Mapping[str, object]) -> config_lib.DataConfig:
    """The export's training data configuration with `overrides` applied."""
    trained = dict(export.rae_config.get("run_config", {}).get("data", {}))
    trained.setdefault("image_size", export.shape[0])
    trained.setdefault("channels", export.shape[1])
    trained.setdefault("crop", export.rae_config.get("crop", 0))
    fields = {f.name for f in dataclasses.fields(config_lib.DataConfig)}
    values = {k: v for k, v in trained.items() if k in fields}
    for key in ("image_size", "channels"):
        if key in overrides and int(overrides[key]) != values[key]:
            raise EvaluateError(f"--{key}={overrides[key]} does not fit {export.path}, which "
                                f"takes {key} {values[key]}")
    values.update(overrides)
    if values.get("dataset") == config_lib.ARRAYS:
        raise EvaluateError(f"{export.path} was trained on arrays given in Python, which it "
                            f"does not store; name the images to score it on with --dataset "
                            f"(data_overrides={{'dataset': ...}})")
    for field in _PATHS_READ.get(values.get("dataset"), ()):
        stored = values.get(field)
        if stored and field not in overrides and not os.path.isdir(stored):
            raise EvaluateError(f"{export.path} was trained on {values['dataset']} data in "
                                f"{stored}, which is not on this machine; pass --{field}=PATH")
    values["max_images"] = 0  # caps training images only
    config = config_lib.DataConfig(**values)
    config.validate()
    return config


@contextlib.contextmanager
def _quiet_absl():
    previous = logging.get_verbosity()
    logging.set_verbosity(min(previous, logging.WARNING))
    try:
        yield
    finally:
        logging.set_verbosity(previous)


@dataclasses.dataclass(frozen=True)
class EvalSet:
    images: np.ndarray
    identities: np.ndarray
    description: str


def _check_one_source(exports, data) -> None:
    if len({tuple(getattr(d, f) for f in SOURCE_FIELDS) for d in data}) > 1:
        listed = "; ".join(f"{e.path}: " + ", ".join(f"{f}={getattr(d, f)}"
                                                      for f in SOURCE_FIELDS)
                           for e, d in zip(exports, data))
        raise EvaluateError(f"the models were trained on different image sources ({listed}); "
                            f"pass --dataset/--data_dir/--crop to evaluate them all on the same "
                            f"images")


def _load(exports, source: config_lib.DataConfig, split: str, overrides, log,
          cache_dir: Optional[str]) -> data_lib.Split:
    """The test identities of `source` as its training run split them (decoded only
    where the training run's cache does not already hold them), or every image."""
    if split == "all":
        source = dataclasses.replace(source, test_fraction=0.0, seed=0)
    which = "train" if split == "all" else "test"
    try:
        with _quiet_absl():  # load_splits logs the split
            loaded = getattr(data_lib.load_splits(source, cache_dir, which=(which,)), which)
    except data_lib.DataError as e:
        hint = "" if "data_dir" in overrides else (
            f" (the data configuration comes from {exports[0].path}'s training run; "
            f"override it with --dataset/--data_dir)")
        raise data_lib.DataError(f"{e}{hint}") from e
    log(f"data: {len(loaded)} images of {len(np.unique(loaded.identities))} identities "
        f"from {source.dataset}" + (f" ({source.data_dir})" if source.data_dir else "")
        + ("" if split == "all" else f", test split seed {source.seed}"))
    return loaded


def _eval_set(loaded: data_lib.Split, data: config_lib.DataConfig, split: str) -> EvalSet:
    if split == "all":
        return EvalSet(loaded.images, loaded.identities,
                       "every image (training identities included)")
    if not len(loaded):
        raise EvaluateError(f"the test split of {data.dataset} (test_fraction "
                            f"{data.test_fraction}, seed {data.seed}) is empty; use "
                            f"--split=all or a larger --test_fraction")
    return EvalSet(loaded.images, loaded.identities,
                   f"test identities (split seed {data.seed}, test_fraction "
                   f"{data.test_fraction:g})")


def build_eval_sets(exports: Sequence[ListedExport], overrides: Mapping[str, object],
                    split: str, log: Callable[[str], None] = print,
                    cache_dir: Optional[str] = None
                    ) -> Tuple[List[config_lib.DataConfig], List[EvalSet]]:
    """Each export's data configuration and evaluation set from the one image source:
    its test identities (split as its training split them) or, with split="all", every
    image. Exports split alike share one EvalSet object."""
    data = [data_config_for(e, overrides) for e in exports]
    _check_one_source(exports, data)
    sets, cut = [], {}
    for d in data:
        key = ("all",) if split == "all" else (d.seed, d.test_fraction)
        if key not in cut:
            cut[key] = _eval_set(_load(exports, d, split, overrides, log, cache_dir), d, split)
        sets.append(cut[key])
    return data, sets


def figure_images(exports: Sequence[ListedExport], sets: Sequence[EvalSet], count: int
                  ) -> Tuple[np.ndarray, str]:
    """Up to `count` faces of different people for the figures, from the first export's
    evaluation set: people every export was evaluated on first (a seeded choice), then,
    if too few are (splits with different seeds), others, and a note says so."""
    first = sets[0]
    common = set(np.unique(first.identities).tolist())
    for s in sets[1:]:
        common &= set(np.unique(s.identities).tolist())
    rng = np.random.default_rng(0)
    shared = [str(i) for i in rng.permutation(sorted(common))]
    others = [str(i) for i in rng.permutation(sorted(set(first.identities.tolist()) - common))]
    chosen = (shared + others)[:count]
    picked = [int(np.flatnonzero(first.identities == identity)[0]) for identity in chosen]
    if len(picked) < count:  # fewer people than faces wanted: their other images too
        picked += [i for i in range(len(first.identities)) if i not in picked][:count - len(picked)]
    not_shared = sum(identity not in common for identity in chosen)
    note = "" if not not_shared else (
        f"{not_shared} of the {len(chosen)} people in the figures are in "
        f"{exports[0].group}'s evaluation set but not in every model's (the models' "
        f"identity splits differ), so some models may have trained on them.")
    return first.images[np.sort(picked)], note


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
