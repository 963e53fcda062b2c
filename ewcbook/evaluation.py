"""Accuracy per task, the accuracy matrix and the metrics read from it.

R[i, j] is the accuracy on task j after training on tasks 0..i. From it:

* average accuracy: the mean of the last row, over all tasks;
* backward transfer (Lopez-Paz & Ranzato 2017): mean over j < T-1 of
  R[T-1, j] − R[j, j] (negative when old tasks are forgotten);
* forgetting (Chaudhry et al. 2018): mean over j < T-1 of the best
  accuracy task j ever had minus its final accuracy.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from ewcbook.data import NUM_PIXELS, Task


def task_accuracy(model: keras.Model, task: Task, split: str = "test") -> float:
    """Fraction of ``task``'s ``split`` that ``model`` classifies correctly.

    The whole split goes through one traced function per model (made once
    and reused), which normalises and permutes the uint8 images itself: no
    input pipeline is built and nothing is retraced from task to task.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a Task, got {type(task).__name__}")
    correct, num_outputs = count_correct(model, task, split)
    if num_outputs < task.num_classes:
        raise ValueError(f"model has {num_outputs} outputs but task {task.name} has {task.num_classes} classes")
    return float(correct) / len(task.arrays(split)[1])


def count_correct(model: keras.Model, task: Task, split: str = "test"):
    """(number of correct predictions on ``task``'s ``split``, number of outputs).

    For a stack of copies (:mod:`ewcbook.sweeps`), whose logits are
    ``(copies, examples, classes)``, the count is an array, one per copy.
    """
    images, labels = task.arrays(split)
    permutation = np.arange(NUM_PIXELS) if task.permutation is None else task.permutation
    correct, num_outputs = _counter(model)(
        tf.constant(images.reshape(len(images), -1)),
        tf.constant(permutation, tf.int32),
        tf.constant(labels, tf.int64),
        images.shape[1:],
    )
    return correct.numpy(), int(num_outputs)


_COUNTERS = weakref.WeakKeyDictionary()  # model -> traced counting function


def _counter(model):
    if model not in _COUNTERS:
        ref = weakref.ref(model)  # the cache must not keep the model alive

        @tf.function(reduce_retracing=True)
        def count(flat, permutation, labels, shape):
            x = tf.reshape(tf.gather(tf.cast(flat, tf.float32) / 255.0, permutation, axis=1), [-1, *shape])
            logits = ref()(x, training=False)
            correct = tf.reduce_sum(tf.cast(tf.argmax(logits, axis=-1) == labels, tf.int64), axis=-1)
            return correct, tf.shape(logits)[-1]

        _COUNTERS[model] = count
    return _COUNTERS[model]


def evaluate_tasks(model: keras.Model, tasks, split: str = "test") -> np.ndarray:
    """Accuracy of ``model`` on each task of ``tasks``, as an array."""
    if isinstance(tasks, Task) or not tasks:
        raise TypeError("tasks must be a non-empty list of Task objects")
    return np.array([task_accuracy(model, t, split) for t in tasks])


#: Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
       2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
       2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_interval(values, axis: int = 0):
    """Mean and 95 % Student-t interval of ``values`` over ``axis`` (the seeds).

    Returns:
        ``(mean, low, high)``; with one value, low = high = mean (no interval).

    Raises:
        ValueError: if there are more than 31 values (no table entry) or none.
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[axis]
    if n == 0 or n > len(T95) + 1:
        raise ValueError(f"values must hold 1 to {len(T95) + 1} entries along axis {axis}, got {n}")
    mean = values.mean(axis=axis)
    if n == 1:
        return mean, mean, mean
    half = T95[n - 2] * values.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def _check_matrix(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"R must be a square T x T matrix, got shape {R.shape}")
    seen = R[np.tril_indices(len(R))]  # above the diagonal, tasks not trained on yet may be NaN (not evaluated)
    if np.any(np.isnan(seen)) or np.any(R < 0) or np.any(R > 1):
        raise ValueError("R must hold accuracies in [0, 1] (NaN only above the diagonal)")
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
    """Evaluates every task during training (for forgetting curves).

    By default at the end of each epoch; with ``every_batches=n``, after
    every n training batches instead (Keras calls batch hooks once per
    execution, so n should be a multiple of ``steps_per_execution``; pass
    ``steps_per_execution=n`` to :func:`ewcbook.experiments.fit_task`).

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
        if isinstance(tasks, Task) or not tasks or not all(isinstance(t, Task) for t in tasks):
            raise TypeError("tasks must be a non-empty list of Task objects")
        if every_batches is not None and (
            not isinstance(every_batches, int) or isinstance(every_batches, bool) or every_batches <= 0
        ):
            raise ValueError(f"every_batches must be None or a positive int, got {every_batches!r}")
        self.tasks, self.split, self.every_batches = list(tasks), split, every_batches
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
