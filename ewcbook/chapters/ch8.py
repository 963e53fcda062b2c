"""Chapter 8 (where EWC stands): split MNIST's five tasks in the three scenarios,
eight learners, hyperparameters chosen on validation splits, results over
seeds with paired intervals, and what a class-incremental network predicts.

    rows = runs(Data(), ["none", "ewc"], strengths, seeds=[0, 1], protocol=Protocol())
    summary(rows, "class", "ewc")                  # mean and 95 % interval
    compare(rows, "class", "replay", "ewc")       # paired by seed, with its sentence
"""

from __future__ import annotations

import dataclasses
import functools

import matplotlib.pyplot as plt
import numpy as np

from ewcbook import chapters, stats
from ewcbook.chapters import style
from ewcbook.chapters.processes import process_map
from ewcbook.checks import one_of
from ewcbook.data import SCENARIOS, joint, split_mnist_tasks, validation_split
from ewcbook.evaluation import evaluate_tasks
from ewcbook.models import mlp, units_mask
from ewcbook.protocol import Consolidation, train_sequence
from ewcbook.replay import Replay
from ewcbook.training import ContinualModel, fit_task
from ewcbook.utils import set_seed

#: The learners of the chapter, in the order of its tables.
METHODS = ("none", "ewc", "online_ewc", "si", "lwf", "replay", "ewc_replay", "joint")
#: The learners with a strength to choose, and their four candidates each (the same budget for all).
GRIDS = {
    "ewc": (1e3, 1e5, 1e7, 1e9),
    "online_ewc": (1e3, 1e5, 1e7, 1e9),
    "si": (1.0, 1e2, 1e4, 1e6),
    "lwf": (0.1, 1.0, 10.0, 100.0),
    "ewc_replay": (1e3, 1e5, 1e7, 1e9),
}
#: The book's rule for a verdict that must hold on another CPU (:data:`ewcbook.chapters.MARGIN`): a
#: difference of average accuracies counts as resolved only if its interval clears 0 by more than this,
#: and a λ choice only if the best beats the runner-up by more than two standard errors plus this.
MARGIN = chapters.MARGIN
#: How a scenario is named in the text.
SCENARIO_NAMES = {"task": "task-incremental", "domain": "domain-incremental", "class": "class-incremental"}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What every learner shares: the network, the training budget, the methods' fixed settings."""

    hidden: tuple = (400, 400)
    epochs: int = 1
    batch_size: int = 128
    per_class: int = 100
    fisher_samples: int = 1000
    gamma: float = 1.0


def method(name: str, strength: float, protocol: Protocol):
    """The :func:`ewcbook.protocol.train_sequence` method of learner ``name`` (``None`` for no penalty)."""
    one_of(name, "name", METHODS[:-1])
    penalty = dict(strength=strength, fisher_samples=protocol.fisher_samples, gamma=protocol.gamma)
    if name == "none":
        return None
    if name == "replay":
        return Replay(protocol.per_class)
    if name == "ewc_replay":
        return [Consolidation("ewc", **penalty), Replay(protocol.per_class)]
    return Consolidation(name, **penalty)


def sequence_accuracies(tasks, name: str, strength: float, protocol: Protocol, seed: int) -> np.ndarray:
    """The accuracy matrix R of one run of learner ``name`` over ``tasks``."""
    set_seed(seed)
    network = mlp(tasks[0].num_classes, protocol.hidden)
    result = train_sequence(network, tasks, method(name, strength, protocol), epochs=protocol.epochs,
                            batch_size=protocol.batch_size, seed=seed, evaluate_unseen=False)
    return result.R


def joint_learner(tasks, protocol: Protocol, seed: int) -> ContinualModel:
    """One network trained on every task at once, each example on its own task's units,
    for ``protocol.epochs`` passes over the union (the steps of the whole sequence)."""
    set_seed(seed)
    learner = ContinualModel(mlp(tasks[0].num_classes, protocol.hidden))
    union = joint(tasks, "all")
    outputs = tasks[0].num_classes
    table = np.ones((outputs, outputs), bool)
    for task in tasks:
        for label in np.unique(task.y_train):
            table[label] = units_mask(task.test_units, outputs)  # each digit at the units it is tested on
    fit_task(learner, union, epochs=protocol.epochs, batch_size=protocol.batch_size, seed=seed, units=table)
    return learner


@dataclasses.dataclass(frozen=True)
class Data:
    """Which tasks a run trains on: split MNIST's five tasks in a scenario, the first ``limit``
    images of each split, and, with ``val_size``, the validation splits (the last ``val_size``
    training images of each task as its test set)."""

    limit: int | None = None
    val_size: int | None = None

    def tasks(self, scenario: str) -> list:
        return _tasks(scenario, self.limit, self.val_size)


@functools.cache
def _tasks(scenario, limit, val_size):
    tasks = split_mnist_tasks(scenario, limit=limit)
    return tasks if val_size is None else [validation_split(t, val_size) for t in tasks]


def run(job: tuple) -> list[float]:
    """One run, ``(data, scenario, name, strength, protocol, seed)``: the accuracy on each task after the last."""
    data, scenario, name, strength, protocol, seed = job
    tasks = data.tasks(scenario)
    if name == "joint":
        return [float(a) for a in evaluate_tasks(joint_learner(tasks, protocol, seed), tasks)]
    return [float(a) for a in sequence_accuracies(tasks, name, strength, protocol, seed)[-1]]


def run_all(jobs, workers: int = 1) -> list[list[float]]:
    """:func:`run` on every job, in order; with ``workers`` > 1, in that many processes at once
    (:func:`ewcbook.chapters.processes.process_map`: the same results either way)."""
    return process_map(run, jobs, workers)


def runs(data: Data, names, strengths: dict, *, seeds, protocol: Protocol, scenarios=SCENARIOS,
         workers: int = 1) -> list[dict]:
    """Every run: for each scenario, seed and learner, the final accuracies.

    Args:
        data: the tasks (:class:`Data`).
        names: learners of :data:`METHODS`.
        strengths: ``{(scenario, name): strength}`` for the learners of :data:`GRIDS`.
        seeds: the seeds; learners of one seed share the initial weights and
            the order of the batches, so differences pair up by seed.
        workers: processes to run in (:func:`run_all`).

    Returns:
        One dict per run: ``scenario``, ``method``, ``strength``, ``seed``,
        ``final`` (accuracy on each task after the last), ``average``.
    """
    jobs = [(data, scenario, name, strengths.get((scenario, name), 0.0), protocol, seed)
            for scenario in scenarios for seed in seeds for name in names]
    return [dict(scenario=scenario, method=name, strength=strength, seed=seed, final=final,
                 average=float(np.mean(final)))
            for (_, scenario, name, strength, _, seed), final in zip(jobs, run_all(jobs, workers))]


def select(data: Data, *, seed: int, protocol: Protocol, grids=GRIDS, scenarios=SCENARIOS,
           workers: int = 1) -> dict:
    """Each tuned learner's strength in each scenario, by average accuracy on validation splits.

    Returns:
        ``{(scenario, name): dict(best=strength, scores={strength: accuracy},
        resolved=bool)}``: ``resolved`` is False when the runner-up is within
        two binomial standard errors of the best on the validation images, plus :data:`MARGIN`
        (:func:`ewcbook.chapters.choice_resolved`).
    """
    jobs = [(data, scenario, name, strength, protocol, seed)
            for scenario in scenarios for name, grid in grids.items() for strength in grid]
    finals = dict(zip([(s, n, v) for _, s, n, v, _, _ in jobs], run_all(jobs, workers)))
    chosen = {}
    for scenario in scenarios:
        n = sum(len(t.y_test) for t in data.tasks(scenario))
        for name, grid in grids.items():
            scores = {strength: float(np.mean(finals[(scenario, name, strength)])) for strength in grid}
            chosen[(scenario, name)] = dict(best=max(scores, key=scores.get), scores=scores,
                                            resolved=chapters.choice_resolved(scores, n))
    return chosen


def averages(rows, scenario: str, name: str) -> np.ndarray:
    """Average accuracies of ``name`` in ``scenario``, in seed order."""
    picked = sorted((r for r in rows if r["scenario"] == scenario and r["method"] == name), key=lambda r: r["seed"])
    if not picked:
        raise ValueError(f"no runs of {name!r} in scenario {scenario!r}")
    return np.array([r["average"] for r in picked])


def summary(rows, scenario: str, name: str) -> stats.Interval:
    """Mean average accuracy of ``name`` in ``scenario`` over seeds, with its 95 % t-interval."""
    return stats.mean_interval(averages(rows, scenario, name))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``a − b`` in one scenario, seed by seed, and its verdict in words."""

    scenario: str
    a: str
    b: str
    interval: stats.Interval
    sentence: str


def compare(rows, scenario: str, a: str, b: str) -> Comparison:
    """The paired difference of learners ``a`` and ``b`` in ``scenario``, and a sentence that quotes it."""
    d = stats.paired_difference(averages(rows, scenario, a), averages(rows, scenario, b))
    name_a, name_b = style.label(a), style.label(b)
    numbers = f"{d.mean:+.3f}, 95 % interval {d.low:+.3f} to {d.high:+.3f}"
    allowed = max(abs(d.low), abs(d.high))
    sentence = stats.verdict(
        d,
        f"{name_a} ends above {name_b} ({numbers})",
        f"{name_a} ends below {name_b} ({numbers})",
        f"{name_a} and {name_b} are not resolved ({numbers}: differences up to {allowed:.3f} allowed)",
        margin=MARGIN,
    )
    return Comparison(scenario, a, b, d, sentence)


def recommendations(rows, scenario: str, names) -> list[str]:
    """The learners of ``names`` (joint training left out) that no other learner beats in ``scenario``:
    the best by mean, and every learner whose paired difference to it is not resolved below 0
    (by :data:`MARGIN`)."""
    names = [n for n in names if n != "joint"]
    best = max(names, key=lambda n: summary(rows, scenario, n).mean)
    return [n for n in names
            if n == best or stats.resolved_sign(compare(rows, scenario, n, best).interval, MARGIN) >= 0]


def results_figure(rows, names, scenarios=SCENARIOS):
    """Average accuracy (mean and 95 % interval over seeds) of every learner, one panel per scenario."""
    fig, axes = plt.subplots(1, len(scenarios), figsize=(9.6, 3.6), sharey=True)
    for ax, scenario in zip(np.atleast_1d(axes), scenarios):
        for k, name in enumerate(names):
            mean, low, high = summary(rows, scenario, name)
            ax.errorbar(k, mean, yerr=[[mean - low], [high - mean]], fmt="o", color=style.color(name),
                        capsize=3, markersize=6)
        ax.axhline(0.1 if scenario == "class" else 0.5, color="0.6", lw=0.8, ls=":")  # chance
        ax.set_xticks(range(len(names)), [style.label(n) for n in names], rotation=60, ha="right", fontsize=9)
        ax.set_title(SCENARIO_NAMES[scenario])
        ax.set_ylim(0, 1.02)
    np.atleast_1d(axes)[0].set_ylabel("average accuracy after task 5")
    fig.tight_layout()
    return fig


def confusion(learner, tasks) -> np.ndarray:
    """Rows: true label, columns: predicted label (argmax over every unit), over the test sets of ``tasks``;
    each row sums to 1."""
    outputs = tasks[0].num_classes
    counts = np.zeros((outputs, outputs))
    for task in tasks:
        predicted = np.argmax(learner.predict(task.inputs("test"), verbose=0, batch_size=1024), axis=-1)
        np.add.at(counts, (task.y_test, predicted), 1)
    return counts / counts.sum(axis=1, keepdims=True)


def confusion_figure(matrices: dict):
    """One confusion matrix per learner (``{name: matrix}``), side by side."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices) + 1.0, 3.4), sharey=True,
                             layout="constrained")
    for ax, (name, m) in zip(np.atleast_1d(axes), matrices.items()):
        image = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
        ax.set(title=style.label(name), xlabel="predicted digit", xticks=range(len(m)), yticks=range(len(m)))
        ax.grid(False)
    np.atleast_1d(axes)[0].set_ylabel("true digit")
    fig.colorbar(image, ax=axes, shrink=0.8, label="share of the true digit")
    return fig


def trained_learner(tasks, name: str, strength: float, protocol: Protocol, seed: int) -> ContinualModel:
    """The learner after the whole sequence (for :func:`confusion`)."""
    set_seed(seed)
    if name == "joint":
        return joint_learner(tasks, protocol, seed)
    network = mlp(tasks[0].num_classes, protocol.hidden)
    return train_sequence(network, tasks, method(name, strength, protocol), epochs=protocol.epochs,
                          batch_size=protocol.batch_size, seed=seed, evaluate_unseen=False).learner


#: Hsu et al. (2018), Table 2: average accuracy (%) over the tasks seen, after split MNIST's five tasks,
#: mean ± spread over 10 runs, as printed in fig/results_split_mnist.png of GT-RIPL/Continual-Learning-Benchmark
#: (commit d78b997). Columns: incremental task, domain, class.
HSU2018 = {
    "none": ((93.46, 2.01), (55.16, 1.38), (19.71, 0.08)),  # their "Adam" baseline (our optimizer)
    "ewc": ((97.70, 0.81), (58.85, 2.59), (19.80, 0.05)),
    "online_ewc": ((98.04, 1.10), (57.33, 1.44), (19.77, 0.04)),
    "si": ((98.56, 0.49), (64.76, 3.09), (19.67, 0.09)),
    "lwf": ((99.60, 0.03), (71.02, 1.26), (24.17, 0.33)),
    "replay": ((99.40, 0.08), (95.16, 0.49), (90.78, 0.85)),  # their "Naive rehearsal"
    "joint": ((99.52, 0.16), (98.59, 0.15), (97.53, 0.30)),  # their "Offline (upper bound)"
}

