"""Chapter 5, Elastic Weight Consolidation: its claims, on a smoke run and on the committed full run."""

from __future__ import annotations

import nbformat
import pytest
from conftest import BOOK, glued_values

CHAPTER = "05_ewc.ipynb"

KEYS = [
    "ch5_best_ewc_mean",
    "ch5_best_ewc_strength",
    "ch5_best_l2_mean",
    "ch5_best_l2_strength",
    "ch5_best_ewc_empirical_mean",
    "ch5_none_mean",
    "ch5_joint_mean",
    "ch5_taskinc_ewc_mean",
    "ch5_taskinc_none_mean",
    "ch5_taskinc_joint_mean",
]


def check_common(g: dict) -> None:
    for key in KEYS:
        assert isinstance(g[key], float), key
    for key in KEYS:
        if key.endswith("_mean"):
            assert 0.0 <= g[key] <= 1.0, key
    # A strong EWC penalty keeps more of task A than no penalty.
    assert g["ch5_strongest_ewc_acc_a"] > g["ch5_none_acc_a"] + 0.1
    # One head per task: without any penalty, task A survives much better than with a shared head.
    assert g["ch5_taskinc_none_acc_a"] > g["ch5_none_acc_a"] + 0.1
    # Joint training is the best a single network does on both tasks.
    assert g["ch5_joint_mean"] > g["ch5_none_mean"]


@pytest.mark.notebooks
@pytest.mark.mnist
def test_chapter_05_smoke_run(run_chapter):
    check_common(run_chapter(CHAPTER, profile="smoke"))


def test_chapter_05_committed_full_run():
    g = glued_values(nbformat.read(BOOK / CHAPTER, as_version=4))
    check_common(g)
    # Five seeds in the published sweep.
    assert g["ch5_num_seeds"] >= 5
    # Domain-incremental (one shared head): both anchors help, by about the same amount ...
    assert g["ch5_best_ewc_mean"] > g["ch5_none_mean"] + 0.03
    assert g["ch5_best_l2_mean"] > g["ch5_none_mean"] + 0.03
    assert g["ch5_best_ewc_mean"] == pytest.approx(g["ch5_best_l2_mean"], abs=0.03)
    assert g["ch5_best_ewc_empirical_mean"] == pytest.approx(g["ch5_best_ewc_mean"], abs=0.03)
    # ... and EWC is not better than the L2 anchor by more than noise.
    assert g["ch5_best_ewc_mean"] < g["ch5_best_l2_mean"] + 0.01
    # ... and every sequential method stays far below joint training.
    assert g["ch5_joint_mean"] > max(g["ch5_best_ewc_mean"], g["ch5_best_l2_mean"]) + 0.15
    # The strongest L2 anchor keeps more of A than the strongest EWC in the grid.
    assert g["ch5_strongest_l2_acc_a"] > g["ch5_strongest_ewc_acc_a"]
    # The Fisher's quadratic underestimates the rise of task A's loss.
    assert g["ch5_demo_actual_rise"] > 2 * g["ch5_demo_predicted_rise"]
    # Task-incremental (one head per task): EWC comes close to joint training and beats no penalty.
    assert g["ch5_taskinc_ewc_mean"] >= g["ch5_taskinc_joint_mean"] - 0.02
    assert g["ch5_taskinc_ewc_mean"] > g["ch5_taskinc_none_mean"] + 0.01
    assert g["ch5_taskinc_none_mean"] > g["ch5_none_mean"] + 0.1
