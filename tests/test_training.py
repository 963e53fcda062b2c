"""ContinualModel: penalties inside model.fit, logged, and a clear stop on NaN."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb


def _setup(strength=1.0):
    keras.utils.set_random_seed(0)
    net = eb.mlp(3, (8,), input_shape=(5,))
    x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
    y = np.arange(64) % 3
    learner = eb.ContinualModel(net, [eb.L2Anchor(net, strength)])
    learner.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return learner, x, y


def test_fit_logs_the_penalty_and_keeps_history_and_callbacks():
    learner, x, y = _setup()
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(dict(logs)))
    history = learner.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[callback])
    assert set(history.history) >= {"loss", "accuracy", "penalty"}
    assert len(seen) == 3 and all("penalty" in logs for logs in seen)
    assert history.history["penalty"][-1] > 0, "weights moved away from the anchor"


def test_penalty_enters_the_gradient():
    free, x, y = _setup(strength=0.0)
    stiff, _, _ = _setup(strength=1e4)
    start = [v.numpy() for v in stiff.trainable_variables]
    free.fit(x, y, epochs=5, verbose=0)
    stiff.fit(x, y, epochs=5, verbose=0)
    moved = lambda m: max(np.abs(v.numpy() - s).max() for v, s in zip(m.trainable_variables, start))  # noqa: E731
    assert moved(stiff) < 0.2 * moved(free)


def test_setting_penalties_rebuilds_the_training_step():
    learner, x, y = _setup(strength=0.0)
    learner.fit(x, y, epochs=1, verbose=0)
    learner.penalties = []
    history = learner.fit(x, y, epochs=1, verbose=0)
    assert history.history["penalty"] == [0.0]


def test_non_finite_loss_stops_training_with_a_clear_error():
    learner, x, y = _setup()
    learner.compile(optimizer=keras.optimizers.SGD(1e30), loss=keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.raises(eb.NonFiniteLossError, match="strength or learning rate"):
        learner.fit(x * 1e10, y, epochs=3, verbose=0)


@pytest.mark.parametrize("steps_per_execution, where", [(1, "at batch 1;"), (32, "in batches 0 to 3;")])
def test_non_finite_loss_names_batches_within_the_epoch(steps_per_execution, where):
    """NaN weights after the first update: the second batch's loss is NaN. With one batch per execution the
    error names batch 1; with 32 per execution over a 4-batch epoch, batches 0 to 3 (not Keras's 31)."""
    learner, x, y = _setup()
    learner.compile(
        optimizer=keras.optimizers.SGD(1e30),
        loss=keras.losses.SparseCategoricalCrossentropy(True),
        steps_per_execution=steps_per_execution,
    )
    x = np.resize(x, (4 * 16, *x.shape[1:])) * 1e10
    y = np.resize(y, (4 * 16,))
    with pytest.raises(eb.NonFiniteLossError) as raised:
        learner.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert where in str(raised.value)


def test_bad_arguments_are_named():
    net = eb.mlp(3, (8,), input_shape=(5,))
    with pytest.raises(TypeError, match="network"):
        eb.ContinualModel("net")
    with pytest.raises(TypeError, match="penalties"):
        eb.ContinualModel(net, penalties=[1.0])
    with pytest.raises(ValueError, match="num_classes"):
        eb.mlp(1)
    with pytest.raises(ValueError, match="hidden"):
        eb.mlp(5, (0,))
    with pytest.raises(ValueError, match="dropout"):
        eb.mlp(5, dropout=1.0)
    with pytest.raises(ValueError, match="seed"):
        eb.set_seed(-1)
    batches = tf.data.Dataset.from_tensor_slices((np.zeros((4, 5), "float32"), np.zeros(4, "int64"))).batch(2)
    with pytest.raises(TypeError, match=r"task must be an ewcbook Task.*got a tf.data.Dataset.*learner.fit"):
        eb.fit_task(eb.ContinualModel(net), batches, epochs=1)


def _task(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = (x.reshape(n, -1)[:, seed] > 127).astype(int)
    return eb.Task(f"T{seed}", x, y, x, y, num_classes=2)


def test_fit_task_resets_the_optimizer_like_a_fresh_adam_without_recompiling():
    tasks = [_task(seed=0), _task(seed=1)]
    weights = []
    for reuse in (True, False):
        keras.utils.set_random_seed(0)
        learner = eb.ContinualModel(eb.mlp(2, (8,)))
        eb.fit_task(learner, tasks[0], epochs=2, batch_size=16)
        step = learner.train_function
        if not reuse:
            learner.compile(optimizer="sgd")  # compiled otherwise since: fit_task compiles anew, with a new Adam
        eb.fit_task(learner, tasks[1], epochs=2, batch_size=16, seed=1)
        assert (learner.train_function is step) == reuse
        assert int(learner.optimizer.iterations) == 2 * 6
        weights.append(learner.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_compile_for_tasks_compiles_once_and_resets_to_a_fresh_state():
    learner = eb.ContinualModel(eb.mlp(2, (8,)))
    with pytest.raises(RuntimeError, match="compile_for_tasks"):
        learner.reset_optimizer()
    assert learner.task_settings is None
    learner.compile_for_tasks(1e-3, 8)
    optimizer = learner.optimizer
    learner.compile_for_tasks(1e-3, 8)
    assert learner.optimizer is optimizer and learner.task_settings == (1e-3, 8)
    fresh = [v.numpy() for v in optimizer.variables]
    eb.fit_task(learner, _task(), epochs=1, batch_size=16, steps_per_execution=8, reset_optimizer=False)
    learner.reset_optimizer()
    for variable, value in zip(optimizer.variables, fresh):
        np.testing.assert_array_equal(variable.numpy(), value)
    learner.compile_for_tasks(3e-4, 8)
    assert learner.optimizer is not optimizer


def test_fit_task_can_keep_the_optimizer_state_across_tasks():
    learner = eb.ContinualModel(eb.mlp(2, (8,)))
    eb.fit_task(learner, _task(), epochs=1, batch_size=16)
    eb.fit_task(learner, _task(seed=1), epochs=1, batch_size=16, reset_optimizer=False)
    assert int(learner.optimizer.iterations) == 12
    with pytest.raises(TypeError, match="reset_optimizer"):
        eb.fit_task(learner, _task(), epochs=1, reset_optimizer=1)
    with pytest.raises(ValueError, match="steps_per_execution"):
        eb.fit_task(learner, _task(), epochs=1, steps_per_execution=0)


def test_accuracy_history_every_few_batches():
    task = _task()
    learner = eb.ContinualModel(eb.mlp(2, (8,)))
    curve = eb.TaskAccuracyHistory([task], every_batches=2)
    eb.fit_task(learner, task, epochs=2, batch_size=16, steps_per_execution=2, callbacks=[curve])
    assert curve.steps.tolist() == [2, 4, 6, 8, 10, 12]
    assert curve.accuracies.shape == (6, 1)
    with pytest.raises(ValueError, match="every_batches"):
        eb.TaskAccuracyHistory([task], every_batches=0)


def test_fit_task_stops_on_a_non_finite_loss_within_one_execution():
    class Exploding:
        def __call__(self):
            return tf.constant(float("inf"))

    task = _task()
    learner = eb.ContinualModel(eb.mlp(2, (8,)), [Exploding()])
    batches = []
    seen = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    with pytest.raises(eb.NonFiniteLossError):
        eb.fit_task(learner, task, epochs=3, batch_size=8, steps_per_execution=4, callbacks=[seen])
    assert batches == [3]  # the first execution of 4 batches already stops training


def test_fused_adam_takes_the_steps_of_keras_adam():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 28, 28, 1)).astype("float32"), rng.integers(0, 10, 256)
    weights = []
    for optimizer in (keras.optimizers.Adam(3e-3), eb.FusedAdam(3e-3)):
        eb.set_seed(0)
        model = eb.mlp(10, (32,))
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)  # 24 steps
        weights.append(model.get_weights())
        assert int(optimizer.iterations) == 24
    for keras_adam, fused in zip(*weights):
        np.testing.assert_allclose(fused, keras_adam, rtol=1e-4, atol=1e-6)


def test_fused_adam_refuses_amsgrad():
    with pytest.raises(ValueError, match="amsgrad"):
        eb.FusedAdam(1e-3, amsgrad=True)
