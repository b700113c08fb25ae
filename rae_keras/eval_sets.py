"""Which images each export is scored on, and which faces the figures show.

Each export is scored on its own training data configuration (`run_config.data` in
its rae_config.json), so split="test" scores it on identities it never trained on; the
`overrides` (DataConfig fields) replace any of it for every export. A stored `data_dir`
or `tfds_data_dir` is where the training machine kept the data: it is used only where
it exists on this machine (a relative one from the working directory), else
`EvaluateError` asks for it again. One report compares models on the same pictures, so
every export must name the same image source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from rae_keras import config as config_lib
from rae_keras import data as data_lib
from rae_keras.exports import ListedExport

# What makes two exports' images the same pictures (the split aside).
SOURCE_FIELDS = ("dataset", "data_dir", "tfds_data_dir", "tfds_name", "crop", "image_size",
                 "channels")
# The paths each data set reads: a training machine's, unless they exist here.
_PATHS_READ = {"folder": ("data_dir",), "lfw": ("data_dir", "tfds_data_dir"),
               "tfds": ("tfds_data_dir",)}


class EvaluateError(ValueError):
    """Exports or a data choice that cannot be evaluated; one-line message."""


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
