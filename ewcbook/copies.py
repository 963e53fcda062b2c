"""Many copies of a small network trained side by side, as one Keras model.

A λ sweep trains the same network many times from the same weights, each
time with another penalty. One 784-128-5 MLP leaves two CPU cores mostly
idle; K copies whose Dense kernels are stacked into one tensor per layer run
as one large matmul (first layer) and one batched matmul (later layers). The
loss is the *sum* of the copies' losses and penalties, so the gradient of
copy k's weights is the gradient it would have alone, and Adam, being
elementwise, moves each copy exactly as it would move alone (up to float
rounding): every copy sees the same batches in the same order as
:func:`ewcbook.training.fit_task` with the same ``seed``. For example::

    stacked = train_copies(learner.network, task_b, [(0.0, None), (1.0, None), (100.0, fisher)], epochs=6)
    copy_accuracies(stacked, [task_a, task_b])     # one row per copy

Each copy's penalty is λ_k/2 Σ w_k (θ_k − θ*)², anchored at the starting
weights θ*: ``(λ, None)`` is the L2 anchor (w = 1), ``(λ, fisher)`` EWC with
that Fisher, ``(0.0, None)`` no penalty. Side by side, they are one diagonal
quadratic over the stacked weights with importance λ_k w_k.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import integer, real
from ewcbook.data import Task, check_tasks
from ewcbook.evaluation import count_correct
from ewcbook.models import dense_layers, dense_stack
from ewcbook.optimizers import FusedAdam
from ewcbook.penalties import Penalty, importance_arrays
from ewcbook.training import ContinualModel


class StackedDense(keras.layers.Layer):
    """``copies`` independent Dense layers applied side by side.

    The first layer of a stack (``first=True``) takes the shared input
    ``(batch, in)`` and keeps its kernel as ``(in, copies, units)``, so all
    copies are one matmul; later layers map ``(copies, batch, in)`` to
    ``(copies, batch, units)`` with a batched matmul.
    """

    def __init__(self, copies: int, units: int, activation=None, first: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.copies, self.units, self.first = copies, units, first
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        shape = (fan_in, self.copies, self.units) if self.first else (self.copies, fan_in, self.units)
        self.kernel = self.add_weight(shape=shape, initializer="zeros", name="kernel")
        self.bias = self.add_weight(shape=(self.copies, self.units), initializer="zeros", name="bias")

    def call(self, x):
        if self.first:
            z = tf.matmul(x, tf.reshape(self.kernel, [tf.shape(self.kernel)[0], -1]))
            z = tf.transpose(tf.reshape(z, [-1, self.copies, self.units]), [1, 0, 2])
        else:
            z = tf.matmul(x, self.kernel)
        return self.activation(z + self.bias[:, None, :])


def stack_network(network: keras.Model, copies: int) -> keras.Model:
    """A model of ``copies`` copies of ``network`` (a Sequential of Flatten and
    Dense layers, such as :func:`ewcbook.models.mlp`), each starting from
    ``network``'s current weights. Its output is logits ``(copies, batch, classes)``.
    """
    steps = dense_stack(network) if isinstance(network, keras.Sequential) and network.built else None
    if not steps or any(kind == "act" or (kind == "dense" and not layer.use_bias) for kind, layer in steps):
        raise TypeError(
            "network must be a built keras.Sequential of Flatten, Dropout and Dense layers with biases, "
            f"got {network!r}"
        )
    copies = integer(copies, "copies", minimum=1)
    dense = dense_layers(steps)
    layers = [keras.Input(shape=network.inputs[0].shape[1:]), keras.layers.Flatten()]
    for k, layer in enumerate(dense):
        layers.append(StackedDense(copies, layer.units, layer.activation, first=k == 0, name=layer.name))
    stacked = keras.Sequential(layers, name=f"{network.name}_x{copies}")
    values = []
    for k, layer in enumerate(dense):
        kernel, bias = layer.get_weights()
        axis = 1 if k == 0 else 0
        values += [np.repeat(np.expand_dims(kernel, axis), copies, axis), np.tile(bias, (copies, 1))]
    stacked.set_weights(values)
    return stacked


def stacked_layers(stacked: keras.Model) -> list[StackedDense]:
    """The :class:`StackedDense` layers of a stack, in order."""
    return [layer for layer in stacked.layers if isinstance(layer, StackedDense)]


def copy_weights(stacked: keras.Model, k: int) -> list[np.ndarray]:
    """The weights of copy ``k``, in the order of the original network's ``get_weights()``."""
    weights = []
    for layer in stacked_layers(stacked):
        kernel = layer.kernel.numpy()
        weights += [kernel[:, k] if layer.first else kernel[k], layer.bias.numpy()[k]]
    return weights


class _StackedLearner(ContinualModel):
    """The loss of a stack: Σ_k (mean cross-entropy of copy k), plus its penalty."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = tf.broadcast_to(tf.cast(y, tf.int32), tf.shape(y_pred)[:2])
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)
        loss = tf.reduce_sum(tf.reduce_mean(ce, axis=1))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if self._penalties and training:
            penalty = tf.add_n([p() for p in self._penalties])
            self.penalty_tracker.update_state(penalty)
            loss += penalty
        return loss / replicas


def train_copies(
    network: keras.Model,
    task: Task,
    penalties,
    *,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    steps_per_execution: int = 32,
) -> keras.Model:
    """Train one copy of ``network`` per entry of ``penalties`` on ``task``, side by side.

    Args:
        network: the starting point of every copy (left unchanged).
        task: the task to train on.
        penalties: one ``(strength, importance)`` per copy; ``importance`` is
            ``None`` (every weight 1: the L2 anchor) or one array per
            trainable variable of ``network`` (a Fisher: EWC).
        epochs, batch_size, learning_rate, seed, steps_per_execution: as in
            :func:`ewcbook.training.fit_task` (a fresh Adam).

    Returns:
        The trained stack: :func:`copy_accuracies` evaluates it,
        :func:`copy_weights` takes one copy out.
    """
    penalties = list(penalties)
    if not penalties:
        raise ValueError("penalties must hold one (strength, importance) pair per copy, got none")
    strengths, importances = [], []
    for entry in penalties:
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise TypeError(f"penalties must be (strength, importance) pairs, got {entry!r:.60}")
        strength, importance = entry
        strength = real(strength, "penalties' strengths", low=0.0)
        ones = [np.ones(v.shape, np.float32) for v in network.trainable_variables]
        w = ones if importance is None else importance_arrays(importance, network.trainable_variables, "importance")
        strengths.append(strength)
        importances.append(w)
    stacked = stack_network(network, len(penalties))
    learner = _StackedLearner(stacked)
    if any(strengths):
        stacked_importance = []
        for k in range(len(network.trainable_variables)):
            axis = 1 if k == 0 else 0  # the first kernel is (in, copies, units)
            stacked_importance.append(np.stack([s * w[k] for s, w in zip(strengths, importances)], axis=axis))
        learner.penalties = [Penalty(stacked, 1.0, stacked_importance)]
    learner.compile(optimizer=FusedAdam(learning_rate), steps_per_execution=steps_per_execution)
    learner.fit(task.dataset("train", batch_size=batch_size, seed=seed), epochs=epochs, verbose=0, shuffle=False)
    return stacked


def copy_accuracies(stacked: keras.Model, tasks, split: str = "test") -> np.ndarray:
    """Accuracy of every copy of ``stacked`` on every task: shape (copies, tasks)."""
    tasks = check_tasks(tasks)
    return np.stack([count_correct(stacked, task, split)[0] / len(task.arrays(split)[1]) for task in tasks], axis=1)
