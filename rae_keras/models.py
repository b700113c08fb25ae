"""Staged autoencoders: Keras models made of (encoder, decoder) pairs, one per stage.

`StagedAutoencoder` takes the pairs from the user (any Keras layers or models);
`ConvAutoencoder` builds the convolutional network the package trains by default.
Every model a training scheme or the export needs (stage k, depth k, the encoder and
decoder at depth k, the training objectives) is a functional model over the *same*
layer objects, built on demand and cached (`submodels.py`), so training a stage model
trains the autoencoder and nothing is ever copied. ConvAutoencoder's layers are built
in `conv_blocks.py`.

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
from rae_keras.conv_blocks import conv_blocks
from rae_keras.submodels import SubmodelsMixin

Shape = Tuple[int, ...]
IntOrInts = Union[int, Sequence[int]]


@keras.saving.register_keras_serializable(package="rae_keras")
class StagedAutoencoder(SubmodelsMixin, keras.Model):
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

    def call(self, inputs, training=None):
        n = self.num_stages
        return self.decode_path(self.encode_path(inputs, 0, n), n, 0)

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
        encoders, decoders = conv_blocks(model_config, image_shape[-1], kwargs.get("dtype"))
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
