"""rae_keras.evaluate (the driver), evaluation (scoring), report (numbers -> markdown/JSON),
figures and the export-list helpers of rae_keras.exports, on tiny exports."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from PIL import Image

from rae_keras import data as data_lib
from rae_keras import evaluate as ev
from rae_keras import eval_sets, evaluation, figures, metrics, report, report_markdown, serving
from rae_keras import exports as exports_lib
from rae_keras import flags as flags_lib
from rae_keras.exports import ListedExport, LoadError
from rae_keras.models import ConvAutoencoder
from rae_keras.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ModelConfig(filters=(4, 8))


def _export(base, name, scheme="recursive", seed=0, size=16):
    keras.utils.set_random_seed(1 + seed + (10 if scheme == "stacked" else 0))
    autoencoder = ConvAutoencoder.from_model_config(MODEL, (size, size, 1))
    config = RunConfig(name=name, data=DataConfig(dataset="lfw_subset", image_size=size,
                                                  channels=1, seed=seed),
                       model=MODEL, train=TrainConfig(scheme=scheme, seed=seed))
    return serving.export_model(autoencoder, str(base / name), config, tflite=False)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """rec_seed0, rec_seed1 (one group), stk (two versions) at 16x16; wide32 at 32x32."""
    base = tmp_path_factory.mktemp("exported")
    paths = {}
    for name, scheme, seed in [("rec_seed0", "recursive", 0), ("rec_seed1", "recursive", 1),
                               ("stk", "stacked", 0), ("stk", "stacked", 0)]:
        paths[name] = _export(base, name, scheme, seed)  # stk twice: versions 1 and 2
    paths["wide32"] = _export(base, "wide32", size=32)
    return {name: os.path.dirname(version_dir) for name, version_dir in paths.items()}


@pytest.fixture(scope="module")
def evaluated(exports, tmp_path_factory):
    """One in-process evaluation of the three 16x16 models."""
    out = str(tmp_path_factory.mktemp("eval"))
    models = [exports["rec_seed0"], exports["rec_seed1"], exports["stk"]]
    summary = ev.evaluate(models, out, batch_size=4, num_figure_images=4, progress=False)
    return out, summary


# --------------------------------------------------------------------------- end to end
def _cli(*args, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "rae_keras.evaluate", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # a subprocess
def test_cli_end_to_end(exports, tmp_path):
    out = tmp_path / "report"
    models = f"{exports['rec_seed0']},{exports['rec_seed1']},{exports['stk']}"
    result = _cli(f"--models={models}", f"--output_dir={out}", "--summary_images=3")
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(os.listdir(out))
    for expected in ("metrics.json", "report.md", "reconstructions.png", "depths_rec.png",
                     "depths_stk.png", "power_spectrum.png", "logs"):
        assert expected in names
    report_md = (out / "report.md").read_text()
    metrics_table = report_md.split("## Models")[0]
    table = [line for line in metrics_table.splitlines() if line.startswith("| rec |")
             or line.startswith("| stk |")]
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]) for line in table}
    assert rows == {(m, d) for m in ("rec", "stk") for d in ("full", "1", "2")}
    assert "±" in report_md  # the rec row is two seeds
    summary = json.loads((out / "metrics.json").read_text())
    assert [g["label"] for g in summary["groups"]] == ["rec", "stk"]
    assert [g["n"] for g in summary["groups"]] == [2, 1]
    assert "| rec | full |" in result.stdout  # the table is printed too


@pytest.mark.slow  # a subprocess
def test_cli_errors_are_one_line(exports, tmp_path):
    result = _cli(f"--models={exports['rec_seed0']},{exports['wide32']}",
                  f"--output_dir={tmp_path}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "image sizes" in errors[0] and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- what is written
def test_outputs(evaluated):
    out, summary = evaluated
    on_disk = json.load(open(os.path.join(out, "metrics.json")))
    assert on_disk["format"] == evaluation.FORMAT and on_disk["split"] == "test"
    assert on_disk["metrics"] == list(metrics.METRIC_NAMES)
    assert on_disk["better"]["laplacian_variance_ratio"] == metrics.CLOSEST_TO_ONE
    for m in on_disk["models"]:
        assert set(m["results"]) == {"full", "depth_1", "depth_2"}
        for values in m["results"].values():
            assert set(values) == set(metrics.METRIC_NAMES)
            assert all(isinstance(v["mean"], float) for v in values.values())
    for name, file in on_disk["figures"].items():
        image = Image.open(os.path.join(out, file))
        assert image.format == "PNG" and image.width > 200 and image.height > 100
    # Originals + a row per group (2); originals + a row per depth (2): 96-pixel cells.
    for file in ("reconstructions.png", "depths_rec.png"):
        image = Image.open(os.path.join(out, file))
        assert 3 * 96 < image.height < 4 * 96 and image.width > 4 * 96


def test_tensorboard_has_the_figures_and_report(evaluated):
    out, summary = evaluated
    log_dir = os.path.join(out, "logs")
    tags = set()
    for file in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, file)):
            tags.update(v.tag for v in event.summary.value)
    assert {f"evaluate/{name}" for name in summary["figures"]} | {"evaluate/report"} <= tags


def test_measures_what_the_saved_model_serves(exports, evaluated):
    """The numbers equal the metrics of the SavedModel's own outputs on the export's
    test identities (the split its training config made)."""
    _, summary = evaluated
    entry = summary["models"][1]  # rec_seed1: trained with split seed 1
    config = DataConfig(dataset="lfw_subset", image_size=16, channels=1, seed=1)
    test = data_lib.load_splits(config).test
    assert entry["num_images"] == len(test) and entry["data"]["seed"] == 1
    loaded = tf.saved_model.load(entry["version_dir"])
    for key, signature in [("full", "serving_default"), ("depth_1", "reconstruct_depth_1")]:
        out = loaded.signatures[signature](images=tf.constant(test.images))["reconstruction"]
        expected = metrics.evaluate_images(test.images, out.numpy())
        for name in metrics.METRIC_NAMES:
            assert entry["results"][key][name]["mean"] == pytest.approx(
                np.nanmean(expected[name]), rel=1e-5, abs=1e-7), (key, name)
    # The full model is depth N.
    assert entry["results"]["full"]["mse"]["mean"] == pytest.approx(
        entry["results"]["depth_2"]["mse"]["mean"])


def test_groups_report_mean_and_spread_over_seeds(evaluated):
    _, summary = evaluated
    group = summary["groups"][0]
    assert group["label"] == "rec" and group["n"] == 2
    members = [m for m in summary["models"] if m["group"] == "rec"]
    assert [m["data"]["seed"] for m in members] == [0, 1]  # each on its own test split
    for name in metrics.METRIC_NAMES:
        means = [m["results"]["full"][name]["mean"] for m in members]
        assert group["results"]["full"][name]["mean"] == pytest.approx(np.mean(means))
        assert group["results"]["full"][name]["std"] == pytest.approx(np.std(means, ddof=1))
    assert summary["groups"][1]["results"]["full"]["mse"]["std"] is None  # one export


def test_export_base_resolves_to_latest_version(exports, evaluated, tmp_path):
    _, summary = evaluated
    stk = [m for m in summary["models"] if m["group"] == "stk"][0]
    assert stk["version_dir"].endswith(os.path.join("stk", "2"))
    resolve = exports_lib.resolve_export
    assert resolve(os.path.join(exports["stk"], "1")).endswith(os.path.join("stk", "1"))
    with pytest.raises(LoadError, match="does not exist"):
        resolve(os.path.join(exports["stk"], "nope"))
    with pytest.raises(LoadError, match="no SavedModel"):
        resolve(str(tmp_path))


# --------------------------------------------------------------------------- model list
@pytest.mark.parametrize("path, group", [
    ("exported/rec_seed12", "rec"), ("exported/rec-seed3/", "rec"), ("a/rec_s1", "rec"),
    ("a/rec-s2", "rec"), ("a/lfw64_recursive", "lfw64_recursive"), ("a/seed1", "seed1"),
    ("a/rec_seeds", "rec_seeds"),
])
def test_default_group_strips_seed_suffixes(path, group):
    assert exports_lib.default_group(path, os.path.abspath(os.path.join(path, "1"))) == group


def test_default_group_of_a_version_dir_keeps_the_version():
    assert exports_lib.default_group("exported/rec_seed1/3",
                            os.path.abspath("exported/rec_seed1/3")) == "rec/v3"


def test_parse_models_explicit_groups():
    assert exports_lib.parse_models(["rec=a+b", "c", " stk=d ", ""]) == [
        ("rec", "a"), ("rec", "b"), ("", "c"), ("stk", "d")]
    for bad in (["=a"], ["rec="], ["rec=a++b"]):
        with pytest.raises(LoadError, match="--models entry"):
            exports_lib.parse_models(bad)
    with pytest.raises(LoadError, match="--models is required"):
        exports_lib.parse_models([])


def test_list_exports_groups_and_refusals(exports):
    listed = exports_lib.list_exports([f"mine={exports['stk']}+{exports['rec_seed0']}"])
    assert [e.group for e in listed] == ["mine", "mine"]
    with pytest.raises(evaluation.EvaluateError, match="different numbers of stages"):
        evaluation.check_comparable([listed[0], dataclasses.replace(
            listed[1], rae_config=dict(listed[1].rae_config, num_stages=3))])
    with pytest.raises(LoadError, match="listed twice"):
        exports_lib.list_exports([exports["stk"], os.path.join(exports["stk"], "2")])
    with pytest.raises(evaluation.EvaluateError, match="image sizes"):
        evaluation.check_comparable(
            exports_lib.list_exports([exports["stk"], exports["wide32"]]))


# --------------------------------------------------------------------------- data choice
def test_data_flags_override_the_training_data(exports):
    listed = exports_lib.list_exports([exports["rec_seed0"], exports["rec_seed1"]])
    data, sets = evaluation.build_eval_sets(listed, {"seed": 5, "test_fraction": 0.2}, "test")
    assert sets[0] is sets[1] and all(d.seed == 5 for d in data)
    expected = data_lib.load_splits(
        DataConfig(dataset="lfw_subset", image_size=16, channels=1, seed=5, test_fraction=0.2))
    only = sets[0]
    np.testing.assert_array_equal(only.identities, expected.test.identities)
    np.testing.assert_array_equal(only.images, expected.test.images)
    _, everything = evaluation.build_eval_sets(listed, {}, "all")
    assert len(everything[0].images) == 100
    with pytest.raises(evaluation.EvaluateError, match="--image_size=32"):
        evaluation.build_eval_sets(listed, {"image_size": 32}, "test")
    with pytest.raises(ConfigError, match="data_dir"):
        evaluation.build_eval_sets(listed, {"dataset": "folder"}, "test")


def _folder_export(data_dir, dataset="folder"):
    data = {"dataset": dataset, "data_dir": data_dir, "image_size": 16, "channels": 1}
    return ListedExport("g", "exported/g", "/nowhere/g/1", {
        "image_size": 16, "channels": 1, "num_stages": 2, "run_config": {"data": data}})


def test_a_stored_data_dir_is_used_only_where_it_exists(tmp_path):
    """An export's data_dir is the training machine's: provenance, not a path to trust."""
    elsewhere = _folder_export("/the/training/machine/lfw")
    with pytest.raises(evaluation.EvaluateError, match="not on this machine; pass --data_dir"):
        eval_sets.data_config_for(elsewhere, {})
    given = eval_sets.data_config_for(elsewhere, {"data_dir": str(tmp_path)})
    assert given.data_dir == str(tmp_path)
    assert eval_sets.data_config_for(_folder_export(str(tmp_path)), {}).data_dir == str(tmp_path)


def test_a_model_trained_on_python_arrays_needs_its_data_named():
    from_python = _folder_export(None, dataset="arrays")
    with pytest.raises(evaluation.EvaluateError, match="trained on arrays.*--dataset"):
        eval_sets.data_config_for(from_python, {})
    assert eval_sets.data_config_for(from_python, {"dataset": "lfw_subset"}).dataset == \
        "lfw_subset"


def test_figure_faces_prefer_people_every_model_was_tested_on(exports):
    listed = exports_lib.list_exports([exports["rec_seed0"], exports["rec_seed1"]])
    _, sets = evaluation.build_eval_sets(listed, {}, "test")
    first, second = (set(s.identities.tolist()) for s in sets)
    images, note = evaluation.figure_images(listed, sets, 4)
    assert len(images) == 4
    shared = len(first & second)
    assert (note == "") == (shared >= 4)
    _, same = evaluation.build_eval_sets(listed, {"seed": 0}, "test")
    assert evaluation.figure_images(listed, same, 4)[1] == ""


def test_python_evaluation_returns_the_numbers_and_writes_nothing(exports, evaluated, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = ev.evaluate([exports["stk"]], batch_size=4, num_figure_images=2, progress=False)
    assert os.listdir(tmp_path) == [] and summary["figures"] == {}
    (stk,) = summary["models"]
    written = next(m for m in evaluated[1]["models"] if m["group"] == "stk")
    assert stk["results"]["full"]["psnr"]["mean"] == written["results"]["full"]["psnr"]["mean"]
    assert math.isfinite(stk["results"]["depth_1"]["ssim"]["mean"])


@pytest.mark.slow  # a subprocess
def test_library_modules_register_no_flags():
    code = ("import rae_keras.evaluation, rae_keras.report, rae_keras.figures, "
            "rae_keras.metrics, rae_keras.exports; from absl import flags; "
            "print(sorted(set(flags.FLAGS) & {'models', 'data_dir', 'seed', 'output_dir'}))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]


def test_paper_table_tool_scores_through_the_package(exports, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "paper_table", os.path.join(ROOT, "tools", "paper_table.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([f"--models={exports['rec_seed0']},{exports['rec_seed1']}", "--count=5"])
    table = capsys.readouterr().out
    assert "| rec | 2 |" in table and "±" in table
    images = data_lib.load_splits(DataConfig(dataset="lfw_subset", image_size=16,
                                             channels=1)).test.images[:5]
    loaded = tf.saved_model.load(os.path.join(exports["rec_seed0"], "1"))
    served = loaded.signatures["serving_default"](images=images)["reconstruction"].numpy()
    np.testing.assert_allclose(tool.sse_per_image(loaded, images),
                               np.sum((served - images) ** 2, axis=(1, 2, 3)), rtol=1e-5)


@flagsaver.flagsaver
def test_main_reads_only_the_flags_given(exports, tmp_path, capsys):
    flags_lib.FLAGS.unparse_flags()
    flags_lib.FLAGS(["evaluate", f"--models={exports['stk']}", f"--output_dir={tmp_path}",
                     "--seed=2", "--batch_size=8", "--summary_images=2"])
    assert ev.data_overrides_from_flags() == {"seed": 2}
    ev.main([])
    summary = json.load(open(tmp_path / "metrics.json"))
    assert summary["models"][0]["data"]["seed"] == 2
    assert "| stk | full |" in capsys.readouterr().out


# --------------------------------------------------------------------------- report
def _row(model, depth, **values):
    return report_markdown.TableRow(model, depth, {m: (values.get(m, 0.5), None)
                                          for m in metrics.METRIC_NAMES})


def test_best_values_are_marked_per_depth():
    rows = [_row("a", "full", mse=0.002, psnr=27.0, laplacian_variance_ratio=0.6,
                 high_frequency_energy_ratio=1.3),
            _row("b", "full", mse=0.003, psnr=25.0, laplacian_variance_ratio=1.2,
                 high_frequency_energy_ratio=0.4),
            _row("a", "1", mse=0.009)]
    table = report_markdown.markdown_table(rows).splitlines()
    a, b, single = (line.split(" | ") for line in table[2:])
    columns = {m: i + 2 for i, m in enumerate(metrics.METRIC_NAMES)}
    assert a[columns["mse"]] == "**0.00200**" and b[columns["mse"]] == "0.00300"
    assert a[columns["psnr"]] == "**27.00**"
    assert b[columns["laplacian_variance_ratio"]] == "**1.200**"  # |0.2| < |0.4|
    assert a[columns["high_frequency_energy_ratio"]] == "**1.300**"  # |0.3| < |0.6|
    assert a[columns["ssim"]] == b[columns["ssim"]] == "**0.5000**"  # a tie: both
    assert "**" not in " ".join(single)  # alone at its depth: nothing to compare


def test_format_and_best_with_infinities_and_spread():
    assert report_markdown.format_value("psnr", math.inf) == "inf"
    assert report_markdown.format_value("psnr", 24.131, 0.049) == "24.13 ± 0.05"
    assert report_markdown.format_value("ssim", math.nan) == "nan"
    assert report_markdown.format_value("detail_correlation", -0.0001) == "0.000"
    assert report_markdown.best_rows("psnr", [30.0, math.inf, math.nan]) == [1]
    assert report_markdown.best_rows("mse", [math.nan]) == []
    agg = report.aggregate_models([{"mse": 1.0}, {"mse": 3.0}])
    assert agg["mse"] == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    images = report.summarize_images({"detail_correlation": np.array([0.5, np.nan, 1.0])})
    assert images["detail_correlation"] == {"mean": 0.75, "std": 0.25, "n": 2}


def test_figures_draw():
    faces = np.random.default_rng(0).random((3, 16, 16, 1))
    grid = figures.face_rows([("originals", faces), ("model", faces)], title="t")
    assert grid.dtype == np.uint8 and grid.shape[2] == 3 and grid.shape[0] > 2 * 96
    f, p = metrics.radial_power_spectrum(faces)
    plot = figures.power_spectrum_plot(f, p, [("a", p * 0.5), ("b", p)])
    assert plot.shape[2] == 3 and plot.dtype == np.uint8
    assert (plot != 255).any(axis=2).mean() > 0.02  # something was drawn
    assert len(np.unique(plot.reshape(-1, 3), axis=0)) > 100  # antialiased lines and text
