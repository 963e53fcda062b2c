"""ewcbook.chapters.ch7: the exact sum of the per-task Kronecker terms, the control of chapter 7's merge."""

import importlib.util
import pathlib

import numpy as np
import pytest
from conftest import small_permuted_tasks

import ewcbook as eb
from ewcbook import kfac
from ewcbook.chapters import ch7


def sequence(consolidation, tasks):
    eb.set_seed(3)
    return eb.train_sequence(eb.mlp(10, (8,)), tasks, consolidation, epochs=1, batch_size=16,
                             reset_optimizer=False, seed=3)


def test_one_term_per_task_all_anchored_at_the_latest_weights():
    tasks = small_permuted_tasks()
    result = sequence(ch7.KroneckerSum(2.0, fisher_samples=32), tasks)
    terms = result.learner.penalties  # consolidated after every task but the last
    assert len(terms) == len(tasks) - 1 and all(isinstance(t, kfac.KroneckerEWC) for t in terms)
    assert all(t.strength == 2.0 and t.merge_errors == [] for t in terms)
    # every anchor is where the second task ended, not where the first did
    for first, second in zip(terms[0].anchors, terms[1].anchors):
        np.testing.assert_array_equal(first.numpy(), second.numpy())
    assert not all(np.array_equal(a.numpy(), v.numpy()) for a, v in zip(terms[0].anchors, terms[0].variables))


def test_with_one_past_task_the_exact_sum_is_the_merged_penalty():
    # nothing is merged before the second task is trained, so the two sequences are one
    tasks = small_permuted_tasks(2)
    exact = sequence(ch7.KroneckerSum(2.0, fisher_samples=32), tasks)
    merged = sequence(kfac.KroneckerConsolidation(2.0, fisher_samples=32), tasks)
    np.testing.assert_allclose(exact.R, merged.R)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="strength"):
        ch7.KroneckerSum(-1.0)
    with pytest.raises(ValueError, match="fisher_samples"):
        ch7.KroneckerSum(1.0, fisher_samples=0)
    with pytest.raises(TypeError, match="task"):
        ch7.KroneckerSum(1.0).consolidate(eb.ContinualModel(eb.mlp(10, (8,))), "task")


def test_the_control_benchmark_runs_both_methods_and_reports_them():
    """A smoke run of benchmarks/kronecker_control.py's run() on tiny tasks (the full run is the committed JSON)."""
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "kronecker_control.py"
    spec = importlib.util.spec_from_file_location("kronecker_control", path)
    control = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(control)
    settings = {**control.SETTINGS, "hidden": [8], "epochs": 1, "batch_size": 16, "fisher_samples": 32}
    rows = {m: control.run(m, small_permuted_tasks(3), 2.0, seed=1, settings=settings) for m in control.METHODS}
    for row in rows.values():
        assert len(row["seen"]) == 3 and row["seen"][-1] == pytest.approx(row["average_accuracy"], abs=1e-4)
        assert np.array(row["R"]).shape == (3, 3) and row["cpu_seconds"] > 0
    assert len(rows["merged"]["merge_errors"]) == 1 and rows["exact_sum"]["merge_errors"] == []
    assert rows["merged"]["seen"][:2] == rows["exact_sum"]["seen"][:2]  # nothing merged before task 3
