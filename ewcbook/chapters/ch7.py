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
"""

from __future__ import annotations

import dataclasses

import keras

from ewcbook.checks import instance, optional_integer, real
from ewcbook.data import Task
from ewcbook.kfac import KroneckerEWC, kronecker_factors


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
