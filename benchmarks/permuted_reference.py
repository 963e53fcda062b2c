"""Chapter 6's reference run: no penalty and EWC in van de Ven & Tolias's configuration.

Their public code (github.com/GMvandeVen/continual-learning, the version of
the "Three scenarios" paper, up to commit a02db26) sets, for ten
domain-incremental permuted-MNIST tasks (``./main.py --experiment=permMNIST
--scenario=domain [--ewc]``):

* a 1024-1000-1000-10 ReLU network (MNIST padded to 32 x 32, every task
  permuted), each layer initialised U(±1/√fan_in), weights and biases
  (PyTorch's default, their ``reset_parameters``);
* Adam, learning rate 1e-4, betas (0.9, 0.999), eps 1e-8, one optimizer
  kept across the tasks (``--optimizer adam``, the default);
* 5,000 iterations per task of batches of 128 (drop_last), reshuffled on
  every pass over the task's 60,000 training images;
* EWC with one penalty per task (offline), λ = 500 in their convention,
  loss = mean cross-entropy + λ · ½ Σ F (θ − θ*)², the book's convention too;
  the Fisher from a pass over *all* training images, one at a time, with the
  label each image's *predicted* class (the argmax, ``output.max(1)[1]``):
  neither the book's sampled nor its exact Fisher, the "predicted-label"
  Fisher of van de Ven (2025); here the library's per-example Fisher with the
  argmax labels given as the labels.

Two equivalences keep the book's data and network code: MNIST's 28 x 28
images with the first layer initialised at the 32 x 32 input's scale,
U(±1/√1024), are the padded network exactly (the 240 padding pixels are
always zero, so their weights never receive a gradient, never move and add
nothing to the logits, the Fisher or the penalty); and the book's task 1 is
unpermuted, which for a fully connected network with an initialisation that
treats every input alike is the same distribution as a random permutation.
The one difference left: their Fisher divides the sum over 60,000 images by
59,999 (the loop's last index), a factor 1.00002.

The test sets are the tasks' 10,000 test images, as in their code (this
benchmark chooses nothing: λ and every setting are theirs).

    TFDS_DATA_DIR=... python benchmarks/permuted_reference.py [--seeds 0 1] [--methods none ewc] \\
        [--out ewcbook/chapters/results/06_reference.json]

Writes a JSON object (after every run): the command, the commit, the
settings, and one row per method and seed (the accuracy matrix R, its
average accuracy, wall and CPU seconds). Chapter 6 reads
``ewcbook/chapters/results/06_reference.json``; its full profile does not re-run it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import ewcbook as eb  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "ewcbook" / "chapters" / "results"  # what the chapters read

SETTINGS = {"tasks": 10, "hidden": [1000, 1000], "input_fan_in": 32 * 32, "learning_rate": 1e-4,
            "adam_epsilon": 1e-8, "iterations": 5000, "batch_size": 128, "reset_optimizer": False,
            "fisher_samples": 60000, "fisher_labels": "predicted (argmax)", "limit": None}
STRENGTHS = {"none": 0.0, "ewc": 500.0}
#: what the paper reports (van de Ven & Tolias 2019, permuted MNIST, domain-incremental), single figures
PAPER = {"none": 0.785, "ewc": 0.943}


def reference_network(hidden, seed: int, input_fan_in: int):
    """The book's MLP with PyTorch's initialisation, U(±1/√fan_in) for kernels and biases."""
    eb.set_seed(seed)
    network = eb.mlp(10, tuple(hidden))
    rng = np.random.default_rng(seed)
    dense = [layer for layer in network.layers if isinstance(layer, keras.layers.Dense)]
    for k, layer in enumerate(dense):
        fan_in = input_fan_in if k == 0 else layer.kernel.shape[0]
        bound = 1.0 / np.sqrt(fan_in)
        layer.kernel.assign(rng.uniform(-bound, bound, layer.kernel.shape).astype("float32"))
        layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype("float32"))
    return network


def iterations(task, *, iterations: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """``iterations`` batches of ``batch_size``, drop_last, the order drawn afresh on every pass."""
    x, y = task.inputs("train"), tf.constant(task.arrays("train")[1])
    n = len(task.arrays("train")[1])
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    batches = order.batch(batch_size, drop_remainder=True).repeat().take(iterations)

    @tf.autograph.experimental.do_not_convert
    def gather(i):
        return tf.gather(x, i), tf.gather(y, i)

    return batches.map(gather).prefetch(2)


class IterationFit:
    """A ``fit`` for ``eb.train_sequence``: ``iterations`` batches per task, Adam's eps set to theirs."""

    def __init__(self, settings: dict):
        self.settings = settings

    def __call__(self, learner, task, *, seed=0, **kwargs):
        s = self.settings
        learner.compile_for_tasks(s["learning_rate"])
        learner.optimizer.epsilon = s["adam_epsilon"]  # before the step is traced
        data = iterations(task, iterations=s["iterations"], batch_size=s["batch_size"], seed=seed)
        return eb.fit_task(learner, task, **{**kwargs, "epochs": 1, "seed": seed, "data": data})


class PredictedLabelEWC:
    """Per-task EWC whose Fisher takes each image's predicted class as its label (their ``output.max(1)[1]``)."""

    def __init__(self, strength: float, fisher_samples: int | None):
        self.inner = eb.Consolidation("ewc", strength, fisher_samples=fisher_samples, estimator="empirical")
        self.fisher_samples = fisher_samples

    def consolidate(self, learner, task, seed=0):
        x = task.inputs("train", self.fisher_samples)
        predicted = np.argmax(learner.predict(x, batch_size=1000, verbose=0), axis=1).astype(np.int64)
        n = len(predicted)
        labelled = dataclasses.replace(task, x_train=task.x_train[:n], y_train=predicted)
        self.inner.consolidate(learner, labelled, seed=seed)


def run(method: str, tasks, seed: int, settings: dict = SETTINGS) -> dict:
    """One ten-task sequence of ``method`` ("none" or "ewc") in the reference configuration."""
    consolidation = (None if method == "none"
                     else PredictedLabelEWC(STRENGTHS[method], settings["fisher_samples"]))
    network = reference_network(settings["hidden"], seed, settings["input_fan_in"])
    start_cpu = time.process_time()
    result = eb.train_sequence(network, tasks, consolidation, batch_size=settings["batch_size"],
                               learning_rate=settings["learning_rate"], epochs=1,
                               reset_optimizer=settings["reset_optimizer"], seed=seed,
                               evaluate_unseen=False, fit=IterationFit(settings))
    R = result.R
    return {"method": method, "seed": seed, "strength": STRENGTHS[method],
            "average_accuracy": eb.average_accuracy(R), "diagonal_mean": float(np.mean(np.diagonal(R))),
            "forgetting": eb.forgetting(R), "R": np.round(R, 4).tolist(),
            "seconds": round(result.seconds, 1), "cpu_seconds": round(time.process_time() - start_cpu, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=list(STRENGTHS), choices=list(STRENGTHS))
    parser.add_argument("--out", default=str(RESULTS / "06_reference.json"))
    args = parser.parse_args(argv)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=pathlib.Path(__file__).parents[1]).stdout.strip()
    command = "python benchmarks/permuted_reference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    path = pathlib.Path(args.out)
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for seed in args.seeds:
        tasks = eb.permuted_mnist(SETTINGS["tasks"], seed=seed, limit=SETTINGS["limit"])
        for method in args.methods:
            row = run(method, tasks, seed)
            rows = [r for r in rows if (r["method"], r["seed"]) != (method, seed)] + [row]
            print(f"seed {seed} {method:5s} average accuracy {row['average_accuracy']:.4f}  "
                  f"{row['seconds']:.0f} s wall, {row['cpu_seconds']:.0f} s CPU", flush=True)
            out = {"command": command, "commit": commit, "settings": SETTINGS, "strengths": STRENGTHS,
                   "paper": PAPER, "seeds": sorted({r["seed"] for r in rows}),
                   "cpu_minutes": round(sum(r["cpu_seconds"] for r in rows) / 60, 1), "rows": rows}
            path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
