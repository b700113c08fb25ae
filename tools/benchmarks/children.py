"""Whole-process rows: child processes (`python -m rae_keras.train`, or the plain Keras
child of tools/benchmark.py), timed from outside; peak RSS is the child's own
high-water mark from wait4."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

from absl import flags

from .options import CHILD_FLAGS, ROOT, Options
from .report import fmt

FLAGS = flags.FLAGS


@dataclasses.dataclass
class Process:
    """One child process: its wall and CPU seconds and its peak resident memory."""
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # the child's own high-water mark (wait4's ru_maxrss)
    output: str

    @property
    def train_images(self) -> Optional[int]:
        """The training images `python -m rae_keras.train` reported loading."""
        for line in self.output.splitlines():
            if line.startswith("data: ") and " training and " in line:
                return int(line.split()[1])
        return None


@dataclasses.dataclass
class WholeRow:
    key: str
    what: str
    images: Optional[int]  # training images
    process: Process

    def line(self) -> str:
        p = self.process
        return (f"| {self.key} | {self.what} | {fmt(self.images)} | {p.wall_s:.1f} | "
                f"{p.cpu_s:.1f} | {p.peak_rss_mb:,.0f} |")


def run_process(command: Sequence[str]) -> Process:
    """Runs `command` from the repository root; its wall time, CPU time and peak RSS
    (the whole process, as the kernel counts it). A failure is an error with its
    output's tail."""
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        child = subprocess.Popen(list(command), cwd=ROOT, stdout=output,
                                 stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}:\n"
                           f"{text[-3000:]}")
    return Process(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, text)


def child_flags(opts: Options, overrides: Sequence[str] = ()) -> List[str]:
    """The benchmark's settings as `python -m rae_keras.train` flags, then `overrides`."""
    own = [s for s in (FLAGS[name].serialize() for name in CHILD_FLAGS) if s]
    return own + [f"--dataset={opts.config.data.dataset}", *overrides]


def train_process(opts: Options, workdir: str, cache_dir: str, *, max_images: int,
                  scheme: str = "stacked",
                  epochs: int = 1, flags_: Sequence[str] = ()) -> Process:
    """`python -m rae_keras.train` with the benchmark's settings in a fresh run directory
    (no export), reading and building the image cache in `cache_dir`."""
    model_dir = tempfile.mkdtemp(prefix=f"{scheme}_e{epochs}_", dir=workdir)
    try:
        return run_process([
            sys.executable, "-m", "rae_keras.train",
            *child_flags(opts, [*flags_, f"--max_images={max_images}", f"--scheme={scheme}",
                          f"--epochs={epochs}", "--finetune_epochs=0", "--name=benchmark",
                          f"--model_dir={model_dir}", "--export_dir=", "--notflite",
                          f"--cache_dir={cache_dir}"])])
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


def cold_train_process(opts: Options, workdir: str, *, max_images: int,
                       flags_: Sequence[str] = ()) -> Process:
    """One stacked epoch from a cold image cache (the child decodes and caches its
    images), the cache removed afterwards."""
    cache_dir = tempfile.mkdtemp(prefix="cache_", dir=workdir)
    try:
        return train_process(opts, workdir, cache_dir, max_images=max_images, flags_=flags_)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
