"""ewcbook.chapters.ch3: the λ sweep, its frontier figure, and the two-parameter world of chapter 3."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

import ewcbook as eb
from ewcbook.chapters import ch3


@pytest.fixture(scope="module")
def world():
    return ch3.two_task_world(seed=0)


def test_loss_on_a_grid_matches_pointwise(world):
    grid = np.array([[[0.0, 0.0], [1.0, -1.0]], [[2.0, 0.5], [-1.0, 3.0]]])
    values = ch3.loss(grid, world.x_a, world.y_a)
    assert values.shape == (2, 2)
    assert values[1, 0] == pytest.approx(ch3.loss(grid[1, 0], world.x_a, world.y_a))
    assert ch3.loss(np.zeros(2), world.x_a, world.y_a) == pytest.approx(np.log(2))


def test_gradient_matches_finite_differences(world):
    theta, eps = np.array([0.7, -0.3]), 1e-6
    def f(t):
        return ch3.loss(t, world.x_b, world.y_b)

    numeric = [(f(theta + eps * e) - f(theta - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(ch3.gradient(theta, world.x_b, world.y_b), numeric, rtol=1e-5, atol=1e-8)


def test_fisher_is_the_hessian_of_the_mean_cross_entropy(world):
    theta, eps = np.array([0.4, 1.1]), 1e-5
    hessian = np.stack([(ch3.gradient(theta + eps * e, world.x_a, world.y_a)
                         - ch3.gradient(theta - eps * e, world.x_a, world.y_a)) / (2 * eps) for e in np.eye(2)])
    np.testing.assert_allclose(ch3.fisher(theta, world.x_a), hessian, rtol=1e-5, atol=1e-9)
    assert np.all(np.linalg.eigvalsh(world.fisher_a) > 0)


def test_theta_a_is_a_stationary_point_of_the_regularised_loss(world):
    g = ch3.gradient(world.theta_a, world.x_a, world.y_a) + 1e-3 * world.theta_a
    assert np.linalg.norm(g) < 1e-6


def test_penalty_matrices(world):
    f = world.fisher_a
    np.testing.assert_array_equal(ch3.penalty_matrix("none", world, 2.0), np.zeros((2, 2)))
    np.testing.assert_allclose(ch3.penalty_matrix("laplace", world, 2.0), 2 * f)
    np.testing.assert_allclose(ch3.penalty_matrix("ewc", world, 1.0), np.diag(np.diag(f)))
    l2 = ch3.penalty_matrix("l2", world, 1.0)
    assert np.trace(l2) == pytest.approx(np.trace(f)) and l2[0, 1] == 0 and l2[0, 0] == l2[1, 1]
    with pytest.raises(ValueError, match="kind"):
        ch3.penalty_matrix("kfac", world, 1.0)


def test_paths_start_at_theta_a_and_end_at_distinct_stationary_points(world):
    paths = ch3.penalty_paths(world)
    assert list(paths) == list(ch3.PENALTIES)
    ends = []
    for kind, path in paths.items():
        np.testing.assert_array_equal(path[0], world.theta_a)
        m = ch3.penalty_matrix(kind, world, 1.0)
        g = ch3.gradient(path[-1], world.x_b, world.y_b) + m @ (path[-1] - world.theta_a)
        assert np.linalg.norm(g) < 1e-5, kind  # converged
        ends.append(path[-1])
    assert min(np.linalg.norm(a - b) for i, a in enumerate(ends) for b in ends[i + 1:]) > 0.05
    # no penalty minimises L_B alone: its end has the lowest loss on B
    losses_b = [ch3.loss(e, world.x_b, world.y_b) for e in ends]
    assert int(np.argmin(losses_b)) == 0


def test_joint_minimum_is_stationary_for_the_sum(world):
    joint = ch3.joint_minimum(world)
    g = ch3.gradient(joint, world.x_a, world.y_a) + ch3.gradient(joint, world.x_b, world.y_b)
    assert np.linalg.norm(g) < 1e-5


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="seed"):
        ch3.two_task_world(seed="0")
    with pytest.raises(ValueError, match="n must"):
        ch3.make_task(np.random.default_rng(0), 0, 0.0, (1, 1), (1, 1))
    with pytest.raises(ValueError, match="steps"):
        ch3.descend(lambda t: t, np.zeros(2), steps=0, learning_rate=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        ch3.descend(lambda t: t, np.zeros(2), steps=1, learning_rate=0.0)


def _tasks():
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(2):
        x = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
        y = (x.reshape(64, -1)[:, k] > 127).astype(int) + 2 * (x.reshape(64, -1)[:, k + 5] > 127)
        tasks.append(eb.Task(f"T{k}", x, y, x, y, num_classes=5))
    return tasks


def test_strength_sweep_rows_come_from_the_copies():
    tasks = _tasks()
    rows = ch3.strength_sweep(lambda: eb.mlp(5, (8,)), tasks, "ewc", [1.0, 100.0], seeds=[0, 1], epochs=1,
                              batch_size=32)
    assert [(r["seed"], r["strength"]) for r in rows] == [(0, 1.0), (0, 100.0), (1, 1.0), (1, 100.0)]
    assert all(r["mean"] == pytest.approx((r["acc_A"] + r["acc_B"]) / 2) for r in rows)
    none = ch3.strength_sweep(lambda: eb.mlp(5, (8,)), tasks, "none", [1.0, 100.0], seeds=[0], epochs=1)
    assert [r["strength"] for r in none] == [0.0]  # no penalty: one run, whatever the strengths


def test_a_sweep_copy_trains_as_the_same_run_alone():
    tasks = _tasks()
    (row,) = ch3.strength_sweep(lambda: eb.mlp(5, (8,)), tasks, "l2", [10.0], seeds=[3], epochs=1, batch_size=32)
    eb.set_seed(3)
    learner = eb.ContinualModel(eb.mlp(5, (8,)))
    eb.fit_task(learner, tasks[0], epochs=1, batch_size=32, seed=3)
    learner.penalties = [eb.L2Anchor(learner, 10.0)]
    eb.fit_task(learner, tasks[1], epochs=1, batch_size=32, seed=4)
    alone = eb.evaluate_tasks(learner, tasks)
    assert (row["acc_A"], row["acc_B"]) == pytest.approx(tuple(alone), abs=1 / 64 + 1e-9)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda t: ch3.strength_sweep(lambda: eb.mlp(5, (8,)), t, "online_ewc", [1.0]), ValueError, "method"),
        (lambda t: ch3.strength_sweep(lambda: eb.mlp(5, (8,)), t + t, "l2", [1.0]), TypeError, "two Task"),
        (lambda t: ch3.strength_sweep(lambda: eb.mlp(5, (8,)), t, "l2", []), ValueError, "strengths"),
        (lambda t: ch3.strength_sweep(lambda: eb.mlp(5, (8,)), t, "l2", [1.0], seeds=()), ValueError, "seeds"),
        (lambda t: ch3.strength_sweep(lambda: eb.mlp(5, (8,)), t, "l2", [1.0], seeds=(-1,)), ValueError, "seeds"),
    ],
)
def test_sweep_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(_tasks())


def test_the_figures_draw(world):
    rows = [dict(strength=s, acc_A=0.5, acc_B=0.5) for s in (0.0, 0.1, 1.0)]
    sweep = dict(strengths=[0.0, 0.1, 1.0], acc_a=[0.3, 0.6, 0.9], acc_b=[0.9, 0.7, 0.2], mean=[0.6, 0.65, 0.55],
                 best=1, rows=rows)
    fig, (ax, ax_l) = plt.subplots(1, 2)
    ch3.l2_frontier(ax, ax_l, sweep, (0.95, 0.95), post_point=(0.9, 0.6))
    assert len(ax.lines) > 3 and ax_l.get_xscale() == "log"
    fig, ax = plt.subplots()
    ch3.loss_landscape(ax, world, ch3.penalty_paths(world, steps=50), ch3.joint_minimum(world), grid=20)
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"L2 anchor", "full Laplace (full Fisher)"}
    plt.close("all")


def test_endpoint_table_is_sorted_by_distance_to_the_joint_minimum(world):
    joint = ch3.joint_minimum(world)
    paths = ch3.penalty_paths(world)
    table = ch3.endpoint_table(world, {k: p[-1] for k, p in paths.items()} | {"joint": joint}, joint)
    assert table[0]["name"] == "joint" and table[0]["distance"] == 0.0
    assert [r["distance"] for r in table] == sorted(r["distance"] for r in table)
    for r in table:
        assert r["loss_a"] == pytest.approx(float(ch3.loss(r["theta"], world.x_a, world.y_a)))
        assert r["loss_sum"] == pytest.approx(r["loss_a"] + r["loss_b"])
        assert r["distance"] == pytest.approx(np.linalg.norm(r["theta"] - joint))
    with pytest.raises(TypeError, match="endpoints"):
        ch3.endpoint_table(world, [joint], joint)
    with pytest.raises(ValueError, match=r"endpoints\['x'\]"):
        ch3.endpoint_table(world, {"x": np.zeros(3)}, joint)


WITHIN = "no step moves a value the other way by more than 0.005"


@pytest.mark.parametrize(
    "a, b, mean, best, expected",
    [
        ([0.3, 0.6, 0.9], [0.9, 0.8, 0.2], [0.6, 0.7, 0.55], 1,
         f"Along the grid, each stiffer spring gives A more and B less ({WITHIN}). Up to the best λ, each step "
         "gains more on A than it costs on B, so the mean rises; above it the exchange turns and the mean falls."),
        ([0.3, 0.2, 0.9], [0.9, 0.95, 0.8], [0.6, 0.575, 0.85], 2,
         "A and B do not move in opposite directions along the grid: at some step one moves the other way by more "
         "than 0.005. Up to the best λ, the mean falls by more than 0.005 at some step; the best λ is the largest "
         "of the grid."),
        ([0.3, 0.4], [0.9, 0.7], [0.6, 0.55], 0,
         f"Along the grid, each stiffer spring gives A more and B less ({WITHIN}); no strength raises the mean "
         "accuracy above no penalty's."),
    ],
)
def test_trade_off_text_reads_the_numbers(a, b, mean, best, expected):
    assert ch3.trade_off_text(a, b, mean, best) == expected


def test_trade_off_text_does_not_flip_with_the_last_digits():
    # chapter 3's sweep as one CPU and as another gave it: B up by 0.0002 at the first step on one of them
    a, mean = [0.278, 0.289, 0.322, 0.389], [0.631, 0.637, 0.651, 0.677]
    texts = {ch3.trade_off_text(a, b, mean, 3) for b in ([0.9840, 0.9838, 0.981, 0.965],
                                                         [0.9840, 0.9842, 0.981, 0.965])}
    assert len(texts) == 1 and texts.pop().startswith("Along the grid, each stiffer spring")
    # a step beyond the margin does count
    assert ch3.trade_off_text(a, [0.984, 0.990, 0.981, 0.965], mean, 3).startswith("A and B do not move")


def test_trade_off_text_checks_its_arguments():
    with pytest.raises(ValueError, match="one value per strength"):
        ch3.trade_off_text([0.1, 0.2], [0.3], [0.2, 0.2], 0)
    with pytest.raises(ValueError, match="best"):
        ch3.trade_off_text([0.1, 0.2], [0.3, 0.2], [0.2, 0.2], 2)
    with pytest.raises(ValueError, match="margin"):
        ch3.trade_off_text([0.1, 0.2], [0.3, 0.2], [0.2, 0.2], 1, margin="0.005")


def _boxes(texts):
    renderer = texts[0].figure.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


def test_label_points_never_overlaps_and_skips_what_has_no_room():
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.set(xlim=(0, 1), ylim=(0, 1))
    points = [(0.5, 0.5)] * 6 + [(0.2, 0.8)]  # six labels for one place: one of them has no room
    placed = ch3.label_points(ax, points, [f"label {k}" for k in range(6)] + ["far"])
    texts = [t.get_text() for t in placed]
    assert texts[0] == "label 0" and "far" in texts and len(placed) < len(points)
    boxes, frame = _boxes(placed), ax.get_window_extent()
    assert not any(p.overlaps(q) for i, p in enumerate(boxes) for q in boxes[i + 1:])
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    plt.close(fig)


def test_the_frontier_is_readable_at_page_width():
    s = [0.0, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0]  # the full profile's grid and results
    a = [0.278, 0.288, 0.322, 0.389, 0.434, 0.544, 0.739, 0.889, 0.947, 0.975, 0.984]
    b = [0.984, 0.984, 0.981, 0.964, 0.948, 0.913, 0.828, 0.587, 0.248, 0.114, 0.074]
    mean = [(x + y) / 2 for x, y in zip(a, b)]
    rows = [dict(strength=x, acc_A=y, acc_B=z) for x, y, z in zip(s, a, b)]
    fig, (ax, ax_l) = plt.subplots(2, 1, figsize=(7, 9.2))
    ch3.l2_frontier(ax, ax_l, dict(strengths=s, acc_a=a, acc_b=b, mean=mean, best=6, rows=rows), (0.97, 0.97),
                    post_point=(0.904, 0.598))
    labels = [t for t in ax.texts if t.get_text().startswith("λ=")]
    assert {"λ=0.0001", "λ=100"} <= {t.get_text() for t in labels}  # the ends of the grid are always labelled
    boxes = _boxes(labels)
    assert not any(p.overlaps(q) for i, p in enumerate(boxes) for q in boxes[i + 1:])
    for axes in (ax, ax_l):
        assert axes.xaxis.label.get_size() >= 10 and axes.yaxis.label.get_size() >= 10
        assert all(t.get_size() >= 10 for t in axes.get_legend().get_texts() + labels)
    assert any("test set" in t.get_text() for t in ax_l.get_legend().get_texts())
    plt.close(fig)
