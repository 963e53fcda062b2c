"""Task sequences end to end: train on each task in turn, consolidate, evaluate.

This is the protocol every chapter and ``python -m ewcbook reproduce`` use:

1. train on task 0 (a fresh Adam optimizer for every task);
2. evaluate on all tasks: row 0 of the accuracy matrix R;
3. add the method's penalty for the task just learned, move to the next task.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from ewcbook.data import Task
from ewcbook.evaluation import evaluate_tasks
from ewcbook.fisher import diagonal_fisher
from ewcbook.penalties import EWC, L2Anchor, OnlineEWC
from ewcbook.training import ContinualModel

METHODS = ("none", "l2", "ewc", "online_ewc")


def fit_task(
    learner: ContinualModel,
    task: Task,
    *,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    callbacks=(),
    verbose: int = 0,
) -> keras.callbacks.History:
    """Train ``learner`` on ``task`` with a fresh Adam optimizer and sparse
    categorical cross-entropy on logits; its penalties are added to the loss."""
    if not isinstance(learner, ContinualModel):
        raise TypeError(f"learner must be a ContinualModel, got {type(learner).__name__}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    learner.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    data = task.dataset("train", batch_size=batch_size, seed=seed)
    return learner.fit(data, epochs=epochs, verbose=verbose, callbacks=list(callbacks), shuffle=False)


def make_penalty(method: str, learner: ContinualModel, strength: float, fisher=None, gamma: float = 1.0):
    """The penalty of ``method`` anchored at ``learner``'s current weights."""
    if method == "l2":
        return L2Anchor(learner, strength)
    if method == "ewc":
        return EWC(learner, fisher, strength)
    if method == "online_ewc":
        return OnlineEWC(learner, fisher, strength, gamma)
    raise ValueError(f"method must be 'l2', 'ewc' or 'online_ewc', got {method!r}")


def consolidate(
    method: str,
    learner: ContinualModel,
    task: Task,
    strength: float,
    *,
    estimator: str = "true",
    fisher_samples: int | None = None,
    gamma: float = 1.0,
    seed: int = 0,
) -> None:
    """Add (or update) ``learner``'s penalty for ``task``, just learned.

    ``"none"`` adds nothing; ``"l2"`` and ``"ewc"`` add one penalty per task;
    ``"online_ewc"`` keeps a single :class:`OnlineEWC` and folds each task in.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(learner, ContinualModel):
        raise TypeError(f"learner must be a ContinualModel, got {type(learner).__name__}")
    if method == "none":
        return
    if method == "l2":
        learner.penalties = learner.penalties + [make_penalty("l2", learner, strength)]
        return
    data = task.dataset("train", batch_size=1024, shuffle=False, limit=fisher_samples)
    fisher = diagonal_fisher(learner, data, estimator=estimator, seed=seed)
    online = [p for p in learner.penalties if isinstance(p, OnlineEWC)]
    if method == "online_ewc" and online:
        online[0].consolidate(fisher)
    else:
        learner.penalties = learner.penalties + [make_penalty(method, learner, strength, fisher, gamma)]


@dataclasses.dataclass
class SequenceResult:
    """What :func:`train_sequence` measured.

    Attributes:
        R: accuracy matrix, R[i, j] = test accuracy on task j after task i.
        seconds: wall-clock time of the whole sequence.
        learner: the trained model, with its penalties.
        histories: one Keras ``History`` per task.
    """

    R: np.ndarray
    seconds: float
    learner: ContinualModel
    histories: list


def train_sequence(
    network: keras.Model,
    tasks: list[Task],
    *,
    method: str = "none",
    strength: float = 0.0,
    epochs=6,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    estimator: str = "true",
    fisher_samples: int | None = None,
    gamma: float = 1.0,
    seed: int = 0,
    callbacks=(),
    verbose: int = 0,
) -> SequenceResult:
    """Train ``network`` on ``tasks`` in order with ``method``'s penalty.

    Args:
        network: a built Keras model that outputs logits.
        tasks: the tasks, in training order.
        method: ``"none"``, ``"l2"``, ``"ewc"`` or ``"online_ewc"``.
        strength: λ of the penalty (ignored by ``"none"``).
        epochs: epochs per task, an int or one int per task.
        estimator, fisher_samples: passed to :func:`ewcbook.fisher.diagonal_fisher`.
        gamma: γ of online EWC.
        seed: seed of the shuffles and of the Fisher's sampled labels.
        callbacks: Keras callbacks for every ``fit``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise TypeError("tasks must be a non-empty list of Task objects")
    epochs = [epochs] * len(tasks) if isinstance(epochs, int) else list(epochs)
    if len(epochs) != len(tasks):
        raise ValueError(f"epochs must be an int or one int per task ({len(tasks)}), got {epochs!r}")
    start = time.perf_counter()
    learner = ContinualModel(network)
    R, histories = np.zeros((len(tasks), len(tasks))), []
    for i, task in enumerate(tasks):
        histories.append(
            fit_task(
                learner,
                task,
                epochs=epochs[i],
                batch_size=batch_size,
                learning_rate=learning_rate,
                seed=seed + i,
                callbacks=callbacks,
                verbose=verbose,
            )
        )
        R[i] = evaluate_tasks(learner, tasks)
        if i < len(tasks) - 1:
            consolidate(
                method,
                learner,
                task,
                strength,
                estimator=estimator,
                fisher_samples=fisher_samples,
                gamma=gamma,
                seed=seed + i,
            )
    return SequenceResult(R, time.perf_counter() - start, learner, histories)


def strength_sweep(
    make_network,
    tasks: list[Task],
    method: str,
    strengths,
    *,
    seeds=(0,),
    epochs=6,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    estimator: str = "true",
    fisher_samples: int | None = None,
) -> list[dict]:
    """Accuracy on two tasks for each penalty strength, over several seeds.

    Task A is trained once per seed; every strength then starts task B from
    the same weights (and, for EWC, the same Fisher), so the strengths differ
    only in λ.

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
    from ewcbook.utils import set_seed

    if method not in ("none", "l2", "ewc"):
        raise ValueError(f"method must be 'none', 'l2' or 'ewc', got {method!r}")
    if len(tasks) != 2 or not all(isinstance(t, Task) for t in tasks):
        raise TypeError("tasks must be a list of two Task objects [task_a, task_b]")
    strengths = [0.0] if method == "none" else list(strengths)
    if not strengths:
        raise ValueError("strengths must not be empty")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints >= 0, got {seeds!r}")
    epochs_a, epochs_b = (epochs, epochs) if isinstance(epochs, int) else epochs
    task_a, task_b = tasks
    rows = []
    for seed in seeds:
        set_seed(seed)
        learner = ContinualModel(make_network())
        fit_task(learner, task_a, epochs=epochs_a, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
        before = evaluate_tasks(learner, [task_a])[0]
        weights_a = learner.get_weights()
        fisher = None
        if method == "ewc":
            data = task_a.dataset("train", batch_size=1024, shuffle=False, limit=fisher_samples)
            fisher = diagonal_fisher(learner, data, estimator=estimator, seed=seed)
        for strength in strengths:
            learner.set_weights(weights_a)
            learner.penalties = [] if method == "none" else [make_penalty(method, learner, strength, fisher)]
            fit_task(
                learner, task_b, epochs=epochs_b, batch_size=batch_size, learning_rate=learning_rate, seed=seed + 1
            )
            acc_a, acc_b = evaluate_tasks(learner, tasks)
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
