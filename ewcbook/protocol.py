"""Task sequences end to end: train on each task in turn, consolidate, evaluate.

This is the protocol every chapter and ``python -m ewcbook reproduce`` use:

1. train on task 0 (:func:`ewcbook.training.fit_task`: Adam, a fresh
   optimizer state for every task unless told otherwise);
2. evaluate on all tasks: row 0 of the accuracy matrix R;
3. consolidate the task just learned (the method's penalty takes it in),
   move to the next task.

A *method* is what step 3 does: an object with a method
``consolidate(learner, task, seed)``. :class:`Consolidation` is the one for
the quadratic penalties of :mod:`ewcbook.penalties`;
:class:`ewcbook.kfac.KroneckerConsolidation` is another.

    ewc = Consolidation("ewc", strength=100.0, fisher_samples=1000)
    result = train_sequence(mlp(10, (400, 400)), permuted_mnist(10), ewc, epochs=2)
    average_accuracy(result.R)
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from ewcbook.checks import boolean, instance, integer, one_of, optional_integer, real
from ewcbook.data import Task, check_tasks
from ewcbook.evaluation import evaluate_tasks
from ewcbook.fisher import check_estimator, diagonal_fisher
from ewcbook.penalties import EWC, L2Anchor, OnlineEWC
from ewcbook.training import ContinualModel, fit_task

#: The continual-learning methods of :class:`Consolidation`.
METHODS = ("none", "l2", "l2_moving", "ewc", "online_ewc")


@dataclasses.dataclass(frozen=True)
class Consolidation:
    """How a method takes in each task it has just learned.

    ``"none"`` adds nothing. The first :meth:`consolidate` adds one penalty
    (:mod:`ewcbook.penalties`), anchored at the current weights; later calls
    fold each task into that same penalty (one quadratic): ``"l2"`` and
    ``"ewc"`` add an anchor for the task (the sum of per-task penalties),
    ``"l2_moving"`` moves the anchor, ``"online_ewc"`` decays the Fisher by
    γ, adds the new one and moves the anchor.

    Attributes:
        method: one of :data:`METHODS`.
        strength: λ of the penalty, a finite number >= 0 (ignored by ``"none"``).
        gamma: γ of online EWC, in (0, 1].
        estimator: the Fisher's estimator (:func:`ewcbook.fisher.diagonal_fisher`).
        fisher_samples: the Fisher from the first ``fisher_samples`` training
            examples of the task; ``None``: all of them.
    """

    method: str = "none"
    strength: float = 0.0
    gamma: float = 1.0
    estimator: str = "sampled"
    fisher_samples: int | None = None

    def __post_init__(self):
        one_of(self.method, "method", METHODS)
        real(self.strength, "strength", low=0.0)
        real(self.gamma, "gamma", low=0.0, high=1.0, open_low=True)
        check_estimator(self.estimator)
        optional_integer(self.fisher_samples, "fisher_samples", minimum=1)

    def consolidate(self, learner: ContinualModel, task: Task, seed: int = 0) -> None:
        """Add ``task``, just learned, to ``learner``'s penalty (the Fisher's labels sampled from ``seed``)."""
        instance(learner, "learner", ContinualModel)
        if self.method == "none":
            return
        fisher = None
        if self.method in ("ewc", "online_ewc"):
            n = self.fisher_samples
            data = (task.inputs("train", n), task.arrays("train")[1][:n])
            fisher = diagonal_fisher(learner, data, estimator=self.estimator, seed=seed)
        existing = [p for p in learner.penalties if self._owns(p)]
        if not existing:
            learner.penalties = learner.penalties + [self._penalty(learner, fisher)]
        elif fisher is None:
            existing[0].consolidate()
        else:
            existing[0].consolidate(fisher)

    def _penalty(self, learner, fisher):
        if self.method in ("l2", "l2_moving"):
            return L2Anchor(learner, self.strength, moving=self.method == "l2_moving")
        if self.method == "ewc":
            return EWC(learner, fisher, self.strength)
        return OnlineEWC(learner, fisher, self.strength, self.gamma)

    def _owns(self, penalty) -> bool:
        if self.method in ("l2", "l2_moving"):
            return isinstance(penalty, L2Anchor) and penalty.moving == (self.method == "l2_moving")
        return type(penalty) is {"ewc": EWC, "online_ewc": OnlineEWC}[self.method]


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
    method=None,
    *,
    epochs=6,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    reset_optimizer: bool = True,
    seed: int = 0,
    callbacks=(),
    verbose: int = 0,
    evaluate_unseen: bool = True,
    fit=fit_task,
) -> SequenceResult:
    """Train ``network`` on ``tasks`` in order, consolidating each task with ``method``.

    Args:
        network: a built Keras model that outputs logits.
        tasks: the tasks, in training order.
        method: ``None`` (no penalty), a :class:`Consolidation`, or any
            object with ``consolidate(learner, task, seed)``, called after
            every task but the last.
        epochs: epochs per task, an int or one int per task.
        batch_size, learning_rate, callbacks, verbose: as for
            :func:`ewcbook.training.fit_task`.
        reset_optimizer: a fresh Adam for every task (``True``) or one Adam
            kept across the whole sequence.
        seed: task i is shuffled (and consolidated) with seed ``seed + i``.
        evaluate_unseen: also evaluate the tasks not trained on yet (the
            upper triangle of R); ``False`` leaves them NaN and saves that time.
        fit: what trains one task, called as :func:`ewcbook.training.fit_task`
            is (the default) and returning its ``History``.
    """
    tasks = check_tasks(tasks)
    if method is not None and not callable(getattr(method, "consolidate", None)):
        raise TypeError(f"method must be None or have a consolidate(learner, task, seed) method, got {method!r:.80}")
    epochs = list(epochs) if isinstance(epochs, (list, tuple)) else [epochs] * len(tasks)
    if len(epochs) != len(tasks):
        raise ValueError(f"epochs must be an int or one int per task ({len(tasks)}), got {epochs!r}")
    epochs = [integer(e, "epochs", minimum=1) for e in epochs]
    boolean(evaluate_unseen, "evaluate_unseen")
    seed = integer(seed, "seed")
    started = time.perf_counter()
    learner = ContinualModel(network)
    R, histories = np.full((len(tasks), len(tasks)), np.nan), []
    for i, task in enumerate(tasks):
        histories.append(
            fit(learner, task, epochs=epochs[i], batch_size=batch_size, learning_rate=learning_rate, seed=seed + i,
                callbacks=callbacks, verbose=verbose, reset_optimizer=reset_optimizer)
        )
        seen = tasks if evaluate_unseen else tasks[: i + 1]
        R[i, : len(seen)] = evaluate_tasks(learner, seen)
        if i < len(tasks) - 1 and method is not None:
            method.consolidate(learner, task, seed + i)
    return SequenceResult(R, time.perf_counter() - started, learner, histories)
