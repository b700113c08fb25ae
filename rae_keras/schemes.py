"""Training schemes as lists of *phases*.

A phase is one `fit`: which layers train, what objective they minimise, for how many
epochs. A scheme is a function from the autoencoder and the training config to its
phases. The training loop, checkpoints and resume only see phases, so a new scheme
(interleaved, fine-tune, joint) is one function in `SCHEMES`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import keras

from rae_keras.architecture import Autoencoder
from rae_keras.config import TrainConfig
from rae_keras.objectives import ReconstructionTrainer


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

    def build_trainer(self) -> keras.Model:
        return ReconstructionTrainer(self.objective, self.level_weights, name=f"{self.name}_trainer")


def stacked(autoencoder: Autoencoder, config: TrainConfig) -> List[Phase]:
    """The baseline: the whole autoencoder end to end, every layer trainable."""
    return [Phase("end_to_end", config.epochs, autoencoder.num_stages,
                  autoencoder.full_objective())]


def recursive(autoencoder: Autoencoder, config: TrainConfig) -> List[Phase]:
    """The paper: stage k fits d_k(e_k(h_(k-1))) to h_(k-1), with e_1..e_(k-1) frozen.
    With `cache_frozen_prefix`, stage k trains on h_(k-1) computed once."""
    phases = []
    for k in range(1, autoencoder.num_stages + 1):
        cached = config.cache_frozen_prefix and k > 1
        objective = (autoencoder.stage_objective_on_activation(k) if cached
                     else autoencoder.stage_objective(k))
        phases.append(Phase(f"stage_{k}", config.epochs, k, objective,
                            trainable=autoencoder.stage_layers(k), show_depths=True,
                            input_depth=k - 1 if cached else 0))
    return phases


SCHEMES: Dict[str, Callable[[Autoencoder, TrainConfig], List[Phase]]] = {
    "stacked": stacked,
    "recursive": recursive,
}


def phases_for(autoencoder: Autoencoder, config: TrainConfig) -> List[Phase]:
    try:
        scheme = SCHEMES[config.scheme]
    except KeyError:
        raise ValueError(f"unknown scheme {config.scheme!r}; expected one of {sorted(SCHEMES)}")
    return scheme(autoencoder, config)
