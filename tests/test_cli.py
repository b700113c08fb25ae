"""The command line: flagfiles and overrides, one-line errors, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest
from absl.testing import flagsaver

from rae_keras import flags as flags_lib
from rae_keras import train
from rae_keras.config import ConfigError, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.cfg")


def _parse(*args):
    flags_lib.FLAGS.unparse_flags()
    flags_lib.FLAGS(["train", *args])
    return flags_lib.run_config_from_flags()


@flagsaver.flagsaver
def test_flagfile_then_overrides():
    config = _parse(f"--flagfile={QUICKSTART}", "--epochs=7", "--filters=4,8")
    assert config.name == "quickstart"
    assert config.train.scheme == "recursive" and config.train.epochs == 7
    assert config.model.filters == (4, 8)
    assert config.data.dataset == "lfw_subset" and config.data.image_size == 32
    assert config.model_dir == "runs/quickstart" and config.export_dir == "exported/quickstart"


@flagsaver.flagsaver
def test_empty_export_dir_skips_export():
    assert _parse(f"--flagfile={QUICKSTART}", "--export_dir=").export_dir == ""


@pytest.mark.parametrize("config_file", ["quickstart.cfg", "seed_lfw128.cfg", "lfw64.cfg"])
@flagsaver.flagsaver
def test_shipped_configs_parse(config_file):
    args = [f"--flagfile={os.path.join(ROOT, 'configs', config_file)}"]
    if config_file != "quickstart.cfg":
        args.append("--data_dir=/somewhere")
    config = _parse(*args)
    assert config.model.num_stages >= 2


@flagsaver.flagsaver
def test_seed_lfw128_is_the_original_network():
    config = _parse(f"--flagfile={os.path.join(ROOT, 'configs', 'seed_lfw128.cfg')}",
                    "--data_dir=/x")
    assert config.model.filters == (6, 12, 24, 48, 96, 192, 384)
    assert [config.model.encoder_kernel(k) for k in (1, 2, 7)] == [5, 3, 3]
    assert (config.data.crop, config.data.image_size, config.train.batch_size) == (128, 128, 32)


@flagsaver.flagsaver
def test_learning_rate_schedule_flag_reaches_the_config():
    assert _parse().train.learning_rate_schedule == "constant"
    assert _parse("--learning_rate_schedule=cosine").train.learning_rate_schedule == "cosine"


def test_unknown_learning_rate_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="learning_rate_schedule"):
        TrainConfig(learning_rate_schedule="linear").validate()


@flagsaver.flagsaver
def test_non_integer_filters_are_a_config_error():
    with pytest.raises(ConfigError, match="--filters"):
        _parse("--filters=8,x")


def _train(*args, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "rae_keras.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("args, named", [
    (["--scheme=bogus"], "scheme"),
    (["--learning_rate_schedule=linear"], "learning_rate_schedule"),
    (["--no_such_flag=1"], "no_such_flag"),
    (["--dataset=folder", "--data_dir=/no/such/dir"], "/no/such/dir"),
    (["--dataset=folder"], "--data_dir"),
    (["--image_size=20"], "image_size"),
    (["--scheme=joint", "--level_weights=1,2"], "level_weights"),
])
@flagsaver.flagsaver
def test_bad_input_is_one_error_line(tmp_path, capsys, args, named):
    """The train command in this process: an exit with one `error:` line, no exception."""
    flags_lib.FLAGS.unparse_flags()
    argv = ["train", f"--flagfile={QUICKSTART}", f"--model_dir={tmp_path}/run",
            "--export_dir=", *args]
    with mock.patch.object(sys, "argv", argv), pytest.raises(SystemExit) as exited:
        flags_lib.run_main(train.main, train.ERRORS)
    stderr = capsys.readouterr().err
    assert exited.value.code in (1, 2)
    errors = _error_lines(stderr)
    assert len(errors) == 1 and named in errors[0], stderr[-2000:]


@pytest.mark.slow
def test_bad_input_is_one_error_line_without_traceback_end_to_end(tmp_path):
    """One case through a real process: TensorFlow started, the data source failed."""
    result = _train(f"--flagfile={QUICKSTART}", f"--model_dir={tmp_path}/run",
                    "--export_dir=", "--dataset=folder", "--data_dir=/no/such/dir")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and "/no/such/dir" in errors[0], result.stderr[-2000:]


def _latest_state(model_dir):
    checkpoints = sorted(d for d in os.listdir(os.path.join(model_dir, "checkpoints"))
                         if d.startswith("ckpt-")) if os.path.isdir(
        os.path.join(model_dir, "checkpoints")) else []
    if not checkpoints:
        return None
    try:
        with open(os.path.join(model_dir, "checkpoints", checkpoints[-1], "state.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):  # pruned while we looked
        return None


@pytest.mark.slow
def test_sigkill_mid_stage_then_rerun_resumes(tmp_path):
    model_dir = str(tmp_path / "run")
    epochs = 25
    args = [f"--flagfile={QUICKSTART}", f"--model_dir={model_dir}", "--export_dir=",
            "--image_size=16", "--filters=4,8", f"--epochs={epochs}", "--max_images=32"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen([sys.executable, "-m", "rae_keras.train", *args], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and process.poll() is None:
        state = _latest_state(model_dir)
        if state and state["phase"] == 1 and 1 <= state["epoch"] < epochs - 5:
            process.send_signal(signal.SIGKILL)
            killed_at = state
            break
        time.sleep(0.01)
    process.wait(timeout=30)
    assert killed_at is not None, "training ended before it could be killed mid-stage"
    stage_1_losses = _latest_state(model_dir)["history"][0]["loss"]

    result = _train(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stdout and "stage_2" in result.stdout
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)
    assert [len(h["loss"]) for h in history] == [epochs, epochs]
    assert history[0]["loss"] == stage_1_losses

    again = _train(*args)
    assert again.returncode == 0 and "not retraining" in again.stdout
