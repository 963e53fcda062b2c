"""Quadratic penalties that anchor a model's weights to where earlier tasks left them.

Every penalty here has the form::

    Ω(θ) = λ/2 · [ Σ_j w_j (θ_j − θ̄_j)² + c ]

with θ̄ an anchor, λ the ``strength``, w_j a per-weight importance and c a
constant that only matters for the logged value:

* :class:`L2Anchor`: w = 1 for every weight;
* :class:`EWC`: w = the diagonal Fisher of the task (Kirkpatrick et al. 2017);
* :class:`OnlineEWC`: one running Fisher F ← γF + F_new and an anchor moved
  to the newest weights after each task (Schwarz et al. 2018);
* :class:`SynapticIntelligence`: w = Ω, the path integral of each weight's
  contribution to the fall of the loss while it was trained (Zenke et al.
  2017), accumulated step by step during training.

Many tasks, one quadratic. A sum of per-task quadratics is itself one
quadratic: Σ_t F_t (θ − θ_t)² = S (θ − θ̄)² + c with S = Σ_t F_t,
θ̄ = Σ_t F_t θ_t / S and c = Σ_t F_t θ_t² − S θ̄². So :meth:`EWC.consolidate`
(and :meth:`L2Anchor.consolidate`) folds each new task into the same two
arrays per variable: per-task EWC holds 2P numbers, not 2P per task, and a
training step costs the same after ten tasks as after one, with the same
value and gradient as the separate penalties. What really distinguishes
:class:`OnlineEWC` is where its anchor sits (at the newest weights, not at
the Fisher-weighted mean of all anchors) and the decay γ.

The scale of λ. :func:`ewcbook.fisher.diagonal_fisher` returns the Fisher of
*one* example (the mean over examples) and Keras losses are means over a
batch. The Laplace approximation of the posterior after task A, divided by the
number of task-B examples, then gives λ = N_A / N_B: λ ≈ 1 is the Bayesian
weight of a task as large as the next one, and λ = 100 treats the old task
as if it had 100 times more data. Useful values span many decades, so sweep λ
on a log grid.

A penalty is a callable with no arguments that returns a scalar tensor; give
a list of them to :class:`ewcbook.training.ContinualModel`. Penalties that
:mod:`ewcbook.state` can save implement ``kind``, ``get_config``,
``state_arrays`` and ``from_state``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import boolean, check_model, real


class Penalty:
    """λ/2 · [Σ w (θ − θ̄)² + c] over a model's trainable variables.

    Args:
        model: a built Keras model; its ``trainable_variables`` are anchored
            at their current values.
        strength: λ, a finite float >= 0.
        importance: one array per trainable variable, same shapes, finite and
            >= 0; ``None`` means all ones.
    """

    kind = "penalty"

    def __init__(self, model: keras.Model, strength: float, importance=None):
        self.variables = list(check_model(model).trainable_variables)
        self.strength = real(strength, "strength", low=0.0)
        self.anchors = [tf.Variable(v.numpy(), trainable=False) for v in self.variables]
        # What the traced training step reads is fixed when the penalty is made: Variables of fixed shape,
        # changed in place by consolidation, never a Python structure that a later task would replace.
        self.importance = None  # per-weight w, or None: every weight alike, with the weight `scale`
        if importance is not None:
            importance = importance_arrays(importance, self.variables, "fisher")
            self.importance = [tf.Variable(w, trainable=False) for w in importance]
        self.scale = tf.Variable(1.0, trainable=False)  # the uniform w when importance is None (k anchors: k)
        self.constant = tf.Variable(0.0, trainable=False)  # c, the part of Σ_t that no weight can change
        self.task_count = 1

    def __call__(self) -> tf.Tensor:
        total = self.constant.value()
        scale = self.scale.value() if self.importance is None else None
        weights = self.importance or [None] * len(self.anchors)
        for variable, anchor, weight in zip(self.variables, self.anchors, weights):
            if weight is None:
                total += scale * weighted_square(tf.convert_to_tensor(variable), anchor.value(), None)
            else:
                total += weighted_square(tf.convert_to_tensor(variable), anchor.value(), weight.value())
        return 0.5 * self.strength * total

    def _merge(self, importance) -> None:
        """Add a task anchored at the current weights: S ← S + w, θ̄ ← (S θ̄ + w θ) / (S + w), c updated.
        ``importance=None``: the new task weighs every weight 1 (the penalty's importance must be None too)."""
        if (importance is None) != (self.importance is None):
            raise ValueError("a uniform penalty merges uniform tasks only, a weighted one weighted tasks only")
        uniform = importance is None
        olds = [float(self.scale.numpy())] * len(self.variables) if uniform else self.importance
        news = [1.0] * len(self.variables) if uniform else importance
        merged, constant = [], float(self.constant.numpy())
        for old, new, anchor, variable in zip(olds, news, self.anchors, self.variables):
            old, new = np.asarray(old, np.float64), np.asarray(new, np.float64)
            a, theta = anchor.numpy().astype(np.float64), variable.numpy()
            total = old + new
            mean = np.where(total > 0, (old * a + new * theta) / np.where(total > 0, total, 1.0), theta)
            constant += float(np.sum(old * a**2 + new * theta.astype(np.float64) ** 2 - total * mean**2))
            anchor.assign(mean.astype(np.float32))
            merged.append(total)
        if uniform:
            self.scale.assign(float(merged[0]))
        else:
            for var, m in zip(self.importance, merged):
                var.assign(m.astype(np.float32))
        self.constant.assign(constant)
        self.task_count += 1

    # --- saving (see ewcbook.state) ---
    def get_config(self) -> dict:
        return {"strength": self.strength, "task_count": self.task_count}

    def state_arrays(self) -> dict:
        arrays = {f"anchor_{k}": a.numpy() for k, a in enumerate(self.anchors)}
        if self.importance is not None:
            arrays.update({f"importance_{k}": w.numpy() for k, w in enumerate(self.importance)})
        arrays["constant"] = np.array(self.constant.numpy())
        arrays["scale"] = np.array(self.scale.numpy())
        return arrays

    @classmethod
    def from_state(cls, model, config: dict, arrays: dict):
        count = len(check_model(model).trainable_variables)
        penalty = cls._from_config(model, config, [arrays[f"importance_{k}"] for k in range(count)]
                                   if "importance_0" in arrays else None)
        for k, anchor in enumerate(penalty.anchors):
            anchor.assign(arrays[f"anchor_{k}"])
        penalty.constant.assign(float(arrays["constant"]))
        if "scale" in arrays:
            penalty.scale.assign(float(arrays["scale"]))
        penalty.task_count = int(config["task_count"])
        return penalty

    @classmethod
    def _from_config(cls, model, config, importance):
        return cls(model, config["strength"], importance)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strength={self.strength:g}, tasks={self.task_count})"


class L2Anchor(Penalty):
    """λ/2 · ‖θ − θ*‖²: every weight pulled back to its anchor equally.

    Squared on purpose: the unsquared norm ‖θ − θ*‖ has the gradient
    (θ − θ*)/‖θ − θ*‖, which is 0/0 = NaN at the anchor, where training on
    the next task starts.

    Args:
        model: the model right after training on the task (the anchor).
        strength: λ.
        moving: what :meth:`consolidate` does after a later task. ``False``
            (default): add that task's anchor, so the penalty is the sum of
            one L2 penalty per task (pulling towards the mean of the anchors);
            ``True``: move the single anchor to the newest weights.
    """

    kind = "l2"

    def __init__(self, model: keras.Model, strength: float, moving: bool = False):
        super().__init__(model, strength)
        self.moving = boolean(moving, "moving")

    def consolidate(self) -> None:
        """Anchor the task just learned too (or move the anchor there, if ``moving``)."""
        if self.moving:
            for anchor, variable in zip(self.anchors, self.variables):
                anchor.assign(variable)
            self.task_count += 1
        else:
            self._merge(None)  # weight 1 for every weight: k anchors weigh k (self.scale)

    def get_config(self) -> dict:
        return {**super().get_config(), "moving": self.moving}

    @classmethod
    def _from_config(cls, model, config, importance):
        penalty = cls(model, config["strength"], moving=config.get("moving", False))
        if importance is not None:  # a file of ewcbook <= 0.1.x held the uniform weight as arrays
            penalty.scale.assign(float(np.asarray(importance[0]).flat[0]))
        return penalty


class EWC(Penalty):
    """λ/2 · Σ F (θ − θ*)²: Elastic Weight Consolidation.

    Args:
        model: the model right after training on the task (the anchor).
        fisher: its diagonal Fisher, e.g. from
            :func:`ewcbook.fisher.diagonal_fisher`.
        strength: λ (see the module's note on its scale).

    For several tasks, call :meth:`consolidate` after each later one: the
    penalty stays one quadratic with the value and gradient of the sum of
    one EWC penalty per task.
    """

    kind = "ewc"

    def __init__(self, model: keras.Model, fisher, strength: float):
        super().__init__(model, strength, importance=fisher)

    def consolidate(self, fisher) -> None:
        """Add the task just learned, with its Fisher, anchored at the current weights."""
        self._merge(importance_arrays(fisher, self.variables, "fisher"))

    @classmethod
    def _from_config(cls, model, config, importance):
        return cls(model, importance, config["strength"])


class OnlineEWC(Penalty):
    """Online EWC: one anchor and one running Fisher for all past tasks.

    After each new task, :meth:`consolidate` sets F ← γ·F + F_new and moves
    the anchor to the current weights (Schwarz et al. 2018). γ = 1 keeps every
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
        self.gamma = real(gamma, "gamma", low=0.0, high=1.0, open_low=True)

    def consolidate(self, fisher) -> None:
        """Fold the Fisher of the task just learned in and re-anchor at the current weights."""
        fisher = importance_arrays(fisher, self.variables, "fisher")
        for old, new in zip(self.importance, fisher):
            old.assign(self.gamma * old + new)
        for anchor, variable in zip(self.anchors, self.variables):
            anchor.assign(variable)
        self.task_count += 1

    def get_config(self) -> dict:
        return {**super().get_config(), "gamma": self.gamma}

    @classmethod
    def _from_config(cls, model, config, importance):
        return cls(model, importance, config["strength"], config["gamma"])

    def __repr__(self) -> str:
        return f"OnlineEWC(strength={self.strength:g}, gamma={self.gamma:g}, tasks={self.task_count})"


class SynapticIntelligence(Penalty):
    """Synaptic intelligence (Zenke, Poole & Ganguli 2017): λ/2 · Σ Ω (θ − θ*)².

    While a task trains, every optimizer step adds to each weight's path
    integral ω ← ω − g · Δθ, with g the gradient the step applied and Δθ the
    step it took: the weight's share of the fall of the loss. At the end of
    the task, :meth:`consolidate` turns it into an importance,
    Ω ← Ω + max(ω, 0) / (Δ² + ξ) with Δ how far the weight moved over the
    whole task, anchors at the current weights and starts a new path.

    Add the penalty to the learner *before* the first task (its importance is
    zero until then, and so is its value): it sees the steps through
    :class:`ewcbook.training.ContinualModel`'s training step (``track_step``).

    Args:
        model: the model to be trained; its current weights start the path.
        strength: λ; Zenke et al.'s c is λ/2 (their penalty has no ½).
        damping: ξ > 0, which keeps Ω finite for a weight that barely moved.

    Two choices, said here because implementations differ: g is the gradient
    of the whole training loss (the task's loss plus every penalty: what the
    optimizer applied, as in van de Ven's code; Zenke et al.'s code uses the
    task's loss alone), and a negative ω (the loss rose along the weight's
    path) gives no importance rather than a push away from the anchor.
    Under ``tf.distribute`` the replicas' gradients are summed first, so ω is
    that of the one step the replicas take together.
    """

    kind = "si"

    def __init__(self, model: keras.Model, strength: float, damping: float = 0.1):
        variables = check_model(model).trainable_variables
        super().__init__(model, strength, importance=[np.zeros(v.shape, np.float32) for v in variables])
        self.damping = real(damping, "damping", low=0.0, open_low=True)
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # every replica computes the same update
        self.path = [tf.Variable(tf.zeros(v.shape), trainable=False, aggregation=first) for v in variables]
        self.start = [tf.Variable(v.numpy(), trainable=False) for v in variables]
        self.task_count = 0

    def track_step(self, gradients, before) -> None:
        """One step of the path integral: ω ← ω − g · (θ − θ_before)."""
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            sum_ = tf.distribute.ReduceOp.SUM  # the step all replicas take
            gradients = context.all_reduce(sum_, gradients)
        for path, g, b, v in zip(self.path, gradients, before, self.variables):
            step = tf.convert_to_tensor(v) - b
            path.assign_add(-tf.convert_to_tensor(g) * step)

    def consolidate(self) -> None:
        """End the task: Ω ← Ω + max(ω, 0) / (Δ² + ξ); anchor and path
        start at the current weights; ω ← 0."""
        for k, v in enumerate(self.variables):
            theta = v.numpy()
            moved = theta - self.start[k].numpy()  # Δ over the task
            omega = np.maximum(self.path[k].numpy(), 0.0)
            self.importance[k].assign_add(omega / (moved**2 + self.damping))
            self.anchors[k].assign(theta)
            self.start[k].assign(theta)
            self.path[k].assign(tf.zeros(v.shape))
        self.task_count += 1

    def get_config(self) -> dict:
        return {**super().get_config(), "damping": self.damping}

    def state_arrays(self) -> dict:
        arrays = super().state_arrays()
        arrays.update({f"path_{k}": p.numpy() for k, p in enumerate(self.path)})
        arrays.update({f"start_{k}": p.numpy() for k, p in enumerate(self.start)})
        return arrays

    @classmethod
    def from_state(cls, model, config: dict, arrays: dict):
        penalty = super().from_state(model, config, arrays)
        for k, (path, start) in enumerate(zip(penalty.path, penalty.start)):
            path.assign(arrays[f"path_{k}"])
            start.assign(arrays[f"start_{k}"])
        return penalty

    @classmethod
    def _from_config(cls, model, config, importance):
        penalty = cls(model, config["strength"], config["damping"])
        for omega, w in zip(penalty.importance, importance):
            omega.assign(w)
        return penalty

    def __repr__(self) -> str:
        return f"SynapticIntelligence(strength={self.strength:g}, damping={self.damping:g}, tasks={self.task_count})"


def weighted_square(theta, anchor, weight):
    """Σ w (θ − θ̄)², with its gradient 2 w (θ − θ̄) written out.

    The same value and gradient as automatic differentiation of the formula,
    in two elementwise passes fewer per variable (one product is shared by the
    value and the gradient): the penalty's cost per training step is a few
    passes over the weights, next to the optimizer's own.
    """

    @tf.custom_gradient
    def value_and_gradient(theta):
        diff = theta - anchor
        weighted = diff if weight is None else weight * diff
        return tf.reduce_sum(weighted * diff), lambda upstream: (2.0 * upstream) * weighted

    return value_and_gradient(theta)


def importance_arrays(importance, variables, name: str) -> list[np.ndarray]:
    """``importance`` as float32 arrays, if it holds one finite array >= 0 per variable, of its shape."""
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
