"""Chapter 3 (the L2 anchor): a λ sweep on two tasks, its frontier, and a two-parameter world.

:func:`strength_sweep` trains task A once per seed and task B once per λ,
side by side (:func:`ewcbook.copies.train_copies`); :func:`l2_frontier` draws
the result.

The rest is a two-parameter world where every loss and every training path can
be drawn: the contours of task A's and task B's losses and the path that
gradient descent takes from A's solution under no penalty, the L2 anchor,
EWC's diagonal Fisher and the full Laplace (full Fisher) penalty
(:func:`two_task_world`, :func:`penalty_paths`, :func:`loss_landscape`), and
how close each penalty's end point comes to the minimum of L_A + L_B
(:func:`endpoint_table`).

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

from ewcbook.chapters import MARGIN
from ewcbook.chapters.style import TASK_COLORS, color, label
from ewcbook.checks import integer, one_of
from ewcbook.copies import copy_accuracies, train_copies
from ewcbook.data import check_tasks
from ewcbook.evaluation import evaluate_tasks
from ewcbook.fisher import diagonal_fisher
from ewcbook.training import ContinualModel, fit_task
from ewcbook.utils import set_seed

#: The penalties drawn in chapter 3, in drawing order.
PENALTIES = ("none", "l2", "ewc", "laplace")

#: Font size (points) of the labels, ticks and legends of this chapter's figures,
#: drawn about 7 inches wide so that the page shows them at about their size.
FONT_SIZE = 10


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
    integer(n, "n", minimum=1)
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
    integer(steps, "steps", minimum=1)
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
    rng = np.random.default_rng(integer(seed, "seed"))
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
    return strength * matrices[one_of(kind, "kind", PENALTIES)]


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


def endpoint_table(world: TwoTaskWorld, endpoints: dict, joint) -> list[dict]:
    """How close each end point comes to the joint minimum, nearest first.

    Args:
        world: a :class:`TwoTaskWorld`.
        endpoints: ``{name: theta}``, each theta of shape ``(2,)``.
        joint: the minimum of L_A + L_B (:func:`joint_minimum`).

    Returns:
        One dict per end point, sorted by ``distance`` (ties keep the order
        of ``endpoints``): ``name``, ``theta``, ``loss_a``, ``loss_b``,
        ``loss_sum`` (L_A + L_B) and ``distance`` (Euclidean, to ``joint``).

    Example:
        >>> world = two_task_world()
        >>> joint = joint_minimum(world)
        >>> endpoint_table(world, {"A": world.theta_a, "joint": joint}, joint)[0]["name"]
        'joint'
    """
    if not isinstance(endpoints, dict) or not endpoints:
        raise TypeError(f"endpoints must be a non-empty dict {{name: theta}}, got {endpoints!r:.80}")
    rows = []
    for name, theta in endpoints.items():
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (2,):
            raise ValueError(f"endpoints[{name!r}] must have shape (2,), got {theta.shape}")
        loss_a, loss_b = float(loss(theta, world.x_a, world.y_a)), float(loss(theta, world.x_b, world.y_b))
        rows.append({"name": name, "theta": theta, "loss_a": loss_a, "loss_b": loss_b,
                     "loss_sum": loss_a + loss_b, "distance": float(np.linalg.norm(theta - np.asarray(joint)))})
    return sorted(rows, key=lambda r: r["distance"])


# --- the λ sweep on MNIST --------------------------------------------------------------


def strength_sweep(
    make_network,
    tasks,
    method: str,
    strengths,
    *,
    seeds=(0,),
    epochs=6,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    estimator: str = "sampled",
    fisher_samples: int | None = None,
) -> list[dict]:
    """Accuracy on two tasks for each penalty strength, over several seeds.

    Task A is trained once per seed; every strength then starts task B from
    the same weights (and, for EWC, the same Fisher), so the strengths differ
    only in λ. The strengths of a seed train side by side as one model
    (:func:`ewcbook.copies.train_copies`), each exactly as it would alone.

    Args:
        make_network: a function with no arguments returning a fresh network.
        tasks: ``[task_a, task_b]``.
        method: ``"none"``, ``"l2"`` or ``"ewc"``.
        strengths: the λ values (ignored, and run once, for ``"none"``).
        seeds: one run per seed (network init, shuffles, Fisher samples).
        epochs: epochs per task, an int or ``(epochs_a, epochs_b)``.

    Returns:
        One dict per (seed, strength): ``method``, ``strength``, ``seed``,
        ``acc_A``, ``acc_B``, ``mean`` (of the two) and ``acc_A_before`` (after
        task A only).
    """
    one_of(method, "method", ("none", "l2", "ewc"))
    if len(check_tasks(tasks)) != 2:
        raise TypeError("tasks must be a list of two Task objects [task_a, task_b]")
    strengths = [0.0] if method == "none" else list(strengths)
    if not strengths:
        raise ValueError("strengths must not be empty")
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence of ints >= 0")
    seeds = [integer(s, "seeds (each)", minimum=0) for s in seeds]
    epochs_a, epochs_b = (epochs, epochs) if isinstance(epochs, int) else epochs
    task_a, task_b = tasks
    rows = []
    for seed in seeds:
        set_seed(seed)
        learner = ContinualModel(make_network())
        fit_task(learner, task_a, epochs=epochs_a, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
        before = evaluate_tasks(learner, [task_a])[0]
        fisher = None
        if method == "ewc":
            data = (task_a.inputs("train", fisher_samples), task_a.arrays("train")[1][:fisher_samples])
            fisher = diagonal_fisher(learner, data, estimator=estimator, seed=seed)
        stacked = train_copies(
            learner.network,
            task_b,
            [(0.0 if method == "none" else s, fisher) for s in strengths],
            epochs=epochs_b,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed + 1,
        )
        for strength, (acc_a, acc_b) in zip(strengths, copy_accuracies(stacked, tasks)):
            rows.append(
                {
                    "method": method,
                    "strength": strength,
                    "seed": seed,
                    "acc_A": float(acc_a),
                    "acc_B": float(acc_b),
                    "mean": float((acc_a + acc_b) / 2),
                    "acc_A_before": float(before),
                }
            )
    return rows


def trade_off_text(acc_a, acc_b, mean, best: int, margin: float = MARGIN) -> str:
    """The sentences that read the sweep's trade-off from its numbers, for the prose.

    A step of the grid moves a value only if it moves it by more than
    ``margin`` (the book's rule, :data:`ewcbook.chapters.MARGIN`): a sentence
    must not flip with the last digits another CPU changes.

    Args:
        acc_a, acc_b, mean: accuracies on A, on B and their mean, one per
            strength of the grid in increasing order, λ = 0 first.
        best: index of the best mean.
        margin: the smallest move that counts.

    Returns:
        Whether A rises and B falls along the grid (no step moving either the
        other way by more than ``margin``), and whether the mean rises up to
        ``best`` and falls after it in the same sense.

    Example:
        >>> trade_off_text([0.3, 0.6, 0.9], [0.9, 0.8, 0.2], [0.6, 0.7, 0.55], 1)[:38]
        'Along the grid, each stiffer spring gi'
    """
    a, b, m = (np.asarray(v, dtype=float) for v in (acc_a, acc_b, mean))
    if not len(a) == len(b) == len(m) >= 2:
        raise ValueError("acc_a, acc_b and mean must have one value per strength (at least 2), "
                         f"got {len(a)}, {len(b)}, {len(m)}")
    best = integer(best, "best", minimum=0)
    if best >= len(m):
        raise ValueError(f"best must index the grid (< {len(m)}), got {best}")
    if not (isinstance(margin, (int, float)) and 0 <= margin < 1):
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
    within = f"no step moves a value the other way by more than {margin:g}"
    opposite = bool(np.all(np.diff(a) > -margin) and np.all(np.diff(b) < margin))
    moves = (f"Along the grid, each stiffer spring gives A more and B less ({within})" if opposite
             else f"A and B do not move in opposite directions along the grid: at some step one moves the "
                  f"other way by more than {margin:g}")
    if best == 0:
        return f"{moves}; no strength raises the mean accuracy above no penalty's."
    if np.all(np.diff(m[: best + 1]) > -margin):
        rise = ("Up to the best λ, each step gains more on A than it costs on B, so the mean rises" if opposite
                else "Up to the best λ, the mean rises")
    else:
        rise = f"Up to the best λ, the mean falls by more than {margin:g} at some step"
    if best == len(m) - 1:
        fall = "; the best λ is the largest of the grid"
    elif np.all(np.diff(m[best:]) < margin):
        fall = "; above it the exchange turns and the mean falls"
    else:
        fall = f"; above it the mean rises by more than {margin:g} at some step"
    return f"{moves}. {rise}{fall}."


# --- figures ---------------------------------------------------------------------------------


def label_points(ax, points, texts, *, fontsize: float = FONT_SIZE, avoid=(), curve=None) -> list:
    """Write ``texts[i]`` next to ``points[i]`` (data coordinates), skipping any label that would overlap.

    Labels are placed in the order given (put the important ones first), each
    at the first of a few offsets (below left, left, below, right, above the
    point: below left is inside a falling, concave curve such as a frontier)
    where its box overlaps no label already placed, no point of ``points`` or
    ``avoid`` and no segment of ``curve`` (a polyline ``(xs, ys)``), and stays
    inside the axes; a label with no such place is left out.

    Returns:
        The matplotlib ``Annotation`` objects placed.
    """
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    markers = [ax.transData.transform(p) for p in list(points) + list(avoid)]
    if curve is not None:  # points every few pixels along the polyline
        xy = ax.transData.transform(np.column_stack(curve))
        for start, stop in zip(xy[:-1], xy[1:]):
            steps = max(2, int(np.hypot(*(stop - start)) / 3))
            markers += list(start + np.linspace(0, 1, steps)[:, None] * (stop - start))
    offsets = (((-5, -5), "right", "top"), ((-8, 0), "right", "center"), ((0, -9), "center", "top"),
               ((8, 0), "left", "center"), ((0, 8), "center", "bottom"))
    placed, boxes = [], []
    for point, text in zip(points, texts):
        for offset, ha, va in offsets:
            note = ax.annotate(text, point, textcoords="offset points", xytext=offset, ha=ha, va=va,
                               fontsize=fontsize)
            box = note.get_window_extent(renderer).expanded(1.1, 1.15)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            clear = not any(box.overlaps(b) for b in boxes) and not any(
                box.x0 - 2 <= x <= box.x1 + 2 and box.y0 - 2 <= y <= box.y1 + 2 for x, y in markers)
            if inside and clear:
                placed.append(note)
                boxes.append(box)
                break
            note.remove()
    return placed


def l2_frontier(ax, ax_l, sweep: dict, joint_acc, post_point=None) -> None:
    """The two panels of the sweep: accuracy on B against A for each λ, and both against λ.

    Drawn for a figure about 7 inches wide (the page's width), the panels one
    above the other; λ is written next to every point of the frontier where
    there is room (:func:`label_points`), and every λ is on the second panel's axis.

    Args:
        ax, ax_l: two matplotlib Axes (the frontier; accuracies against λ).
        sweep: dict with arrays ``strengths``, ``acc_a``, ``acc_b``, ``mean``
            (means over seeds, λ = 0 first), the int ``best`` (index of the best
            mean) and ``rows`` (the per-seed rows of :func:`strength_sweep`).
        joint_acc: accuracies (A, B) of joint training.
        post_point: (A, B) reported by the seed post for its L2 run, or ``None``.
    """
    s, a, b, mean = (np.asarray(sweep[k]) for k in ("strengths", "acc_a", "acc_b", "mean"))
    positive = s > 0
    l2 = color("l2")
    ax.plot(a[positive], b[positive], "-o", color=l2, label=label("l2") + " (mean of seeds)")
    for r in sweep["rows"]:
        if r["strength"] > 0:
            ax.plot(r["acc_A"], r["acc_B"], ".", color=l2, alpha=0.3)
    ax.plot(a[0], b[0], "s", markersize=8, color=color("none"), label="no penalty (λ = 0)")
    ax.plot(*joint_acc, "*", markersize=13, color=color("joint"), label=label("joint"))
    others = [(a[0], b[0]), tuple(joint_acc)]
    if post_point is not None:
        ax.plot(*post_point, "D", color=color("post"), label="the post's L2 run (reported)")
        others.append(tuple(post_point))
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("test accuracy on task A (old)", fontsize=FONT_SIZE + 1)
    ax.set_ylabel("test accuracy on task B (new)", fontsize=FONT_SIZE + 1)
    ax.set_title("Accuracy on B against accuracy on A, one point per λ")
    ax.tick_params(labelsize=FONT_SIZE)
    ax.legend(loc="lower left", fontsize=FONT_SIZE)
    # the ends of the grid first, then the others from the largest λ down
    order = [k for k in np.flatnonzero(positive)[::-1]]
    order = order[:1] + order[-1:] + order[1:-1] if len(order) > 1 else order
    label_points(ax, [(a[k], b[k]) for k in order], [f"λ={s[k]:g}" for k in order], avoid=others,
                 curve=(a[positive], b[positive]))

    for values, c, name in ((a, TASK_COLORS[0], "task A (old)"), (b, TASK_COLORS[1], "task B (new)"),
                            (mean, "0.3", "mean of A and B")):
        ax_l.semilogx(s[positive], values[positive], "-o" if c != "0.3" else "-", color=c, label=name)
    ax_l.axhline(mean[0], color=color("none"), linestyle="--", linewidth=1, label="mean, no penalty")
    ax_l.axvline(s[sweep["best"]], color="0.5", linestyle=":", linewidth=1.5,
                 label="best mean (λ chosen on the test set)")
    ax_l.set_ylim(0, 1.02)
    ax_l.set_xlabel("penalty strength λ (log scale)", fontsize=FONT_SIZE + 1)
    ax_l.set_ylabel("test accuracy", fontsize=FONT_SIZE + 1)
    ax_l.set_title("Accuracy on each task against λ")
    ax_l.tick_params(labelsize=FONT_SIZE)
    # below the axes: inside, it would hide a line
    ax_l.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize=FONT_SIZE)


#: The penalty paths' names in the landscape's legend.
PATH_LABELS = {"none": "no penalty", "l2": "L2 anchor", "ewc": "EWC (diagonal Fisher)",
               "laplace": label("laplace")}


def loss_landscape(ax, world, paths, joint, *, extent=(-1.5, 3.0, -1.0, 3.5), grid: int = 200) -> None:
    """Contours of L_A and L_B and the path of each penalty while training on B.

    Args:
        ax: a matplotlib Axes.
        world: a :class:`TwoTaskWorld`.
        paths: ``{kind: path}`` from :func:`penalty_paths`.
        joint: the minimum of L_A + L_B, drawn as a star.
        extent: ``(w1_min, w1_max, w2_min, w2_max)`` of the plotted window.
        grid: points per axis of the contour grid.
    """
    w1, w2 = np.meshgrid(np.linspace(*extent[:2], grid), np.linspace(*extent[2:], grid))
    thetas = np.stack([w1, w2], axis=-1)
    for x, y, c, style, name in (
        (world.x_a, world.y_a, TASK_COLORS[0], "solid", "A"),
        (world.x_b, world.y_b, TASK_COLORS[1], "dashed", "B"),
    ):
        values = loss(thetas, x, y)
        low = values.min()
        levels = low + (values.max() - low) * np.geomspace(0.005, 0.6, 9)
        ax.contour(w1, w2, values, levels=levels, colors=c, linestyles=style, linewidths=0.8, alpha=0.8)
        ax.plot([], [], color=c, linestyle=style, linewidth=1.2, label=f"contours of $L_{name}$")
    for kind, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], color=color(kind), linewidth=2, label=PATH_LABELS[kind])
        ax.plot(*path[-1], "o", color=color(kind), markersize=6)
    ax.plot(*world.theta_a, "s", color="black", markersize=7, label=r"start: $\theta^*_A$")
    ax.plot(*joint, "*", color=color("joint"), markersize=14, label=r"minimum of $L_A + L_B$")
    ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal")
    ax.set_xlabel("weight $w_1$ (no unit)", fontsize=FONT_SIZE + 1)
    ax.set_ylabel("weight $w_2$ (no unit)", fontsize=FONT_SIZE + 1)
    ax.tick_params(labelsize=FONT_SIZE)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=FONT_SIZE)
