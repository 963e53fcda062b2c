"""Chapter 3 (the L2 anchor): its claims, in the smoke run and in the committed full run."""

import pytest
from conftest import FULL_RUNS, full_run

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
    # verdicts produced from the numbers
    close = v["ch3_post_distance"] < 0.05
    assert v["ch3_post_verdict"] == ("falls close to our curve" if close else "lies away from our curve")
    assert v["ch3_useful_decades"] >= 0
    # the 2-D landscape: fast, every penalty ends at its own point, and the unpenalised path is lowest on B
    assert v["ch3_land_seconds"] < 10
    kinds = ["none", "l2", "ewc", "laplace"]
    ends = {(round(v[f"ch3_land_{k}_loss_a"], 6), round(v[f"ch3_land_{k}_loss_b"], 6)) for k in kinds}
    assert len(ends) == 4
    assert min(v[f"ch3_land_{k}_loss_b"] for k in kinds) == v["ch3_land_none_loss_b"]
    # every penalty keeps A's loss below no penalty's; the lowest one is named in the prose
    assert all(v[f"ch3_land_{k}_loss_a"] < v["ch3_land_none_loss_a"] for k in kinds[1:])
    names = {"none": "no penalty", "l2": "the L2 anchor", "ewc": "EWC", "laplace": "the full Laplace penalty"}
    assert v["ch3_land_lowest_a"] == names[min(kinds, key=lambda k: v[f"ch3_land_{k}_loss_a"])]
    # A's loss is not quadratic: the Laplace picture misjudges it away from θ*_A
    assert abs(v["ch3_land_quadratic_at_none"] - v["ch3_land_none_loss_a"]) > 0.01


@pytest.mark.notebooks
@pytest.mark.mnist
def test_smoke_run_trade_off(run_chapter):
    v = run_chapter(CHAPTER)
    assert v["ch3_epochs"] == 1
    check_claims(v, margin=0.2)


@pytest.mark.parametrize("source", FULL_RUNS)
def test_full_run_trade_off(source):
    v = full_run(CHAPTER, source)
    assert v["ch3_epochs"] == 6 and v["ch3_num_seeds"] >= 2
    check_claims(v, margin=0.4)
    # no penalty forgets A; the best L2 strength keeps a good part of it, at a cost on B
    assert v["ch3_best_l2_acc_a"] > v["ch3_none_acc_a"] + 0.2
    assert v["ch3_best_l2_acc_b"] < v["ch3_none_acc_b"]
