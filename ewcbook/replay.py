"""Experience replay: a small memory of earlier tasks' examples, trained on again.

:class:`ReplayMemory` keeps ``per_class`` training examples of every class of
every task it is given, drawn at random (class-balanced) when the task ends.
While a later task trains, :meth:`ReplayMemory.mixed_dataset` puts a batch of
remembered examples beside every batch of the task, as van de Ven et al.
do: the loss is (1/t) · (the task's loss) + (1 − 1/t) · (the memory's loss)
on the t-th task, each a mean over its half of the batch, so every task seen
so far weighs alike. Remembered examples are trained on their own task's
output units (:func:`ewcbook.training.unit_table`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ewcbook.checks import instance, integer
from ewcbook.data import Task, normalise_pixels
from ewcbook.models import num_outputs
from ewcbook.training import ContinualModel, unit_table


class ReplayMemory:
    """A class-balanced memory of examples of earlier tasks.

    Args:
        per_class: how many training examples of each class of each task to
            keep (a positive int): the memory holds ``per_class`` × classes
            × tasks examples.
        seed: the seed of which examples are kept.

    Attributes:
        images: uint8 images ``(M, 28, 28, 1)`` as their task showed them
            (its permutation applied).
        labels: their labels ``(M,)``.
        units: ``{label: units}`` of the tasks they came from.
        tasks: how many tasks were added.
    """

    def __init__(self, per_class: int, seed: int = 0):
        self.per_class = integer(per_class, "per_class", minimum=1)
        self.seed = integer(seed, "seed")
        self.images, self.labels, self.units, self.tasks = None, None, {}, 0

    def __len__(self) -> int:
        return 0 if self.labels is None else len(self.labels)

    def add(self, task: Task) -> None:
        """Keep ``per_class`` random training examples of each of ``task``'s classes."""
        instance(task, "task", Task)
        rng = np.random.default_rng([self.seed, self.tasks])
        x, y = task.arrays("train")
        keep = []
        for label in np.unique(y):
            where = np.flatnonzero(y == label)
            if len(where) < self.per_class:
                raise ValueError(f"task {task.name} has {len(where)} examples of class {label}, fewer than "
                                 f"per_class={self.per_class}")
            keep.append(np.sort(rng.choice(where, self.per_class, replace=False)))
            self.units[int(label)] = task.units
        keep = np.concatenate(keep)
        images = task.shown(x[keep])
        self.images = images if self.images is None else np.concatenate([self.images, images])
        self.labels = y[keep] if self.labels is None else np.concatenate([self.labels, y[keep]])
        self.tasks += 1

    def class_counts(self) -> dict:
        """``{label: examples kept}``."""
        labels, counts = np.unique(self.labels if self.labels is not None else [], return_counts=True)
        return {int(k): int(c) for k, c in zip(labels, counts)}

    def mixed_dataset(self, task: Task, *, batch_size: int = 128, seed: int = 0) -> tf.data.Dataset:
        """Batches of ``task``'s training split, each with ``batch_size`` remembered examples beside it.

        Yields ``(images, labels, sample_weights)``: the task's batch first, then
        the memory's, drawn in a fresh random order every pass over the memory
        (from ``seed``). The sample weights make the batch's mean loss
        (1/t) · (the task's mean) + (1 − 1/t) · (the memory's mean), t = the
        number of tasks in the memory plus one. With an empty memory, the
        task's batches alone (weights 1).
        """
        instance(task, "task", Task)
        batch_size, seed = integer(batch_size, "batch_size", minimum=1), integer(seed, "seed")
        current = task.dataset("train", batch_size=batch_size, seed=seed)
        if not len(self):
            return current.map(lambda x, y: (x, y, tf.ones(tf.shape(y))))
        flat = tf.constant(self.images.reshape(len(self), -1))
        shape, order = self.images.shape[1:], tf.range(flat.shape[1])
        labels = tf.constant(self.labels.astype(task.y_train.dtype))
        t = float(self.tasks + 1)
        remembered = (tf.data.Dataset.range(len(self)).shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
                      .repeat().batch(batch_size, drop_remainder=True))

        def mix(batch, indices):
            x, y = batch
            x_old = tf.reshape(normalise_pixels(tf.gather(flat, indices), order), [-1, *shape])
            n_new, n_old = tf.cast(tf.shape(y)[0], tf.float32), tf.cast(tf.shape(indices)[0], tf.float32)
            n = n_new + n_old
            weights = tf.concat([tf.fill(tf.shape(y), n / (t * n_new)),
                                 tf.fill(tf.shape(indices), n * (t - 1.0) / (t * n_old))], axis=0)
            return tf.concat([x, x_old], 0), tf.concat([y, tf.gather(labels, indices)], 0), weights

        cardinality = current.cardinality()
        mixed = tf.data.Dataset.zip(current, remembered).map(mix)
        return mixed.apply(tf.data.experimental.assert_cardinality(cardinality)).prefetch(tf.data.AUTOTUNE)

    def table(self, task: Task, outputs: int):
        """The active-unit table for ``task`` trained with this memory (:func:`ewcbook.training.unit_table`)."""
        return unit_table(task, outputs, self.units)

    # --- saving (see ewcbook.state): the memory belongs to no weights, so it loads into any model ---
    kind = "replay_memory"
    variables = ()

    def get_config(self) -> dict:
        return {"per_class": self.per_class, "seed": self.seed, "tasks": self.tasks}

    def state_arrays(self) -> dict:
        if not len(self):
            return {}
        units = [[k, *(v if v is not None else (-1, -1))] for k, v in sorted(self.units.items())]
        return {"images": self.images, "labels": self.labels, "units": np.array(units, np.int64).reshape(-1, 3)}

    @classmethod
    def from_state(cls, model, config: dict, arrays: dict):
        memory = cls(config["per_class"], config["seed"])
        memory.tasks = int(config["tasks"])
        if "images" in arrays:
            memory.images, memory.labels = arrays["images"], arrays["labels"]
            memory.units = {int(k): None if start < 0 else (int(start), int(stop))
                            for k, start, stop in arrays["units"]}
        return memory

    def __repr__(self) -> str:
        return f"ReplayMemory(per_class={self.per_class}, examples={len(self)}, tasks={self.tasks})"


class Replay:
    """Experience replay as a method of :func:`ewcbook.protocol.train_sequence`.

    Each sequence gets a fresh :class:`ReplayMemory` at ``start``; every task
    but the first trains on its batches mixed with the memory's
    (:meth:`ReplayMemory.mixed_dataset`), and each task is added to the memory
    when it ends. Combine it with a penalty as a list of methods.

    Args:
        per_class: examples kept per class of each task.
        seed: the seed of which examples are kept.
    """

    def __init__(self, per_class: int, seed: int = 0):
        self.per_class, self.seed = integer(per_class, "per_class", minimum=1), integer(seed, "seed")
        self.memory = ReplayMemory(per_class, seed)

    def start(self, learner: ContinualModel) -> None:
        self.memory = ReplayMemory(self.per_class, self.seed)

    def training_data(self, learner: ContinualModel, task: Task, batch_size: int, seed: int):
        if not len(self.memory):
            return None
        data = self.memory.mixed_dataset(task, batch_size=batch_size, seed=seed)
        return data, self.memory.table(task, num_outputs(learner))

    def consolidate(self, learner: ContinualModel, task: Task, seed: int = 0) -> None:
        self.memory.add(task)

    def __repr__(self) -> str:
        return f"Replay(per_class={self.per_class}, seed={self.seed})"
