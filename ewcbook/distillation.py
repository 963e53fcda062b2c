"""Learning without forgetting (Li & Hoiem 2016): keep the old model's answers, not its weights.

Where EWC anchors the weights, LwF anchors the function: while a new task
trains, the network's outputs on the *new task's* inputs are pulled towards
those of the network as it was before the task, through a distillation loss
(Hinton et al. 2015) on the output units of the earlier tasks::

    Ω(θ) = λ · T² · mean over the batch of Σ_h KL( softmax(z_old,h / T) ‖ softmax(z_h / T) )

for every head h (a slice of the logits: each earlier task's own units in
task-incremental learning, the units of every class seen so far in
class-incremental learning, the one shared output in domain-incremental
learning), z_old the old network's logits, T the temperature. The T² keeps
the gradient's scale independent of T. No old data is needed, only a copy of
the old network.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import check_model, real
from ewcbook.checks import units as check_units
from ewcbook.models import network_of, num_outputs


class LwF:
    """The distillation penalty of learning without forgetting.

    Args:
        model: the model right after training on a task (its network is
            copied: the teacher).
        strength: λ, the weight of the distillation loss against the task's
            loss (a finite float >= 0).
        heads: the output slices ``(start, stop)`` to distil, each a softmax
            of its own; ``None``: one head over every output.
        temperature: T > 0.

    Called by :class:`ewcbook.training.ContinualModel` with each batch's
    inputs and logits (``uses_batch``). :meth:`consolidate` makes the current
    network the teacher after a later task.
    """

    kind = "lwf"
    uses_batch = True

    def __init__(self, model: keras.Model, strength: float, heads=None, temperature: float = 2.0):
        network = network_of(check_model(model))
        self.variables = list(network.trainable_variables)
        self.strength = real(strength, "strength", low=0.0)
        self.temperature = real(temperature, "temperature", low=0.0, open_low=True)
        outputs = num_outputs(network)
        self.heads = check_heads(heads, outputs)
        # The traced training step reads the heads from this Variable of fixed shape (one row per possible
        # head, a 0/1 mask over the outputs; unused rows all 0), so a consolidation that changes the heads
        # reaches the step: the Python list self.heads only names them (config, repr).
        self.head_mask = tf.Variable(head_mask(self.heads, outputs), trainable=False)
        self.teacher = keras.models.clone_model(network)
        self.teacher.trainable = False
        self.teacher.set_weights(network.get_weights())
        self._network = network
        self.task_count = 1

    def __call__(self, x, logits) -> tf.Tensor:
        old = tf.cast(tf.stop_gradient(self.teacher(x, training=False)), tf.float32)
        t = self.temperature
        mask = self.head_mask.value()  # (heads, outputs)
        off = (mask - 1.0) * 1e9  # a unit outside a head: a logit of -1e9, a probability of exactly 0
        scaled_old = old[:, None, :] / t + off  # (batch, heads, outputs): each head a softmax of its own
        scaled_new = tf.cast(logits, tf.float32)[:, None, :] / t + off
        target = tf.nn.softmax(scaled_old)
        kl = target * (tf.nn.log_softmax(scaled_old) - tf.nn.log_softmax(scaled_new)) * mask
        per_head = tf.reduce_mean(tf.reduce_sum(kl, axis=-1), axis=0)  # KL(teacher ‖ student) per head
        total = tf.reduce_sum(per_head * tf.reduce_max(mask, axis=-1))  # unused rows count nothing
        return self.strength * t**2 * total

    def consolidate(self, heads=None) -> None:
        """Make the current network the teacher, distilling ``heads`` (``None``: keep the heads)."""
        if heads is not None:
            self.heads = check_heads(heads, num_outputs(self._network))
            self.head_mask.assign(head_mask(self.heads, num_outputs(self._network)))
        self.teacher.set_weights(self._network.get_weights())
        self.task_count += 1

    # --- saving (see ewcbook.state) ---
    def get_config(self) -> dict:
        return {"strength": self.strength, "temperature": self.temperature, "heads": [list(h) for h in self.heads],
                "task_count": self.task_count}

    def state_arrays(self) -> dict:
        return {f"teacher_{k}": w for k, w in enumerate(self.teacher.get_weights())}

    @classmethod
    def from_state(cls, model, config: dict, arrays: dict):
        penalty = cls(model, config["strength"], [tuple(h) for h in config["heads"]], config["temperature"])
        penalty.teacher.set_weights([arrays[f"teacher_{k}"] for k in range(len(penalty.teacher.weights))])
        penalty.task_count = int(config["task_count"])
        return penalty

    def __repr__(self) -> str:
        return f"LwF(strength={self.strength:g}, temperature={self.temperature:g}, heads={self.heads})"


def head_mask(heads, outputs: int) -> np.ndarray:
    """``(outputs, outputs)`` float32: row h is 1 on the units of head h; rows past the last head are 0."""
    if len(heads) > outputs:
        raise ValueError(f"heads must be at most {outputs} (one per output unit), got {len(heads)}")
    mask = np.zeros((outputs, outputs), np.float32)
    for row, (start, stop) in enumerate(heads):
        mask[row, start:stop] = 1.0
    return mask


def check_heads(heads, outputs: int) -> list[tuple[int, int]]:
    """``heads`` as a list of ``(start, stop)`` slices within ``outputs`` logits (``None``: one over all)."""
    if heads is None:
        return [(0, outputs)]
    if not isinstance(heads, (list, tuple)) or not heads:
        raise TypeError(f"heads must be None or a non-empty list of (start, stop) pairs, got {heads!r:.80}")
    if all(isinstance(h, int) for h in heads):
        raise TypeError(f"heads must be a list of (start, stop) pairs, got one pair {heads!r}: use [{heads!r}]")
    checked = [check_units(head, "heads (each head)", outputs) for head in heads]
    if None in checked:
        raise TypeError("heads must be (start, stop) pairs, got None among them")
    return checked
