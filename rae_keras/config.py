"""A run's configuration: built once from flags by the driver, then passed down.

Library code receives these plain frozen dataclasses (or their fields) and never
reads absl flags, so every module can be used and tested without a command line.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, TypeVar

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# The data of a Python `fit` call: arrays or a tf.data pipeline, identified by fingerprint.
# Not a registered source: nothing loads it, fit checks the arrays themselves.
ARRAYS = "arrays"
NORMALIZATIONS = ("none", "batch", "shared_batch")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
# Larger images exhaust memory before the first step (one 65536x65536 image is 16 GiB
# of float32); nothing in this package is meant for them.
MAX_IMAGE_SIZE = 4096
_SEED_SUFFIX = re.compile(r"[_-](?:seed|s)\d+$")


def seed_group(name: str) -> str:
    """`lfw64_stacked_s2` -> `lfw64_stacked`: runs and exports differing only in seed
    (suffix `_sN`, `-sN`, `_seedN`) form one group, reported as mean and spread."""
    return _SEED_SUFFIX.sub("", name) or name


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the value."""


T = TypeVar("T")


class Registry(Mapping[str, T]):
    """The names one extension point accepts (`--scheme`, `--dataset`), each registered
    by a decorator beside its implementation. Validation, flag enums and help text read
    the registry, so a new entry is one decorated function and nothing else to keep in
    step. Iterates over names in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._summaries: Dict[str, str] = {}

    def add(self, name: str, entry: T, doc: Optional[str] = None) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        self._summaries[name] = " ".join((doc or "").strip().split("\n\n")[0].split())

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: registers the function under `name` and returns it unchanged."""
        def decorate(entry: T) -> T:
            self.add(name, entry, getattr(entry, "__doc__", None))
            return entry
        return decorate

    def unregister(self, name: str) -> None:
        """For tests that register a temporary entry."""
        del self._entries[name], self._summaries[name]

    def lookup(self, name: str) -> T:
        """The entry, or a ConfigError naming the registered choices."""
        _one_of(self.kind, name, self.names)
        return self._entries[name]

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self._entries)

    def describe(self) -> str:
        """`name: first docstring paragraph` of every entry, for help text."""
        return " | ".join(f"{name}: {summary.rstrip('.')}" if summary else name
                          for name, summary in self._summaries.items())

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "lfw_subset"
    data_dir: Optional[str] = None  # image folder, or the folder holding lfw.tgz
    tfds_data_dir: Optional[str] = None  # where TFDS keeps prepared data sets
    tfds_name: str = ""  # --dataset=tfds: the TFDS builder (name[/config][:version])
    crop: int = 0  # central square crop in source pixels; 0 = largest square
    image_size: int = 32
    channels: int = 1
    max_images: int = 0  # at most this many training images; 0 = all
    test_fraction: float = 0.1  # fraction of *identities* held out
    seed: int = 0

    def validate(self) -> None:
        if self.dataset == ARRAYS:
            return  # given in Python: fit checked the arrays themselves
        from rae_keras.data import SOURCES  # deferred: data.py imports this module

        if SOURCES.lookup(self.dataset).needs_data_dir and not self.data_dir:
            raise ConfigError(f"--dataset={self.dataset} needs --data_dir=PATH")
        if self.dataset == "tfds" and not self.tfds_name:
            raise ConfigError("--dataset=tfds needs --tfds_name=BUILDER (a TFDS image data set)")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if not 2 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be in [2, {MAX_IMAGE_SIZE}], got {self.image_size}")
        _at_least("max_images", self.max_images, 0)
        _at_least("seed", self.seed, 0)
        _at_least("crop", self.crop, 0)
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    filters: Tuple[int, ...] = (8, 16)
    kernel_sizes: Tuple[int, ...] = (3,)  # per stage; one value applies to all
    decoder_kernel_sizes: Tuple[int, ...] = ()  # empty = same as kernel_sizes
    activation: str = "selu"
    normalization: str = "none"
    kernel_initializer: str = "lecun_normal"  # what SELU networks are designed for

    @property
    def num_stages(self) -> int:
        return len(self.filters)

    def encoder_kernel(self, stage: int) -> int:
        return _per_stage(self.kernel_sizes, stage)

    def decoder_kernel(self, stage: int) -> int:
        return _per_stage(self.decoder_kernel_sizes or self.kernel_sizes, stage)

    def validate(self, image_size: Optional[int] = None) -> None:
        if not self.filters or any(f < 1 for f in self.filters):
            raise ConfigError(f"filters must be positive integers, got {list(self.filters)}")
        for name in ("kernel_sizes", "decoder_kernel_sizes"):
            sizes = getattr(self, name)
            if name == "kernel_sizes" and not sizes:
                raise ConfigError("kernel_sizes must not be empty")
            if len(sizes) not in (0, 1, self.num_stages):
                raise ConfigError(
                    f"{name} has {len(sizes)} values; give 1 or one per stage "
                    f"({self.num_stages})")
            if any(k < 1 for k in sizes):
                raise ConfigError(f"{name} must be positive, got {list(sizes)}")
        _one_of("normalization", self.normalization, NORMALIZATIONS)
        _check_keras_name("activation", self.activation)
        _check_keras_name("kernel_initializer", self.kernel_initializer)
        if image_size is not None and image_size % (2 ** self.num_stages):
            raise ConfigError(
                f"image_size {image_size} is not divisible by 2**{self.num_stages} "
                f"(one stride-2 layer per stage); the decoder could not mirror the encoder")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    scheme: str = "recursive"
    epochs: int = 1  # per stage for recursive schemes
    finetune_epochs: int = 3  # recursive_finetune/_depths: epochs after the stages
    # joint: weights of levels 0..N-1; recursive_depths: of depths 1..N (empty: all 1)
    level_weights: Tuple[float, ...] = ()
    batch_size: int = 32
    learning_rate: float = 1e-3
    # cosine: every phase (fresh optimizer) decays from learning_rate to 0 over its steps
    learning_rate_schedule: str = "constant"
    seed: int = 0
    summary_images: int = 8  # faces shown in TensorBoard grids
    mixed_precision: bool = False  # mixed_bfloat16 on CPU, mixed_float16 on GPU
    cache_frozen_prefix: bool = False  # recursive: compute h_(k-1) once per stage
    steps_per_execution: int = 1  # train steps per tf.function call

    def validate(self) -> None:
        _at_least("steps_per_execution", self.steps_per_execution, 1)
        from rae_keras.schemes import SCHEMES  # deferred: schemes.py imports this module

        SCHEMES.lookup(self.scheme)
        _one_of("learning_rate_schedule", self.learning_rate_schedule, LEARNING_RATE_SCHEDULES)
        _at_least("finetune_epochs", self.finetune_epochs, 0)
        _at_least("epochs", self.epochs, 1)
        _at_least("batch_size", self.batch_size, 1)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if any(not math.isfinite(w) or w < 0 for w in self.level_weights) or (
                self.level_weights and not any(self.level_weights)):
            raise ConfigError(f"level_weights must be finite, >= 0 and not all 0, got "
                              f"{list(self.level_weights)}")
        _at_least("summary_images", self.summary_images, 0)
        _at_least("seed", self.seed, 0)


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
    """How to place training; not part of what a run *is* (a run may resume elsewhere)."""
    strategy: str = "auto"
    cpu_devices: int = 0  # >1: split the CPU into this many logical devices

    def validate(self) -> None:
        _one_of("strategy", self.strategy, STRATEGIES)
        _at_least("cpu_devices", self.cpu_devices, 0)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    model_dir: str = "runs/run"
    export_dir: str = ""  # empty: do not export
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    distribute: DistributeConfig = DistributeConfig()
    # Written by `fit`: what exactly was trained, so a run directory refuses other data
    # or another network, and `load` can rebuild the model (its Keras config, as JSON).
    data_fingerprint: str = ""
    model_fingerprint: str = ""
    keras_model: str = ""

    def validate(self) -> "RunConfig":
        self.distribute.validate()
        self.data.validate()
        if self.data.dataset != ARRAYS:  # a Python model describes itself (keras_model)
            self.model.validate(self.data.image_size)
        self.train.validate()
        if self.train.level_weights and len(self.train.level_weights) != self.model.num_stages:
            raise ConfigError(f"level_weights has {len(self.train.level_weights)} values for "
                              f"{self.model.num_stages} levels (one per stage)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_fingerprint(self) -> dict:
        """The settings a resumed run must share with the one it continues."""
        d = self.to_dict()
        for key in ("name", "model_dir", "export_dir", "distribute", "keras_model"):
            d.pop(key)
        for key in ("steps_per_execution", "cache_frozen_prefix"):  # speed knobs only
            d["train"].pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """The inverse of to_dict; missing fields take their defaults (older versions
        did not write fields added since)."""
        return _from_dict(cls, d)


def _check_keras_name(what: str, name: str) -> None:
    """Unknown Keras identifiers fail here, by name, not deep inside model building."""
    import keras  # deferred: flags are parsed into configs before Keras is needed

    lookup, example = {"activation": (keras.activations.get, "selu"),
                       "kernel_initializer": (keras.initializers.get, "lecun_normal")}[what]
    try:
        lookup(name)
    except (ValueError, TypeError):
        raise ConfigError(f"unknown {what} {name!r}; give a Keras {what.replace('_', ' ')} "
                          f"name such as {example!r}") from None


def _from_dict(klass, values: Mapping[str, Any]):
    """`klass(**values)`, rebuilding the nested configs and JSON's lists as tuples."""
    kwargs = {}
    for field in dataclasses.fields(klass):
        if field.name in values:
            value = values[field.name]
            if dataclasses.is_dataclass(field.default):
                value = _from_dict(type(field.default), value)
            kwargs[field.name] = tuple(value) if isinstance(value, list) else value
    return klass(**kwargs)


def _one_of(what: str, name: str, choices: Tuple[str, ...]) -> None:
    if name not in choices:
        raise ConfigError(f"unknown {what} {name!r}; expected one of {choices}")


def _at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def _per_stage(sizes: Tuple[int, ...], stage: int) -> int:
    """One value for every stage, or one per stage (`ModelConfig.validate` checks which)."""
    return sizes[0] if len(sizes) == 1 else sizes[stage - 1]
