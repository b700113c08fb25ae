"""python -m rae_keras.evaluate --models=A,B[,..] --output_dir=DIR [--split=test|all]
                               [--dataset=... --data_dir=... (any data flag)]

Evaluates exported SavedModels (what is measured is what is served): every model is
loaded with plain `tf.saved_model.load` and run through its `serving_default` ("full")
and `reconstruct_depth_K` signatures, and scored with `rae_keras.metrics` per image.

Models (`--models`, comma-separated):
- `exported/NAME`: an export base (its latest version), or `exported/NAME/3`: one version.
- Exports whose names differ only by a trailing seed suffix (`_seed1`, `-seed1`, `_s1`,
  `-s1`) form one group, reported as mean ± standard deviation over the exports;
  `exported/rec_seed0,exported/rec_seed1,exported/rec_seed2` is one row `rec` (n = 3).
- `LABEL=PATH[+PATH...]` names a group explicitly: `--models=rec=a+b+c,stacked=d+e+f`
  (entries with the same LABEL are merged too).

Data: by default each export's own training data configuration (`run_config.data` in
its rae_config.json: data set, data_dir, crop, size, identity-split seed and test
fraction), so `--split=test` scores every model on identities it never trained on. Data
flags given on the command line (`--dataset`, `--data_dir`, `--tfds_data_dir`, `--crop`,
`--seed`, `--test_fraction`; `--image_size`/`--channels` must match the models) override
that for every model. All models in one report must share the image source (data set,
data_dir, crop, size, channels); models trained with different split seeds are each scored
on their own test identities, and the figures show faces that are test faces for all of
them where there are such.

Writes to --output_dir: `metrics.json`, `report.md`, `reconstructions.png` (originals,
then one row per model), `depths_<model>.png` (reconstructions at every depth),
`power_spectrum.png`, and the figures and the report as TensorBoard summaries in `logs/`.
`--batch_size` is the evaluation batch (default here 256 unless given), `--summary_images`
the number of faces in the figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from rae_keras import config as config_lib
from rae_keras import data as data_lib
from rae_keras import flags as flags_lib
from rae_keras import metrics as metrics_lib
from rae_keras import report as report_lib
from rae_keras import serving
from rae_keras.report import FULL, depth_keys

FLAGS = flags_lib.FLAGS

DEFAULT_BATCH_SIZE = 256
# Data flags that override the exports' training data configuration when given.
DATA_FLAGS = ("dataset", "data_dir", "tfds_data_dir", "crop", "image_size", "channels",
              "test_fraction", "seed")
SOURCE_FIELDS = ("dataset", "data_dir", "tfds_data_dir", "crop", "image_size", "channels")
FORMAT = "rae_keras.evaluate/1"


class EvaluateError(ValueError):
    """A model list, export or data choice that cannot be evaluated; one-line message."""


# --------------------------------------------------------------------------- model list
@dataclasses.dataclass
class Export:
    """One export to evaluate."""
    group: str  # the report row it belongs to
    path: str  # as given
    version_dir: str
    rae_config: dict
    data: config_lib.DataConfig = None  # effective data configuration
    images_key: tuple = ()  # which evaluation images (source + split)

    @property
    def name(self) -> str:
        return self.rae_config.get("name") or os.path.basename(self.path.rstrip("/"))

    @property
    def num_stages(self) -> int:
        return int(self.rae_config["num_stages"])

    @property
    def shape(self) -> Tuple[int, int]:
        return int(self.rae_config["image_size"]), int(self.rae_config["channels"])


def _signature(depth_key: str) -> str:
    if depth_key == FULL:
        return serving.SERVING_DEFAULT
    return serving.depth_signature(int(depth_key.split("_")[1]))


def resolve_export(path: str) -> str:
    """An export base (-> its latest version) or a version dir -> the version dir."""
    if not os.path.exists(path):
        raise EvaluateError(f"model {path} does not exist; pass an export base "
                            f"(exported/NAME) or a version dir (exported/NAME/1)")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return os.path.abspath(path)
    version = serving.latest_version(path)
    if version is None:
        raise EvaluateError(f"no SavedModel in {path}: expected an export base with integer "
                            f"version dirs (exported/NAME/1/saved_model.pb) or a version dir")
    return os.path.abspath(serving.version_dir(path, version))


def default_group(path: str, version_dir: str) -> str:
    """The export's directory name without a trailing seed suffix (`_seed3`, `-s3`);
    a version dir given explicitly keeps its version (`NAME/v2`)."""
    given_version = os.path.abspath(path.rstrip("/")) == version_dir
    base = os.path.dirname(version_dir) if given_version else path.rstrip("/")
    name = os.path.basename(os.path.abspath(base))
    name = config_lib.seed_group(name)
    return f"{name}/v{os.path.basename(version_dir)}" if given_version else name


def parse_models(entries: Sequence[str]) -> List[Tuple[str, str]]:
    """`--models` entries -> [(group or "", path)]; `LABEL=P1+P2` names a group."""
    parsed = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        label, sep, paths = entry.partition("=")
        if not sep:
            label, paths = "", entry
        elif not label.strip() or not paths.strip():
            raise EvaluateError(f"bad --models entry {entry!r}: write LABEL=PATH[+PATH...]")
        for path in paths.split("+"):
            if not path.strip():
                raise EvaluateError(f"bad --models entry {entry!r}: empty path")
            parsed.append((label.strip(), path.strip()))
    if not parsed:
        raise EvaluateError("--models is required: export bases (exported/NAME) or version "
                            "dirs, comma-separated; LABEL=PATH+PATH groups seeds")
    return parsed


def load_exports(entries: Sequence[str]) -> List[Export]:
    """Resolve and read every export; groups in first-mention order."""
    exports, seen = [], {}
    for label, path in parse_models(entries):
        version_dir = resolve_export(path)
        if version_dir in seen:
            raise EvaluateError(f"{path} is listed twice (as {seen[version_dir]!r} and "
                                f"{path!r}); each export counts once")
        seen[version_dir] = path
        try:
            rae_config = serving.read_rae_config(version_dir)
        except (OSError, ValueError) as e:
            raise EvaluateError(
                f"{version_dir} has no readable {serving.ASSETS_EXTRA}/{serving.CONFIG_FILENAME} "
                f"({type(e).__name__}); was it exported by rae_keras?") from e
        exports.append(Export(label or default_group(path, version_dir), path, version_dir,
                              rae_config))
    shapes = {e.shape for e in exports}
    if len(shapes) > 1:
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
    return exports


# --------------------------------------------------------------------------- data
def data_config_for(export: Export, overrides: Mapping[str, object]) -> config_lib.DataConfig:
    """The export's training data configuration with `overrides` (flags given) applied."""
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


@dataclasses.dataclass
class EvalSet:
    images: np.ndarray
    identities: np.ndarray
    description: str


def build_eval_sets(exports: Sequence[Export], overrides: Mapping[str, object],
                    split: str) -> Dict[tuple, EvalSet]:
    """Load the (one) image source and cut each export's evaluation set from it:
    its test identities (split as training split them) or, with split="all", all."""
    for e in exports:
        e.data = data_config_for(e, overrides)
    sources = {tuple(getattr(e.data, f) for f in SOURCE_FIELDS) for e in exports}
    if len(sources) > 1:
        listed = "; ".join(f"{e.path}: " + ", ".join(f"{f}={getattr(e.data, f)}"
                                                      for f in SOURCE_FIELDS) for e in exports)
        raise EvaluateError(f"the models were trained on different image sources ({listed}); "
                            f"pass --dataset/--data_dir/--crop to evaluate them all on the same "
                            f"images")
    source = exports[0].data
    try:
        with _quiet_absl():  # load_splits logs a split we do not use (test_fraction 0)
            everything = data_lib.load_splits(dataclasses.replace(source, test_fraction=0.0)).train
    except data_lib.DataError as e:
        hint = "" if "data_dir" in overrides else (
            f" (the data configuration comes from {exports[0].path}'s training run; "
            f"override it with --dataset/--data_dir)")
        raise data_lib.DataError(f"{e}{hint}") from e
    print(f"data: {len(everything)} images of {len(np.unique(everything.identities))} "
          f"identities from {source.dataset}"
          + (f" ({source.data_dir})" if source.data_dir else ""))
    sets: Dict[tuple, EvalSet] = {}
    for e in exports:
        if split == "all":
            key = ("all",)
        else:
            key = ("test", e.data.seed, e.data.test_fraction)
        e.images_key = key
        if key in sets:
            continue
        if split == "all":
            sets[key] = EvalSet(everything.images, everything.identities,
                                "every image (training identities included)")
            continue
        test_ids = data_lib.split_identities(everything.identities, e.data.test_fraction,
                                             e.data.seed)
        keep = np.isin(everything.identities, list(test_ids))
        if not keep.any():
            raise EvaluateError(f"the test split of {source.dataset} (test_fraction "
                                f"{e.data.test_fraction}, seed {e.data.seed}) is empty; use "
                                f"--split=all or a larger --test_fraction")
        sets[key] = EvalSet(everything.images[keep], everything.identities[keep],
                            f"test identities (split seed {e.data.seed}, test_fraction "
                            f"{e.data.test_fraction:g})")
    return sets


def figure_images(exports: Sequence[Export], sets: Mapping[tuple, EvalSet], count: int
                  ) -> Tuple[np.ndarray, str]:
    """Up to `count` faces of different people for the figures, from the first model's
    evaluation set: people every model was evaluated on first (a seeded choice), then,
    if too few are (models split with different seeds), others, and a note says so."""
    first = sets[exports[0].images_key]
    common = set(np.unique(first.identities).tolist())
    for e in exports[1:]:
        common &= set(np.unique(sets[e.images_key].identities).tolist())
    rng = np.random.default_rng(0)
    shared = [str(i) for i in rng.permutation(sorted(common))]
    others = [str(i) for i in rng.permutation(sorted(set(first.identities.tolist()) - common))]
    chosen = (shared + others)[:count]
    picked = [int(np.flatnonzero(first.identities == identity)[0]) for identity in chosen]
    if len(picked) < count:  # fewer people than faces wanted: their other images too
        rest = [int(i) for i in range(len(first.identities)) if i not in picked]
        picked += rest[:count - len(picked)]
    not_shared = sum(identity not in common for identity in chosen)
    note = ""
    if not_shared:
        note = (f"{not_shared} of the {len(chosen)} people in the figures are in "
                f"{exports[0].group}'s evaluation set but not in every model's (the models' "
                f"identity splits differ), so some models may have trained on them.")
    return first.images[np.sort(picked)], note


# --------------------------------------------------------------------------- evaluation
def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm  # installed with tensorflow-datasets
    return tqdm(total=total, unit="batch", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def evaluate_export(export: Export, images: np.ndarray, batch_size: int, progress) -> dict:
    """Score every depth of one export on `images`. Returns
    {"per_image": {depth: {metric: [N]}}, "spectra": {"originals", "full"}, "loaded": ...}."""
    try:
        loaded = tf.saved_model.load(export.version_dir)
    except Exception as e:  # noqa: BLE001 - any load failure is one clear message
        raise EvaluateError(f"cannot load the SavedModel {export.version_dir}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    keys = depth_keys(export.num_stages)
    missing = [_signature(k) for k in keys if _signature(k) not in loaded.signatures]
    if missing:
        raise EvaluateError(f"{export.version_dir} lacks the signatures {missing}")
    per_image: Dict[str, Dict[str, List[np.ndarray]]] = {k: {} for k in keys}
    spectra = {"originals": 0.0, FULL: 0.0}
    frequencies = None
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        frequencies, p = metrics_lib.radial_power_spectrum(batch)
        spectra["originals"] = spectra["originals"] + p * len(batch)
        for key in keys:
            fn = loaded.signatures[_signature(key)]
            reconstruction = fn(images=tf.constant(batch, tf.float32))["reconstruction"]
            reconstruction = reconstruction.numpy()
            for name, values in metrics_lib.evaluate_images(batch, reconstruction).items():
                per_image[key].setdefault(name, []).append(values)
            if key == FULL:
                spectra[FULL] = spectra[FULL] + (
                    metrics_lib.radial_power_spectrum(reconstruction)[1] * len(batch))
            progress.update(1)
    return {
        "per_image": {k: {m: np.concatenate(v) for m, v in d.items()}
                      for k, d in per_image.items()},
        "frequencies": frequencies,
        "spectra": {k: v / len(images) for k, v in spectra.items()},
        "loaded": loaded,
    }


def reconstruct_all_depths(loaded, num_stages: int, images: np.ndarray) -> Dict[str, np.ndarray]:
    return {k: loaded.signatures[_signature(k)](images=tf.constant(images, tf.float32))
            ["reconstruction"].numpy() for k in depth_keys(num_stages)}


def _safe_filename(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def _jsonable(value):
    """NaN/inf -> "nan"/"inf"/"-inf" (JSON has none), numpy -> Python."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    return value


def evaluate(entries: Sequence[str], output_dir: Optional[str] = None, *, split: str = "test",
             data_overrides: Optional[Mapping[str, object]] = None,
             batch_size: int = DEFAULT_BATCH_SIZE, num_figure_images: int = 8,
             progress: bool = True) -> dict:
    """Evaluate the exports named by `entries` (`--models` syntax); returns the numbers
    (what metrics.json holds). With `output_dir`, also writes metrics.json, report.md,
    the PNG figures and TensorBoard summaries there; without it, writes nothing."""
    if split not in ("test", "all"):
        raise EvaluateError(f"--split must be test or all, got {split!r}")
    if batch_size < 1:
        raise EvaluateError(f"batch size must be >= 1, got {batch_size}")
    exports = load_exports(entries)
    sets = build_eval_sets(exports, dict(data_overrides or {}), split)
    fig_images, figure_note = figure_images(exports, sets, max(1, num_figure_images))

    total = sum(math.ceil(len(sets[e.images_key].images) / batch_size) * (e.num_stages + 1)
                for e in exports)
    results = []
    with _progress(total, progress) as bar:
        for e in exports:
            bar.set_description(e.group if e.group == e.name else f"{e.group} ({e.name})")
            evaluated = evaluate_export(e, sets[e.images_key].images, batch_size, bar)
            evaluated["figures"] = reconstruct_all_depths(evaluated.pop("loaded"),
                                                          e.num_stages, fig_images)
            results.append(evaluated)

    # Numbers: per export (mean/std over images), then per group (mean ± std over exports).
    models_json = []
    for e, r in zip(exports, results):
        eval_set = sets[e.images_key]
        models_json.append({
            "group": e.group, "path": e.path, "version_dir": e.version_dir, "name": e.name,
            "version": int(e.rae_config.get("version", os.path.basename(e.version_dir))),
            "scheme": e.rae_config.get("scheme"), "num_stages": e.num_stages,
            "image_size": e.shape[0], "channels": e.shape[1],
            "data": dataclasses.asdict(e.data),
            "evaluation_set": eval_set.description,
            "num_images": int(len(eval_set.images)),
            "num_identities": int(len(np.unique(eval_set.identities))),
            "results": {k: report_lib.summarize_images(v) for k, v in r["per_image"].items()},
        })
    groups: Dict[str, List[int]] = {}
    for i, e in enumerate(exports):
        groups.setdefault(e.group, []).append(i)
    groups_json = []
    for label, members in groups.items():
        first = exports[members[0]]
        groups_json.append({
            "label": label, "members": [exports[i].path for i in members],
            "n": len(members), "scheme": first.rae_config.get("scheme"),
            "num_stages": first.num_stages,
            "results": {k: report_lib.aggregate_models(
                [{m: v["mean"] for m, v in models_json[i]["results"][k].items()}
                 for i in members]) for k in depth_keys(first.num_stages)},
        })

    frequencies = results[0]["frequencies"]
    summary = {
        "format": FORMAT,
        "split": split,
        "metrics": list(metrics_lib.METRIC_NAMES),
        "better": {m: report_lib.METRICS[m].better for m in metrics_lib.METRIC_NAMES},
        "ms_ssim": dict(zip(("filter_size", "power_factors"),
                            metrics_lib.ms_ssim_settings(exports[0].shape[0],
                                                         exports[0].shape[0]))),
        "groups": groups_json,
        "models": models_json,
        "power_spectrum": {
            "frequencies": frequencies,
            "originals": results[0]["spectra"]["originals"],
            "models": {e.path: r["spectra"][FULL] for e, r in zip(exports, results)},
        },
        "figures": {},
        "figure_note": figure_note,
    }
    if not output_dir:
        return summary

    # Figures.
    os.makedirs(output_dir, exist_ok=True)
    figures = {}
    rows = [("originals", fig_images)]
    rows += [(g["label"], results[groups[g["label"]][0]]["figures"][FULL]) for g in groups_json]
    figures["reconstructions"] = report_lib.labelled_rows(
        rows, title="Originals and reconstructions (full model)")
    for g in groups_json:
        r = results[groups[g["label"]][0]]
        depth_rows = [("originals", fig_images)] + [
            (f"depth {k}" + (" (full)" if k == g["num_stages"] else ""),
             r["figures"][f"depth_{k}"]) for k in range(1, g["num_stages"] + 1)]
        figures[f"depths_{_safe_filename(g['label'])}"] = report_lib.labelled_rows(
            depth_rows, title=f"{g['label']}: reconstruction at each depth")
    group_spectra = [(g["label"], np.mean([results[i]["spectra"][FULL]
                                           for i in groups[g["label"]]], axis=0))
                     for g in groups_json]
    group_refs = [np.mean([results[i]["spectra"]["originals"] for i in groups[g["label"]]],
                          axis=0) for g in groups_json]
    figures["power_spectrum"] = report_lib.power_spectrum_plot(
        frequencies, results[0]["spectra"]["originals"], group_spectra, reference=group_refs,
        cutoff=metrics_lib.HIGH_FREQUENCY_CUTOFF)
    for name, image in figures.items():
        summary["figures"][name] = f"{name}.png"
        report_lib.save_png(os.path.join(output_dir, f"{name}.png"), image)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(_jsonable(summary), f, indent=2)
        f.write("\n")
    markdown = report_lib.render_report(summary)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(markdown)
    _write_tensorboard(os.path.join(output_dir, "logs"), figures, markdown)
    return summary


def _write_tensorboard(log_dir: str, figures: Mapping[str, np.ndarray], markdown: str) -> None:
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for name, image in figures.items():
            tf.summary.image(f"evaluate/{name}", np.asarray(image)[None], step=0)
        tf.summary.text("evaluate/report", markdown, step=0)
    writer.flush()
    writer.close()


# --------------------------------------------------------------------------- driver
def data_overrides_from_flags() -> Dict[str, object]:
    """The data flags given on the command line (or in a flagfile), as DataConfig fields."""
    overrides = {}
    for name in DATA_FLAGS:
        if FLAGS[name].present:
            value = FLAGS[name].value
            overrides[name] = int(value) if name == "channels" else value
    return overrides


def main(argv) -> None:
    del argv
    if not FLAGS.output_dir:
        raise EvaluateError("--output_dir=DIR is required (where the report goes)")
    summary = evaluate(
        FLAGS.models, FLAGS.output_dir, split=FLAGS.split,
        data_overrides=data_overrides_from_flags(),
        batch_size=FLAGS.batch_size if FLAGS["batch_size"].present else DEFAULT_BATCH_SIZE,
        num_figure_images=FLAGS.summary_images, progress=True)
    print(report_lib.markdown_table_from(summary))
    print(f"wrote {os.path.join(FLAGS.output_dir, 'report.md')}, metrics.json and "
          f"{len(summary['figures'])} figures")


ERRORS = (EvaluateError, config_lib.ConfigError, data_lib.DataError)

if __name__ == "__main__":
    flags_lib.run_main(main, ERRORS)
