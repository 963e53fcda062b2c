"""Accuracy-matrix metrics on hand-made matrices, and per-task evaluation."""

import keras
import numpy as np
import pytest

import ewcbook as eb

R = np.array(
    [
        [0.9, 0.1, 0.1],
        [0.6, 0.8, 0.2],
        [0.5, 0.7, 0.9],
    ]
)


def test_average_accuracy_is_the_mean_of_the_last_row():
    assert eb.average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_backward_transfer():
    assert eb.backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_forgetting_uses_the_best_earlier_accuracy():
    R2 = R.copy()
    R2[1, 0] = 0.95  # task 0 improved after task 1, then dropped
    assert eb.forgetting(R2) == pytest.approx(((0.95 - 0.5) + (0.8 - 0.7)) / 2)


def test_one_task_has_no_transfer_or_forgetting():
    assert eb.backward_transfer([[0.7]]) == 0.0 and eb.forgetting([[0.7]]) == 0.0


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros(3), [[1.5]], [[np.nan]]])
def test_bad_matrices_are_refused(bad):
    with pytest.raises(ValueError, match="R must"):
        eb.average_accuracy(bad)


def _task(n=40):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = (x.reshape(n, -1)[:, 0] > 127).astype(int)
    return eb.Task("T", x, y, x, y, num_classes=2)


class _Oracle(keras.Model):
    """Predicts class 1 when the first pixel is above 0.5: always right on _task()."""

    def call(self, x):
        first = keras.ops.reshape(x, (-1, 784))[:, :1]
        return keras.ops.concatenate([0.5 - first, first - 0.5], axis=1)


def test_task_accuracy_and_the_epoch_callback():
    task = _task()
    oracle = _Oracle(name="oracle")
    oracle(np.zeros((1, 28, 28, 1), "float32"))
    assert eb.task_accuracy(oracle, task) == 1.0
    np.testing.assert_array_equal(eb.evaluate_tasks(oracle, [task, task]), [1.0, 1.0])
    history = eb.TaskAccuracyHistory([task])
    history.set_model(oracle)
    logs = {}
    history.on_epoch_end(0, logs)
    assert logs == {"acc_T": 1.0} and history.accuracies.shape == (1, 1)
    with pytest.raises(TypeError, match="tasks"):
        eb.TaskAccuracyHistory(task)
    with pytest.raises(TypeError, match="task"):
        eb.task_accuracy(oracle, "T")
