"""python -m rae_keras.export --model_dir=RUN [--export_dir=exported/NAME] [--version=N]

Exports a run's newest checkpoint (SavedModel for TF Serving, plus TFLite).
"""

from __future__ import annotations

from rae_keras import flags as flags_lib
from rae_keras import runs, serving

FLAGS = flags_lib.FLAGS


def main(argv) -> None:
    del argv
    if not FLAGS.model_dir:
        raise runs.RunDirError("--model_dir=RUN is required (a run directory made by train)")
    config, autoencoder = runs.load_trained_autoencoder(FLAGS.model_dir)
    export_base = FLAGS.export_dir or config.export_dir or f"exported/{config.name}"
    version_dir = serving.export_model(autoencoder, config, export_base, version=FLAGS.version,
                                       overwrite=FLAGS.overwrite, tflite=FLAGS.tflite)
    print(f"exported {version_dir}")


if __name__ == "__main__":
    flags_lib.run_main(main, (runs.RunDirError, serving.ExportError))
