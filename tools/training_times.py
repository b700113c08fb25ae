"""Training wall time of runs, from their history.json (sum of epoch seconds).

    python tools/training_times.py runs/lfw64_stacked* runs/lfw64_recursive_finetune*

Data loading, tracing before the first epoch and export are not included; the first
epoch of each phase is (it pays the tf.function tracing). Prints one markdown row per
run, then one per seed group (`NAME_sN` runs), which is how budgets are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

from rae_keras.config import seed_group


def run_times(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    phases = [(h["phase"], len(h["seconds"]), sum(h["seconds"])) for h in history]
    return {"name": os.path.basename(os.path.normpath(run_dir)), "phases": phases,
            "seconds": sum(s for _, _, s in phases)}


def epochs_text(phases) -> str:
    counts = [n for _, n, _ in phases]
    return str(counts[0]) if len(counts) == 1 else "+".join(map(str, counts))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories (with history.json)")
    args = parser.parse_args(argv)
    runs, missing = [], []
    for d in args.run_dirs:
        (runs if os.path.exists(os.path.join(d, "history.json")) else missing).append(d)
    if missing:
        print("skipped (no history.json): " + ", ".join(missing), file=sys.stderr)
    runs = [run_times(d) for d in runs]
    print("| run | epochs per phase | training s |\n|---|---|--:|")
    groups = defaultdict(list)
    for r in runs:
        print(f"| {r['name']} | {epochs_text(r['phases'])} | {r['seconds']:.0f} |")
        groups[seed_group(r["name"])].append(r["seconds"])
    print("\n| group | runs | training s, min-max | mean |\n|---|--:|--:|--:|")
    for name, seconds in groups.items():
        print(f"| {name} | {len(seconds)} | {min(seconds):.0f}-{max(seconds):.0f} "
              f"| {sum(seconds) / len(seconds):.0f} |")


if __name__ == "__main__":
    main()
