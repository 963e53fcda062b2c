"""The book's own helpers, apart from the library: what only a chapter uses.

One module per chapter that needs one (``ch3`` ... ``ch6``), and two that
several chapters share: :mod:`ewcbook.chapters.style` (the look of every
figure, one colour per method) and :mod:`ewcbook.chapters.original_post`
(the seed blog post's code, bugs included, for measuring them). Chapters
import them as ``from ewcbook.chapters import ch5``; the library never
imports this package, and ``import ewcbook`` does not load it. A new
chapter's helpers go in a new module here, ``chN.py``.

These modules need the book's extras (``pip install "ewcbook[book]"``):
matplotlib, for the figures.

The results of the benchmarks that a chapter reads (heavy runs made once,
``benchmarks/*.py``) ship with the package, in ``results/``: a chapter opened
alone (on Colab, ``ewcbook`` installed from the repository) finds them with
:func:`load_results`.
"""

import json
from importlib import resources

import numpy as np

#: The book's one rule for a sentence that must read the same on another CPU (another float path moves
#: every trained number a little): a difference of accuracies counts only beyond this. An interval resolves a
#: comparison only if it clears 0 by more than it (:func:`ewcbook.stats.resolved_sign`), and a step along a
#: grid moves a value only if it moves it by more than it.
MARGIN = 0.005


def choice_resolved(scores: dict, n_examples: int) -> bool:
    """Whether the best point of a validation grid (``{candidate: accuracy}``, accuracies over ``n_examples``
    validation images) beats the runner-up beyond noise: by more than two binomial standard errors of the best
    accuracy, plus :data:`MARGIN`. When it does not, another CPU may choose the runner-up."""
    if len(scores) < 2:
        raise ValueError(f"scores must hold at least two candidates, got {len(scores)}")
    best, runner_up = sorted(scores.values(), reverse=True)[:2]
    error = np.sqrt(max(best * (1 - best), 1e-12) / n_examples)
    return bool(best - runner_up > 2 * error + MARGIN)


def load_results(name: str):
    """The JSON a benchmark wrote for the chapters, e.g. ``load_results("06_ablation.json")``."""
    files = resources.files(__name__) / "results"
    if not isinstance(name, str) or not (files / name).is_file():
        known = sorted(f.name for f in files.iterdir() if f.name.endswith(".json"))
        raise ValueError(f"name must be one of {known}, got {name!r}")
    return json.loads((files / name).read_text())
