"""A custom distributed training loop, for where Keras `fit` cannot go.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy ("Invalid reduction dimension
0 for input with 0 dimensions", tensorflow#72388). This loop runs the trainer's own
step (`replica_train_step`: its loss averaged over the global batch) with
`strategy.run`; the Keras optimizer all-reduces the gradients across replicas. It
drives the same Keras callbacks (checkpoints, summaries, progress bar) as `fit`.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import tensorflow as tf


class DistributedLoop:
    def __init__(self, trainer: keras.Model, strategy: tf.distribute.Strategy,
                 steps_per_execution: int = 1):
        self.trainer = trainer
        self.strategy = strategy
        self.steps_per_execution = max(1, steps_per_execution)
        with strategy.scope():
            # Optimizer slots must exist before the step functions are traced.
            trainer.optimizer_variables()
        self._train_steps = tf.function(self._train_steps_fn)
        self._eval_step = tf.function(self._eval_step_fn)

    # ---------------------------------------------------------------- steps
    def _train_steps_fn(self, iterator, steps):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            per_replica = self.strategy.run(self.trainer.replica_train_step,
                                            args=(next(iterator),))
            # Each replica's loss is already divided by the global batch: sum = mean.
            total += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return total / tf.cast(steps, tf.float32)

    def _replica_eval_step(self, images):
        per_example = self.trainer.per_example_loss_for(images, training=False)
        return tf.reduce_sum(per_example), tf.cast(tf.shape(per_example)[0], tf.float32)

    def _eval_step_fn(self, images):
        total, count = self.strategy.run(self._replica_eval_step, args=(images,))
        return (self.strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None),
                self.strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None))

    # ---------------------------------------------------------------- fit
    def evaluate(self, dataset) -> float:
        total, count = 0.0, 0.0
        for images in self.strategy.experimental_distribute_dataset(dataset):
            batch_total, batch_count = self._eval_step(images)
            total += float(batch_total)
            count += float(batch_count)
        return total / max(count, 1.0)

    def fit(self, dataset: tf.data.Dataset, *, epochs: int, initial_epoch: int,
            steps_per_epoch: int, validation_data: Optional[tf.data.Dataset] = None,
            callbacks: Sequence[keras.callbacks.Callback] = (), verbose: int = 2
            ) -> Dict[str, float]:
        """Like `Model.fit(dataset, epochs=..., initial_epoch=..., steps_per_epoch=...)`:
        `dataset` yields the batches of epochs initial_epoch..epochs-1 in order; or it is
        a function of a `tf.distribute.InputContext` giving each worker's own batches."""
        callback_list = keras.callbacks.CallbackList(
            list(callbacks), add_history=False, add_progbar=verbose != 0, verbose=verbose,
            epochs=epochs, steps=steps_per_epoch, model=self.trainer)
        iterator = iter(self.strategy.distribute_datasets_from_function(dataset)
                        if callable(dataset)
                        else self.strategy.experimental_distribute_dataset(dataset))
        logs: Dict[str, float] = {}
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            done, total = 0, 0.0
            while done < steps_per_epoch:
                steps = min(self.steps_per_execution, steps_per_epoch - done)
                callback_list.on_train_batch_begin(done)
                mean_loss = float(self._train_steps(iterator, tf.constant(steps)))
                total += mean_loss * steps
                done += steps
                callback_list.on_train_batch_end(done - 1, {"loss": total / done})
            logs = {"loss": total / done}
            if validation_data is not None:
                logs["val_loss"] = self.evaluate(validation_data)
            callback_list.on_epoch_end(epoch, logs)
        callback_list.on_train_end(logs)
        return logs
