"""Command line: ``python -m ewcbook reproduce --profile {smoke,full} [--json PATH]``.

Runs the seed post's protocol on split MNIST (784-128-5 MLP, Adam, 6 + 6
epochs): joint training, sequential training without a penalty, the L2 anchor
and EWC, each with its documented default strength, then the permuted-MNIST
sequence of chapter 6; prints Markdown tables and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow starts: no C++ start-up log

import ewcbook as eb  # noqa: E402
from ewcbook.data import MNISTUnavailableError  # noqa: E402

#: Per profile: examples per split (None = all), epochs per task, permuted-MNIST tasks.
PROFILES = {
    "full": {"limit": None, "epochs": 6, "permuted_tasks": 10, "permuted_limit": None},
    "smoke": {"limit": 2000, "epochs": 1, "permuted_tasks": 3, "permuted_limit": 2000},
}

#: Default strengths: the best mean accuracy of A and B in a one-seed log-grid sweep
#: (λ on the scale of ewcbook.penalties; chapters 3 and 5 show the sweeps).
SPLIT_STRENGTHS = {"none": 0.0, "l2": 1.0, "ewc": 1e4}

#: Chapter 6's final permuted-MNIST settings: one Adam kept across tasks (the ablation's
#: largest gain, benchmarks/permuted_ablation.py), 2 epochs of batch 128 per task.
PERMUTED = {"hidden": (400, 400), "epochs": 2, "batch_size": 128, "fisher_samples": 1000, "reset_optimizer": False}
#: λ chosen by chapter 6 on its validation split (seed 0).
PERMUTED_STRENGTHS = {"none": 0.0, "ewc": 100.0}


def split_runs(profile: str) -> list[dict]:
    """Joint, sequential, L2 and EWC on the seed's split MNIST."""
    settings = PROFILES[profile]
    task_a, task_b = eb.split_mnist(limit=settings["limit"])
    runs = []
    eb.set_seed(0)
    result = eb.train_sequence(eb.mlp(), [eb.joint([task_a, task_b])], epochs=settings["epochs"])
    acc = eb.evaluate_tasks(result.learner, [task_a, task_b])
    runs.append(_row("joint", 0.0, acc, result.seconds))
    for method, strength in SPLIT_STRENGTHS.items():
        eb.set_seed(0)
        result = eb.train_sequence(
            eb.mlp(), [task_a, task_b], eb.Consolidation(method, strength), epochs=settings["epochs"]
        )
        runs.append(_row(method, strength, result.R[-1], result.seconds))
    return runs


def permuted_runs(profile: str) -> list[dict]:
    """No penalty and EWC on a sequence of permuted-MNIST tasks (chapter 6)."""
    settings = PROFILES[profile]
    tasks = eb.permuted_mnist(settings["permuted_tasks"], limit=settings["permuted_limit"])
    runs = []
    for method, strength in PERMUTED_STRENGTHS.items():
        eb.set_seed(0)
        result = eb.train_sequence(
            eb.mlp(10, PERMUTED["hidden"]),
            tasks,
            eb.Consolidation(method, strength, fisher_samples=PERMUTED["fisher_samples"]),
            epochs=1 if profile == "smoke" else PERMUTED["epochs"],
            batch_size=PERMUTED["batch_size"],
            reset_optimizer=PERMUTED["reset_optimizer"],
        )
        runs.append(
            {
                "method": method,
                "strength": strength,
                "tasks": len(tasks),
                "average_accuracy": eb.average_accuracy(result.R),
                "seconds": round(result.seconds, 1),
            }
        )
    return runs


def _row(method, strength, acc, seconds) -> dict:
    return {
        "method": method,
        "strength": strength,
        "acc_A": float(acc[0]),
        "acc_B": float(acc[1]),
        "seconds": round(seconds, 1),
    }


def markdown_table(runs: list[dict], columns: list[str]) -> str:
    """``runs`` as a Markdown table (floats at 3 decimals, strengths as %g)."""

    def cell(key, value):
        if key == "strength":
            return f"{value:g}"
        return f"{value:.3f}" if isinstance(value, float) and key != "seconds" else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r[c]) for c in columns) + " |" for r in runs]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ewcbook", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reproduce = commands.add_parser("reproduce", help="run the seed post's experiment and chapter 6's")
    reproduce.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="full",
        help="full: the published protocol; smoke: small and fast (default: full)",
    )
    reproduce.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    reproduce.add_argument("--skip-permuted", action="store_true", help="run only the split-MNIST protocol")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        runs = split_runs(args.profile)
        permuted = [] if args.skip_permuted else permuted_runs(args.profile)
    except MNISTUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"## Split MNIST, profile {args.profile}\n")
    print(markdown_table(runs, ["method", "strength", "acc_A", "acc_B", "seconds"]))
    if permuted:
        print(f"\n## Permuted MNIST, profile {args.profile}\n")
        print(markdown_table(permuted, ["method", "strength", "tasks", "average_accuracy", "seconds"]))
    print(f"\ntotal: {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "runs": runs, "permuted": permuted}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
