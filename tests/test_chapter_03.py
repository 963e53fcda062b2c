"""Chapter 3 (the L2 anchor): its claims, in the smoke run and in the committed full run."""

import nbformat
import pytest
from conftest import BOOK, glued_values

CHAPTER = "03_l2_anchor.ipynb"


def check_claims(v, *, margin):
    # the unsquared norm has a NaN gradient at the anchor and ruins training; the squared one does not
    assert v["ch3_unsquared_grad_is_nan"] is True
    assert v["ch3_squared_grad_is_zero"] is True
    assert v["ch3_unsquared_raised"] is True
    assert v["ch3_unsquared_nan_fraction"] == 1.0
    # a strong anchor keeps A far better than no penalty ...
    assert v["ch3_strong_acc_a"] > v["ch3_none_acc_a"] + margin
    # ... but a weak one learns B far better than a strong one
    assert v["ch3_weak_acc_b"] > v["ch3_strong_acc_b"] + margin
    # the best strength beats no penalty on the mean of the two tasks, and stays below joint training
    assert v["ch3_best_l2_mean"] > v["ch3_none_mean"]
    assert v["ch3_best_l2_mean"] == pytest.approx((v["ch3_best_l2_acc_a"] + v["ch3_best_l2_acc_b"]) / 2)
    assert v["ch3_best_l2_strength"] > 0
    assert v["ch3_best_l2_mean"] < v["ch3_joint_mean"]


@pytest.mark.notebooks
@pytest.mark.mnist
def test_smoke_run_trade_off(run_chapter):
    v = run_chapter(CHAPTER)
    assert v["ch3_epochs"] == 1
    check_claims(v, margin=0.2)


def test_committed_full_run_trade_off():
    v = glued_values(nbformat.read(BOOK / CHAPTER, as_version=4))
    assert v["ch3_epochs"] == 6 and v["ch3_num_seeds"] >= 2
    check_claims(v, margin=0.4)
    # no penalty forgets A; the best L2 strength keeps a good part of it, at a cost on B
    assert v["ch3_best_l2_acc_a"] > v["ch3_none_acc_a"] + 0.2
    assert v["ch3_best_l2_acc_b"] < v["ch3_none_acc_b"]
