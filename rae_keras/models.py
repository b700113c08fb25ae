"""Staged autoencoders: Keras models made of (encoder, decoder) pairs, one per stage.

`StagedAutoencoder` takes the pairs from the user (any Keras layers or models);
`ConvAutoencoder` builds the convolutional network the package trains by default.
Every model a training scheme or the export needs (stage k, depth k, the encoder and
decoder at depth k, the training objectives) is a functional model over the *same*
layer objects, built on demand and cached, so training a stage model trains the
autoencoder and nothing is ever copied.

Depths: h_0 is the input, h_k = encoders[k-1](h_(k-1)). Reconstruction at depth k runs
encoders 1..k, then decoders k..1. Stage k trains the pair (encoders[k-1],
decoders[k-1]) to reproduce h_(k-1) from h_k.

A layer may appear in two blocks (`ConvAutoencoder(normalization="shared_batch")`
normalizes h_k and d_(k+1)'s output with one BatchNormalization). It belongs to the
first stage that uses it: it trains there and is frozen in later stages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Dict, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np

from rae_keras.config import ModelConfig

Shape = Tuple[int, ...]
IntOrInts = Union[int, Sequence[int]]


@keras.saving.register_keras_serializable(package="rae_keras")
class StagedAutoencoder(keras.Model):
    """An autoencoder trained stage by stage: `encoders[k-1]`, `decoders[k-1]` are stage k.

    `decoders[k-1]` must map the output of `encoders[k-1]` back to the shape of its
    input; construction checks it and names the stage and both shapes when not.
    Calling the model gives the full-depth reconstruction.
    """

    def __init__(self, encoders: Sequence[keras.layers.Layer],
                 decoders: Sequence[keras.layers.Layer], input_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        if not encoders or len(encoders) != len(decoders):
            raise ValueError(f"need one decoder per encoder and at least one stage; got "
                             f"{len(encoders)} encoders and {len(decoders)} decoders")
        self.encoders = list(encoders)
        self.decoders = list(decoders)
        self.sample_shape: Shape = tuple(int(d) for d in input_shape)
        # Functional sub-models, built on demand. Not tracked by Keras: they hold no
        # weights of their own, and tracking them would save every weight twice.
        object.__setattr__(self, "_submodels", {})
        self._shapes = self._check_pairs()
        self.built = True

    # ------------------------------------------------------------------- shapes
    def _check_pairs(self) -> List[Shape]:
        """Traces the encoders down and the decoders back up once (creating every
        variable in that order) and returns h_0..h_N's shapes."""
        activations = [keras.Input(shape=self.sample_shape)]
        for encoder in self.encoders:
            activations.append(encoder(activations[-1]))
        for k in range(self.num_stages, 0, -1):
            encoder, decoder = self.encoders[k - 1], self.decoders[k - 1]
            h, code = activations[k - 1], activations[k]
            back = decoder(code)
            if tuple(back.shape[1:]) != tuple(h.shape[1:]):
                raise ValueError(
                    f"stage {k}: decoder {decoder.name!r} maps the encoder's output "
                    f"{tuple(code.shape[1:])} to {tuple(back.shape[1:])}, but encoder "
                    f"{encoder.name!r} takes {tuple(h.shape[1:])}; the decoder must give back "
                    "the shape of the encoder's input")
        return [tuple(int(d) for d in a.shape[1:]) for a in activations]

    @property
    def num_stages(self) -> int:
        return len(self.encoders)

    def shape_at(self, depth: int) -> Shape:
        """Shape of h_depth without the batch axis (h_0 is the input)."""
        return self._shapes[depth]

    @property
    def code_shape(self) -> Shape:
        return self._shapes[-1]

    @property
    def image_shape(self) -> Shape:
        """The input shape; named for the image models the export serves."""
        return self.sample_shape

    @property
    def is_image_model(self) -> bool:
        """Inputs are [H, W, 1 or 3] images: the export adds the image-bytes signature."""
        return len(self.sample_shape) == 3 and self.sample_shape[-1] in (1, 3)

    # ------------------------------------------------------------------- stages
    def stage_layers(self, stage: int) -> List[keras.layers.Layer]:
        """The innermost layers stage `stage` trains: those of its pair that no earlier
        stage owns."""
        self._check_stage(stage)
        earlier = [layer for k in range(1, stage) for layer in self._pair_leaves(k)]
        return [layer for layer in self._pair_leaves(stage)
                if not any(layer is e for e in earlier)]

    def stage_leaf_layers(self) -> List[keras.layers.Layer]:
        """Every innermost layer once, in stage order."""
        return [layer for k in range(1, self.num_stages + 1) for layer in self.stage_layers(k)]

    def set_trainable(self, layers: Optional[Sequence[keras.layers.Layer]]) -> None:
        """Makes exactly `layers` (innermost layers; None: all) trainable. Keras reads
        `trainable` when it compiles, so recompile afterwards."""
        for block in self.encoders + self.decoders:
            block.trainable = True  # containers first: their setter recurses
        for layer in self.stage_leaf_layers():
            layer.trainable = layers is None or any(layer is t for t in layers)

    def _pair_leaves(self, stage: int) -> List[keras.layers.Layer]:
        leaves: List[keras.layers.Layer] = []
        for block in (self.encoders[stage - 1], self.decoders[stage - 1]):
            for layer in leaf_layers(block):
                if not any(layer is seen for seen in leaves):
                    leaves.append(layer)
        return leaves

    def structure_fingerprint(self) -> str:
        """sha256 of what a run's checkpoints must match: per stage, each layer's class,
        config and weight shapes (without names, which Keras numbers per process, and
        `trainable`, which the schemes change)."""
        def describe(layer):
            try:
                config = {k: v for k, v in layer.get_config().items()
                          if k not in ("name", "trainable")}
            except NotImplementedError:
                config = {}
            return [type(layer).__name__, config, [list(w.shape) for w in layer.weights]]

        structure = [[describe(layer) for layer in self.stage_layers(k)]
                     for k in range(1, self.num_stages + 1)]
        return hashlib.sha256(json.dumps([list(self.sample_shape), structure], sort_keys=True,
                                         default=str).encode()).hexdigest()

    def first_non_finite_weight(self) -> Optional[str]:
        """The path of the first weight holding NaN or infinity; None if all are finite
        (training stops, checkpoints are refused and exports refuse on it)."""
        for variable in self.weights:
            if not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
                return variable.path
        return None

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

    def call(self, inputs, training=None):
        n = self.num_stages
        return self.decode_path(self.encode_path(inputs, 0, n), n, 0)

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

    # ------------------------------------------------------------------- config
    def get_config(self) -> Dict:
        shared = [layer.name for k in range(2, self.num_stages + 1)
                  for layer in self._pair_leaves(k) if layer not in self.stage_layers(k)]
        if shared:
            raise NotImplementedError(
                f"layers {shared} are shared between stages; a StagedAutoencoder with shared "
                "layers cannot be rebuilt from its blocks' configs: subclass it and return "
                "your constructor's arguments from get_config (as ConvAutoencoder does)")
        config = super().get_config()
        config.update(
            encoders=[keras.saving.serialize_keras_object(e) for e in self.encoders],
            decoders=[keras.saving.serialize_keras_object(d) for d in self.decoders],
            input_shape=list(self.sample_shape))
        return config

    @classmethod
    def from_config(cls, config: Dict, custom_objects=None):
        config = dict(config)
        for key in ("encoders", "decoders"):
            config[key] = [keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
                           for c in config[key]]
        return cls(**config)

    def _check_stage(self, stage: int) -> None:
        if not 1 <= int(stage) <= self.num_stages:
            raise ValueError(f"stage/depth must be in 1..{self.num_stages}, got {stage}")


@keras.saving.register_keras_serializable(package="rae_keras")
class ConvAutoencoder(StagedAutoencoder):
    """The package's convolutional autoencoder: stage k is a stride-2 Conv2D e_k and a
    stride-2 Conv2DTranspose d_k back to h_(k-1)'s channels; d_1 ends in a float32
    sigmoid, so images come out in [0, 1] and float32 under mixed precision.

    normalization: "none"; "batch" (a BatchNormalization after every layer but d_1);
    "shared_batch" (one BatchNormalization per h_k, after e_k and again after d_(k+1),
    owned by stage k and frozen, in inference mode, from stage k+1 on).
    """

    def __init__(self, image_shape: Sequence[int], filters: Sequence[int],
                 kernel_sizes: IntOrInts = 3, decoder_kernel_sizes: Optional[IntOrInts] = None,
                 activation: str = "selu", normalization: str = "none",
                 kernel_initializer: str = "lecun_normal", **kwargs):
        image_shape = tuple(int(d) for d in image_shape)
        model_config = ModelConfig(
            filters=tuple(int(f) for f in filters), kernel_sizes=_ints(kernel_sizes),
            decoder_kernel_sizes=_ints(decoder_kernel_sizes or ()), activation=activation,
            normalization=normalization, kernel_initializer=kernel_initializer)
        if len(image_shape) != 3 or image_shape[0] != image_shape[1]:
            raise ValueError(f"image_shape must be (size, size, channels), got {image_shape}")
        model_config.validate(image_shape[0])
        encoders, decoders = _conv_blocks(model_config, image_shape[-1], kwargs.get("dtype"))
        super().__init__(encoders, decoders, image_shape, **kwargs)
        self.model_config = model_config

    @classmethod
    def from_model_config(cls, config: ModelConfig, image_shape: Sequence[int],
                          **kwargs) -> "ConvAutoencoder":
        return cls(image_shape, config.filters, config.kernel_sizes,
                   config.decoder_kernel_sizes, config.activation, config.normalization,
                   config.kernel_initializer, **kwargs)

    def get_config(self) -> Dict:
        config = keras.Model.get_config(self)
        c = self.model_config
        config.update(image_shape=list(self.sample_shape), filters=list(c.filters),
                      kernel_sizes=list(c.kernel_sizes),
                      decoder_kernel_sizes=list(c.decoder_kernel_sizes),
                      activation=c.activation, normalization=c.normalization,
                      kernel_initializer=c.kernel_initializer)
        return config

    @classmethod
    def from_config(cls, config: Dict, custom_objects=None):
        return cls(**config)


def _conv_blocks(config: ModelConfig, image_channels: int, dtype
                 ) -> Tuple[List[keras.layers.Layer], List[keras.layers.Layer]]:
    n = config.num_stages
    channels = [image_channels, *config.filters]  # of h_0 .. h_N
    common = dict(strides=2, padding="same", kernel_initializer=config.kernel_initializer,
                  dtype=dtype)
    norms: Dict[str, keras.layers.Layer] = {}

    def norm(name: str) -> keras.layers.Layer:
        if name not in norms:
            norms[name] = keras.layers.BatchNormalization(dtype=dtype, name=name)
        return norms[name]

    encoders, decoders = [], []
    for k in range(1, n + 1):
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


def leaf_layers(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The innermost layers of `layer`, each once. Containers (Sequential, functional
    models: every weight belongs to a child) are opened; any other layer, a user's
    custom block included, is one unit that freezes as a whole."""
    children = [c for c in getattr(layer, "layers", None) or []
                if not isinstance(c, keras.layers.InputLayer)]
    child_weights = {id(w) for c in children for w in c.weights}
    if not children or any(id(w) not in child_weights for w in layer.weights):
        return [layer]
    out: List[keras.layers.Layer] = []
    for child in children:
        for leaf in leaf_layers(child):
            if not any(leaf is o for o in out):
                out.append(leaf)
    return out


def _ints(value: Optional[IntOrInts]) -> Tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    return tuple(int(v) for v in value)
