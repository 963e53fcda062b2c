"""Chapter 6's ablation: what drives EWC's average accuracy on ten permuted-MNIST tasks.

One factor at a time away from a base configuration (784-400-400-10, Adam
1e-3 reset for every task, batch 128, 2 epochs a task, a sampled Fisher on
1,000 images, λ = 100): learning rate, iterations per task, width, Fisher
sample size, and keeping one Adam across tasks; plus no penalty with and
without the reset. One seed per level (seed 0); ``--seeds`` repeats levels
over more seeds (the base and keeping one Adam ran on seeds 0-2). The test sets are never
touched: every task trains on the first 50,000 training images and is scored
on the last 10,000 (``eb.validation_split``), so the training settings that
chapter 6 takes from here are chosen without the test set, like its λ.

    TFDS_DATA_DIR=... python benchmarks/permuted_ablation.py [--only NAME ...] [--seeds S ...] [--out FILE]

Writes (or updates) a JSON list of rows, one per (name, seed): name, seed, factor, the setting, the
accuracy matrix R and its summaries, wall and CPU seconds. Chapter 6 reads
``ewcbook/chapters/results/06_ablation.json``; its full profile does not re-run the ablation.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ewcbook as eb  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "ewcbook" / "chapters" / "results"  # what the chapters read

BASE = {"method": "ewc", "strength": 100.0, "learning_rate": 1e-3, "epochs": 2, "batch_size": 128,
        "hidden": [400, 400], "fisher_samples": 1000, "reset_optimizer": True}

#: name -> (factor, changes to BASE)
CONFIGS = {
    "base": ("base", {}),
    "none_base": ("no penalty", {"method": "none", "strength": 0.0}),
    "lr_1e-4": ("learning rate", {"learning_rate": 1e-4}),
    "lr_3e-4": ("learning rate", {"learning_rate": 3e-4}),
    "epochs_1": ("iterations per task", {"epochs": 1}),
    "epochs_4": ("iterations per task", {"epochs": 4}),
    "hidden_1000": ("width", {"hidden": [1000, 1000]}),
    "hidden_200": ("width", {"hidden": [200, 200]}),
    "fisher_200": ("Fisher samples", {"fisher_samples": 200}),
    "fisher_10000": ("Fisher samples", {"fisher_samples": 10000}),
    "keep_adam": ("optimizer reset", {"reset_optimizer": False}),
    "none_keep_adam": ("optimizer reset", {"method": "none", "strength": 0.0, "reset_optimizer": False}),
}


def validation_tasks(seed: int = 0, size: int = 10_000) -> list:
    """Ten permuted-MNIST tasks whose 'test' split is the last ``size`` training images."""
    return [eb.validation_split(t, size) for t in eb.permuted_mnist(10, seed=seed)]


def run(name: str, seed: int = 0, tasks=None) -> dict:
    factor, changes = CONFIGS[name]
    config = {**BASE, **changes}
    tasks = tasks or validation_tasks(seed)
    eb.set_seed(seed)
    start_cpu = time.process_time()
    method = eb.Consolidation(config["method"], config["strength"], fisher_samples=config["fisher_samples"])
    result = eb.train_sequence(
        eb.mlp(10, tuple(config["hidden"])), tasks, method, epochs=config["epochs"], batch_size=config["batch_size"],
        learning_rate=config["learning_rate"], reset_optimizer=config["reset_optimizer"], seed=seed)
    R = result.R
    return {"name": name, "factor": factor, "changes": changes, "config": config, "seed": seed,
            "average_accuracy": eb.average_accuracy(R), "diagonal_mean": float(R.diagonal().mean()),
            "forgetting": eb.forgetting(R), "R": R.round(4).tolist(),
            "seconds": round(result.seconds, 1), "cpu_seconds": round(time.process_time() - start_cpu, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="run only these (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="seeds to run each level on (default: 0)")
    parser.add_argument("--out", default=str(RESULTS / "06_ablation.json"))
    args = parser.parse_args(argv)

    out = pathlib.Path(args.out)
    rows = {(r["name"], r["seed"]): r for r in json.loads(out.read_text())} if out.exists() else {}
    for seed in args.seeds:
        tasks = validation_tasks(seed)
        for name in args.only or CONFIGS:
            row = run(name, seed=seed, tasks=tasks)
            rows[name, seed] = row
            print(f"{name:16s} seed {seed} avg {row['average_accuracy']:.3f}  diag {row['diagonal_mean']:.3f}  "
                  f"forgetting {row['forgetting']:.3f}  {row['seconds']:.0f} s wall, {row['cpu_seconds']:.0f} s CPU",
                  flush=True)
            ordered = [rows[key] for key in sorted(rows, key=lambda k: (list(CONFIGS).index(k[0]), k[1]))]
            out.write_text(json.dumps(ordered, indent=1) + "\n")


if __name__ == "__main__":
    main()
