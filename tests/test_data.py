"""MNIST tasks: the split, the permutations, the input pipeline, the offline error."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb
from ewcbook import data


@pytest.fixture(scope="module")
def split_tasks():
    return eb.split_mnist()


@pytest.mark.mnist
def test_split_sizes_match_the_seed_experiment(split_tasks):
    a, b = split_tasks
    assert (len(a.x_train), len(b.x_train), len(a.x_test), len(b.x_test)) == (29492, 30508, 4926, 5074)
    assert len(a.y_train) == len(a.x_train) and len(b.y_test) == len(b.x_test)


@pytest.mark.mnist
def test_task_a_holds_only_even_digits_and_labels_are_digit_div_2(split_tasks):
    images, digits = data.load_mnist("train")
    even = digits % 2 == 0
    a, b = split_tasks
    np.testing.assert_array_equal(a.x_train, images[even])
    np.testing.assert_array_equal(a.y_train, digits[even] // 2)
    np.testing.assert_array_equal(b.y_train, digits[~even] // 2)
    for task in split_tasks:
        assert set(np.unique(task.y_train)) == set(range(5)) == set(np.unique(task.y_test))
        assert task.num_classes == 5


@pytest.mark.mnist
def test_limit_caps_every_split():
    a, b = eb.split_mnist(limit=100)
    assert all(len(arr) == 100 for t in (a, b) for arr in (t.x_train, t.y_train, t.x_test, t.y_test))


def test_permutation_is_a_seeded_bijection_different_per_task():
    assert np.array_equal(data.permutation(0), np.arange(784))
    perms = [data.permutation(k, seed=3) for k in range(1, 4)]
    for p in perms:
        assert np.array_equal(np.sort(p), np.arange(784))
    assert not np.array_equal(perms[0], perms[1])
    assert np.array_equal(data.permutation(2, seed=3), perms[1])
    assert not np.array_equal(data.permutation(2, seed=4), perms[1])


def _tiny_task(n=50, permutation=None):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = np.arange(n) % 5
    return eb.Task("T", x, y, x[:10], y[:10], num_classes=5, permutation=permutation)


def test_pipeline_normalises_to_unit_interval_and_permutes_pixels():
    perm = data.permutation(1)
    plain, permuted = _tiny_task(), _tiny_task(permutation=perm)
    x_plain = next(iter(plain.dataset("test", batch_size=10)))[0].numpy()
    x_perm = next(iter(permuted.dataset("test", batch_size=10)))[0].numpy()
    assert x_plain.dtype == np.float32 and x_plain.min() >= 0.0 and x_plain.max() <= 1.0
    np.testing.assert_allclose(x_plain, plain.x_test / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(x_perm.reshape(10, 784), x_plain.reshape(10, 784)[:, perm])


def _epoch_orders(ds, epochs=2):
    return [np.concatenate([y.numpy() for _, y in ds]) for _ in range(epochs)]


def test_pipeline_reshuffles_every_epoch_and_repeats_for_the_same_seed():
    task = _tiny_task()
    first, second = _epoch_orders(task.dataset("train", batch_size=8, seed=1))
    assert sorted(first) == sorted(second) == sorted(task.y_train)
    x_first = [x.numpy() for x, _ in task.dataset("train", batch_size=50, seed=1)][0]
    x_again = [x.numpy() for x, _ in task.dataset("train", batch_size=50, seed=1)][0]
    np.testing.assert_array_equal(x_first, x_again)
    ds = task.dataset("train", batch_size=50, seed=1)
    epoch1, epoch2 = ([x.numpy() for x, _ in ds][0] for _ in range(2))
    assert not np.array_equal(epoch1, epoch2), "a fresh order every epoch"
    other = [x.numpy() for x, _ in task.dataset("train", batch_size=50, seed=2)][0]
    assert not np.array_equal(x_first, other)


def test_test_split_is_not_shuffled():
    task = _tiny_task()
    labels = np.concatenate([y.numpy() for _, y in task.dataset("test", batch_size=4)])
    np.testing.assert_array_equal(labels, task.y_test)


def test_validation_split_takes_the_last_training_examples():
    task = _tiny_task(n=50)
    val = eb.validation_split(task, 20)
    assert len(val.x_train) == 30 and len(val.x_test) == 20
    np.testing.assert_array_equal(val.x_test, task.x_train[30:])
    with pytest.raises(ValueError, match="size"):
        eb.validation_split(task, 50)


def test_joint_concatenates_tasks():
    t = _tiny_task()
    j = eb.joint([t, t])
    assert len(j.x_train) == 100 and j.num_classes == 5 and j.permutation is None
    np.testing.assert_array_equal(j.y_train, np.concatenate([t.y_train, t.y_train]))
    assert j.y_train.dtype == t.y_train.dtype


def test_joint_sees_each_task_through_its_own_permutation():
    tasks = [_tiny_task(), _tiny_task(permutation=data.permutation(1)), _tiny_task(permutation=data.permutation(2))]
    j = eb.joint(tasks)
    assert j.per_batch and not eb.joint(tasks[:1] * 2).per_batch  # one copy of the images per permutation: uint8
    expected = np.concatenate([t.inputs("train").numpy() for t in tasks])
    np.testing.assert_array_equal(j.inputs("train").numpy(), expected)  # bit for bit
    np.testing.assert_array_equal(j.inputs("test").numpy(), np.concatenate([t.inputs("test").numpy() for t in tasks]))
    # one epoch covers every image of every task once, in an order shuffled across tasks
    x = np.concatenate([b[0].numpy() for b in j.dataset("train", batch_size=32, seed=3)])
    np.testing.assert_allclose(np.sort(x.ravel()), np.sort(expected.ravel()), rtol=1e-7)


def test_per_batch_normalisation_gives_the_same_batches_to_float_rounding():
    task = _tiny_task(permutation=data.permutation(1))
    compact = dataclasses.replace(task, per_batch=True)
    batches = [t.dataset("train", batch_size=16, seed=2) for t in (task, compact)]
    for (x, y), (xc, yc) in zip(*batches):
        np.testing.assert_array_equal(y.numpy(), yc.numpy())
        np.testing.assert_allclose(xc.numpy(), x.numpy(), rtol=1e-7, atol=0)  # x / 255 against x · (1/255)


def test_joint_with_separate_labels_gives_each_task_its_own_classes():
    a, b = _tiny_task(), eb.Task("U", *_tiny_task().arrays("train"), *_tiny_task().arrays("test"), num_classes=3)
    j = eb.joint([a, b], separate_labels=True)
    assert j.num_classes == 8
    np.testing.assert_array_equal(j.y_train, np.concatenate([a.y_train, b.y_train + 5]))
    np.testing.assert_array_equal(j.y_test, np.concatenate([a.y_test, b.y_test + 5]))
    with pytest.raises(ValueError, match="num_classes"):
        eb.joint([a, b])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t: t.dataset("validation"), "split"),
        (lambda t: t.dataset("train", batch_size=0), "batch_size"),
        (lambda t: t.dataset("train", batch_size=2.5), "batch_size"),
        (lambda t: t.dataset("train", seed="1"), "seed"),
        (lambda t: eb.split_mnist(limit=0), "limit"),
        (lambda t: eb.permuted_mnist(0), "num_tasks"),
        (lambda t: data.permutation(-1), "task_index"),
        (lambda t: data.load_mnist("val"), "split"),
        (lambda t: eb.joint([]), "tasks"),
        (lambda t: eb.validation_split("task", 3), "task"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call(_tiny_task())


def test_offline_without_data_gives_a_clear_message(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise OSError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds, "load", offline)
    data.load_mnist.cache_clear()
    try:
        with pytest.raises(data.MNISTUnavailableError) as info:
            data.load_mnist("train")
    finally:
        data.load_mnist.cache_clear()
    message = str(info.value)
    assert "TFDS_DATA_DIR" in message and "tfds.load" in message
    assert isinstance(info.value.__cause__, OSError)


OFFLINE_SCRIPT = """
import sys, time
import ewcbook.data as data
data.MNIST_URL = "http://127.0.0.1:9/"  # nothing listens there: the machine is offline for MNIST
start = time.perf_counter()
try:
    data.load_mnist("train")
except data.MNISTUnavailableError as error:
    print(f"{time.perf_counter() - start:.2f}")
    print(error)
"""


def test_offline_with_an_empty_data_dir_says_so_within_seconds(tmp_path):
    """No copy and no network: the message comes before any download attempt (was 208 s of retries)."""
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    seconds, message = run.stdout.split("\n", 1)
    assert float(seconds) < 10, seconds
    assert str(tmp_path) in message and "TFDS_DATA_DIR" in message and "tfds.load" in message
    assert "shared" not in message  # only paths a reader has
    assert "Dl Completed" not in run.stderr and "Retrying" not in run.stderr  # no download attempted
    assert not any(tmp_path.iterdir())


def test_dataset_yields_float_images_with_int_labels():
    x, y = next(iter(_tiny_task().dataset("train", batch_size=4)))
    assert x.shape == (4, 28, 28, 1) and x.dtype == tf.float32 and y.dtype.is_integer


def test_dataset_limit_keeps_the_first_examples():
    task = _tiny_task()
    labels = np.concatenate([y.numpy() for _, y in task.dataset("train", batch_size=8, shuffle=False, limit=12)])
    np.testing.assert_array_equal(labels, task.y_train[:12])
    with pytest.raises(ValueError, match="limit"):
        task.dataset("train", limit=0)
