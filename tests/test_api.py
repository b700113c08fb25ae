"""The public Python API, end to end: `rae_keras.fit`, `export_model`, `load`.

No imports from other test modules (helpers come from `rae_keras.testing`): these are
the calls a notebook makes, on the three kinds of model a user brings. What every
scheme does to a ConvAutoencoder (freezing, resume) is `contracts.check_scheme`'s job, in
test_schemes.py; here the same schemes run on the models users write themselves.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

import rae_keras
from rae_keras import contracts, runs, schemes, testing
from rae_keras.config import ConfigError, TrainConfig
from rae_keras.inputs import InputError


# --------------------------------------------------------------------------- models
def conv_model():
    return rae_keras.ConvAutoencoder((8, 8, 1), (4, 8))


MODELS = {"conv": conv_model, "dense": testing.dense_stack, "residual": testing.residual_stack}
QUIET = dict(log=lambda line: None, verbose=0)


def build(kind, seed=0):
    """The same initial weights for the same (kind, seed)."""
    keras.utils.set_random_seed(seed)
    return MODELS[kind]()


def data(model, n=16, seed=0):
    """Smooth inputs in [0, 1] (images: Gaussian blobs; vectors: smooth curves)."""
    rng = np.random.default_rng(seed)
    shape = model.sample_shape
    if len(shape) == 1:
        t = np.linspace(0, 1, shape[0], dtype=np.float32)
        phase, freq = rng.uniform(0, 6, (n, 1)), rng.uniform(1, 4, (n, 1))
        return (0.5 + 0.4 * np.sin(freq * t + phase)).astype(np.float32)
    size = shape[0]
    grid = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    centers = rng.uniform(-0.5, 0.5, (n, 2, 1, 1))
    widths = rng.uniform(0.2, 0.6, (n, 1, 1))
    blobs = np.exp(-((xx - centers[:, 0]) ** 2 + (yy - centers[:, 1]) ** 2) / widths)
    return np.repeat(blobs[..., None], shape[-1], axis=-1).astype(np.float32)


def flat_weights(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


identical, all_changed = testing.identical, testing.all_changed


class Callbacks(contracts.PhaseWeights):
    """Weights when each phase begins and ends (see contracts.PhaseWeights), plus every
    Keras callback hook each phase calls and the (name, index) each phase announces."""

    def __init__(self, autoencoder):
        super().__init__(autoencoder)
        self.seen = []
        self.counts = {"train_begin": 0, "epoch_end": 0, "train_end": 0}

    def on_phase_begin(self, name, index):
        super().on_phase_begin(name, index)
        self.seen.append((name, index))

    def on_train_begin(self, logs=None):
        self.counts["train_begin"] += 1

    def on_epoch_end(self, epoch, logs=None):
        assert np.isfinite(logs["loss"])
        self.counts["epoch_end"] += 1

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self.counts["train_end"] += 1


# --------------------------------------------------------------------------- 1. freezing
STAGE_SCHEMES = ("recursive", "recursive_finetune")
# Every scheme on the residual model: nested custom layers, the hard case for freezing.
# (A ConvAutoencoder with BatchNormalization: check_scheme, in test_schemes.py.)
# Phases and epochs (2 per phase, 1 of fine-tuning) each scheme runs, written out.
PHASES = {"recursive": (["stage_1", "stage_2"], 4),
          "recursive_finetune": (["stage_1", "stage_2", "finetune"], 5),
          "recursive_interleaved": (["interleaved"], 2)}


# Fast: the schemes written out above (stage freezing, fine-tuning, interleaved steps);
# the rest, whose phases are those (stacked and joint: one end-to-end phase; the depth
# schemes: recursive's stages, then one), in the full suite. check_scheme checks every
# scheme's freezing on a ConvAutoencoder in both.
@pytest.mark.parametrize("scheme", [s if s in PHASES else pytest.param(s, marks=pytest.mark.slow)
                                    for s in rae_keras.SCHEMES])
def test_every_scheme_trains_exactly_what_it_says(scheme):
    """Each phase trains exactly its layers, and every callback hook sees every phase."""
    model = build("residual")
    x = data(model)
    initial = testing.layer_weights(model)
    recorder = Callbacks(model)
    options = dict(scheme=scheme, epochs=2, finetune_epochs=1)
    history = rae_keras.fit(model, x, batch_size=8, learning_rate=3e-3,
                            callbacks=[recorder], **options, **QUIET)
    final = testing.layer_weights(model)
    n = model.num_stages
    phases = schemes.phases_for(model, TrainConfig(**options))
    assert list(history) == recorder.names == [p.name for p in phases]
    assert recorder.seen == [(name, i) for i, name in enumerate(recorder.names)]
    assert [len(h["loss"]) for h in history.values()] == [p.epochs for p in phases]
    assert recorder.counts == {"train_begin": len(phases), "train_end": len(phases),
                               "epoch_end": sum(p.epochs for p in phases)}
    if scheme in PHASES:
        assert (recorder.names, recorder.counts["epoch_end"]) == PHASES[scheme]
    assert len(recorder.before) == len(recorder.after) == len(history)
    assert all(np.isfinite(h["loss"]).all() for h in history.values())
    # Phases follow each other: nothing changes the weights between two phases.
    assert identical(_values(initial), _values(recorder.before[0]))
    for end, begin in zip(recorder.after, recorder.before[1:]):
        assert identical(_values(end), _values(begin))
    assert identical(_values(recorder.after[-1]), _values(final))

    if scheme in STAGE_SCHEMES:
        for k in range(1, n + 1):
            assert recorder.names[k - 1] == f"stage_{k}"
            before, after = recorder.before[k - 1], recorder.after[k - 1]
            own = {layer.name for layer in model.stage_layers(k)}
            for name in before:
                if name in own:
                    assert all_changed(before[name], after[name]), \
                        f"stage {k} left (part of) {name} unchanged"
                else:
                    assert identical(before[name], after[name]), f"stage {k} changed {name}"
        assert len(recorder.names) == n + (scheme == "recursive_finetune")
    if scheme in ("stacked", "joint", "recursive_finetune"):
        before, after = recorder.before[-1], recorder.after[-1]
        for name in before:
            assert all_changed(before[name], after[name]), f"{scheme} left {name} unchanged"
    if scheme == "recursive_interleaved":
        for k in range(1, n + 1):
            for layer in model.stage_layers(k):
                if layer.weights:
                    assert all_changed(initial[layer.name], final[layer.name]), \
                        f"interleaved left stage {k}'s {layer.name} unchanged"
    # Nothing is left frozen.
    assert all(layer.trainable for layer in model.stage_leaf_layers())
    assert len(model.trainable_weights) == len(model.weights)
    assert len(model.full_model().trainable_weights) == len(model.full_model().weights)


def _values(weights):
    return [w for name in sorted(weights) for w in weights[name]]


# --------------------------------------------------------------------------- 2. resume
def losses(history):
    return {phase: (h["loss"], h["val_loss"]) for phase, h in history.items()}


@pytest.mark.slow  # four fits; the fast suite resumes every scheme in check_scheme
def test_fit_resumed_equals_uninterrupted(tmp_path):
    """recursive_finetune, 2 epochs per phase, killed after checkpoint 5 (mid finetune),
    on a model of custom layers. (A ConvAutoencoder killed mid stage or mid fine-tune:
    check_scheme's resume check, for every scheme, not slow.)"""
    kind, killed_after = "residual", 5
    x = data(build(kind), n=24)
    val = data(build(kind), n=8, seed=1)
    options = dict(scheme="recursive_finetune", epochs=2, finetune_epochs=2, batch_size=8,
                   validation_data=val, learning_rate=3e-3, **QUIET)
    straight = build(kind)
    expected_history = rae_keras.fit(straight, x, **options)

    model_dir = str(tmp_path / "run")
    with testing.kill_after_checkpoints(killed_after) as written:
        with pytest.raises(testing.Killed):
            rae_keras.fit(build(kind), x, model_dir=model_dir, **options)
    assert len(written) == killed_after
    fresh = build(kind, seed=7)  # other initial weights: everything must come from the run
    history = rae_keras.fit(fresh, x, model_dir=model_dir, **options)

    assert list(history) == ["stage_1", "stage_2", "finetune"]
    assert [len(h["loss"]) for h in history.values()] == [2, 2, 2]
    for phase, (loss, val_loss) in losses(expected_history).items():
        np.testing.assert_allclose(history[phase]["loss"], loss, rtol=1e-6, err_msg=phase)
        np.testing.assert_allclose(history[phase]["val_loss"], val_loss, rtol=1e-6,
                                   err_msg=phase)
    for got, want in zip(flat_weights(fresh), flat_weights(straight)):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert all(layer.trainable for layer in fresh.stage_leaf_layers())

    # A finished run is not retrained: a third fit restores it and returns its history.
    again = build(kind, seed=8)
    assert losses(rae_keras.fit(again, x, model_dir=model_dir, **options)) == losses(history)
    assert identical(flat_weights(again), flat_weights(fresh))


# --------------------------------------------------------------------------- 3. load
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_load_predicts_what_the_saved_model_serves(tmp_path, kind):
    model = build(kind)
    x = data(model)
    rae_keras.fit(model, x, scheme="stacked", epochs=1, batch_size=8, **QUIET)
    base = str(tmp_path / "export")
    version = rae_keras.export_model(model, base, tflite=False)

    served = tf.saved_model.load(version)
    assert ("reconstruct_image_bytes" in served.signatures) == (kind == "conv")
    want = served.signatures["serving_default"](images=tf.constant(x))["reconstruction"]
    for path in (base, version):  # an export base (its newest version) or a version
        loaded = rae_keras.load(path)
        assert isinstance(loaded, rae_keras.StagedAutoencoder)
        assert type(loaded) is type(model) and loaded.num_stages == model.num_stages
        assert np.max(np.abs(loaded.reconstruct(x) - want.numpy())) <= 1e-5
    np.testing.assert_allclose(loaded.reconstruct(x), model.reconstruct(x), atol=1e-6)
    assert all(layer.trainable for layer in loaded.stage_leaf_layers())

    # Fine-tuning the loaded model trains it, stage by stage.
    before = flat_weights(loaded)
    history = rae_keras.fit(loaded, x, scheme="recursive", epochs=1, batch_size=8, **QUIET)
    assert all(np.isfinite(h["loss"]).all() for h in history.values())
    assert all_changed(before, flat_weights(loaded))


def test_load_of_a_run_dir_and_of_a_keras_file_agree(tmp_path):
    model = build("residual")
    x = data(model)
    run_dir = str(tmp_path / "run")
    rae_keras.fit(model, x, scheme="recursive", epochs=1, batch_size=8, model_dir=run_dir,
                  **QUIET)
    keras_file = str(tmp_path / "model.keras")
    model.save(keras_file)
    from_run, from_file = rae_keras.load(run_dir), rae_keras.load(keras_file)
    for depth in (1, 2):
        want = model.reconstruct(x, depth=depth)
        np.testing.assert_array_equal(from_run.reconstruct(x, depth=depth), want)
        np.testing.assert_array_equal(from_file.reconstruct(x, depth=depth), want)
    before = flat_weights(from_file)
    history = rae_keras.fit(from_file, x, scheme="stacked", epochs=1, batch_size=8, **QUIET)
    assert np.isfinite(history["end_to_end"]["loss"]).all()
    assert all_changed(before, flat_weights(from_file))
    with pytest.raises(rae_keras.LoadError):
        rae_keras.load(str(tmp_path / "nothing.keras"))


# --------------------------------------------------------------------------- 4. bad input
def one_line(error):
    return "\n" not in str(error.value)


def test_uint8_images_train_as_images_scaled_by_1_over_255():
    model = build("conv")
    pixels = np.round(data(model) * 255).astype(np.uint8)
    options = dict(scheme="stacked", epochs=2, batch_size=8, learning_rate=3e-3, **QUIET)
    history = rae_keras.fit(model, pixels, validation_data=pixels[:8], **options)
    loss = history["end_to_end"]["loss"]
    assert 0 < loss[-1] < 0.5, loss  # an MSE of images in [0, 1]; unscaled it is ~17,905
    assert np.isfinite(history["end_to_end"]["val_loss"]).all()
    scaled = build("conv")
    same = rae_keras.fit(scaled, pixels.astype(np.float32) / 255, validation_data=pixels[:8],
                         **options)
    assert losses(same) == losses(history)
    assert identical(flat_weights(scaled), flat_weights(model))


@pytest.mark.parametrize("x, argument, named", [
    (np.zeros((16, 8, 8, 1), np.int32), "x", "dtype int32"),
    (np.full((16, 8, 8, 1), 200.0, np.float32), "x", r"\[200, 200\], outside \[0, 1\].*255"),
    (np.full((16, 8, 8, 1), -0.5, np.float32), "x", "outside"),
    (np.zeros((16, 16, 16, 1), np.float32), "x", r"\(16, 16, 1\).*takes \(8, 8, 1\)"),
    (np.zeros((0, 8, 8, 1), np.float32), "x", "empty"),
    (np.zeros((0,), np.float32), "x", "empty"),
    (tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 1), np.float32)), "x", "empty"),
    (np.zeros((4, 8, 8, 1), np.float32), "x", "fewer than one global batch"),
    (np.full((4, 8, 8, 1), 2.0, np.float32), "validation_data", "validation_data.*outside"),
    (np.zeros((4, 8, 8), np.float32), "validation_data", r"validation_data.*\(8, 8\)"),
])
def test_bad_input_is_refused_in_one_line(x, argument, named):
    model = build("conv")
    args = {"x": x} if argument == "x" else {"x": data(model), "validation_data": x}
    with pytest.raises(InputError, match=named) as raised:
        rae_keras.fit(model, batch_size=8, **args, **QUIET)
    assert one_line(raised)


def test_unknown_option_is_a_config_error_naming_it():
    model = build("dense")
    with pytest.raises(ConfigError, match="learnin_rate") as raised:
        rae_keras.fit(model, data(model), learnin_rate=1e-3, **QUIET)
    assert one_line(raised)
    with pytest.raises(ConfigError, match="scheme") as raised:
        rae_keras.fit(model, data(model), scheme="recursively", **QUIET)
    assert one_line(raised)


def test_a_run_dir_of_other_data_is_refused_unless_overwrite(tmp_path):
    model_dir = str(tmp_path / "run")
    model = build("dense")
    x, other = data(model), data(model, seed=1)
    options = dict(scheme="stacked", epochs=1, batch_size=8, model_dir=model_dir, **QUIET)
    rae_keras.fit(model, x, **options)
    checkpoints = runs.RunDirectory(model_dir).checkpoints()
    with pytest.raises(InputError, match="other data") as raised:
        rae_keras.fit(build("dense"), other, **options)
    assert one_line(raised)
    assert runs.RunDirectory(model_dir).checkpoints() == checkpoints  # untouched

    fresh = build("dense")
    history = rae_keras.fit(fresh, other, overwrite=True, **options)
    expected = rae_keras.fit(build("dense"), other, **{**options, "model_dir": None})
    assert losses(history) == losses(expected)  # started over, from the fresh weights
    assert [c for c, _ in runs.RunDirectory(model_dir).checkpoints()] == [1, 2]
    again = build("dense", seed=3)
    assert losses(rae_keras.fit(again, other, **options)) == losses(history)  # finished
    assert identical(flat_weights(again), flat_weights(fresh))


def test_a_dataset_trains_like_the_same_array():
    """Unbatched and batched (in other batches than fit's) datasets alike."""
    x, val = data(build("residual"), n=20), data(build("residual"), n=6, seed=1)
    options = dict(scheme="recursive", epochs=2, batch_size=8, **QUIET)
    twin = build("residual")
    from_array = rae_keras.fit(twin, x, validation_data=val, **options)
    for dataset in (tf.data.Dataset.from_tensor_slices(x),
                    tf.data.Dataset.from_tensor_slices(x).batch(6)):
        model = build("residual")
        from_dataset = rae_keras.fit(model, dataset,
                                     validation_data=tf.data.Dataset.from_tensor_slices(val),
                                     **options)
        assert losses(from_dataset) == losses(from_array), dataset.element_spec
        assert identical(flat_weights(model), flat_weights(twin)), dataset.element_spec


@pytest.mark.parametrize("kind", ["conv_3_stages", "dense_1_stage"])
def test_level_weights_for_any_number_of_stages(tmp_path, kind):
    """A run of a model with other than 2 stages records level_weights it can read back."""
    keras.utils.set_random_seed(0)
    model = (rae_keras.ConvAutoencoder((8, 8, 1), (4, 4, 4)) if kind == "conv_3_stages" else
             rae_keras.StagedAutoencoder([keras.layers.Dense(4, name="enc")],
                                         [keras.layers.Dense(12, activation="sigmoid",
                                                             name="dec")], input_shape=(12,)))
    x, n = data(model), model.num_stages
    options = dict(scheme="joint", epochs=1, batch_size=8, **QUIET)
    with pytest.raises(ConfigError, match=f"level_weights has {n + 1} values.*{n} stages") \
            as raised:
        rae_keras.fit(model, x, level_weights=(1.0,) * (n + 1), **options)
    assert one_line(raised)
    model_dir = str(tmp_path / "run")
    weights = tuple(float(k) for k in range(1, n + 1))
    history = rae_keras.fit(model, x, level_weights=weights, model_dir=model_dir, **options)
    loaded = rae_keras.load(model_dir)
    np.testing.assert_array_equal(loaded.reconstruct(x), model.reconstruct(x))
    assert losses(rae_keras.fit(loaded, x, level_weights=weights, model_dir=model_dir,
                                **options)) == losses(history)
