"""Run-directory safety: only rae_keras's files are ever deleted, one writer at a time,
verified checkpoints with fallback, checkpoints tied to their configuration, a full
disk as one error. Checkpoints are written directly (no training), so tests are fast."""

import dataclasses
import errno
import gc
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from rae_keras import runs
from rae_keras.models import ConvAutoencoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _autoencoder(config, value=None):
    """A tiny autoencoder; with `value`, every weight equals it (easy to tell apart)."""
    autoencoder = ConvAutoencoder.from_model_config(config.model, runs.image_shape_of(config))
    model = autoencoder.full_model()
    if value is not None:
        model.set_weights([np.full(w.shape, value, np.float32) for w in model.get_weights()])
    return autoencoder


def _weights(autoencoder):
    return autoencoder.full_model().get_weights()


def _state(epoch):
    return runs.TrainingState(phase=0, epoch=epoch, history=[
        {"phase": "stage_1", "loss": [1.0] * epoch, "val_loss": [], "seconds": [0.1] * epoch}])


def _write_checkpoints(config, count=2):
    """Checkpoint k holds weights k/100, optimizer variable [k, k, k] and epoch k."""
    with runs.RunDirectory(config.model_dir, keep_checkpoints=10) as run:
        run.prepare(config)
        for k in range(1, count + 1):
            run.save_checkpoint(_autoencoder(config, k / 100), _state(k),
                                [keras.Variable(np.full(3, float(k), np.float32))])
        return [path for _, path in run.checkpoints()]


def _other(config, epochs=3):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message and message
    return message


# ------------------------------------------------- 1. --overwrite deletes only our files
@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_folder_is_refused_and_survives(tiny_run_config, tmp_path, overwrite):
    folder = tmp_path / "thesis"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "thesis.tex").write_text("chapter 1")
    config = dataclasses.replace(tiny_run_config, model_dir=str(folder))
    with pytest.raises(runs.RunDirError, match="not a run directory") as raised:
        runs.RunDirectory(str(folder)).prepare(config, overwrite=overwrite)
    assert "src" in _one_line(raised)
    assert (folder / "src" / "thesis.tex").read_text() == "chapter 1"
    assert sorted(os.listdir(folder)) == ["src"]  # not even a lock file was left


def test_model_dir_naming_a_file_is_one_error(tiny_run_config, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    config = dataclasses.replace(tiny_run_config, model_dir=str(path))
    with pytest.raises(runs.RunDirError, match="is a file") as raised:
        runs.RunDirectory(str(path)).prepare(config, overwrite=True)
    _one_line(raised)
    assert path.read_text() == "mine"


def test_overwrite_deletes_rae_keras_files_and_keeps_foreign_ones(tiny_run_config):
    config = tiny_run_config
    _write_checkpoints(config)
    run_dir = config.model_dir
    with open(os.path.join(run_dir, "notes.txt"), "w") as f:
        f.write("keep me")
    os.makedirs(os.path.join(run_dir, "logs"))
    other = _other(config)
    with runs.RunDirectory(run_dir) as run:
        run.prepare(other, overwrite=True)
        assert run.checkpoints() == []
    assert sorted(os.listdir(run_dir)) == ["checkpoints", "config.json", "notes.txt",
                                           runs.LOCK_NAME]
    assert open(os.path.join(run_dir, "notes.txt")).read() == "keep me"
    assert runs.RunDirectory(run_dir).load_config().train.epochs == 3


@pytest.mark.slow
def test_cli_refuses_a_foreign_folder_with_overwrite_in_one_line(tmp_path):
    folder = tmp_path / "thesis"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "thesis.tex").write_text("chapter 1")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-m", "rae_keras.train",
         f"--flagfile={os.path.join(ROOT, 'configs', 'quickstart.cfg')}",
         f"--model_dir={folder}", "--export_dir=", "--overwrite", "--image_size=16",
         "--filters=4,8", "--max_images=32"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and "not a run directory" in errors[0]
    assert (folder / "src" / "thesis.tex").read_text() == "chapter 1"


# ------------------------------------------------------------------ 2. one writer
def test_second_writer_in_process_is_refused_until_the_first_closes(tiny_run_config):
    config = tiny_run_config
    first = runs.RunDirectory(config.model_dir)
    first.prepare(config)
    second = runs.RunDirectory(config.model_dir)
    with pytest.raises(runs.RunDirError, match="in use by another writer") as raised:
        second.prepare(config)
    assert f"pid {os.getpid()}" in _one_line(raised)
    first.close()
    second.prepare(config)  # released by close()
    del second, raised  # the traceback refers to `second` too
    gc.collect()
    third = runs.RunDirectory(config.model_dir)
    third.prepare(config)  # released when the writer was garbage-collected
    third.close()
    with pytest.raises(runs.RunDirError, match="prepare"):  # a closed writer writes nothing
        third.save_checkpoint(_autoencoder(config), _state(1))


def test_lock_of_another_process_refuses_and_dies_with_it(tiny_run_config):
    config = tiny_run_config
    checkpoint = _write_checkpoints(config, count=1)[0]
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); sys.stdin.read()",
         os.path.join(config.model_dir, runs.LOCK_NAME)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunDirError, match="in use by another writer") as raised:
            runs.RunDirectory(config.model_dir).prepare(config)
        _one_line(raised)
        # Readers need no lock.
        _, autoencoder, _ = runs.load_trained(config.model_dir, log=pytest.fail)
        assert all(np.all(w == np.float32(0.01)) for w in _weights(autoencoder))
        assert os.path.isdir(checkpoint)
    finally:
        holder.kill()
        holder.wait()
    with runs.RunDirectory(config.model_dir) as run:
        run.prepare(config)  # the lock died with its process


# ------------------------------------------------------- 3. verified checkpoints
def _garbage(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 3)
        f.write(np.random.default_rng(0).bytes(4096))


def _plausible_weights(path):
    """Finite, loadable, wrong values: only the manifest's sha256 can tell."""
    with open(path, "rb") as f:
        content = f.read()
    run = np.full(4, 0.02, np.float32).tobytes()  # checkpoint 2's weights are all 0.02
    assert run in content
    with open(path, "wb") as f:
        f.write(content.replace(run, np.full(4, 0.5, np.float32).tobytes(), 1))


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _junk(path):
    with open(path, "w") as f:
        f.write("{junk")


CORRUPTIONS = {
    "garbage_in_weights": ("model.weights.h5", _garbage),
    "plausible_weights": ("model.weights.h5", _plausible_weights),
    "truncated_weights": ("model.weights.h5", _truncate),
    "bad_optimizer": ("optimizer.npz", _junk),
    "junk_state": ("state.json", _junk),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny_run_config, corruption):
    config = tiny_run_config
    first, newest = _write_checkpoints(config)
    name, damage = CORRUPTIONS[corruption]
    damage(os.path.join(newest, name))

    # A reader (export, evaluate) falls back and changes nothing.
    warnings = []
    _, exported, _ = runs.load_trained(config.model_dir, log=warnings.append)
    assert all(np.all(w == np.float32(0.01)) for w in _weights(exported))
    assert len(warnings) == 1 and "ckpt-000002" in warnings[0] and name in warnings[0]
    assert os.path.isdir(newest)

    # The writer restores weights, state and optimizer from the same, previous checkpoint
    # and sets the damaged one aside.
    warnings.clear()
    with runs.RunDirectory(config.model_dir, log=warnings.append) as run:
        run.prepare(config)
        autoencoder = _autoencoder(config)
        state = run.restore(autoencoder)
        variable = keras.Variable(np.zeros(3, np.float32))
        assert run.restore_optimizer([variable])
    assert state.epoch == 1
    assert all(np.all(w == np.float32(0.01)) for w in _weights(autoencoder))
    np.testing.assert_array_equal(variable.numpy(), [1.0, 1.0, 1.0])
    assert len(warnings) == 1 and "ckpt-000002" in warnings[0] and name in warnings[0]
    assert warnings[0].startswith("warning: ")
    assert [path for _, path in run.checkpoints()] == [first]
    assert os.path.isdir(newest + ".unusable")


def test_no_usable_checkpoint_is_one_error(tiny_run_config):
    config = tiny_run_config
    for path in _write_checkpoints(config):
        _truncate(os.path.join(path, "model.weights.h5"))
    with pytest.raises(runs.RunDirError, match="no usable checkpoint") as raised:
        runs.load_trained(config.model_dir, log=lambda line: None)
    assert "ckpt-000001" in _one_line(raised) and "ckpt-000002" in str(raised.value)


def test_checkpoint_without_manifest_is_used_with_a_warning_and_still_checked(
        tiny_run_config):
    """Checkpoints written before manifests existed stay usable, unverified."""
    config = tiny_run_config
    paths = _write_checkpoints(config)
    for path in paths:
        os.remove(os.path.join(path, runs.MANIFEST))
    warnings = []
    _, autoencoder, _ = runs.load_trained(config.model_dir, log=warnings.append)
    assert all(np.all(w == np.float32(0.02)) for w in _weights(autoencoder))
    assert len(warnings) == 1 and "no manifest" in warnings[0] and "ckpt-000002" in warnings[0]

    _truncate(os.path.join(paths[1], "model.weights.h5"))  # found by loading it
    warnings.clear()
    _, autoencoder, _ = runs.load_trained(config.model_dir, log=warnings.append)
    assert all(np.all(w == np.float32(0.01)) for w in _weights(autoencoder))
    assert "ckpt-000002" in warnings[0] and "does not load" in warnings[0]


def test_mark_exported_writes_a_new_verified_checkpoint(tiny_run_config):
    config = tiny_run_config
    _write_checkpoints(config)
    with runs.RunDirectory(config.model_dir, log=pytest.fail) as run:
        run.prepare(config)
        state = run.restore(_autoencoder(config))
        run.mark_exported(state, "/exports/1")
    assert [number for number, _ in run.checkpoints()] == [2, 3]
    restored = _autoencoder(config)
    again = runs.RunDirectory(config.model_dir, log=pytest.fail).restore(restored)
    assert again.exported == "/exports/1" and again.epoch == 2
    assert all(np.all(w == np.float32(0.02)) for w in _weights(restored))


# ------------------------------------------- 4. checkpoints know their configuration
def test_deleted_config_json_resumes_only_under_the_recorded_configuration(tiny_run_config):
    config = tiny_run_config
    _write_checkpoints(config)
    os.remove(os.path.join(config.model_dir, "config.json"))
    with pytest.raises(runs.RunDirError, match="another configuration.*epochs") as raised:
        runs.RunDirectory(config.model_dir).prepare(_other(config))
    _one_line(raised)
    with runs.RunDirectory(config.model_dir) as run:
        run.prepare(config)  # the same configuration resumes
        assert len(run.checkpoints()) == 2
    os.remove(os.path.join(config.model_dir, "config.json"))
    with runs.RunDirectory(config.model_dir) as run:
        run.prepare(_other(config), overwrite=True)
        assert run.checkpoints() == []


def test_config_json_edited_after_the_checkpoints_is_refused(tiny_run_config):
    config = tiny_run_config
    _write_checkpoints(config)
    config_path = os.path.join(config.model_dir, "config.json")
    saved = json.load(open(config_path))
    saved["config"]["train"]["epochs"] = 3
    with open(config_path, "w") as f:
        json.dump(saved, f)
    for attempt in (config, _other(config)):  # neither the original nor the edit
        with pytest.raises(runs.RunDirError, match="edited") as raised:
            runs.RunDirectory(config.model_dir).prepare(attempt)
        assert "epochs" in _one_line(raised)
    with pytest.raises(runs.RunDirError, match="edited"):
        runs.load_trained(config.model_dir)


@pytest.mark.parametrize("content, named", [
    ("{not json", "Expecting"),
    ('{"versions": {}}', "'config'"),
    ('{"config": {"data": {}, "model": {}}}', "train"),
    ('{"config": {"data": {}, "model": {}, "train": {"epochs": "three"}}}', "train.epochs"),
    ('{"config": {"data": {}, "model": {"filters": [4, "x"]}, "train": {}}}', "model.filters"),
])
def test_invalid_config_json_is_one_error(tiny_run_config, content, named):
    config = tiny_run_config
    _write_checkpoints(config, count=1)
    with open(os.path.join(config.model_dir, "config.json"), "w") as f:
        f.write(content)
    for attempt in (lambda: runs.RunDirectory(config.model_dir).prepare(config),
                    lambda: runs.load_trained(config.model_dir)):
        with pytest.raises(runs.RunDirError, match="not a valid rae_keras configuration") as e:
            attempt()
        assert named in _one_line(e)
    with runs.RunDirectory(config.model_dir) as run:
        run.prepare(config, overwrite=True)  # starts over
        assert run.checkpoints() == []


# ----------------------------------------------------------------- 5. full disk
@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EIO, "could not write")])
def test_failed_checkpoint_write_is_one_error_and_keeps_the_previous(
        tiny_run_config, monkeypatch, code, says):
    config = tiny_run_config
    with runs.RunDirectory(config.model_dir, log=pytest.fail) as run:
        run.prepare(config)
        variables = [keras.Variable(np.ones(3, np.float32))]
        first = run.save_checkpoint(_autoencoder(config, 0.01), _state(1), variables)

        def full_disk(path, **arrays):
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(np, "savez", full_disk)
        with pytest.raises(runs.RunDirError, match=says) as raised:
            run.save_checkpoint(_autoencoder(config, 0.02), _state(2), variables)
        message = _one_line(raised)
        assert "ckpt-000002" in message and "previous checkpoint ckpt-000001 is kept" in message
        assert os.listdir(run.checkpoints_dir) == ["ckpt-000001"]  # no partial checkpoint
        monkeypatch.undo()
        restored = _autoencoder(config)
        assert run.restore(restored).epoch == 1
    assert run.checkpoints() == [(1, first)]
    assert all(np.all(w == np.float32(0.01)) for w in _weights(restored))
