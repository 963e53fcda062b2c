"""Task sequences on tiny synthetic tasks: the accuracy matrix, penalties added per task, errors."""

import numpy as np
import pytest

import ewcbook as eb


def _tasks():
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(3):
        x = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
        y = (x.reshape(64, -1)[:, k] > 127).astype(int)
        tasks.append(eb.Task(f"T{k}", x, y, x, y, num_classes=2))
    return tasks


@pytest.mark.parametrize(
    "method, kinds",
    [("none", []), ("l2", ["l2"]), ("l2_moving", ["l2"]), ("ewc", ["ewc"]), ("online_ewc", ["online_ewc"])],
)
def test_train_sequence_fills_the_matrix_and_holds_one_penalty_for_every_task(method, kinds):
    eb.set_seed(0)
    result = eb.train_sequence(eb.mlp(2, (8,)), _tasks(), method=method, strength=1.0, epochs=1, batch_size=32)
    assert result.R.shape == (3, 3) and np.all((0 <= result.R) & (result.R <= 1))
    assert [p.kind for p in result.learner.penalties] == kinds
    if kinds:
        assert result.learner.penalties[0].task_count == 2
        assert getattr(result.learner.penalties[0], "moving", False) == (method == "l2_moving")
    assert len(result.histories) == 3 and "penalty" in result.histories[0].history


def test_train_sequence_is_deterministic():
    runs = []
    for _ in range(2):
        eb.set_seed(3)
        runs.append(eb.train_sequence(eb.mlp(2, (8,)), _tasks()[:2], method="ewc", strength=10.0, epochs=1).R)
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("reset_optimizer", [True, False])
def test_a_shared_first_task_gives_the_same_sequence_as_training_it_again(reset_optimizer):
    settings = dict(method="ewc", strength=10.0, epochs=2, batch_size=16, reset_optimizer=reset_optimizer, seed=5)
    eb.set_seed(5)
    whole = eb.train_sequence(eb.mlp(2, (8,)), _tasks(), **settings)
    eb.set_seed(5)
    first = eb.train_sequence(eb.mlp(2, (8,)), _tasks()[:1], **{**settings, "method": "none"})
    resumed = eb.train_sequence(eb.mlp(2, (8,)), _tasks(), start=first, **settings)
    np.testing.assert_array_equal(resumed.R, whole.R)
    for a, b in zip(resumed.learner.get_weights(), whole.learner.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(resumed.learner.optimizer.variables, whole.learner.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_start_must_be_one_task_without_penalty():
    eb.set_seed(0)
    two = eb.train_sequence(eb.mlp(2, (8,)), _tasks()[:2], method="l2", strength=1.0, epochs=1)
    with pytest.raises(ValueError, match="start must be"):
        eb.train_sequence(eb.mlp(2, (8,)), _tasks(), start=two, epochs=1)


def test_unseen_tasks_can_be_left_unevaluated():
    eb.set_seed(0)
    R = eb.train_sequence(eb.mlp(2, (8,)), _tasks(), epochs=1, evaluate_unseen=False).R
    assert np.all(np.isnan(R[np.triu_indices(3, 1)])) and not np.any(np.isnan(R[np.tril_indices(3)]))
    assert 0 <= eb.average_accuracy(R) <= 1 and 0 <= eb.forgetting(R) <= 1
    with pytest.raises(ValueError, match="NaN only above the diagonal"):
        eb.average_accuracy(np.where(np.eye(3) > 0, np.nan, R))


def test_strength_sweep_rows():
    rows = eb.strength_sweep(lambda: eb.mlp(2, (8,)), _tasks()[:2], "l2", [0.1, 10.0], seeds=(0, 1), epochs=1)
    assert [(r["seed"], r["strength"]) for r in rows] == [(0, 0.1), (0, 10.0), (1, 0.1), (1, 10.0)]
    assert all(r["mean"] == pytest.approx((r["acc_A"] + r["acc_B"]) / 2) for r in rows)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda t: eb.train_sequence(eb.mlp(2, (8,)), t, method="si"), ValueError, "method"),
        (lambda t: eb.train_sequence(eb.mlp(2, (8,)), [], method="none"), TypeError, "tasks"),
        (lambda t: eb.train_sequence(eb.mlp(2, (8,)), t, epochs=[1, 2]), ValueError, "epochs"),
        (lambda t: eb.train_sequence(eb.mlp(2, (8,)), t, method="l2", strength=-1.0), ValueError, "strength"),
        (lambda t: eb.fit_task(eb.mlp(2, (8,)), t[0], epochs=1), TypeError, "learner"),
        (lambda t: eb.fit_task(eb.ContinualModel(eb.mlp(2, (8,))), t[0], epochs=0), ValueError, "epochs"),
        (
            lambda t: eb.fit_task(eb.ContinualModel(eb.mlp(2, (8,))), t[0], epochs=1, learning_rate=0),
            ValueError,
            "learning_rate",
        ),
        (lambda t: eb.consolidate("ewc", eb.mlp(2, (8,)), t[0], 1.0), TypeError, "learner"),
        (lambda t: eb.strength_sweep(lambda: eb.mlp(2, (8,)), t[:2], "online_ewc", [1.0]), ValueError, "method"),
        (lambda t: eb.strength_sweep(lambda: eb.mlp(2, (8,)), t, "l2", [1.0]), TypeError, "two Task"),
        (lambda t: eb.strength_sweep(lambda: eb.mlp(2, (8,)), t[:2], "l2", []), ValueError, "strengths"),
        (lambda t: eb.strength_sweep(lambda: eb.mlp(2, (8,)), t[:2], "l2", [1.0], seeds=()), ValueError, "seeds"),
    ],
)
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(_tasks())
