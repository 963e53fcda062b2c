"""Chapter 8: split MNIST's five tasks in three scenarios, eight learners, over seeds.

Claims are invariants of the chapter, not which learner wins: strengths come
from their validation grids, accuracies and intervals are what they say,
joint training is an upper bound where it is one by construction, every
verdict agrees with its interval, and the literature's table is the source's.
"""

from __future__ import annotations

import pytest
from conftest import FULL_RUNS, full_run

from ewcbook.chapters import ch8, load_results

CHAPTER = "08_where_ewc_stands.ipynb"
SCENARIOS = ("task", "domain", "class")


def check_claims(v: dict, *, full: bool) -> None:
    # every chosen strength is one of its grid's four candidates (smoke: the two ends)
    for scenario in SCENARIOS:
        for name, grid in ch8.GRIDS.items():
            assert v[f"ch8_strength_{scenario}_{name}"] in grid, (scenario, name)
            assert 0 <= v[f"ch8_val_acc_{scenario}_{name}"] <= 1
    assert v["ch8_num_choices"] == len(ch8.GRIDS) * len(SCENARIOS)
    assert 0 <= v["ch8_num_unresolved"] <= v["ch8_num_choices"]
    assert (v["ch8_num_edges"] == 0) == (v["ch8_edges"] == "none")
    # means lie inside their intervals, accuracies in [0, 1]
    for scenario in SCENARIOS:
        for name in ch8.METHODS:
            key = f"ch8_acc_{scenario}_{name}"
            assert v[f"{key}_low"] <= v[key] <= v[f"{key}_high"], key
            assert 0 <= v[key] <= 1
    # every verdict is the one its interval calls for, and quotes it
    verdicts = [k[len("ch8_verdict_"):] for k in v if k.startswith("ch8_verdict_")]
    assert len(verdicts) == 18
    for key in verdicts:
        low, high, mean = v[f"ch8_diff_{key}_low"], v[f"ch8_diff_{key}_high"], v[f"ch8_diff_{key}"]
        sentence = v[f"ch8_verdict_{key}"]
        assert low <= mean <= high
        # the chapter's rule: an end within ch8.MARGIN of 0 does not resolve (a verdict that holds on another CPU)
        expected = "ends above" if low > ch8.MARGIN else "ends below" if high < -ch8.MARGIN else "are not resolved"
        assert expected in sentence, (key, sentence)
        assert f"{mean:+.3f}" in sentence and f"{low:+.3f}" in sentence and f"{high:+.3f}" in sentence
        scenario, pair = key.split("_", 1)
        a, b = next((a, b) for a in ch8.METHODS for b in ch8.METHODS if pair == f"{a}_{b}")
        assert mean == pytest.approx(v[f"ch8_acc_{scenario}_{a}"] - v[f"ch8_acc_{scenario}_{b}"], abs=1e-9)
    # a confusion matrix's shares are shares
    for name in ("ewc", "si", "replay"):
        assert 0 <= v[f"ch8_fraction_last_{name}"] <= 1
        assert 0 <= v[f"ch8_fraction_old_correct_{name}"] <= 1
    # the literature's numbers are those of the source (Hsu et al. 2018, Table 2)
    for name, row in ch8.HSU2018.items():
        for scenario, (mean, _) in zip(SCENARIOS, row):
            assert v[f"ch8_hsu_acc_{scenario}_{name}"] == pytest.approx(mean / 100)
    for scenario in SCENARIOS:
        for name in ("ewc", "si", "lwf", "replay"):
            gain = v[f"ch8_acc_{scenario}_{name}"] - v[f"ch8_acc_{scenario}_none"]
            assert v[f"ch8_acc_gain_{scenario}_{name}"] == pytest.approx(gain, abs=1e-9)
        assert -1 <= v[f"ch8_ref_rank_corr_{scenario}"] <= 1
        # what to reach for names learners of the chapter, joint training left out
        names = v[f"ch8_reach_{scenario}"].split(", ")
        labels = {ch8.style.label(n) for n in ch8.METHODS if n != "joint"}
        assert names and set(names) <= labels
    if full:
        # joint training sees every task's data at once: above no penalty where forgetting is possible
        for scenario in ("domain", "class"):
            assert v[f"ch8_acc_{scenario}_joint"] > v[f"ch8_acc_{scenario}_none"], scenario


@pytest.mark.notebooks
@pytest.mark.mnist
def test_chapter_08_smoke(run_chapter):
    vals = run_chapter(CHAPTER)
    assert vals["ch8_num_seeds"] == 2
    check_claims(vals, full=False)


@pytest.mark.parametrize("source", FULL_RUNS)
def test_chapter_08_full_profile(source):
    vals = full_run(CHAPTER, source)
    assert "ch8_acc_class_replay" in vals, "the chapter must hold its full-profile outputs (make update-book)"
    assert vals["ch8_num_seeds"] >= 5 and vals["ch8_n_train"] > 50000
    check_claims(vals, full=True)
    assert vals["ch8_ref_epochs"] == 4 and vals["ch8_ref_seeds"] >= 3
    assert vals["ch8_run_minutes"] > 0
    # the reference budget ran every learner at the strengths this chapter chose
    reference = load_results("08_reference_budget.json")
    chosen = {f"{s}/{n}": vals[f"ch8_strength_{s}_{n}"] for s in SCENARIOS for n in ch8.GRIDS}
    assert reference["strengths"] == chosen
