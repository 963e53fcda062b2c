"""Synaptic intelligence: the path integral, importance and value against SGD steps redone by hand, saving, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb

LR, BATCH, STEPS_PER_EPOCH = 0.2, 4, 3


def _data(seed=0, n=BATCH * STEPS_PER_EPOCH):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, n)


def _learner(steps_per_execution=1, strength=2.0, damping=0.1, seed=0):
    keras.utils.set_random_seed(seed)
    learner = eb.ContinualModel(eb.mlp(3, (4,), input_shape=(5,)))
    si = eb.SynapticIntelligence(learner, strength=strength, damping=damping)
    learner.penalties = [si]
    learner.compile(optimizer=keras.optimizers.SGD(LR),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    steps_per_execution=steps_per_execution)
    return learner, si


def _weights(learner):
    return [v.numpy().astype(np.float64) for v in learner.trainable_variables]


def _by_hand(weights, x, y, epochs, strength=0.0, omega=None, anchors=None, with_penalty=True):
    """SGD on mean cross-entropy + λ/2 Σ Ω (θ − θ*)² of a 5-4-3 ReLU MLP, in float64, one batch at a time.

    Returns the final weights and the path integral ω = Σ_steps −g · Δθ."""
    theta = [tf.Variable(w) for w in weights]
    path = [np.zeros_like(w) for w in weights]
    for _ in range(epochs):
        for start in range(0, len(x), BATCH):
            xb, yb = x[start : start + BATCH].astype(np.float64), y[start : start + BATCH]
            with tf.GradientTape() as tape:
                w1, b1, w2, b2 = theta
                logits = tf.matmul(tf.nn.relu(tf.matmul(xb, w1) + b1), w2) + b2
                picked = tf.gather(logits, yb, axis=1, batch_dims=1)
                loss = tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - picked)
                if with_penalty and omega is not None:
                    loss += 0.5 * strength * tf.add_n(
                        [tf.reduce_sum(o * (t - a) ** 2) for o, t, a in zip(omega, theta, anchors)])
            grads = [g.numpy() for g in tape.gradient(loss, theta)]
            for k, (t, g) in enumerate(zip(theta, grads)):
                new = t.numpy() - LR * g
                path[k] += -g * (new - t.numpy())
                t.assign(new)
    return [t.numpy() for t in theta], path


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_path_integral_is_the_sum_of_minus_gradient_times_step_over_sgd_steps(steps_per_execution):
    learner, si = _learner(steps_per_execution)
    x, y = _data()
    start = _weights(learner)
    learner.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    weights, path = _by_hand(start, x, y, epochs=2)
    for got, expected in zip(_weights(learner), weights):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for got, expected in zip(si.path, path):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert sum(float(np.sum(p)) for p in path) > 1e-3  # plain SGD: ω = lr Σ g² > 0
    for s, w in zip(si.start, start):
        np.testing.assert_array_equal(s.numpy(), w.astype(np.float32))


def test_consolidate_turns_the_path_into_importance_anchors_and_a_fresh_path():
    learner, si = _learner()
    x, y = _data()
    start = _weights(learner)
    learner.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    path = [p.numpy().astype(np.float64) for p in si.path]
    end = _weights(learner)
    si.consolidate()
    assert si.task_count == 1
    for omega, p, a, b in zip(si.importance, path, start, end):
        np.testing.assert_allclose(omega.numpy(), np.maximum(p, 0) / ((b - a) ** 2 + 0.1), rtol=1e-5, atol=1e-7)
    for anchor, s, p, b in zip(si.anchors, si.start, si.path, end):
        np.testing.assert_array_equal(anchor.numpy(), b.astype(np.float32))
        np.testing.assert_array_equal(s.numpy(), b.astype(np.float32))
        np.testing.assert_array_equal(p.numpy(), 0)


def test_negative_path_gives_no_importance():
    learner, si = _learner()
    for p in si.path:
        p.assign(-np.ones(p.shape, np.float32))
    for v in learner.trainable_variables:
        v.assign_add(np.full(v.shape, 0.5, np.float32))
    si.consolidate()
    for omega in si.importance:
        np.testing.assert_array_equal(omega.numpy(), 0)


def test_value_is_half_strength_times_importance_weighted_squared_distance():
    learner, si = _learner(strength=3.0)
    assert float(si()) == 0.0  # no importance before the first task
    x, y = _data()
    learner.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    si.consolidate()
    omega, anchors = [o.numpy().astype(np.float64) for o in si.importance], _weights(learner)
    rng = np.random.default_rng(3)
    for v in learner.trainable_variables:
        v.assign_add(rng.normal(size=v.shape).astype("float32"))
    expected = 0.5 * 3.0 * sum(np.sum(o * (t - a) ** 2) for o, t, a in zip(omega, _weights(learner), anchors))
    assert expected > 0
    assert float(si()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_second_task_path_uses_the_gradient_with_the_penalty_and_adds_to_importance(steps_per_execution):
    strength = 1.0  # lr · λ · max Ω < 1: the penalty pulls back without making SGD oscillate
    learner, si = _learner(steps_per_execution, strength=strength)
    x, y = _data()
    learner.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    si.consolidate()
    omega1, anchors = [o.numpy().astype(np.float64) for o in si.importance], _weights(learner)
    assert all(np.all(o >= 0) for o in omega1) and sum(np.sum(o) for o in omega1) > 0
    x2, y2 = _data(seed=1)
    learner.fit(x2, y2, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    weights, path = _by_hand(anchors, x2, y2, epochs=2, strength=strength, omega=omega1, anchors=anchors)
    for got, expected in zip(_weights(learner), weights):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for got, expected in zip(si.path, path):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-7)
    # the documented choice matters here: without the penalty's gradient the path would differ
    _, task_only = _by_hand(anchors, x2, y2, epochs=2, strength=strength, omega=omega1, anchors=anchors,
                            with_penalty=False)
    assert max(np.abs(p.numpy() - t).max() for p, t in zip(si.path, task_only)) > 1e-4
    end = _weights(learner)
    si.consolidate()
    assert si.task_count == 2
    for omega, o1, p, a, b in zip(si.importance, omega1, path, anchors, end):
        np.testing.assert_allclose(omega.numpy(), o1 + np.maximum(p, 0) / ((b - a) ** 2 + 0.1), rtol=1e-4,
                                   atol=1e-6)


def _synthetic_tasks(count=2):
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(count):
        x = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
        y = (x.reshape(64, -1)[:, k] > 127).astype(int)
        tasks.append(eb.Task(f"T{k}", x, y, x, y, num_classes=2))
    return tasks


def test_consolidation_si_adds_the_penalty_before_the_first_task():
    seen = []

    def fit(learner, task, **kwargs):
        seen.append([(p.kind, p.task_count, sum(float(np.sum(o.numpy())) for o in p.importance))
                     for p in learner.penalties])
        return eb.fit_task(learner, task, **kwargs)

    eb.set_seed(0)
    result = eb.train_sequence(eb.mlp(2, (8,)), _synthetic_tasks(), eb.Consolidation("si", 1.0, damping=0.05),
                               epochs=1, batch_size=32, fit=fit)
    assert seen[0] == [("si", 0, 0.0)]  # in place, with no importance, before task 0 trained
    assert seen[1][0][:2] == ("si", 1) and seen[1][0][2] > 0
    (si,) = result.learner.penalties
    assert isinstance(si, eb.SynapticIntelligence) and si.damping == 0.05 and si.strength == 1.0
    assert any(np.any(p.numpy() != 0) for p in si.path)  # the last task's path, not consolidated


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda m: eb.SynapticIntelligence(m, 1.0, damping=0.0), ValueError, "damping"),
        (lambda m: eb.SynapticIntelligence(m, 1.0, damping=-0.1), ValueError, "damping"),
        (lambda m: eb.SynapticIntelligence(m, -1.0), ValueError, "strength"),
        (lambda m: eb.SynapticIntelligence(m, 1.0, damping="0.1"), TypeError, "damping"),
        (lambda m: eb.Consolidation("si", 1.0, damping=0.0), ValueError, "damping"),
        (lambda m: eb.Consolidation("si", -1.0), ValueError, "strength"),
    ],
)
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make(eb.mlp(3, (4,), input_shape=(5,)))


def test_state_round_trip_into_a_fresh_model(tmp_path):
    learner, si = _learner(strength=4.0, damping=0.3)
    x, y = _data()
    learner.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    si.consolidate()
    learner.fit(*_data(seed=1), batch_size=BATCH, epochs=1, shuffle=False, verbose=0)  # a path under way
    assert any(np.any(p.numpy() != 0) for p in si.path)
    eb.save_state(tmp_path / "si.npz", si)
    fresh = eb.ContinualModel(eb.mlp(3, (4,), input_shape=(5,)))
    (loaded,) = eb.load_state(tmp_path / "si.npz", fresh)
    assert isinstance(loaded, eb.SynapticIntelligence)
    assert (loaded.strength, loaded.damping, loaded.task_count) == (4.0, 0.3, 1)
    for name in ("importance", "anchors", "path", "start"):
        for a, b in zip(getattr(si, name), getattr(loaded, name)):
            np.testing.assert_array_equal(b.numpy(), a.numpy())
    assert loaded.variables == list(fresh.trainable_variables)
    fresh.set_weights(learner.get_weights())
    assert float(si()) > 0
    assert float(loaded()) == float(si())
