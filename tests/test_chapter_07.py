"""Chapter 7: Kronecker-factored EWC, its cost, its distance to the full Fisher, many permuted tasks, the exact sum."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import FULL_RUNS, full_run

from ewcbook.chapters import MARGIN

CHAPTER = "07_kronecker.ipynb"


def check_verdict(vals: dict, key: str, diff: str, above: str, below: str) -> None:
    """The verdict follows its interval (the book's rule: it must clear 0 by more than MARGIN), and quotes the
    difference with the sign of the sentence."""
    low, high, sentence = vals[f"{diff}_low"], vals[f"{diff}_high"], vals[key]
    assert low <= vals[diff] <= high
    if low > MARGIN:
        assert sentence.startswith(above) and f"by {vals[diff]:.3f}" in sentence
        assert f"interval {low:.3f} to {high:.3f}" in sentence
    elif high < -MARGIN:
        assert sentence.startswith(below) and f"by {-vals[diff]:.3f}" in sentence
        assert f"interval {-high:.3f} to {-low:.3f}" in sentence
    else:
        assert sentence.startswith("the difference is not resolved")
        assert f"up to {max(abs(low), abs(high)):.3f}" in sentence


def check_claims(vals: dict) -> None:
    # memory: online EWC keeps 2P numbers; K-FAC keeps P anchors plus both factors of each layer,
    # more than the diagonal and far less than the layers' full blocks
    P = vals["ch7_num_params"]
    assert vals["ch7_floats_diag"] == 2 * P
    assert P < vals["ch7_floats_kfac"] < vals["ch7_floats_blocks"]
    assert vals["ch7_floats_ratio"] == pytest.approx(vals["ch7_floats_kfac"] / vals["ch7_floats_diag"])
    for key in ("ch7_ms_fisher_diag", "ch7_ms_fisher_kfac", "ch7_ms_penalty_diag", "ch7_ms_penalty_kfac"):
        assert vals[key] > 0
    # the full Fisher: its diagonal is the diagonal Fisher, so the diagonal's distance is that of the
    # off-diagonal part, which the best block-diagonal matrix (F's own blocks) partly keeps
    assert 0 <= vals["ch7_dist_blocks"] <= vals["ch7_dist_diag"] <= 1
    assert vals["ch7_dist_kfac"] >= 0
    closer = vals["ch7_dist_kfac"] < vals["ch7_dist_diag"]
    assert vals["ch7_dist_verdict"] == ("closer to" if closer else "no closer to")
    assert vals["ch7_small_entries"] == vals["ch7_small_params"] ** 2
    assert vals["ch7_path_closer"] in ("K-FAC", "the diagonal")
    # lambda comes from the validation grid, for each method
    grid = [float(g) for g in vals["ch7_grid"].split(", ")]
    assert vals["ch7_strength_diag"] in grid and vals["ch7_strength_kfac"] in grid
    # λ is the weakest of the grid points the validation cannot tell apart from the best (the book's rule);
    # when there are several, the sentence quotes them, all within the noise band of the best
    text = vals["ch7_choice_text"]
    groups = re.findall(r"for (online EWC|K-FAC EWC) \(([^)]*)\)", text)
    if text.startswith("The validation cannot tell apart"):
        n = int(re.search(r"on ([0-9,]+) validation images", text).group(1).replace(",", ""))
        assert 1 <= len(groups) <= 2
        for name, points in groups:
            pairs = [(float(a), float(b)) for a, b in re.findall(r"λ = ([0-9.e+-]+): ([0-9.]+)", points)]
            assert len(pairs) >= 2 and all(lam in grid for lam, _ in pairs)
            best = max(score for _, score in pairs)
            assert all(best - score <= np.sqrt(best * (1 - best) / n) + MARGIN + 1e-3 for _, score in pairs)
            chosen = vals["ch7_strength_diag" if name == "online EWC" else "ch7_strength_kfac"]
            assert chosen == min(lam for lam, _ in pairs), (name, chosen, pairs)
    else:
        assert text.startswith("Each choice beats every other λ") and not groups
    # accuracies are accuracies; intervals contain their means; the verdict follows its interval
    for key in ("diag", "kfac"):
        assert len(vals[f"ch7_seen_{key}"]) == vals["ch7_num_tasks"]
        assert all(0 <= a <= 1 for a in vals[f"ch7_seen_{key}"])
        assert vals[f"ch7_final_{key}_low"] <= vals[f"ch7_final_{key}"] <= vals[f"ch7_final_{key}_high"]
        assert vals[f"ch7_final_{key}"] == pytest.approx(vals[f"ch7_seen_{key}"][-1], abs=1e-4)
    assert vals["ch7_diff"] == pytest.approx(vals["ch7_final_kfac"] - vals["ch7_final_diag"], abs=1e-9)
    assert vals["ch7_diff_low"] <= vals["ch7_diff"] <= vals["ch7_diff_high"]
    check_verdict(vals, "ch7_verdict", "ch7_diff", "K-FAC EWC ends higher", "online EWC ends higher")
    # the exact sum of the per-task Kronecker terms against the merged penalty (benchmarks/kronecker_control.py)
    assert vals["ch7_bench_tasks"] >= 2 and vals["ch7_bench_seeds"] >= 1 and vals["ch7_bench_time_ratio"] > 0
    for key in ("ch7_exact_merged", "ch7_exact_exact"):
        assert 0 <= vals[key] <= 1
    assert vals["ch7_exact_diff"] == pytest.approx(vals["ch7_exact_merged"] - vals["ch7_exact_exact"], abs=1e-9)
    check_verdict(vals, "ch7_exact_verdict", "ch7_exact_diff", "the merged penalty ends higher",
                  "the exact sum ends higher")
    # the forgetting prediction, with and without the linear term g·Δθ: the same quadratic plus the same term
    for name in ("full", "kfac", "diag"):
        for when in ("early", "final"):
            assert np.isfinite(vals[f"ch7_ratio_{when}_{name}"]) and np.isfinite(vals[f"ch7_ratio_lin_{when}_{name}"])
    assert vals["ch7_ratio_lin_early_full"] - vals["ch7_ratio_early_full"] == pytest.approx(
        vals["ch7_linear_share_early"], rel=1e-6)
    assert vals["ch7_ratio_lin_early_kfac"] - vals["ch7_ratio_early_kfac"] == pytest.approx(
        vals["ch7_linear_share_early"], rel=1e-6)
    names = {"the full Fisher": "full", "K-FAC": "kfac", "the diagonal": "diag"}
    for key, prefix in (("ch7_path_nearest", "ch7_ratio_early_"), ("ch7_path_nearest_lin", "ch7_ratio_lin_early_")):
        errors = {name: abs(vals[prefix + short] - 1) for name, short in names.items()}
        assert vals[key] == min(errors, key=errors.get)
    assert 0 < vals["ch7_small_train_acc"] <= 1
    # the merged penalty: one error per layer, each a relative error in [0, 1]
    assert len(vals["ch7_merge_error_max"]) == 3
    assert all(0 <= e <= 1 for e in vals["ch7_merge_error_max"])


@pytest.mark.notebooks
@pytest.mark.mnist
def test_chapter_07_smoke(run_chapter):
    vals = run_chapter(CHAPTER)
    assert vals["ch7_num_tasks"] == 3 and vals["ch7_num_seeds"] == 2
    check_claims(vals)


@pytest.mark.parametrize("source", FULL_RUNS)
def test_chapter_07_full_profile(source):
    vals = full_run(CHAPTER, source)
    assert "ch7_final_kfac" in vals, "the chapter must hold its full-profile outputs (make update-book)"
    assert vals["ch7_num_tasks"] >= 10 and vals["ch7_num_seeds"] >= 3
    check_claims(vals)
    # the committed control ran on this run's tasks, seeds and lambda
    assert vals["ch7_bench_setting"] == "the λ, seeds and tasks of this run"
    assert 2 <= vals["ch7_bench_tasks"] <= vals["ch7_num_tasks"] and vals["ch7_bench_seeds"] == vals["ch7_num_seeds"]
    assert vals["ch7_run_minutes"] > 0  # wall time of the run, noted in the README (it depends on the machine's load)
