"""A Keras model that trains an *objective*: a functional model whose outputs are
(prediction, target) pairs, flattened as [p_1, t_1, p_2, t_2, ...], with loss sum_i w_i * MSE(prediction_i, target_i).

Recursive stages need it because their target, h_(k-1), is computed by the
network itself (through the frozen encoders), not supplied by the data set. Targets
never receive gradient.

`Trainer` is the contract of every phase's trainer (this one and the interleaved one):
the training loop, the custom distributed loop and checkpoints use nothing else.

One formula serves `fit` and the custom distributed loop: the per-example loss,
averaged with `tf.nn.compute_average_loss`, which divides by the *global* batch
(per-replica batch x replicas in sync). Summed over replicas by the optimizer's
all-reduce, that is the gradient of the global mean; a plain per-replica mean would
multiply the gradient by the number of replicas.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import keras
import tensorflow as tf

OptimizerFactory = Callable[[], keras.optimizers.Optimizer]


def pair_losses(outputs, level_weights: Sequence[float]) -> tf.Tensor:
    """[batch] float32: sum over levels of w_i * MSE(prediction_i, target_i) for outputs
    flattened as [p_1, t_1, p_2, t_2, ...]. Targets get no gradient."""
    outputs = list(outputs)
    if len(outputs) != 2 * len(level_weights):
        raise ValueError(f"{len(level_weights)} level weights for {len(outputs) // 2} "
                         "(prediction, target) pairs")
    total = 0.0
    for weight, prediction, target in zip(level_weights, outputs[0::2], outputs[1::2]):
        target = tf.stop_gradient(tf.cast(target, tf.float32))
        squared = tf.square(tf.cast(prediction, tf.float32) - target)
        total += weight * tf.reduce_mean(squared, axis=tf.range(1, tf.rank(squared)))
    return total


# ----------------------------------------------------------------------- objectives
# Functional models over a StagedAutoencoder's layers (cached on the model), whose
# outputs are the flat [prediction, target, ...] pairs a ReconstructionTrainer fits.
def _activations(model, x) -> list:
    """[h_0 = x, h_1, ..., h_N]: every encoder activation, each encoder run once."""
    activations = [x]
    for k in range(1, model.num_stages + 1):
        activations.append(model.encode_path(activations[-1], k - 1, k))
    return activations


def stage_objective(model, stage: int, on_activation: bool = False) -> keras.Model:
    """Stage k: [decoders[k-1](encoders[k-1](h_(k-1))), h_(k-1)]. Its input is the image,
    or with `on_activation` h_(k-1) itself (computed once by a frozen, cached prefix)."""
    start = stage - 1 if on_activation else 0

    def build(inputs):
        target = model.encode_path(inputs, start, stage - 1)
        return [model.decode_path(model.encode_path(target, stage - 1, stage), stage, stage - 1),
                target]

    name = f"stage_{stage}_objective" + (f"_on_h{stage - 1}" if on_activation else "")
    return model.objective(name, build, input_depth=start)


def full_objective(model) -> keras.Model:
    """[x_hat, x]: the end-to-end reconstruction loss."""
    n = model.num_stages
    return model.objective("full_objective",
                           lambda x: [model.decode_path(model.encode_path(x, 0, n), n, 0), x])


def joint_objective(model) -> keras.Model:
    """[r_0, h_0, r_1, h_1, ..., r_(N-1), h_(N-1)] (level 0 = the input): r_(k-1) =
    decoders[k-1](r_k) is the decoder path from the code (r_N = h_N), h_(k-1) the encoder
    activation it mirrors."""
    n = model.num_stages

    def build(x):
        activations = _activations(model, x)
        pairs, r = {}, activations[-1]
        for k in range(n, 0, -1):
            r = model.decode_path(r, k, k - 1)
            pairs[k - 1] = [r, activations[k - 1]]
        return [t for level in range(n) for t in pairs[level]]

    return model.objective("joint_objective", build)


def depth_objective(model) -> keras.Model:
    """[x_hat_1, x, x_hat_2, x, ..., x_hat_N, x]: the image as reconstructed from every
    depth k (e_1..e_k, d_k..d_1), so one loss keeps every depth an autoencoder of the
    image. The encoder runs once; decoder d_1 runs N times."""
    n = model.num_stages

    def build(x):
        activations = _activations(model, x)
        return [t for k in range(1, n + 1) for t in (model.decode_path(activations[k], k, 0), x)]

    return model.objective("depth_objective", build)


class RoutedDepthObjective(keras.Model):
    """[x_hat_N, x, r, x]: the full reconstruction, and r, each example reconstructed
    from one shallow depth k < N in turn (example i of a batch from depth 1 + i mod
    (N-1)). Every shallow depth is trained on every step at the cost of about one
    extra decoder pass, where `depth_objective` pays N-1 of them. With routed weight
    N-1 the expected loss equals `depth_objective`'s with weights 1 for depths < N."""

    def __init__(self, autoencoder, **kwargs):
        super().__init__(name=kwargs.pop("name", "routed_depth_objective"), **kwargs)
        self.autoencoder = autoencoder

    def call(self, x, training=None):
        model, n = self.autoencoder, self.autoencoder.num_stages
        activations = _activations(model, x)
        full = model.decode_path(activations[n], n, 0)
        if n == 1:
            return [full, x, full, x]
        batch = tf.shape(x)[0]
        # Batches smaller than N-1 (a last partial batch) leave the deeper groups empty.
        indices = [tf.range(tf.minimum(k - 1, batch), batch, n - 1) for k in range(1, n)]
        routed = tf.dynamic_stitch(indices, [
            model.decode_path(tf.gather(activations[k], indices[k - 1]), k, 0)
            for k in range(1, n)])
        return [full, x, tf.reshape(routed, tf.shape(x)), x]


def _apply(optimizer: keras.optimizers.Optimizer, loss: tf.Tensor, tape: tf.GradientTape,
           variables: List[keras.Variable]) -> None:
    scaled = optimizer.scale_loss(loss)  # loss scaling under mixed_float16
    optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))


class Trainer(keras.Model):
    """What the training loop, checkpoints and the custom distributed loop rely on: a
    phase's trainer is one of these, and nothing outside it touches its optimizers.

    Keras `fit` runs `train_step`/`test_step`; the custom loop runs
    `replica_train_step` under `strategy.run` and `per_example_loss_for` for
    validation; checkpoints save and restore `optimizer_variables()`.
    """

    def compile_fresh(self, make_optimizer: OptimizerFactory,
                      steps_per_execution: int = 1) -> "Trainer":
        """Compiles with new optimizers from `make_optimizer` (each phase starts with
        fresh optimizer state; call after setting `trainable`: Keras reads it here)."""
        raise NotImplementedError

    def per_example_loss_for(self, images, training: bool = False) -> tf.Tensor:
        """[batch] float32 loss of each example (what validation averages)."""
        raise NotImplementedError

    def replica_train_step(self, images) -> tf.Tensor:
        """One optimizer step on one replica's batch; its share of the global mean loss
        (`tf.nn.compute_average_loss`), so the sum over replicas is the mean."""
        raise NotImplementedError

    def optimizer_variables(self) -> List[keras.Variable]:
        """Every optimizer's state variables in a fixed order, built if needed."""
        raise NotImplementedError


class ReconstructionTrainer(Trainer):
    """Fits `objective`; `model.fit(images)` needs no labels."""

    def __init__(self, objective: keras.Model, level_weights: Optional[Sequence[float]] = None,
                 **kwargs):
        super().__init__(name=kwargs.pop("name", f"{objective.name}_trainer"), **kwargs)
        self.objective = objective
        self.level_weights = (tuple(level_weights) if level_weights else
                              (1.0,) * (len(objective.outputs) // 2))

    def call(self, images, training=False):
        return self.objective(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del x, y, sample_weight, training  # the targets are part of y_pred
        return tf.nn.compute_average_loss(pair_losses(y_pred, self.level_weights))

    # ------------------------------------------------------------- Trainer
    def compile_fresh(self, make_optimizer: OptimizerFactory,
                      steps_per_execution: int = 1) -> "ReconstructionTrainer":
        self.compile(optimizer=make_optimizer(), steps_per_execution=steps_per_execution)
        return self

    def per_example_loss_for(self, images, training: bool = False) -> tf.Tensor:
        return pair_losses(self(images, training=training), self.level_weights)

    def replica_train_step(self, images) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(self.per_example_loss_for(images, training=True))
        _apply(self.optimizer, loss, tape, self.trainable_variables)
        return loss

    def optimizer_variables(self) -> List[keras.Variable]:
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        return list(self.optimizer.variables)


class InterleavedTrainer(Trainer):
    """The original research code's schedule: every batch, one step of each stage k in
    turn (k = 1..N), each with its own optimizer and updating only its own layers.

    Stage k sees h_(k-1) from e_1..e_(k-1) run in inference mode (they are frozen *for
    that step*: frozen BatchNormalization uses its moving statistics), then trains
    e_k, d_k on MSE(d_k(e_k(h_(k-1))), h_(k-1)). The reported loss is the sum of the
    stage losses.
    """

    def __init__(self, prefixes: Sequence[Optional[keras.Model]],
                 objectives: Sequence[keras.Model],
                 stage_variables: Sequence[List[keras.Variable]], **kwargs):
        super().__init__(name=kwargs.pop("name", "interleaved_trainer"), **kwargs)
        self.prefixes = list(prefixes)  # None for stage 1: its input is the image
        self.objectives = list(objectives)
        self.stage_variables = [list(v) for v in stage_variables]
        self.stage_optimizers: List[keras.optimizers.Optimizer] = []  # by compile_fresh
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, images, training=False):
        return [objective(images if prefix is None else prefix(images, training=False),
                          training=training)
                for prefix, objective in zip(self.prefixes, self.objectives)]

    def _stage_input(self, k: int, images):
        prefix = self.prefixes[k]
        return images if prefix is None else prefix(images, training=False)

    # ------------------------------------------------------------- Trainer
    def compile_fresh(self, make_optimizer: OptimizerFactory,
                      steps_per_execution: int = 1) -> "InterleavedTrainer":
        """One optimizer per stage. Keras `fit` needs a compiled optimizer: stage 1's,
        so no extra optimizer builds slots for every variable."""
        self.stage_optimizers = [make_optimizer() for _ in self.objectives]
        self.compile(optimizer=self.stage_optimizers[0], steps_per_execution=steps_per_execution)
        return self

    def per_example_loss_for(self, images, training: bool = False) -> tf.Tensor:
        return tf.add_n([pair_losses(objective(self._stage_input(k, images), training=training),
                                     (1.0,))
                         for k, objective in enumerate(self.objectives)])

    def replica_train_step(self, images) -> tf.Tensor:
        total = 0.0
        for k, (objective, variables, optimizer) in enumerate(
                zip(self.objectives, self.stage_variables, self.stage_optimizers)):
            inputs = tf.stop_gradient(self._stage_input(k, images))  # after stage k-1's step
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(
                    pair_losses(objective(inputs, training=True), (1.0,)))
            _apply(optimizer, loss, tape, variables)
            total += loss
        return total

    def optimizer_variables(self) -> List[keras.Variable]:
        out = []
        for optimizer, variables in zip(self.stage_optimizers, self.stage_variables):
            if not optimizer.built:
                optimizer.build(variables)
            out += list(optimizer.variables)
        return out

    # ------------------------------------------------------------- Keras fit
    def train_step(self, data):
        loss = self.replica_train_step(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self.loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(data)[0])
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(
            tf.reduce_mean(self.per_example_loss_for(data, training=False)),
            sample_weight=tf.shape(data)[0])
        return {"loss": self.loss_tracker.result()}
