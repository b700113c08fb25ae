"""The functional models a StagedAutoencoder hands out: depth k, stage k, the encoder
and decoder at depth k, the training objectives, and the numpy API over them.

Each is a `keras.Model` over the autoencoder's own layer objects, built once on demand
and cached, so training any of them trains the autoencoder and nothing is copied.
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np


class SubmodelsMixin:
    """Paths through `encoders`/`decoders` and the cached sub-models built from them.

    The host (StagedAutoencoder) provides `encoders`, `decoders`, `num_stages`,
    `shape_at`, `_check_stage` and the `_submodels` cache.
    """

    # ------------------------------------------------------------------- paths
    def encode_path(self, h, from_depth: int, to_depth: int):
        """h_from -> h_to through encoders from+1 .. to (symbolic or eager tensors)."""
        for k in range(from_depth + 1, to_depth + 1):
            h = self.encoders[k - 1](h)
        return h

    def decode_path(self, h, from_depth: int, to_depth: int = 0):
        """Reconstruction of h_to from h_from through decoders from .. to+1."""
        for k in range(from_depth, to_depth, -1):
            h = self.decoders[k - 1](h)
        return h

    # ------------------------------------------------------------------- models
    def depth_model(self, depth: int) -> keras.Model:
        """x -> encoders 1..k -> decoders k..1: the input as reconstructed from h_k."""
        self._check_stage(depth)
        return self._submodel(f"depth_{depth}", lambda x: self.decode_path(
            self.encode_path(x, 0, depth), depth, 0))

    def full_model(self) -> keras.Model:
        return self.depth_model(self.num_stages)

    def encoder(self, depth: Optional[int] = None) -> keras.Model:
        """Input -> h_depth (default: the code h_N)."""
        depth = self.num_stages if depth is None else depth
        self._check_stage(depth)
        name = "encoder" if depth == self.num_stages else f"encoder_{depth}"
        return self._submodel(name, lambda x: self.encode_path(x, 0, depth))

    def decoder(self, depth: Optional[int] = None) -> keras.Model:
        """h_depth -> the reconstructed input (default: from the code h_N)."""
        depth = self.num_stages if depth is None else depth
        self._check_stage(depth)
        name = "decoder" if depth == self.num_stages else f"decoder_{depth}"
        return self._submodel(name, lambda h: self.decode_path(h, depth, 0), input_depth=depth)

    def encoder_block(self, stage: int) -> keras.Model:
        """h_(k-1) -> h_k: encoders[k-1] alone."""
        self._check_stage(stage)
        return self._submodel(f"encoder_block_{stage}",
                              lambda h: self.encode_path(h, stage - 1, stage),
                              input_depth=stage - 1)

    def stage_model(self, stage: int) -> keras.Model:
        """x -> encoders 1..k -> decoders[k-1]: stage k's reconstruction of h_(k-1)."""
        self._check_stage(stage)
        return self._submodel(f"stage_{stage}", lambda x: self.decode_path(
            self.encode_path(x, 0, stage), stage, stage - 1))

    def objective(self, name: str, build, input_depth: int = 0) -> keras.Model:
        """A cached functional model over these layers whose outputs are (prediction,
        target) pairs; `build` maps the input tensor to the flat output list."""
        return self._submodel(name, build, input_depth=input_depth)

    def _submodel(self, name: str, build, input_depth: int = 0) -> keras.Model:
        if name not in self._submodels:
            inputs = keras.Input(shape=self.shape_at(input_depth),
                                 name="inputs" if input_depth == 0 else f"h{input_depth}")
            self._submodels[name] = keras.Model(inputs, build(inputs), name=name)
        return self._submodels[name]

    # ------------------------------------------------------------------- numpy API
    def reconstruct(self, x, depth: Optional[int] = None, batch_size: int = 32) -> np.ndarray:
        """The reconstruction at `depth` (e1..ek, dk..d1; default: full depth)."""
        depth = self.num_stages if depth is None else depth
        return self.depth_model(depth).predict(x, batch_size=batch_size, verbose=0)

    def encode(self, x, depth: Optional[int] = None, batch_size: int = 32) -> np.ndarray:
        """h_depth of `x` (default: the code)."""
        return self.encoder(depth).predict(x, batch_size=batch_size, verbose=0)

    def decode(self, code, depth: Optional[int] = None, batch_size: int = 32) -> np.ndarray:
        """The reconstructed input from h_depth (default: from the code)."""
        return self.decoder(depth).predict(code, batch_size=batch_size, verbose=0)
