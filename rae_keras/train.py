"""python -m rae_keras.train --flagfile=configs/NAME.cfg [--flag=value ...]

Trains (or resumes) a run in --model_dir, then exports the final model to --export_dir:
the flags become a RunConfig, its ConvAutoencoder is trained by `rae_keras.fit`.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Dict, List, Optional

import keras
import numpy as np

from rae_keras import config as config_lib
from rae_keras import data as data_lib
from rae_keras import distribute, export, fileio, inputs
from rae_keras import flags as flags_lib
from rae_keras import records, runs, serving, training
from rae_keras.models import StagedAutoencoder


def main(argv) -> None:
    del argv
    config = flags_lib.run_config_from_flags()
    strategy = distribute.make_strategy(config.distribute)  # before any other TF work
    chief = distribute.is_chief(strategy)
    model_dir = (config.model_dir if chief
                 else distribute.scratch_dir(config.model_dir, strategy))
    splits = data_lib.stream_splits(config.data, cache_dir=flags_lib.FLAGS.cache_dir)
    print(f"data: {len(splits.train.images)} training and {len(splits.test.images)} test "
          f"images ({config.data.dataset}), {len(splits.skipped)} skipped; run dir "
          f"{os.path.abspath(model_dir)}; {distribute.describe(strategy)}")
    model = training.build_model(config, strategy)
    history = training.fit(model, splits.train.images, validation_data=splits.test.images,
                           model_dir=model_dir, overwrite=flags_lib.FLAGS.overwrite,
                           strategy=strategy, run_config=config, log=print,
                           **dataclasses.asdict(config.train))
    if not chief:  # the chief exports and reports
        return
    version_dir, earlier = None, False
    if config.export_dir:
        with runs.RunDirectory(model_dir) as run:
            run.prepare(run.load_config())
            state = run.restore(model)
            earlier = bool(state.exported)
            version_dir = state.exported or export_trained(run, state, model, config,
                                                           flags_lib.FLAGS.tflite)
    print()
    print(summary(config, model_dir, history, version_dir, earlier,
                  full_depth_loss(model, splits.test.images), len(splits.test.images),
                  model.num_stages))


def full_depth_loss(model: StagedAutoencoder, images, batch_size: int = 256
                    ) -> Optional[float]:
    """The full model's reconstruction MSE (pixels, e1..eN dN..d1) on `images` (numpy
    or a RecordSet), the number an end-to-end phase reports as val_loss. Eager batches
    on this process alone (no collectives, so the chief of a multi-worker run can do it
    by itself)."""
    if not len(images):
        return None
    full = model.full_model()
    total = 0.0
    for batch in records.as_image_set(images).batches(batch_size):
        x = batch.numpy()
        y = keras.ops.convert_to_numpy(full(x, training=False)).astype(np.float64)
        total += float(np.sum(np.mean(np.square(y - x), axis=tuple(range(1, x.ndim)))))
    return total / len(images)


def loss_meaning(phase: str, num_stages: int) -> str:
    """What a phase's loss measures, in the terms of the network's levels."""
    n = num_stages
    if phase.startswith("stage_") and phase[6:].isdigit():
        k = int(phase[6:])
        if k == 1:
            return "pixel MSE: x vs d1(e1(x))"
        return f"activation MSE: h{k - 1} vs d{k}(e{k}(h{k - 1}))"
    if phase in ("end_to_end", "finetune"):
        return f"pixel MSE of the full model, e1..e{n} d{n}..d1"
    if phase == "interleaved":
        return (f"sum of the {n} stage losses (pixel MSE of stage 1 + activation MSE of "
                f"h1..h{n - 1})")
    if phase == "joint":
        return (f"weighted sum over levels: pixel MSE (level 0) + activation MSE of the "
                f"decoder path at h1..h{n - 1}")
    return ""


def summary(config: config_lib.RunConfig, model_dir: str, history: Dict[str, Dict[str, List]],
            version_dir: Optional[str], exported_earlier: bool, full_loss: Optional[float],
            num_val: int, num_stages: int) -> str:
    """The end of `train`: where everything is, what to run next, the losses."""
    run_dir = os.path.abspath(model_dir)
    logs = os.path.join(run_dir, "logs")
    epochs = sum(len(h["loss"]) for h in history.values())
    seconds = sum(sum(h.get("seconds", [])) for h in history.values())
    lines = [f"done: {config.name}, {config.train.scheme}, {epochs} epochs "
             f"({seconds:.0f} s of training)"]
    if version_dir:
        version_dir = os.path.abspath(version_dir)
        base, version = os.path.split(version_dir)
        lines.append(f"  SavedModel   {version_dir} (version {version}"
                     + (", exported by an earlier run)" if exported_earlier else ")"))
        lite = sorted(glob.glob(os.path.join(base, "tflite", version, "*.tflite")))
        if lite:
            lines.append(f"  TFLite       {os.path.dirname(lite[0])}/: "
                         + ", ".join(os.path.basename(p) for p in lite))
    else:
        lines.append(f"  SavedModel   not exported (--export_dir is empty); later: "
                     f"python -m rae_keras.export --model_dir={run_dir}")
    lines += [f"  run dir      {run_dir} (checkpoints, config.json, history.json)",
              f"  logs         {logs}",
              f"  TensorBoard  tensorboard --logdir {logs}"]
    if version_dir:
        lines.append(f"  evaluate     python -m rae_keras.evaluate --models={version_dir} "
                     f"--output_dir=reports/{config.name}")
    if full_loss is not None:
        lines.append(f"final full-depth validation loss: {full_loss:.6f} (pixel MSE of "
                     f"e1..e{num_stages} d{num_stages}..d1 on the {num_val} validation images)")
    else:
        lines.append("final full-depth validation loss: n/a (no validation images)")
    lines.append("last epoch of each phase, loss train / validation:")
    width = max((len(name) for name in history), default=0)
    for name, h in history.items():
        if not h["loss"]:
            continue
        val = f"{h['val_loss'][-1]:.6f}" if h.get("val_loss") else "-"
        meaning = loss_meaning(name, num_stages)
        lines.append(f"  {name:<{width}}  {h['loss'][-1]:.6f} / {val}"
                     + (f"  {meaning}" if meaning else ""))
    return "\n".join(lines)


def export_trained(run: runs.RunDirectory, state: runs.TrainingState,
                   autoencoder: StagedAutoencoder, config: config_lib.RunConfig, tflite: bool) -> str:
    """Exports the trained model and records it in the run state. A rerun after a kill
    between the two finds the version holding these weights and records it instead of
    exporting them again as the next version."""
    version_dir = serving.latest_export_of(autoencoder, config.export_dir) or \
        serving.export_model(autoencoder, config.export_dir, config, tflite=tflite,
                             provenance=export.training_provenance(state))
    run.mark_exported(state, version_dir)
    return version_dir


ERRORS = (config_lib.ConfigError, data_lib.DataError, runs.RunDirError, serving.ExportError,
          training.TrainingDiverged, fileio.WriteError, inputs.InputError)

if __name__ == "__main__":
    flags_lib.run_main(main, ERRORS)
