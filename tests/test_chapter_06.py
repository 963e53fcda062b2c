"""Chapter 6: many permuted-MNIST tasks, online EWC, learning a third task from saved state."""

from __future__ import annotations

import nbformat
import pytest
from conftest import BOOK, glued_values

CHAPTER = "06_beyond_two_tasks.ipynb"
METHODS = ("none", "l2", "ewc", "online", "online_gamma1")


def check_claims(vals: dict, *, margin: float) -> None:
    # EWC keeps more of the old tasks than training with no penalty
    assert vals["ch6_avg_acc_ewc"] > vals["ch6_avg_acc_none"] + margin
    for name in METHODS:
        assert 0.0 <= vals[f"ch6_avg_acc_{name}"] <= 1.0
    # learning the next task from the saved state is bit for bit learning it in memory
    assert vals["ch6_state_max_diff"] == 0.0
    assert vals["ch6_state_same_accuracy"] is True
    # memory: per-task EWC keeps an anchor and a Fisher per consolidated task, online EWC one of each
    P, consolidated = vals["ch6_num_params"], vals["ch6_num_tasks"] - 1
    assert vals["ch6_floats_online"] == vals["ch6_floats_online_gamma1"] == 2 * P
    assert vals["ch6_floats_ewc"] == 2 * P * consolidated
    assert vals["ch6_floats_l2"] == P * consolidated
    assert vals["ch6_floats_none"] == 0


@pytest.mark.notebooks
@pytest.mark.mnist
def test_chapter_06_smoke(run_chapter):
    vals = run_chapter(CHAPTER)
    assert vals["ch6_num_tasks"] == 3
    check_claims(vals, margin=0.01)


def test_chapter_06_committed_full_profile():
    vals = glued_values(nbformat.read(BOOK / CHAPTER, as_version=4))
    assert "ch6_avg_acc_ewc" in vals, "the committed chapter must hold its full-profile outputs (make execute)"
    assert vals["ch6_num_tasks"] == 10
    check_claims(vals, margin=0.1)
    # online EWC's memory does not grow: the same 2P floats after 10 tasks as in any shorter run
    assert vals["ch6_floats_online"] == 2 * vals["ch6_num_params"]
