"""Appendix (notes on the original post): its claims, on a smoke run and on the committed full run."""

import pytest
from conftest import FULL_RUNS, full_run

CHAPTER = "appendix_original_post.ipynb"


def _check_claims(vals):
    # bug 1: the post's "Fisher" is orders of magnitude too large; at alpha = 25 task B is not learned
    assert vals["app_post_fisher_ratio"] > 100
    assert vals["app_acc_b_post"] < vals["app_acc_b_ewc"] - 0.3
    assert vals["app_acc_b_post"] < 0.35
    assert vals["app_acc_a_post"] > vals["app_acc_a_none"]  # it does keep task A (by keeping everything)
    # bug 2: the unsquared norm has a NaN gradient at the anchor, and training ruins every weight
    assert vals["app_nan_grad_fraction"] == 1.0
    assert vals["app_nan_weight_fraction"] == 1.0
    assert vals["app_nan_acc_a"] < 0.3 and vals["app_nan_acc_b"] < 0.3
    assert vals["app_stopped_non_finite"] is True
    # bug 3: shuffling before caching replays one order; ours draws a new one every epoch
    assert vals["app_same_order_post"] == 1.0
    assert vals["app_same_order_ours"] < 0.1
    # verdicts produced from the numbers
    at_chance = vals["app_acc_b_post"] < vals["app_majority_b"] + 0.05
    assert vals["app_post_b_verdict"] == ("never learns task B" if at_chance else "learns task B only partly")
    weak = vals["app_acc_a_ewc"] - vals["app_acc_a_none"] < 0.2
    assert vals["app_ewc_strength_verdict"] == ("a weak strength" if weak else "a strength that keeps part of A")
    assert vals["app_protocol_verdict"] == ("does not come near them" if vals["app_protocol_gap"] > 0.1
                                            else "comes close to them")


@pytest.mark.notebooks
@pytest.mark.mnist
def test_appendix_smoke(run_chapter):
    _check_claims(run_chapter(CHAPTER))


@pytest.mark.parametrize("source", FULL_RUNS)
def test_appendix_full_profile(source):
    vals = full_run(CHAPTER, source)
    _check_claims(vals)
    assert vals["app_acc_a_before"] > 0.97
    # not learned: no better than always answering B's largest class
    assert vals["app_acc_b_post"] < vals["app_majority_b"] + 0.05
    assert vals["app_protocol_acc_b_post"] < vals["app_protocol_acc_b_ewc"] - 0.3
