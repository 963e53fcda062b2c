"""Chapter 7's control: the merged Kronecker penalty against the exact sum of the per-task terms.

Chapter 7's ten permuted-MNIST tasks (784-400-400-10, one Adam 1e-3 kept
across the sequence, 2 epochs a task of 20,000 images, batch 128, K-FAC
factors from 1,000 images with sampled labels, γ = 1), trained twice per seed
with the same λ: once with :class:`ewcbook.kfac.KroneckerConsolidation` (the
tasks' curvatures merged into the nearest Kronecker product per layer) and
once with :class:`ewcbook.chapters.ch7.KroneckerSum` (one Kronecker term per
task, all anchored at the latest weights, as Ritter et al. 2018 keep it). λ
is the one chapter 7 chose for K-FAC on its validation sequence; pass it with
``--strength``. The exact sum's cost per step grows with the tasks (with
``--tasks`` it runs on the first tasks only), so this runs once outside the
chapter, which reads the JSON it writes.

    TFDS_DATA_DIR=... python benchmarks/kronecker_control.py --strength 10 --tasks 5 [--seeds 0 1 2] \\
        [--out ewcbook/chapters/results/07_kronecker_control.json]

Writes a JSON object: the command, the commit, the settings, and one row per
method and seed (the accuracy matrix R, the mean accuracy over the tasks seen
after each task, wall and CPU seconds, the merge errors of the merged run).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ewcbook as eb  # noqa: E402
from ewcbook import kfac  # noqa: E402
from ewcbook.chapters import ch7  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "ewcbook" / "chapters" / "results"  # what the chapters read

SETTINGS = {"tasks": 10, "limit": 20000, "hidden": [400, 400], "epochs": 2, "batch_size": 128,
            "fisher_samples": 1000, "learning_rate": 1e-3, "reset_optimizer": False}
METHODS = ("merged", "exact_sum")


def run(method: str, tasks, strength: float, seed: int, settings: dict = SETTINGS) -> dict:
    """One sequence of ``method`` ("merged" or "exact_sum") at ``strength``, seed ``seed``."""
    n = settings["fisher_samples"]
    consolidation = (kfac.KroneckerConsolidation(strength, fisher_samples=n) if method == "merged"
                     else ch7.KroneckerSum(strength, fisher_samples=n))
    eb.set_seed(seed)
    start_cpu = time.process_time()
    result = eb.train_sequence(
        eb.mlp(10, tuple(settings["hidden"])), tasks, consolidation, epochs=settings["epochs"],
        batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
        reset_optimizer=settings["reset_optimizer"], seed=seed)
    R = result.R
    merges = result.learner.penalties[0].merge_errors if method == "merged" else []
    return {"method": method, "seed": seed, "strength": strength,
            "seen": [round(float(R[i, : i + 1].mean()), 5) for i in range(len(tasks))],
            "average_accuracy": eb.average_accuracy(R), "R": R.round(4).tolist(),
            "merge_errors": [[round(float(e), 4) for e in row] for row in merges],
            "seconds": round(result.seconds, 1), "cpu_seconds": round(time.process_time() - start_cpu, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, required=True, help="λ of both methods (chapter 7's K-FAC λ)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", type=int, default=SETTINGS["tasks"],
                        help="the first TASKS of chapter 7's tasks (the exact sum's cost grows with them)")
    parser.add_argument("--out", default=str(RESULTS / "07_kronecker_control.json"))
    args = parser.parse_args(argv)

    settings = {**SETTINGS, "tasks": args.tasks}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=pathlib.Path(__file__).parents[1]).stdout.strip()
    command = "python benchmarks/kronecker_control.py " + " ".join(sys.argv[1:] if argv is None else argv)
    # chapter 7's tasks: the permutations of its seed 0, the same for every seed; the first args.tasks of them
    tasks = eb.permuted_mnist(SETTINGS["tasks"], seed=0, limit=SETTINGS["limit"])[: args.tasks]
    rows = []
    for seed in args.seeds:
        for method in METHODS:
            row = run(method, tasks, args.strength, seed, settings)
            rows.append(row)
            print(f"seed {seed} {method:9s} average accuracy {row['average_accuracy']:.3f}  "
                  f"{row['seconds']:.0f} s wall, {row['cpu_seconds']:.0f} s CPU", flush=True)
        out = {"command": command, "commit": commit, "settings": settings, "strength": args.strength,
               "seeds": sorted({r["seed"] for r in rows}),
               "cpu_minutes": round(sum(r["cpu_seconds"] for r in rows) / 60, 1), "rows": rows}
        pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")  # after every seed


if __name__ == "__main__":
    main()
