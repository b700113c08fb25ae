"""python -m rae_keras.export --model_dir=RUN [--export_dir=BASE] [--version=N]

Exports a run's newest checkpoint (SavedModel for TF Serving, plus TFLite).

Where it writes comes from the command line only: --export_dir, else
exported/<basename of --model_dir>. The run's config.json describes the model; it is
not trusted to choose (or, with --overwrite, delete) a path.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from rae_keras import fileio
from rae_keras import flags as flags_lib
from rae_keras import runs, serving

FLAGS = flags_lib.FLAGS


def export_base_from_flags() -> str:
    if FLAGS.export_dir:
        return FLAGS.export_dir
    if FLAGS.export_dir == "":
        raise serving.ExportError("--export_dir is empty; give the export base to write")
    return os.path.join("exported", os.path.basename(os.path.abspath(FLAGS.model_dir)))


def training_provenance(state: runs.TrainingState) -> Dict[str, Any]:
    """What rae_config.json records of the checkpoint the weights come from."""
    phase_name = state.history[state.phase]["phase"] if state.phase < len(state.history) else None
    return {"finished": state.finished, "phase": state.phase, "phase_name": phase_name,
            "epoch": state.epoch, "epochs_done": state.epochs_done}


def main(argv) -> None:
    del argv
    if not FLAGS.model_dir:
        raise runs.RunDirError("--model_dir=RUN is required (a run directory made by train)")
    export_base = export_base_from_flags()
    config, autoencoder, state = runs.load_trained(FLAGS.model_dir)
    provenance = training_provenance(state)
    if not state.finished and not FLAGS.allow_unfinished:
        raise serving.ExportError(
            f"{FLAGS.model_dir} has not finished training (phase {state.phase + 1} "
            f"{provenance['phase_name'] or ''}, epoch {state.epoch}); pass --allow_unfinished "
            "to export its newest checkpoint anyway")
    version_dir = serving.export_model(autoencoder, export_base, config, version=FLAGS.version,
                                       overwrite=FLAGS.overwrite, tflite=FLAGS.tflite,
                                       provenance=provenance)
    print(f"exported {version_dir}")


ERRORS = (runs.RunDirError, serving.ExportError, fileio.WriteError)

if __name__ == "__main__":
    flags_lib.run_main(main, ERRORS)
