"""Many tasks, many seeds: the plumbing of chapter 6.

Runs every method over several seeds (:func:`run_methods`), trains the
joint upper bound on the union of tasks (:func:`train_joint`), reads the
accuracy matrices (:func:`intransigence`, :func:`seen_curve`), turns seeds
into 95 % intervals (:func:`mean_interval`, :func:`paired_difference`) and
intervals into verdicts (:func:`verdict`), draws the matrices in a grid
(:func:`matrix_grid`), and checks the memory claims: one merged quadratic
equals the sum of per-task penalties (:func:`merged_penalty_check`), and
what a training step costs as tasks accumulate (:func:`seconds_per_step`).

    results = run_methods(lambda s: eb.permuted_mnist(10, seed=s), RUNS, seeds=(0, 1, 2), epochs=2)
    mean, low, high = mean_interval([eb.average_accuracy(r.R) for r in results["ewc"]])
"""

from __future__ import annotations

import dataclasses
import time

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from ewcbook import evaluation, plots
from ewcbook.data import NUM_PIXELS, Task
from ewcbook.evaluation import average_accuracy, evaluate_tasks
from ewcbook.experiments import METHODS, train_sequence
from ewcbook.penalties import EWC
from ewcbook.training import ContinualModel, FusedAdam
from ewcbook.utils import set_seed

#: Colours and names of the methods :data:`ewcbook.plots.METHODS` does not have.
EXTRA_METHODS = {"l2_moving": ("#17becf", "L2, moving anchor")}



def color(method: str) -> str:
    """The colour of ``method``: :func:`ewcbook.plots.color`, plus ``"l2_moving"``."""
    return EXTRA_METHODS[method][0] if method in EXTRA_METHODS else plots.color(method)


def label(method: str) -> str:
    """The display name of ``method``: :func:`ewcbook.plots.label`, plus ``"l2_moving"``."""
    return EXTRA_METHODS[method][1] if method in EXTRA_METHODS else plots.label(method)


# --- intervals and verdicts ---------------------------------------------------------------


def mean_interval(values) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of ``values`` (one per seed).

    Returns:
        ``(mean, low, high)``; with a single value, ``low = high = mean``.

    Raises:
        ValueError: if ``values`` is empty, has more than 31 entries or is not finite.

    Example:
        >>> mean_interval([0.90, 0.92, 0.94])
        (0.92, 0.8703..., 0.9696...)
    """
    values = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    return tuple(float(v) for v in evaluation.mean_interval(values))


def paired_difference(a, b) -> tuple[float, float, float]:
    """Mean and 95 % interval of ``a − b`` over paired seeds (same seed, same
    initial weights, data order and permutations, so the pairing removes the
    luck the two runs share)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up seed by seed, got shapes {a.shape} and {b.shape}")
    return mean_interval(a - b)


def verdict(interval, higher: str, lower: str, unclear: str) -> str:
    """One of three written sentences, chosen by where an interval of a
    difference lies: above 0 (``higher``), below 0 (``lower``), or across it
    (``unclear``). Glue the result: re-running with other seeds keeps the
    prose and the numbers in agreement."""
    _, low, high = interval
    if low > 0:
        return higher
    if high < 0:
        return lower
    return unclear


def sign_of(interval) -> int:
    """+1, -1 or 0: the sign an interval of a difference supports (0 when it spans 0)."""
    _, low, high = interval
    return 1 if low > 0 else -1 if high < 0 else 0


def weakest_within_noise(scores: dict, strengths: dict, n_examples: int):
    """The candidate to keep from a validation grid: among those whose score
    is within one standard error of the best, the weakest penalty.

    A single validation run cannot tell apart scores closer than the noise
    of its own accuracy, sqrt(p (1 − p) / n) for n validation examples; among
    the candidates it cannot separate from the best, the weakest penalty is
    the safer bet for a longer sequence, where penalties add up.

    Args:
        scores: ``{candidate: validation accuracy}``.
        strengths: ``{candidate: sort key of its strength}``, e.g. ``(λ, γ)``;
            the smallest key is the weakest penalty.
        n_examples: number of validation examples behind each score.

    Returns:
        ``(candidate, standard_error)``.
    """
    if not scores or set(scores) != set(strengths):
        raise ValueError("scores and strengths must be non-empty and name the same candidates")
    if not isinstance(n_examples, (int, np.integer)) or n_examples <= 0:
        raise ValueError(f"n_examples must be a positive int, got {n_examples!r}")
    best = max(scores.values())
    error = float(np.sqrt(best * (1 - best) / n_examples))
    close = [c for c, score in scores.items() if score >= best - error]
    return min(close, key=lambda c: strengths[c]), error


# --- runs over seeds ------------------------------------------------------------------------


def run_methods(make_tasks, runs: dict, seeds, *, hidden=(400, 400), **settings) -> dict:
    """Every run of ``runs`` on the tasks of every seed, paired by seed.

    Args:
        make_tasks: ``seed -> list of tasks`` (e.g. permuted MNIST with that
            seed's permutations).
        runs: ``{name: {"method": ..., "strength": ..., "gamma": ...}}``.
        seeds: ints; for each, every run starts from the same initial weights
            (:func:`ewcbook.utils.set_seed` before building the network) and
            sees the same batches.
        hidden: hidden widths of :func:`ewcbook.models.mlp` (10 classes).
        **settings: passed to :func:`ewcbook.experiments.train_sequence`
            (epochs, batch_size, learning_rate, fisher_samples, reset_optimizer,
            evaluate_unseen...).

    Task 1 is trained once per seed and shared (``train_sequence``'s
    ``start``): with no penalty yet, every run would train it alike.
    A run's ``seconds`` leave that shared task out.

    Returns:
        ``{name: [SequenceResult, one per seed]}``.
    """
    from ewcbook.models import mlp

    seeds = _check_seeds(seeds)
    for name, run in runs.items():
        if not isinstance(run, dict) or run.get("method") not in METHODS:
            raise ValueError(f"runs[{name!r}] must be a dict with a 'method' in {METHODS}, got {run!r}")
    first_settings = dict(settings)  # task 1 alone: a per-task list of epochs keeps its first entry
    if "epochs" in settings and not isinstance(settings["epochs"], int):
        first_settings["epochs"] = list(settings["epochs"])[:1]
    results = {name: [] for name in runs}
    for seed in seeds:
        tasks = make_tasks(seed)
        set_seed(seed)  # every run of a seed trains task 1 alike (no penalty yet): train it once
        first = train_sequence(mlp(10, tuple(hidden)), tasks[:1], seed=seed, **first_settings)
        for name, run in runs.items():
            results[name].append(train_sequence(mlp(10, tuple(hidden)), tasks, seed=seed, start=first,
                                                **{"strength": 0.0, **run}, **settings))
    return results


@dataclasses.dataclass
class JointResult:
    """What :func:`train_joint` measured: ``accuracies`` per task (test), ``seconds``, the ``learner``."""

    accuracies: np.ndarray
    seconds: float
    learner: ContinualModel


def joint_dataset(tasks, *, batch_size: int = 128, seed: int = 0) -> tf.data.Dataset:
    """Batches drawn from the union of ``tasks``' training sets, shuffled afresh every epoch.

    Works for tasks with their own pixel permutations (permuted MNIST), which
    :func:`ewcbook.data.joint` cannot join: images are held once per distinct
    training array as uint8, and each batch is gathered and permuted on the fly.
    """
    tasks = _check_tasks(tasks)
    bases, base_of = [], []
    for t in tasks:
        found = next((k for k, b in enumerate(bases) if b is t.x_train), None)
        if found is None:
            bases.append(t.x_train)
            found = len(bases) - 1
        base_of.append(found)
    sizes = {len(b) for b in bases} | {len(t.y_train) for t in tasks}
    if len(sizes) != 1 or len({t.num_classes for t in tasks}) != 1:
        raise ValueError("tasks must have training sets of the same size and the same num_classes")
    n = sizes.pop()
    images = tf.constant(np.stack([b.reshape(n, -1) for b in bases]))  # (bases, n, 784) uint8
    labels = tf.constant(np.stack([t.y_train for t in tasks]).astype(np.int64))  # (tasks, n)
    perms = tf.constant(np.stack([np.arange(NUM_PIXELS) if t.permutation is None else t.permutation
                                  for t in tasks]).astype(np.int32))
    base_of, shape = tf.constant(base_of, tf.int32), tasks[0].x_train.shape[1:]
    total = len(tasks) * n

    def gather(i):
        task, example = i // n, i % n
        flat = tf.gather_nd(images, tf.stack([tf.gather(base_of, task), example], axis=1))
        x = tf.gather(tf.cast(flat, tf.float32) / 255.0, tf.gather(perms, task), batch_dims=1)
        return tf.reshape(x, [-1, *shape]), tf.gather_nd(labels, tf.stack([task, example], axis=1))

    epoch_seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).take(1)
    orders = epoch_seeds.map(lambda s: tf.random.experimental.stateless_shuffle(tf.range(total), [s, int(seed)]))
    batches = orders.flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    return batches.map(gather).apply(
        tf.data.experimental.assert_cardinality(-(-total // batch_size))).prefetch(tf.data.AUTOTUNE)


def train_joint(network: keras.Model, tasks, *, epochs: int, batch_size: int = 128,
                learning_rate: float = 1e-3, seed: int = 0) -> JointResult:
    """The upper bound: ``network`` trained on all ``tasks`` at once (Adam,
    ``epochs`` passes over their union: as many steps as the whole sequence),
    then evaluated on each task's test set."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    start = time.perf_counter()
    learner = ContinualModel(network)
    learner.compile(optimizer=FusedAdam(learning_rate),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=32)
    learner.fit(joint_dataset(tasks, batch_size=batch_size, seed=seed), epochs=epochs, verbose=0, shuffle=False)
    accuracies = evaluate_tasks(learner, tasks)
    return JointResult(accuracies, time.perf_counter() - start, learner)


def run_joint(make_tasks, seeds, *, hidden=(400, 400), **settings) -> list[JointResult]:
    """:func:`train_joint` for every seed (same initial weights as :func:`run_methods`)."""
    from ewcbook.models import mlp

    out = []
    for seed in _check_seeds(seeds):
        tasks = make_tasks(seed)
        set_seed(seed)
        out.append(train_joint(mlp(10, tuple(hidden)), tasks, seed=seed, **settings))
    return out


# --- reading the accuracy matrix ------------------------------------------------------------


def intransigence(R, reference) -> float:
    """Mean over tasks k of ``reference[k] − R[k, k]`` (Chaudhry et al. 2018):
    how much worse each task is learned, when it is learned, than by a
    reference model (here: joint training on all tasks, a common stand-in for
    the paper's joint training on tasks 1..k). Positive: the method cannot
    learn new tasks as well."""
    R, reference = np.asarray(R, dtype=float), np.asarray(reference, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or reference.shape != (len(R),):
        raise ValueError(f"R must be T x T and reference of length T, got {R.shape} and {reference.shape}")
    return float(np.mean(reference - R.diagonal()))


def seen_curve(R) -> np.ndarray:
    """Mean accuracy over the tasks seen so far, after each task: ``R[i, :i+1].mean()``."""
    R = np.asarray(R, dtype=float)
    return np.array([R[i, : i + 1].mean() for i in range(len(R))])


def summary(results: dict, joint=None) -> dict:
    """Per run name: mean and 95 % interval over seeds of average accuracy,
    mean of the diagonal, forgetting, backward transfer and (with ``joint``,
    a list of :class:`JointResult` paired by seed) intransigence."""
    from ewcbook.evaluation import backward_transfer, forgetting

    table = {}
    for name, runs in results.items():
        rows = {
            "average_accuracy": [average_accuracy(r.R) for r in runs],
            "diagonal": [float(np.mean(r.R.diagonal())) for r in runs],
            "forgetting": [forgetting(r.R) for r in runs],
            "bwt": [backward_transfer(r.R) for r in runs],
        }
        if joint is not None:
            rows["intransigence"] = [intransigence(r.R, j.accuracies) for r, j in zip(runs, joint)]
        table[name] = {key: mean_interval(values) for key, values in rows.items()}
        table[name]["values"] = rows["average_accuracy"]
    if joint is not None:
        values = [float(j.accuracies.mean()) for j in joint]
        table["joint"] = {"average_accuracy": mean_interval(values), "values": values}
    return table


def stored_floats(learner) -> int:
    """Numbers a learner keeps for its penalties: anchors plus importance (Fisher) arrays.

    ``learner`` is a :class:`ewcbook.training.ContinualModel` or a list of penalties.
    """
    penalties = learner.penalties if isinstance(learner, ContinualModel) else list(learner)
    total = 0
    for p in penalties:
        total += sum(int(np.prod(a.shape)) for a in p.anchors)
        total += sum(int(np.prod(w.shape)) for w in (p.importance or []))
    return total


# --- the memory claims, checked -------------------------------------------------------------


def merged_penalty_check(network: keras.Model, anchors, fishers, strength: float, point) -> dict:
    """Value and gradient of one merged EWC quadratic against the sum of
    separate per-task EWC penalties, at the weights ``point``.

    Args:
        network: a built network (its weights are restored afterwards).
        anchors: one list of weight arrays (``get_weights()`` order) per task.
        fishers: one Fisher (one array per trainable variable) per task.
        strength: λ.
        point: the weights at which both are compared.

    Returns:
        ``{"value_separate", "value_merged", "value_rel_diff", "grad_rel_diff",
        "floats_separate", "floats_merged"}``: the relative differences are
        ``|a − b| / |a|`` of the values and ``max|g_a − g_b| / max|g_a|`` of
        the gradients.
    """
    if len(anchors) != len(fishers) or not anchors:
        raise ValueError("anchors and fishers must hold one entry per task, and at least one")
    saved = network.get_weights()
    try:
        separate, merged = [], None
        for anchor, fisher in zip(anchors, fishers):
            network.set_weights(anchor)
            separate.append(EWC(network, fisher, strength))
            if merged is None:
                merged = EWC(network, fisher, strength)
            else:
                merged.consolidate(fisher)
        network.set_weights(point)
        variables = network.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            value_separate = tf.add_n([p() for p in separate])
            value_merged = merged()
        g_sep = tape.gradient(value_separate, variables)
        g_mer = tape.gradient(value_merged, variables)
    finally:
        network.set_weights(saved)
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in g_sep)
    grad_diff = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(g_sep, g_mer))
    vs, vm = float(value_separate), float(value_merged)
    return {
        "value_separate": vs,
        "value_merged": vm,
        "value_rel_diff": abs(vs - vm) / abs(vs),
        "grad_rel_diff": grad_diff / scale,
        "floats_separate": stored_floats(separate),
        "floats_merged": stored_floats([merged]),
    }


def seconds_per_step(learner: ContinualModel, task: Task, penalties, *, batch_size: int = 128,
                     steps: int = 64, repeats: int = 3) -> float:
    """Wall seconds of one training step of ``learner`` on ``task`` with
    ``penalties`` in place: the fastest of ``repeats`` epochs of at most
    ``steps`` steps (the least disturbed by other jobs), after one epoch that
    traces. ``learner``'s weights and penalties are restored afterwards."""
    saved_weights, saved_penalties = learner.network.get_weights(), learner.penalties
    learner.penalties = penalties
    learner.compile(optimizer=FusedAdam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=8)
    limit = min(len(task.y_train), batch_size * steps)
    data = task.dataset("train", batch_size=batch_size, limit=limit)
    try:
        learner.fit(data, epochs=1, verbose=0, shuffle=False)  # trace
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            learner.fit(data, epochs=1, verbose=0, shuffle=False)
            times.append(time.perf_counter() - start)
    finally:
        learner.network.set_weights(saved_weights)
        learner.penalties = saved_penalties
    return float(min(times)) / -(-limit // batch_size)


# --- figures --------------------------------------------------------------------------------


def matrix_grid(matrices: dict, *, columns: int = 3, title: str | None = None, names=None):
    """The accuracy matrices ``{method: R}`` side by side, in rows of ``columns``.

    Each cell shows 100·R[i, j] rounded, so a 10 × 10 matrix stays readable
    at page width; one shared colour scale.
    """
    if not matrices:
        raise ValueError("matrices must not be empty")
    rows = -(-len(matrices) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.9 * columns + 0.8, 2.9 * rows + 0.4), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (method, R) in zip(axes.flat, matrices.items()):
        R = np.asarray(R)
        T = len(R)
        image = ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
        for i, j in zip(*np.nonzero(~np.isnan(R))):  # NaN: a task not evaluated before it was trained on
            ax.text(j, i, f"{100 * R[i, j]:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if R[i, j] < 0.6 else "black")
        ticks = list(range(T))
        labels = names or [str(k + 1) for k in ticks]
        ax.set(xticks=ticks, yticks=ticks, title=label(method))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
        ax.grid(False)
    for ax in axes.flat[len(matrices):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("after training on task")
    for ax in axes[-1, :]:
        ax.set_xlabel("accuracy on task")
    fig.colorbar(image, ax=axes, shrink=0.5, label="test accuracy")
    if title:
        fig.suptitle(title)
    return fig


def _check_seeds(seeds) -> list[int]:
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints >= 0, got {seeds!r}")
    return [int(s) for s in seeds]


def _check_tasks(tasks) -> list:
    if isinstance(tasks, Task) or not tasks or not all(isinstance(t, Task) for t in tasks):
        raise TypeError("tasks must be a non-empty list of Task objects")
    return list(tasks)
