"""Learning without forgetting: the distillation loss against numpy, a training step by hand, heads, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb
from ewcbook.distillation import check_heads
from ewcbook.protocol import merge_heads

HEADS = [(0, 2), (2, 4)]


def _network(seed=0):
    keras.utils.set_random_seed(seed)
    return eb.mlp(4, (6,), input_shape=(5,))


def _x(n=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 5)).astype("float32")


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _distillation(old, new, strength, temperature, heads):
    """λ T² Σ_h mean_batch KL(softmax(old_h / T) ‖ softmax(new_h / T)), in float64."""
    old, new = np.asarray(old, np.float64), np.asarray(new, np.float64)
    total = 0.0
    for a, b in heads:
        log_p, log_q = _log_softmax(old[:, a:b] / temperature), _log_softmax(new[:, a:b] / temperature)
        total += np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))
    return strength * temperature**2 * total


def _perturb(model, scale=0.5, seed=1):
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign_add((scale * rng.normal(size=v.shape)).astype("float32"))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.5])
def test_value_is_strength_t_squared_times_the_mean_kl_per_head(temperature):
    network = _network()
    lwf = eb.LwF(network, strength=0.7, heads=HEADS, temperature=temperature)
    x = _x()
    logits = np.random.default_rng(2).normal(scale=3.0, size=(8, 4)).astype("float32")
    expected = _distillation(network(x).numpy(), logits, 0.7, temperature, HEADS)
    assert expected > 0.01
    assert float(lwf(x, tf.constant(logits))) == pytest.approx(expected, rel=1e-5)


def test_one_head_over_every_output_by_default():
    network = _network()
    lwf = eb.LwF(network, strength=1.0)
    assert lwf.heads == [(0, 4)]
    x = _x()
    logits = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    expected = _distillation(network(x).numpy(), logits, 1.0, 2.0, [(0, 4)])
    assert float(lwf(x, tf.constant(logits))) == pytest.approx(expected, rel=1e-5)


def test_value_is_zero_when_the_network_is_its_teacher():
    network = _network()
    lwf = eb.LwF(network, strength=5.0, heads=HEADS)
    x = _x()
    assert abs(float(lwf(x, network(x)))) < 1e-6
    _perturb(network)
    assert float(lwf(x, network(x))) > 1e-3


def _sgd_step_by_hand(weights, x, y, teacher_logits, strength, temperature, lr):
    """θ − lr ∇[mean cross-entropy + LwF] for a 5-6-4 ReLU MLP, float64."""
    theta = [tf.Variable(w.astype(np.float64)) for w in weights]
    with tf.GradientTape() as tape:
        w1, b1, w2, b2 = theta
        logits = tf.matmul(tf.nn.relu(tf.matmul(x.astype(np.float64), w1) + b1), w2) + b2
        loss = tf.reduce_mean(tf.reduce_logsumexp(logits, 1) - tf.gather(logits, y, axis=1, batch_dims=1))
        old = tf.constant(teacher_logits, tf.float64)
        for a, b in HEADS:
            p = tf.nn.softmax(old[:, a:b] / temperature)
            kl = tf.reduce_sum(p * (tf.math.log(p) - tf.nn.log_softmax(logits[:, a:b] / temperature)), 1)
            loss += strength * temperature**2 * tf.reduce_mean(kl)
    return [t.numpy() - lr * g.numpy() for t, g in zip(theta, tape.gradient(loss, theta))]


def test_a_training_step_moves_the_student_by_the_distillation_gradient_and_never_the_teacher():
    learner = eb.ContinualModel(_network())
    lwf = eb.LwF(learner, strength=2.0, heads=HEADS, temperature=2.0)
    teacher = [w.copy() for w in lwf.teacher.get_weights()]
    np.testing.assert_array_equal(teacher[0], learner.network.get_weights()[0])
    _perturb(learner.network)
    learner.penalties = [lwf]
    learner.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _x(), np.random.default_rng(3).integers(0, 4, 8)
    before = learner.network.get_weights()
    teacher_logits = lwf.teacher(x).numpy()
    history = learner.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    expected = _sgd_step_by_hand(before, x, y, teacher_logits, 2.0, 2.0, 0.1)
    for got, e in zip(learner.network.get_weights(), expected):
        np.testing.assert_allclose(got, e, rtol=1e-5, atol=1e-6)
    for got, t in zip(lwf.teacher.get_weights(), teacher):
        np.testing.assert_array_equal(got, t)
    logged = _distillation(teacher_logits, _logits(before, x), 2.0, 2.0, HEADS)  # the penalty before the step
    assert logged > 0.01 and history.history["penalty"][0] == pytest.approx(logged, rel=1e-5)
    assert lwf.teacher.trainable_variables == []


def _logits(weights, x):
    w1, b1, w2, b2 = weights
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def test_consolidate_makes_the_current_network_the_teacher():
    network = _network()
    lwf = eb.LwF(network, strength=1.0, heads=[(0, 2)])
    _perturb(network)
    x = _x()
    assert float(lwf(x, network(x))) > 1e-3
    lwf.consolidate(heads=[(0, 2), (2, 4)])
    assert lwf.task_count == 2 and lwf.heads == [(0, 2), (2, 4)]
    for t, w in zip(lwf.teacher.get_weights(), network.get_weights()):
        np.testing.assert_array_equal(t, w)
    assert lwf.teacher.weights[0] is not network.weights[0]  # a copy, not the same variables
    assert abs(float(lwf(x, network(x)))) < 1e-6
    lwf.consolidate()
    assert lwf.heads == [(0, 2), (2, 4)]  # None keeps the heads


@pytest.mark.parametrize(
    "heads, error",
    [
        ([(2, 2)], ValueError),
        ([(3, 1)], ValueError),
        ([(0, 5)], ValueError),
        ([(-1, 2)], ValueError),
        ([(0, 2.0)], TypeError),
        ([(0, 1, 2)], TypeError),
        ((0, 2), TypeError),
        ([None], TypeError),
        ([], TypeError),
        (5, TypeError),
        ("01", TypeError),
    ],
)
def test_bad_heads_are_named(heads, error):
    with pytest.raises(error, match="heads"):
        check_heads(heads, 4)
    with pytest.raises(error, match="heads"):
        eb.LwF(_network(), 1.0, heads=heads)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda m: eb.LwF(m, -1.0), ValueError, "strength"),
        (lambda m: eb.LwF(m, 1.0, temperature=0.0), ValueError, "temperature"),
        (lambda m: eb.Consolidation("lwf", 1.0, temperature=-1.0), ValueError, "temperature"),
    ],
)
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make(_network())


def test_check_heads_returns_int_pairs():
    assert check_heads(None, 4) == [(0, 4)]
    assert check_heads([[0, np.int64(2)], (2, 4)], 4) == [(0, 2), (2, 4)]


def test_merge_heads_keeps_task_heads_apart_and_grows_class_heads():
    assert merge_heads([(0, 2)], (2, 4)) == [(0, 2), (2, 4)]  # task-incremental
    assert merge_heads([(0, 2), (2, 4)], (4, 6)) == [(0, 2), (2, 4), (4, 6)]
    assert merge_heads([(0, 2)], (0, 4)) == [(0, 4)]  # class-incremental: the classes seen so far
    assert merge_heads([(0, 4)], (0, 4)) == [(0, 4)]
    assert merge_heads([(0, 4)], (2, 4)) == [(0, 4)]  # inside one already distilled


def _task(name, units, outputs=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(16, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(units[0], units[1], 16)
    return eb.Task(name, x, y, x, y, num_classes=outputs, units=units, test_units=units)


@pytest.mark.parametrize(
    "units, heads",
    [([(0, 2), (2, 4), (4, 6)], [[(0, 2)], [(0, 2), (2, 4)]]), ([(0, 2), (0, 4), (0, 6)], [[(0, 2)], [(0, 4)]])],
)
def test_consolidation_lwf_distils_every_task_seen_so_far(units, heads):
    keras.utils.set_random_seed(0)
    learner = eb.ContinualModel(eb.mlp(6, (8,)))
    method = eb.Consolidation("lwf", 3.0, temperature=1.5)
    for k, (u, expected) in enumerate(zip(units, heads)):
        method.consolidate(learner, _task(f"T{k}", u, seed=k))
        (lwf,) = learner.penalties
        assert isinstance(lwf, eb.LwF) and lwf.heads == expected and lwf.task_count == k + 1
        assert (lwf.strength, lwf.temperature) == (3.0, 1.5)
        for t, w in zip(lwf.teacher.get_weights(), learner.network.get_weights()):
            np.testing.assert_array_equal(t, w)
        _perturb(learner.network, 0.1, seed=k)


def test_consolidation_lwf_in_a_sequence_trains_with_the_penalty():
    eb.set_seed(0)
    tasks = [_task("T0", (0, 2)), _task("T1", (2, 4), seed=1)]
    result = eb.train_sequence(eb.mlp(6, (8,)), tasks, eb.Consolidation("lwf", 1.0), epochs=1, batch_size=8)
    (lwf,) = result.learner.penalties
    assert lwf.heads == [(0, 2)] and lwf.task_count == 1
    assert result.histories[1].history["penalty"][0] > 0
    assert np.all(np.isfinite(result.R))


def test_state_round_trip_into_a_fresh_model(tmp_path):
    learner = eb.ContinualModel(_network())
    lwf = eb.LwF(learner, strength=1.5, heads=HEADS, temperature=3.0)
    _perturb(learner.network)
    lwf.consolidate()
    _perturb(learner.network, seed=2)
    eb.save_state(tmp_path / "lwf.npz", lwf)
    fresh = eb.ContinualModel(_network(seed=5))
    (loaded,) = eb.load_state(tmp_path / "lwf.npz", fresh)
    assert isinstance(loaded, eb.LwF)
    assert (loaded.strength, loaded.temperature, loaded.heads, loaded.task_count) == (1.5, 3.0, HEADS, 2)
    for a, b in zip(lwf.teacher.get_weights(), loaded.teacher.get_weights()):
        np.testing.assert_array_equal(b, a)
    fresh.network.set_weights(learner.network.get_weights())
    x = _x()
    value = float(lwf(x, learner(x)))
    assert value > 1e-3
    assert float(loaded(x, fresh(x))) == pytest.approx(value, rel=1e-6)
    assert loaded.variables == list(fresh.network.trainable_variables)
