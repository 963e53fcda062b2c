"""MNIST tasks for continual learning: split MNIST and permuted MNIST.

Data flow: ``tfds.load("mnist")`` -> numpy arrays -> :class:`Task` objects
(images kept as uint8, labels already remapped) -> :meth:`Task.inputs`, the
whole split normalised and permuted in one op -> :meth:`Task.dataset`, batches
gathered from it in memory (a fresh order every epoch from a fixed seed).
"""

from __future__ import annotations

import dataclasses
import functools
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ewcbook.checks import instance, integer, one_of, optional_integer
from ewcbook.checks import units as check_units

NUM_PIXELS = 28 * 28
SPLITS = ("train", "test")

#: Where ``tfds.load("mnist")`` downloads MNIST from; :func:`load_mnist` asks it first, in seconds.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"


def offline_help(data_dir: str) -> str:
    """What to do when MNIST is neither in ``data_dir`` (where TFDS looked) nor downloadable."""
    return (
        f"Could not load MNIST with tfds.load('mnist'): TensorFlow Datasets has no copy in {data_dir} and "
        f"{MNIST_URL} cannot be reached. With internet access, tfds.load downloads it by itself (about "
        "11 MB). Without it, copy a prepared tensorflow_datasets folder (one that holds mnist/3.0.1) to this "
        "machine and point TFDS at it before starting Python: "
        "`export TFDS_DATA_DIR=/path/to/tensorflow_datasets`."
    )


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether an HTTP request to ``url`` gets any answer within ``timeout`` seconds (proxies honoured)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # the server answered
    except (OSError, ValueError):
        return False
    return True


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
    one_of(split, "split", SPLITS)
    builder = tfds.builder("mnist")
    if not builder.is_prepared() and not reachable(MNIST_URL):  # say so now, not after minutes of retries
        raise MNISTUnavailableError(offline_help(builder.data_dir))
    try:
        images, digits = tfds.as_numpy(tfds.load("mnist", split=split, as_supervised=True, batch_size=-1))
    except OSError as error:  # network failures during the download are OSErrors (requests, urllib)
        raise MNISTUnavailableError(offline_help(builder.data_dir)) from error
    images.setflags(write=False)
    digits.setflags(write=False)
    return images, digits


@tf.function(reduce_retracing=True)
def normalise_pixels(flat_uint8, permutation):
    """Images as the network sees them: uint8 pixels ``(N, 784)`` to float32 in [0, 1], columns permuted.

    The one place images are normalised: :meth:`Task.inputs`, :meth:`Task.dataset`
    and :func:`ewcbook.evaluation.count_correct` call it. Traced as a graph it
    multiplies by 1/255, inside a ``tf.data`` map it divides by 255: the same
    number to one unit in the last place.
    """
    return tf.gather(tf.cast(flat_uint8, tf.float32) / 255.0, permutation, axis=1)


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
        per_batch: ``False`` (default): :meth:`dataset` normalises the whole
            split at once and gathers batches of floats; ``True``: it keeps the
            uint8 images and normalises each batch as it is drawn, in a quarter
            of the memory (:func:`joint` does so for tasks with permutations).
        units: ``(start, stop)``, the output units active while training on
            the task (the loss is a softmax over logits ``start:stop`` only;
            labels index all outputs); ``None``: every unit.
        test_units: the same for testing (the prediction is the argmax over
            these units); ``None``: every unit.

    In split MNIST's three scenarios (:func:`split_mnist_tasks`) the units say
    what a scenario gives away: task-incremental tasks train and test on their
    own two units (task identity known at test time), class-incremental ones
    train on the units of every class seen so far and test on all ten.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    permutation: np.ndarray | None = None
    per_batch: bool = False
    units: tuple[int, int] | None = None
    test_units: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("units", "test_units"):  # frozen: set through object.__setattr__, as plain int pairs
            object.__setattr__(self, name, check_units(getattr(self, name), name))

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(images, labels)`` of ``split`` (``"train"`` or ``"test"``)."""
        one_of(split, "split", SPLITS)
        return (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)

    def shown(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``images`` (N, 28, 28, 1) as this task shows them: its permutation applied, if it has one."""
        if self.permutation is None:
            return images
        return images.reshape(len(images), -1)[:, self.permutation].reshape(images.shape)

    def pixel_order(self) -> np.ndarray:
        """The task's permutation of the 784 pixels (the identity when it has none)."""
        return np.arange(NUM_PIXELS) if self.permutation is None else self.permutation

    def inputs(self, split: str, limit: int | None = None) -> tf.Tensor:
        """The images of ``split`` as the network sees them: float32 in [0, 1],
        shape ``(N, 28, 28, 1)``, permuted if the task has a permutation.

        One vectorised op over the whole split (about 0.1 s for 60,000
        images on 2 cores), so nothing is cached and nothing is done per example.
        """
        x, _ = _head(*self.arrays(split), limit)
        flat = normalise_pixels(tf.constant(x.reshape(len(x), -1)), tf.constant(self.pixel_order(), tf.int32))
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

        Images are those of :meth:`inputs`, held in memory as one tensor (or,
        with :attr:`per_batch`, as uint8 pixels normalised batch by batch).
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
        x, y = _head(*self.arrays(split), limit)
        batch_size, seed = integer(batch_size, "batch_size", minimum=1), integer(seed, "seed")
        if shuffle is None:
            shuffle = split == "train"
        n, num_batches, y = len(y), -(-len(y) // batch_size), tf.constant(y)
        if self.per_batch:
            pixels, order, shape = tf.constant(x.reshape(n, -1)), tf.constant(self.pixel_order(), tf.int32), x.shape[1:]
            images = lambda i: tf.reshape(normalise_pixels(tf.gather(pixels, i), order), [-1, *shape])  # noqa: E731
        else:
            inputs = self.inputs(split, limit)
            images = lambda i: tf.gather(inputs, i)  # noqa: E731

        def batches_of(order):  # one epoch: the indices cut into batches
            cut = n // batch_size * batch_size
            ds = tf.data.Dataset.from_tensor_slices(tf.reshape(order[:cut], [-1, batch_size]))
            return ds.concatenate(tf.data.Dataset.from_tensors(order[cut:])) if n % batch_size else ds

        if shuffle:  # a new epoch seed on each pass, from a fixed sequence that depends on `seed` only
            epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
            orders = epoch_seeds.map(lambda s: tf.random.experimental.stateless_shuffle(tf.range(n), [s, seed]))
        else:
            orders = tf.data.Dataset.from_tensors(tf.range(n))
        ds = orders.flat_map(batches_of).map(lambda i: (images(i), tf.gather(y, i)))
        return ds.apply(tf.data.experimental.assert_cardinality(num_batches)).prefetch(tf.data.AUTOTUNE)


def _head(x: np.ndarray, y: np.ndarray, limit: int | None):
    limit = optional_integer(limit, "limit", minimum=1)
    return (x, y) if limit is None else (x[:limit], y[:limit])


def check_tasks(tasks, name: str = "tasks") -> list[Task]:
    """``tasks`` as a list, if it is a non-empty sequence of :class:`Task` objects."""
    if isinstance(tasks, Task) or not isinstance(tasks, (list, tuple)) or not tasks:
        raise TypeError(f"{name} must be a non-empty list of Task objects, got {type(tasks).__name__}")
    for task in tasks:
        if not isinstance(task, Task):
            raise TypeError(f"{name} must be a non-empty list of Task objects, one is a {type(task).__name__}")
    return list(tasks)


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
    optional_integer(limit, "limit", minimum=1)
    x_train, d_train = load_mnist("train")
    x_test, d_test = load_mnist("test")
    tasks = []
    for name, parity in (("A", 0), ("B", 1)):
        train = _head(x_train[d_train % 2 == parity], d_train[d_train % 2 == parity] // 2, limit)
        test = _head(x_test[d_test % 2 == parity], d_test[d_test % 2 == parity] // 2, limit)
        tasks.append(Task(name, *train, *test, num_classes=5))
    return tasks


#: The three scenarios of :func:`split_mnist_tasks` (van de Ven & Tolias 2019).
SCENARIOS = ("task", "domain", "class")


def split_mnist_tasks(scenario: str, *, limit: int | None = None) -> list[Task]:
    """Split MNIST as the literature runs it: five tasks, the digits {0, 1},
    {2, 3}, {4, 5}, {6, 7}, {8, 9}, in one of three scenarios.

    * ``"task"`` (task-incremental): ten outputs, labels are the digits; each
      task trains and tests on its own two units (a head per task, chosen by
      the task identity at test time).
    * ``"domain"`` (domain-incremental): one two-unit output, the label is
      ``digit % 2`` (even or odd), the same for every task.
    * ``"class"`` (class-incremental): ten outputs, labels are the digits;
      task k trains with the units of every class seen so far active (0 to
      2k + 1, as van de Ven & Tolias 2019 do) and every task is tested on all
      ten: the network must tell every digit from every other.

    Args:
        scenario: one of :data:`SCENARIOS`.
        limit: keep at most this many examples per split and task.

    Returns:
        Five tasks named ``"0/1"``, ``"2/3"``, ... in training order.
    """
    one_of(scenario, "scenario", SCENARIOS)
    optional_integer(limit, "limit", minimum=1)
    x_train, d_train = load_mnist("train")
    x_test, d_test = load_mnist("test")
    tasks = []
    for k in range(5):
        pair = (2 * k, 2 * k + 1)
        label = (lambda d: d % 2) if scenario == "domain" else (lambda d: d)  # noqa: E731
        train_in, test_in = np.isin(d_train, pair), np.isin(d_test, pair)
        train = _head(x_train[train_in], label(d_train[train_in]), limit)
        test = _head(x_test[test_in], label(d_test[test_in]), limit)
        units = {"task": ((2 * k, 2 * k + 2),) * 2, "domain": (None, None), "class": ((0, 2 * k + 2), None)}
        tasks.append(Task(f"{pair[0]}/{pair[1]}", *train, *test, num_classes=2 if scenario == "domain" else 10,
                          units=units[scenario][0], test_units=units[scenario][1]))
    return tasks


def permutation(task_index: int, seed: int = 0) -> np.ndarray:
    """The fixed pixel permutation of permuted-MNIST task ``task_index``.

    Task 0 is the identity (plain MNIST); task ``k > 0`` is drawn from
    ``numpy.random.default_rng([seed, k])``, so it depends only on
    ``seed`` and ``k``.
    """
    task_index = integer(task_index, "task_index", minimum=0)
    if task_index == 0:
        return np.arange(NUM_PIXELS)
    return np.random.default_rng([seed, task_index]).permutation(NUM_PIXELS)


def permuted_mnist(num_tasks: int, *, seed: int = 0, limit: int | None = None) -> list[Task]:
    """Permuted MNIST: ``num_tasks`` tasks, each all ten digits (10 classes)
    seen through its own fixed pixel permutation (task 0: the identity).

    Args:
        num_tasks: positive int.
        seed: seed of the permutations (see :func:`permutation`).
        limit: keep at most this many examples per split, ``None`` for all.
    """
    integer(num_tasks, "num_tasks", minimum=1)
    train = _head(*load_mnist("train"), limit)
    test = _head(*load_mnist("test"), limit)
    return [Task(f"P{k}", *train, *test, num_classes=10, permutation=permutation(k, seed)) for k in range(num_tasks)]


def joint(tasks: list[Task], name: str = "joint", *, separate_labels: bool = False) -> Task:
    """All tasks' examples in one task: the multi-task upper bound.

    Images are joined in the order of ``tasks``, each as its own task sees it
    (a task's permutation is applied to its images here, so tasks with
    different permutations join too); the joined task has no permutation.
    Tasks with permutations (permuted MNIST) are views of the same images, so
    their joint holds one copy per task: it is made :attr:`Task.per_batch`,
    its images kept as uint8 and normalised batch by batch.

    Args:
        tasks: the tasks to join.
        name: the joined task's name.
        separate_labels: ``False`` (default): the tasks share one output, so
            they must have the same ``num_classes`` and keep their labels;
            ``True``: each task gets output units of its own, its labels
            shifted by the classes of the tasks before it (task-incremental
            heads, or class-incremental learning over disjoint classes).
    """
    tasks = check_tasks(tasks)
    if not separate_labels and len({t.num_classes for t in tasks}) != 1:
        raise ValueError("tasks must share num_classes to be joined on one output (or use separate_labels=True)")
    sizes = [t.num_classes if separate_labels else 0 for t in tasks]
    offsets = [sum(sizes[:k]) for k in range(len(tasks))]

    def labels(y, offset):
        return y if offset == 0 else (y + offset).astype(y.dtype)

    cat = np.concatenate
    return Task(
        name,
        cat([t.shown(t.x_train) for t in tasks]),
        cat([labels(t.y_train, k) for t, k in zip(tasks, offsets)]),
        cat([t.shown(t.x_test) for t in tasks]),
        cat([labels(t.y_test, k) for t, k in zip(tasks, offsets)]),
        num_classes=sum(sizes) if separate_labels else tasks[0].num_classes,
        per_batch=any(t.permutation is not None for t in tasks),
    )


def validation_split(task: Task, size: int) -> Task:
    """A copy of ``task`` whose last ``size`` training examples become its
    test split: use it to choose hyperparameters without touching the test set.
    """
    instance(task, "task", Task)
    size = integer(size, "size", minimum=1)
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
