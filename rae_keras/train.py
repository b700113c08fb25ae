"""python -m rae_keras.train --flagfile=configs/NAME.cfg [--flag=value ...]

Trains (or resumes) a run in --model_dir, then exports the final model to --export_dir:
the flags become a RunConfig, its ConvAutoencoder is trained by `rae_keras.fit`.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging

from rae_keras import config as config_lib
from rae_keras import data as data_lib
from rae_keras import distribute, export, fileio, inputs
from rae_keras import flags as flags_lib
from rae_keras import runs, serving, training
from rae_keras.models import StagedAutoencoder


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    config = flags_lib.run_config_from_flags()
    strategy = distribute.make_strategy(config.distribute)  # before any other TF work
    chief = distribute.is_chief(strategy)
    model_dir = (config.model_dir if chief
                 else distribute.scratch_dir(config.model_dir, strategy))
    splits = data_lib.load_splits(config.data)
    print(f"data: {len(splits.train.images)} training and {len(splits.test.images)} test "
          f"images ({config.data.dataset}), {len(splits.skipped)} skipped; run dir "
          f"{os.path.abspath(model_dir)}; {distribute.describe(strategy)}")
    model = training.build_model(config, strategy)
    training.fit(model, splits.train.images, validation_data=splits.test.images,
                 model_dir=model_dir, overwrite=flags_lib.FLAGS.overwrite, strategy=strategy,
                 run_config=config, **dataclasses.asdict(config.train))
    if chief and config.export_dir:  # the chief exports
        with runs.RunDirectory(model_dir) as run:
            run.prepare(run.load_config())
            state = run.restore(model)
            if state.exported:
                print(f"already exported to {state.exported}")
            else:
                print(f"exported {export_trained(run, state, model, config, flags_lib.FLAGS.tflite)}")


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
