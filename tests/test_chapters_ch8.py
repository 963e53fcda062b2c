"""ewcbook.chapters.ch8: learners of the chapter, joint training at each task's units, verdicts, confusion."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import ewcbook as eb
from ewcbook.chapters import MARGIN, ch8, choice_resolved

SMALL = ch8.Protocol(hidden=(8,), per_class=3, fisher_samples=20)


def small_tasks(scenario, n=60):
    """Five tiny tasks shaped like split MNIST's (random images), in ``scenario``."""
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(5):
        digits = rng.choice([2 * k, 2 * k + 1], size=n)
        x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
        labels = digits % 2 if scenario == "domain" else digits
        units = {"task": ((2 * k, 2 * k + 2),) * 2, "domain": (None, None), "class": ((0, 2 * k + 2), None)}[scenario]
        tasks.append(eb.Task(f"{2 * k}/{2 * k + 1}", x, labels, x[:20], labels[:20],
                             num_classes=2 if scenario == "domain" else 10, units=units[0], test_units=units[1]))
    return tasks


class SmallData:
    """Stands for ch8.Data: the tiny tasks of a scenario."""

    def tasks(self, scenario):
        return small_tasks(scenario)


def test_two_workers_give_the_same_runs_as_one():
    jobs = [(SmallData(), "class", name, 10.0, SMALL, seed) for name in ("none", "ewc", "si") for seed in (0, 1)]
    assert ch8.run_all(jobs, workers=2) == ch8.run_all(jobs, workers=1)


@pytest.mark.parametrize("name", ch8.METHODS[:-1])
def test_every_learner_has_its_method(name):
    m = ch8.method(name, 10.0, SMALL)
    if name == "none":
        assert m is None
    elif name == "replay":
        assert isinstance(m, eb.Replay) and m.per_class == 3
    elif name == "ewc_replay":
        assert [type(x) for x in m] == [eb.Consolidation, eb.Replay] and m[0].method == "ewc"
    else:
        assert m.method == name and m.strength == 10.0


def test_unknown_learner_is_named():
    with pytest.raises(ValueError, match="name"):
        ch8.method("joint", 1.0, SMALL)


def test_runs_pair_learners_by_seed_and_joint_trains_each_digit_at_its_test_units():
    rows = ch8.runs(SmallData(), ["none", "joint"], {}, seeds=[0, 1], protocol=SMALL, scenarios=("task", "class"))
    assert len(rows) == 8
    assert {r["seed"] for r in rows} == {0, 1}
    for r in rows:
        assert len(r["final"]) == 5 and r["average"] == pytest.approx(np.mean(r["final"]))
    learner = ch8.joint_learner(small_tasks("task"), SMALL, 0)
    table = learner._units.table.numpy()
    for k in range(5):  # digit 2k and 2k+1 train at units 2k, 2k+1 only
        expected = np.zeros(10, bool)
        expected[2 * k : 2 * k + 2] = True
        np.testing.assert_array_equal(table[2 * k], expected)
        np.testing.assert_array_equal(table[2 * k + 1], expected)


def test_comparison_sentence_follows_its_interval():
    rows = [dict(scenario="class", method=m, seed=s, average=a)
            for m, values in {"replay": [0.9, 0.92, 0.91], "ewc": [0.2, 0.21, 0.2], "si": [0.2, 0.22, 0.19]}.items()
            for s, a in enumerate(values)]
    above = ch8.compare(rows, "class", "replay", "ewc")
    assert above.interval.low > 0 and "replay ends above EWC" in above.sentence
    assert f"{above.interval.mean:+.3f}" in above.sentence
    below = ch8.compare(rows, "class", "ewc", "replay")
    assert "EWC ends below replay" in below.sentence
    unclear = ch8.compare(rows, "class", "si", "ewc")
    assert "are not resolved" in unclear.sentence and "differences up to" in unclear.sentence
    assert ch8.recommendations(rows, "class", ["ewc", "si", "replay", "joint"]) == ["replay"]


def test_a_choice_is_resolved_only_beyond_two_standard_errors_plus_the_margin():
    n = 10_000
    error = np.sqrt(0.9 * 0.1 / n)  # 0.003
    assert not choice_resolved({1.0: 0.9, 10.0: 0.9}, n)  # a tie
    assert not choice_resolved({1.0: 0.9, 10.0: 0.9 - 2 * error - MARGIN + 1e-4, 100.0: 0.5}, n)
    assert choice_resolved({1.0: 0.9, 10.0: 0.9 - 2 * error - MARGIN - 1e-4, 100.0: 0.5}, n)
    assert choice_resolved({1.0: 0.5, 10.0: 0.9, 100.0: 0.8}, n)  # order of the grid does not matter
    with pytest.raises(ValueError, match="scores"):
        choice_resolved({1.0: 0.9}, n)


def test_confusion_rows_are_shares_of_each_true_digit():
    tasks = small_tasks("class")
    learner = eb.ContinualModel(eb.mlp(10, (8,)))
    m = ch8.confusion(learner, tasks)
    assert m.shape == (10, 10)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)


def test_the_literature_table_has_every_scenario():
    for name, row in ch8.HSU2018.items():
        assert name in ch8.METHODS and len(row) == 3
        assert all(0 < mean <= 100 and spread >= 0 for mean, spread in row)


@pytest.mark.mnist
def test_reference_budget_benchmark_runs(tmp_path):
    """A smoke run of benchmarks/scenarios.py, the script behind ewcbook/chapters/results/08_reference_budget.json."""
    out = tmp_path / "smoke.json"
    script = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "scenarios.py"
    # one process: workers=2 gives the same runs (test_two_workers_give_the_same_runs_as_one) and costs two
    # pools' start-up here
    done = subprocess.run([sys.executable, str(script), "--smoke", "--workers", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert set(saved["mean"]["class"]) == set(ch8.METHODS)
    assert all(0 <= a <= 1 for a in saved["mean"]["class"].values())
    assert saved["cpu_minutes"] > 0 and saved["epochs"] == 1 and saved["command"].endswith("--out " + str(out))
