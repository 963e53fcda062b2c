"""A two-parameter world where every loss and every training path can be drawn.

Chapter 3 uses it to show, on a plane, what the penalties of the book do to
training on task B: the contours of task A's and task B's losses and the path
that gradient descent takes from A's solution under no penalty, the L2
anchor, EWC's diagonal Fisher and the full Laplace (full Fisher) penalty.

The model is logistic regression on 2-D inputs without a bias,
p(y = 1 | x, θ) = σ(θᵀx) with θ = (w₁, w₂), and each task's loss is the mean
cross-entropy of its data: smooth and convex, but not quadratic (it grows
linearly far from its minimum), so a quadratic penalty is only a local
picture of it. Everything is NumPy and runs in well under a second.

Example:
    >>> world = two_task_world(seed=0)
    >>> paths = penalty_paths(world)
    >>> sorted(paths)
    ['ewc', 'l2', 'laplace', 'none']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The penalties drawn in chapter 3, in drawing order.
PENALTIES = ("none", "l2", "ewc", "laplace")


@dataclass
class TwoTaskWorld:
    """The data of tasks A and B, A's solution θ*_A and A's Fisher there."""

    x_a: np.ndarray
    y_a: np.ndarray
    x_b: np.ndarray
    y_b: np.ndarray
    theta_a: np.ndarray
    fisher_a: np.ndarray


def make_task(rng: np.random.Generator, n: int, angle_deg: float, stds, w_true):
    """Inputs from a Gaussian with standard deviations ``stds`` along axes rotated
    by ``angle_deg``; labels drawn from the logistic model with weights ``w_true``.

    Returns:
        ``(x, y)``: an ``(n, 2)`` float array and an ``(n,)`` array of 0/1 labels.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    x = (rng.normal(size=(n, 2)) * np.asarray(stds, dtype=float)) @ rotation.T
    p = 1.0 / (1.0 + np.exp(-x @ np.asarray(w_true, dtype=float)))
    y = (rng.uniform(size=n) < p).astype(float)
    return x, y


def loss(theta, x, y) -> np.ndarray:
    """Mean cross-entropy of the data ``(x, y)`` at ``theta``.

    Args:
        theta: weights of shape ``(..., 2)``: one point or a whole grid.
        x, y: the task's inputs ``(n, 2)`` and 0/1 labels ``(n,)``.

    Returns:
        The loss, of shape ``theta.shape[:-1]``.
    """
    z = np.asarray(theta, dtype=float) @ np.asarray(x, dtype=float).T  # (..., n)
    return np.mean(np.logaddexp(0.0, z) - y * z, axis=-1)


def gradient(theta, x, y) -> np.ndarray:
    """Gradient of :func:`loss` at one point ``theta`` (shape ``(2,)``)."""
    p = 1.0 / (1.0 + np.exp(-x @ theta))
    return x.T @ (p - y) / len(y)


def fisher(theta, x) -> np.ndarray:
    """The 2×2 Fisher of one example, averaged over ``x``: mean of p(1 − p) x xᵀ.

    For logistic regression it is also the Hessian of :func:`loss`, at every θ.
    """
    p = 1.0 / (1.0 + np.exp(-x @ theta))
    return (x * (p * (1 - p))[:, None]).T @ x / len(x)


def descend(grad, theta0, *, steps: int, learning_rate: float) -> np.ndarray:
    """Plain gradient descent; returns the path, shape ``(steps + 1, 2)``."""
    if not isinstance(steps, (int, np.integer)) or steps <= 0:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    path = np.empty((steps + 1, 2))
    path[0] = theta = np.array(theta0, dtype=float)
    for k in range(steps):
        theta = theta - learning_rate * grad(theta)
        path[k + 1] = theta
    return path


def two_task_world(seed: int = 0, *, n_a: int = 200, n_b: int = 200, steps: int = 4000) -> TwoTaskWorld:
    """Draw tasks A and B and train on A from θ = 0.

    Task A's inputs spread along a direction 20° above the w₁ axis, so A pins
    the weights along that direction and leaves them free across it: A's
    valley runs close to the w₂ axis. Task B's inputs spread along the
    diagonal, and its labels come from other weights, so B's minimum lies off
    A's valley. A tiny weight decay (10⁻³) gives A a finite minimum.

    Args:
        seed: int seed of the data.
        n_a, n_b: examples per task.
        steps: gradient-descent steps on A.

    Returns:
        A :class:`TwoTaskWorld`.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rng = np.random.default_rng(seed)
    x_a, y_a = make_task(rng, n_a, 20.0, (2.0, 0.25), w_true=(1.2, 0.6))
    x_b, y_b = make_task(rng, n_b, 90.0, (2.0, 1.0), w_true=(-0.5, 2.0))
    decay = 1e-3
    path = descend(lambda t: gradient(t, x_a, y_a) + decay * t, np.zeros(2), steps=steps, learning_rate=1.0)
    theta_a = path[-1]
    return TwoTaskWorld(x_a, y_a, x_b, y_b, theta_a, fisher(theta_a, x_a))


def penalty_matrix(kind: str, world: TwoTaskWorld, strength: float) -> np.ndarray:
    """The 2×2 matrix M of the penalty λ/2 (θ − θ*_A)ᵀ M (θ − θ*_A).

    ``"none"``: 0; ``"l2"``: the identity times the mean of the Fisher's
    diagonal (the same total stiffness as EWC, spread evenly); ``"ewc"``: the
    diagonal of A's Fisher; ``"laplace"``: the full Fisher. All scaled by λ.
    """
    f = world.fisher_a
    matrices = {
        "none": np.zeros((2, 2)),
        "l2": np.eye(2) * np.trace(f) / 2,
        "ewc": np.diag(np.diag(f)),
        "laplace": f,
    }
    if kind not in matrices:
        raise ValueError(f"kind must be one of {PENALTIES}, got {kind!r}")
    return strength * matrices[kind]


def penalty_paths(world: TwoTaskWorld, *, strength: float = 1.0, steps: int = 5000, learning_rate: float = 0.3):
    """Train on B from θ*_A with each penalty of :data:`PENALTIES`.

    Args:
        world: from :func:`two_task_world`.
        strength: λ; 1 is the Bayesian strength for two tasks of equal size
            (chapter 2: λ = N_A / N_B).
        steps, learning_rate: plain gradient descent.

    Returns:
        ``{kind: path}``, each path of shape ``(steps + 1, 2)``, from θ*_A.
    """
    paths = {}
    for kind in PENALTIES:
        m = penalty_matrix(kind, world, strength)
        grad = lambda t, m=m: gradient(t, world.x_b, world.y_b) + m @ (t - world.theta_a)  # noqa: E731
        paths[kind] = descend(grad, world.theta_a, steps=steps, learning_rate=learning_rate)
    return paths


def joint_minimum(world: TwoTaskWorld, *, steps: int = 6000) -> np.ndarray:
    """The minimum of L_A + L_B (equal weights), by gradient descent from θ*_A."""
    grad = lambda t: gradient(t, world.x_a, world.y_a) + gradient(t, world.x_b, world.y_b)  # noqa: E731
    return descend(grad, world.theta_a, steps=steps, learning_rate=0.5)[-1]
