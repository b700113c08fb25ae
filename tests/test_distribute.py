"""tf.distribute: mirrored replicas match one device, multi-worker training agrees,
mixed precision trains, the frozen-prefix cache changes nothing but speed."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from rae_keras import distribute, runs, testing, training
from rae_keras.config import ConfigError, DistributeConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT)

# Logical CPU devices can only be made before TensorFlow starts, so the mirrored
# comparison runs in a fresh interpreter. It prints the largest weight differences.
MIRRORED_SCRIPT = textwrap.dedent("""
    import json, pathlib, sys
    import numpy as np
    from rae_keras import distribute, runs, training
    from rae_keras.config import DistributeConfig
    from rae_keras.testing import checkpoint_weights, layer_weights, tiny_config, tiny_splits

    mirrored = distribute.make_strategy(DistributeConfig("mirrored", cpu_devices=2))
    single = distribute.make_strategy(DistributeConfig("one_device"))
    assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
    tmp = pathlib.Path(sys.argv[1])
    splits = tiny_splits(n_train=32, n_test=8)
    result = {}

    def run(name, scheme, strategy, batch, **kw):
        config = tiny_config(tmp / name / "run", scheme=scheme, epochs=2, filters=(4, 8),
                             batch_size=batch)
        run_dir = runs.RunDirectory(config.model_dir, keep_checkpoints=100)
        run_dir.prepare(config)
        ae, state = training.train(config, splits, run_dir, strategy=strategy,
                                   log=lambda s: None, verbose=0, **kw)
        return config, run_dir, layer_weights(ae)

    def max_diff(a, b):
        return max(float(np.max(np.abs(x - y))) for n in a for x, y in zip(a[n], b[n]))

    for scheme in ("stacked", "recursive", "recursive_interleaved"):
        _, _, one = run(f"{scheme}_one", scheme, single, 16)
        config, run_dir, two = run(f"{scheme}_two", scheme, mirrored, 8)
        _, _, loop = run(f"{scheme}_loop", scheme, mirrored, 8, custom_loop=True)
        result[scheme] = {"fit": max_diff(one, two), "custom_loop": max_diff(one, loop)}
        if scheme == "recursive":  # checkpoints 2 and 4: ends of stage 1 and 2
            ends = [p for _, p in run_dir.checkpoints()]
            s1 = checkpoint_weights(config, ends[1])
            s2 = checkpoint_weights(config, ends[3])
            result["frozen_identical"] = all(
                np.array_equal(x, y) for n in ("e1", "d1") for x, y in zip(s1[n], s2[n]))
            result["stage_2_changed"] = not np.array_equal(s1["e2"][0], s2["e2"][0])
    print("RESULT " + json.dumps(result))
""")


@pytest.mark.slow
def test_mirrored_two_cpu_replicas_match_one_device(tmp_path):
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)], cwd=ROOT,
                            env=ENV, capture_output=True, text=True, timeout=300)
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    found = json.loads(lines[0][len("RESULT "):])
    for scheme in ("stacked", "recursive", "recursive_interleaved"):
        assert found[scheme]["fit"] <= 1e-5, found
        assert found[scheme]["custom_loop"] <= 1e-5, found
    assert found["frozen_identical"] and found["stage_2_changed"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_local_processes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    model_dir, export_dir = tmp_path / "run", tmp_path / "exported"
    args = [sys.executable, "-m", "rae_keras.train",
            f"--flagfile={os.path.join(ROOT, 'configs', 'quickstart.cfg')}",
            "--strategy=multi_worker", "--image_size=16", "--filters=4,8", "--epochs=2",
            "--batch_size=8", "--max_images=32", f"--model_dir={model_dir}",
            f"--export_dir={export_dir}", "--notflite"]
    workers = []
    for index in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=240)[0])
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    assert "MultiWorkerMirroredStrategy with 2 replica(s)" in outputs[0]

    chief = runs.RunDirectory(str(model_dir))
    other = runs.RunDirectory(os.path.join(str(model_dir), "workers", "worker_1"))
    chief_config, chief_model, _ = runs.load_trained(chief.path)
    _, other_model, _ = runs.load_trained(other.path)
    testing.assert_weights_close(testing.layer_weights(chief_model),
                                 testing.layer_weights(other_model), atol=0)
    history = json.load(open(chief.history_path))
    assert [len(h["loss"]) for h in history] == [2, 2]
    assert sorted(os.listdir(export_dir)) == ["1"]  # the chief exported, once
    assert "exported" in outputs[0] and "exported" not in outputs[1]


def test_mixed_precision_stage_trains_and_reconstructs_float32(tmp_path):
    config = testing.tiny_config(tmp_path / "run", filters=(4, 8), epochs=2,
                                 mixed_precision=True)
    run = runs.RunDirectory(config.model_dir)
    run.prepare(config)
    autoencoder, state = training.train(config, testing.tiny_splits(), run, **testing.QUIET)
    assert autoencoder.encoders[0].compute_dtype == "bfloat16"
    assert autoencoder.encoders[0].kernel.dtype == "float32"  # variables stay float32
    images = testing.tiny_splits().test.images
    reconstruction = autoencoder.full_model()(images)
    assert reconstruction.dtype == tf.float32
    values = np.asarray(reconstruction)
    assert values.min() >= 0.0 and values.max() <= 1.0
    for phase in state.history:
        assert np.isfinite(phase["loss"]).all() and phase["loss"][-1] < phase["loss"][0]


def test_frozen_prefix_cache_gives_the_same_weights(tmp_path):
    splits = testing.tiny_splits()
    plain = testing.tiny_config(tmp_path / "plain" / "run", scheme="recursive_finetune",
                                finetune_epochs=1)
    cached = replace(plain, model_dir=str(tmp_path / "cached"),
                     train=replace(plain.train, cache_frozen_prefix=True))
    logs = []
    results = []
    for config in (plain, cached):
        run = runs.RunDirectory(config.model_dir)
        run.prepare(config)
        autoencoder, _ = training.train(config, splits, run, log=logs.append, verbose=0)
        results.append(testing.layer_weights(autoencoder))
    assert any("(h2 cached)" in line for line in logs)
    testing.assert_weights_close(results[1], results[0], atol=1e-5)


def test_strategy_selection():
    strategy = distribute.make_strategy(DistributeConfig("auto"))
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert distribute.is_chief(strategy)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        old = os.environ.pop("TF_CONFIG", None)
        try:
            distribute.make_strategy(DistributeConfig("multi_worker"))
        finally:
            if old is not None:
                os.environ["TF_CONFIG"] = old
