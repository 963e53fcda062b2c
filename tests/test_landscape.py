"""ewcbook.landscape: the two-parameter world of chapter 3."""

import numpy as np
import pytest

from ewcbook import landscape


@pytest.fixture(scope="module")
def world():
    return landscape.two_task_world(seed=0)


def test_loss_on_a_grid_matches_pointwise(world):
    grid = np.array([[[0.0, 0.0], [1.0, -1.0]], [[2.0, 0.5], [-1.0, 3.0]]])
    values = landscape.loss(grid, world.x_a, world.y_a)
    assert values.shape == (2, 2)
    assert values[1, 0] == pytest.approx(landscape.loss(grid[1, 0], world.x_a, world.y_a))
    assert landscape.loss(np.zeros(2), world.x_a, world.y_a) == pytest.approx(np.log(2))


def test_gradient_matches_finite_differences(world):
    theta, eps = np.array([0.7, -0.3]), 1e-6
    def f(t):
        return landscape.loss(t, world.x_b, world.y_b)

    numeric = [(f(theta + eps * e) - f(theta - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(landscape.gradient(theta, world.x_b, world.y_b), numeric, rtol=1e-5, atol=1e-8)


def test_fisher_is_the_hessian_of_the_mean_cross_entropy(world):
    theta, eps = np.array([0.4, 1.1]), 1e-5
    hessian = np.stack([(landscape.gradient(theta + eps * e, world.x_a, world.y_a)
                         - landscape.gradient(theta - eps * e, world.x_a, world.y_a)) / (2 * eps) for e in np.eye(2)])
    np.testing.assert_allclose(landscape.fisher(theta, world.x_a), hessian, rtol=1e-5, atol=1e-9)
    assert np.all(np.linalg.eigvalsh(world.fisher_a) > 0)


def test_theta_a_is_a_stationary_point_of_the_regularised_loss(world):
    g = landscape.gradient(world.theta_a, world.x_a, world.y_a) + 1e-3 * world.theta_a
    assert np.linalg.norm(g) < 1e-6


def test_penalty_matrices(world):
    f = world.fisher_a
    np.testing.assert_array_equal(landscape.penalty_matrix("none", world, 2.0), np.zeros((2, 2)))
    np.testing.assert_allclose(landscape.penalty_matrix("laplace", world, 2.0), 2 * f)
    np.testing.assert_allclose(landscape.penalty_matrix("ewc", world, 1.0), np.diag(np.diag(f)))
    l2 = landscape.penalty_matrix("l2", world, 1.0)
    assert np.trace(l2) == pytest.approx(np.trace(f)) and l2[0, 1] == 0 and l2[0, 0] == l2[1, 1]
    with pytest.raises(ValueError, match="kind"):
        landscape.penalty_matrix("kfac", world, 1.0)


def test_paths_start_at_theta_a_and_end_at_distinct_stationary_points(world):
    paths = landscape.penalty_paths(world)
    assert list(paths) == list(landscape.PENALTIES)
    ends = []
    for kind, path in paths.items():
        np.testing.assert_array_equal(path[0], world.theta_a)
        m = landscape.penalty_matrix(kind, world, 1.0)
        g = landscape.gradient(path[-1], world.x_b, world.y_b) + m @ (path[-1] - world.theta_a)
        assert np.linalg.norm(g) < 1e-5, kind  # converged
        ends.append(path[-1])
    assert min(np.linalg.norm(a - b) for i, a in enumerate(ends) for b in ends[i + 1:]) > 0.05
    # no penalty minimises L_B alone: its end has the lowest loss on B
    losses_b = [landscape.loss(e, world.x_b, world.y_b) for e in ends]
    assert int(np.argmin(losses_b)) == 0


def test_joint_minimum_is_stationary_for_the_sum(world):
    joint = landscape.joint_minimum(world)
    g = landscape.gradient(joint, world.x_a, world.y_a) + landscape.gradient(joint, world.x_b, world.y_b)
    assert np.linalg.norm(g) < 1e-5


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="seed"):
        landscape.two_task_world(seed="0")
    with pytest.raises(ValueError, match="n must"):
        landscape.make_task(np.random.default_rng(0), 0, 0.0, (1, 1), (1, 1))
    with pytest.raises(ValueError, match="steps"):
        landscape.descend(lambda t: t, np.zeros(2), steps=0, learning_rate=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        landscape.descend(lambda t: t, np.zeros(2), steps=1, learning_rate=0.0)
