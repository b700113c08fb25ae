"""tools/training_times.py and tools/paired_comparison.py: the search report's tables."""

import importlib.util
import json
import os

import pytest

from rae_keras import report
from rae_keras.config import seed_group

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(path, phases):
    path.mkdir()
    history = [{"phase": name, "loss": [0.1] * len(secs), "val_loss": [], "seconds": secs}
               for name, secs in phases]
    (path / "history.json").write_text(json.dumps(history))
    return str(path)


@pytest.mark.parametrize("name,group", [
    ("lfw64_stacked_s2", "lfw64_stacked"), ("rec-s10", "rec"), ("rec_seed3", "rec"),
    ("lfw64_stacked20", "lfw64_stacked20"), ("_s1", "_s1")])
def test_seed_group(name, group):
    assert seed_group(name) == group


def test_sums_epoch_seconds_per_run_and_groups_seeds(tmp_path, capsys):
    runs = [_run(tmp_path / "rf", [("stage_1", [2.0, 1.0]), ("finetune", [4.0])]),
            _run(tmp_path / "rf_s1", [("stage_1", [3.0, 1.0]), ("finetune", [5.0])]),
            _run(tmp_path / "st", [("end_to_end", [1.5, 1.5, 1.0])])]
    _load("training_times").main(runs + [str(tmp_path / "missing")])
    out, err = capsys.readouterr()
    assert "| rf | 2+1 | 7 |" in out
    assert "| rf_s1 | 2+1 | 9 |" in out
    assert "| st | 3 | 4 |" in out
    assert "| rf | 2 | 7-9 | 8 |" in out
    assert "| st | 1 | 4-4 | 4 |" in out
    assert "missing" in err


def _model(group, seed, psnr, ratio):
    return {"group": group, "data": {"seed": seed},
            "results": {"full": {"psnr": {"mean": psnr}, "laplacian_variance_ratio":
                                 {"mean": ratio}}}}


def test_paired_comparison_pairs_by_split_and_counts_wins(capsys):
    tool = _load("paired_comparison")
    summary = {
        "metrics": ["psnr", "laplacian_variance_ratio"],
        "better": {"psnr": "higher", "laplacian_variance_ratio": "closest_to_1"},
        "models": [_model("base", 0, 20.0, 0.2), _model("base", 1, 22.0, 0.3),
                   _model("cand", 1, 22.5, 1.9), _model("cand", 0, 19.0, 0.5),
                   _model("cand", 7, 99.0, 1.0)],  # split 7 has no baseline: ignored
    }
    (row,) = tool.paired_rows(summary, "base")
    assert row["seeds"] == [0, 1]
    assert row["metrics"]["psnr"] == (pytest.approx(-0.25), 1)
    # 0.2 -> 0.5 is closer to 1 (better); 0.3 -> 1.9 is farther (worse)
    assert row["metrics"]["laplacian_variance_ratio"] == (pytest.approx(0.95), 1)
    with pytest.raises(SystemExit, match="no group 'nope'"):
        tool.paired_rows(summary, "nope")


def test_metrics_files_scored_separately_are_compared_together(tmp_path, capsys):
    def write(name, models, split="test"):
        path = tmp_path / name
        path.write_text(json.dumps({"format": report.FORMAT, "split": split,
                                    "metrics": ["psnr"], "groups": [], "models": models}))
        return str(path)

    first = write("a.json", [_model("base", 0, 20.0, 0.2)])
    second = write("b.json", [_model("cand", 0, 21.0, 0.4)])
    merged = report.read_summaries([first, second])
    assert [m["group"] for m in merged["models"]] == ["base", "cand"]
    _load("paired_comparison").main([first, second, "--baseline=base"])
    assert "| cand | 0 | +1.000 (1/1) |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="split 'all' differs"):
        report.read_summaries([first, write("c.json", [], split="all")])
