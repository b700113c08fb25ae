"""Recursive training of your own layers: a stack of residual blocks on the bundled faces.

Run it as `python docs/custom_layers.py` (about a minute on two CPU cores). Each stage
is one custom encoder block and the decoder block that mirrors it; `rae_keras.fit`
trains stage k on reproducing the block's input while the earlier blocks stay frozen.
The test suite runs this file as written.
"""

import os

import keras
import numpy as np
from skimage.data import lfw_subset

import rae_keras


@keras.saving.register_keras_serializable(package="docs")
class ResidualDown(keras.layers.Layer):
    """Halves the resolution: a 3x3 strided conv plus a strided 1x1 shortcut."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="selu",
                                        kernel_initializer="lecun_normal")
        self.shortcut = keras.layers.Conv2D(filters, 1, strides=2, padding="same")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.shortcut.build(input_shape)

    def call(self, x):
        return self.conv(x) + self.shortcut(x)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def up(channels, name, activation="selu"):
    """The mirrored decoder block: a strided transposed conv back to `channels`."""
    return keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                                        activation=activation, name=name)


def main():
    faces = lfw_subset()[:100, :24, :24, None].astype("float32")  # in [0, 1]
    train, test = faces[:90], faces[90:]
    keras.utils.set_random_seed(0)
    model = rae_keras.StagedAutoencoder(
        encoders=[ResidualDown(8, name="res1"), ResidualDown(16, name="res2"),
                  ResidualDown(32, name="res3")],
        decoders=[up(1, "up1", activation="sigmoid"), up(8, "up2"), up(16, "up3")],
        input_shape=(24, 24, 1))

    history = rae_keras.fit(model, train, scheme="recursive", epochs=30, batch_size=16,
                            learning_rate=3e-3,
                            validation_data=test, verbose=0, log=lambda line: None)
    for stage, h in history.items():
        print(f"{stage}: loss {h['loss'][0]:.4f} -> {h['loss'][-1]:.4f}, "
              f"val_loss {h['val_loss'][-1]:.4f}")

    for depth in range(1, model.num_stages + 1):
        mse = float(np.mean((model.reconstruct(test, depth=depth) - test) ** 2))
        print(f"depth {depth}: test MSE {mse:.4f}")

    os.makedirs("runs", exist_ok=True)
    model.save("runs/custom_layers.keras")  # the block is registered: no custom_objects
    again = keras.models.load_model("runs/custom_layers.keras")
    assert np.allclose(again.predict(test, verbose=0), model.predict(test, verbose=0))
    print("saved and reloaded runs/custom_layers.keras: same reconstructions")


if __name__ == "__main__":
    main()
