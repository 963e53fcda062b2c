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

from ewcbook.checks import instance
from ewcbook.data import Task, check_tasks, normalise_pixels
from ewcbook.models import MASKED_LOGIT


def task_accuracy(model: keras.Model, task: Task, split: str = "test") -> float:
    """Fraction of ``task``'s ``split`` that ``model`` classifies correctly.

    The whole split goes through one traced function per model (made once
    and reused), which normalises and permutes the uint8 images itself: no
    input pipeline is built and nothing is retraced from task to task.
    """
    instance(model, "model", keras.Model, "a keras.Model")
    instance(task, "task", Task)
    correct, num_outputs = count_correct(model, task, split)
    if num_outputs < task.num_classes:
        raise ValueError(f"model has {num_outputs} outputs but task {task.name} has {task.num_classes} classes")
    if task.test_units is not None and task.test_units[1] > num_outputs:
        raise ValueError(f"model has {num_outputs} outputs but task {task.name} tests on units {task.test_units}")
    return float(correct) / len(task.arrays(split)[1])


def count_correct(model: keras.Model, task: Task, split: str = "test"):
    """(number of correct predictions on ``task``'s ``split``, number of outputs).

    The prediction is the argmax over the task's :attr:`~ewcbook.data.Task.test_units`
    (all units when it has none).

    For a stack of copies (:mod:`ewcbook.copies`), whose logits are
    ``(copies, examples, classes)``, the count is an array, one per copy.
    """
    images, labels = task.arrays(split)
    correct, num_outputs = _counter(model)(
        tf.constant(images.reshape(len(images), -1)),
        tf.constant(task.pixel_order(), tf.int32),
        tf.constant(labels, tf.int64),
        tf.constant(task.test_units or (0, 2**31 - 1), tf.int32),
        images.shape[1:],
    )
    return correct.numpy(), int(num_outputs)


_COUNTERS = weakref.WeakKeyDictionary()  # model -> traced counting function


def _counter(model):
    if model not in _COUNTERS:
        ref = weakref.ref(model)  # the cache must not keep the model alive

        @tf.function(reduce_retracing=True)
        def count(flat, permutation, labels, units, shape):
            x = tf.reshape(normalise_pixels(flat, permutation), [-1, *shape])
            logits = ref()(x, training=False)
            unit = tf.range(tf.shape(logits)[-1])
            logits = tf.where((unit >= units[0]) & (unit < units[1]), logits, MASKED_LOGIT)
            correct = tf.reduce_sum(tf.cast(tf.argmax(logits, axis=-1) == labels, tf.int64), axis=-1)
            return correct, tf.shape(logits)[-1]

        _COUNTERS[model] = count
    return _COUNTERS[model]


def evaluate_tasks(model: keras.Model, tasks, split: str = "test") -> np.ndarray:
    """Accuracy of ``model`` on each task of ``tasks``, as an array."""
    return np.array([task_accuracy(model, t, split) for t in check_tasks(tasks)])


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
