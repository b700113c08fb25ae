"""An export base's integer versions (TF Serving's layout): listing, numbering, and
repairing what a killed export left behind.

    EXPORT_BASE/VERSION/                       SavedModel
    EXPORT_BASE/tflite/VERSION/{float32,float16,dynamic_int8}.tflite

Exports stage a version in `.N.tmp-*` and move a replaced one aside to `.N.old-*`
(`rae_keras.fileio`); the functions here read and settle those.
"""

from __future__ import annotations

import os
from typing import List, Optional

from rae_keras import fileio

TFLITE_DIRNAME = "tflite"
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic_int8")


def version_dir(export_base: str, version: int) -> str:
    return os.path.join(export_base, str(int(version)))


def tflite_dir(export_base: str, version: int) -> str:
    return os.path.join(export_base, TFLITE_DIRNAME, str(int(version)))


def _integer_entries(path: str) -> List[int]:
    if not os.path.isdir(path):
        return []
    return sorted(int(name) for name in os.listdir(path)
                  if name.isdigit() and os.path.isdir(os.path.join(path, name)))


def list_versions(export_base: str) -> List[int]:
    """The SavedModel versions under `export_base`, ascending."""
    return _integer_entries(export_base)


def latest_version(export_base: str) -> Optional[int]:
    versions = list_versions(export_base)
    return versions[-1] if versions else None


def next_version(export_base: str) -> int:
    """One past the highest version present; 1 for a new base. Counts a version that
    a killed overwrite left aside (the next export restores it) and TFLite directories,
    but not orphans the next export removes."""
    orphans = _orphan_tflite_versions(export_base)
    taken = _integer_entries(export_base) + [
        v for v in _integer_entries(os.path.join(export_base, TFLITE_DIRNAME))
        if v not in orphans]
    taken += [int(name) for name, kind, _ in fileio.staged_leftovers(export_base)
              if kind == "old" and name.isdigit()]
    return max(taken) + 1 if taken else 1


def _orphan_tflite_versions(export_base: str) -> List[int]:
    """tflite/N without SavedModel N (or an old copy of it) holding exactly the files an
    export writes: an export killed between its two commits left it. Anything else
    there was not written by rae_keras and is kept (and its number stays taken)."""
    versions = set(list_versions(export_base))
    lite_base = os.path.join(export_base, TFLITE_DIRNAME)
    ours = {f"{q}.tflite" for q in TFLITE_QUANTIZATIONS}
    return [v for v in _integer_entries(lite_base)
            if v not in versions and not fileio.asides(version_dir(export_base, v))
            and set(os.listdir(os.path.join(lite_base, str(v)))) == ours]


def repair_export_base(export_base: str) -> None:
    """Undoes what killed exports left in `export_base`: removes their `.N.tmp-*`
    temporaries and settles every version with an old copy aside or an orphan TFLite
    directory (see `_settle_version`). Only for a writer holding the base's lock."""
    lite_base = os.path.join(export_base, TFLITE_DIRNAME)
    unsettled = set(_orphan_tflite_versions(export_base))
    for directory in (export_base, lite_base):
        for name, kind, path in fileio.staged_leftovers(directory):
            if not name.isdigit():
                continue  # not a version: not ours
            if kind == "tmp":
                fileio.remove_trees([path])
            else:
                unsettled.add(int(name))
    for version in sorted(unsettled):
        _settle_version(export_base, version)


def _settle_version(export_base: str, version: int) -> None:
    """Leaves version N whole after its swap finished, failed or was killed.

    Overwriting an existing N, export_model moves the old tflite/N aside, then the old
    N, then renames the new tflite/N in and the new N last (the commit point); no old
    tflite/N is moved aside without an old N. So an old N aside next to N means the
    swap committed: drop the old copies, TFLite first. An old N aside without N means
    it did not, and a tflite/N there is the new one: remove it, put N back, then the
    old tflite/N. Without N at all, a tflite/N is an orphan (see
    `_orphan_tflite_versions`). Each step can be redone after a kill.
    """
    final, lite = version_dir(export_base, version), tflite_dir(export_base, version)
    old, old_lite = fileio.asides(final), fileio.asides(lite)
    if old and os.path.isdir(final):
        fileio.remove_trees(old_lite + old)
        return
    if old:
        fileio.remove_trees([lite])
        os.rename(old[0], final)
        fileio.remove_trees(old[1:])
    if not os.path.isdir(final):
        if version in _orphan_tflite_versions(export_base):
            fileio.remove_trees([lite])
        fileio.remove_trees(old_lite)
    elif old_lite:
        fileio.remove_trees([lite])
        os.rename(old_lite[0], lite)
        fileio.remove_trees(old_lite[1:])
