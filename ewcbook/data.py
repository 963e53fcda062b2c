"""MNIST tasks for continual learning: split MNIST and permuted MNIST.

Data flow: ``tfds.load("mnist")`` -> numpy arrays -> :class:`Task` objects
(images kept as uint8, labels already remapped) -> :meth:`Task.inputs`, the
whole split normalised and permuted in one op -> :meth:`Task.dataset`, batches
gathered from it in memory (a fresh order every epoch from a fixed seed).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

NUM_PIXELS = 28 * 28

OFFLINE_HELP = (
    "Could not load MNIST with tfds.load('mnist'): the dataset is not in the "
    "TensorFlow Datasets directory and could not be downloaded. On a machine "
    "without internet access, point TFDS at a prepared copy before starting "
    "Python, e.g. `export TFDS_DATA_DIR=/path/to/tensorflow_datasets` (in this "
    "repository: `export TFDS_DATA_DIR=$(realpath ../shared/data/tensorflow_datasets)`); "
    "with internet access, tfds.load downloads it by itself."
)


class MNISTUnavailableError(RuntimeError):
    """Raised when MNIST is neither cached nor downloadable."""


@functools.cache
def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split as numpy arrays with ``tfds.load("mnist")``.

    The arrays are read-only and cached for the life of the process.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, digits)``: uint8 array of shape ``(N, 28, 28, 1)`` and
        int64 array of shape ``(N,)``.

    Raises:
        ValueError: if ``split`` is not ``"train"`` or ``"test"``.
        MNISTUnavailableError: if TFDS has no copy and cannot download one.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    import tensorflow_datasets as tfds

    try:
        images, digits = tfds.as_numpy(tfds.load("mnist", split=split, as_supervised=True, batch_size=-1))
    except OSError as error:  # network failures are OSErrors (requests, urllib)
        raise MNISTUnavailableError(OFFLINE_HELP) from error
    images.setflags(write=False)
    digits.setflags(write=False)
    return images, digits


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a continual-learning sequence.

    Attributes:
        name: short name used in tables and plots (``"A"``, ``"P3"``...).
        x_train, y_train, x_test, y_test: uint8 images ``(N, 28, 28, 1)`` and
            int labels ``(N,)``, already remapped for this task.
        num_classes: size of the output layer the task needs.
        permutation: optional pixel permutation (a length-784 index array)
            applied by :meth:`dataset`; ``None`` leaves the images as they are.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    permutation: np.ndarray | None = None

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(images, labels)`` of ``split`` (``"train"`` or ``"test"``)."""
        if split == "train":
            return self.x_train, self.y_train
        if split == "test":
            return self.x_test, self.y_test
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def inputs(self, split: str, limit: int | None = None) -> tf.Tensor:
        """The images of ``split`` as the network sees them: float32 in [0, 1],
        shape ``(N, 28, 28, 1)``, permuted if the task has a permutation.

        One vectorised op over the whole split (about 0.1 s for 60,000
        images on 2 cores), so nothing is cached and nothing is done per example.
        """
        _check_limit(limit)
        x, _ = _head(*self.arrays(split), limit)
        perm = np.arange(NUM_PIXELS) if self.permutation is None else self.permutation
        flat = _normalise_and_permute(tf.constant(x.reshape(len(x), -1)), tf.constant(perm, tf.int32))
        return tf.reshape(flat, (len(x), *x.shape[1:]))

    def dataset(
        self,
        split: str,
        *,
        batch_size: int = 128,
        shuffle: bool | None = None,
        seed: int = 0,
        limit: int | None = None,
    ) -> tf.data.Dataset:
        """A batched ``tf.data`` pipeline of ``(image, label)`` pairs.

        Images are those of :meth:`inputs`, held in memory as one tensor.
        Nothing is done per example: each pass over the dataset (each epoch)
        draws one permutation of the indices, from a sequence of epoch seeds
        fixed by ``seed`` (the same orders on every run), and each batch is
        one gather of ``batch_size`` rows.

        Args:
            split: ``"train"`` or ``"test"``.
            batch_size: positive int.
            shuffle: shuffle every epoch; defaults to ``True`` for ``"train"``
                and ``False`` for ``"test"``.
            seed: int seed of the shuffle.
            limit: use only the first ``limit`` examples (``None``: all).
        """
        _check_limit(limit)
        _, y = _head(*self.arrays(split), limit)
        _check_positive_int(batch_size, "batch_size")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if shuffle is None:
            shuffle = split == "train"
        x, y = self.inputs(split, limit), tf.constant(y)
        n, num_batches = len(y), -(-len(y) // batch_size)

        def batches_of(order):  # one epoch: the indices cut into batches
            cut = n // batch_size * batch_size
            ds = tf.data.Dataset.from_tensor_slices(tf.reshape(order[:cut], [-1, batch_size]))
            return ds.concatenate(tf.data.Dataset.from_tensors(order[cut:])) if n % batch_size else ds

        if shuffle:  # a new epoch seed on each pass, from a fixed sequence that depends on `seed` only
            epoch_seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).take(1)
            orders = epoch_seeds.map(lambda s: tf.random.experimental.stateless_shuffle(tf.range(n), [s, int(seed)]))
        else:
            orders = tf.data.Dataset.from_tensors(tf.range(n))
        ds = orders.flat_map(batches_of).map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
        return ds.apply(tf.data.experimental.assert_cardinality(num_batches)).prefetch(tf.data.AUTOTUNE)


@tf.function(reduce_retracing=True)
def _normalise_and_permute(flat_uint8, permutation):
    return tf.gather(tf.cast(flat_uint8, tf.float32) / 255.0, permutation, axis=1)


def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _check_limit(limit) -> None:
    if limit is not None:
        _check_positive_int(limit, "limit")


def _head(x: np.ndarray, y: np.ndarray, limit: int | None):
    return (x, y) if limit is None else (x[:limit], y[:limit])


def split_mnist(limit: int | None = None) -> list[Task]:
    """The seed post's two tasks: even digits (A), then odd digits (B).

    Both tasks share one 5-way output: the label is ``digit // 2``, so 0 and
    1 are both class 0, 2 and 3 both class 1, and so on.

    Args:
        limit: keep at most this many examples per split and task (the first
            ones in MNIST's order), for quick runs; ``None`` keeps all.

    Returns:
        ``[task_a, task_b]``.
    """
    _check_limit(limit)
    x_train, d_train = load_mnist("train")
    x_test, d_test = load_mnist("test")
    tasks = []
    for name, parity in (("A", 0), ("B", 1)):
        train = _head(x_train[d_train % 2 == parity], d_train[d_train % 2 == parity] // 2, limit)
        test = _head(x_test[d_test % 2 == parity], d_test[d_test % 2 == parity] // 2, limit)
        tasks.append(Task(name, *train, *test, num_classes=5))
    return tasks


def permutation(task_index: int, seed: int = 0) -> np.ndarray:
    """The fixed pixel permutation of permuted-MNIST task ``task_index``.

    Task 0 is the identity (plain MNIST); task ``k > 0`` is drawn from
    ``numpy.random.default_rng([seed, k])``, so it depends only on
    ``seed`` and ``k``.
    """
    if not isinstance(task_index, (int, np.integer)) or isinstance(task_index, bool):
        raise TypeError(f"task_index must be an int, got {type(task_index).__name__}")
    if task_index < 0:
        raise ValueError(f"task_index must be >= 0, got {task_index}")
    if task_index == 0:
        return np.arange(NUM_PIXELS)
    return np.random.default_rng([seed, int(task_index)]).permutation(NUM_PIXELS)


def permuted_mnist(num_tasks: int, *, seed: int = 0, limit: int | None = None) -> list[Task]:
    """Permuted MNIST: ``num_tasks`` tasks, each all ten digits (10 classes)
    seen through its own fixed pixel permutation (task 0: the identity).

    Args:
        num_tasks: positive int.
        seed: seed of the permutations (see :func:`permutation`).
        limit: keep at most this many examples per split, ``None`` for all.
    """
    _check_positive_int(num_tasks, "num_tasks")
    _check_limit(limit)
    train = _head(*load_mnist("train"), limit)
    test = _head(*load_mnist("test"), limit)
    return [Task(f"P{k}", *train, *test, num_classes=10, permutation=permutation(k, seed)) for k in range(num_tasks)]


def joint(tasks: list[Task], name: str = "joint") -> Task:
    """All tasks' examples in one task, for the multi-task upper bound.

    The tasks must share an output (same ``num_classes``) and have no
    permutation of their own.
    """
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise TypeError("tasks must be a non-empty list of Task objects")
    if len({t.num_classes for t in tasks}) != 1 or any(t.permutation is not None for t in tasks):
        raise ValueError("tasks must share num_classes and have no permutation to be joined")
    cat = np.concatenate
    return Task(
        name,
        cat([t.x_train for t in tasks]),
        cat([t.y_train for t in tasks]),
        cat([t.x_test for t in tasks]),
        cat([t.y_test for t in tasks]),
        num_classes=tasks[0].num_classes,
    )


def validation_split(task: Task, size: int) -> Task:
    """A copy of ``task`` whose last ``size`` training examples become its
    test split: use it to choose hyperparameters without touching the test set.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a Task, got {type(task).__name__}")
    _check_positive_int(size, "size")
    if size >= len(task.x_train):
        raise ValueError(f"size must be smaller than the {len(task.x_train)} training examples, got {size}")
    cut = len(task.x_train) - size
    return dataclasses.replace(
        task,
        name=f"{task.name}-val",
        x_train=task.x_train[:cut],
        y_train=task.y_train[:cut],
        x_test=task.x_train[cut:],
        y_test=task.y_train[cut:],
    )
