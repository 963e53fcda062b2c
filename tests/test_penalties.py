"""Penalties: values and gradients against hand computation, online EWC, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def _shift(model, delta):
    for v in model.trainable_variables:
        v.assign(v.numpy() + delta)


def _value_and_grads(penalty, model):
    with tf.GradientTape() as tape:
        value = penalty()
    return float(value), [g.numpy() for g in tape.gradient(value, model.trainable_variables)]


def test_l2_anchor_value_and_gradient():
    model = _model()
    penalty = eb.L2Anchor(model, strength=3.0)
    assert float(penalty()) == 0.0
    anchors = [v.numpy() for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:
        v.assign(v.numpy() + rng.normal(size=v.shape).astype("float32"))
    diffs = [v.numpy() - a for v, a in zip(model.trainable_variables, anchors)]
    value, grads = _value_and_grads(penalty, model)
    assert value == pytest.approx(0.5 * 3.0 * sum(np.sum(d**2) for d in diffs), rel=1e-5)
    for g, d in zip(grads, diffs):
        np.testing.assert_allclose(g, 3.0 * d, rtol=1e-5)


def test_l2_anchor_gradient_is_finite_at_the_anchor():
    model = _model()
    _, grads = _value_and_grads(eb.L2Anchor(model, 1.0), model)
    assert all(np.all(g == 0) for g in grads)


def test_ewc_value_and_gradient_weight_each_parameter_by_its_fisher():
    model = _model()
    fisher = [np.arange(np.prod(v.shape), dtype="float32").reshape(v.shape) for v in model.trainable_variables]
    penalty = eb.EWC(model, fisher, strength=2.0)
    _shift(model, 0.5)
    value, grads = _value_and_grads(penalty, model)
    assert value == pytest.approx(0.5 * 2.0 * sum(np.sum(f * 0.25) for f in fisher), rel=1e-5)
    for g, f in zip(grads, fisher):
        np.testing.assert_allclose(g, 2.0 * f * 0.5, rtol=1e-5)


def test_online_ewc_accumulates_fisher_and_moves_the_anchor():
    model = _model()
    ones = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    online = eb.OnlineEWC(model, ones, strength=1.0, gamma=0.5)
    _shift(model, 1.0)
    online.consolidate([2 * o for o in ones])
    assert online.task_count == 2
    for w in online.importance:
        np.testing.assert_allclose(w.numpy(), 0.5 * 1 + 2)  # γF + F_new
    assert float(online()) == 0.0, "re-anchored at the current weights"
    _shift(model, 1.0)
    n = sum(np.prod(v.shape) for v in model.trainable_variables)
    assert float(online()) == pytest.approx(0.5 * 2.5 * n)


def test_per_task_penalties_sum_in_a_continual_model():
    model = _model()
    ones = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    first = eb.EWC(model, ones, 1.0)
    _shift(model, 1.0)
    second = eb.EWC(model, ones, 1.0)
    learner = eb.ContinualModel(model, [first, second])
    learner.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError())
    x, y = np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32")
    logs = learner.evaluate(x, y, return_dict=True, verbose=0)
    assert logs["penalty"] == pytest.approx(float(first()) + float(second()), rel=1e-5)


def test_huge_strength_does_not_produce_nan_weights():
    keras.utils.set_random_seed(0)
    net = eb.mlp(10, (64, 64), input_shape=(20,))
    x = np.random.default_rng(0).normal(size=(256, 20)).astype("float32")
    y = np.arange(256) % 10
    learner = eb.ContinualModel(net)
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    learner.fit(x, y, epochs=1, verbose=0)
    fisher = eb.diagonal_fisher(learner, (x, y), seed=0)
    learner.penalties = [eb.EWC(learner, fisher, strength=1e7)]
    anchors = [v.numpy() for v in learner.trainable_variables]
    learner.fit(x, (y + 1) % 10, epochs=3, verbose=0)
    for v, a in zip(learner.trainable_variables, anchors):
        assert np.all(np.isfinite(v.numpy()))
        assert np.abs(v.numpy() - a).max() < 0.05


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda m: eb.L2Anchor(m, -1.0), ValueError, "strength"),
        (lambda m: eb.L2Anchor(m, float("nan")), ValueError, "strength"),
        (lambda m: eb.L2Anchor(m, "1"), TypeError, "strength"),
        (lambda m: eb.L2Anchor("model", 1.0), TypeError, "model"),
        (lambda m: eb.L2Anchor(keras.Sequential([keras.layers.Dense(2)]), 1.0), ValueError, "built"),
        (lambda m: eb.EWC(m, [np.ones((3, 2))], 1.0), ValueError, "fisher"),
        (lambda m: eb.EWC(m, [np.ones((2, 3)), np.ones(2)], 1.0), ValueError, "shape"),
        (lambda m: eb.EWC(m, [-np.ones((3, 2)), np.ones(2)], 1.0), ValueError, ">= 0"),
        (lambda m: eb.EWC(m, np.ones((3, 2)), 1.0), TypeError, "fisher"),
        (lambda m: eb.OnlineEWC(m, [np.ones((3, 2)), np.ones(2)], 1.0, gamma=0.0), ValueError, "gamma"),
        (lambda m: eb.OnlineEWC(m, [np.ones((3, 2)), np.ones(2)], 1.0, gamma=1.5), ValueError, "gamma"),
    ],
)
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make(_model())


@pytest.mark.parametrize("kind", ["ewc", "l2"])
def test_merged_penalty_equals_the_sum_of_per_task_penalties_in_value_and_gradient(kind):
    model = _model()
    rng = np.random.default_rng(1)
    fishers = [[rng.random(v.shape).astype("float32") * (k + 1) for v in model.trainable_variables] for k in range(3)]
    separate, merged = [], None
    for k, fisher in enumerate(fishers):  # three tasks, each anchored at other weights
        _shift(model, 0.3 * (k + 1))
        separate.append(eb.EWC(model, fisher, 7.0) if kind == "ewc" else eb.L2Anchor(model, 7.0))
        if merged is None:
            merged = eb.EWC(model, fisher, 7.0) if kind == "ewc" else eb.L2Anchor(model, 7.0)
        else:
            merged.consolidate(fisher) if kind == "ewc" else merged.consolidate()
    assert merged.task_count == 3
    _shift(model, -0.5)
    for penalties in (separate, [merged]):
        with tf.GradientTape() as tape:
            value = tf.add_n([p() for p in penalties])
        grads = tape.gradient(value, model.trainable_variables)
        if penalties is separate:
            expected_value, expected_grads = float(value), [g.numpy() for g in grads]
    np.testing.assert_allclose(float(value), expected_value, rtol=1e-5)
    for g, e in zip(grads, expected_grads):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-4, atol=1e-6)
    # memory: one anchor and one importance per variable (the L2 anchor: one uniform weight), however many tasks
    assert len(merged.anchors) == len(model.trainable_variables)
    if kind == "ewc":
        assert len(merged.importance) == len(model.trainable_variables)
    else:
        assert merged.importance is None and float(merged.scale.numpy()) == 3.0


def test_moving_l2_anchor_keeps_only_the_newest_anchor():
    model = _model()
    moving = eb.L2Anchor(model, 2.0, moving=True)
    _shift(model, 1.0)
    moving.consolidate()
    assert moving.task_count == 2 and float(moving()) == 0.0
    _shift(model, 1.0)
    n = sum(np.prod(v.shape) for v in model.trainable_variables)
    assert float(moving()) == pytest.approx(0.5 * 2.0 * n)
