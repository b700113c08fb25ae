"""Export and file-writing safety: permissions, paths from the command line only, kills
at every rename of an export, non-finite weights, disk full.

TFLite conversion is faked (each "conversion" returns distinct bytes, so the files tell
which export wrote them): the real conversion is tested in test_serving.py. A kill is
simulated in-process by `killed`: at the chosen call the "process dies", and every
later call that would change the disk raises too, so no cleanup code reaches the disk.
"""

import contextlib
import errno
import itertools
import json
import os
import shutil
import stat
import sys

import keras
import pytest
from absl.testing import flagsaver

from rae_keras import export, fileio, runs, serving, train
from rae_keras import flags as flags_lib
from rae_keras.models import ConvAutoencoder
from rae_keras.config import DataConfig, ModelConfig, RunConfig, TrainConfig

FLAGS = flags_lib.FLAGS


def _config(**kwargs) -> RunConfig:
    return RunConfig(name="m", data=DataConfig(image_size=16, channels=1, max_images=8),
                     model=ModelConfig(filters=(4, 8), kernel_sizes=(3,)),
                     train=TrainConfig(scheme="recursive"), **kwargs)


def _autoencoder(seed: int = 0) -> ConvAutoencoder:
    keras.utils.set_random_seed(seed)
    autoencoder = ConvAutoencoder.from_model_config(_config().model, (16, 16, 1))
    autoencoder.full_model()
    return autoencoder


@pytest.fixture(autouse=True)
def fake_tflite(monkeypatch):
    conversions = itertools.count()
    monkeypatch.setattr(serving, "convert_tflite",
                        lambda *args, **kwargs: f"conversion {next(conversions)}".encode())


def _tflite_bytes(base, version):
    path = os.path.join(serving.tflite_dir(base, version), "float32.tflite")
    return open(path, "rb").read() if os.path.exists(path) else None


def _weights_of(base, version):
    return serving.read_rae_config(serving.version_dir(base, version))["weights_sha256"]


def _listing(root):
    """Every path under root (relative), hidden ones included."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def _hidden(root):
    return [p for p in _listing(root) if any(part.startswith(".") for part in p.split(os.sep))]


class Killed(BaseException):
    """The simulated SIGKILL."""


@contextlib.contextmanager
def killed(rename=None, rmtree=None, call=None):
    """The block runs as a process killed at the first os.rename(src, dst) for which
    `rename(src, dst)` holds (the rename does not happen), the first shutil.rmtree(path)
    for which `rmtree(path)` holds, or any call of `call` = (object, name)."""
    dead = []

    def die():
        dead.append(True)
        raise Killed

    with pytest.MonkeyPatch.context() as m:
        for module, name in ((os, "replace"), (os, "remove"), (os, "unlink"), (os, "rmdir"),
                             (os, "mkdir"), (os, "rename"), (shutil, "rmtree")):
            trigger = {"rename": rename, "rmtree": rmtree}.get(name)

            def patched(*args, _real=getattr(module, name), _trigger=trigger, **kwargs):
                if dead or (_trigger and _trigger(*map(str, args))):
                    die()
                return _real(*args, **kwargs)

            m.setattr(module, name, patched)
        if call:
            m.setattr(*call, lambda *args, **kwargs: die())
        with pytest.raises(Killed):
            yield
    assert dead


# ------------------------------------------------------------------ 1. permissions
@pytest.mark.parametrize("umask, dir_mode, file_mode",
                         [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_everything_written_follows_the_umask(tmp_path, umask, dir_mode, file_mode):
    previous = os.umask(umask)
    try:
        serving.export_model(_autoencoder(), str(tmp_path / "exported" / "m"), _config())
        fileio.atomic_write_json(str(tmp_path / "run" / "state.json"), {"epoch": 1})
        with fileio.atomic_directory(str(tmp_path / "run" / "ckpt-000001")) as tmp:
            open(os.path.join(tmp, "model.weights.h5"), "w").close()
    finally:
        os.umask(previous)
    modes = {p: stat.S_IMODE(os.stat(tmp_path / p).st_mode) for p in _listing(tmp_path)}
    assert "exported/m/1/assets.extra/rae_config.json" in modes
    assert "exported/m/tflite/1/float32.tflite" in modes
    wrong = {p: oct(mode) for p, mode in modes.items()
             if mode != (dir_mode if os.path.isdir(tmp_path / p) else file_mode)}
    assert wrong == {}


# ------------------------------------------------------------------ 2. paths from flags
def _run_dir(path, *, finished=True, seed=0) -> str:
    """A run directory with one checkpoint (no training: the weights of `seed`)."""
    run = runs.RunDirectory(str(path))
    run.prepare(_config(model_dir=str(path)))
    history = [{"phase": "stage_1", "loss": [0.5, 0.4], "val_loss": [], "seconds": [1, 1]}]
    run.save_checkpoint(_autoencoder(seed),
                        runs.TrainingState(phase=0, epoch=2, history=history, finished=finished))
    run.close()
    return run.path


@flagsaver.flagsaver
def test_export_paths_come_from_the_command_line_only(tmp_path, monkeypatch):
    """A config.json edited to aim the export at a victim folder, through export_dir and
    through the name (exported/../victim) at once: honouring either would replace the
    victim's version 1."""
    model_dir = _run_dir(tmp_path / "runs" / "good")
    config_path = os.path.join(model_dir, "config.json")
    saved = json.load(open(config_path))
    victim = tmp_path / "victim"
    saved["config"].update({"export_dir": str(victim), "name": "../victim"})
    json.dump(saved, open(config_path, "w"))
    (victim / "1").mkdir(parents=True)
    (victim / "1" / "precious").write_text("keep me")
    monkeypatch.chdir(tmp_path)  # where exported/../victim would land

    FLAGS.unparse_flags()
    FLAGS(["export", f"--model_dir={model_dir}", "--version=1", "--overwrite", "--notflite"])
    export.main([])
    assert _listing(victim) == ["1", "1/precious"]
    assert os.path.exists(tmp_path / "exported" / "good" / "1" / "saved_model.pb")


# ------------------------------------------------------------------ 3. kills
OVERWRITE_WINDOWS = {  # where the kill hits -> which version 1 the repair must leave
    "old tflite/1 moves aside": (dict(rename=lambda s, d=None: s.endswith("tflite/1")), "old"),
    "old 1 moves aside": (dict(rename=lambda s, d=None: s.endswith("m/1")), "old"),
    "new tflite/1 moves in": (dict(rename=lambda s, d=None: d and d.endswith("tflite/1")), "old"),
    "new 1 moves in": (dict(rename=lambda s, d=None: d and d.endswith("m/1")), "old"),
    "old tflite/1 is dropped": (dict(rmtree=lambda p: "tflite/.1.old-" in p), "new"),
    "old 1 is dropped": (dict(rmtree=lambda p: "m/.1.old-" in p), "new"),
}


@pytest.mark.slow
@pytest.mark.parametrize("window", OVERWRITE_WINDOWS)
def test_kill_during_overwrite_then_next_export_repairs(tmp_path, window):
    base, config = str(tmp_path / "m"), _config()
    old_ae, new_ae = _autoencoder(0), _autoencoder(1)
    serving.export_model(old_ae, base, config)
    expected = {"old": (_weights_of(base, 1), _tflite_bytes(base, 1)),
                "new": (serving.weights_sha256(new_ae), b"conversion 3")}
    trigger, survivor = OVERWRITE_WINDOWS[window]
    with killed(**trigger):
        serving.export_model(new_ae, base, config, version=1, overwrite=True)
    if window == "new 1 moves in":
        assert serving.list_versions(base) == []  # what the kill left: no version 1
    assert serving.next_version(base) == 2  # the old 1, aside, still counts

    assert serving.export_model(new_ae, base, config, tflite=False).endswith("m/2")
    assert serving.list_versions(base) == [1, 2]
    assert (_weights_of(base, 1), _tflite_bytes(base, 1)) == expected[survivor]
    assert _tflite_bytes(base, 2) is None
    assert _hidden(base) == []


def test_kill_between_tflite_and_saved_model_leaves_an_orphan_the_next_export_removes(
        tmp_path):
    base, config, ae = str(tmp_path / "m"), _config(), _autoencoder()
    os.makedirs(os.path.join(base, "tflite", "7"))  # not rae_keras's files: kept, counted
    open(os.path.join(base, "tflite", "7", "notes.txt"), "w").close()
    with killed(rename=lambda s, d=None: d and d.endswith("m/1")):
        serving.export_model(ae, base, config, version=1)
    assert os.path.isdir(serving.tflite_dir(base, 1)) and serving.list_versions(base) == []
    assert serving.next_version(base) == 8  # the orphan tflite/1 is not counted

    serving.export_model(ae, base, config, version=1, tflite=False)
    assert not os.path.exists(serving.tflite_dir(base, 1))  # never paired with the new 1
    assert os.path.exists(os.path.join(base, "tflite", "7", "notes.txt"))


def test_temporaries_of_killed_exports_are_cleaned_and_only_those(tmp_path):
    base, config, ae = str(tmp_path / "m"), _config(), _autoencoder()
    with killed(call=(serving, "convert_tflite")):
        serving.export_model(ae, base, config)
    left = _hidden(base)
    assert any(p.startswith(".1.tmp-") for p in left)
    assert any(p.startswith("tflite/.1.tmp-") for p in left)
    foreign = [".cache.tmp-abcd1234", ".1.tmp-short", ".notes", "tflite/.x.old-abcd1234"]
    for path in foreign + ["../.1.tmp-abcd1234"]:  # the last one is outside the base
        os.makedirs(os.path.join(base, path))

    serving.export_model(ae, base, config, tflite=False)
    assert _hidden(base) == sorted(foreign)
    assert os.path.isdir(tmp_path / ".1.tmp-abcd1234")
    assert serving.list_versions(base) == [1]


def test_a_second_export_to_a_locked_base_changes_nothing(tmp_path):
    base = str(tmp_path / "m")
    os.makedirs(os.path.join(base, ".1.tmp-abcd1234"))  # the other writer's, in progress
    with fileio.exclusive(base):
        with pytest.raises(serving.ExportError, match="another export .* in progress"):
            serving.export_model(_autoencoder(), base, _config())
    assert _listing(base) == [".1.tmp-abcd1234"]


def test_train_rerun_after_kill_before_mark_exported_does_not_export_again(tmp_path):
    config = _config(model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "m"))
    ae = _autoencoder()
    run = runs.RunDirectory(config.model_dir)
    run.prepare(config)
    run.save_checkpoint(ae, runs.TrainingState(finished=True))
    with killed(call=(runs.RunDirectory, "mark_exported")):
        train.export_trained(run, run.restore(ae), ae, config, tflite=False)
    assert serving.list_versions(config.export_dir) == [1]

    state = run.restore(ae)  # the rerun: training finished, not marked exported
    assert state.exported is None
    assert train.export_trained(run, state, ae, config, tflite=False).endswith("m/1")
    assert serving.list_versions(config.export_dir) == [1]
    assert run.restore(ae).exported.endswith("m/1")

    other = _autoencoder(1)  # other weights are exported as the next version
    assert train.export_trained(run, run.restore(ae), other, config,
                                tflite=False).endswith("m/2")
    run.close()


@flagsaver.flagsaver
def test_unfinished_run_exports_only_on_request(tmp_path, monkeypatch):
    model_dir = _run_dir(tmp_path / "run", finished=False)
    monkeypatch.chdir(tmp_path)
    FLAGS.unparse_flags()
    FLAGS(["export", f"--model_dir={model_dir}", "--notflite"])
    with pytest.raises(serving.ExportError, match="not finished.*--allow_unfinished") as e:
        export.main([])
    assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "exported")

    FLAGS.allow_unfinished = True
    export.main([])
    recorded = serving.read_rae_config(str(tmp_path / "exported" / "run" / "1"))
    assert (recorded["finished"], recorded["phase"], recorded["phase_name"],
            recorded["epoch"]) == (False, 0, "stage_1", 2)


# ------------------------------------------------------------------ 4. non-finite
def test_non_finite_weights_are_not_exported(tmp_path):
    ae = _autoencoder()
    kernel = next(v for v in ae.full_model().weights if v.path == "e2/kernel")
    value = keras.ops.convert_to_numpy(kernel).copy()
    value[0, 0, 0, 0] = float("nan")
    kernel.assign(value)
    with pytest.raises(serving.ExportError, match="non-finite.*e2/kernel"):
        serving.export_model(ae, str(tmp_path / "m"), _config())
    assert _listing(tmp_path) == []


# ------------------------------------------------------------------ 5. disk full
def _fail(error):
    def raise_(*args, **kwargs):
        raise error
    return raise_


def _enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_rename_to(suffix):
    """Fails renaming the new directory in (not putting the old one back)."""
    real = os.rename

    def rename(src, dst, *args, **kwargs):
        if str(dst).endswith(suffix) and ".tmp-" in str(src):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        return real(src, dst, *args, **kwargs)
    return rename


FAILURES = {
    "SavedModel": (serving, "write_rae_config", lambda: _fail(_enospc()), "No space left"),
    "TFLite": (serving, "write_tflite", lambda: _fail(_enospc()), "No space left"),
    "commit": (os, "rename", lambda: _fail_rename_to("m/1"), "Permission denied"),
    "export base": (os, "makedirs", lambda: _fail(PermissionError(
        errno.EACCES, os.strerror(errno.EACCES))), "Permission denied"),
}


@pytest.fixture(scope="module")
def exported_m(tmp_path_factory):
    """An export base holding version 1 (and its faked tflite/1), made once: tests copy it."""
    base = str(tmp_path_factory.mktemp("template") / "m")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(serving, "convert_tflite", lambda *args, **kwargs: b"conversion")
        serving.export_model(_autoencoder(), base, _config())
    return base


@pytest.mark.parametrize("where", FAILURES)
def test_disk_errors_are_one_line_and_leave_nothing(tmp_path, monkeypatch, capsys, where,
                                                    exported_m):
    model_dir = _run_dir(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    argv = ["export", f"--model_dir={model_dir}", "--version=1", "--overwrite"]
    if where != "export base":  # a version 1 for the failed export to replace
        shutil.copytree(exported_m, os.path.join("exported", "m"))
        open(os.path.join("exported", "m", "1", "marker"), "w").close()
    before = _listing(tmp_path)
    module, name, make_failure, message = FAILURES[where]
    monkeypatch.setattr(module, name, make_failure())
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_, flagsaver.flagsaver():
        flags_lib.run_main(export.main, export.ERRORS)
    assert exit_.value.code == 1
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("error: export of version 1")
    assert message in stderr[0]
    assert _listing(tmp_path) == before


def test_failed_file_writes_are_one_line_and_leave_nothing(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    fileio.atomic_write_json(str(path), {"epoch": 1})
    monkeypatch.setattr(os, "fsync", _fail(_enospc()))
    with pytest.raises(fileio.WriteError, match=r"cannot write .*state.json: No space left"):
        fileio.atomic_write_json(str(path), {"epoch": 2})
    with pytest.raises(fileio.WriteError, match=r"cannot write .*ckpt: No space left"):
        with fileio.atomic_directory(str(tmp_path / "ckpt")) as tmp:
            with open(os.path.join(tmp, "weights"), "w") as f:
                f.write("x")
                os.fsync(f.fileno())
    assert _listing(tmp_path) == ["state.json"]
    assert fileio.read_json(str(path)) == {"epoch": 1}
