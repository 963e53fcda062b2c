"""The published numbers, and how far a fresh run may move them: every tolerance in one place.

Every number a chapter's prose shows is glued (``myst_nb.glue``) and stored in
the committed notebook. CI executes each chapter once (nbval, see
``tests/nbval_record.py``) and ``tests/test_published.py`` compares every glued
value of that run with the committed one by the first rule below whose
pattern matches the glue key (``re.search``), or else by the value's type.

Why tolerances at all: another CPU (a GitHub runner, a reader's laptop, or
one machine with ``TF_ENABLE_ONEDNN_OPTS`` flipped from its default, README) adds floating-point numbers in
another order. A training run then follows a slightly different path, and
what it ends at differs in the last digits of the weights and, through them,
in a few test images: an accuracy over 5,000-10,000 test images moves by a
few thousandths, a mean over seeds of accuracies that forgetting makes
chaotic (task A after task B) or the end of its interval by up to 0.03
(measured with ``TF_ENABLE_ONEDNN_OPTS=0``: 0.030 in chapter 5), a
quantity computed from trained weights (a Fisher total, a distance) by a few
per cent, and a noise-dominated quantity (the error of an estimate from ten
samples, a spread over seeds, a term whose expectation is zero) by up to half
its value, and the rise of task A's loss measured after one run of task B
by a factor (0.37 against 0.60 in chapter 5, whose point is that the rise
is thousands of times what the quadratic predicts). A timing moves by any amount; a count never moves. The tolerances
below are set from what such re-runs measured (README, "Published numbers"),
with a margin, and stay tight enough that a real change fails: changing
``fit_task``'s learning rate from 1e-3 to 2e-3 moves dozens of values far
outside them.

An interval's end (``..._low``, ``..._high``) is its mean (checked on its
own) plus or minus a half-width, and from three seeds (2 degrees of freedom)
that half-width is itself noise: its 95 % range spans a factor of about ten.
So an end may also move by the larger of the published and the fresh
half-widths (measured with ``TF_ENABLE_ONEDNN_OPTS=0``: chapter 6's
no-penalty average, 0.620 [0.594, 0.646] here, came out 0.613 [0.488, 0.739]).
A verdict read from an interval (``VERDICT_INTERVALS``) must stay the same
unless that interval ends within its tolerance of ±``MARGIN`` (the book's
rule: an interval resolves a comparison only if it clears 0 by more than
``ewcbook.chapters.MARGIN``); then either reading is
a reproduction, and the claims tests check the fresh one against the fresh
interval.

Non-numbers: booleans compare exactly; strings (glued sentences, verdicts)
compare exactly after masking their numbers, since those numbers are glued
and checked on their own.
"""

from __future__ import annotations

import math
import re

from ewcbook.chapters import MARGIN

# a number as the prose writes it, with its sign: 0.745, -1e-05, +0.004, .5, 8,171 (thousands separated)
NUMBER = re.compile(r"[-+−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+−]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+−]?\.\d+")

#: (pattern on the glue key, kind, absolute tolerance, relative tolerance); the first match wins.
RULES = [
    # wall-clock times, speeds and ratios of times: any value is fine
    (r"seconds|minutes|_time|time_|_ms\b|_ms_|speed|per_step|cost_ratio|runtime|_over_fast|faster|slower",
     "ignore", None, None),
    # the rise of a task's loss measured after training on the next task, in one run: another CPU ends the run
    # elsewhere in the loss landscape, and what the chapter reads from it is its order of magnitude
    (r"_rise", "log", 3.0, None),
    # noise-dominated quantities: errors of estimators from few samples, spreads over seeds, terms whose
    # expectation is zero (their value is mostly the noise of the particular trained weights)
    (r"error|_err\b|_err_|cross|share_sampling|_std|spread_|_sd\b", "number", 0.01, 0.5),
    # a strength chosen from a grid whose steps are a factor of 100 apart (chapter 8): one step either way
    (r"^ch8_strength_", "log", 100.0, None),
    # the appendix's re-run of the post's EWC run as its code ran it: under that near-rigid anchor, where Adam
    # leaves a run of task B is chaotic (with TF_ENABLE_ONEDNN_OPTS=0 one seed's accuracy on B went from 0.302
    # to 0.157, a mean over three seeds moved by 0.048)
    (r"^app_faithful_", "number", 0.08, 0.0),
    # accuracies, means of accuracies, and differences or intervals of them (fractions of 5,000-10,000 images)
    (r"acc|fraction|mean|forgetting|transfer|bwt|intransigence|drop|gap|_diff|delta|_ci|interval|margin|chance|majority",
     "number", 0.04, 0.0),
    # everything else computed from trained weights: Fisher values, distances, ratios, correlations, losses
    (r".", "number", 1e-6, 0.10),
]


#: Verdicts read from a 95 % interval of a difference against 0: (verdict key, its interval's low and high keys).
VERDICT_INTERVALS = [
    (r"^(ch5_.*)_(?:verdict|kind)$", r"\1_low", r"\1_high"),
    (r"^ch6_verdict_(.*)$", r"ch6_diff_\1_low", r"ch6_diff_\1_high"),
    (r"^ch7_verdict$", "ch7_diff_low", "ch7_diff_high"),
    (r"^ch7_exact_verdict$", "ch7_exact_diff_low", "ch7_exact_diff_high"),
    (r"^ch8_verdict_(.*)$", r"ch8_diff_\1_low", r"ch8_diff_\1_high"),
    (r"^(app_faithful_diff_.*)_verdict$", r"\1_low", r"\1_high"),
]


def interval_half_width(key: str, published: dict) -> float:
    """Half the width of the interval in ``published`` whose end ``key`` is (``..._low`` or ``..._high``), else 0."""
    match = re.match(r"^(.*)_(low|high)$", key)
    if not match or not {f"{match[1]}_low", f"{match[1]}_high"} <= set(published):
        return 0.0
    low, high = published[f"{match[1]}_low"], published[f"{match[1]}_high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        return 0.0
    return abs(high - low) / 2


def verdict_is_borderline(key: str, published: dict) -> bool:
    """Whether ``key`` is a verdict read from an interval that ends within its tolerance of 0.

    Such a verdict may come out differently on another float path, with
    numbers that all reproduce: the fresh verdict is then checked against
    the fresh interval by the chapter's claims test, not against the
    published sentence.
    """
    for pattern, low_key, high_key in VERDICT_INTERVALS:
        match = re.match(pattern, key)
        if match and match.expand(low_key) in published and match.expand(high_key) in published:
            ends = [match.expand(low_key), match.expand(high_key)]
            # the verdict flips where an end crosses ±MARGIN (the book's rule, ewcbook.chapters.MARGIN)
            return any(min(abs(published[end] - MARGIN), abs(published[end] + MARGIN))
                       <= _allowed(end, published[end], published) for end in ends)
    return False


def _allowed(key: str, value: float, published: dict) -> float:
    kind, atol, rtol = rule_for(key)
    return atol + rtol * abs(value) + interval_half_width(key, published)


def rule_for(key: str):
    """The (kind, absolute tolerance, relative tolerance) that applies to glue key ``key``."""
    for pattern, kind, atol, rtol in RULES:
        if re.search(pattern, key):
            return kind, atol, rtol
    raise AssertionError("the last rule matches every key")


def differences(key: str, fresh, committed, published: dict | None = None, run: dict | None = None) -> list[str]:
    """Why ``fresh`` is not close enough to ``committed`` under the rule of ``key`` ([] when it is).

    ``published`` and ``run``, all of the chapter's published and fresh
    values, widen the tolerance of an interval's end by the larger of the two
    intervals' half-widths, and let a borderline verdict change (see
    :func:`verdict_is_borderline`).
    """
    published, run = published or {}, run or {}
    kind, atol, rtol = rule_for(key)
    if kind == "ignore" or verdict_is_borderline(key, published):
        return []
    if kind == "number":
        atol += max(interval_half_width(key, published), interval_half_width(key, run))
    if kind == "log" and not (isinstance(fresh, str) and isinstance(committed, str)):  # within a factor, same sign
        factor = atol
        ok = isinstance(fresh, (int, float)) and isinstance(committed, (int, float)) and fresh * committed > 0
        if ok and abs(math.log(fresh / committed)) <= math.log(factor):
            return []
        return [f"{key}: {fresh!r} is not within a factor {factor:g} of the published {committed!r}"]
    return _compare(key, fresh, committed, atol, rtol)


def _compare(where, fresh, committed, atol, rtol) -> list[str]:
    if isinstance(committed, bool) or isinstance(fresh, bool):
        return [] if fresh is committed else [f"{where}: {fresh!r} != {committed!r}"]
    if isinstance(committed, int) and isinstance(fresh, int):  # counts never move
        return [] if fresh == committed else [f"{where}: count {fresh} != {committed}"]
    if isinstance(committed, (int, float)) and isinstance(fresh, (int, float)):
        if math.isnan(committed) or math.isnan(fresh):
            return [] if math.isnan(committed) and math.isnan(fresh) else [f"{where}: {fresh} != {committed}"]
        allowed = atol + rtol * abs(committed)
        if abs(fresh - committed) <= allowed:
            return []
        return [f"{where}: {fresh:.6g} differs from the published {committed:.6g} by more than {allowed:.3g}"]
    if isinstance(committed, str) and isinstance(fresh, str):
        if NUMBER.sub("#", fresh) == NUMBER.sub("#", committed):
            return []
        return [f"{where}: text {fresh!r} != published {committed!r}"]
    if isinstance(committed, (list, tuple)) and isinstance(fresh, (list, tuple)):
        if len(fresh) != len(committed):
            return [f"{where}: {len(fresh)} values instead of {len(committed)}"]
        pairs = enumerate(zip(fresh, committed))
        return [d for i, (f, c) in pairs for d in _compare(f"{where}[{i}]", f, c, atol, rtol)]
    if isinstance(committed, dict) and isinstance(fresh, dict):
        if set(fresh) != set(committed):
            return [f"{where}: keys {sorted(fresh)} instead of {sorted(committed)}"]
        return [d for k in committed for d in _compare(f"{where}[{k!r}]", fresh[k], committed[k], atol, rtol)]
    return [f"{where}: {type(fresh).__name__} {fresh!r:.80} != {type(committed).__name__} {committed!r:.80}"]
