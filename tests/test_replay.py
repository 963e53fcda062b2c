"""Experience replay: what the memory keeps, the mixed batches and their weights, replay in a sequence."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb


def _task(name, labels, n=24, seed=0, permutation=None, units=None):
    """A task of random uint8 images (every image distinct) with the given labels in turn."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = np.resize(np.asarray(labels), n).astype(np.int64)
    return eb.Task(name, x, y, x[:4], y[:4], num_classes=10, permutation=permutation, units=units)


def _rows_of(images, candidates):
    """For each image, the index of the equal row of ``candidates`` (each must have exactly one)."""
    flat, pool = images.reshape(len(images), -1), candidates.reshape(len(candidates), -1)
    matches = [np.flatnonzero((pool == row).all(axis=1)) for row in flat]
    assert all(len(m) == 1 for m in matches), "every image must be one of the candidates"
    return np.array([m[0] for m in matches])


@pytest.mark.parametrize("per_class", [1, 3, 8])
def test_add_keeps_per_class_examples_of_each_class_of_the_task(per_class):
    task = _task("A", [0, 1, 1], n=24)  # 8 zeros, 16 ones
    memory = eb.ReplayMemory(per_class)
    memory.add(task)
    assert memory.class_counts() == {0: per_class, 1: per_class}
    assert len(memory) == 2 * per_class and memory.tasks == 1 and memory.units == {0: None, 1: None}
    rows = _rows_of(memory.images, task.x_train)
    assert len(set(rows.tolist())) == len(rows)  # no example twice
    np.testing.assert_array_equal(memory.labels, task.y_train[rows])
    assert memory.images.dtype == np.uint8 and memory.images.shape == (2 * per_class, 28, 28, 1)


def test_a_second_task_adds_its_classes_and_units():
    memory = eb.ReplayMemory(2)
    memory.add(_task("A", [0, 1], units=(0, 2)))
    memory.add(_task("B", [2, 3], seed=1, units=(2, 4)))
    assert memory.class_counts() == {0: 2, 1: 2, 2: 2, 3: 2} and memory.tasks == 2
    assert memory.units == {0: (0, 2), 1: (0, 2), 2: (2, 4), 3: (2, 4)}


def test_choice_is_deterministic_for_a_seed_and_differs_across_seeds():
    task = _task("A", [0, 1], n=40)

    def kept(seed):
        memory = eb.ReplayMemory(4, seed=seed)
        memory.add(task)
        return memory.images

    np.testing.assert_array_equal(kept(0), kept(0))
    assert not np.array_equal(kept(0), kept(1))


def test_a_permuted_task_is_remembered_as_the_network_sees_it():
    permutation = np.random.default_rng(5).permutation(28 * 28)
    task = _task("P", [0, 1], permutation=permutation)
    memory = eb.ReplayMemory(3)
    memory.add(task)
    seen = np.rint(task.inputs("train").numpy() * 255).astype(np.uint8)  # the permuted images
    rows = _rows_of(memory.images, seen)
    np.testing.assert_array_equal(memory.labels, task.y_train[rows])
    flat = task.x_train.reshape(len(task.x_train), -1)
    np.testing.assert_array_equal(memory.images.reshape(len(memory), -1), flat[rows][:, permutation])


def test_too_few_examples_of_a_class_is_refused_naming_per_class():
    with pytest.raises(ValueError, match="per_class"):
        eb.ReplayMemory(9).add(_task("A", [0, 1, 1], n=24))  # 8 zeros
    with pytest.raises(ValueError, match="per_class"):
        eb.ReplayMemory(0)
    with pytest.raises(TypeError, match="task"):
        eb.ReplayMemory(1).add("A")


def _batches(dataset):
    return [tuple(part.numpy() for part in batch) for batch in dataset]


def test_mixed_batches_are_the_task_batch_then_a_batch_of_memory():
    memory = eb.ReplayMemory(4, seed=3)
    memory.add(_task("A", [0, 1], n=16))
    task = _task("B", [2, 3], n=22, seed=1)
    mixed = memory.mixed_dataset(task, batch_size=4, seed=7)
    assert int(mixed.cardinality()) == 6 == int(task.dataset("train", batch_size=4).cardinality())
    remembered = memory.images.astype(np.float32) / 255
    orders, plain = [], task.dataset("train", batch_size=4, seed=7)
    for _ in range(2):  # two epochs, the task's batches in a new order in each
        order = []
        for (x, y, _), (px, py) in zip(_batches(mixed), _batches(plain), strict=True):
            n = len(py)
            np.testing.assert_array_equal(x[:n], px)
            np.testing.assert_array_equal(y[:n], py)
            assert len(y) == n + 4 and x.dtype == np.float32
            rows = _rows_of(x[n:], remembered)
            np.testing.assert_allclose(x[n:], remembered[rows], atol=1e-6)
            np.testing.assert_array_equal(y[n:], memory.labels[rows])
            order += rows.tolist()
        assert len(order) == 24  # three passes over the 8 remembered examples
        for k in range(0, 24, 8):
            assert sorted(order[k : k + 8]) == list(range(8)), "each pass shows every remembered example once"
        orders.append(order)
    passes = [tuple(o[k : k + 8]) for o in orders for k in range(0, 24, 8)]
    assert len(set(passes)) > 1, "the memory is shown in a new order on every pass"
    assert orders[0] != orders[1], "a new order every epoch"


@pytest.mark.parametrize("tasks_in_memory", [1, 2])
def test_sample_weights_give_one_share_to_each_task_seen(tasks_in_memory):
    memory = eb.ReplayMemory(3)
    for k in range(tasks_in_memory):
        memory.add(_task(f"M{k}", [2 * k, 2 * k + 1], n=12, seed=10 + k))
    t = tasks_in_memory + 1
    task = _task("B", [6, 7], n=13, seed=1)
    rng = np.random.default_rng(0)
    sizes = []
    for _, y, w in _batches(memory.mixed_dataset(task, batch_size=5, seed=0)):
        n_new = len(y) - 5
        sizes.append(n_new)
        losses = rng.random(len(y))
        expected = np.mean(losses[:n_new]) / t + (1 - 1 / t) * np.mean(losses[n_new:])
        assert np.mean(w * losses) == pytest.approx(expected, rel=1e-6)
        # Keras' weighted loss is this mean: Σ w l / (batch size)
        logits = rng.normal(size=(len(y), 10)).astype("float32")
        per_example = -_log_softmax(logits)[np.arange(len(y)), y]
        keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits, sample_weight=w)
        expected = np.mean(per_example[:n_new]) / t + (1 - 1 / t) * np.mean(per_example[n_new:])
        assert float(keras_loss) == pytest.approx(expected, rel=1e-5)
    assert sizes == [5, 5, 3]  # including the last, smaller batch of the task


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_an_empty_memory_gives_the_task_batches_with_weight_one():
    task = _task("A", [0, 1], n=10)
    mixed = eb.ReplayMemory(2).mixed_dataset(task, batch_size=4, seed=2)
    assert int(mixed.cardinality()) == 3
    for (x, y, w), (px, py) in zip(_batches(mixed), _batches(task.dataset("train", batch_size=4, seed=2)),
                                   strict=True):
        np.testing.assert_array_equal(x, px)
        np.testing.assert_array_equal(y, py)
        np.testing.assert_array_equal(w, np.ones(len(y)))


def test_replayed_labels_keep_their_own_units():
    memory = eb.ReplayMemory(1)
    memory.add(_task("A", [0, 1], units=(0, 2)))
    table = memory.table(_task("B", [2, 3], units=(2, 4)), 4)
    np.testing.assert_array_equal(table, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])


def test_one_replay_at_most_in_a_sequence():
    with pytest.raises(ValueError, match="method"):
        eb.train_sequence(eb.mlp(10, (4,)), [_task("A", [0, 1])], [eb.Replay(1), eb.Replay(2)], epochs=1)


@pytest.mark.mnist
def test_replay_in_a_sequence_trains_on_mixed_batches_and_remembers_every_earlier_task():
    tasks = eb.split_mnist_tasks("task", limit=64)[:3]
    calls = []

    def fit(learner, task, **kwargs):
        calls.append((kwargs.get("data"), kwargs.get("units")))
        return eb.fit_task(learner, task, **kwargs)

    replay = eb.Replay(per_class=4, seed=1)
    eb.set_seed(0)
    result = eb.train_sequence(eb.mlp(10, (8,)), tasks, [eb.Consolidation("si", 1.0), replay], epochs=1,
                               batch_size=16, fit=fit, evaluate_unseen=False)
    assert replay.memory.class_counts() == {d: 4 for d in range(4)}  # tasks 0 and 1, not the last
    assert replay.memory.tasks == 2
    assert calls[0] == (None, None)
    for k, (data, units) in enumerate(calls[1:], start=1):
        assert isinstance(data, tf.data.Dataset) and int(data.cardinality()) == 4  # 64 examples / 16
        _, y, _ = next(iter(data))
        assert len(y) == 32 and set(y.numpy()[16:].tolist()) <= set(range(2 * k))
        for label in range(10):  # each replayed digit on its own task's head, the rest on this task's
            head = label // 2 if label < 2 * k else k
            np.testing.assert_array_equal(np.flatnonzero(units[label]), [2 * head, 2 * head + 1])
    assert [p.kind for p in result.learner.penalties] == ["si"]
    assert np.all(np.isfinite(result.R[np.tril_indices(3)]))


def test_the_memory_saves_and_loads_with_the_penalties(tmp_path):
    """save_state keeps a replay memory beside a penalty; it loads into any model (it belongs to no weights)."""
    memory = eb.ReplayMemory(per_class=3, seed=4)
    for task in eb.split_mnist_tasks("task", limit=60)[:2]:
        memory.add(task)
    model = eb.ContinualModel(eb.mlp(10, (8,)))
    penalty = eb.L2Anchor(model, 1.0)
    eb.save_state(tmp_path / "state.npz", [penalty, memory])
    loaded_penalty, loaded = eb.load_state(tmp_path / "state.npz", eb.ContinualModel(eb.mlp(10, (8,))))
    assert isinstance(loaded_penalty, eb.L2Anchor) and isinstance(loaded, eb.ReplayMemory)
    np.testing.assert_array_equal(loaded.images, memory.images)
    np.testing.assert_array_equal(loaded.labels, memory.labels)
    assert loaded.units == memory.units == {0: (0, 2), 1: (0, 2), 2: (2, 4), 3: (2, 4)}
    assert (loaded.per_class, loaded.seed, loaded.tasks) == (3, 4, 2)
    eb.save_state(tmp_path / "empty.npz", eb.ReplayMemory(per_class=2))
    (empty,) = eb.load_state(tmp_path / "empty.npz", eb.mlp(3, (4,)))
    assert len(empty) == 0 and empty.tasks == 0
