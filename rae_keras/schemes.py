"""Training schemes as lists of *phases*, and the one registry of schemes.

A phase is one `fit`: which layers train, what objective they minimise, for how many
epochs. A scheme is a function from the autoencoder and the training config to its
phases. The training loop, checkpoints and resume only see phases, so every scheme
gets resume, summaries, distribution and export for free.

Adding a scheme is one function decorated with `@register_scheme("name")`: config
validation, the `--scheme` flag, `fit` and the tests' scheme contract
(`rae_keras.contracts.check_scheme`) all read `SCHEMES`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Sequence

import keras

from rae_keras import objectives
from rae_keras.config import Registry, TrainConfig
from rae_keras.models import StagedAutoencoder, leaf_layers
from rae_keras.objectives import (InterleavedTrainer, OptimizerFactory, ReconstructionTrainer,
                                  Trainer)

Scheme = Callable[[StagedAutoencoder, TrainConfig], List["Phase"]]
SCHEMES: Registry[Scheme] = Registry("scheme")
register_scheme = SCHEMES.register


@dataclasses.dataclass
class Phase:
    name: str
    epochs: int
    depth: int  # deepest stage this phase reconstructs through
    objective: keras.Model
    # None: every layer trains; otherwise exactly these (the rest are frozen).
    trainable: Optional[Sequence[keras.layers.Layer]] = None
    level_weights: Optional[Sequence[float]] = None
    show_depths: bool = False  # TensorBoard: a grid of reconstructions at depths 1..depth
    input_depth: int = 0  # the objective consumes h_input_depth (0: images)
    # A trainer other than ReconstructionTrainer(objective), e.g. the interleaved one.
    make_trainer: Optional[Callable[[], Trainer]] = None
    note: str = ""  # how the phase trains, when `trainable` does not say it all

    def build_trainer(self, make_optimizer: OptimizerFactory,
                      steps_per_execution: int = 1) -> Trainer:
        """A compiled trainer with fresh optimizer state (call after set_trainable)."""
        trainer = (self.make_trainer() if self.make_trainer is not None else
                   ReconstructionTrainer(self.objective, self.level_weights,
                                         name=f"{self.name}_trainer"))
        return trainer.compile_fresh(make_optimizer, steps_per_execution)

    def describe(self, autoencoder: StagedAutoencoder) -> str:
        """One line for the log: the layers that train and the frozen ones."""
        if self.note:
            return f"{self.name}: {self.epochs} epoch(s); {self.note}"
        layers = autoencoder.stage_leaf_layers()
        if self.input_depth:  # a cached prefix: those layers do not run at all
            cached = {id(l) for k in range(1, self.input_depth + 1)
                      for l in autoencoder.stage_layers(k)}
            used = [l for l in layers if id(l) not in cached]
            frozen = f"e1..e{self.input_depth} (h{self.input_depth} cached)"
        else:
            used = layers
            frozen = ", ".join(l.name for l in used if not l.trainable and self._runs(l)) or "-"
        training = ", ".join(l.name for l in used if l.trainable and self._runs(l)) or "-"
        return f"{self.name}: {self.epochs} epoch(s); training {training}; frozen {frozen}"

    def _runs(self, layer: keras.layers.Layer) -> bool:
        """Whether `layer` is computed by this phase's objective at all."""
        return any(layer is leaf for top in self.objective.layers for leaf in leaf_layers(top))


@register_scheme("stacked")
def stacked(autoencoder: StagedAutoencoder, config: TrainConfig) -> List[Phase]:
    """The baseline: the whole autoencoder end to end, every layer trainable."""
    return [_end_to_end("end_to_end", autoencoder, config.epochs)]


@register_scheme("recursive")
def recursive(autoencoder: StagedAutoencoder, config: TrainConfig) -> List[Phase]:
    """The paper: stage k fits d_k(e_k(h_(k-1))) to h_(k-1), with e_1..e_(k-1) frozen.
    With `cache_frozen_prefix`, stage k trains on h_(k-1) computed once."""
    phases = []
    for k in range(1, autoencoder.num_stages + 1):
        cached = config.cache_frozen_prefix and k > 1
        objective = objectives.stage_objective(autoencoder, k, on_activation=cached)
        phases.append(Phase(f"stage_{k}", config.epochs, k, objective,
                            trainable=autoencoder.stage_layers(k), show_depths=True,
                            input_depth=k - 1 if cached else 0))
    return phases


@register_scheme("recursive_interleaved")
def recursive_interleaved(autoencoder: StagedAutoencoder, config: TrainConfig) -> List[Phase]:
    """The original code's schedule: every batch, one step per stage in turn."""
    n = autoencoder.num_stages

    def make_trainer() -> Trainer:
        return InterleavedTrainer(
            prefixes=[None] + [autoencoder.encoder(k - 1) for k in range(2, n + 1)],
            objectives=[objectives.stage_objective(autoencoder, k, on_activation=True)
                        for k in range(1, n + 1)],
            stage_variables=[[v for layer in autoencoder.stage_layers(k)
                              for v in layer.trainable_weights] for k in range(1, n + 1)])

    return [Phase("interleaved", config.epochs, n, objectives.full_objective(autoencoder),
                  show_depths=True, make_trainer=make_trainer,
                  note="every batch, stage k = 1..N in turn updates only e_k, d_k "
                       "(own optimizer; e_1..e_(k-1) frozen for that step)")]


@register_scheme("recursive_finetune")
def recursive_finetune(autoencoder: StagedAutoencoder, config: TrainConfig) -> List[Phase]:
    """`recursive`, then `finetune_epochs` of end-to-end training of the assembled model."""
    return _recursive_then(autoencoder, config, lambda: _end_to_end(
        "finetune", autoencoder, config.finetune_epochs))


@register_scheme("recursive_depths")
def recursive_depths(autoencoder: StagedAutoencoder, config: TrainConfig) -> List[Phase]:
    """`recursive`, then `finetune_epochs` of the whole model on the image loss of every
    depth k (e_1..e_k, d_k..d_1), weighted by `level_weights` (depths 1..N; default all 1):
    the deep path improves end to end while the shallow depths stay autoencoders."""
    return _recursive_then(autoencoder, config, lambda: _depth_finetune(
        autoencoder, config, objectives.depth_objective(autoencoder),
        config.level_weights or None))


@register_scheme("recursive_depths_routed")
def recursive_depths_routed(autoencoder: StagedAutoencoder, config: TrainConfig) -> List[Phase]:
    """`recursive_depths` at about half the fine-tune cost: each example trains the full
    depth and one shallow depth, in turn (`objectives.RoutedDepthObjective`)."""
    routed_weight = float(max(autoencoder.num_stages - 1, 1))
    return _recursive_then(autoencoder, config, lambda: _depth_finetune(
        autoencoder, config, objectives.RoutedDepthObjective(autoencoder), (1.0, routed_weight)))


@register_scheme("joint")
def joint(autoencoder: StagedAutoencoder, config: TrainConfig) -> List[Phase]:
    """One model, a loss at every level: the decoder path from the code against the
    encoder activation it mirrors (targets without gradient)."""
    return [Phase("joint", config.epochs, autoencoder.num_stages,
                  objectives.joint_objective(autoencoder), level_weights=config.level_weights or None,
                  show_depths=True)]


def _recursive_then(autoencoder: StagedAutoencoder, config: TrainConfig,
                    make_finetune: Callable[[], Phase]) -> List[Phase]:
    """`recursive`'s stages, then the phase `make_finetune` builds (none with 0 epochs)."""
    phases = recursive(autoencoder, config)
    if config.finetune_epochs:
        phases.append(make_finetune())
    return phases


def _depth_finetune(autoencoder: StagedAutoencoder, config: TrainConfig,
                    objective: keras.Model, level_weights) -> Phase:
    return Phase("depth_finetune", config.finetune_epochs, autoencoder.num_stages, objective,
                 level_weights=level_weights, show_depths=True)


def _end_to_end(name: str, autoencoder: StagedAutoencoder, epochs: int) -> Phase:
    return Phase(name, epochs, autoencoder.num_stages, objectives.full_objective(autoencoder))


def phases_for(autoencoder: StagedAutoencoder, config: TrainConfig) -> List[Phase]:
    return SCHEMES.lookup(config.scheme)(autoencoder, config)
