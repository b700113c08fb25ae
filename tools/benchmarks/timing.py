"""A timed in-process row and its two times.

Both come from per-epoch seconds (epoch begin to end: the training steps and the
validation), which rae_keras records in the run's history (history.json, "seconds" per
epoch) and a callback measures the same way for plain Keras:
  steady  epochs 2..E of every phase (phase = one `fit`: 1 for a and b, one per stage
          for c): the first epoch of every phase is excluded because it traces the
          train/test functions (and does any other per-phase start-up work, e.g. a
          per-stage prefix cache). Needs --epochs >= 2.
  wall    the whole call with E epochs per phase: model building, every epoch, the
          per-epoch checkpoints and TensorBoard summaries (b, c), everything.
Throughput = schedule-epoch images / time; "cores used" = the process' CPU seconds /
wall seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

Phases = List[Tuple[str, float, List[float]]]  # (phase, first-epoch s, steady epoch s)


@dataclasses.dataclass
class Row:
    key: str
    what: str
    images: int  # images per (schedule) epoch
    epochs: int  # schedule epochs run (per phase)
    wall_s: float  # the whole call
    steady_s: Optional[float] = None  # the timed epochs only
    steady_epochs: float = 0.0  # schedule epochs those cover
    note: str = ""
    phases: Phases = dataclasses.field(default_factory=list)
    cpu_s: Optional[float] = None  # process CPU time during wall_s

    @property
    def cores(self) -> Optional[float]:
        return None if self.cpu_s is None else self.cpu_s / self.wall_s

    @property
    def wall_ips(self) -> float:
        return self.epochs * self.images / self.wall_s

    @property
    def steady_ips(self) -> Optional[float]:
        if not self.steady_s or not self.steady_epochs:
            return None
        return self.steady_epochs * self.images / self.steady_s


def best_of(repeats: List[Row]) -> Row:
    """The least steady time and, separately, the least wall time of the repeats."""
    with_steady = [r for r in repeats if r.steady_s is not None]
    best = min(with_steady, key=lambda r: r.steady_s) if with_steady else repeats[0]
    fastest = min(repeats, key=lambda r: r.wall_s)
    return dataclasses.replace(best, wall_s=fastest.wall_s, cpu_s=fastest.cpu_s)


def steady_from_history(history: Sequence[Dict]) -> Tuple[Optional[float], float, Phases]:
    """history: per phase {"phase": name, "seconds": [per epoch]} (the run state's
    history). Returns (steady seconds: epochs 2.. of every phase, schedule epochs they
    cover, per phase (name, first-epoch s, steady epoch s))."""
    steady, epochs, detail = 0.0, 0, []
    for entry in history:
        seconds = list(entry.get("seconds", []))
        if not seconds:
            continue
        steady += sum(seconds[1:])
        epochs += len(seconds) - 1
        detail.append((str(entry["phase"]), seconds[0], seconds[1:]))
    if not detail or epochs == 0:
        return None, 0.0, detail
    return steady, epochs / len(detail), detail
