"""Keras callbacks for continual learning: stop on a non-finite loss, measure every task during training."""

from __future__ import annotations

import math

import keras
import numpy as np

from ewcbook.checks import optional_integer
from ewcbook.data import check_tasks
from ewcbook.evaluation import evaluate_tasks


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops ``fit`` with :class:`NonFiniteLossError` as soon as the logged
    loss is NaN or infinite, instead of carrying on with ruined weights.

    Keras calls it after every execution of ``steps_per_execution`` batches
    (:func:`ewcbook.training.fit_task` uses 32), with the running mean of
    the epoch's loss: one non-finite batch makes that mean non-finite, so no
    bad batch goes unnoticed, and training stops at most 31 batches later.
    The error names the batches of that execution (numbered from 0 within
    the epoch); Keras's own batch number is the execution's last, which may
    lie past the end of a short epoch.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._next_batch = 0

    def on_train_batch_end(self, batch, logs=None):
        first = getattr(self, "_next_batch", 0)
        steps = (self.params or {}).get("steps")
        last = batch if steps is None else min(batch, steps - 1)
        self._next_batch = batch + 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            where = f"at batch {last}" if first >= last else f"in batches {first} to {last}"
            penalties = getattr(self.model, "penalties", [])
            raise NonFiniteLossError(
                f"the training loss became {float(loss)} {where}; the weights are no "
                f"longer usable. Penalties in use: {penalties or 'none'}. A very large penalty "
                "strength or learning rate is the usual cause: lower it and train again."
            )


class TaskAccuracyHistory(keras.callbacks.Callback):
    """Evaluates every task during training (for forgetting curves).

    By default at the end of each epoch; with ``every_batches=n``, after
    every n training batches instead (Keras calls batch hooks once per
    execution, so n should be a multiple of ``steps_per_execution``; pass
    ``steps_per_execution=n`` to :func:`ewcbook.training.fit_task`).

    After ``fit``, :attr:`accuracies` is an array of shape (points, tasks)
    and :attr:`steps` the number of training batches seen at each point,
    counted across every ``fit`` the callback was given to. At epoch ends the
    numbers are also added to Keras' logs as ``acc_<task name>``, so they
    appear in ``History``.

    Args:
        tasks: the tasks to evaluate, e.g. ``[task_a, task_b]``.
        split: ``"test"`` (default) or ``"train"``.
        every_batches: ``None`` (each epoch) or a positive int.
    """

    def __init__(self, tasks, split: str = "test", every_batches: int | None = None):
        super().__init__()
        every_batches = optional_integer(every_batches, "every_batches", minimum=1)
        self.tasks, self.split, self.every_batches = check_tasks(tasks), split, every_batches
        self.rows, self.step_counts, self._seen, self._epoch_start = [], [], 0, 0

    @property
    def accuracies(self) -> np.ndarray:
        return np.array(self.rows).reshape(-1, len(self.tasks))

    @property
    def steps(self) -> np.ndarray:
        return np.array(self.step_counts)

    def _record(self):
        self.rows.append(evaluate_tasks(self.model, self.tasks, self.split))
        self.step_counts.append(self._seen)
        return self.rows[-1]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._seen

    def on_train_batch_end(self, batch, logs=None):
        before, self._seen = self._seen, self._epoch_start + batch + 1
        if self.every_batches and self._seen // self.every_batches > before // self.every_batches:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        if self.every_batches:
            return
        row = self._record()
        if logs is not None:
            logs.update({f"acc_{t.name}": float(a) for t, a in zip(self.tasks, row)})
