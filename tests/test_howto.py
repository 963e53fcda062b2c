"""The how-to page (EWC on your own Keras model): its claims, in the smoke run and in the committed full run.

The page shows the API, not a comparison (one seed): its claims are what the
API promises (accuracies are fractions, the penalty is finite and logged, the
loaded consolidation state gives the saved penalty exactly) and what its prose
says of the numbers (task A learned, task B not yet).
"""

import math

import pytest
from conftest import FULL_RUNS, full_run

PAGE = "howto_own_model.ipynb"
RUNS = ("none", "ewc")
ACCURACIES = ["howto_acc_a_after_a", "howto_acc_b_after_a"] + [
    f"howto_{kind}_{run}" for kind in ("acc_a", "acc_b", "mean") for run in RUNS
]
PENALTIES = ["howto_penalty_last_epoch", "howto_penalty_saved", "howto_penalty_distributed"]


def check_claims(v):
    assert all(isinstance(v[k], float) and 0.0 <= v[k] <= 1.0 for k in ACCURACIES)
    for run in RUNS:
        # the mean and the forgetting of the table are read from its accuracies (R = [after A, after B])
        assert v[f"howto_mean_{run}"] == pytest.approx((v[f"howto_acc_a_{run}"] + v[f"howto_acc_b_{run}"]) / 2)
        assert v[f"howto_forgetting_{run}"] == pytest.approx(v["howto_acc_a_after_a"] - v[f"howto_acc_a_{run}"])
    # EWC's penalty is finite and positive once training on B has moved the weights from θ*_A,
    # in one process and under MirroredStrategy
    for key in PENALTIES:
        assert math.isfinite(v[key]) and v[key] > 0, key
    # the state loaded into a freshly built model gives the saved penalty, to the last bit
    assert v["howto_penalty_equal"] is True
    assert v["howto_penalty_loaded"] == v["howto_penalty_saved"]
    assert v["howto_strength"] == 3e3


@pytest.mark.notebooks
@pytest.mark.mnist
def test_smoke_run(run_chapter):
    v = run_chapter(PAGE)
    assert v["howto_n_train_a"] == v["howto_n_train_b"] == 500
    assert v["howto_max_epochs"] == 1 and v["howto_fisher_samples"] == 100
    check_claims(v)


@pytest.mark.parametrize("source", FULL_RUNS)
def test_full_run(source):
    v = full_run(PAGE, source)
    assert v["howto_n_train_a"] == v["howto_n_train_b"] == 10_000
    assert v["howto_max_epochs"] == 3 and v["howto_fisher_samples"] == 2000
    check_claims(v)
    # what the prose says: task A is learned, task B not before it is trained (chance is 0.2) ...
    assert v["howto_acc_a_after_a"] > 0.95 and v["howto_acc_b_after_a"] < 0.4
    # ... and then it is, with or without the penalty
    assert v["howto_acc_b_none"] > 0.8 and v["howto_acc_b_ewc"] > 0.8
