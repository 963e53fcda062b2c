"""The Fisher and EWC training under tf.distribute give what one device gives.

Two configurations, each one fresh process (logical devices and a cluster must be set up before TensorFlow
starts): MirroredStrategy on 2 logical CPU devices, and MultiWorkerMirroredStrategy with 2 worker processes on
127.0.0.1. Each process also computes the one-device reference itself, outside the strategy's scope.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

COMMON = textwrap.dedent(
    """
    import contextlib, json, sys
    import numpy as np
    import tensorflow as tf

    def as_lists(arrays):
        return [np.asarray(a).tolist() for a in arrays]

    def one_device_and(strategy, fn):  # fn(scope) with no strategy, then with the strategy's scope
        return {"one": fn(contextlib.nullcontext()), "distributed": fn(strategy.scope())}
    """
)

# MirroredStrategy: every estimator and algorithm, a cut last batch, kronecker_factors, seed=None, and
# fit_task + diagonal_fisher + EWC as a reader would write them inside `with strategy.scope():`.
MIRRORED = COMMON + textwrap.dedent(
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import ewcbook as eb

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 5)).astype("float32")  # batches of 8: 7 of them, the last of 2
    y = rng.integers(0, 3, 50)
    init = [rng.normal(scale=0.5, size=s).astype("float32") for s in [(5, 8), (8,), (8, 3), (3,)]]

    def network():
        net = eb.mlp(3, (8,), input_shape=(5,))
        net.set_weights(init)
        return net

    one_net = network()  # one model each: its traced Fisher functions serve every call
    with strategy.scope():
        two_net = network()

    def fisher(scope, **kw):
        with scope:
            net = one_net if isinstance(scope, contextlib.nullcontext) else two_net
            return as_lists(eb.diagonal_fisher(net, (x, y), **kw))

    cases = [(e, a, n) for e in ("sampled", "exact", "empirical") for a in ("fast", "vectorized") for n in (None, 37)]
    cases.append(("sampled", "loop", 12))
    results = {"fisher": {}}
    for estimator, algorithm, num_samples in cases:
        kw = dict(estimator=estimator, algorithm=algorithm, num_samples=num_samples, seed=3, batch_size=8)
        results["fisher"][f"{estimator} {algorithm} {num_samples}"] = one_device_and(
            strategy, lambda scope, kw=kw: fisher(scope, **kw))

    def factors(scope):
        with scope:
            net = one_net if isinstance(scope, contextlib.nullcontext) else two_net
            return [as_lists(pair) for pair in eb.kronecker_factors(net, (x, y), seed=4, batch_size=8)]

    def unseeded(scope):  # seed=None: drawn from NumPy's generator, the same draw with or without a strategy
        np.random.seed(11)
        return fisher(scope, batch_size=8)

    results["factors"] = one_device_and(strategy, factors)
    results["unseeded"] = one_device_and(strategy, unseeded)

    images = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    task_a, task_b = (eb.Task(n, images, (images.reshape(64, -1)[:, k] > 127).astype(int), images,
                              (images.reshape(64, -1)[:, k] > 127).astype(int), num_classes=2)
                      for k, n in enumerate("AB"))
    init_mnist = [rng.normal(scale=0.05, size=s).astype("float32") for s in [(784, 8), (8,), (8, 2), (2,)]]

    def continual(scope):
        with scope:  # the how-to's pattern
            learner = eb.ContinualModel(eb.mlp(2, (8,)))
            learner.network.set_weights(init_mnist)
            first = eb.fit_task(learner, task_a, epochs=2, batch_size=16)
            fisher = eb.diagonal_fisher(learner, task_a.dataset("train", shuffle=False), seed=0)
            learner.penalties = [eb.EWC(learner, fisher, strength=100.0)]
        second = eb.fit_task(learner, task_b, epochs=2, batch_size=16)  # outside the scope works too
        return {"settings": list(learner.task_settings), "loss": first.history["loss"] + second.history["loss"],
                "penalty": second.history["penalty"], "fisher": as_lists(fisher),
                "weights": as_lists(learner.get_weights())}

    results["continual"] = one_device_and(strategy, continual)
    json.dump(results, sys.stdout)
    """
)

# MultiWorkerMirroredStrategy, run by each of 2 workers: the Fisher, and three tasks of per-task EWC and online
# EWC (both penalties on one learner, so one traced step serves both) through fit_task; global batches of 32
# that each worker's replica takes half of (AutoShardPolicy.DATA), the same batches as the one-device run's.
WORKER = COMMON + textwrap.dedent(
    """
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # from TF_CONFIG, before any other TensorFlow op
    import ewcbook as eb

    worker = json.loads(__import__("os").environ["TF_CONFIG"])["task"]["index"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    labels = rng.integers(0, 3, size=(3, 64))
    init = [rng.normal(scale=0.5, size=s).astype("float32") for s in [(5, 8), (8,), (8, 3), (3,)]]
    blank = np.zeros((1, 28, 28, 1), np.uint8)  # fit_task's task: only its name and units matter, data= trains
    tasks = [eb.Task(name, blank, np.zeros(1, int), blank, np.zeros(1, int), num_classes=3) for name in "ABC"]
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    def continual(scope):
        with scope:
            learner = eb.ContinualModel(eb.mlp(3, (8,), input_shape=(5,)))
            learner.network.set_weights(init)
            ewc = online = None
            out = {"loss": [], "penalty": [], "fisher": [], "values": []}
            for k, y in enumerate(labels):
                data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).with_options(options)
                history = eb.fit_task(learner, tasks[k], epochs=2, data=data, learning_rate=0.05)
                out["loss"] += history.history["loss"]
                out["penalty"] += history.history["penalty"]
                fisher = eb.diagonal_fisher(learner, (x, y), seed=k, batch_size=12)  # 6 batches, the last of 4
                out["fisher"].append(as_lists(fisher))
                if ewc is None:
                    ewc, online = eb.EWC(learner, fisher, strength=20.0), eb.OnlineEWC(learner, fisher, 20.0, 0.5)
                    learner.penalties = [ewc, online]
                else:
                    ewc.consolidate(fisher)
                    online.consolidate(fisher)
                out["values"].append([float(ewc()), float(online())])
            data = (x, labels[0])
            out["exact"] = as_lists(eb.diagonal_fisher(learner, data, estimator="exact", algorithm="vectorized",
                                                       batch_size=12))
            out["empirical"] = as_lists(eb.diagonal_fisher(learner, data, estimator="empirical", num_samples=37,
                                                           batch_size=12))
            out["factors"] = [as_lists(p) for p in eb.kronecker_factors(learner, data, seed=5, batch_size=12)]
            np.random.seed(0 if isinstance(scope, contextlib.nullcontext) else worker)  # the workers draw apart
            out["unseeded"] = as_lists(eb.diagonal_fisher(learner, data, batch_size=12))
            out["weights"] = as_lists(learner.get_weights())
        return out

    json.dump(one_device_and(strategy, continual), sys.stdout)
    """
)


def _run(script, env=None):
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _result(process, name):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"{name} failed:\n{err[-3000:]}"
    return json.loads(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mirrored():
    return _result(_run(MIRRORED), "MirroredStrategy")


@pytest.fixture(scope="module")
def workers():
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    processes = [_run(WORKER, dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {
        "type": "worker", "index": i}}))) for i in range(2)]
    try:
        return [_result(p, f"worker {i}") for i, p in enumerate(processes)]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


def _same(got, expected, rtol=1e-5, atol=1e-7):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def _all_same(got, expected, **tolerance):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        _same(a, b, **tolerance)


@pytest.mark.parametrize("case", [f"{e} {a} {n}" for e in ("sampled", "exact", "empirical")
                                  for a in ("fast", "vectorized") for n in (None, 37)] + ["sampled loop 12"])
def test_the_fisher_on_two_replicas_is_the_one_device_fisher(mirrored, case):
    run = mirrored["fisher"][case]
    _all_same(run["distributed"], run["one"])
    assert max(np.max(f) for f in run["one"]) > 1e-2  # not a Fisher of zeros


def test_kronecker_factors_and_an_unseeded_fisher_on_two_replicas(mirrored):
    for a, b in zip(mirrored["factors"]["distributed"], mirrored["factors"]["one"]):
        _all_same(a, b)
    _all_same(mirrored["unseeded"]["distributed"], mirrored["unseeded"]["one"])


def test_fit_task_and_ewc_inside_a_mirrored_strategy_scope(mirrored):
    one, two = mirrored["continual"]["one"], mirrored["continual"]["distributed"]
    assert one["settings"] == [1e-3, 32] and two["settings"] == [1e-3, 1]  # steps_per_execution=1 under a strategy
    _all_same(two["weights"], one["weights"], atol=1e-6)
    _all_same(two["fisher"], one["fisher"])
    _same(two["loss"], one["loss"])
    _same(two["penalty"], one["penalty"])
    assert one["penalty"][-1] > 1e-4


def test_two_workers_train_with_ewc_and_online_ewc_like_one_device(workers):
    for run in workers:
        one, two = run["one"], run["distributed"]
        _same(two["loss"], one["loss"])
        _same(two["penalty"], one["penalty"])
        _same(two["values"], one["values"])
        for a, b in zip(two["fisher"], one["fisher"]):
            _all_same(a, b)
        _all_same(two["weights"], one["weights"], atol=1e-6)
    assert min(workers[0]["one"]["penalty"][2:]) > 1e-3  # the penalties matter from the second task on


def test_the_fisher_on_two_workers_is_the_one_device_fisher_on_each(workers):
    for run in workers:
        one, two = run["one"], run["distributed"]
        for key in ("exact", "empirical", "unseeded"):
            _all_same(two[key], one[key])
        for a, b in zip(two["factors"], one["factors"]):
            _all_same(a, b)
    first, second = (run["distributed"] for run in workers)
    for key in ("fisher", "exact", "empirical", "unseeded", "weights"):
        assert first[key] == second[key]  # every worker holds the same numbers
