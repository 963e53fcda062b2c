"""Chapter 5 (EWC): a fair comparison of penalties on two tasks, selection on a
validation split, evaluation over seeds, paired differences with t-intervals
(:mod:`ewcbook.stats`), and verdict sentences built from the numbers.

The protocol of chapter 5, in four steps:

1. :func:`seed_runs` trains task A once per seed, computes its Fishers, and
   trains task B once per (method, λ), side by side
   (:func:`ewcbook.copies.train_copies`), with one shared output head or with
   one head per task, plus joint training on both tasks as the reference.
2. :func:`select` picks each method's λ from runs on validation splits
   (:func:`ewcbook.data.validation_split`): the test set is never seen.
3. :func:`seed_runs` again, on the full training sets, at the chosen λ only,
   over more seeds; :func:`intervals` gives means with 95 % t-intervals.
4. :func:`difference` compares two methods seed by seed (the copies of
   one seed start from the same weights after A), and :func:`sentence` says
   in words what its interval allows one to say.

Every method's importance is normalised to mean 1 over the weights, so that
λ is the *total* stiffness of the anchor in the same units for every method
(the L2 anchor's importance is already 1 everywhere) and one grid of λ serves
all. For EWC this is the usual penalty λ_raw/2 Σ F (θ − θ*)² with
λ_raw = λ / mean(F).

    rows = seed_runs([task_a, task_b], seeds=[0, 1], epochs=(6, 6),
                     one_head=[("none", 0.0), ("l2", 0.3), ("ewc", 0.3)])
    difference(rows, "one head", "ewc", "l2")
"""

from __future__ import annotations

import dataclasses

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from ewcbook import stats
from ewcbook.chapters import MARGIN, noise_band, open_reason, style, weakest_within_noise, within_noise
from ewcbook.chapters.processes import process_map
from ewcbook.checks import one_of
from ewcbook.copies import copy_accuracies, stack_network, stacked_layers, train_copies
from ewcbook.data import Task, joint
from ewcbook.evaluation import evaluate_tasks
from ewcbook.fisher import diagonal_fisher
from ewcbook.models import mlp
from ewcbook.training import ContinualModel, fit_task
from ewcbook.utils import set_seed

#: The methods of the comparison (colours from :mod:`ewcbook.chapters.style`).
METHODS = ("none", "l2", "ewc", "ewc_exact", "ewc_empirical", "ewc_eps", "joint")
#: Methods with a strength λ, and the Fisher estimator each one uses.
ESTIMATOR = {"ewc": "sampled", "ewc_exact": "exact", "ewc_empirical": "empirical", "ewc_eps": "sampled"}
PENALISED = ("l2", *ESTIMATOR)
#: How a method is named inside a sentence.
IN_SENTENCE = {"none": "no penalty", "l2": "the L2 anchor", "joint": "joint training"}
SETTINGS = ("one head", "two heads")


def color(method: str) -> str:
    """The colour of ``method`` (one of :data:`METHODS`), the book's colour for it."""
    return style.color(one_of(method, "method", METHODS))


def label(method: str) -> str:
    """The display name of ``method``: the book's, with the estimator named for EWC's sampled Fisher,
    since this chapter compares three estimators."""
    one_of(method, "method", METHODS)
    return "EWC (sampled Fisher)" if method == "ewc" else style.label(method)


# ---------------------------------------------------------------------------------------------
# importances


def flat(weights) -> np.ndarray:
    """All entries of a list of arrays (or tensors) in one vector."""
    return np.concatenate([np.asarray(w).ravel() for w in weights])


def importances(fishers: dict) -> dict:
    """The importance of every penalised method, normalised to mean 1 over the weights.

    Args:
        fishers: ``{"sampled": F, "exact": F, "empirical": F}``, each a list of
            arrays, one per trainable variable (``diagonal_fisher``'s output).

    Returns:
        ``{method: importance}``: ``None`` for ``"l2"`` (1 everywhere), F / mean(F)
        for the EWC variants, and for ``"ewc_eps"`` (F + ε) / mean(F + ε) with
        ε = mean(F), which is the average of the EWC and L2 importances: half
        of the stiffness spread by the Fisher, half uniform.
    """
    missing = {"sampled", "exact", "empirical"} - set(fishers)
    if missing:
        raise ValueError(f"fishers must hold the estimators {sorted(missing)}")
    out = {"l2": None}
    for method, estimator in ESTIMATOR.items():
        f = [np.asarray(x, np.float32) for x in fishers[estimator]]
        mean = float(flat(f).mean())
        if not mean > 0:
            raise ValueError(f"the {estimator} Fisher is zero everywhere")
        if method == "ewc_eps":
            out[method] = [(x + mean) / (2 * mean) for x in f]  # ε = mean(F): (F + ε) / mean(F + ε)
        else:
            out[method] = [x / mean for x in f]
    return out


# ---------------------------------------------------------------------------------------------
# training


def _train_a(task_a: Task, seed: int, epochs: int) -> ContinualModel:
    set_seed(seed)
    learner = ContinualModel(mlp(task_a.num_classes))
    fit_task(learner, task_a, epochs=epochs, seed=seed)
    return learner


def task_a_fishers(network: keras.Model, task_a: Task, seed: int) -> dict:
    """The sampled, exact and empirical diagonal Fishers of ``network`` on task A's training images."""
    data = (task_a.inputs("train"), task_a.y_train)
    return {
        est: [f.numpy() for f in diagonal_fisher(network, data, estimator=est, seed=seed)]
        for est in ("sampled", "exact", "empirical")
    }


def _entries(runs, imp, mask=None):
    entries = []
    for method, strength in runs:
        if method == "none":
            entries.append((0.0, None if mask is None else mask))
            continue
        w = imp[method]
        if mask is not None:  # two heads: task A's importance on the trunk, head B free
            w = [m if k >= len(mask) - 2 else (m if w is None else w[k]) for k, m in enumerate(mask)]
        entries.append((float(strength), w))
    return entries


def one_head_runs(network, tasks, runs, imp, *, epochs: int, seed: int, read=None) -> np.ndarray:
    """Accuracies ``(runs, 2)`` on ``tasks`` after training task B from ``network`` once per
    ``(method, λ)`` of ``runs``, side by side, the output layer shared by both tasks; with ``read``
    (two more tasks, e.g. the test sets), ``(runs, 4)``: the same copies read on those too."""
    stacked = train_copies(network, tasks[1], _entries(runs, imp), epochs=epochs, seed=seed)
    return np.concatenate([copy_accuracies(stacked, t) for t in [tasks, *([read] if read else [])]], axis=1)


def two_head_runs(network, tasks, runs, imp, *, epochs: int, seed: int, read=None) -> np.ndarray:
    """As :func:`one_head_runs`, with one output layer per task.

    Task B trains the shared hidden layer and a fresh head B (Glorot-initialised
    from ``seed``); head A stays as task A left it. Task A is read from head A,
    task B from head B. The penalty anchors the hidden layer (head A is not
    trained, so anchoring it adds nothing); head B is free.
    """
    head_b = keras.initializers.GlorotUniform(seed=seed)(network.layers[-1].kernel.shape).numpy()
    weights = network.get_weights()
    net_b = mlp(tasks[1].num_classes)
    net_b.set_weights(weights[:-2] + [head_b, np.zeros_like(weights[-1])])
    mask = [np.ones(w.shape, np.float32) for w in weights[:-2]] + [np.zeros(w.shape, np.float32) for w in weights[-2:]]
    stacked_b = train_copies(net_b, tasks[1], _entries(runs, imp, mask), epochs=epochs, seed=seed)
    stacked_a = stack_network(network, len(runs))  # head A, under each copy's trunk
    for layer_a, layer_b in zip(stacked_layers(stacked_a)[:-1], stacked_layers(stacked_b)[:-1]):
        layer_a.kernel.assign(layer_b.kernel)
        layer_a.bias.assign(layer_b.bias)
    return np.concatenate(
        [
            copy_accuracies(stacked, [task])
            for pair in [tasks, *([read] if read else [])]
            for stacked, task in zip((stacked_a, stacked_b), pair)
        ],
        axis=1,
    )


class TwoHeadLoss(ContinualModel):
    """Labels 0..2k-1: label y < k is read at head A (logits[:k]), y ≥ k at head B."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        k = tf.shape(y_pred)[-1] // 2
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        at_b = y >= k
        logits = tf.where(at_b[:, None], y_pred[:, k:], y_pred[:, :k])
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(at_b, y - k, y), logits=logits)
        return tf.reduce_mean(ce)


def joint_run(tasks, *, two_heads: bool, epochs: int, seed: int) -> np.ndarray:
    """Accuracies ``(2,)`` of one network trained on both tasks at once (the reference).

    With ``two_heads``, the output layer has one head per task and each image's
    loss is taken at its own task's head.
    """
    task_a, task_b = tasks
    k = task_a.num_classes
    both = joint(tasks, "AB", separate_labels=two_heads)  # two heads: B's labels follow A's, k to 2k - 1
    set_seed(seed)
    learner = (TwoHeadLoss if two_heads else ContinualModel)(mlp(both.num_classes))
    fit_task(learner, both, epochs=epochs, seed=seed)
    if not two_heads:
        return np.asarray(evaluate_tasks(learner, tasks))
    weights = learner.network.get_weights()
    accs = []
    for task, cut in ((task_a, slice(0, k)), (task_b, slice(k, 2 * k))):
        head = mlp(k)
        head.set_weights(weights[:-2] + [weights[-2][:, cut], weights[-1][cut]])
        accs.append(evaluate_tasks(ContinualModel(head), [task])[0])
    return np.asarray(accs)


def seed_runs(tasks, *, seeds, epochs, one_head=(), two_heads=(), joint=False, read=None,
              workers: int = 1) -> list[dict]:
    """Every run of the protocol, for every seed.

    Args:
        tasks: ``[task_a, task_b]`` (validation splits for selection, the
            tasks themselves for evaluation).
        seeds: one run of everything per seed: task A's initialisation and
            shuffles (seed), task B's shuffles (seed + 1), the sampled Fisher.
        epochs: ``(epochs_a, epochs_b)``; joint training gets ``epochs_a``
            passes over the union of both tasks.
        one_head, two_heads: ``(method, λ)`` pairs to train in each setting
            (``("none", 0.0)`` for no penalty).
        joint: also train the joint reference in each setting that has runs.
        read: optionally two more tasks (the test sets, for reading only) on
            which the same networks are also read.
        workers: processes to run the seeds in
            (:func:`ewcbook.chapters.processes.process_map`; the same rows).

    Returns:
        One dict per run: ``setting``, ``method``, ``strength``, ``seed``,
        ``acc_A``, ``acc_B``, ``mean`` (of the two); with ``read``, also
        ``read_A``, ``read_B`` and ``read_mean`` (not for joint training).
    """
    one_head, two_heads = list(one_head), list(two_heads)
    for method, _ in one_head + two_heads:
        one_of(method, "method", METHODS)
    jobs = [(tasks, seed, epochs, one_head, two_heads, joint, read) for seed in seeds]
    return [row for rows in process_map(_seed_rows, jobs, workers) for row in rows]


def _seed_rows(job) -> list[dict]:
    """The rows of :func:`seed_runs` for one seed."""
    (task_a, task_b), seed, (epochs_a, epochs_b), one_head, two_heads, joint, read = job
    tasks, rows = [task_a, task_b], []

    def add(setting, method, strength, accs):
        acc = [float(a) for a in accs]
        row = dict(setting=setting, method=method, strength=float(strength), seed=int(seed))
        row.update(acc_A=acc[0], acc_B=acc[1], mean=(acc[0] + acc[1]) / 2)
        if len(acc) == 4:
            row.update(read_A=acc[2], read_B=acc[3], read_mean=(acc[2] + acc[3]) / 2)
        rows.append(row)

    learner = _train_a(task_a, seed, epochs_a)
    imp = importances(task_a_fishers(learner.network, task_a, seed))
    for setting, runs, train in (("one head", one_head, one_head_runs), ("two heads", two_heads, two_head_runs)):
        if not runs:
            continue
        accs = train(learner.network, tasks, runs, imp, epochs=epochs_b, seed=seed + 1, read=read)
        for (method, strength), acc in zip(runs, accs):
            add(setting, method, strength, acc)
        if joint:
            add(setting, "joint", 0.0, joint_run(tasks, two_heads=setting == "two heads", epochs=epochs_a, seed=seed))
    return rows


# ---------------------------------------------------------------------------------------------
# statistics


def _rows(rows, setting, method, strength=None):
    out = [
        r
        for r in rows
        if r["setting"] == setting and r["method"] == method and (strength is None or r["strength"] == strength)
    ]
    if not out:
        raise ValueError(f"no runs of {method!r} in setting {setting!r}")
    return out


def intervals(rows, setting: str, method: str) -> dict:
    """``{"acc_A"|"acc_B"|"mean": (mean, low, high)}`` over the seeds, with 95 % t-intervals."""
    group = _rows(rows, setting, method)
    return {key: stats.mean_interval([r[key] for r in group]) for key in ("acc_A", "acc_B", "mean")}


@dataclasses.dataclass(frozen=True)
class Difference:
    """``method`` minus ``baseline``, seed by seed: mean, 95 % t-interval, number of seeds."""

    method: str
    baseline: str
    diff: float
    low: float
    high: float
    seeds: int

    @property
    def kind(self) -> str:
        """``"better"`` (the interval is above 0 by more than :data:`~ewcbook.chapters.MARGIN`), ``"worse"``
        (below 0 by more than it) or ``"inconclusive"`` (the book's rule for a verdict that holds on another CPU)."""
        return stats.verdict((self.diff, self.low, self.high), "better", "worse", "inconclusive", margin=MARGIN)


def difference(rows, setting: str, method: str, baseline: str, key: str = "mean") -> Difference:
    """``method`` minus ``baseline`` on ``key``, paired by seed (the runs of a seed share task A)."""
    a = {r["seed"]: r[key] for r in _rows(rows, setting, method)}
    b = {r["seed"]: r[key] for r in _rows(rows, setting, baseline)}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise ValueError(f"{method!r} and {baseline!r} share {len(seeds)} seeds; a paired interval needs 2")
    mean, low, high = stats.paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return Difference(method, baseline, mean, low, high, len(seeds))


def sentence(d: Difference, names=None) -> str:
    """A sentence saying what ``d``'s interval allows: who wins and by how much, or that it is open.

    ``names`` maps methods to the words used (default: :data:`IN_SENTENCE`, else :func:`label`).
    """
    names = {**IN_SENTENCE, **(names or {})}
    name, other = (names.get(m, label(m)) for m in (d.method, d.baseline))
    short = {m: _short(m) for m in (d.method, d.baseline)}
    if d.kind == "worse":  # said as the baseline's win: the interval of baseline − method
        return (
            f"{other} beats {name} by {-d.diff:.3f} (95 % interval of {short[d.baseline]} − {short[d.method]}: "
            f"{-d.high:+.3f} to {-d.low:+.3f}, {d.seeds} seeds)"
        )
    span = f"95 % interval of {short[d.method]} − {short[d.baseline]}: {d.low:+.3f} to {d.high:+.3f}, {d.seeds} seeds"
    if d.kind == "better":
        return f"{name} beats {other} by {d.diff:.3f} ({span})"
    return (
        f"{name} and {other} are not resolved: {short[d.method]} − {short[d.baseline]} is {d.diff:+.3f}, 95 % "
        f"interval {d.low:+.3f} to {d.high:+.3f} ({d.seeds} seeds); {open_reason(d.low, d.high)}"
    )


def _short(method: str) -> str:
    """A method's name inside a difference, e.g. "L2" or "EWC (sampled)"."""
    return {"none": "none", "l2": "L2", "joint": "joint"}.get(method, label(method).replace(" Fisher)", ")"))


# ---------------------------------------------------------------------------------------------
# selection


def select(rows, setting: str, method: str, grid, n_examples: int) -> tuple[float, bool]:
    """(λ, interior): the weakest λ of ``grid`` that the validation cannot tell apart from the best
    (:func:`ewcbook.chapters.weakest_within_noise`; the score of a λ is the mean over seeds of the mean of both
    validation accuracies, ``n_examples`` validation images behind it in all), and whether it lies strictly
    inside the grid."""
    grid = sorted(float(g) for g in grid)
    scores = _scores(rows, setting, method, grid)
    best, _ = weakest_within_noise(scores, {lam: lam for lam in grid}, n_examples)
    return best, grid[0] < best < grid[-1]


def _scores(rows, setting, method, grid) -> dict:
    return {lam: float(np.mean([r["mean"] for r in _rows(rows, setting, method, lam)])) for lam in grid}


def choice_sentence(rows, setting: str, methods, grid, n_examples: int) -> str:
    """Says, for each method, which λ of ``grid`` the validation cannot tell apart from its best
    (:func:`ewcbook.chapters.within_noise`), of which :func:`select` keeps the weakest."""
    grid = sorted(float(g) for g in grid)
    parts, tops = [], []
    for m in methods:
        scores = _scores(rows, setting, m, grid)
        best, *others = within_noise(scores, n_examples)
        close = sorted([best, *others])
        lams = f"λ = {close[0]:g} alone" if len(close) == 1 else "λ ∈ {" + ", ".join(f"{lam:g}" for lam in close) + "}"
        parts.append(f"{IN_SENTENCE.get(m, label(m))}, {lams} (best {scores[best]:.3f} at λ = {best:g})")
        tops.append(scores[best])
    band = noise_band(max(tops), n_examples)
    return (
        f"Within the noise of the best (about {band:.3f}: one standard error of an accuracy on "
        f"{n_examples:,} validation images, plus the margin of {MARGIN:g}), the validation cannot tell apart: "
        + "; ".join(parts)
        + ". Each method keeps the weakest of its λ."
    )


def curve(rows, setting: str, method: str, key: str = "mean"):
    """(strengths, mean over seeds of ``key``) along the grid, strengths in increasing order."""
    group = _rows(rows, setting, method)
    lams = sorted({r["strength"] for r in group})
    return np.array(lams), np.array([np.mean([r[key] for r in group if r["strength"] == lam]) for lam in lams])


# ---------------------------------------------------------------------------------------------
# tables and figures


def table(rows, setting: str, methods, strengths=None) -> str:
    """One line per method: its λ and test accuracies over seeds, each as the mean ± the
    half-width of its 95 % t-interval (the interval is symmetric), in 74 characters."""
    head = ("acc A", "acc B", "mean of A, B")
    lines = [(f"{'method':22s} {'λ':>6s}  " + "  ".join(f"{h:^13s}" for h in head)).rstrip()]
    for m in methods:
        s = intervals(rows, setting, m)
        lam = (strengths or {}).get(m)
        cells = "  ".join(f"{v[0]:.3f} ± {(v[2] - v[1]) / 2:.3f}" for v in (s["acc_A"], s["acc_B"], s["mean"]))
        lines.append(f"{label(m):22s} {'-' if lam is None else format(lam, 'g'):>6s}  {cells}")
    return "\n".join(lines)


def selection_figure(rows, setting: str, methods, chosen: dict, seeds: int):
    """Validation accuracy along the grid: the frontier (A against B, top) and the
    selection criterion (bottom), stacked so that both read at the page's width."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 8.6), height_ratios=(1.15, 1.0))
    none = {k: np.mean([r[k] for r in _rows(rows, setting, "none")]) for k in ("acc_A", "acc_B", "mean")}
    top.plot(none["acc_A"], none["acc_B"], "s", color=color("none"), ms=8, label=label("none"))
    bottom.axhline(none["mean"], color=color("none"), ls="--", lw=1, label=label("none"))
    for m in methods:
        lams, acc_a = curve(rows, setting, m, "acc_A")
        _, acc_b = curve(rows, setting, m, "acc_B")
        _, mean = curve(rows, setting, m, "mean")
        pick = int(np.flatnonzero(lams == chosen[m])[0])
        top.plot(acc_a, acc_b, "o-", color=color(m), ms=3, lw=1.2, label=f"{label(m)}, chosen λ = {chosen[m]:g}")
        top.plot(acc_a[pick], acc_b[pick], "o", color=color(m), ms=10, mfc="none", mew=2)
        bottom.plot(lams, mean, "o-", color=color(m), ms=3, lw=1.2)
        bottom.plot(lams[pick], mean[pick], "o", color=color(m), ms=10, mfc="none", mew=2)
    top.set(
        xlabel="validation accuracy on task A",
        ylabel="validation accuracy on task B",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title="Frontiers: A against B along the grid of λ",
    )
    bottom.set(
        xscale="log",
        xlabel="λ (total stiffness; importance normalised to mean 1)",
        ylabel="mean of the validation accuracies",
        title="Selection criterion along the grid",
    )
    top.legend(loc="lower left")
    bottom.legend(loc="lower left")
    fig.suptitle(
        f"{setting.capitalize()}: validation accuracy, mean over {seeds} selection seeds\n(circles: the chosen λ)"
    )
    fig.tight_layout()
    return fig


def differences_figure(differences: dict):
    """Paired differences to a baseline with their 95 % intervals, one panel per
    setting, stacked so that the labels read at the page's width.

    Args:
        differences: ``{setting: [Difference, ...]}``.
    """
    counts = [len(diffs) for diffs in differences.values()]
    fig, axes = plt.subplots(
        len(differences), 1, figsize=(6.4, 1.6 + 0.55 * sum(counts)), height_ratios=counts, squeeze=False
    )
    for ax, (setting, diffs) in zip(axes[:, 0], differences.items()):
        for i, d in enumerate(diffs):
            ax.errorbar(
                d.diff, i, xerr=[[d.diff - d.low], [d.high - d.diff]], fmt="o", color=color(d.method), capsize=3, ms=6
            )
        ax.axvline(0, color="0.3", lw=1)
        ax.set_yticks(range(len(diffs)), [f"{label(d.method)} − {label(d.baseline)}" for d in diffs])
        ax.set_ylim(-0.6, len(diffs) - 0.4)
        ax.invert_yaxis()
        ax.set(xlabel="difference in mean test accuracy of A and B", title=setting)
    fig.suptitle("Paired differences at the chosen λ:\nmean and 95 % t-interval over seeds")
    fig.tight_layout()
    return fig


def useful_range(rows, setting: str, method: str, *, gain: float = 0.05, floor: float = 0.5) -> dict:
    """Where along the grid a penalty starts and stops mattering (means over seeds).

    Returns:
        ``protects``: the smallest λ whose accuracy on A exceeds no penalty's
        by more than ``gain`` (None if none does); ``collapses``: the smallest
        λ whose accuracy on B is below ``floor`` (None if none is);
        ``lowest_b``: the lowest accuracy on B along the grid.
    """
    none_a = np.mean([r["acc_A"] for r in _rows(rows, setting, "none")])
    lams, acc_a = curve(rows, setting, method, "acc_A")
    _, acc_b = curve(rows, setting, method, "acc_B")
    protects = [lam for lam, a in zip(lams, acc_a) if a > none_a + gain]
    collapses = [lam for lam, b in zip(lams, acc_b) if b < floor]
    return {
        "protects": float(protects[0]) if protects else None,
        "collapses": float(collapses[0]) if collapses else None,
        "lowest_b": float(acc_b.min()),
    }


def range_sentence(rows, setting: str, method: str, *, gain: float = 0.05, floor: float = 0.5) -> str:
    """:func:`useful_range` in words, e.g. "for the L2 anchor, from λ = 0.01 on, and B falls below 0.5 from λ = 3"."""
    r = useful_range(rows, setting, method, gain=gain, floor=floor)
    start = "at no λ of the grid" if r["protects"] is None else f"from λ = {r['protects']:g} on"
    stop = (
        f"B falls below {floor:g} from λ = {r['collapses']:g}"
        if r["collapses"] is not None
        else f"B never falls below {floor:g} on the grid (its lowest: {r['lowest_b']:.3f})"
    )
    return f"for {IN_SENTENCE.get(method, label(method))}, {start}, and {stop}"


def flat_sentence(rows, setting: str, methods) -> str:
    """Names the methods whose selection criterion the validation seeds cannot resolve.

    A method's curve is *flat* when the mean of both validation accuracies
    varies along the whole grid by less than two standard errors of its best
    point over the selection seeds: its chosen λ is then one of many that the
    data cannot tell apart, and another run (other seeds, another CPU) may pick
    another.
    """
    flat = []
    for m in methods:
        lams, means = curve(rows, setting, m)
        best = [r["mean"] for r in _rows(rows, setting, m, float(lams[int(np.argmax(means))]))]
        error = float(np.std(best, ddof=1) / np.sqrt(len(best))) if len(best) > 1 else 0.0
        if means.max() - means.min() < 2 * error:
            flat.append(
                f"{IN_SENTENCE.get(m, label(m))} (the criterion spans {means.max() - means.min():.3f} "
                f"over the grid, one standard error is {error:.3f})"
            )
    if not flat:
        return "Every method's criterion varies along the grid by more than two standard errors of its best point."
    which = flat[0] if len(flat) == 1 else "; ".join(flat[:-1]) + "; and " + flat[-1]
    return (
        f"The selection cannot resolve every curve. Flat within noise: {which}. For "
        f"{'this method' if len(flat) == 1 else 'these methods'} the chosen λ is one of many that the "
        "validation data cannot tell apart, and another run may pick another."
    )


def edge_sentence(chosen: dict) -> str:
    """Says which chosen λ lie at an end of the grid (``chosen``: ``{method: (λ, interior)}``)."""
    edge = [f"{IN_SENTENCE.get(m, label(m))} (λ = {lam:g})" for m, (lam, interior) in chosen.items() if not interior]
    if not edge:
        return "every chosen λ lies inside the grid, with a grid point on either side"
    which = edge[0] if len(edge) == 1 else ", ".join(edge[:-1]) + " and " + edge[-1]
    return (
        f"the chosen λ lies at an end of the grid for {which}: the best λ may lie beyond the grid, "
        "so these choices are flagged"
    )


# ---------------------------------------------------------------------------------------------
# verdicts on the whole grid (validation), and figures of the spread


def best_point(rows, setting: str, method: str, key: str = "mean") -> tuple[float, float]:
    """(λ, score): the grid point with the highest mean over seeds of ``key``, and that mean."""
    lams, means = curve(rows, setting, method, key)
    k = int(np.argmax(means))
    return float(lams[k]), float(means[k])


def best_difference(rows, setting: str, method: str, other: str) -> Difference:
    """``method`` at its best λ minus ``other`` at its best λ (validation criterion), paired by seed."""
    values = []
    for m in (method, other):
        lam, _ = best_point(rows, setting, m)
        values.append({r["seed"]: r["mean"] for r in _rows(rows, setting, m, lam)})
    seeds = sorted(set(values[0]) & set(values[1]))
    if len(seeds) < 2:
        raise ValueError(f"{method!r} and {other!r} share {len(seeds)} seeds; a paired interval needs 2")
    mean, low, high = stats.paired_difference([values[0][s] for s in seeds], [values[1][s] for s in seeds])
    return Difference(method, other, mean, low, high, len(seeds))


def dominance_sentence(rows, setting: str, methods, reference: str = "l2") -> str:
    """Does any method reach ``reference``'s best validation point anywhere on the grid?

    Each method's best grid point is compared with the reference's, paired over
    the selection seeds (a best point is a maximum over the grid, so both sides
    carry the same optimism). The verdict comes first, then each comparison,
    its interval in the direction the verdict speaks of.
    """
    ref = IN_SENTENCE.get(reference, label(reference))
    lam_ref, best_ref = best_point(rows, setting, reference)
    below, open_, above = [], [], []
    for m in methods:
        if m == reference:
            continue
        d = best_difference(rows, setting, reference, m)
        lam, best = best_point(rows, setting, m)
        name, pair = IN_SENTENCE.get(m, label(m)), (_short(reference), _short(m))
        if d.kind == "better":
            below.append(
                f"{name} {best:.3f} at λ = {lam:g} ({pair[0]} − {pair[1]}: {d.diff:+.3f}, "
                f"95 % interval {d.low:+.3f} to {d.high:+.3f})"
            )
        elif d.kind == "worse":
            above.append(
                f"{name} {best:.3f} at λ = {lam:g} ({pair[1]} − {pair[0]}: {-d.diff:+.3f}, "
                f"95 % interval {-d.high:+.3f} to {-d.low:+.3f})"
            )
        else:
            open_.append(
                f"{name} {best:.3f} at λ = {lam:g} ({pair[0]} − {pair[1]}: {d.diff:+.3f}, "
                f"95 % interval {d.low:+.3f} to {d.high:+.3f}; {open_reason(d.low, d.high)})"
            )
    seeds = len(_rows(rows, setting, reference, lam_ref))
    where = f"{ref}'s best point ({best_ref:.3f} at λ = {lam_ref:g}; {seeds} selection seeds)"
    if above:
        head = f"somewhere on the grid, some methods go above {where}"
    elif open_:
        head = (
            f"no other method is shown to go above {where} anywhere on the grid, and not every comparison is resolved"
        )
    else:
        head = f"no other method reaches {where} anywhere on the grid"
    parts = [head]
    for what, group in (("below it", below), ("not resolved", open_), ("above it", above)):
        if group:
            parts.append(f"{what}: " + "; ".join(group))
    return parts[0] + ". " + ". ".join(p[0].upper() + p[1:] for p in parts[1:])


def strong_end_sentence(rows, setting: str, methods, chance: float) -> str:
    """Validation accuracy on B at the grid's strongest λ, method by method, against chance."""
    parts = []
    for m in methods:
        lams, acc_b = curve(rows, setting, m, "acc_B")
        b = float(acc_b[-1])
        what = "still learns part of task B" if b > chance + 0.1 else "learns next to nothing of task B"
        parts.append(f"{IN_SENTENCE.get(m, label(m))} {what} ({b:.3f})")
    return f"at λ = {float(lams[-1]):g}, on validation images (chance is {chance:g}): " + "; ".join(parts)


def estimator_sentence(diffs, chosen: dict) -> str:
    """The test differences between Fisher estimators (each at its own chosen λ) in words."""
    lams = ", ".join(
        f"{_short(m)} λ = {chosen[m]:g}" for m in dict.fromkeys(m for d in diffs for m in (d.method, d.baseline))
    )
    said = "; ".join(sentence(d) for d in diffs)
    if all(d.kind == "inconclusive" for d in diffs):
        return (
            f"{said}. At their chosen λ ({lams}) the estimators are not resolved on the test set: "
            "their differences are selection noise"
        )
    return (
        f"{said}. These compare each estimator together with its chosen λ ({lams}), and the selection "
        "above may not resolve those choices"
    )


def spread_figure(rows, setting: str, methods):
    """Per-seed test accuracy on A and on B (a strip plot), one row per method, stacked panels."""
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 1.8 + 0.9 * len(methods)), sharey=True)
    rng = np.random.default_rng(0)
    for ax, key, task in zip(axes, ("acc_A", "acc_B"), "AB"):
        for i, m in enumerate(methods):
            values = [r[key] for r in _rows(rows, setting, m)]
            ax.plot(values, i + rng.uniform(-0.15, 0.15, len(values)), "o", color=color(m), ms=5, alpha=0.8)
            ax.plot([np.mean(values)] * 2, [i - 0.3, i + 0.3], color=color(m), lw=2)
        ax.set_yticks(range(len(methods)), [label(m) for m in methods])
        ax.invert_yaxis()
        ax.set(xlabel=f"test accuracy on task {task}", xlim=(-0.02, 1.02))
    fig.suptitle(f"{setting.capitalize()}: one dot per evaluation seed (bar: the mean)")
    fig.tight_layout()
    return fig


def read_frontier_figure(rows, setting: str, methods, chosen: dict):
    """Test accuracy of the selection runs along the whole grid: for reading, never for choosing."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for m in methods:
        lams, acc_a = curve(rows, setting, m, "read_A")
        _, acc_b = curve(rows, setting, m, "read_B")
        pick = int(np.flatnonzero(lams == chosen[m])[0])
        ax.plot(acc_a, acc_b, "o-", color=color(m), ms=3, lw=1.2, label=label(m))
        ax.plot(acc_a[pick], acc_b[pick], "o", color=color(m), ms=10, mfc="none", mew=2)
        ax.annotate(f"{lams[-1]:g}", (acc_a[-1], acc_b[-1]), fontsize=9, color=color(m))
    ax.set(
        xlabel="test accuracy on task A",
        ylabel="test accuracy on task B",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title="Test set along the grid: for reading only,\nnot used for choosing (circles: λ chosen on validation)",
    )
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def ratio_text(ratio: float) -> str:
    """``actual / predicted`` in words: "909 times more" (or "2.5 times less" below 1)."""
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio!r}")
    return f"{ratio:,.0f} times more" if ratio >= 1 else f"{1 / ratio:.1f} times less"
