"""Chapter 6: ten permuted-MNIST tasks over seeds, memory of merged penalties, a third task from saved state.

Claims are invariants of the chapter, not which method wins: joint training is
an upper bound, EWC keeps more than no penalty, every glued verdict agrees with
its interval, memory is what the formulas say, and continuing from saved state
is exact.
"""

from __future__ import annotations

import pytest
from conftest import FULL_RUNS, full_run

from ewcbook.chapters import MARGIN, open_reason

CHAPTER = "06_beyond_two_tasks.ipynb"
SEQUENTIAL = ("none", "l2", "l2_moving", "ewc", "online_ewc")


def expected_verdict(low: float, high: float, choices: list) -> str:
    """The book's rule: an interval resolves a comparison only if it clears 0 by more than MARGIN."""
    higher, lower, unclear = choices
    return higher if low > MARGIN else lower if high < -MARGIN else unclear


def check_claims(v: dict, *, margin: float, full: bool) -> None:
    for name in (*SEQUENTIAL, "joint"):
        assert 0.0 <= v[f"ch6_avg_acc_{name}_low"] <= v[f"ch6_avg_acc_{name}"] <= v[f"ch6_avg_acc_{name}_high"]
    # EWC keeps more of the old tasks than training with no penalty, by a margin
    assert v["ch6_avg_acc_ewc"] > v["ch6_avg_acc_none"] + margin
    if full:  # on ten full tasks (the smoke profile's 1,000 images are too few for a bound or an interval)
        # joint training, all tasks at once, is the upper bound of every sequential learner (means over seeds)
        for name in SEQUENTIAL:
            assert v["ch6_avg_acc_joint"] >= v[f"ch6_avg_acc_{name}"], name
        assert v["ch6_diff_ewc_none_low"] > 0, "seed by seed"
    # every verdict sentence is the one its interval calls for
    verdicts = [k[len("ch6_verdict_"):] for k in v if k.startswith("ch6_verdict_") and f"ch6_choices_{k[12:]}" in v]
    assert len(verdicts) >= 8  # six paired comparisons, and the level and gain against van de Ven and Tolias
    for key in verdicts:
        low, high = v[f"ch6_diff_{key}_low"], v[f"ch6_diff_{key}_high"]
        assert v[f"ch6_verdict_{key}"] == expected_verdict(low, high, v[f"ch6_choices_{key}"]), key
        assert low <= v[f"ch6_diff_{key}"] <= high
        if low <= MARGIN and high >= -MARGIN:  # unresolved: one wording, with the largest difference allowed
            assert f"not resolved: {open_reason(low, high)}" in v[f"ch6_verdict_{key}"], key
    # joint training, the upper bound, gets at least as many steps as the sequence
    assert v["ch6_joint_step_fraction"] >= 1
    # the one-seed ablation is read against twice the SD of a difference of two one-seed runs
    assert v["ch6_abl_two_sd"] == pytest.approx(2 * 2**0.5 * v["ch6_abl_seed_sd"])
    keep_adam = v["ch6_abl_acc_keep_adam"] - v["ch6_abl_acc_base"]
    assert v["ch6_abl_keep_adam_status"].startswith("beyond") == (abs(keep_adam) > v["ch6_abl_two_sd"])
    goal_low, goal_high = v["ch6_avg_acc_ewc_low"] - 0.943, v["ch6_avg_acc_ewc_high"] - 0.943
    assert ("above" in v["ch6_verdict_goal"]) == (goal_low > MARGIN)
    assert ("below" in v["ch6_verdict_goal"]) == (goal_high < -MARGIN)
    # the sentence on forgetting and backward transfer follows the runs (equal up to sign in every run, or not)
    assert v["ch6_bwt_sentence"].startswith("say the same") == v["ch6_bwt_equals_forgetting"]
    if v["ch6_bwt_equals_forgetting"]:
        for name in SEQUENTIAL:
            assert v[f"ch6_bwt_{name}"] == pytest.approx(-v[f"ch6_forgetting_{name}"], abs=1e-9)
    # memory: merged penalties hold 2P numbers (anchor + importance) at any number of tasks; a moving L2 anchor P
    P = v["ch6_num_params"]
    assert v["ch6_floats_ewc"] == v["ch6_floats_online_ewc"] == 2 * P
    # an L2 anchor's importance is uniform: one number (its task count) beside the P anchors
    assert v["ch6_floats_l2"] == v["ch6_floats_l2_moving"] == P
    assert v["ch6_floats_none"] == 0
    # one merged quadratic equals the sum of per-task penalties, value and gradient, with half the numbers for 2 tasks
    assert v["ch6_merged_value_rel_diff"] < 1e-5
    assert v["ch6_merged_grad_rel_diff"] < 1e-3
    assert v["ch6_merged_floats"] == 2 * P and v["ch6_separate_floats"] == 4 * P
    # learning the next task from the saved state is bit for bit learning it in memory
    assert v["ch6_state_max_diff"] == 0.0
    assert v["ch6_state_same_accuracy"] is True
    # λ and γ come from the validation grids
    assert v["ch6_strength_ewc"] in (10.0, 100.0, 1e3, 1e4)
    assert 0 < v["ch6_gamma"] <= 1


@pytest.mark.notebooks
@pytest.mark.mnist
def test_chapter_06_smoke(run_chapter):
    v = run_chapter(CHAPTER)
    assert v["ch6_num_tasks"] == 3 and v["ch6_num_seeds"] == 3
    check_claims(v, margin=0.01, full=False)


@pytest.mark.parametrize("source", FULL_RUNS)
def test_chapter_06_full_profile(source):
    v = full_run(CHAPTER, source)
    assert v["ch6_num_tasks"] == 10 and v["ch6_num_seeds"] >= 3 and v["ch6_n_train"] == 20000
    check_claims(v, margin=0.1, full=True)
    # the ablation table is the committed one (run outside the chapter) and covers the factors
    factors = {v.get(f"ch6_abl_acc_{name}") is not None for name in ("base", "keep_adam", "none_base")}
    assert factors == {True}
