"""Synaptic intelligence, LwF and unit tables under tf.distribute: 2 replicas (logical CPU devices) train like one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# A fresh process: logical devices must be configured before TensorFlow starts.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import ewcbook as eb

    replicas = int(sys.argv[1])
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y, y2 = rng.integers(0, 4, 64), rng.integers(0, 4, 64)
    init = [rng.normal(scale=0.5, size=s).astype("float32") for s in [(5, 8), (8,), (8, 4), (4,)]]
    moved = [w + rng.normal(scale=0.3, size=w.shape).astype("float32") for w in init]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    data2 = tf.data.Dataset.from_tensor_slices((x, y2)).batch(16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def as_lists(arrays):
        return [np.asarray(a).tolist() for a in arrays]

    def learner_with(make_penalties, table=None):
        with strategy.scope():
            network = eb.mlp(4, (8,), input_shape=(5,))
            network.set_weights(init)
            learner = eb.ContinualModel(network)
            penalties = make_penalties(learner)
            learner.penalties = penalties
            if table is not None:
                learner.set_units(table)
            learner.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, metrics=["accuracy"])
        return learner, penalties

    def synaptic_intelligence():  # a first task gives it importance, the second trains against it
        # steps_per_execution stays 1: above, Keras 3 fails under MirroredStrategy with 2 replicas (keras#19246)
        learner, (si,) = learner_with(lambda m: [eb.SynapticIntelligence(m, strength=1.0, damping=0.1)])
        first = learner.fit(data, epochs=2, verbose=0, shuffle=False)
        first_path = as_lists(si.path)
        si.consolidate()
        second = learner.fit(data2, epochs=2, verbose=0, shuffle=False)
        return {"weights": as_lists(learner.get_weights()), "first_path": first_path, "path": as_lists(si.path),
                "importance": as_lists(si.importance), "loss": first.history["loss"] + second.history["loss"],
                "penalty": second.history["penalty"]}

    def lwf():  # the teacher is the initial network, the student starts elsewhere
        learner, (lwf,) = learner_with(lambda m: [eb.LwF(m, strength=2.0, heads=[(0, 2), (2, 4)], temperature=2.0)])
        learner.network.set_weights(moved)
        history = learner.fit(data2, epochs=2, verbose=0, shuffle=False)
        return {"weights": as_lists(learner.get_weights()), "teacher": as_lists(lwf.teacher.get_weights()),
                "loss": history.history["loss"], "penalty": history.history["penalty"]}

    def units():  # labels 0, 1 on units 0:2, labels 2, 3 on units 2:4
        table = np.repeat(np.eye(2, dtype=bool).repeat(2, axis=1), 2, axis=0)
        learner, _ = learner_with(lambda m: [], table=table)
        history = learner.fit(data, epochs=2, verbose=0, shuffle=False)
        evaluated = learner.evaluate(data, verbose=0, return_dict=True)
        return {"weights": as_lists(learner.get_weights()), "loss": history.history["loss"],
                "accuracy": history.history["accuracy"], "eval_loss": evaluated["loss"],
                "eval_accuracy": evaluated["accuracy"]}

    results = {}
    for part in (synaptic_intelligence, lwf, units):
        try:
            results[part.__name__] = part()
        except Exception as error:  # reported by the test of that part
            results[part.__name__] = {"error": f"{type(error).__name__}: {error}"}
    results["init"] = as_lists(init)
    json.dump(results, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def runs():
    """One process per replica count (collective ops cannot be regrouped within a process)."""
    results = {}
    for replicas in (1, 2):
        command = [sys.executable, "-c", SCRIPT, str(replicas)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[replicas] = json.loads(done.stdout)
    return results


def test_synaptic_intelligence_trains_under_a_one_device_strategy(runs):
    assert "error" not in runs[1]["synaptic_intelligence"]


def _assert_same(many, one, tolerance=1e-5):
    assert len(many) == len(one)
    for b, a in zip(many, one):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=tolerance, atol=tolerance)


def _part(runs, replicas, name):
    run = runs[replicas][name]
    assert "error" not in run, f"{replicas} replica(s): {run.get('error')}"
    return run


def test_synaptic_intelligence_is_the_same_on_two_replicas(runs):
    one, two = _part(runs, 1, "synaptic_intelligence"), _part(runs, 2, "synaptic_intelligence")
    _assert_same(two["weights"], one["weights"])
    _assert_same(two["first_path"], one["first_path"])
    _assert_same(two["path"], one["path"])
    _assert_same(two["importance"], one["importance"], 1e-4)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["penalty"], one["penalty"], rtol=1e-5)
    # the test means something: a path, an importance and a penalty that is not zero
    assert max(np.abs(np.array(p)).max() for p in one["path"]) > 1e-3
    assert max(np.array(w).max() for w in one["importance"]) > 1e-2
    assert one["penalty"][-1] > 1e-4


def test_lwf_is_the_same_on_two_replicas(runs):
    one, two = _part(runs, 1, "lwf"), _part(runs, 2, "lwf")
    _assert_same(two["weights"], one["weights"])
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["penalty"], one["penalty"], rtol=1e-5)
    assert one["penalty"][0] > 1e-2
    for run in (one, two):  # the teacher never trains
        _assert_same(run["teacher"], runs[1]["init"], 0)


def test_a_unit_table_is_the_same_on_two_replicas(runs):
    one, two = _part(runs, 1, "units"), _part(runs, 2, "units")
    _assert_same(two["weights"], one["weights"])
    for key in ("loss", "accuracy", "eval_loss", "eval_accuracy"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5)
