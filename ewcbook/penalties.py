"""Quadratic penalties that anchor a model's weights to where a task left them.

Every penalty here has the form

    Ω(θ) = λ/2 · Σ_j w_j (θ_j − θ*_j)²

with θ* the anchor (a copy of the weights when the penalty was made), λ the
``strength`` and w_j a per-weight importance:

* :class:`L2Anchor`: w = 1 for every weight;
* :class:`EWC`: w = the diagonal Fisher of the task (Kirkpatrick et al. 2017);
* :class:`OnlineEWC`: one running Fisher F ← γF + F_new and a single anchor,
  moved after each task (Schwarz et al. 2018).

The scale of λ. :func:`ewcbook.fisher.diagonal_fisher` returns the Fisher of
*one* example (the mean over examples) and Keras losses are means over a
batch. The Laplace approximation of the posterior after task A, divided by the
number of task-B examples, then gives λ = N_A / N_B: λ ≈ 1 is the Bayesian
weight of a task as large as the next one, and λ = 100 treats the old task
as if it had 100 times more data. Useful values span many decades, so sweep λ
on a log grid.

A penalty is a callable with no arguments that returns a scalar tensor; give
a list of them to :class:`ewcbook.training.ContinualModel`.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
import tensorflow as tf


class Penalty:
    """λ/2 · Σ w (θ − θ*)² over a model's trainable variables.

    Args:
        model: a built Keras model; its ``trainable_variables`` are anchored
            at their current values.
        strength: λ, a finite float >= 0.
        importance: one array per trainable variable, same shapes, finite and
            >= 0; ``None`` means all ones.
    """

    kind = "penalty"

    def __init__(self, model: keras.Model, strength: float, importance=None):
        self.variables = _trainable_variables(model)
        self.strength = _check_strength(strength)
        self.anchors = [tf.Variable(v.numpy(), trainable=False) for v in self.variables]
        self.importance = None
        if importance is not None:
            importance = _check_importance(importance, self.variables, "fisher")
            self.importance = [tf.Variable(w, trainable=False) for w in importance]
        self.task_count = 1

    def __call__(self) -> tf.Tensor:
        total = tf.constant(0.0)
        for k, (variable, anchor) in enumerate(zip(self.variables, self.anchors)):
            sq = tf.square(tf.convert_to_tensor(variable) - anchor)
            if self.importance is not None:
                sq = self.importance[k] * sq
            total += tf.reduce_sum(sq)
        return 0.5 * self.strength * total

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strength={self.strength:g}, tasks={self.task_count})"


class L2Anchor(Penalty):
    """λ/2 · ‖θ − θ*‖²: every weight pulled back to its anchor equally.

    Squared on purpose: the unsquared norm ‖θ − θ*‖ has the gradient
    (θ − θ*)/‖θ − θ*‖, which is 0/0 = NaN at the anchor, where training on
    the next task starts.
    """

    kind = "l2"

    def __init__(self, model: keras.Model, strength: float):
        super().__init__(model, strength)


class EWC(Penalty):
    """λ/2 · Σ F (θ − θ*)²: Elastic Weight Consolidation for one finished task.

    Args:
        model: the model right after training on the task (the anchor).
        fisher: its diagonal Fisher, e.g. from
            :func:`ewcbook.fisher.diagonal_fisher`.
        strength: λ (see the module's note on its scale).

    For several tasks, make one ``EWC`` per task and use them all, or use
    :class:`OnlineEWC`.
    """

    kind = "ewc"

    def __init__(self, model: keras.Model, fisher, strength: float):
        super().__init__(model, strength, importance=fisher)


class OnlineEWC(Penalty):
    """Online EWC: one anchor and one running Fisher for all past tasks.

    After each new task, :meth:`consolidate` sets F ← γ·F + F_new and moves
    the anchor to the current weights, so memory stays at one Fisher and one
    anchor however many tasks pass (Schwarz et al. 2018). γ = 1 keeps every
    task's Fisher at full weight; γ < 1 lets old tasks fade.

    Args:
        model: the model right after training on the first task.
        fisher: its diagonal Fisher.
        strength: λ.
        gamma: decay γ in (0, 1].
    """

    kind = "online_ewc"

    def __init__(self, model: keras.Model, fisher, strength: float, gamma: float = 1.0):
        super().__init__(model, strength, importance=fisher)
        self.gamma = _check_gamma(gamma)

    def consolidate(self, fisher) -> None:
        """Fold the Fisher of the task just learned in and re-anchor at the current weights."""
        fisher = _check_importance(fisher, self.variables, "fisher")
        for old, new in zip(self.importance, fisher):
            old.assign(self.gamma * old + new)
        for anchor, variable in zip(self.anchors, self.variables):
            anchor.assign(variable.numpy())
        self.task_count += 1

    def __repr__(self) -> str:
        return f"OnlineEWC(strength={self.strength:g}, gamma={self.gamma:g}, tasks={self.task_count})"


def _trainable_variables(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built or not model.trainable_variables:
        raise ValueError(f"model must be built and have trainable variables; {model.name!r} has none")
    return list(model.trainable_variables)


def _check_strength(strength) -> float:
    if not isinstance(strength, numbers.Real) or isinstance(strength, bool):
        raise TypeError(f"strength must be a real number, got {type(strength).__name__}")
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be finite and >= 0, got {strength}")
    return float(strength)


def _check_gamma(gamma) -> float:
    if not isinstance(gamma, numbers.Real) or isinstance(gamma, bool):
        raise TypeError(f"gamma must be a real number, got {type(gamma).__name__}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    return float(gamma)


def _check_importance(importance, variables, name: str) -> list[np.ndarray]:
    if not isinstance(importance, (list, tuple)):
        raise TypeError(f"{name} must be a list with one array per trainable variable, got {type(importance).__name__}")
    if len(importance) != len(variables):
        raise ValueError(f"{name} has {len(importance)} arrays but the model has {len(variables)} trainable variables")
    arrays = []
    for w, v in zip(importance, variables):
        w = np.asarray(w, dtype=np.float32)
        if w.shape != tuple(v.shape):
            raise ValueError(
                f"{name} does not match the model: shape {w.shape} for variable {v.path} of shape {tuple(v.shape)}"
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"{name} must be finite and >= 0 (variable {v.path})")
        arrays.append(w)
    return arrays
