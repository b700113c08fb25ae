"""Atomic files and directories: complete or absent, never half-written."""

import os

import pytest

from rae_keras import fileio


def test_atomic_directory_appears_only_when_complete(tmp_path):
    target = tmp_path / "7"
    with fileio.atomic_directory(str(target)) as tmp:
        (open(os.path.join(tmp, "a"), "w")).write("x")
        assert not target.exists()
    assert (target / "a").read_text() == "x"
    assert os.listdir(tmp_path) == ["7"]


def test_failed_directory_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with fileio.atomic_directory(str(tmp_path / "7")) as tmp:
            open(os.path.join(tmp, "a"), "w").write("x")
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []


def test_existing_directory_is_refused_or_replaced_whole(tmp_path):
    target = tmp_path / "7"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(FileExistsError):
        with fileio.atomic_directory(str(target)):
            pass
    with fileio.atomic_directory(str(target), overwrite=True) as tmp:
        open(os.path.join(tmp, "new"), "w").write("new")
    assert os.listdir(target) == ["new"]
    assert os.listdir(tmp_path) == ["7"]


def test_atomic_write_and_stale_temporaries(tmp_path):
    path = tmp_path / "state.json"
    fileio.atomic_write_json(str(path), {"epoch": 3})
    assert fileio.read_json(str(path)) == {"epoch": 3}
    (tmp_path / ".ckpt-000002.tmp-abc").mkdir()  # a writer killed mid-checkpoint
    (tmp_path / ".state.json.x.tmp").write_text("{")
    fileio.remove_stale_temporaries(str(tmp_path))
    assert os.listdir(tmp_path) == ["state.json"]
