"""Chapter 2, the Bayesian view: its claims, on a smoke run and on the committed full run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FULL_RUNS, full_run

CHAPTER = "02_bayesian_view.ipynb"


def check_claims(g: dict) -> None:
    # Learning A then B with the exact posterior after A as the prior is learning A ∪ B.
    assert g["ch2_seq_vs_joint_max_log_diff"] < 1e-9

    # The posterior after A is a tilted ellipse (what the diagonal will miss).
    assert g["ch2_laplace_std_max"] > 2 * g["ch2_laplace_std_min"]
    assert abs(g["ch2_laplace_precision_corr"]) > 0.5

    # Logistic regression: Hessian of the NLL == Fisher, at rounding error; the empirical Fisher differs.
    hessian, fisher, empirical = (np.array(g[k]) for k in ("ch2_hessian_a", "ch2_fisher_a", "ch2_empirical_fisher_a"))
    np.testing.assert_allclose(fisher, hessian, rtol=1e-10, atol=0)
    assert g["ch2_fisher_vs_hessian_rel"] < 1e-10
    assert g["ch2_empirical_vs_hessian_rel"] > 0.1
    assert not np.allclose(empirical, hessian, rtol=0.05)

    # The 784-128-5 MLP: ~100k parameters, a full Fisher of ~1e10 entries.
    assert g["ch2_mlp_params"] == 784 * 128 + 128 + 128 * 5 + 5
    assert g["ch2_full_fisher_entries"] == g["ch2_mlp_params"] ** 2
    assert g["ch2_full_fisher_gb"] > 10 and g["ch2_diag_fisher_mb"] < 1

    # MAPs: forgetting lands far away; full Laplace lands close; diagonal in between.
    joint = np.array(g["ch2_map_joint"])
    for key in ("a", "b_alone", "laplace", "diag"):
        assert g[f"ch2_dist_{key}"] == pytest.approx(np.linalg.norm(np.array(g[f"ch2_map_{key}"]) - joint))
    assert g["ch2_dist_b_alone"] > 1.0
    assert g["ch2_dist_laplace"] < 0.05
    assert g["ch2_dist_laplace"] < g["ch2_dist_diag"] < g["ch2_dist_b_alone"]
    assert g["ch2_ratio_diag_to_laplace"] > 5

    # Same ordering for the whole posterior (total variation distance on the grid).
    assert g["ch2_tv_laplace"] < 0.15
    assert g["ch2_tv_laplace"] < g["ch2_tv_diag"] < g["ch2_tv_b_alone"]
    assert g["ch2_tv_b_alone"] > 0.8

    # The grid agrees with Newton's MAP to within a grid step.
    assert g["ch2_grid_map_error"] <= g["ch2_grid_step"]

    # λ: with the full Fisher the best strength is near N_A / N_B; the diagonal never gets as close.
    assert g["ch2_lambda_bayes"] == g["ch2_n_a"] / g["ch2_n_b"]
    assert g["ch2_lambda_bayes"] / 2 < g["ch2_lambda_best_full"] < 2 * g["ch2_lambda_bayes"]
    assert g["ch2_dist_full_at_bayes"] < 0.05
    assert g["ch2_sweep_min_diag"] > 5 * g["ch2_dist_full_at_bayes"]
    assert g["ch2_full_best_verdict"] == (
        "close to" if abs(np.log(g["ch2_lambda_best_full"] / g["ch2_lambda_bayes"])) < np.log(1.5) else "away from")

    # Verdicts produced from the numbers.
    assert g["ch2_laplace_verdict"] == ("almost perfectly" if g["ch2_tv_laplace"] < 0.15 else "only approximately")
    assert g["ch2_diag_vs_forgetting"].endswith("times closer") == (g["ch2_dist_diag"] < g["ch2_dist_b_alone"])

    # The spread over data seeds: ranges are ordered, and the lesson sentence matches the count.
    for key in ("best_full", "best_diag", "ratio"):
        assert g[f"ch2_spread_{key}_min"] <= g[f"ch2_spread_{key}_max"]
    assert 0 <= g["ch2_spread_diag_worse_count"] <= g["ch2_num_data_seeds"]
    assert g["ch2_spread_diag_worse_all"] == (g["ch2_spread_diag_worse_count"] == g["ch2_num_data_seeds"])
    assert g["ch2_spread_lesson"].startswith("on every one") == g["ch2_spread_diag_worse_all"]
    assert 0 <= g["ch2_spread_full_near_count"] <= g["ch2_num_data_seeds"]
    # the empirical Fisher's gap from the Hessian over the draws: the main draw (data seed 0) is one of them
    low, high = g["ch2_spread_empirical_min"], g["ch2_spread_empirical_max"]
    assert low <= g["ch2_spread_empirical_median"] <= high
    assert g["ch2_spread_empirical_seed0"] == pytest.approx(g["ch2_empirical_vs_hessian_rel"], rel=1e-9)
    assert low <= g["ch2_empirical_vs_hessian_rel"] <= high

    # MNIST: the Fisher's total against epochs on A; the trend word follows the numbers.
    assert g["ch2_mnist_fisher_ratio"] == pytest.approx(g["ch2_mnist_fisher_first"] / g["ch2_mnist_fisher_last"])
    assert g["ch2_mnist_fisher_trend"] == (
        "shrinks" if g["ch2_mnist_fisher_last"] < g["ch2_mnist_fisher_first"] else "does not shrink")
    assert g["ch2_mnist_loss_last"] < g["ch2_mnist_loss_first"]


@pytest.mark.notebooks
@pytest.mark.mnist
def test_chapter_02_smoke_run(run_chapter):
    check_claims(run_chapter(CHAPTER, profile="smoke"))


@pytest.mark.parametrize("source", FULL_RUNS)
def test_chapter_02_full_run(source):
    glued = full_run(CHAPTER, source)
    check_claims(glued)
    assert glued["ch2_grid_step"] < 0.03  # the full profile's fine grid
    assert glued["ch2_num_data_seeds"] >= 10 and glued["ch2_mnist_epochs"] == 6
