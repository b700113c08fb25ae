"""The targets, the PASS/MISS verdicts and the printed tables.

Ratios are printed for both times (steady and wall), each with PASS/MISS against its
target; whole-process rows get one table of wall s, CPU s and peak RSS.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

TARGET_B_OVER_A = 0.95  # rae_keras stacked img/s >= 0.95 x plain Keras
TARGET_C_OVER_B_TIME = 1.10  # recursive schedule time <= 1.1 x stacked, same epochs
TARGET_D_OVER_B = 3.0  # input pipeline img/s >= 3 x stacked training
TARGET_PLAIN_OVER_RAE = 0.95  # plain Keras whole-process time >= 0.95 x rae_keras'
TARGET_RSS_MB = 2048.0  # peak RSS, one seed-network epoch on 1,000 images
TARGET_RSS_ADDED_MB = 512.0  # ... and what every training image adds to it
TARGET_FLAT = 1.10  # peak RSS at 100,000+ small images / at 10,000

Out = Callable[[str], None]
Ratios = Dict[str, Dict[str, Optional[float]]]


def fmt(value: Optional[float], digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(x: Optional[float], y: Optional[float]) -> Optional[float]:
    return None if x is None or y is None or y == 0 else x / y


def verdict(value: Optional[float], target: float, at_least: bool) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value >= target if at_least else value <= target) else "MISS"


def ratio_line(label: str, value: Optional[float], target: float, at_least: bool,
               digits: int = 3) -> str:
    op = ">=" if at_least else "<="
    return (f"{label}: {fmt(value, digits)} {verdict(value, target, at_least)} "
            f"(target {op} {target:g})")


def _per_epoch(row) -> Optional[float]:
    return row.steady_s and row.steady_s / row.steady_epochs


def _ratio_specs(rows: Dict) -> List[tuple]:
    """(label, steady, wall, target, at_least, comment) of each ratio the rows allow."""
    a, b, c, d1, d2 = (rows.get(k) for k in ("a", "b", "c", "d1", "d2"))
    specs = []
    if a and b:
        specs.append(("b/a  rae_keras stacked / plain Keras fit (img/s)",
                      ratio(b.steady_ips, a.steady_ips), ratio(b.wall_ips, a.wall_ips),
                      TARGET_B_OVER_A, True, ""))
    if b and c:
        specs.append(("c/b  recursive schedule / stacked, *time* for the same epochs",
                      ratio(_per_epoch(c), _per_epoch(b)),
                      ratio(c.wall_s, b.wall_s), TARGET_C_OVER_B_TIME, False,
                      "(img/s ratio c/b is its inverse)"))
    for d, label, comment in ((d1, "d1/b epoch_batches pipeline", ""),
                              (d2, "d2/b JPEG decode",
                               "(decode runs once at load time, not per epoch)")):
        if b and d:
            specs.append((f"{label} / stacked training (img/s)",
                          ratio(d.steady_ips, b.steady_ips), ratio(d.wall_ips, b.wall_ips),
                          TARGET_D_OVER_B, True, comment))
    return specs


def ratio_lines(rows: Dict) -> Tuple[List[str], Ratios]:
    lines, values = [], {}
    for label, steady, wall, target, at_least, comment in _ratio_specs(rows):
        op = ">=" if at_least else "<="
        parts = [f"{name} {fmt(value, 3)} {verdict(value, target, at_least)}"
                 if value is not None else f"{name} n/a"
                 for name, value in (("steady", steady), ("wall", wall))]
        lines.append(f"{label}: {', '.join(parts)}  (target {op} {target:g}) {comment}"
                     .rstrip())
        values[label.split()[0]] = {"steady": steady, "wall": wall}
    return lines, values


def _row_line(r) -> str:
    steady_epochs = f"{r.steady_epochs:g}" if r.steady_s is not None else "0"
    return (f"| {r.key} | {r.what} | {r.images} | {steady_epochs} of {r.epochs} | "
            f"{fmt(r.steady_s, 2)} | {fmt(r.steady_ips)} | {r.wall_s:.2f} | "
            f"{r.wall_ips:,.0f} | {fmt(r.cores, 2)} |")


def _details(rows: Sequence) -> List[str]:
    """Per phase epoch seconds of rows a, b, c, and every row's note."""
    details = []
    for r in rows:
        if r.key in ("a", "b", "c") and r.phases:
            parts = [f"{name} {first:.2f}/{'+'.join(f'{s:.2f}' for s in rest) or '-'}"
                     for name, first, rest in r.phases]
            details.append(f"{r.key} per phase, first epoch (incl. tracing) / steady "
                           f"epoch s: {'; '.join(parts)}")
        if r.note:
            details.append(f"{r.key}: {r.note}")
    return details


def report(rows: Sequence, settings: List[str], notes: List[str], out: Out = print
           ) -> Ratios:
    """The in-process table (rows a-d), its ratios against their targets, the notes."""
    out("")
    for line in settings:
        out(line)
    out("")
    out("| row | what | images/epoch | epochs | steady s | steady img/s | wall s | wall img/s "
        "| cores used |")
    out("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        out(_row_line(r))
    out("")
    lines, values = ratio_lines({r.key: r for r in rows})
    for line in lines:
        out(line)
    details = _details(rows)
    if details or notes:
        out("")
    for line in details + notes:
        out(line)
    return values


def whole_report(rows: Sequence, lines: List[str], out: Out) -> None:
    """The whole-process table (children's wall s, CPU s, peak RSS) and its targets."""
    out("")
    out("| row | what | training images | wall s | CPU s | peak RSS MB |")
    out("|---|---|---:|---:|---:|---:|")
    for row in rows:
        out(row.line())
    out("")
    for line in lines:
        out(line)
