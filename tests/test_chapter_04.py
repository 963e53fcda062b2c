"""Chapter 4 (Fisher information): its claims, on a smoke run and on the committed full run."""

import nbformat
import pytest
from conftest import BOOK, glued_values

CHAPTER = "04_fisher_information.ipynb"


def _check_claims(vals):
    # fast, vectorized and loop compute the same numbers
    assert vals["ch4_methods_max_rel_diff"] < 1e-5
    # the true Fisher is close to the exact one; the empirical one is smaller on a trained model
    assert vals["ch4_corr_true_exact"] > 0.95
    assert vals["ch4_ratio_empirical_exact"] < 1.0
    # the post's "Fisher": one value per kernel column, one scalar per bias, far off in scale and pattern
    assert vals["ch4_post_rows_identical"] is True
    assert vals["ch4_post_bias_constant"] is True
    assert vals["ch4_post_ratio"] > 100
    assert vals["ch4_post_pearson"] < 0.9
    assert vals["ch4_zero_pixels"] > 0
    # more examples, smaller error
    errors = vals["ch4_weight_error"]
    assert len(errors) == len(vals["ch4_sizes"]) >= 3
    assert vals["ch4_weight_error_1000"] < vals["ch4_weight_error_100"] < vals["ch4_weight_error_10"]
    assert errors[-1] < errors[0] / 3


@pytest.mark.notebooks
@pytest.mark.mnist
def test_chapter_04_smoke(run_chapter):
    _check_claims(run_chapter(CHAPTER))


def test_chapter_04_committed_full_profile():
    vals = glued_values(nbformat.read(BOOK / CHAPTER, as_version=4))
    _check_claims(vals)
    assert vals["ch4_acc_a"] > 0.97
    assert vals["ch4_n_a"] == 29492
    assert vals["ch4_sizes"][-1] == vals["ch4_n_a"]
    assert vals["ch4_weight_error_all"] < 0.2
