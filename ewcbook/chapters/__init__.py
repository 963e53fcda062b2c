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


def binomial_error(accuracy: float, n_examples: int) -> float:
    """The standard error of an accuracy measured on ``n_examples`` images, sqrt(p (1 − p) / n): the noise of
    one run's validation score (not of the training run behind it)."""
    if not isinstance(n_examples, (int, np.integer)) or isinstance(n_examples, bool) or n_examples < 1:
        raise ValueError(f"n_examples must be an int >= 1, got {n_examples!r}")
    return float(np.sqrt(max(accuracy * (1 - accuracy), 1e-12) / n_examples))


def noise_band(best: float, n_examples: int) -> float:
    """How far below the best score of a validation grid (``best``, an accuracy on ``n_examples`` images)
    another candidate may lie and still not be told apart from it: one standard error (the one-standard-error
    rule of Breiman et al. 1984), plus :data:`MARGIN` (the float path's share: another CPU moves every trained
    accuracy a little)."""
    return binomial_error(best, n_examples) + MARGIN


def within_noise(scores: dict, n_examples: int) -> list:
    """The candidates of a validation grid (``{candidate: accuracy}``, accuracies on ``n_examples`` validation
    images) that the validation cannot tell apart from the best: within :func:`noise_band` of it. The best
    comes first; the others follow in the order of ``scores``."""
    if len(scores) < 1:
        raise ValueError("scores must hold at least one candidate")
    best = max(scores, key=scores.get)
    band = noise_band(scores[best], n_examples)
    return [best] + [c for c, score in scores.items() if c != best and score >= scores[best] - band]


def choice_resolved(scores: dict, n_examples: int) -> bool:
    """Whether the best point of a validation grid (``{candidate: accuracy}``, accuracies over ``n_examples``
    validation images) beats the runner-up beyond noise: by more than two binomial standard errors of the best
    accuracy, plus :data:`MARGIN`. When it does not, another CPU may choose the runner-up."""
    if len(scores) < 2:
        raise ValueError(f"scores must hold at least two candidates, got {len(scores)}")
    best, runner_up = sorted(scores.values(), reverse=True)[:2]
    return bool(best - runner_up > 2 * binomial_error(best, n_examples) + MARGIN)


def weakest_within_noise(scores: dict, strengths: dict, n_examples: int):
    """The candidate to keep from a validation grid: the weakest penalty among those the validation cannot
    tell apart from the best (:func:`within_noise`).

    Keeping the best by a difference smaller than the noise would let the last digit choose (another CPU,
    another choice); among candidates that the data cannot separate, the weakest penalty is the one that
    costs the new tasks least, and over a longer sequence, where penalties add up, the safer bet.

    Args:
        scores: ``{candidate: validation accuracy}``.
        strengths: ``{candidate: sort key of its strength}``, e.g. ``(λ, γ)``;
            the smallest key is the weakest penalty.
        n_examples: number of validation examples behind each score.

    Returns:
        ``(candidate, band)``, ``band`` the :func:`noise_band` of the best score.
    """
    if not scores or set(scores) != set(strengths):
        raise ValueError("scores and strengths must be non-empty and name the same candidates")
    close = within_noise(scores, n_examples)
    return min(close, key=lambda c: strengths[c]), noise_band(max(scores.values()), n_examples)


def open_reason(low: float, high: float) -> str:
    """Why an interval ``[low, high]`` of a difference does not resolve it, in one wording whether it contains
    0 or clears it by less than :data:`MARGIN` (so that the sentence does not change with the float path when
    an end lies near 0), with the largest difference it allows."""
    low, high = float(low), float(high)
    if not low <= high:
        raise ValueError(f"low must be <= high, got {low} and {high}")
    allowed = max(abs(low), abs(high))
    return f"the interval does not clear 0 by more than {MARGIN:g} (differences up to {allowed:.3f} allowed)"


def load_results(name: str):
    """The JSON a benchmark wrote for the chapters, e.g. ``load_results("06_ablation.json")``."""
    files = resources.files(__name__) / "results"
    if not isinstance(name, str) or not (files / name).is_file():
        known = sorted(f.name for f in files.iterdir() if f.name.endswith(".json"))
        raise ValueError(f"name must be one of {known}, got {name!r}")
    return json.loads((files / name).read_text())
