"""Accuracy per task, the accuracy matrix and the metrics read from it.

R[i, j] is the accuracy on task j after training on tasks 0..i. From it:

* average accuracy: the mean of the last row, over all tasks;
* backward transfer (Lopez-Paz & Ranzato 2017): mean over j < T-1 of
  R[T-1, j] − R[j, j] (negative when old tasks are forgotten);
* forgetting (Chaudhry et al. 2018): mean over j < T-1 of the best
  accuracy task j ever had minus its final accuracy.
"""

from __future__ import annotations

import keras
import numpy as np

from ewcbook.data import Task


def task_accuracy(model: keras.Model, task: Task, split: str = "test", *, batch_size: int = 1024) -> float:
    """Fraction of ``task``'s ``split`` that ``model`` classifies correctly."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a Task, got {type(task).__name__}")
    logits = model.predict(task.dataset(split, batch_size=batch_size, shuffle=False), verbose=0)
    _, labels = task.arrays(split)
    if logits.shape[-1] < task.num_classes:
        raise ValueError(f"model has {logits.shape[-1]} outputs but task {task.name} has {task.num_classes} classes")
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def evaluate_tasks(model: keras.Model, tasks, split: str = "test") -> np.ndarray:
    """Accuracy of ``model`` on each task of ``tasks``, as an array."""
    if isinstance(tasks, Task) or not tasks:
        raise TypeError("tasks must be a non-empty list of Task objects")
    return np.array([task_accuracy(model, t, split) for t in tasks])


def _check_matrix(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"R must be a square T x T matrix, got shape {R.shape}")
    if np.any(np.isnan(R)) or np.any(R < 0) or np.any(R > 1):
        raise ValueError("R must hold accuracies in [0, 1]")
    return R


def average_accuracy(R) -> float:
    """Mean accuracy over all tasks after the last one: mean of R[T-1, :]."""
    return float(_check_matrix(R)[-1].mean())


def backward_transfer(R) -> float:
    """Mean of R[T-1, j] − R[j, j] over j < T-1 (0 for a single task)."""
    R = _check_matrix(R)
    T = len(R)
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)])) if T > 1 else 0.0


def forgetting(R) -> float:
    """Mean over j < T-1 of max_{l < T-1} R[l, j] − R[T-1, j] (0 for one task)."""
    R = _check_matrix(R)
    T = len(R)
    return float(np.mean([R[j : T - 1, j].max() - R[-1, j] for j in range(T - 1)])) if T > 1 else 0.0


class TaskAccuracyHistory(keras.callbacks.Callback):
    """Evaluates every task at the end of each epoch (for forgetting curves).

    After ``fit``, :attr:`accuracies` is an array of shape (epochs, tasks);
    the same numbers are added to Keras' logs as ``acc_<task name>``, so
    they also appear in ``History``.

    Args:
        tasks: the tasks to evaluate, e.g. ``[task_a, task_b]``.
        split: ``"test"`` (default) or ``"train"``.
    """

    def __init__(self, tasks, split: str = "test"):
        super().__init__()
        if isinstance(tasks, Task) or not tasks or not all(isinstance(t, Task) for t in tasks):
            raise TypeError("tasks must be a non-empty list of Task objects")
        self.tasks, self.split, self.rows = list(tasks), split, []

    @property
    def accuracies(self) -> np.ndarray:
        return np.array(self.rows).reshape(-1, len(self.tasks))

    def on_epoch_end(self, epoch, logs=None):
        row = evaluate_tasks(self.model, self.tasks, self.split)
        self.rows.append(row)
        if logs is not None:
            logs.update({f"acc_{t.name}": float(a) for t, a in zip(self.tasks, row)})
