"""Output units: split MNIST's scenarios, the unit table, training and testing on some units, the Fisher of a head."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)


# --- split MNIST's three scenarios -------------------------------------------------------------


@pytest.mark.mnist
def test_split_mnist_scenarios_have_the_labels_and_units_of_the_literature():
    by_scenario = {s: eb.split_mnist_tasks(s, limit=40) for s in ("task", "domain", "class")}
    for tasks in by_scenario.values():
        assert [t.name for t in tasks] == ["0/1", "2/3", "4/5", "6/7", "8/9"]
        assert all(len(t.y_train) == len(t.y_test) == 40 for t in tasks)
    for k in range(5):
        task, domain, cls = (by_scenario[s][k] for s in ("task", "domain", "class"))
        for split in ("train", "test"):
            digits = task.arrays(split)[1]
            assert set(np.unique(digits)) == {2 * k, 2 * k + 1}
            np.testing.assert_array_equal(domain.arrays(split)[0], task.arrays(split)[0])  # the same images
            np.testing.assert_array_equal(domain.arrays(split)[1], digits % 2)
            np.testing.assert_array_equal(cls.arrays(split)[1], digits)
        assert (task.num_classes, task.units, task.test_units) == (10, (2 * k, 2 * k + 2), (2 * k, 2 * k + 2))
        assert (domain.num_classes, domain.units, domain.test_units) == (2, None, None)
        assert (cls.num_classes, cls.units, cls.test_units) == (10, (0, 2 * k + 2), None)


@pytest.mark.parametrize("field", ["units", "test_units"])
@pytest.mark.parametrize("value, error", [((2, 2), ValueError), ((3, 1), ValueError), ((-1, 2), ValueError),
                                          ((0, 2.0), TypeError), ((0, True), TypeError), ((0, 1, 2), TypeError),
                                          ((0,), TypeError), ("02", TypeError)])
def test_task_refuses_bad_units_naming_them(field, value, error):
    x, y = _images(4), np.zeros(4, np.int64)
    with pytest.raises(error, match=field):
        eb.Task("T", x, y, x, y, num_classes=4, **{field: value})


def test_task_units_are_kept_as_int_pairs():
    x, y = _images(4), np.zeros(4, np.int64)
    task = eb.Task("T", x, y, x, y, num_classes=4, units=[np.int64(0), 2], test_units=(1, 3))
    assert task.units == (0, 2) and type(task.units[0]) is int and task.test_units == (1, 3)


# --- the unit table --------------------------------------------------------------------------


def _task(units, labels=(0, 1, 2, 3), n=16, seed=0, test_units=None):
    x = _images(n, seed)
    y = np.resize(np.asarray(labels), n).astype(np.int64)
    return eb.Task("T", x, y, x, y, num_classes=6, units=units, test_units=test_units)


def _mask(start, stop, outputs=6):
    return [start <= u < stop for u in range(outputs)]


def test_unit_table_gives_the_task_units_to_every_label_but_replayed_ones_outside_them():
    table = eb.unit_table(_task((2, 4)), 6, {0: (0, 2), 1: (0, 2), 2: (2, 4)})
    assert table.dtype == bool and table.shape == (6, 6)
    np.testing.assert_array_equal(table, [_mask(0, 2)] * 2 + [_mask(2, 4)] * 4)
    # class-incremental: the replayed classes are among the classes seen so far
    table = eb.unit_table(_task((0, 4)), 6, {0: (0, 2), 1: (0, 2)})
    np.testing.assert_array_equal(table, [_mask(0, 4)] * 6)
    np.testing.assert_array_equal(eb.unit_table(_task(None), 6, {0: (0, 2)}), np.ones((6, 6), bool))
    with pytest.raises(ValueError, match="units"):
        eb.unit_table(_task((2, 8)), 6)


# --- training on the active units ------------------------------------------------------------


def _learner(seed=0):
    keras.utils.set_random_seed(seed)
    learner = eb.ContinualModel(eb.mlp(6, (5,), input_shape=(4,)))
    learner.compile(optimizer=keras.optimizers.SGD(0.5),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return learner


def _masked_cross_entropy(logits, y, table):
    """Mean over examples of −log softmax over the units table[y_i] of example i."""
    masked = np.where(table[y], logits.astype(np.float64), -np.inf)
    return float(np.mean(-_log_softmax(masked)[np.arange(len(y)), y]))


def test_training_with_a_unit_table_leaves_inactive_units_untouched():
    learner = _learner()
    table = eb.unit_table(_task((2, 4)), 6, {0: (0, 2), 1: (0, 2)})  # task 2/3 with replayed 0s and 1s
    learner.set_units(table)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 4)).astype("float32"), np.resize([0, 1, 2, 3, 3], 12)
    kernel, bias = (w.copy() for w in learner.network.get_layer("logits").get_weights())
    logits = learner.network(x).numpy()
    history = learner.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(_masked_cross_entropy(logits, y, table), rel=1e-5)
    new_kernel, new_bias = learner.network.get_layer("logits").get_weights()
    np.testing.assert_array_equal(new_kernel[:, 4:], kernel[:, 4:])
    np.testing.assert_array_equal(new_bias[4:], bias[4:])
    assert np.all(np.abs(new_kernel[:, :4] - kernel[:, :4]).max(axis=0) > 1e-4)  # every active unit trained
    assert np.all(np.abs(new_bias[:4] - bias[:4]) > 1e-4)
    logits = learner.network(x).numpy()
    logs = learner.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(_masked_cross_entropy(logits, y, table), rel=1e-5)
    predicted = np.argmax(np.where(table[y], logits, -np.inf), axis=1)
    assert logs["accuracy"] == pytest.approx(np.mean(predicted == y))
    learner.set_units(None)  # every unit again
    logs = learner.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(_masked_cross_entropy(logits, y, np.ones((6, 6), bool)), rel=1e-5)


def test_fit_task_trains_a_task_incremental_task_on_its_own_head():
    learner = eb.ContinualModel(eb.mlp(6, (5,)))
    task = _task((2, 4), labels=(2, 3))
    before = learner.network.get_layer("logits").get_weights()
    eb.fit_task(learner, task, epochs=1, batch_size=8, learning_rate=0.01)
    after = learner.network.get_layer("logits").get_weights()
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a[..., [0, 1, 4, 5]], b[..., [0, 1, 4, 5]])
        assert not np.array_equal(a[..., 2:4], b[..., 2:4])


@pytest.mark.parametrize(
    "table",
    [
        np.ones((6, 5), bool),
        np.ones(6, bool),
        np.ones((6, 6), np.int64),
        np.ones((6, 6), np.float32),
        np.eye(6, dtype=bool) & (np.arange(6) != 4)[:, None],  # no active unit for label 4
    ],
)
def test_set_units_refuses_a_bad_table_naming_it(table):
    with pytest.raises(ValueError, match="table"):
        _learner().set_units(table)


def test_task_accuracy_takes_the_argmax_over_the_test_units():
    network = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    network.layers[-1].set_weights([np.zeros((784, 10), np.float32),
                                    np.array([0, 0, 1, 5, 0, 0, 0, 0, 0, 10], np.float32)])
    x, y = _images(8), np.full(8, 3)
    for test_units, accuracy in [((2, 4), 1.0), (None, 0.0), ((0, 3), 0.0), ((3, 9), 1.0)]:
        task = eb.Task("T", x, y, x, y, num_classes=10, test_units=test_units)
        assert eb.task_accuracy(network, task) == accuracy
    with pytest.raises(ValueError, match="units"):
        eb.task_accuracy(network, eb.Task("T", x, y, x, y, num_classes=10, test_units=(2, 12)))


# --- the Fisher of some output units ---------------------------------------------------------

UNITS, INACTIVE = (1, 3), [0, 3]


def _dense_stack(outputs=4, seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(7, activation="tanh"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(5),
        keras.layers.Activation("relu"),
        keras.layers.Dense(outputs),
    ])


def _fisher_data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(*UNITS, n)


def _brute_force(model, x, y, estimator, units=UNITS):
    """1/N Σ_i Σ_c q_ic (∂ log softmax(z_i[a:b])_c / ∂θ)², one example at a time, in float64."""
    a, b = units
    sums = [np.zeros(v.shape) for v in model.trainable_variables]
    for i in range(len(x)):
        probs = tf.nn.softmax(model(x[i : i + 1])[0, a:b]).numpy()
        targets = [(y[i] - a, 1.0)] if estimator == "empirical" else list(enumerate(probs))
        for c, q in targets:
            with tf.GradientTape() as tape:
                log_p = tf.nn.log_softmax(model(x[i : i + 1], training=False)[0, a:b])[c]
            for k, g in enumerate(tape.gradient(log_p, model.trainable_variables)):
                sums[k] += q * np.square(g.numpy().astype(np.float64))
    return [s / len(x) for s in sums]


def _assert_close(fisher, reference, tolerance=1e-5):
    for f, r in zip(fisher, reference, strict=True):
        assert tuple(f.shape) == r.shape
        np.testing.assert_allclose(np.asarray(f, np.float64), r, rtol=0, atol=tolerance * max(np.abs(r).max(), 1e-12))


def _sliced(model, units=UNITS):
    """The same network with only the output units ``units``."""
    a, b = units
    sliced = _dense_stack(outputs=b - a, seed=7)
    weights = model.get_weights()
    sliced.set_weights(weights[:-2] + [weights[-2][:, a:b], weights[-1][a:b]])
    return sliced


@pytest.mark.parametrize("estimator", ["exact", "empirical"])
def test_fisher_of_some_units_is_the_fisher_of_the_network_with_only_those_units(estimator):
    model = _dense_stack()
    x, y = _fisher_data()
    reference = _brute_force(model, x, y, estimator)
    a, b = UNITS
    np.testing.assert_array_equal(reference[-2][:, INACTIVE], 0)
    np.testing.assert_array_equal(reference[-1][INACTIVE], 0)
    sliced = eb.diagonal_fisher(_sliced(model), (x, y - a), estimator=estimator, algorithm="loop")
    for algorithm in ("fast", "vectorized", "loop"):
        fisher = eb.diagonal_fisher(model, (x, y), estimator=estimator, algorithm=algorithm, units=UNITS,
                                    batch_size=4)
        _assert_close(fisher, reference)
        # the inactive units' weights have no Fisher; every other weight has the sliced network's
        kernel, bias = np.asarray(fisher[-2]), np.asarray(fisher[-1])
        np.testing.assert_array_equal(kernel[:, INACTIVE], 0)
        np.testing.assert_array_equal(bias[INACTIVE], 0)
        expected = [s.numpy().astype(np.float64) for s in sliced]
        _assert_close([*fisher[:-2], kernel[:, a:b], bias[a:b]], expected)
    full = eb.diagonal_fisher(model, (x, y), estimator=estimator)
    assert np.abs(np.asarray(full[-2])[:, INACTIVE]).max() > 1e-6  # units=None: every unit has a Fisher


def test_sampled_fisher_of_some_units_is_the_same_with_every_algorithm():
    model = _dense_stack()
    x, y = _fisher_data()
    runs = [eb.diagonal_fisher(model, (x, y), algorithm=a, units=UNITS, seed=3, batch_size=4)
            for a in ("fast", "vectorized", "loop")]
    reference = [r.numpy().astype(np.float64) for r in runs[2]]
    for fisher in runs[:2]:
        _assert_close(fisher, reference)
    for fisher in runs:
        np.testing.assert_array_equal(np.asarray(fisher[-2])[:, INACTIVE], 0)
        np.testing.assert_array_equal(np.asarray(fisher[-1])[INACTIVE], 0)
    assert np.asarray(runs[0][-1])[UNITS[0] : UNITS[1]].min() > 0


@pytest.mark.parametrize("units", [(3, 1), (-1, 2), (2, 2)])
def test_fisher_refuses_units_with_no_unit_naming_them(units):
    x, y = _fisher_data()
    with pytest.raises(ValueError, match="units"):
        eb.diagonal_fisher(_dense_stack(), (x, y), estimator="exact", units=units)
