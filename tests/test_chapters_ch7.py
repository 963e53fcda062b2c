"""ewcbook.chapters.ch7: the exact sum of the per-task Kronecker terms, the control of chapter 7's merge."""

import concurrent.futures
import importlib.util
import multiprocessing
import pathlib

import numpy as np
import pytest
from conftest import small_permuted_tasks

import ewcbook as eb
from ewcbook import kfac
from ewcbook.chapters import ch7, processes


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


class SmallTasks:
    """Stands for ch7.Tasks: the tiny tasks of conftest, built where they are used (picklable)."""

    def __call__(self):
        return small_permuted_tasks(3)


def in_one_process(fn, *args, threads: int, **kwargs):
    """``fn(*args, **kwargs)`` in one fresh process with ``threads`` TensorFlow threads, as a worker has."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=processes._start_worker,
                                                initargs=(threads,)) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def test_runs_in_two_processes_give_the_same_numbers_as_in_one():
    """run_all(workers=2): job by job, in order, the same R and merge errors as all the jobs run one after
    another in one process with the threads of a worker (a K-FAC factor summed by another number of
    threads may differ in its last digits)."""
    jobs = [(m, SmallTasks(), 50.0, seed) for m in ch7.METHODS for seed in (0, 1)]
    settings = dict(hidden=(8,), fisher_samples=32, epochs=1, batch_size=16, reset_optimizer=False)
    there = ch7.run_all(jobs, workers=2, **settings)
    alone = in_one_process(ch7.run_all, jobs, workers=1, threads=max(1, processes.cores() // 2), **settings)
    assert len(there) == len(alone) == len(jobs)
    for (method, *_), a, b in zip(jobs, alone, there):
        assert isinstance(b, ch7.RunResult) and b.R.shape == (3, 3) and b.seconds > 0
        np.testing.assert_array_equal(a.R, b.R)
        assert a.merge_errors == b.merge_errors
        assert len(b.merge_errors) == (1 if method == "kfac" else 0)  # one merge: after task 2
        assert all(len(row) == 2 for row in b.merge_errors)  # one error per layer


def test_one_run_is_the_sequence_the_notebook_ran():
    """ch7.run, in this process, is the notebook's former run(): the same sequence, bit for bit."""
    settings = dict(hidden=(8,), fisher_samples=32, epochs=1, batch_size=16, reset_optimizer=False)
    (mine,) = ch7.run_all([("kfac", SmallTasks(), 50.0, 1)], **settings)
    eb.set_seed(1)
    theirs = eb.train_sequence(eb.mlp(10, (8,)), small_permuted_tasks(3),
                               kfac.KroneckerConsolidation(50.0, fisher_samples=32), seed=1, epochs=1, batch_size=16,
                               reset_optimizer=False)
    np.testing.assert_array_equal(mine.R, theirs.R)
    assert mine.merge_errors == theirs.learner.penalties[0].merge_errors
    assert isinstance(ch7.consolidation("online_ewc", 3.0, 100), eb.Consolidation)


def test_run_all_checks_its_jobs_before_starting_workers():
    with pytest.raises(ValueError, match="method"):
        ch7.run_all([("ewc", SmallTasks(), 1.0, 0)], workers=2)
    with pytest.raises(ValueError, match="strength"):
        ch7.run_all([("kfac", SmallTasks(), -1.0, 0)], workers=2)
    with pytest.raises(TypeError, match="tasks"):
        ch7.run_all([("kfac", small_permuted_tasks(2), 1.0, 0)], workers=2)
    with pytest.raises(ValueError, match="workers"):
        ch7.run_all([("kfac", SmallTasks(), 1.0, 0)], workers=0)
    with pytest.raises(ValueError, match="limit"):
        ch7.Tasks(3, limit=0)
    assert ch7.Tasks(3, seed=1, limit=10)  # picklable and hashable: a frozen dataclass


def test_choice_sentence_names_the_strengths_the_validation_cannot_tell_apart():
    tie = {30.0: 0.832, 100.0: 0.832, 3.0: 0.70}
    clear = {10.0: 0.90, 3.0: 0.85}
    sentence = ch7.choice_sentence({"online_ewc": tie, "kfac": clear}, 20_000)
    assert sentence.startswith("The validation cannot tell apart the λ for online EWC (λ = 30: 0.832; λ = 100: 0.832)")
    assert "K-FAC" not in sentence and "20,000 validation images" in sentence and "weakest" in sentence
    assert ch7.choice_sentence({"kfac": clear}, 20_000).startswith("Each choice beats every other λ")
