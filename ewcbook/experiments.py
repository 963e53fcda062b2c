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
from ewcbook.training import ContinualModel, FusedAdam

METHODS = ("none", "l2", "l2_moving", "ewc", "online_ewc")


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
    steps_per_execution: int = 32,
    reset_optimizer: bool = True,
) -> keras.callbacks.History:
    """Train ``learner`` on ``task`` with Adam and sparse categorical
    cross-entropy on logits; its penalties are added to the loss.

    Args:
        learner: the model to train.
        task: the task; its training split is shuffled afresh every epoch
            from ``seed``.
        epochs, batch_size, learning_rate: the protocol.
        callbacks, verbose: passed to ``fit``.
        steps_per_execution: batches per call of the traced training step
            (Keras' ``compile`` argument): fewer round trips to Python.
            Batch-level callbacks run once per execution.
        reset_optimizer: ``True`` (default) starts every task with a fresh
            Adam (zero moments, step 0); ``False`` keeps its state from the
            previous task.

    The learner is compiled once; later calls with the same learning rate
    and ``steps_per_execution`` only reset the optimizer's variables to
    their initial values (the same as a fresh Adam), so the traced step is
    reused instead of traced again for every task.
    """
    if not isinstance(learner, ContinualModel):
        raise TypeError(f"learner must be a ContinualModel, got {type(learner).__name__}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if not isinstance(steps_per_execution, int) or isinstance(steps_per_execution, bool) or steps_per_execution <= 0:
        raise ValueError(f"steps_per_execution must be a positive int, got {steps_per_execution!r}")
    if not isinstance(reset_optimizer, bool):
        raise TypeError(f"reset_optimizer must be a bool, got {type(reset_optimizer).__name__}")
    _compile(learner, float(learning_rate), steps_per_execution, reset_optimizer)
    data = task.dataset("train", batch_size=batch_size, seed=seed)
    return learner.fit(data, epochs=epochs, verbose=verbose, callbacks=list(callbacks), shuffle=False)


def _compile(learner, learning_rate, steps_per_execution, reset_optimizer) -> None:
    """Compile ``learner`` for :func:`fit_task`, or reset the optimizer it was compiled with."""
    settings = (learning_rate, steps_per_execution)
    made = getattr(learner, "_fit_task_compiled", None)
    if made is not None and made[0] == settings and made[1] is learner.optimizer:
        if reset_optimizer:
            for variable, value in zip(learner.optimizer.variables, made[2]):
                variable.assign(value)
        return
    learner.compile(
        optimizer=FusedAdam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    learner.optimizer.build(learner.trainable_variables)
    learner._fit_task_compiled = (settings, learner.optimizer, [v.numpy() for v in learner.optimizer.variables])


def make_penalty(method: str, learner: ContinualModel, strength: float, fisher=None, gamma: float = 1.0):
    """The penalty of ``method`` anchored at ``learner``'s current weights."""
    if method == "l2":
        return L2Anchor(learner, strength)
    if method == "l2_moving":
        return L2Anchor(learner, strength, moving=True)
    if method == "ewc":
        return EWC(learner, fisher, strength)
    if method == "online_ewc":
        return OnlineEWC(learner, fisher, strength, gamma)
    raise ValueError(f"method must be 'l2', 'l2_moving', 'ewc' or 'online_ewc', got {method!r}")


def _is_method(penalty, method: str) -> bool:
    if method in ("l2", "l2_moving"):
        return isinstance(penalty, L2Anchor) and penalty.moving == (method == "l2_moving")
    return type(penalty) is {"ewc": EWC, "online_ewc": OnlineEWC}[method]


def consolidate(
    method: str,
    learner: ContinualModel,
    task: Task,
    strength: float,
    *,
    estimator: str = "sampled",
    fisher_samples: int | None = None,
    gamma: float = 1.0,
    seed: int = 0,
) -> None:
    """Add ``task``, just learned, to ``learner``'s penalty for ``method``.

    ``"none"`` adds nothing. The first call adds one penalty; later calls
    fold each task into that same penalty (one quadratic, see
    :mod:`ewcbook.penalties`): ``"l2"`` and ``"ewc"`` add an anchor for the
    task (the sum of per-task penalties), ``"l2_moving"`` moves the anchor,
    ``"online_ewc"`` decays the Fisher by γ, adds the new one and moves the
    anchor.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(learner, ContinualModel):
        raise TypeError(f"learner must be a ContinualModel, got {type(learner).__name__}")
    if method == "none":
        return
    fisher = None
    if method in ("ewc", "online_ewc"):
        data = (task.inputs("train", fisher_samples), task.arrays("train")[1][:fisher_samples])
        fisher = diagonal_fisher(learner, data, estimator=estimator, seed=seed)
    existing = [p for p in learner.penalties if _is_method(p, method)]
    if not existing:
        learner.penalties = learner.penalties + [make_penalty(method, learner, strength, fisher, gamma)]
    elif fisher is None:
        existing[0].consolidate()
    else:
        existing[0].consolidate(fisher)


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
    estimator: str = "sampled",
    fisher_samples: int | None = None,
    gamma: float = 1.0,
    seed: int = 0,
    callbacks=(),
    verbose: int = 0,
    reset_optimizer: bool = True,
    consolidate_with=None,
    evaluate_unseen: bool = True,
    start: SequenceResult | None = None,
) -> SequenceResult:
    """Train ``network`` on ``tasks`` in order with ``method``'s penalty.

    Args:
        network: a built Keras model that outputs logits.
        tasks: the tasks, in training order.
        method: one of :data:`METHODS` (see :func:`consolidate`).
        strength: λ of the penalty (ignored by ``"none"``).
        epochs: epochs per task, an int or one int per task.
        estimator, fisher_samples: passed to :func:`ewcbook.fisher.diagonal_fisher`.
        gamma: γ of online EWC.
        seed: seed of the shuffles and of the Fisher's sampled labels.
        callbacks: Keras callbacks for every ``fit``.
        reset_optimizer: a fresh Adam for every task (``True``) or one Adam
            kept across the whole sequence.
        consolidate_with: ``None``, or a function ``(learner, task, seed)``
            called after every task but the last instead of ``method``'s
            consolidation (e.g. :func:`ewcbook.kfac.consolidate_kfac`).
        evaluate_unseen: also evaluate the tasks not trained on yet (the
            upper triangle of R); ``False`` leaves them NaN and saves that time.
        start: ``None``, or the result of the same call on ``tasks[:1]``
            with no penalty (e.g. with ``method="none"``). Every method trains
            the first task alike, so several methods can share it: the
            sequence then starts from a copy of that learner (weights and
            optimizer state) and gives the same result as training task 1 again.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise TypeError("tasks must be a non-empty list of Task objects")
    epochs = [epochs] * len(tasks) if isinstance(epochs, int) else list(epochs)
    if len(epochs) != len(tasks):
        raise ValueError(f"epochs must be an int or one int per task ({len(tasks)}), got {epochs!r}")
    started = time.perf_counter()
    learner = ContinualModel(network)
    R, histories = np.full((len(tasks), len(tasks)), np.nan), []
    for i, task in enumerate(tasks):
        if i == 0 and start is not None:
            _continue_from(start, learner, learning_rate)
            histories.append(start.histories[0])
        else:
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
                    reset_optimizer=reset_optimizer,
                )
            )
        seen = tasks if evaluate_unseen else tasks[: i + 1]
        R[i, : len(seen)] = evaluate_tasks(learner, seen)
        if i < len(tasks) - 1 and consolidate_with is not None:
            consolidate_with(learner, task, seed + i)
        elif i < len(tasks) - 1:
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
    return SequenceResult(R, time.perf_counter() - started, learner, histories)


def _continue_from(start: SequenceResult, learner: ContinualModel, learning_rate: float) -> None:
    """Give ``learner`` the weights and Adam state of ``start``'s learner after its first task."""
    if not isinstance(start, SequenceResult) or len(start.histories) != 1 or start.learner.penalties:
        raise ValueError("start must be the SequenceResult of one task trained with no penalty")
    source = start.learner
    (rate, steps_per_execution), *_ = source._fit_task_compiled
    if rate != float(learning_rate):
        raise ValueError(f"start was trained with learning_rate {rate:g}, not {learning_rate:g}")
    learner.network.set_weights(source.network.get_weights())
    _compile(learner, rate, steps_per_execution, True)
    if len(learner.optimizer.variables) != len(source.optimizer.variables):
        raise ValueError("start was trained with another network")
    for mine, theirs in zip(learner.optimizer.variables, source.optimizer.variables):
        mine.assign(theirs)


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
    estimator: str = "sampled",
    fisher_samples: int | None = None,
) -> list[dict]:
    """Accuracy on two tasks for each penalty strength, over several seeds.

    Task A is trained once per seed; every strength then starts task B from
    the same weights (and, for EWC, the same Fisher), so the strengths differ
    only in λ. The strengths of a seed train side by side as one model
    (:func:`ewcbook.sweeps.train_copies`), each exactly as it would alone.

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
    from ewcbook.sweeps import copy_accuracies, train_copies
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
