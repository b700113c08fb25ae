"""ConvAutoencoder's architecture: the encoder and decoder block of every stage.

Kept apart from the model class so the network (layers, strides, normalization) reads
in one place, while `models.py` keeps what every staged autoencoder does with it.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import keras

from rae_keras.config import ModelConfig

Blocks = List[keras.layers.Layer]


def conv_blocks(config: ModelConfig, image_channels: int, dtype) -> Tuple[Blocks, Blocks]:
    """(encoders, decoders): stage k is a stride-2 Conv2D e_k and a stride-2
    Conv2DTranspose d_k back to h_(k-1)'s channels, each followed by its normalization
    (see ConvAutoencoder); d_1 ends in a float32 sigmoid."""
    channels = [image_channels, *config.filters]  # of h_0 .. h_N
    common = dict(strides=2, padding="same", kernel_initializer=config.kernel_initializer,
                  dtype=dtype)
    norms: Dict[str, keras.layers.Layer] = {}

    def norm(name: str) -> keras.layers.Layer:
        """One layer per name: "shared_batch" asks for h_k's twice and gets it once."""
        if name not in norms:
            norms[name] = keras.layers.BatchNormalization(dtype=dtype, name=name)
        return norms[name]

    encoders, decoders = [], []
    for k in range(1, config.num_stages + 1):
        e = [keras.layers.Conv2D(channels[k], config.encoder_kernel(k),
                                 activation=config.activation, name=f"e{k}", **common)]
        d = [keras.layers.Conv2DTranspose(channels[k - 1], config.decoder_kernel(k),
                                          activation=None if k == 1 else config.activation,
                                          name=f"d{k}", **common)]
        if config.normalization == "batch":
            e.append(norm(f"e{k}_bn"))
            if k > 1:
                d.append(norm(f"d{k}_bn"))
        elif config.normalization == "shared_batch":
            e.append(norm(f"h{k}_bn"))
            if k > 1:
                d.append(norm(f"h{k - 1}_bn"))
        if k == 1:  # the image: float32 even under a mixed precision policy
            d.append(keras.layers.Activation("sigmoid", dtype="float32", name="d1_sigmoid"))
        encoders.append(e[0] if len(e) == 1 else keras.Sequential(e, name=f"encoder_{k}"))
        decoders.append(d[0] if len(d) == 1 else keras.Sequential(d, name=f"decoder_{k}"))
    return encoders, decoders

