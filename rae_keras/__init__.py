"""rae_keras: recursively trained convolutional autoencoders (Keras 3 / TensorFlow)."""

__version__ = "0.1.0"
