"""Numbers -> metrics.json and report.md.

`summary` turns an `evaluation.Evaluation` into what metrics.json holds: per export
the mean and standard deviation of each metric over its images, per group (the seeds
of one setting) the mean and sample standard deviation of its exports' means, since
the spread a reader needs is between trainings, not between faces.

Which value is best (marked in bold, among the models at the same depth) is the metric
table's `better`: lowest MSE; highest PSNR, SSIM, MS-SSIM and detail correlation; for
the two sharpness ratios the one closest to 1.0 ("as sharp as the original": below 1
is blur, above 1 is artefacts or noise the original does not have). Values are
compared as displayed, so equal-looking values are all marked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from rae_keras import metrics as metrics_lib
from rae_keras.evaluation import FORMAT, FULL, Evaluation, Scored, depth_keys
from rae_keras.metrics import CLOSEST_TO_ONE, HIGHER, LOWER, METRIC_NAMES, METRICS

_ARROWS = {LOWER: "↓", HIGHER: "↑", CLOSEST_TO_ONE: "→1"}
_WORDS = {LOWER: "lower is better", HIGHER: "higher is better",
          CLOSEST_TO_ONE: "closest to 1 is best"}


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


# --------------------------------------------------------------------------- markdown
def format_value(metric: str, mean: float, std: Optional[float] = None) -> str:
    """A displayed value: `24.13`, or `24.13 ± 0.05` with a spread; inf/nan spelled out."""
    fmt = METRICS[metric].fmt

    def one(v: float) -> str:
        if v is None or math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = format(v, fmt)
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"

    return one(mean) if std is None else f"{one(mean)} ± {one(std)}"


def best_rows(metric: str, means: Sequence[float]) -> List[int]:
    """Indices of the best of `means` for `metric` as displayed (ties all win)."""
    shown = []
    for m in means:
        try:
            shown.append(float(format_value(metric, m)))
        except ValueError:
            shown.append(math.nan)
    keys = [METRICS[metric].shortfall(s) for s in shown]
    finite = [k for k in keys if not math.isnan(k)]
    if not finite:
        return []
    best = min(finite)
    return [i for i, k in enumerate(keys) if k == best]


@dataclasses.dataclass(frozen=True)
class TableRow:
    model: str
    depth: str  # "full", "1", "2", ...
    values: Mapping[str, Tuple[float, Optional[float]]]  # metric -> (mean, std or None)
    exports: int = 1


def markdown_table(rows: Sequence[TableRow], metrics: Sequence[str] = METRIC_NAMES) -> str:
    """One markdown table; the best value of each column is bold among the rows of
    the same depth (the models compared at equal depth), when there are two or more."""
    show_n = any(r.exports > 1 for r in rows)
    header = ["Model", "Depth"] + (["n"] if show_n else [])
    header += [f"{METRICS[m].label} {_ARROWS[METRICS[m].better]}" for m in metrics]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 2 + ["--:"] * (len(header) - 2)) + "|"]
    cells = [[format_value(m, *r.values[m]) for m in metrics] for r in rows]
    by_depth: Dict[str, List[int]] = {}
    for i, r in enumerate(rows):
        by_depth.setdefault(r.depth, []).append(i)
    for indices in by_depth.values():
        if len(indices) < 2:
            continue
        for j, m in enumerate(metrics):
            for b in best_rows(m, [rows[i].values[m][0] for i in indices]):
                cells[indices[b]][j] = f"**{cells[indices[b]][j]}**"
    for r, c in zip(rows, cells):
        lines.append("| " + " | ".join([r.model, r.depth] + ([str(r.exports)] if show_n else [])
                                       + c) + " |")
    return "\n".join(lines)


def metric_legend(metrics: Sequence[str] = METRIC_NAMES) -> str:
    """Markdown bullets describing the columns."""
    return "\n".join(f"- **{METRICS[m].label}**: {METRICS[m].description}; "
                     f"{_WORDS[METRICS[m].better]}." for m in metrics)


def _depth_label(key: str) -> str:
    return key if key == FULL else key.split("_")[1]


def table_rows(numbers: Mapping) -> List[TableRow]:
    """Report rows: every group at "full", then at depth 1, 2, ... (models side by side
    at each depth, so the best of each column is marked among equals)."""
    max_depth = max(g["num_stages"] for g in numbers["groups"])
    rows = []
    for key in depth_keys(max_depth):
        for g in numbers["groups"]:
            if key in g["results"]:
                rows.append(TableRow(
                    model=g["label"], depth=_depth_label(key), exports=g["n"],
                    values={m: (v["mean"], v["std"]) for m, v in g["results"][key].items()}))
    return rows


def markdown_table_from(numbers: Mapping) -> str:
    return markdown_table(table_rows(numbers))


def _introduction(numbers: Mapping) -> List[str]:
    models = numbers["models"]
    seeds = any(g["n"] > 1 for g in numbers["groups"])
    sets = sorted({m["evaluation_set"] for m in models})
    data = models[0]["data"]
    source = data["dataset"] + (f" ({data['data_dir']})" if data.get("data_dir") else "")
    return [
        "# Evaluation", "",
        f"Exported SavedModels evaluated through their serving signatures on {source}, "
        f"{data['image_size']}x{data['image_size']}x{data['channels']}"
        + (f", central {data['crop']}-pixel crop" if data.get("crop") else "")
        + f"; images: {'; '.join(sets)}.",
        "",
        "Each value is the mean over the evaluation images"
        + ("; where n > 1 the row groups n exports (seeds) and shows the mean ± sample "
           "standard deviation of their means." if seeds else ".")
        + " Depth *full* is the `serving_default` signature, depth k is "
          "`reconstruct_depth_k` (encoder and decoder stages 1..k; depth N is the full "
          "model). Best value per column among the models at the same depth in **bold**.",
    ]


def _models_section(numbers: Mapping) -> List[str]:
    lines = ["## Models", "",
             "| Model | Export | Scheme | Stages | Images | Identities |",
             "|---|---|---|--:|--:|--:|"]
    lines += [f"| {m['group']} | `{m['version_dir']}` | {m['scheme']} | {m['num_stages']} | "
              f"{m['num_images']} | {m['num_identities']} |" for m in numbers["models"]]
    ms = numbers["ms_ssim"]
    return lines + ["", f"MS-SSIM: filter size {ms['filter_size']}, "
                    f"{len(ms['power_factors'])} scale(s), power factors "
                    + ", ".join(f"{p:.4f}" for p in ms["power_factors"]) + "."]


def _figures_section(numbers: Mapping) -> List[str]:
    figures = numbers["figures"]
    lines = ["## Figures", "",
             "Originals, then each model's reconstruction (the first export of a group):", "",
             f"![reconstructions]({figures['reconstructions']})", ""]
    if numbers.get("figure_note"):
        lines += [numbers["figure_note"], ""]
    lines += ["Reconstructions at every depth:", ""]
    lines += [f"![{name}]({path})" for name, path in figures.items() if name.startswith("depths_")]
    return lines + [
        "", "Radially averaged power spectra of the grayscale images (Hann window, log "
        "scale); right, each model over the originals: below 1 is lost detail (blur), "
        "the dashed line is the high-frequency cutoff of the HF energy ratio:", "",
        f"![power spectrum]({figures['power_spectrum']})", ""]


def render_report(numbers: Mapping) -> str:
    """report.md: the table, its legend, the models and, when written, the figures."""
    lines = _introduction(numbers) + ["", markdown_table_from(numbers), "", metric_legend(),
                                      ""] + _models_section(numbers)
    lines += [""] + (_figures_section(numbers) if numbers["figures"] else [])
    return "\n".join(lines)
