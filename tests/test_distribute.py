"""Penalties under tf.distribute: 1, 2 and 4 replicas (logical CPU devices) train exactly like one device."""

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
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
    import keras
    import ewcbook as eb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 5)).astype("float32")
    y = rng.integers(0, 3, 128)
    init = [rng.normal(size=s).astype("float32") for s in [(5, 8), (8,), (8, 3), (3,)]]
    fisher = [rng.random(w.shape).astype("float32") * 5 for w in init]
    anchor = [w + 0.3 for w in init]
    results = {}
    for replicas in [int(sys.argv[1])]:
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
        with strategy.scope():
            network = eb.mlp(3, (8,), input_shape=(5,))
            network.set_weights(anchor)
            learner = eb.ContinualModel(network)
            learner.penalties = [eb.EWC(learner, fisher, strength=2.0)]
            network.set_weights(init)
            learner.compile(optimizer=keras.optimizers.SGD(0.1),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
        history = learner.fit(data, epochs=2, verbose=0, shuffle=False)
        evaluated = learner.evaluate(data, verbose=0, return_dict=True)
        results[replicas] = {
            "weights": [w.tolist() for w in network.get_weights()],
            "loss": history.history["loss"],
            "penalty": history.history["penalty"],
            "eval_loss": evaluated["loss"],
            "eval_penalty": evaluated["penalty"],
            "task_loss": float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, network(x))),
        }
        with strategy.scope():  # the library's fused Adam, each replica updating its copy of the weights
            network = eb.mlp(3, (8,), input_shape=(5,))
            network.set_weights(init)
            learner = eb.ContinualModel(network)
            learner.compile(optimizer=eb.FusedAdam(0.05),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        learner.fit(data, epochs=2, verbose=0, shuffle=False)
        results[replicas]["adam_weights"] = [w.tolist() for w in network.get_weights()]
    json.dump(results, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def runs():
    """One process per replica count (collective ops cannot be regrouped within a process)."""
    results = {}
    for replicas in (1, 2, 4):
        command = [sys.executable, "-c", SCRIPT, str(replicas)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results.update({int(k): v for k, v in json.loads(done.stdout).items()})
    return results


@pytest.mark.parametrize("replicas", [2, 4])
def test_training_with_penalties_is_the_same_on_several_replicas(runs, replicas):
    one, many = runs[1], runs[replicas]
    for a, b in zip(one["weights"], many["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(many["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(many["penalty"], one["penalty"], rtol=1e-5)
    assert one["penalty"][0] > 0.1  # the penalty matters in this test


@pytest.mark.parametrize("replicas", [2, 4])
def test_fused_adam_is_the_same_on_several_replicas(runs, replicas):
    for a, b in zip(runs[1]["adam_weights"], runs[replicas]["adam_weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-5)


def test_evaluate_reports_the_task_loss_without_the_penalty(runs):
    for run in runs.values():
        assert run["eval_loss"] == pytest.approx(run["task_loss"], rel=1e-5)
        assert run["eval_penalty"] > 0
