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
    result = eb.train_sequence(eb.mlp(2, (8,)), _tasks(), eb.Consolidation(method, 1.0), epochs=1, batch_size=32)
    assert result.R.shape == (3, 3) and np.all((0 <= result.R) & (result.R <= 1))
    assert [p.kind for p in result.learner.penalties] == kinds
    if kinds:
        assert result.learner.penalties[0].task_count == 2
        assert getattr(result.learner.penalties[0], "moving", False) == (method == "l2_moving")
    assert len(result.histories) == 3 and "penalty" in result.histories[0].history


def test_no_method_is_no_penalty():
    runs = []
    for method in (None, eb.Consolidation("none")):
        eb.set_seed(1)
        runs.append(eb.train_sequence(eb.mlp(2, (8,)), _tasks()[:2], method, epochs=1))
    np.testing.assert_array_equal(runs[0].R, runs[1].R)
    assert runs[0].learner.penalties == runs[1].learner.penalties == []


def test_train_sequence_is_deterministic():
    runs = []
    for _ in range(2):
        eb.set_seed(3)
        runs.append(eb.train_sequence(eb.mlp(2, (8,)), _tasks()[:2], eb.Consolidation("ewc", 10.0), epochs=1).R)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_any_object_with_consolidate_is_a_method():
    class Count:
        def __init__(self):
            self.calls = []

        def consolidate(self, learner, task, seed):
            self.calls.append((task.name, seed))

    count = Count()
    eb.train_sequence(eb.mlp(2, (8,)), _tasks(), count, epochs=1, seed=4)
    assert count.calls == [("T0", 4), ("T1", 5)]  # after every task but the last, with seed + i


def test_fit_is_called_like_fit_task_for_every_task():
    seen = []

    def fit(learner, task, **settings):
        seen.append((task.name, settings["seed"], settings["epochs"], settings["reset_optimizer"]))
        return eb.fit_task(learner, task, **settings)

    result = eb.train_sequence(eb.mlp(2, (8,)), _tasks(), epochs=[1, 2, 1], seed=7, reset_optimizer=False, fit=fit)
    assert seen == [("T0", 7, 1, False), ("T1", 8, 2, False), ("T2", 9, 1, False)]
    assert len(result.histories) == 3


def test_unseen_tasks_can_be_left_unevaluated():
    eb.set_seed(0)
    R = eb.train_sequence(eb.mlp(2, (8,)), _tasks(), epochs=1, evaluate_unseen=False).R
    assert np.all(np.isnan(R[np.triu_indices(3, 1)])) and not np.any(np.isnan(R[np.tril_indices(3)]))
    assert 0 <= eb.average_accuracy(R) <= 1 and 0 <= eb.forgetting(R) <= 1
    with pytest.raises(ValueError, match="NaN only above the diagonal"):
        eb.average_accuracy(np.where(np.eye(3) > 0, np.nan, R))


def test_consolidation_takes_tasks_into_one_penalty():
    eb.set_seed(0)
    learner = eb.ContinualModel(eb.mlp(2, (8,)))
    tasks = _tasks()
    ewc = eb.Consolidation("ewc", 2.0, fisher_samples=32)
    ewc.consolidate(learner, tasks[0], seed=1)
    ewc.consolidate(learner, tasks[1], seed=2)
    (penalty,) = learner.penalties
    assert penalty.kind == "ewc" and penalty.task_count == 2 and penalty.strength == 2.0
    eb.Consolidation("l2", 1.0).consolidate(learner, tasks[0])
    assert [p.kind for p in learner.penalties] == ["ewc", "l2"]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda t: eb.Consolidation("mas"), ValueError, "method"),
        (lambda t: eb.Consolidation("si", 1.0, damping=0.0), ValueError, "damping"),
        (lambda t: eb.Consolidation("lwf", 1.0, temperature=-1.0), ValueError, "temperature"),
        (lambda t: eb.Consolidation("l2", -1.0), ValueError, "strength"),
        (lambda t: eb.Consolidation("online_ewc", 1.0, gamma=0.0), ValueError, "gamma"),
        (lambda t: eb.Consolidation("ewc", 1.0, estimator="fisher"), ValueError, "estimator"),
        (lambda t: eb.Consolidation("ewc", 1.0, fisher_samples=0), ValueError, "fisher_samples"),
        (lambda t: eb.train_sequence(eb.mlp(2, (8,)), t, "ewc"), TypeError, "method"),
        (lambda t: eb.train_sequence(eb.mlp(2, (8,)), []), TypeError, "tasks"),
        (lambda t: eb.train_sequence(eb.mlp(2, (8,)), t, epochs=[1, 2]), ValueError, "epochs"),
        (lambda t: eb.train_sequence(eb.mlp(2, (8,)), t, evaluate_unseen=1), TypeError, "evaluate_unseen"),
        (lambda t: eb.fit_task(eb.mlp(2, (8,)), t[0], epochs=1), TypeError, "learner"),
        (lambda t: eb.fit_task(eb.ContinualModel(eb.mlp(2, (8,))), t[0].dataset("train"), epochs=1), TypeError,
         "task"),
        (lambda t: eb.fit_task(eb.ContinualModel(eb.mlp(2, (8,))), t[0], epochs=0), ValueError, "epochs"),
        (lambda t: eb.fit_task(eb.ContinualModel(eb.mlp(2, (8,))), t[0], epochs=1.0), TypeError, "epochs"),
        (
            lambda t: eb.fit_task(eb.ContinualModel(eb.mlp(2, (8,))), t[0], epochs=1, learning_rate=0),
            ValueError,
            "learning_rate",
        ),
        (lambda t: eb.Consolidation("ewc", 1.0).consolidate(eb.mlp(2, (8,)), t[0]), TypeError, "learner"),
    ],
)
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(_tasks())
