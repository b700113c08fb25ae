"""Numbers -> metrics.json and report.md.

`summary` turns an `evaluation.Evaluation` into what metrics.json holds: per export
the mean and standard deviation of each metric over its images, per group (the seeds
of one setting) the mean and sample standard deviation of its exports' means, since
the spread a reader needs is between trainings, not between faces.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Dict, Mapping, Sequence

import numpy as np

from rae_keras import metrics as metrics_lib
from rae_keras.evaluation import FORMAT, Evaluation, Scored, depth_keys
from rae_keras.metrics import METRIC_NAMES, METRICS
from rae_keras.report_markdown import render_report


# --------------------------------------------------------------------------- statistics
def summarize_images(values: Mapping[str, np.ndarray]) -> Dict[str, dict]:
    """Per-image values -> {metric: {"mean", "std", "n"}} over the images (NaNs, the
    undefined cases of `metrics`, left out; n counts the images that were used)."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        kept = v[~np.isnan(v)]
        if len(kept) == 0:
            out[name] = {"mean": math.nan, "std": math.nan, "n": 0}
            continue
        with np.errstate(invalid="ignore"):  # inf - inf in the std of an all-inf PSNR
            std = float(np.std(kept))
        out[name] = {"mean": float(np.mean(kept)), "std": std, "n": int(len(kept))}
    return out


def aggregate_models(means: Sequence[Mapping[str, float]]) -> Dict[str, dict]:
    """Several exports' mean values (e.g. one per seed) -> {metric: {"mean", "std", "n"}}:
    the mean over exports and the sample standard deviation (ddof=1; None for one)."""
    out = {}
    for name in means[0]:
        v = np.asarray([m[name] for m in means], np.float64)
        with np.errstate(invalid="ignore"):
            std = float(np.std(v, ddof=1)) if len(v) > 1 else None
        out[name] = {"mean": float(np.mean(v)), "std": std, "n": int(len(v))}
    return out


# --------------------------------------------------------------------------- metrics.json
def _model_entry(s: Scored) -> dict:
    e = s.export
    return {
        "group": e.group, "path": e.path, "version_dir": e.version_dir, "name": e.name,
        "version": int(e.rae_config.get("version", os.path.basename(e.version_dir))),
        "scheme": e.rae_config.get("scheme"), "num_stages": e.num_stages,
        "image_size": e.shape[0], "channels": e.shape[1],
        "data": dataclasses.asdict(s.data),
        "evaluation_set": s.eval_set.description,
        "num_images": int(len(s.eval_set.images)),
        "num_identities": int(len(np.unique(s.eval_set.identities))),
        "results": {k: summarize_images(v) for k, v in s.scores.per_image.items()},
    }


def _group_entry(label: str, members: Sequence[dict]) -> dict:
    first = members[0]
    return {
        "label": label, "members": [m["path"] for m in members], "n": len(members),
        "scheme": first["scheme"], "num_stages": first["num_stages"],
        "results": {k: aggregate_models([{m: v["mean"] for m, v in member["results"][k].items()}
                                         for member in members])
                    for k in depth_keys(first["num_stages"])},
    }


def summary(evaluation: Evaluation) -> dict:
    """The numbers of an evaluation, as metrics.json holds them ("figures" left empty
    for whoever writes them)."""
    models = [_model_entry(s) for s in evaluation.scored]
    by_path = {m["path"]: m for m in models}
    first = evaluation.scored[0]
    size = first.export.shape[0]
    return {
        "format": FORMAT,
        "split": evaluation.split,
        "metrics": list(METRIC_NAMES),
        "better": {m: METRICS[m].better for m in METRIC_NAMES},
        "ms_ssim": dict(zip(("filter_size", "power_factors"),
                            metrics_lib.ms_ssim_settings(size, size))),
        "groups": [_group_entry(label, [by_path[s.export.path] for s in members])
                   for label, members in evaluation.groups().items()],
        "models": models,
        "power_spectrum": {
            "frequencies": first.scores.frequencies,
            "originals": first.scores.originals_spectrum,
            "models": {s.export.path: s.scores.full_spectrum for s in evaluation.scored},
        },
        "figures": {},
        "figure_note": evaluation.figure_note,
    }


def jsonable(value):
    """NaN/inf -> "nan"/"inf"/"-inf" (JSON has none), numpy -> Python."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value


def write(output_dir: str, numbers: Mapping) -> str:
    """metrics.json and report.md into output_dir; returns the markdown."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(jsonable(numbers), f, indent=2)
        f.write("\n")
    markdown = render_report(numbers)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(markdown)
    return markdown


def read_summaries(paths: Sequence[str]) -> dict:
    """Several metrics.json as one: their models side by side (each run can be scored as
    it finishes, then compared with the rest). They must score the same split with the
    same metrics; "groups" is dropped (a group may span files), the tools regroup by
    each model's "group"."""
    merged = None
    for path in paths:
        with open(path) as f:
            numbers = json.load(f)
        if numbers.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} metrics file")
        if merged is None:
            merged = {k: v for k, v in numbers.items() if k != "groups"}
            merged["models"] = list(numbers["models"])
            continue
        for key in ("split", "metrics"):
            if numbers[key] != merged[key]:
                raise ValueError(f"{path}: {key} {numbers[key]!r} differs from "
                                 f"{paths[0]}'s {merged[key]!r}")
        merged["models"] += numbers["models"]
    if merged is None:
        raise ValueError("no metrics file given")
    return merged
