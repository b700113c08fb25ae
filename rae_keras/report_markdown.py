"""Numbers -> the markdown of report.md and of the command line.

Which value is best (marked in bold, among the models at the same depth) is the metric
table's `better`: lowest MSE; highest PSNR, SSIM, MS-SSIM and detail correlation; for
the two sharpness ratios the one closest to 1.0 ("as sharp as the original": below 1
is blur, above 1 is artefacts or noise the original does not have). Values are
compared as displayed, so equal-looking values are all marked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from rae_keras.evaluation import FULL, depth_keys
from rae_keras.metrics import CLOSEST_TO_ONE, HIGHER, LOWER, METRIC_NAMES, METRICS

_ARROWS = {LOWER: "↓", HIGHER: "↑", CLOSEST_TO_ONE: "→1"}
_WORDS = {LOWER: "lower is better", HIGHER: "higher is better",
          CLOSEST_TO_ONE: "closest to 1 is best"}


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
