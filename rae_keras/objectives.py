"""A Keras model that trains an *objective*: a functional model whose outputs are
(prediction, target) pairs, flattened as [p_1, t_1, p_2, t_2, ...], with loss sum_i w_i * MSE(prediction_i, target_i).

Recursive stages need it because their target, h_(k-1), is computed by the
network itself (through the frozen encoders), not supplied by the data set. Targets
never receive gradient. Losses are Keras `Loss` objects, so under a tf.distribute
strategy they are scaled per replica the way Keras' own compiled losses are.
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
        self._mse = keras.losses.MeanSquaredError()

    def call(self, images, training=False):
        return self.objective(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del x, y, training  # the targets are part of y_pred
        total = 0.0
        outputs = list(y_pred)
        for weight, prediction, target in zip(self.level_weights, outputs[0::2], outputs[1::2]):
            target = tf.stop_gradient(tf.cast(target, tf.float32))
            total += weight * self._mse(target, tf.cast(prediction, tf.float32), sample_weight)
        return total
