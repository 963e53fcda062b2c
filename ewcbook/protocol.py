"""Task sequences end to end: train on each task in turn, consolidate, evaluate.

This is the protocol every chapter and ``python -m ewcbook reproduce`` use:

1. train on task 0 (:func:`ewcbook.training.fit_task`: Adam, a fresh
   optimizer state for every task unless told otherwise);
2. evaluate on all tasks: row 0 of the accuracy matrix R;
3. consolidate the task just learned (the method's penalty takes it in),
   move to the next task.

A *method* is what step 3 does: an object with a method
``consolidate(learner, task, seed)``. It may also have ``start(learner)``,
called once before the first task (synaptic intelligence starts its path
integral there), and ``training_data(learner, task, batch_size, seed)``,
returning ``(dataset, unit table)`` to train a task on instead of its own
batches, or ``None`` (replay, :class:`ewcbook.replay.Replay`). Several methods
combine as a list (EWC with replay: ``[Consolidation("ewc", ...), Replay(...)]``).
:class:`Consolidation` is the method of the penalties of
:mod:`ewcbook.penalties` and :mod:`ewcbook.distillation`;
:class:`ewcbook.kfac.KroneckerConsolidation` is another. For example::

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
from ewcbook.distillation import LwF
from ewcbook.evaluation import evaluate_tasks
from ewcbook.fisher import check_estimator, diagonal_fisher
from ewcbook.models import num_outputs
from ewcbook.penalties import EWC, L2Anchor, OnlineEWC, SynapticIntelligence
from ewcbook.training import ContinualModel, fit_task

#: The continual-learning methods of :class:`Consolidation`.
METHODS = ("none", "l2", "l2_moving", "ewc", "online_ewc", "si", "lwf")


@dataclasses.dataclass(frozen=True)
class Consolidation:
    """How a method takes in each task it has just learned.

    ``"none"`` adds nothing. The first :meth:`consolidate` adds one penalty
    (:mod:`ewcbook.penalties`), anchored at the current weights; later calls
    fold each task into that same penalty (one quadratic): ``"l2"`` and
    ``"ewc"`` add an anchor for the task (the sum of per-task penalties),
    ``"l2_moving"`` moves the anchor, ``"online_ewc"`` decays the Fisher by
    γ, adds the new one and moves the anchor. ``"si"``
    (:class:`~ewcbook.penalties.SynapticIntelligence`) is added at
    :meth:`start` and turns each task's path integral into importance;
    ``"lwf"`` (:class:`~ewcbook.distillation.LwF`) makes the network just
    trained the teacher, distilling the units of every task seen so far
    (each task's own head, or one head over the classes seen so far).
    The EWC Fisher is that of the task's own units (its
    :attr:`~ewcbook.data.Task.units`).

    Attributes:
        method: one of :data:`METHODS`.
        strength: λ of the penalty, a finite number >= 0 (ignored by ``"none"``).
        gamma: γ of online EWC, in (0, 1].
        estimator: the Fisher's estimator (:func:`ewcbook.fisher.diagonal_fisher`).
        fisher_samples: the Fisher from the first ``fisher_samples`` training
            examples of the task; ``None``: all of them.
        damping: ξ of synaptic intelligence, > 0.
        temperature: T of LwF's distillation, > 0.
    """

    method: str = "none"
    strength: float = 0.0
    gamma: float = 1.0
    estimator: str = "sampled"
    fisher_samples: int | None = None
    damping: float = 0.1
    temperature: float = 2.0

    def __post_init__(self):
        one_of(self.method, "method", METHODS)
        real(self.strength, "strength", low=0.0)
        real(self.gamma, "gamma", low=0.0, high=1.0, open_low=True)
        check_estimator(self.estimator)
        optional_integer(self.fisher_samples, "fisher_samples", minimum=1)
        real(self.damping, "damping", low=0.0, open_low=True)
        real(self.temperature, "temperature", low=0.0, open_low=True)

    def start(self, learner: ContinualModel) -> None:
        """Before the first task: synaptic intelligence starts its path integral here."""
        instance(learner, "learner", ContinualModel)
        if self.method == "si" and not any(self._owns(p) for p in learner.penalties):
            learner.penalties = learner.penalties + [SynapticIntelligence(learner, self.strength, self.damping)]

    def consolidate(self, learner: ContinualModel, task: Task, seed: int = 0) -> None:
        """Add ``task``, just learned, to ``learner``'s penalty (the Fisher's labels sampled from ``seed``)."""
        instance(learner, "learner", ContinualModel)
        instance(task, "task", Task)
        if self.method == "none":
            return
        if self.method == "si":
            self.start(learner)  # a no-op if start was called
        fisher = None
        if self.method in ("ewc", "online_ewc"):
            n = self.fisher_samples
            data = (task.inputs("train", n), task.arrays("train")[1][:n])
            fisher = diagonal_fisher(learner, data, estimator=self.estimator, seed=seed, units=task.units)
        existing = [p for p in learner.penalties if self._owns(p)]
        head = task.units or (0, num_outputs(learner))
        if not existing:
            learner.penalties = learner.penalties + [self._penalty(learner, fisher, head)]
        elif self.method == "lwf":
            existing[0].consolidate(merge_heads(existing[0].heads, head))
        elif fisher is None:
            existing[0].consolidate()
        else:
            existing[0].consolidate(fisher)

    def _penalty(self, learner, fisher, head):
        if self.method in ("l2", "l2_moving"):
            return L2Anchor(learner, self.strength, moving=self.method == "l2_moving")
        if self.method == "ewc":
            return EWC(learner, fisher, self.strength)
        if self.method == "lwf":
            return LwF(learner, self.strength, [head], self.temperature)
        return OnlineEWC(learner, fisher, self.strength, self.gamma)

    def _owns(self, penalty) -> bool:
        if self.method in ("l2", "l2_moving"):
            return isinstance(penalty, L2Anchor) and penalty.moving == (self.method == "l2_moving")
        kinds = {"ewc": EWC, "online_ewc": OnlineEWC, "si": SynapticIntelligence, "lwf": LwF}
        return type(penalty) is kinds[self.method]


def merge_heads(heads, head) -> list[tuple[int, int]]:
    """``heads`` with ``head`` added: a head inside another is dropped (the classes seen so far
    grow from task to task in class-incremental learning; task-incremental heads stay apart)."""
    inside = lambda a, b: b[0] <= a[0] and a[1] <= b[1]  # noqa: E731
    if any(inside(head, h) for h in heads):
        return list(heads)
    return [h for h in heads if not inside(h, head)] + [tuple(head)]


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
        method: ``None`` (no penalty), a :class:`Consolidation`, any object
            with ``consolidate(learner, task, seed)`` (called after every task
            but the last; see the module's note for ``start`` and
            ``training_data``), or a list of them.
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
    methods = [] if method is None else list(method) if isinstance(method, (list, tuple)) else [method]
    for m in methods:
        if not callable(getattr(m, "consolidate", None)):
            raise TypeError(f"method must be None, have a consolidate(learner, task, seed) method or be a list of "
                            f"such methods, got {m!r:.80}")
    if sum(callable(getattr(m, "training_data", None)) for m in methods) > 1:
        raise ValueError("method may hold at most one method with training_data (one replay)")
    epochs = list(epochs) if isinstance(epochs, (list, tuple)) else [epochs] * len(tasks)
    if len(epochs) != len(tasks):
        raise ValueError(f"epochs must be an int or one int per task ({len(tasks)}), got {epochs!r}")
    epochs = [integer(e, "epochs", minimum=1) for e in epochs]
    boolean(evaluate_unseen, "evaluate_unseen")
    seed = integer(seed, "seed")
    started = time.perf_counter()
    learner = ContinualModel(network)
    for m in methods:
        if callable(getattr(m, "start", None)):
            m.start(learner)
    R, histories = np.full((len(tasks), len(tasks)), np.nan), []
    for i, task in enumerate(tasks):
        extra = {}
        for m in methods:
            mixed = m.training_data(learner, task, batch_size, seed + i) if hasattr(m, "training_data") else None
            if mixed is not None:
                extra = {"data": mixed[0], "units": mixed[1]}
        histories.append(
            fit(learner, task, epochs=epochs[i], batch_size=batch_size, learning_rate=learning_rate, seed=seed + i,
                callbacks=callbacks, verbose=verbose, reset_optimizer=reset_optimizer, **extra)
        )
        seen = tasks if evaluate_unseen else tasks[: i + 1]
        R[i, : len(seen)] = evaluate_tasks(learner, seen)
        if i < len(tasks) - 1:
            for m in methods:
                m.consolidate(learner, task, seed + i)
    return SequenceResult(R, time.perf_counter() - started, learner, histories)
