"""A Keras model that trains an *objective*: a functional model whose outputs are
(prediction, target) pairs, flattened as [p_1, t_1, p_2, t_2, ...], with loss sum_i w_i * MSE(prediction_i, target_i).

Recursive stages need it because their target, h_(k-1), is computed by the
network itself (through the frozen encoders), not supplied by the data set. Targets
never receive gradient.

One formula serves `fit` and the custom distributed loop: the per-example loss,
averaged with `tf.nn.compute_average_loss`, which divides by the *global* batch
(per-replica batch x replicas in sync). Summed over replicas by the optimizer's
all-reduce, that is the gradient of the global mean; a plain per-replica mean would
multiply the gradient by the number of replicas.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf


class ReconstructionTrainer(keras.Model):
    """Fits `objective`; `model.fit(images)` needs no labels."""

    def __init__(self, objective: keras.Model, level_weights: Optional[Sequence[float]] = None,
                 **kwargs):
        super().__init__(name=kwargs.pop("name", f"{objective.name}_trainer"), **kwargs)
        self.objective = objective
        num_pairs = len(objective.outputs) // 2
        self.level_weights = tuple(level_weights) if level_weights else (1.0,) * num_pairs
        if len(self.level_weights) != num_pairs:
            raise ValueError(
                f"{len(self.level_weights)} level weights for {num_pairs} (prediction, target) pairs")

    def call(self, images, training=False):
        return self.objective(images, training=training)

    def per_example_loss(self, outputs) -> tf.Tensor:
        """[batch] float32: sum over levels of w_i * MSE(prediction_i, target_i)."""
        outputs = list(outputs)
        total = 0.0
        for weight, prediction, target in zip(self.level_weights, outputs[0::2], outputs[1::2]):
            target = tf.stop_gradient(tf.cast(target, tf.float32))
            squared = tf.square(tf.cast(prediction, tf.float32) - target)
            total += weight * tf.reduce_mean(squared, axis=tf.range(1, tf.rank(squared)))
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del x, y, sample_weight, training  # the targets are part of y_pred
        return tf.nn.compute_average_loss(self.per_example_loss(y_pred))
