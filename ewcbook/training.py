"""Training with penalties through ``model.fit``.

:class:`ContinualModel` wraps any Keras model and adds the sum of its
penalties to the loss in Keras' own training step, so ``fit`` keeps its
progress bar, callbacks and ``History``; the penalty is logged as its own
metric, ``penalty``.

    learner = ContinualModel(mlp())
    learner.compile(optimizer="adam", loss=..., metrics=["accuracy"])
    learner.fit(task_a.dataset("train"), epochs=6)
    learner.penalties = [EWC(learner, diagonal_fisher(learner, data_a), strength=100)]
    learner.fit(task_b.dataset("train"), epochs=6)   # logs loss, accuracy, penalty
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops ``fit`` with :class:`NonFiniteLossError` at the first batch whose
    loss is NaN or infinite, instead of carrying on with ruined weights."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            penalties = getattr(self.model, "penalties", [])
            raise NonFiniteLossError(
                f"the training loss became {float(loss)} at batch {batch}; the weights are no "
                f"longer usable. Penalties in use: {penalties or 'none'}. A very large penalty "
                "strength or learning rate is the usual cause: lower it and train again."
            )


class ContinualModel(keras.Model):
    """A Keras model whose training loss is the task's loss plus penalties.

    Args:
        network: the Keras model that maps inputs to logits. Its variables
            are this model's variables (nothing is copied).
        penalties: callables returning a scalar tensor, such as
            :class:`ewcbook.penalties.EWC`; their sum is added to the loss.

    Set :attr:`penalties` between tasks; the training step is rebuilt for the
    new list. ``fit`` always adds :class:`StopOnNonFiniteLoss`.
    """

    def __init__(self, network: keras.Model, penalties=(), **kwargs):
        if not isinstance(network, keras.Model):
            raise TypeError(f"network must be a keras.Model, got {type(network).__name__}")
        super().__init__(name=kwargs.pop("name", f"continual_{network.name}"), **kwargs)
        self.network = network
        self.penalty_tracker = keras.metrics.Mean(name="penalty")
        self._penalties = []
        self.penalties = penalties
        if network.built:
            self.build(network.inputs[0].shape if getattr(network, "inputs", None) else None)

    def build(self, input_shape=None):
        self.built = True

    @property
    def penalties(self) -> list:
        return list(self._penalties)

    @penalties.setter
    def penalties(self, penalties) -> None:
        penalties = list(penalties)
        for p in penalties:
            if not callable(p):
                raise TypeError(f"penalties must be callables returning a scalar, got {type(p).__name__}")
        self._penalties = penalties
        # the traced training and evaluation steps captured the old list (prediction has no penalty)
        self.train_function = self.test_function = None

    def call(self, x, training=False):
        return self.network(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        penalty = tf.add_n([p() for p in self._penalties]) if self._penalties else tf.constant(0.0)
        self.penalty_tracker.update_state(penalty)
        return loss + penalty

    def fit(self, *args, callbacks=None, **kwargs):
        callbacks = list(callbacks or []) + [StopOnNonFiniteLoss()]
        return super().fit(*args, callbacks=callbacks, **kwargs)
