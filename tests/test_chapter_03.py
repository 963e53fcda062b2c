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
    # the prose: the first batch's loss is finite, the second's NaN, and training stopped there (of 4 batches)
    assert v["ch3_unsquared_finite_losses"] == 1
    assert v["ch3_unsquared_batches_run"] == 2 < v["ch3_unsquared_batches"] == 4
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
    if v["ch3_useful_text"].startswith("run from"):
        assert v["ch3_useful_text"].startswith(f"run from λ = {v['ch3_useful_lo']:g} to {v['ch3_useful_hi']:g}")
    assert v["ch3_trade_off_text"].endswith(".") and "best λ" in v["ch3_trade_off_text"]
    # the 2-D landscape: fast, every penalty ends at its own point, and the unpenalised path is lowest on B
    assert v["ch3_land_seconds"] < 10
    kinds = ["none", "l2", "ewc", "laplace"]
    ends = {(round(v[f"ch3_land_{k}_loss_a"], 6), round(v[f"ch3_land_{k}_loss_b"], 6)) for k in kinds}
    assert len(ends) == 4
    assert min(v[f"ch3_land_{k}_loss_b"] for k in kinds) == v["ch3_land_none_loss_b"]
    # every penalty keeps A's loss below no penalty's
    assert all(v[f"ch3_land_{k}_loss_a"] < v["ch3_land_none_loss_a"] for k in kinds[1:])
    assert v["ch3_land_n"] == v["ch3_land_n_b"]  # "two tasks of n examples each"
    assert v["ch3_land_stiffness_ratio"] > 1  # "EWC makes w1 ... times stiffer than w2"
    check_landscape_ranking(v, kinds)
    # A's loss is not quadratic: the Laplace picture misjudges it away from θ*_A
    assert abs(v["ch3_land_quadratic_at_none"] - v["ch3_land_none_loss_a"]) > 0.01


NAMES = {"none": "no penalty", "l2": "the L2 anchor", "ewc": "EWC", "laplace": "the full Laplace penalty"}


def check_landscape_ranking(v, kinds):
    """The verdict on the two-weight landscape is read from the distances to the joint minimum."""
    distance = {k: v[f"ch3_land_{k}_distance"] for k in kinds}
    total = {k: v[f"ch3_land_{k}_loss_sum"] for k in kinds + ["joint_minimum"]}
    for k in kinds + ["joint_minimum"]:
        assert total[k] == pytest.approx(v[f"ch3_land_{k}_loss_a"] + v[f"ch3_land_{k}_loss_b"])
    assert v["ch3_land_joint_minimum_distance"] == pytest.approx(0.0, abs=1e-12)
    assert all(total["joint_minimum"] <= total[k] for k in kinds)  # it is the minimum of L_A + L_B
    ranking = sorted(kinds, key=distance.get)
    assert v["ch3_land_ranking"] == ranking
    assert [distance[k] for k in v["ch3_land_ranking"]] == sorted(distance.values())
    assert v["ch3_land_order_distance"] == ", ".join(f"{NAMES[k]} ({distance[k]:.3f})" for k in ranking)
    assert v["ch3_land_closest"] == NAMES[ranking[0]]
    by_sum = sorted(kinds, key=total.get)
    assert v["ch3_land_order_sum"] == ", ".join(f"{NAMES[k]} ({total[k]:.3f})" for k in by_sum)
    assert v["ch3_land_lowest_sum"] == NAMES[by_sum[0]]
    assert (v["ch3_land_sum_text"] == "it also ends with the lowest") == (by_sum[0] == ranking[0])
    assert (v["ch3_land_orders_text"] == "The two rankings agree.") == (by_sum == ranking)
    # the penalty lowest on A is named, and said to overshoot only if it is below the star on A and above it on B
    low_a = min(kinds, key=lambda k: v[f"ch3_land_{k}_loss_a"])
    assert v["ch3_land_lowest_a"] == NAMES[low_a]
    overshoots = (v[f"ch3_land_{low_a}_loss_a"] < v["ch3_land_joint_minimum_loss_a"]
                  and v[f"ch3_land_{low_a}_loss_b"] > v["ch3_land_joint_minimum_loss_b"])
    assert ("pays for it on B" in v["ch3_land_overshoot_text"]) == overshoots


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
