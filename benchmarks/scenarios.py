"""Chapter 8 at the reference budget: the eight learners, three scenarios, 4 epochs a task.

Chapter 8 trains one epoch per task; Hsu et al. (2018) train four. This
script runs the chapter's protocol (:mod:`ewcbook.chapters.ch8`) at four
epochs a task, with the strengths the chapter chooses on validation data
(chosen here as the chapter chooses them: ``ch8.select`` on the same
validation splits, seed and grids, so the choices are the chapter's, which
the chapter's claims test checks; or, with ``--strengths chapter``, read from
the glued values of the executed chapter), over a few seeds; and EWC, online EWC and
SI at the coefficients Hsu et al. give for this benchmark, read in our units
(twice theirs: their penalties have no 1/2). It writes what the chapter
reads: ``ewcbook/chapters/results/08_reference_budget.json``.

    TFDS_DATA_DIR=... python benchmarks/scenarios.py [--epochs 4] [--seeds 3] [--out FILE]  # FILE: results/ by default
    TFDS_DATA_DIR=... python benchmarks/scenarios.py --smoke --out smoke.json   # seconds: the tests' check
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nbformat  # noqa: E402
import numpy as np  # noqa: E402

import ewcbook as eb  # noqa: E402
from ewcbook.chapters import ch8  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "ewcbook" / "chapters" / "results"  # what the chapters read

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "book" / "08_where_ewc_stands.ipynb"


#: How chapter 8's full profile chooses its strengths: validation splits of the last 1,000 training images
#: of each task, selection seed 100 (its seed 0 + 100), the chapter's protocol at one epoch a task.
SELECTION = {"val_size": 1000, "seed": 100}

#: The coefficients of Hsu et al. (2018) for split MNIST (their scripts), incremental task, domain, class.
HSU_COEFFICIENTS = {"ewc": (100.0, 100.0, 600.0), "online_ewc": (400.0, 700.0, 100.0), "si": (300.0, 3000.0, 600.0)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def chosen_strengths(path: pathlib.Path) -> dict:
    """``{(scenario, learner): λ}`` glued by the chapter (``ch8_strength_<scenario>_<learner>``)."""
    strengths = {}
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name", "")
            if name.startswith("ch8_strength_"):
                scenario, learner = name[len("ch8_strength_"):].split("_", 1)
                text = next(v for k, v in out["data"].items() if k.endswith("text/plain"))  # myst-nb's glue mime type
                strengths[(scenario, learner)] = float(ast.literal_eval(text))
    return strengths


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "08_reference_budget.json"))
    parser.add_argument("--strengths", choices=("select", "chapter"), default="select",
                        help="choose the strengths as the chapter does, or read them from the executed chapter")
    parser.add_argument("--chapter", default=str(CHAPTER), help="the executed chapter to read the strengths from")
    parser.add_argument("--workers", type=int, default=2, help="processes to run in (the same numbers)")
    parser.add_argument("--smoke", action="store_true", help="300 images a task, one scenario, a tiny network")
    args = parser.parse_args(argv)
    wall, cpu = time.perf_counter(), time.process_time()  # the selection included
    if args.smoke:
        protocol = ch8.Protocol(hidden=(16,), epochs=1, per_class=5, fisher_samples=50)
        limit, scenarios, seeds = 300, ("class",), [0]
        strengths = {(s, n): grid[0] for s in eb.data.SCENARIOS for n, grid in ch8.GRIDS.items()}
    else:
        protocol = ch8.Protocol(epochs=args.epochs)
        limit, scenarios, seeds = None, eb.data.SCENARIOS, list(range(args.seeds))
        if args.strengths == "select":  # the chapter's selection: its validation splits, seed and protocol
            chosen = ch8.select(ch8.Data(val_size=SELECTION["val_size"]), seed=SELECTION["seed"],
                                protocol=ch8.Protocol(), workers=args.workers)
            strengths = {key: c["best"] for key, c in chosen.items()}
        else:
            strengths = chosen_strengths(pathlib.Path(args.chapter))
        if len(strengths) != len(ch8.GRIDS) * len(scenarios):
            raise SystemExit(f"{args.chapter} holds {len(strengths)} chosen strengths; run its full profile first")
    data = ch8.Data(limit=limit)
    rows = ch8.runs(data, ch8.METHODS, strengths, seeds=seeds, protocol=protocol, scenarios=scenarios,
                    workers=args.workers)
    # the penalties at the coefficients Hsu et al. (2018) give, read in our units (their penalties have no 1/2)
    hsu = {(s, n): 2.0 * HSU_COEFFICIENTS[n][k] for k, s in enumerate(eb.data.SCENARIOS) for n in HSU_COEFFICIENTS}
    paper = ch8.runs(data, list(HSU_COEFFICIENTS), hsu, seeds=seeds, protocol=protocol, scenarios=scenarios,
                     workers=args.workers)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    result = {
        "command": " ".join(["python benchmarks/scenarios.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": commit,
        "epochs": protocol.epochs,
        "seeds": seeds,
        "strengths": {f"{s}/{n}": v for (s, n), v in strengths.items()},
        "mean": {s: {n: float(np.mean(ch8.averages(rows, s, n))) for n in ch8.METHODS} for s in scenarios},
        "averages": {s: {n: ch8.averages(rows, s, n).tolist() for n in ch8.METHODS} for s in scenarios},
        "hsu_strengths": {f"{s}/{n}": v for (s, n), v in hsu.items()},
        "hsu_mean": {s: {n: float(np.mean(ch8.averages(paper, s, n))) for n in HSU_COEFFICIENTS} for s in scenarios},
        "wall_minutes": (time.perf_counter() - wall) / 60,
        # this process and its workers (children)
        "cpu_minutes": (time.process_time() - cpu + _children_cpu()) / 60,
    }
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["mean"], indent=1))
    return result


if __name__ == "__main__":
    main()
