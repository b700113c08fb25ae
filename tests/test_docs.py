"""The README's Python section and docs/custom_layers.py run as written."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code_or_path, cwd, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    args = [sys.executable, code_or_path] if code_or_path.endswith(".py") else \
        [sys.executable, "-c", code_or_path]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def readme_python_section() -> str:
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_section_runs_verbatim(tmp_path):
    code = readme_python_section()
    assert "rae_keras.fit(" in code and "rae_keras.load(" in code
    result = _run(code + "\nprint('export', version_dir)\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "notebook" / "config.json").exists()
    assert (tmp_path / "runs" / "notebook.keras").exists()
    assert (tmp_path / "exported" / "notebook" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "exported" / "notebook" / "tflite" / "1" / "float32.tflite").exists()
    assert "'stage_3'" in result.stdout


@pytest.mark.slow
def test_custom_layers_example_trains_every_stage(tmp_path):
    result = _run(os.path.join(ROOT, "docs", "custom_layers.py"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = re.findall(r"stage_(\d): loss ([\d.]+) -> ([\d.]+)", result.stdout)
    assert [stage for stage, _, _ in losses] == ["1", "2", "3"]
    assert all(float(last) < float(first) for _, first, last in losses), result.stdout
    assert "same reconstructions" in result.stdout


def test_readme_layout_names_every_module():
    with open(os.path.join(ROOT, "README.md")) as f:
        layout = f.read().split("## Development", 1)[1].split("```")[1]
    named = set(re.findall(r"\b(\w+)\.py\b", layout))
    modules = {name[:-3] for name in os.listdir(os.path.join(ROOT, "rae_keras"))
               if name.endswith(".py")}
    assert not modules - named, f"README's layout lacks {sorted(modules - named)}"
