"""The contract every registered scheme and every phase trainer meets, as checks a test
calls in one line: `check_scheme("my_scheme")` trains a tiny model with the scheme,
uninterrupted and killed mid-phase then resumed, and asserts what each phase may change,
finite losses, and a resume equal to the uninterrupted run. Plain asserts and no pytest,
like `testing`, whose tiny data and models these checks run on.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from typing import List, Sequence

import keras
import numpy as np

from rae_keras import objectives, schemes, training
from rae_keras.config import TrainConfig
from rae_keras.models import StagedAutoencoder
from rae_keras.testing import (QUIET, Weights, all_changed, assert_weights_close,
                               copy_after_checkpoint, identical, layer_weights,
                               smooth_images, tiny_autoencoder)


def check_trainer(trainer: objectives.Trainer, images: np.ndarray) -> None:
    """A phase's trainer, as `Phase.build_trainer` returns it, implements every method of
    the `objectives.Trainer` contract and gives one finite loss per example."""
    assert isinstance(trainer, objectives.Trainer), type(trainer)
    for method in ("compile_fresh", "per_example_loss_for", "replica_train_step",
                   "optimizer_variables"):
        assert getattr(type(trainer), method) is not getattr(objectives.Trainer, method), \
            f"{type(trainer).__name__} does not implement {method}"
    assert trainer.compiled and trainer.optimizer_variables()
    losses = np.asarray(trainer.per_example_loss_for(images))
    assert losses.shape == (len(images),) and np.isfinite(losses).all(), losses


class PhaseWeights(keras.callbacks.Callback):
    """Snapshots the autoencoder's weights when each phase begins and when it ends."""

    def __init__(self, autoencoder: StagedAutoencoder):
        super().__init__()
        self.autoencoder = autoencoder
        self.names: List[str] = []
        self.before: List[Weights] = []
        self.after: List[Weights] = []

    def on_phase_begin(self, name: str, index: int) -> None:
        self.names.append(name)
        self.before.append(layer_weights(self.autoencoder))

    def on_train_end(self, logs=None) -> None:
        self.after.append(layer_weights(self.autoencoder))


def check_scheme(name: str, *, normalization: str = "batch", **train) -> None:
    """The contract of a registered scheme, on a tiny 2-stage ConvAutoencoder (with
    BatchNormalization by default: frozen layers must keep their moving statistics):

    - each phase changes every weight of exactly the layers it declares trainable
      (`Phase.trainable`; None: all), every other weight stays bit-identical, and
      nothing changes between phases: the trainer is compiled after `trainable` is set;
    - no layer is left frozen at the end;
    - every loss is finite;
    - a run killed mid-phase and resumed (into a model with other initial weights)
      ends with the losses and weights of an uninterrupted one.

    Two fits: one uninterrupted run in a run directory, watched phase by phase, whose
    directory is copied as a kill mid-phase leaves it (`copy_after_checkpoint`); then
    that copy resumed. `train` overrides TrainConfig fields; each phase trains 2 epochs
    unless it says otherwise.
    """
    schemes.SCHEMES.lookup(name)
    options = {"scheme": name, "epochs": 2, "finetune_epochs": 2, "batch_size": 16,
               "learning_rate": 3e-3, **train}
    x, val = smooth_images(48), smooth_images(8, seed=1)

    def fit(model: StagedAutoencoder, model_dir: str, callbacks=()) -> dict:
        return training.fit(model, x, validation_data=val, model_dir=model_dir,
                            callbacks=callbacks, **options, **QUIET)

    model = tiny_autoencoder(normalization=normalization, seed=0)
    phases = schemes.phases_for(model, TrainConfig(**options))
    initial, watch = layer_weights(model), PhaseWeights(model)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, killed = os.path.join(tmp, "run"), os.path.join(tmp, "killed")
        kill_at = _mid_phase_checkpoint(phases)
        with copy_after_checkpoint(kill_at, killed) as written:
            history = fit(model, run_dir, [watch])
        assert len(written) >= kill_at and os.path.isdir(killed), (written, kill_at)
        check_history(name, phases, history, watch.names)
        check_phase_weights(name, model, phases, initial, watch.before, watch.after)
        shutil.rmtree(run_dir)
        os.rename(killed, run_dir)  # the killed run, where it ran
        resumed = tiny_autoencoder(normalization=normalization, seed=7)
        check_resumed(name, history, layer_weights(model), fit(resumed, run_dir),
                      layer_weights(resumed))


def _mid_phase_checkpoint(phases: Sequence[schemes.Phase]) -> int:
    """The number of the checkpoint (one per epoch) after the first epoch of the last
    phase that trains 2 epochs or more: a kill there is a kill mid-phase."""
    epochs = [p.epochs for p in phases]
    mid = [i for i, e in enumerate(epochs) if e >= 2]
    return sum(epochs[:mid[-1]]) + 1 if mid else 1


def check_history(name: str, phases: Sequence[schemes.Phase], history: dict,
                  announced: Sequence[str]) -> None:
    """One history per phase, in order, as each phase announced itself; every training
    and validation loss finite."""
    assert list(history) == [p.name for p in phases] == list(announced), \
        (name, list(history), list(announced))
    for phase, h in history.items():
        assert len(h["loss"]) == len(h["val_loss"]) > 0, (name, phase, h)
        assert all(math.isfinite(v) for v in h["loss"] + h["val_loss"]), (name, phase, h)


def check_phase_weights(name: str, model: StagedAutoencoder, phases: Sequence[schemes.Phase],
                        initial: Weights, begins: Sequence[Weights],
                        ends: Sequence[Weights]) -> None:
    """Each phase (weights at its begin and end) changed every weight of exactly its
    trainable layers, the others stayed bit-identical, nothing changed between phases
    (from `initial` on), and `model` is left with nothing frozen."""
    leaves = model.stage_leaf_layers()
    assert len(phases) == len(begins) == len(ends), (name, len(phases), len(begins), len(ends))
    for phase, previous_end, begin, end in zip(phases, [initial, *ends], begins, ends):
        assert all(identical(previous_end[n], begin[n]) for n in begin), \
            f"{name}: weights changed before {phase.name} began"
        trains = {id(layer) for layer in (leaves if phase.trainable is None else phase.trainable)}
        for layer in leaves:
            if id(layer) in trains:
                assert all_changed(begin[layer.name], end[layer.name]), \
                    f"{name}: {phase.name} left (part of) trainable {layer.name} unchanged"
            else:
                assert identical(begin[layer.name], end[layer.name]), \
                    f"{name}: {phase.name} changed frozen {layer.name}"
    assert all(layer.trainable for layer in leaves), f"{name} left layers frozen"
    assert all(block.trainable for block in model.encoders + model.decoders), name


def check_resumed(name: str, history: dict, weights: Weights, resumed_history: dict,
                  resumed_weights: Weights) -> None:
    """The resumed run ends with the uninterrupted run's phases, losses and weights."""
    assert list(resumed_history) == list(history), (name, list(resumed_history), list(history))
    for phase, h in history.items():
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(resumed_history[phase][key], h[key], rtol=1e-6,
                                       err_msg=f"{name}: resumed {phase} {key}")
    assert_weights_close(resumed_weights, weights)
