"""Chapter 7 (Kronecker-factored EWC): the exact per-task sum, the control of the merge.

    consolidation = KroneckerSum(strength=3.0, fisher_samples=1000)
    result = eb.train_sequence(eb.mlp(10, (400, 400)), tasks, consolidation)

The library's :class:`ewcbook.kfac.KroneckerConsolidation` carries the sum of
the tasks' Kronecker-factored precisions as one Kronecker product per layer,
the nearest in the Frobenius norm. :class:`KroneckerSum` keeps the sum as it
is, one :class:`ewcbook.kfac.KroneckerEWC` per task, every term anchored at
the weights where the latest task ended (the online Laplace approximation of
Ritter et al. 2018, one Gaussian whose precision is the sum): the same method
without the merge, at a cost per step that grows with the tasks.

The chapter's sequences run through :func:`run_all`, in several processes at
once (:func:`ewcbook.chapters.processes.process_map`): one job per method, λ
and seed, its tasks built in the worker from a :class:`Tasks`, and only its
numbers sent back (:class:`RunResult`).

    jobs = [(m, Tasks(10, limit=20000), 10.0, s) for m in ("online_ewc", "kfac") for s in (0, 1, 2)]
    results = run_all(jobs, workers=2, hidden=(400, 400), fisher_samples=1000, epochs=2, batch_size=128,
                      reset_optimizer=False)
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from ewcbook.chapters import MARGIN, style, within_noise
from ewcbook.chapters.processes import process_map
from ewcbook.checks import instance, integer, one_of, optional_integer, real
from ewcbook.data import Task, permuted_mnist, validation_split
from ewcbook.kfac import KroneckerConsolidation, KroneckerEWC, kronecker_factors
from ewcbook.models import mlp
from ewcbook.protocol import Consolidation, train_sequence
from ewcbook.utils import set_seed

#: The two methods of the chapter's sequences.
METHODS = ("online_ewc", "kfac")


@dataclasses.dataclass(frozen=True)
class KroneckerSum:
    """One Kronecker term per task, all anchored at the latest weights.

    Attributes:
        strength: λ of every term (the scale of :class:`ewcbook.kfac.KroneckerEWC`).
        fisher_samples: the factors from the first ``fisher_samples`` training
            examples of the task; ``None``: all of them.

    Raises:
        ValueError: a negative strength or a fisher_samples below 1.

    Example:
        >>> KroneckerSum(3.0, fisher_samples=1000).strength
        3.0
    """

    strength: float
    fisher_samples: int | None = None

    def __post_init__(self):
        real(self.strength, "strength", low=0.0)
        optional_integer(self.fisher_samples, "fisher_samples", minimum=1)

    def consolidate(self, learner: keras.Model, task: Task, seed: int = 0) -> None:
        """Move every term's anchor to the current weights and add ``task``'s term."""
        instance(task, "task", Task)
        data = task.dataset("train", batch_size=1024, shuffle=False, limit=self.fisher_samples)
        factors = kronecker_factors(learner, data, seed=seed)
        for penalty in learner.penalties:
            if isinstance(penalty, KroneckerEWC):
                for anchor, variable in zip(penalty.anchors, penalty.variables):
                    anchor.assign(variable.numpy())
        learner.penalties = list(learner.penalties) + [KroneckerEWC(learner, factors, self.strength)]


# --- the chapter's sequences, in several processes -------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tasks:
    """The chapter's permuted-MNIST tasks, as a recipe a worker process builds them from:
    ``num_tasks`` tasks with the permutations of ``seed`` (the same for every run), at most
    ``limit`` images per split, and, with ``val_size``, their validation splits
    (:func:`ewcbook.data.validation_split`). ``Tasks(...)()`` is the list of tasks.

    Example:
        >>> Tasks(10, seed=0, limit=6000, val_size=2000).num_tasks
        10
    """

    num_tasks: int
    seed: int = 0
    limit: int | None = None
    val_size: int | None = None

    def __post_init__(self):
        integer(self.num_tasks, "num_tasks", minimum=1)
        integer(self.seed, "seed", minimum=0)
        optional_integer(self.limit, "limit", minimum=1)
        optional_integer(self.val_size, "val_size", minimum=1)

    def __call__(self) -> list[Task]:
        tasks = permuted_mnist(self.num_tasks, seed=self.seed, limit=self.limit)
        return tasks if self.val_size is None else [validation_split(t, self.val_size) for t in tasks]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What the chapter reads of one sequence: the accuracy matrix ``R`` (``R[i, j]``: test
    accuracy on task j after task i), its wall ``seconds``, and, for K-FAC, the relative error of
    each merge per layer (``merge_errors``, one row per merge; empty for online EWC)."""

    R: np.ndarray
    seconds: float
    merge_errors: list


def consolidation(method: str, strength: float, fisher_samples: int | None = None):
    """The chapter's consolidation of ``method`` after every task, with γ = 1 and sampled labels:
    ``"online_ewc"`` (one running diagonal Fisher) or ``"kfac"`` (one merged Kronecker product
    per layer, :class:`ewcbook.kfac.KroneckerConsolidation`)."""
    one_of(method, "method", METHODS)
    if method == "kfac":
        return KroneckerConsolidation(strength, fisher_samples=fisher_samples)
    return Consolidation("online_ewc", strength, fisher_samples=fisher_samples)


def run(job: tuple) -> RunResult:
    """One sequence, ``(method, tasks, strength, seed, hidden, fisher_samples, settings)``:
    :func:`consolidation` of ``method`` at λ ``strength`` over ``tasks()`` (a :class:`Tasks`),
    from the initial weights of ``seed`` (784-``hidden``-10), ``settings`` passed to
    :func:`ewcbook.protocol.train_sequence`."""
    method, tasks, strength, seed, hidden, fisher_samples, settings = job
    set_seed(seed)
    network = mlp(10, tuple(hidden))
    result = train_sequence(network, tasks(), consolidation(method, strength, fisher_samples), seed=seed,
                            **settings)
    penalties = result.learner.penalties
    merges = penalties[0].merge_errors if method == "kfac" and penalties else []
    return RunResult(result.R, result.seconds, [[float(e) for e in row] for row in merges])


def run_all(jobs, *, hidden=(400, 400), fisher_samples: int | None = None, workers: int = 1,
            **settings) -> list[RunResult]:
    """Every job's sequence, in order, in ``workers`` processes at once.

    Args:
        jobs: ``(method, tasks, strength, seed)`` each: ``"online_ewc"`` or ``"kfac"``, a
            :class:`Tasks` (or any picklable ``() -> list of tasks``), λ, and the seed of the
            initial weights, shuffles and sampled labels.
        hidden: hidden widths of :func:`ewcbook.models.mlp` (10 classes).
        fisher_samples: each task's curvature from its first ``fisher_samples`` training images.
        workers: processes (:func:`ewcbook.chapters.processes.process_map`; each worker has
            ``cores // workers`` threads, so the numbers equal those of one process with as many
            threads, tested).
        **settings: passed to :func:`ewcbook.protocol.train_sequence` (epochs, batch_size,
            reset_optimizer...).

    Returns:
        one :class:`RunResult` per job, in the order of ``jobs``.
    """
    checked = []
    for job in jobs:
        method, tasks, strength, seed = job
        consolidation(method, strength, fisher_samples)  # bad fields fail here, not in a worker
        if not callable(tasks):
            raise TypeError(f"tasks must be a Tasks (a picklable () -> list of tasks), got {type(tasks).__name__}")
        checked.append((method, tasks, strength, integer(seed, "seed", minimum=0), tuple(hidden), fisher_samples,
                        dict(settings)))
    return process_map(run, checked, workers)


def choice_sentence(validation: dict, n_examples: int) -> str:
    """What the validation says of each method's λ (``validation``: ``{method: {λ: accuracy}}`` over
    ``n_examples`` validation images): the λ it cannot tell apart from the best
    (:func:`ewcbook.chapters.within_noise`), of which the chapter keeps the weakest, or that it singles out
    one λ for every method."""
    unresolved = []
    for method, scores in validation.items():
        close = sorted(within_noise(scores, n_examples))
        if len(close) > 1:
            points = "; ".join(f"λ = {lam:g}: {scores[lam]:.3f}" for lam in close)
            unresolved.append(f"for {style.label(method)} ({points})")
    if not unresolved:
        return f"Each choice beats every other λ by more than a standard error of the validation images plus {MARGIN}."
    return (
        f"The validation cannot tell apart the λ {' or '.join(unresolved)}: they lie within one standard error "
        f"(on {n_examples:,} validation images) plus {MARGIN} of the best, and the weakest of them is kept, so "
        "that the choice does not hang on the last digit."
    )
