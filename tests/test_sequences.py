"""ewcbook.sequences: intervals, verdicts, the joint dataset, intransigence, the merged-quadratic check."""

import numpy as np
import pytest

import ewcbook as eb
from ewcbook import sequences as sq


def small_tasks(count=3, n=64):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=n)
    perms = [np.arange(784)] + [rng.permutation(784) for _ in range(count - 1)]
    return [eb.Task(f"P{k}", x, y, x[:16], y[:16], num_classes=10, permutation=perms[k]) for k in range(count)]


def test_mean_interval_matches_student_t():
    mean, low, high = sq.mean_interval([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92)
    assert high - mean == pytest.approx(4.303 * 0.02 / np.sqrt(3))
    assert mean - low == pytest.approx(high - mean)
    assert sq.mean_interval([0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="values"):
        sq.mean_interval([])
    with pytest.raises(ValueError, match="finite"):
        sq.mean_interval([0.1, float("nan")])


def test_paired_difference_and_verdict():
    a, b = [0.95, 0.96, 0.94], [0.90, 0.92, 0.91]
    diff = sq.paired_difference(a, b)
    assert diff[1] > 0 and sq.sign_of(diff) == 1
    assert sq.verdict(diff, "up", "down", "?") == "up"
    assert sq.verdict((0.0, -0.1, 0.1), "up", "down", "?") == "?"
    assert sq.verdict((-0.2, -0.3, -0.1), "up", "down", "?") == "down"
    with pytest.raises(ValueError, match="pair up"):
        sq.paired_difference([1.0, 2.0], [1.0])


def test_intransigence_and_seen_curve():
    R = np.array([[0.9, 0.1], [0.8, 0.7]])
    assert sq.intransigence(R, np.array([1.0, 1.0])) == pytest.approx(0.2)
    assert np.allclose(sq.seen_curve(R), [0.9, 0.75])
    with pytest.raises(ValueError, match="reference"):
        sq.intransigence(R, np.array([1.0]))


def test_joint_dataset_covers_every_task_once_per_epoch_with_its_permutation():
    tasks = small_tasks()
    batches = list(sq.joint_dataset(tasks, batch_size=50, seed=3))
    x = np.concatenate([b[0].numpy() for b in batches]).reshape(-1, 784)
    y = np.concatenate([b[1].numpy() for b in batches])
    assert len(y) == 3 * 64 and len(batches) == 4
    expected = np.concatenate([t.inputs("train").numpy().reshape(-1, 784) for t in tasks])
    # every (image, label) of every task appears exactly once
    found = sorted(map(tuple, np.round(np.c_[x, y], 5)))
    assert found == sorted(map(tuple, np.round(np.c_[expected, np.concatenate([t.y_train for t in tasks])], 5)))
    with pytest.raises(TypeError, match="tasks"):
        sq.joint_dataset(tasks[0])


def test_train_joint_and_run_methods_are_paired_by_seed():
    tasks = small_tasks(2)
    joint = sq.run_joint(lambda s: tasks, seeds=[0], hidden=(8,), epochs=1, batch_size=32)
    assert joint[0].accuracies.shape == (2,)
    runs = {"none": {"method": "none"}, "ewc": {"method": "ewc", "strength": 1.0}}
    results = sq.run_methods(lambda s: tasks, runs, seeds=[0, 1], hidden=(8,), epochs=1, batch_size=32)
    assert [len(v) for v in results.values()] == [2, 2]
    assert sq.stored_floats(results["none"][0].learner) == 0
    P = results["ewc"][0].learner.network.count_params()
    assert sq.stored_floats(results["ewc"][0].learner) == 2 * P
    table = sq.summary(results, joint * 2)
    assert set(table) == {"none", "ewc", "joint"}
    assert set(table["ewc"]) >= {"average_accuracy", "forgetting", "intransigence", "values"}
    with pytest.raises(ValueError, match="method"):
        sq.run_methods(lambda s: tasks, {"x": {"method": "nope"}}, seeds=[0])
    with pytest.raises(ValueError, match="seeds"):
        sq.run_methods(lambda s: tasks, runs, seeds=[])


def test_merged_quadratic_equals_sum_of_per_task_penalties():
    eb.set_seed(0)
    network = eb.mlp(10, (16,))
    rng = np.random.default_rng(1)
    base = network.get_weights()
    anchors = [[w + rng.normal(0, 0.1, w.shape).astype(np.float32) for w in base] for _ in range(4)]
    fishers = [[rng.exponential(1.0, w.shape).astype(np.float32) for w in base] for _ in range(4)]
    point = [w + rng.normal(0, 0.2, w.shape).astype(np.float32) for w in base]
    check = sq.merged_penalty_check(network, anchors, fishers, 10.0, point)
    assert check["value_rel_diff"] < 1e-4 and check["grad_rel_diff"] < 1e-4
    P = network.count_params()
    assert check["floats_separate"] == 4 * 2 * P and check["floats_merged"] == 2 * P
    assert all(np.array_equal(a, b) for a, b in zip(network.get_weights(), base)), "weights restored"


def test_matrix_grid_and_colours():
    fig = sq.matrix_grid({"none": np.eye(3), "l2_moving": np.eye(3)}, columns=2, title="t")
    assert len(fig.axes) == 3  # two panels and the colour bar
    assert sq.color("l2_moving") != sq.color("l2") and sq.label("ewc") == eb.plots.label("ewc")
    with pytest.raises(ValueError):
        sq.color("unknown")


def test_weakest_within_noise_takes_the_weakest_penalty_the_noise_cannot_separate():
    scores = {"a": 0.930, "b": 0.930, "c": 0.932, "d": 0.909}
    strengths = {"a": (100.0,), "b": (1000.0,), "c": (1e4,), "d": (10.0,)}
    chosen, error = sq.weakest_within_noise(scores, strengths, 6000)
    assert error == pytest.approx(np.sqrt(0.932 * 0.068 / 6000))
    assert chosen == "a"  # d is weaker but clearly worse
    assert sq.weakest_within_noise(scores, strengths, 10**9)[0] == "c"  # no noise: the best
    with pytest.raises(ValueError, match="same candidates"):
        sq.weakest_within_noise(scores, {"a": 1}, 10)
