"""What the command line prints: grouped --help, quiet start-up, the end-of-run summary,
and TensorBoard summaries whose steps agree."""

import glob
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from absl.testing import flagsaver

from rae_keras import cli, train
from rae_keras import flags as flags_lib
from rae_keras.config import RunConfig, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.cfg")
GROUP_TITLES = ["What to train", "The network", "The data", "Where things go",
                "Distribution", "evaluate"]
# TensorFlow's C++ log prefix (I0000 00:00:..., W1125 19:18:31...) and known noise.
NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|cuInit|cuda drivers|"
                   r"rendezvous|signature_serialization|INFO:tensorflow|tf_tfl_flatbuffer|"
                   r"Sharding callback|fingerprint|cpu_feature_guard|oneDNN", re.M)


def _command(module, *args, timeout=300):
    """`python -m rae_keras.MODULE` as a user runs it: no TF_CPP_MIN_LOG_LEVEL of ours."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    return subprocess.run([sys.executable, "-m", f"rae_keras.{module}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _project_flags():
    return [f.name for f in flags_lib.FLAGS.get_flags_for_module(flags_lib.__name__)]


# ----------------------------------------------------------------------------- --help
def test_every_flag_is_in_exactly_one_group():
    grouped = [name for _, names in flags_lib.GROUPS for name in names]
    assert len(grouped) == len(set(grouped))
    assert sorted(grouped) == sorted(set(_project_flags()))


@pytest.mark.slow
def test_help_lists_the_project_flags_by_concern_and_exits_0():
    result = _command("train", "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("python -m rae_keras.train")
    positions = [out.index(f"\n{title}:\n") for title in GROUP_TITLES]
    assert positions == sorted(positions) and "\nOther:" not in out
    for name in _project_flags():
        assert re.search(rf"^  --(\[no\])?{name}\b", out, re.M), name
    assert "Filters of e_1..e_N" in out  # help texts, not only names
    assert not NOISE.search(result.stderr), result.stderr[-2000:]


@flagsaver.flagsaver
@pytest.mark.parametrize("arg", ["-h", "--help"])
def test_short_help_prints_the_same_and_exits_0(arg, capsys):
    with pytest.raises(SystemExit) as exit_:
        flags_lib.parse_flags_or_exit(["train", "--epochs=3", arg])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "The network:" in out and "--filters=" in out


@flagsaver.flagsaver
def test_evaluate_help_lists_only_the_flags_evaluate_reads(capsys):
    from rae_keras import evaluate
    with pytest.raises(SystemExit) as exit_:
        flags_lib.parse_flags_or_exit(["evaluate", "--help"], only=evaluate.HELP_GROUPS)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("models", "output_dir", "split", "data_dir", "seed"):
        assert re.search(rf"^  --{name}=", out, re.M), name
    assert "--filters=" not in out and "--scheme=" not in out and "Other:" not in out


@flagsaver.flagsaver
def test_verbosity_defaults_to_warning_unless_given():
    flags_lib.FLAGS.unparse_flags()
    flags_lib.parse_flags_or_exit(["train"])
    assert flags_lib.FLAGS.verbosity == -1  # absl.app.run would make an unset one INFO
    flags_lib.FLAGS.unparse_flags()
    flags_lib.parse_flags_or_exit(["train", "--verbosity=1"])
    assert flags_lib.FLAGS.verbosity == 1


# ----------------------------------------------------------------------- quiet start-up
@pytest.mark.parametrize("argv, verbosity", [
    (["x"], None), (["x", "--verbosity=0"], 0), (["x", "-v", "1"], 1),
    (["x", "--v=-2"], -2), (["x", "--", "--verbosity=1"], None)])
def test_command_line_verbosity(argv, verbosity):
    assert cli.command_line_verbosity(argv) == verbosity
    assert cli.wants_tensorflow_logs(argv) == (verbosity is not None and verbosity >= 0)


def test_captured_native_stderr_is_dropped_unless_the_block_fails(capfd):
    with cli.native_stderr_captured():
        os.write(2, b"native noise\n")
    assert "native noise" not in capfd.readouterr().err
    with pytest.raises(RuntimeError):
        with cli.native_stderr_captured():
            os.write(2, b"why it failed\n")
            raise RuntimeError("boom")
    assert "why it failed" in capfd.readouterr().err


# ------------------------------------------------------------------ the end of train
def test_summary_labels_each_phase_loss_by_what_it_measures(tmp_path):
    config = RunConfig(name="demo", train=TrainConfig(scheme="recursive_finetune"))
    history = {"stage_1": {"loss": [0.5, 0.01], "val_loss": [0.4, 0.02], "seconds": [2, 1]},
               "stage_2": {"loss": [0.3], "val_loss": [], "seconds": [1]},
               "finetune": {"loss": [0.004], "val_loss": [0.005], "seconds": [3]}}
    text = train.summary(config, str(tmp_path / "run"), history, None, False, 0.005, 10, 2)
    assert text.startswith("done: demo, recursive_finetune, 4 epochs (7 s of training)")
    assert "not exported" in text and "python -m rae_keras.export --model_dir=" in text
    assert "rae_keras.evaluate" not in text  # nothing exported to evaluate
    assert "final full-depth validation loss: 0.005000" in text
    assert "stage_1   0.010000 / 0.020000  pixel MSE: x vs d1(e1(x))" in text
    assert "stage_2   0.300000 / -  activation MSE: h1 vs d2(e2(h1))" in text
    assert "finetune  0.004000 / 0.005000  pixel MSE of the full model, e1..e2 d2..d1" in text
    assert "pixel MSE (level 0)" in train.loss_meaning("joint", 3)


# ----------------------------------------------------------------- a whole train run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_output")
    model_dir, export_dir = str(base / "run"), str(base / "export")
    result = _command("train", f"--flagfile={QUICKSTART}", f"--model_dir={model_dir}",
                      f"--export_dir={export_dir}", "--image_size=16", "--filters=4,8",
                      "--epochs=2", "--max_images=32")
    return result, model_dir, export_dir


@pytest.mark.slow
def test_train_prints_progress_and_summary_without_tensorflow_noise(trained):
    result, model_dir, export_dir = trained
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not NOISE.search(output), NOISE.search(output).group(0) + "\n" + output[-3000:]
    assert "loss:" in result.stdout and "val_loss:" in result.stdout  # Keras' epoch lines
    assert "final losses" not in output
    version_dir = os.path.join(os.path.abspath(export_dir), "1")
    summary = result.stdout[result.stdout.index("\ndone: quickstart"):]
    for expected in (
            f"SavedModel   {version_dir} (version 1)",
            f"TFLite       {os.path.join(os.path.abspath(export_dir), 'tflite', '1')}/:",
            "float32.tflite",
            f"run dir      {os.path.abspath(model_dir)}",
            f"tensorboard --logdir {os.path.join(os.path.abspath(model_dir), 'logs')}",
            f"python -m rae_keras.evaluate --models={version_dir} --output_dir=",
            "final full-depth validation loss: ",
            "stage_1  ", "pixel MSE: x vs d1(e1(x))",
            "stage_2  ", "activation MSE: h1 vs d2(e2(h1))"):
        assert expected in summary, summary
    loss = float(re.search(r"full-depth validation loss: ([0-9.]+)", summary).group(1))
    assert 0 < loss < 1
    assert len(summary.strip().splitlines()) <= 14


def _event_steps(model_dir):
    steps = {}
    files = glob.glob(os.path.join(model_dir, "logs", "**", "events.out.tfevents.*"),
                      recursive=True)
    assert files
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


@pytest.mark.slow
def test_tensorboard_scalar_and_image_steps_agree(trained):
    result, model_dir, _ = trained
    assert result.returncode == 0, result.stderr[-3000:]
    steps = _event_steps(model_dir)
    # 2 stages x 2 epochs: steps are the epoch over the whole run, for every kind of tag;
    # scalars every epoch, image grids at each phase's last epoch.
    for phase, epochs in (("stage_1", [1, 2]), ("stage_2", [3, 4])):
        for kind, expected in (("loss", epochs), ("val_loss", epochs),
                               ("reconstruction", epochs[-1:]), ("depths", epochs[-1:])):
            assert sorted(steps[f"{kind}/{phase}"]) == expected, (kind, phase, steps)
