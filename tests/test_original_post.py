"""ewcbook.original_post: the seed post's bugs, reproduced on purpose and measured."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb
from ewcbook.chapters.original_post import (
    POST_CHANGES,
    PostL2Anchor,
    post_ewc_runs,
    post_fisher,
    post_l2_penalty,
    post_pipeline,
    post_train_b,
)


def _model(d=6, hidden=4, classes=3):
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((d,)), keras.layers.Dense(hidden, activation="tanh"), keras.layers.Dense(classes)]
    )


def _dropout_model(d=6, hidden=4, classes=3):
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(classes),
        ]
    )


def _dataset(n=10, d=6, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = rng.integers(0, 3, n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch), x


def _by_hand(model, x):
    """mean(g**2, axis=0) of g = ∂ Σ_i Σ_c log p(c | x_i) / ∂θ, for one batch."""
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(tf.nn.log_softmax(model(x)))
    return [np.mean(np.square(g.numpy()), axis=0) for g in tape.gradient(total, model.trainable_variables)]


def _task(n=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 5, n)
    return eb.Task("T", images, labels, images[:16], labels[:16], num_classes=5)


# --- post_fisher --------------------------------------------------------------------


def test_post_fisher_reduced_shapes_and_broadcast():
    model = _model()
    data, _ = _dataset()
    raw = post_fisher(model, data, num_batches=2, broadcast=False)
    assert [tuple(r.shape) for r in raw] == [(4,), (), (3,), ()]
    full = post_fisher(model, data, num_batches=2)
    assert [tuple(f.shape) for f in full] == [tuple(v.shape) for v in model.trainable_variables]
    kernel, bias = full[0].numpy(), full[1].numpy()
    assert np.all(kernel == kernel[0])  # every row the same
    assert np.all(bias == bias[0])  # one scalar for the whole bias


def test_post_fisher_matches_its_definition_and_repeats_the_dataset():
    model = _model()
    data, x = _dataset(n=10, batch=5)
    first, second = _by_hand(model, x[:5]), _by_hand(model, x[5:])
    # 3 batches from a 2-batch dataset: batches 0, 1, 0 (the post repeats its dataset)
    got = post_fisher(model, data, num_batches=3, broadcast=False)
    for g, a, b in zip(got, first, second):
        np.testing.assert_allclose(g.numpy(), (2 * a + b) / 3, rtol=1e-5, atol=1e-7)


def test_post_fisher_grows_with_the_square_of_the_batch_not_like_the_fisher():
    model = _model()
    x = np.random.default_rng(1).normal(size=(1, 6)).astype("float32")
    one = tf.data.Dataset.from_tensor_slices((x, [0])).batch(1)
    four = tf.data.Dataset.from_tensor_slices((np.repeat(x, 4, axis=0), [0] * 4)).batch(4)
    for a, b in zip(post_fisher(model, one, 1), post_fisher(model, four, 1)):
        np.testing.assert_allclose(b.numpy(), 16 * a.numpy(), rtol=1e-4)
    # the real Fisher of four copies of an example is the Fisher of that example
    for a, b in zip(
        eb.diagonal_fisher(model, one, estimator="exact"), eb.diagonal_fisher(model, four, estimator="exact")
    ):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-9)


def test_post_fisher_runs_in_inference_mode_unless_told_otherwise():
    model = _dropout_model()
    data, x = _dataset(n=10, batch=5)
    off = post_fisher(model, data, num_batches=2, broadcast=False)
    first, second = _by_hand(model, x[:5]), _by_hand(model, x[5:])  # model(x): inference, dropout off
    for g, a, b in zip(off, first, second):
        np.testing.assert_allclose(g.numpy(), (a + b) / 2, rtol=1e-5, atol=1e-7)
    on = post_fisher(model, data, num_batches=2, broadcast=False, training=True)
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(on, off))


def test_post_fisher_can_be_used_as_ewc_importance():
    model = _model()
    data, _ = _dataset()
    penalty = eb.EWC(model, post_fisher(model, data, 1), strength=25.0)
    assert float(penalty()) == 0.0


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"model": "not a model"}, TypeError),
        ({"model": keras.Sequential([keras.layers.Dense(2)])}, ValueError),
        ({"dataset": (np.zeros((2, 6), "float32"), np.zeros(2))}, TypeError),
        ({"dataset": tf.data.Dataset.from_tensor_slices(np.zeros((4, 6), "float32")).batch(2)}, TypeError),
        ({"dataset": tf.data.Dataset.from_tensor_slices((np.zeros((4, 6), "int32"), np.zeros(4))).batch(2)}, TypeError),
        ({"num_batches": 0}, ValueError),
        ({"num_batches": 1.5}, TypeError),
        ({"num_batches": True}, TypeError),
        ({"broadcast": "yes"}, TypeError),
        ({"training": 1}, TypeError),
    ],
)
def test_post_fisher_validates_its_arguments(kwargs, error):
    data, _ = _dataset()
    args = {"model": _model(), "dataset": data, "num_batches": 1, **kwargs}
    with pytest.raises(error):
        post_fisher(args.pop("model"), args.pop("dataset"), args.pop("num_batches"), **args)


def test_post_fisher_rejects_an_empty_dataset():
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 6), "float32"), np.zeros(0))).batch(2)
    with pytest.raises(ValueError, match="empty"):
        post_fisher(_model(), empty, 1)


# --- post_l2_penalty ----------------------------------------------------------------


def test_post_l2_penalty_is_half_the_sum_of_unsquared_norms():
    model = _model()
    variables = model.trainable_variables
    anchors = [v.numpy() + 0.5 for v in variables]
    expected = 0.5 * sum(np.linalg.norm((v.numpy() - a).ravel()) for v, a in zip(variables, anchors))
    assert float(post_l2_penalty(variables, anchors)) == pytest.approx(expected, rel=1e-5)


def test_post_l2_penalty_gradient_is_nan_at_the_anchor_and_finite_elsewhere():
    model = _model()
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        value = post_l2_penalty(variables, [v.numpy() for v in variables])
    assert float(value) == 0.0
    assert all(np.all(np.isnan(g.numpy())) for g in tape.gradient(value, variables))
    anchors = [v.numpy() - 1.0 for v in variables]
    with tf.GradientTape() as tape:
        value = post_l2_penalty(variables, anchors)
    for g, v in zip(tape.gradient(value, variables), variables):
        d = np.ones(v.shape)
        np.testing.assert_allclose(g.numpy(), 0.5 * d / np.linalg.norm(d.ravel()), rtol=1e-5)


def test_post_l2_penalty_stops_continual_model_training():
    model = _model()
    learner = eb.ContinualModel(model)
    anchors = [v.numpy() for v in learner.trainable_variables]
    learner.penalties = [lambda: post_l2_penalty(learner.trainable_variables, anchors)]
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data, _ = _dataset(n=20, batch=5)
    with pytest.raises(eb.NonFiniteLossError):
        learner.fit(data, epochs=1, verbose=0, shuffle=False)


@pytest.mark.parametrize(
    "model_vars, anchors, error",
    [
        ("x", [np.zeros(2)], TypeError),
        ([], [], TypeError),
        ([tf.zeros(2)], None, TypeError),
        ([tf.zeros(2)], [np.zeros(2), np.zeros(2)], ValueError),
        ([tf.zeros(2)], [np.zeros(3)], ValueError),
    ],
)
def test_post_l2_penalty_validates_its_arguments(model_vars, anchors, error):
    with pytest.raises(error):
        post_l2_penalty(model_vars, anchors)


# --- post_pipeline ------------------------------------------------------------------


def _epoch(dataset):
    return np.concatenate([tf.reduce_sum(x, axis=[1, 2, 3]).numpy() for x, _ in dataset])


def test_post_pipeline_repeats_its_order_and_ours_does_not():
    task = _task()
    post = post_pipeline(task, batch_size=16, seed=1)
    first, second = _epoch(post), _epoch(post)
    np.testing.assert_array_equal(first, second)
    unshuffled = task.x_train.astype(np.float32).sum(axis=(1, 2, 3)) / 255.0
    assert not np.allclose(first, unshuffled)  # it did shuffle, once
    ours = task.dataset("train", batch_size=16, seed=1)
    assert not np.array_equal(_epoch(ours), _epoch(ours))


def test_post_pipeline_normalises_and_batches():
    task = _task(n=40)
    batches = list(post_pipeline(task, "test", batch_size=7))
    assert [len(y) for _, y in batches] == [7, 7, 2]
    x, y = batches[0]
    assert x.dtype == tf.float32 and x.shape[1:] == (28, 28, 1)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert sorted(np.concatenate([b[1].numpy() for b in batches]).tolist()) == sorted(task.y_test.tolist())


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"task": "A"}, TypeError),
        ({"split": "validation"}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"batch_size": 2.0}, TypeError),
        ({"seed": "0"}, TypeError),
        ({"seed": False}, TypeError),
    ],
)
def test_post_pipeline_validates_its_arguments(kwargs, error):
    args = {"task": _task(n=8), **kwargs}
    with pytest.raises(error):
        post_pipeline(args.pop("task"), **args)


# --- PostL2Anchor -------------------------------------------------------------------


def test_post_l2_anchor_is_the_post_penalty_and_stops_training():
    eb.set_seed(0)
    learner = eb.ContinualModel(eb.mlp(num_classes=3, hidden=(4,), input_shape=(4, 4, 1)))
    penalty = PostL2Anchor(learner, strength=2.0)
    assert float(penalty()) == 0.0 and "PostL2Anchor(strength=2)" == repr(penalty)
    with tf.GradientTape() as tape:
        value = penalty()
    assert all(np.isnan(g.numpy()).all() for g in tape.gradient(value, learner.trainable_variables))
    learner.network.layers[-1].bias.assign_add(np.ones(3, "float32"))
    expected = 2.0 * float(post_l2_penalty(learner.trainable_variables, penalty.anchors))
    assert float(penalty()) == pytest.approx(expected) and expected == pytest.approx(np.sqrt(3.0))
    with pytest.raises(TypeError, match="model"):
        PostL2Anchor("not a model")
    with pytest.raises(ValueError, match="strength"):
        PostL2Anchor(learner, strength=-1.0)


# --- post_train_b -------------------------------------------------------------------


def _compiled(model):
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    return model


def _inference_loss(model, data):
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return float(np.mean([float(cross_entropy(y, model(x))) for x, y in data]))


def test_post_train_b_steps_with_task_a_optimizer_in_inference_mode_by_default():
    model = _compiled(_dropout_model())
    data, _ = _dataset(n=10, batch=5)
    model.optimizer.iterations.assign(7)  # as if task A had trained 7 steps with it
    loop = post_train_b(model, data, epochs=3)
    assert (loop.training, loop.shared_optimizer, loop.epochs, len(loop.losses)) == (False, True, 3, 3)
    assert int(model.optimizer.iterations) == 7 + 3 * 2  # the same optimizer, its state carried on


def test_post_train_b_training_flag_switches_dropout_and_the_penalty_is_added():
    model = _dropout_model()
    data, _ = _dataset(n=10, batch=5)
    expected = _inference_loss(model, data)
    frozen = keras.optimizers.Adam(learning_rate=0.0)  # no weight moves: every epoch sees the same loss
    off = post_train_b(model, data, lambda: tf.constant(2.0), epochs=2, optimizer=frozen)
    assert off.training is False and off.shared_optimizer is False
    assert off.losses == pytest.approx((expected + 2.0, expected + 2.0), rel=1e-5)
    on = post_train_b(model, data, epochs=2, training=True, optimizer=keras.optimizers.Adam(learning_rate=0.0))
    assert on.training is True
    assert not np.allclose(on.losses, expected, rtol=1e-4)  # dropout on: another loss


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"model": "not a model"}, TypeError),
        ({"dataset": (np.zeros((2, 6), "float32"), np.zeros(2))}, TypeError),
        ({"penalty": 3.0}, TypeError),
        ({"epochs": 0}, ValueError),
        ({"epochs": 1.0}, TypeError),
        ({"training": 1}, TypeError),
        ({"optimizer": "adam"}, TypeError),
    ],
)
def test_post_train_b_validates_its_arguments(kwargs, error):
    data, _ = _dataset()
    args = {"model": _compiled(_model()), "dataset": data, "epochs": 1, **kwargs}
    with pytest.raises(error):
        post_train_b(args.pop("model"), args.pop("dataset"), **args)


def test_post_train_b_needs_an_optimizer_and_a_batch():
    data, _ = _dataset()
    with pytest.raises(ValueError, match="compiled"):
        post_train_b(_model(), data, epochs=1)
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 6), "float32"), np.zeros(0, "int64"))).batch(2)
    with pytest.raises(ValueError, match="empty"):
        post_train_b(_compiled(_model()), empty, epochs=1)


# --- post_ewc_runs ------------------------------------------------------------------


def test_post_ewc_runs_the_post_configuration_and_each_change_from_one_start():
    task_a, task_b = _task(seed=0), _task(seed=1)
    # "as run" again last: after "dropout on" has stepped task A's Adam, it must start from A's state again
    configurations = {**POST_CHANGES, "as run again": POST_CHANGES["as run"]}
    runs = post_ewc_runs(task_a, task_b, configurations, seed=0, epochs=(1, 2), fisher_batches=2)
    assert list(runs) == list(configurations)
    as_run = runs["as run"]
    assert (as_run.loop.training, as_run.fisher_training, as_run.loop.shared_optimizer) == (False, False, True)
    assert as_run.loop.epochs == 2 and 0.0 <= as_run.acc_a <= 1.0 and 0.0 <= as_run.acc_b <= 1.0
    dropout = runs["dropout on"]
    assert (dropout.loop.training, dropout.fisher_training, dropout.loop.shared_optimizer) == (True, True, True)
    fresh = runs["fresh Adam"]
    assert (fresh.loop.training, fresh.fisher_training, fresh.loop.shared_optimizer) == (False, False, False)
    assert runs["as run again"] == as_run  # the same weights, Adam state and data order: the same run


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"configurations": []}, TypeError),
        ({"configurations": {}}, ValueError),
        ({"configurations": {"x": {"training": False}}}, ValueError),
        ({"configurations": {"x": {"training": 0, "fresh_optimizer": False}}}, TypeError),
        ({"task_a": "A"}, TypeError),
        ({"epochs": 3}, TypeError),
        ({"epochs": (3, 0)}, ValueError),
        ({"fisher_batches": 0}, ValueError),
        ({"strength": -1.0}, ValueError),
        ({"seed": -1}, ValueError),
    ],
)
def test_post_ewc_runs_validates_its_arguments(kwargs, error):
    args = {"task_a": _task(n=8), "task_b": _task(n=8, seed=1), **kwargs}
    with pytest.raises(error):
        post_ewc_runs(args.pop("task_a"), args.pop("task_b"), **args)
