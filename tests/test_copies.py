"""Copies of a network trained side by side: each ends where training it alone ends."""

import keras
import numpy as np
import pytest

import ewcbook as eb


def _tasks(n=160):
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(2):
        x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
        y = (x.reshape(n, -1)[:, 100 + k] // 52).astype(int)  # 5 classes
        tasks.append(eb.Task("AB"[k], x, y, x[:64], y[:64], num_classes=5))
    return tasks


def test_every_copy_ends_where_training_it_alone_ends():
    task_a, task_b = _tasks()
    keras.utils.set_random_seed(0)
    learner = eb.ContinualModel(eb.mlp(5, (16, 12)))
    eb.fit_task(learner, task_a, epochs=2, batch_size=32)
    fisher = eb.diagonal_fisher(learner, (task_a.inputs("train"), task_a.y_train))
    start = learner.network.get_weights()
    settings = [(0.0, None), (3.0, None), (30.0, fisher), (0.5, fisher)]
    stacked = eb.train_copies(learner.network, task_b, settings, epochs=2, batch_size=32, seed=4)
    accuracies = eb.copy_accuracies(stacked, [task_a, task_b])
    assert accuracies.shape == (4, 2)
    np.testing.assert_array_equal(learner.network.get_weights()[0], start[0])  # the starting network is untouched
    for k, (strength, importance) in enumerate(settings):
        learner.network.set_weights(start)
        learner.penalties = [] if strength == 0 else (
            [eb.L2Anchor(learner, strength)] if importance is None else [eb.EWC(learner, importance, strength)]
        )
        eb.fit_task(learner, task_b, epochs=2, batch_size=32, seed=4)
        for alone, side_by_side in zip(learner.network.get_weights(), eb.copy_weights(stacked, k)):
            np.testing.assert_allclose(side_by_side, alone, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(accuracies[k], eb.evaluate_tasks(learner, [task_a, task_b]), atol=1 / 64 + 1e-9)


@pytest.mark.parametrize(
    "penalties, error, match",
    [
        ([], ValueError, "penalties"),
        ([1.0], TypeError, "penalties"),
        ([(-1.0, None)], ValueError, "strengths"),
        ([(1.0, [np.ones(3)])], ValueError, "importance"),
    ],
)
def test_bad_arguments_are_named(penalties, error, match):
    with pytest.raises(error, match=match):
        eb.train_copies(eb.mlp(5, (8,)), _tasks()[0], penalties, epochs=1)


def test_only_dense_stacks_can_be_stacked():
    conv = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(5)])
    with pytest.raises(TypeError, match="network"):
        eb.stack_network(conv, 2)
    with pytest.raises(ValueError, match="copies"):
        eb.stack_network(eb.mlp(), 0)
