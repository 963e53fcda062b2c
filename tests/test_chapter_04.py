"""Chapter 4 (Fisher information): its claims, on a smoke run and on the committed full run."""

import pytest
from conftest import FULL_RUNS, full_run

CHAPTER = "04_fisher_information.ipynb"


def _check_claims(vals):
    # fast, vectorized and loop compute the same numbers
    assert vals["ch4_methods_max_rel_diff"] < 1e-5
    # the sampled Fisher is close to the exact one; the empirical one is smaller on a trained model
    assert vals["ch4_corr_sampled_exact"] > 0.95
    assert vals["ch4_ratio_empirical_exact"] < 1.0
    # the post's "Fisher": one value per kernel column, one scalar per bias, far off in scale and pattern
    assert vals["ch4_post_rows_identical"] is True
    assert vals["ch4_post_bias_constant"] is True
    assert vals["ch4_post_ratio"] > 100
    assert vals["ch4_post_pearson"] < 0.9
    assert vals["ch4_zero_pixels"] > 0
    # more examples, smaller error
    # with sampled labels the squared batch gradient over n is unbiased: its mean total matches the per-example one
    assert vals["ch4_batchsq_batches"] >= 2 * vals["ch4_passes"]
    assert abs(vals["ch4_batchsq_ratio_sampled"] - 1) < 0.15
    # ... and, summed over weights, not less noisy than the per-example squares of the same batch
    assert vals["ch4_batchsq_var_total_sampled"] >= 1.0
    assert (vals["ch4_batchsq_noise_word"] == "noisier") == (vals["ch4_batchsq_var_total_sampled"] > 1.5)
    assert vals["ch4_batchsq_effective"] == pytest.approx(128 / vals["ch4_batchsq_var_ratio_sampled"])
    # the verdict sentence follows the two ratios
    verdict = vals["ch4_batchsq_verdict"]
    assert f"{abs(vals['ch4_batchsq_ratio_sampled'] - 1):.1%}" in verdict
    assert ("off by" in verdict) == (
        abs(vals["ch4_batchsq_ratio_empirical"] - 1) > abs(vals["ch4_batchsq_ratio_sampled"] - 1))
    # the data's labels: the bias (n - 1)·ḡ² predicted from the mean gradient, and the word that compares it
    predicted, measured = vals["ch4_batchsq_predicted_empirical"], vals["ch4_batchsq_ratio_empirical"]
    assert vals["ch4_batchsq_prediction_word"] == (
        "accounts for" if abs(predicted - measured) <= 0.2 * abs(measured - 1) else "does not account for")
    assert vals["ch4_batchsq_bias_explained"] == pytest.approx((predicted - 1) / (measured - 1))
    assert vals["ch4_sq_of_avg_gradient_total"] > 0 and vals["ch4_bias_share_of_empirical"] > 0
    # the timing words follow the same ratio (their values are timings: any of them may come out)
    assert vals["ch4_fisher_time_word"] in ("less than", "about as much as", "more than")
    assert ("no reason to subsample" in vals["ch4_fisher_time_clause"]) == (
        vals["ch4_fisher_time_word"] != "more than")
    # the post's gap is the product of its factors; the axis-0 mean keeps totals
    factors = ["sampling", "class_sum", "cross_terms", "no_mean", "axis0_mean"]
    product = 1.0
    for k in factors:
        product *= vals[f"ch4_factor_{k}"]
    assert product == pytest.approx(vals["ch4_factor_total"], rel=1e-6)
    assert vals["ch4_factor_total"] == pytest.approx(vals["ch4_post_ratio"], rel=1e-3)
    assert vals["ch4_factor_axis0_mean"] == pytest.approx(1.0, abs=1e-4)
    assert sum(vals[f"ch4_share_{k}"] for k in factors) == pytest.approx(1.0)
    # the slope verdict follows the fitted slope
    slope, word = vals["ch4_error_slope"], vals["ch4_slope_verdict"]
    assert word == ("more slowly than" if slope > -0.45 else "faster than" if slope < -0.55 else "about as")
    errors = vals["ch4_weight_error"]
    assert len(errors) == len(vals["ch4_sizes"]) >= 3
    assert vals["ch4_weight_error_1000"] < vals["ch4_weight_error_100"] < vals["ch4_weight_error_10"]
    assert errors[-1] < errors[0] / 3


@pytest.mark.notebooks
@pytest.mark.mnist
def test_chapter_04_smoke(run_chapter):
    _check_claims(run_chapter(CHAPTER))


@pytest.mark.parametrize("source", FULL_RUNS)
def test_chapter_04_full_profile(source):
    vals = full_run(CHAPTER, source)
    _check_claims(vals)
    assert vals["ch4_acc_a"] > 0.97
    assert vals["ch4_n_a"] == 29492
    assert vals["ch4_sizes"][-1] == vals["ch4_n_a"]
    assert vals["ch4_weight_error_all"] < 0.2
    # at least 200 batches for the unbiasedness check; within a few % for sampled labels
    assert vals["ch4_batchsq_batches"] >= 200
    assert abs(vals["ch4_batchsq_ratio_sampled"] - 1) < 0.05
    # the trained network is not at a stationary point of its training loss: the data's labels add a bias
    assert vals["ch4_batch_size"] == 128
    assert vals["ch4_batchsq_predicted_empirical"] > 1.0 and vals["ch4_batchsq_ratio_empirical"] > 1.0
