"""Chapter 1 (catastrophic forgetting): its claims, in the smoke run and in the committed full run."""

import pytest
from conftest import FULL_RUNS, full_run

CHAPTER = "01_forgetting.ipynb"
KEYS = ["ch1_joint_acc_a", "ch1_joint_acc_b", "ch1_seq_acc_a", "ch1_seq_acc_b", "ch1_seq_acc_a_before"]


def check_claims(v, *, learned, min_drop):
    assert all(0.0 <= v[k] <= 1.0 for k in KEYS)
    # joint training learns both tasks
    assert v["ch1_joint_acc_a"] > learned and v["ch1_joint_acc_b"] > learned
    # sequential training learns A, then learns B ...
    assert v["ch1_seq_acc_a_before"] > learned and v["ch1_seq_acc_b"] > learned
    # ... and forgets A: a large drop, far below joint training
    assert v["ch1_seq_acc_a_before"] - v["ch1_seq_acc_a"] > min_drop
    assert v["ch1_joint_acc_a"] - v["ch1_seq_acc_a"] > min_drop
    # the forgetting curve: A is already low after the first epoch of B
    assert v["ch1_acc_a_after_one_b_epoch"] < v["ch1_seq_acc_a_before"] - min_drop
    # the per-batch curve re-runs that first epoch: same end point (op determinism), and halfway is reached inside it
    assert v["ch1_acc_a_end_first_epoch_batchrun"] == pytest.approx(v["ch1_acc_a_after_one_b_epoch"], abs=0.01)
    assert 0 < v["ch1_half_loss_batches"] <= v["ch1_batches_per_epoch"]
    assert v["ch1_half_loss_images"] == 128 * v["ch1_half_loss_batches"]
    # verdicts produced from the numbers
    assert v["ch1_b_before_vs_chance"] == ("below" if v["ch1_seq_acc_b_before"] < 0.2 else "above")
    # ‖θ − θ*_A‖ / ‖θ*_A − θ0‖: a ratio of distances (not of the relative changes, whose denominators differ)
    assert v["ch1_change_ratio"] > 0
    # the first-layer weights of the pixels A never lights: 128 hidden units each, a few of the 784 pixels
    assert 0 < v["ch1_dark_pixels_a"] < 784
    assert v["ch1_dark_weights_a"] == 128 * v["ch1_dark_pixels_a"] < v["ch1_num_params"]
    assert v["ch1_where_b_after_a"].count("; ") == 4  # one clause per odd digit
    assert v["ch1_first_point_word"] == (
        "still" if v["ch1_seq_acc_a_before"] - v["ch1_acc_a_first_point"] < 0.05 else "already down to")
    assert 0.2 <= v["ch1_top_two_min_fraction"] <= 1.0
    assert 0.0 < v["ch1_kept_digit_fraction"] <= 1.0
    assert v["ch1_kept_digit_text"].startswith("mostly") == (v["ch1_kept_digit_fraction"] > 0.5)
    # the stability gap (a fall, then a partial recovery): the verdicts follow the per-batch curve's numbers
    assert v["ch1_gap_low_acc"] <= v["ch1_acc_a_first_point"] and v["ch1_gap_rebound_acc"] >= 0
    assert v["ch1_gap_low_acc"] <= v["ch1_acc_a_end_first_epoch_batchrun"] <= v["ch1_gap_low_acc"] + v[
        "ch1_gap_rebound_acc"] + 1e-12
    assert v["ch1_gap_recovered_fraction"] == pytest.approx(v["ch1_gap_rebound_acc"] / v["ch1_gap_lost_acc"])
    gap = v["ch1_gap_recovered_fraction"] >= 0.1 or v["ch1_gap_later_gain_acc"] >= 0.1 * v["ch1_gap_lost_acc"]
    assert v["ch1_gap_found"] is gap
    assert v["ch1_gap_verdict"].startswith("it does:" if gap else "it does not:")
    assert ("no stability gap" in v["ch1_gap_summary"]) is not gap


@pytest.mark.notebooks
@pytest.mark.mnist
def test_smoke_run_forgets(run_chapter):
    v = run_chapter(CHAPTER)
    assert v["ch1_epochs"] == 1 and v["ch1_n_train_a"] == 2000
    check_claims(v, learned=0.7, min_drop=0.2)


@pytest.mark.parametrize("source", FULL_RUNS)
def test_full_run_forgets(source):
    v = full_run(CHAPTER, source)
    assert v["ch1_epochs"] == 6 and v["ch1_n_train_a"] > 29000 and v["ch1_n_train_b"] > 30000
    check_claims(v, learned=0.95, min_drop=0.5)
    # before training on B the network does worse than chance on B (it confuses odd digits with even ones)
    assert v["ch1_seq_acc_b_before"] < 0.2
    # nothing protects A: its accuracy falls and does not come back (no stability gap)
    assert v["ch1_gap_found"] is False
