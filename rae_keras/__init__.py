"""rae_keras: recursively trained autoencoders in Keras 3 / TensorFlow.

The public API, what a notebook types:

    model = rae_keras.ConvAutoencoder(image_shape=(64, 64, 3), filters=(8, 16, 32))
    history = rae_keras.fit(model, images, scheme="recursive", epochs=10)
    model.reconstruct(images, depth=1)
    rae_keras.export_model(model, "exported/mine")
    model = rae_keras.load("exported/mine")
"""

__version__ = "0.1.0"

from rae_keras import cli as _cli  # noqa: E402  (first: before TensorFlow starts)

_cli.quiet_startup_if_command_line()

from rae_keras.config import ConfigError  # noqa: E402
from rae_keras.exports import LoadError, load  # noqa: E402
from rae_keras.inputs import InputError  # noqa: E402
from rae_keras.models import ConvAutoencoder, StagedAutoencoder  # noqa: E402
from rae_keras.runs import RunDirError  # noqa: E402
from rae_keras.schemes import SCHEMES  # noqa: E402  (the registry: names of every scheme)
from rae_keras.serving import ExportError, export_model  # noqa: E402
from rae_keras.training import TrainingDiverged, fit  # noqa: E402

__all__ = [
    "ConfigError", "ConvAutoencoder", "ExportError", "InputError", "LoadError", "RunDirError",
    "SCHEMES", "StagedAutoencoder", "TrainingDiverged", "export_model", "fit", "load",
]
