"""ewcbook.chapters.ch6: the shared first task, runs over seeds, intransigence, the merged-quadratic check."""

import importlib.util
import pathlib

import numpy as np
import pytest
from conftest import small_permuted_tasks
from published import NUMBER

import ewcbook as eb
from ewcbook.chapters import MARGIN, ch6, load_results, style, weakest_within_noise


@pytest.mark.parametrize("reset_optimizer", [True, False])
def test_a_shared_first_task_gives_the_same_sequence_as_training_it_again(reset_optimizer):
    tasks = small_permuted_tasks()
    ewc = eb.Consolidation("ewc", 10.0)
    settings = dict(epochs=2, batch_size=16, reset_optimizer=reset_optimizer, seed=5)
    eb.set_seed(5)
    whole = eb.train_sequence(eb.mlp(10, (8,)), tasks, ewc, **settings)
    eb.set_seed(5)
    first = eb.train_sequence(eb.mlp(10, (8,)), tasks[:1], **settings)
    resumed = eb.train_sequence(eb.mlp(10, (8,)), tasks, ewc, fit=ch6.StartFrom(first, tasks[0]), **settings)
    np.testing.assert_array_equal(resumed.R, whole.R)
    for a, b in zip(resumed.learner.get_weights(), whole.learner.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(resumed.learner.optimizer.variables, whole.learner.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert resumed.histories[0] is first.histories[0]


def test_a_start_must_be_one_task_without_penalty():
    tasks = small_permuted_tasks()
    eb.set_seed(0)
    two = eb.train_sequence(eb.mlp(10, (8,)), tasks[:2], eb.Consolidation("l2", 1.0), epochs=1)
    with pytest.raises(ValueError, match="first must be"):
        ch6.StartFrom(two, tasks[0])
    one = eb.train_sequence(eb.mlp(10, (8,)), tasks[:1], epochs=1)
    with pytest.raises(ValueError, match="learning_rate"):
        eb.train_sequence(eb.mlp(10, (8,)), tasks, epochs=1, learning_rate=0.01, fit=ch6.StartFrom(one, tasks[0]))


def test_intransigence_and_seen_curve():
    R = np.array([[0.9, 0.1], [0.8, 0.7]])
    assert ch6.intransigence(R, np.array([1.0, 1.0])) == pytest.approx(0.2)
    assert np.allclose(ch6.seen_curve(R), [0.9, 0.75])
    with pytest.raises(ValueError, match="reference"):
        ch6.intransigence(R, np.array([1.0]))


def test_joint_training_sees_every_task_through_its_own_permutation():
    tasks = small_permuted_tasks()
    eb.set_seed(0)
    joint = ch6.train_joint(eb.mlp(10, (8,)), tasks, epochs=1, batch_size=32)
    assert joint.accuracies.shape == (3,) and int(joint.learner.optimizer.iterations) == 6  # 3 * 64 / 32
    eb.set_seed(0)
    alone = eb.ContinualModel(eb.mlp(10, (8,)))
    eb.fit_task(alone, eb.joint(tasks), epochs=1, batch_size=32)
    for a, b in zip(joint.learner.get_weights(), alone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_train_joint_and_run_methods_are_paired_by_seed():
    tasks = small_permuted_tasks(2)
    joint = ch6.run_joint(lambda s: tasks, seeds=[0], hidden=(8,), epochs=1, batch_size=32)
    assert joint[0].accuracies.shape == (2,)
    runs = {"none": {"method": "none"}, "ewc": {"method": "ewc", "strength": 1.0}}
    results = ch6.run_methods(lambda s: tasks, runs, seeds=[0, 1], hidden=(8,), epochs=1, batch_size=32)
    assert [len(v) for v in results.values()] == [2, 2]
    assert ch6.stored_floats(results["none"][0].learner) == 0
    P = results["ewc"][0].learner.network.count_params()
    assert ch6.stored_floats(results["ewc"][0].learner) == 2 * P
    table = ch6.metrics(results, joint * 2)
    assert set(table) == {"none", "ewc", "joint"}
    assert set(table["ewc"]) >= {"average_accuracy", "forgetting", "intransigence", "values"}
    with pytest.raises(ValueError, match="method"):
        ch6.run_methods(lambda s: tasks, {"x": {"method": "nope"}}, seeds=[0])
    with pytest.raises(TypeError, match="unexpected keyword"):
        ch6.run_methods(lambda s: tasks, {"x": {"method": "ewc", "lam": 1.0}}, seeds=[0])
    with pytest.raises(ValueError, match="seeds"):
        ch6.run_methods(lambda s: tasks, runs, seeds=[])


def test_runs_in_two_processes_give_the_same_numbers_and_learners_as_in_one():
    """run_table (and so run_methods and run_joint, which share its path) with workers=2: the same R,
    accuracies, weights and penalties as in this process. Two pools only: each start costs seconds."""
    make = ch6.PermutedTasks(2, limit=300)
    runs = {"none": {"method": "none"}, "ewc": {"method": "ewc", "strength": 5.0},
            "online_ewc": {"method": "online_ewc", "strength": 5.0, "gamma": 0.9}}
    settings = dict(hidden=(8,), epochs=1, batch_size=32, fisher_samples=100, reset_optimizer=False)
    here = ch6.run_methods(make, runs, seeds=[0, 1], **settings)
    joint_here = ch6.run_joint(make, seeds=[0, 1], hidden=(8,), epochs=1, batch_size=32)
    # one job per seed and per joint run
    table, joint_table = ch6.run_table(make, runs, seeds=[0, 1], workers=2,
                                       joint=dict(epochs=1, batch_size=32), **settings)
    alone = ch6.run_methods(make, runs, seeds=[1], workers=2, **settings)  # two jobs: the runs cut in two
    for name in runs:
        np.testing.assert_array_equal(alone[name][0].R, here[name][1].R)
        for a, b in zip(here[name], table[name]):
            np.testing.assert_array_equal(a.R, b.R)
            for u, v in zip(a.learner.network.get_weights(), b.learner.network.get_weights()):
                np.testing.assert_array_equal(u, v)
            assert ch6.stored_floats(a.learner) == ch6.stored_floats(b.learner)
            values = [[float(p()) for p in r.learner.penalties] for r in (a, b)]
            np.testing.assert_allclose(values[0], values[1], rtol=1e-6)
    for a, b in zip(joint_here, joint_table):
        np.testing.assert_array_equal(a.accuracies, b.accuracies)
        assert b.learner is None
    with pytest.raises(ValueError, match="workers"):
        ch6.run_methods(make, runs, seeds=[0], workers=0)
    with pytest.raises(TypeError, match="joint"):
        ch6.run_table(make, runs, seeds=[0], joint=2)


def test_merged_quadratic_equals_sum_of_per_task_penalties():
    eb.set_seed(0)
    network = eb.mlp(10, (16,))
    rng = np.random.default_rng(1)
    base = network.get_weights()
    anchors = [[w + rng.normal(0, 0.1, w.shape).astype(np.float32) for w in base] for _ in range(4)]
    fishers = [[rng.exponential(1.0, w.shape).astype(np.float32) for w in base] for _ in range(4)]
    point = [w + rng.normal(0, 0.2, w.shape).astype(np.float32) for w in base]
    separate, merged = [], None
    for anchor, fisher in zip(anchors, fishers):
        network.set_weights(anchor)
        separate.append(eb.EWC(network, fisher, 10.0))
        if merged is None:
            merged = eb.EWC(network, fisher, 10.0)
        else:
            merged.consolidate(fisher)
    network.set_weights(base)
    check = ch6.merged_penalty_check(separate, merged, point)
    assert check["value_rel_diff"] < 1e-4 and check["grad_rel_diff"] < 1e-4
    P = network.count_params()
    assert check["floats_separate"] == 4 * 2 * P and check["floats_merged"] == 2 * P
    assert all(np.array_equal(a, b) for a, b in zip(network.get_weights(), base)), "weights restored"
    other = eb.EWC(eb.mlp(10, (16,)), fishers[0], 10.0)
    with pytest.raises(ValueError, match="one network"):
        ch6.merged_penalty_check([other], merged, point)


def test_matrix_grid_and_colours():
    fig = ch6.matrix_grid({"none": np.eye(3), "l2_moving": np.eye(3)}, columns=2, title="t")
    assert len(fig.axes) == 3  # two panels and the colour bar
    assert style.color("l2_moving") != style.color("l2") and style.label("l2_moving") == "L2, moving anchor"
    with pytest.raises(ValueError, match="method"):
        style.color("unknown")


def test_weakest_within_noise_takes_the_weakest_penalty_the_noise_cannot_separate():
    scores = {"a": 0.930, "b": 0.930, "c": 0.932, "d": 0.909}
    strengths = {"a": (100.0,), "b": (1000.0,), "c": (1e4,), "d": (10.0,)}
    chosen, band = weakest_within_noise(scores, strengths, 6000)
    assert band == pytest.approx(np.sqrt(0.932 * 0.068 / 6000) + MARGIN)  # one standard error, plus the margin
    assert chosen == "a"  # d is weaker but clearly worse
    clear = {"a": 0.920, "c": 0.932}
    assert weakest_within_noise(clear, {"a": 1, "c": 2}, 10**9)[0] == "c"  # beyond the margin: the best
    assert weakest_within_noise(clear, {"a": 1, "c": 2}, 1000)[0] == "a"  # within the noise of 1,000 images
    with pytest.raises(ValueError, match="same candidates"):
        weakest_within_noise(scores, {"a": 1}, 10)
    with pytest.raises(ValueError, match="n_examples"):
        weakest_within_noise(scores, strengths, 0)


def test_not_resolved_states_the_largest_difference_the_interval_allows_in_one_wording():
    assert ch6.not_resolved("A against B", (0.01, -0.05, 0.03)) == (
        "A against B is not resolved: the interval does not clear 0 by more than 0.005 (differences up to 0.050 "
        "allowed)"
    )
    # an interval whose end crosses 0 on another CPU gives the same sentence, numbers aside
    assert NUMBER.sub("#", ch6.not_resolved("A", (0.01, 0.002, 0.02))) == NUMBER.sub(
        "#", ch6.not_resolved("A", (0.01, -0.002, 0.02))
    )
    with pytest.raises(TypeError, match="subject"):
        ch6.not_resolved("", (0.0, -1.0, 1.0))


def test_the_ablation_benchmark_runs_a_level_and_reports_it():
    """A smoke run of benchmarks/permuted_ablation.py's run() on tiny tasks (the full run is the committed JSON)."""
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "permuted_ablation.py"
    spec = importlib.util.spec_from_file_location("permuted_ablation", path)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    row = ablation.run("keep_adam", seed=1, tasks=small_permuted_tasks(2))
    assert row["name"] == "keep_adam" and row["seed"] == 1 and row["config"]["reset_optimizer"] is False
    assert 0.0 <= row["average_accuracy"] <= 1.0 and len(row["R"]) == 2


def _reference_benchmark():
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "permuted_reference.py"
    spec = importlib.util.spec_from_file_location("permuted_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_benchmark_runs_both_methods_on_tiny_tasks():
    """A smoke run of benchmarks/permuted_reference.py's run() (the full run is the committed JSON)."""
    reference = _reference_benchmark()
    settings = {**reference.SETTINGS, "hidden": [16, 16], "iterations": 7, "batch_size": 16, "fisher_samples": 40}
    tasks = small_permuted_tasks(2)
    rows = [reference.run(method, tasks, 3, settings) for method in ("none", "ewc")]
    for row, method in zip(rows, ("none", "ewc")):
        assert row["method"] == method and row["seed"] == 3 and len(row["R"]) == 2
        assert 0.0 <= row["average_accuracy"] <= 1.0
    assert rows[1]["strength"] == 500.0


def test_the_reference_network_is_initialised_as_pytorch_does_and_trains_its_iterations():
    reference = _reference_benchmark()
    network = reference.reference_network([30, 20], seed=0, input_fan_in=1024)
    kernels = [w for w in network.get_weights() if w.ndim == 2]
    biases = [w for w in network.get_weights() if w.ndim == 1]
    for w, b, fan_in in zip(kernels, biases, (1024, 30, 20)):
        assert np.abs(w).max() <= 1 / np.sqrt(fan_in) and np.abs(b).max() <= 1 / np.sqrt(fan_in)
        assert np.abs(w).max() > 0.9 / np.sqrt(fan_in)  # uniform up to the bound, not a narrower law
    task = small_permuted_tasks(1, n=50)[0]
    batches = list(reference.iterations(task, iterations=7, batch_size=16, seed=0))
    assert len(batches) == 7 and all(len(y) == 16 for _, y in batches)  # drop_last: 3 full batches per pass
    first_pass = np.concatenate([y.numpy() for _, y in batches[:3]])
    assert len(first_pass) == 48


def test_the_reference_fisher_labels_each_image_with_its_predicted_class():
    """The predicted-label Fisher (their output.max(1)[1]) is the empirical Fisher of the argmax labels."""
    reference = _reference_benchmark()
    task = small_permuted_tasks(1, n=40)[0]
    eb.set_seed(0)
    learner = eb.ContinualModel(eb.mlp(10, (8,)))
    reference.PredictedLabelEWC(5.0, fisher_samples=None).consolidate(learner, task, seed=0)
    x = task.inputs("train")
    predicted = np.argmax(learner.predict(x, verbose=0), axis=1)
    expected = eb.diagonal_fisher(learner, (x, predicted), estimator="empirical", algorithm="loop")
    for a, b in zip(learner.penalties[0].importance, expected):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-9)


def test_the_committed_reference_run_is_their_configuration():
    """The results 06_reference.json: van de Ven & Tolias's settings, both methods on every seed, at least 2 seeds."""
    out = load_results("06_reference.json")
    s = out["settings"]
    assert (s["hidden"], s["learning_rate"], s["iterations"], s["batch_size"]) == ([1000, 1000], 1e-4, 5000, 128)
    assert (s["input_fan_in"], s["adam_epsilon"], s["reset_optimizer"]) == (1024, 1e-8, False)
    assert (s["fisher_samples"], s["tasks"], s["limit"]) == (60000, 10, None)
    assert out["strengths"] == {"none": 0.0, "ewc": 500.0}
    assert out["paper"] == {"none": 0.785, "ewc": 0.943}
    seeds = {r["seed"] for r in out["rows"]}
    assert len(seeds) >= 2 and out["seeds"] == sorted(seeds)
    assert sorted((r["seed"], r["method"]) for r in out["rows"]) == sorted(
        (seed, m) for seed in seeds for m in ("none", "ewc"))
    for r in out["rows"]:
        assert len(r["R"]) == 10 and 0 < r["average_accuracy"] < 1
    assert out["command"].startswith("python benchmarks/permuted_reference.py")
