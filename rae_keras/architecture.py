"""The layer stack of an N-stage convolutional autoencoder and every model over it.

Layers are created once, in `Autoencoder.__init__`. Every model this module hands out
(stage k, depth k, full, encoder, decoder, training objectives) is a functional model
over those same layer objects, so training a stage model trains the full autoencoder
and nothing is ever copied.

Normalization (`ModelConfig.normalization`):
  none          h_k = e_k(h_(k-1)).
  batch         a BatchNormalization after every layer but d_1 (whose sigmoid is the
                image); each belongs to the stage of the layer it follows.
  shared_batch  one BatchNormalization per h_k, used after e_k and again after d_(k+1)
                (the decoder layer that reconstructs h_k). It belongs to stage k, the
                stage that creates h_k: it trains there and is frozen (inference mode,
                fixed statistics) in stage k+1, where it normalizes d_(k+1)'s output
                exactly as it normalizes the target h_k.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras

from rae_keras.config import ModelConfig

class Autoencoder:
    """Owns the layers e_1..e_N, d_1..d_N (and norms) and builds models over them."""

    def __init__(self, config: ModelConfig, image_shape: Sequence[int],
                 dtype_policy: Optional[str] = None):
        """`dtype_policy` (e.g. "mixed_bfloat16") applies to every layer but the final
        sigmoid, which stays float32 so reconstructions are float32 in [0, 1]."""
        config.validate(image_shape[0])
        self.config = config
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_stages = config.num_stages
        n = self.num_stages
        dtype = dtype_policy

        self.encoders: List[keras.layers.Layer] = []
        self.decoders: List[keras.layers.Layer] = []
        for k in range(1, n + 1):
            self.encoders.append(keras.layers.Conv2D(
                config.filters[k - 1], config.encoder_kernel(k), strides=2,
                padding="same", activation=config.activation,
                kernel_initializer=config.kernel_initializer, dtype=dtype, name=f"e{k}"))
            self.decoders.append(keras.layers.Conv2DTranspose(
                self.channels_at(k - 1), config.decoder_kernel(k), strides=2,
                padding="same", activation=None if k == 1 else config.activation,
                kernel_initializer=config.kernel_initializer, dtype=dtype, name=f"d{k}"))
        # d_1's activation, a separate float32 layer (no weights) so that the image
        # comes out float32 under a mixed precision policy.
        self.output_activation = keras.layers.Activation("sigmoid", dtype="float32",
                                                         name="d1_sigmoid")

        # encoder_norms[k-1] follows e_k; decoder_norms[k-1] follows d_k (None for d_1).
        self.encoder_norms: List[Optional[keras.layers.Layer]] = [None] * n
        self.decoder_norms: List[Optional[keras.layers.Layer]] = [None] * n
        if config.normalization == "batch":
            for k in range(1, n + 1):
                self.encoder_norms[k - 1] = keras.layers.BatchNormalization(
                    dtype=dtype, name=f"e{k}_bn")
                if k > 1:
                    self.decoder_norms[k - 1] = keras.layers.BatchNormalization(
                        dtype=dtype, name=f"d{k}_bn")
        elif config.normalization == "shared_batch":
            for k in range(1, n + 1):
                self.encoder_norms[k - 1] = keras.layers.BatchNormalization(
                    dtype=dtype, name=f"h{k}_bn")
            for k in range(2, n + 1):
                self.decoder_norms[k - 1] = self.encoder_norms[k - 2]

        self._models: Dict[str, keras.Model] = {}

    # ----------------------------------------------------------------- shapes
    def channels_at(self, depth: int) -> int:
        """Channels of h_depth (h_0 is the image)."""
        return self.image_shape[-1] if depth == 0 else self.config.filters[depth - 1]

    def shape_at(self, depth: int) -> Tuple[int, int, int]:
        size = self.image_shape[0] // (2 ** depth)
        return (size, size, self.channels_at(depth))

    @property
    def code_shape(self) -> Tuple[int, int, int]:
        return self.shape_at(self.num_stages)

    # ----------------------------------------------------------------- layers
    @property
    def layers(self) -> List[keras.layers.Layer]:
        """Every layer once, in stage order."""
        seen: List[keras.layers.Layer] = []
        for k in range(1, self.num_stages + 1):
            for layer in self.stage_layers(k):
                if all(layer is not s for s in seen):
                    seen.append(layer)
        return seen

    def stage_layers(self, stage: int) -> List[keras.layers.Layer]:
        """The layers stage `stage` trains: e_k, d_k and the norms that belong to it."""
        k = stage
        owned = [self.encoders[k - 1], self.encoder_norms[k - 1], self.decoders[k - 1]]
        if self.config.normalization == "batch":
            owned.append(self.decoder_norms[k - 1])
        return [layer for layer in owned if layer is not None]

    def set_trainable(self, layers: Optional[Sequence[keras.layers.Layer]]) -> None:
        """Make exactly `layers` trainable (None: all). Recompile afterwards."""
        for layer in self.layers:
            layer.trainable = layers is None or any(layer is t for t in layers)

    # ----------------------------------------------------------------- blocks
    def encode(self, h, from_depth: int, to_depth: int):
        """h_from -> h_to through e_(from+1) .. e_to."""
        for k in range(from_depth + 1, to_depth + 1):
            h = self.encoders[k - 1](h)
            if self.encoder_norms[k - 1] is not None:
                h = self.encoder_norms[k - 1](h)
        return h

    def decode(self, h, from_depth: int, to_depth: int = 0):
        """Reconstruction of h_to from h_from through d_from .. d_(to+1)."""
        for k in range(from_depth, to_depth, -1):
            h = self.decoders[k - 1](h)
            if k == 1:
                h = self.output_activation(h)
            if self.decoder_norms[k - 1] is not None:
                h = self.decoder_norms[k - 1](h)
        return h

    # ----------------------------------------------------------------- models
    def _cached(self, key: str, build) -> keras.Model:
        if key not in self._models:
            self._models[key] = build()
        return self._models[key]

    def _image_input(self) -> keras.KerasTensor:
        return keras.Input(shape=self.image_shape, name="images")

    def depth_model(self, depth: int) -> keras.Model:
        """x -> e_1..e_k -> d_k..d_1: the image as reconstructed from h_k."""
        self._check_stage(depth)

        def build():
            x = self._image_input()
            y = self.decode(self.encode(x, 0, depth), depth, 0)
            return keras.Model(x, y, name=f"depth_{depth}")

        return self._cached(f"depth_{depth}", build)

    def full_model(self) -> keras.Model:
        return self.depth_model(self.num_stages)

    def encoder(self, depth: Optional[int] = None) -> keras.Model:
        """Image -> h_depth (default: the code h_N)."""
        depth = self.num_stages if depth is None else depth
        self._check_stage(depth)

        def build():
            x = self._image_input()
            name = "encoder" if depth == self.num_stages else f"encoder_{depth}"
            return keras.Model(x, self.encode(x, 0, depth), name=name)

        return self._cached(f"encoder_{depth}", build)

    def decoder(self) -> keras.Model:
        def build():
            code = keras.Input(shape=self.code_shape, name="code")
            return keras.Model(code, self.decode(code, self.num_stages, 0), name="decoder")

        return self._cached("decoder", build)

    def encoder_block(self, stage: int) -> keras.Model:
        """h_(k-1) -> h_k: e_k and its norm alone."""
        self._check_stage(stage)

        def build():
            h = keras.Input(shape=self.shape_at(stage - 1), name=f"h{stage - 1}")
            return keras.Model(h, self.encode(h, stage - 1, stage), name=f"encoder_block_{stage}")

        return self._cached(f"encoder_block_{stage}", build)

    def stage_model(self, stage: int) -> keras.Model:
        """h_0 -> e_1..e_k -> d_k: stage k's reconstruction of h_(k-1)."""
        self._check_stage(stage)

        def build():
            x = self._image_input()
            h = self.encode(x, 0, stage)
            return keras.Model(x, self.decode(h, stage, stage - 1), name=f"stage_{stage}")

        return self._cached(f"stage_{stage}", build)

    def stage_objective(self, stage: int) -> keras.Model:
        """Image -> [stage k's reconstruction of h_(k-1), h_(k-1)]."""
        self._check_stage(stage)

        def build():
            x = self._image_input()
            target = self.encode(x, 0, stage - 1)
            prediction = self.decode(self.encode(target, stage - 1, stage), stage, stage - 1)
            return keras.Model(x, [prediction, target], name=f"stage_{stage}_objective")

        return self._cached(f"stage_{stage}_objective", build)

    def stage_objective_on_activation(self, stage: int) -> keras.Model:
        """h_(k-1) -> [stage k's reconstruction of h_(k-1), h_(k-1)]: stage k's objective
        for inputs already passed through the frozen e_1..e_(k-1) (a cached prefix)."""
        self._check_stage(stage)

        def build():
            target = keras.Input(shape=self.shape_at(stage - 1), name=f"h{stage - 1}")
            prediction = self.decode(self.encode(target, stage - 1, stage), stage, stage - 1)
            return keras.Model(target, [prediction, target],
                               name=f"stage_{stage}_objective_on_h{stage - 1}")

        return self._cached(f"stage_{stage}_objective_on_activation", build)

    def joint_objective(self) -> keras.Model:
        """Image -> [r_0, h_0, r_1, h_1, ..., r_(N-1), h_(N-1)] (level 0 = the image):
        r_(k-1) = d_k(r_k) is the decoder path from the code (r_N = h_N), h_(k-1) the
        encoder activation it mirrors."""

        def build():
            x = self._image_input()
            activations = [x]
            for k in range(1, self.num_stages + 1):
                activations.append(self.encode(activations[-1], k - 1, k))
            pairs, r = {}, activations[-1]
            for k in range(self.num_stages, 0, -1):
                r = self.decode(r, k, k - 1)
                pairs[k - 1] = [r, activations[k - 1]]
            outputs = [t for level in range(self.num_stages) for t in pairs[level]]
            return keras.Model(x, outputs, name="joint_objective")

        return self._cached("joint_objective", build)

    def full_objective(self) -> keras.Model:
        """Image -> [x_hat, x]: the end-to-end reconstruction loss."""

        def build():
            x = self._image_input()
            x_hat = self.decode(self.encode(x, 0, self.num_stages), self.num_stages, 0)
            return keras.Model(x, [x_hat, x], name="full_objective")

        return self._cached("full_objective", build)

    def _check_stage(self, stage: int) -> None:
        if not 1 <= stage <= self.num_stages:
            raise ValueError(f"stage/depth must be in 1..{self.num_stages}, got {stage}")
