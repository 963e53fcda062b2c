"""Chapter 6 (beyond two tasks): many tasks, many seeds.

Runs every method over several seeds, the first task shared
(:func:`run_methods`, :class:`StartFrom`), trains the joint upper bound on
the union of tasks (:func:`run_joint`; both at once: :func:`run_table`), reads the accuracy matrices
(:func:`intransigence`, :func:`seen_curve`, :func:`metrics`), draws them in a
grid (:func:`matrix_grid`), and checks the memory claims: one merged
quadratic equals the sum of per-task penalties (:func:`merged_penalty_check`),
and what a training step costs as tasks accumulate (:func:`seconds_per_step`).
Intervals and verdicts come from :mod:`ewcbook.stats`.

    results = run_methods(lambda s: eb.permuted_mnist(10, seed=s), RUNS, seeds=(0, 1, 2), epochs=2)
    mean, low, high = eb.mean_interval([eb.average_accuracy(r.R) for r in results["ewc"]])
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from ewcbook.chapters import open_reason
from ewcbook.chapters.processes import process_map
from ewcbook.chapters.style import label
from ewcbook.checks import integer
from ewcbook.data import Task, check_tasks, joint, permuted_mnist, validation_split
from ewcbook.evaluation import average_accuracy, backward_transfer, evaluate_tasks, forgetting
from ewcbook.models import mlp
from ewcbook.protocol import Consolidation, SequenceResult, train_sequence
from ewcbook.state import load_state, save_state
from ewcbook.stats import Interval, mean_interval
from ewcbook.training import ContinualModel, fit_task
from ewcbook.utils import set_seed

# --- runs over seeds ------------------------------------------------------------------------


class StartFrom:
    """A ``fit`` for :func:`ewcbook.protocol.train_sequence` that does not train the
    first task again: it starts from ``first``, the result of that task trained alone.

    Every method trains the first task alike (there is no penalty yet), so
    several methods can share it: the learner gets a copy of ``first``'s
    weights and optimizer state, with the same result as training task 1
    again (tested bit for bit). Every other task is trained by
    :func:`ewcbook.training.fit_task`.

    Args:
        first: the :class:`ewcbook.protocol.SequenceResult` of one task trained
            with no penalty.
        task: that task (the same object the sequence starts with).
    """

    def __init__(self, first: SequenceResult, task: Task):
        if not isinstance(first, SequenceResult) or len(first.histories) != 1 or first.learner.penalties:
            raise ValueError("first must be the SequenceResult of one task trained with no penalty")
        self.first, self.task = first, task

    def __call__(self, learner: ContinualModel, task: Task, *, learning_rate: float = 1e-3, **settings):
        if task is not self.task:
            return fit_task(learner, task, learning_rate=learning_rate, **settings)
        source = self.first.learner
        rate, steps_per_execution = source.task_settings
        if rate != float(learning_rate):
            raise ValueError(f"first was trained with learning_rate {rate:g}, not {learning_rate:g}")
        learner.network.set_weights(source.network.get_weights())
        learner.compile_for_tasks(rate, steps_per_execution)
        if len(learner.optimizer.variables) != len(source.optimizer.variables):
            raise ValueError("first was trained with another network")
        for mine, theirs in zip(learner.optimizer.variables, source.optimizer.variables):
            mine.assign(theirs)
        return self.first.histories[0]


@dataclasses.dataclass(frozen=True)
class PermutedTasks:
    """``seed -> tasks`` for :func:`run_methods` and :func:`run_joint`: ``num_tasks``
    permuted-MNIST tasks of at most ``limit`` images per split, with ``val_size``
    the validation splits (:func:`ewcbook.data.validation_split`). Unlike a
    lambda it can be sent to worker processes."""

    num_tasks: int
    limit: int | None = None
    val_size: int | None = None

    def __call__(self, seed: int) -> list[Task]:
        tasks = permuted_mnist(self.num_tasks, seed=seed, limit=self.limit)
        return tasks if self.val_size is None else [validation_split(t, self.val_size) for t in tasks]


def run_methods(make_tasks, runs: dict, seeds, *, hidden=(400, 400), fisher_samples=None, workers: int = 1,
                **settings) -> dict:
    """Every run of ``runs`` on the tasks of every seed, paired by seed.

    Args:
        make_tasks: ``seed -> list of tasks`` (e.g. :class:`PermutedTasks`;
            picklable when ``workers`` > 1).
        runs: ``{name: {"method": ..., "strength": ..., "gamma": ...}}``, the
            fields of a :class:`ewcbook.protocol.Consolidation`.
        seeds: ints; for each, every run starts from the same initial weights
            (:func:`ewcbook.utils.set_seed` before building the network) and
            sees the same batches.
        hidden: hidden widths of :func:`ewcbook.models.mlp` (10 classes).
        fisher_samples: the Fisher of every EWC run from this many examples.
        workers: processes to run the seeds in
            (:func:`ewcbook.chapters.processes.process_map`; a seed's runs
            are cut into groups, each training task 1 itself, when that keeps
            every worker busy to the end); each worker's
            trained learners come back through ``save_weights`` and
            :func:`ewcbook.state.save_state` (the same numbers, tested), without
            their training histories.
        **settings: passed to :func:`ewcbook.protocol.train_sequence`
            (epochs, batch_size, learning_rate, reset_optimizer, evaluate_unseen...).

    Task 1 is trained once per seed and shared (:class:`StartFrom`).
    A run's ``seconds`` leave that shared task out.

    Returns:
        ``{name: [SequenceResult, one per seed]}``.
    """
    return _run(make_tasks, runs, seeds, None, hidden, fisher_samples, workers, settings)[0]


def run_table(make_tasks, runs: dict, seeds, *, joint: dict, hidden=(400, 400), fisher_samples=None,
              workers: int = 1, **settings) -> tuple[dict, list[JointResult]]:
    """:func:`run_methods` and :func:`run_joint` (with the settings ``joint``, e.g.
    ``dict(epochs=2, batch_size=128)``) in one go: ``(results, joint_results)``,
    the same numbers as the two calls. With ``workers`` > 1 both go to one set
    of processes, the short joint runs last, so that they fill the time a worker
    would otherwise wait for the other's last sequence."""
    if not isinstance(joint, dict):
        raise TypeError(f"joint must be a dict of train_joint settings, got {type(joint).__name__}")
    return _run(make_tasks, runs, seeds, joint, hidden, fisher_samples, workers, settings)


def _run(make_tasks, runs, seeds, joint, hidden, fisher_samples, workers, settings):
    seeds, workers = _check_seeds(seeds), integer(workers, "workers", minimum=1)
    for run in runs.values():
        Consolidation(**run, fisher_samples=fisher_samples)  # bad fields fail here, not in a worker
    joint_jobs = [] if joint is None else [(make_tasks, seed, hidden, joint, workers > 1) for seed in seeds]
    if workers == 1:
        per_seed = [_seed_runs((make_tasks, runs, seed, hidden, fisher_samples, settings, None)) for seed in seeds]
        joint_results = [_joint_run(job) for job in joint_jobs]
    else:
        chunks = _chunks(list(runs), len(seeds), workers) if runs else []
        with tempfile.TemporaryDirectory() as folder:
            jobs = [(make_tasks, {name: runs[name] for name in chunk}, seed, hidden, fisher_samples, settings, folder)
                    for chunk in chunks for seed in seeds]  # the larger groups first: no long job left for last
            outs = process_map(_job, [("runs", job) for job in jobs] + [("joint", job) for job in joint_jobs],
                               workers)
            per_seed = [{} for _ in seeds]
            for (_, _, seed, *_), out in zip(jobs, outs):
                per_seed[seeds.index(seed)].update(
                    {name: SequenceResult(R, seconds, _restored(folder, name, seed, hidden), [])
                     for name, (R, seconds) in out.items()})
            joint_results = outs[len(jobs):]
    return {name: [out[name] for out in per_seed] for name in runs}, joint_results


def _job(job):
    kind, payload = job
    return _seed_runs(payload) if kind == "runs" else _joint_run(payload)


def _chunks(names: list, num_seeds: int, workers: int) -> list[list]:
    """The runs of a seed cut into the fewest groups that make the jobs a multiple of ``workers``
    (no worker idle at the end); each group trains the shared task 1 itself."""
    count = next((c for c in range(1, len(names) + 1) if num_seeds * c % workers == 0), len(names))
    return [list(part) for part in np.array_split(np.array(names, dtype=object), count)]


def _seed_runs(job) -> dict:
    """The runs of one seed; with a folder (in a worker), their learners saved there and ``(R, seconds)`` returned."""
    make_tasks, runs, seed, hidden, fisher_samples, settings, folder = job
    methods = {name: Consolidation(**run, fisher_samples=fisher_samples) for name, run in runs.items()}
    first_settings = dict(settings)  # task 1 alone: a per-task list of epochs keeps its first entry
    if "epochs" in settings and not isinstance(settings["epochs"], int):
        first_settings["epochs"] = list(settings["epochs"])[:1]
    tasks = make_tasks(seed)
    set_seed(seed)  # every run of a seed trains task 1 alike (no penalty yet): train it once
    first = train_sequence(mlp(10, tuple(hidden)), tasks[:1], seed=seed, **first_settings)
    out = {}
    for name, method in methods.items():
        result = train_sequence(mlp(10, tuple(hidden)), tasks, method, seed=seed, fit=StartFrom(first, tasks[0]),
                                **settings)
        if folder is None:
            out[name] = result
            continue
        stem = pathlib.Path(folder) / f"{name}-{seed}"
        result.learner.network.save_weights(f"{stem}.weights.h5")
        if result.learner.penalties:
            save_state(f"{stem}.npz", result.learner.penalties)
        out[name] = (result.R, result.seconds)
    return out


def _restored(folder, name: str, seed: int, hidden) -> ContinualModel:
    """The learner :func:`_seed_runs` saved in a worker, rebuilt here: weights and penalties."""
    stem = pathlib.Path(folder) / f"{name}-{seed}"
    network = mlp(10, tuple(hidden))
    network.load_weights(f"{stem}.weights.h5")
    learner = ContinualModel(network)
    if pathlib.Path(f"{stem}.npz").exists():
        learner.penalties = load_state(f"{stem}.npz", learner)
    return learner


@dataclasses.dataclass
class JointResult:
    """What :func:`train_joint` measured: ``accuracies`` per task (test), ``seconds``, the ``learner``."""

    accuracies: np.ndarray
    seconds: float
    learner: ContinualModel | None


def train_joint(network: keras.Model, tasks, *, epochs: int, batch_size: int = 128,
                learning_rate: float = 1e-3, seed: int = 0) -> JointResult:
    """The upper bound: ``network`` trained on all ``tasks`` at once
    (:func:`ewcbook.data.joint`, each task through its own permutation; Adam,
    ``epochs`` passes over their union: as many steps as the whole sequence),
    then evaluated on each task's test set."""
    start = time.perf_counter()
    learner = ContinualModel(network)
    fit_task(learner, joint(check_tasks(tasks)), epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
             seed=seed)
    accuracies = evaluate_tasks(learner, tasks)
    return JointResult(accuracies, time.perf_counter() - start, learner)


def run_joint(make_tasks, seeds, *, hidden=(400, 400), workers: int = 1, **settings) -> list[JointResult]:
    """:func:`train_joint` for every seed (same initial weights as :func:`run_methods`),
    in ``workers`` processes (then without the learners: ``learner`` is ``None``)."""
    return _run(make_tasks, {}, seeds, settings, hidden, None, workers, {})[1]


def _joint_run(job) -> JointResult:
    make_tasks, seed, hidden, settings, light = job
    tasks = make_tasks(seed)
    set_seed(seed)
    result = train_joint(mlp(10, tuple(hidden)), tasks, seed=seed, **settings)
    return dataclasses.replace(result, learner=None) if light else result


# --- reading the accuracy matrix ------------------------------------------------------------


def not_resolved(subject: str, interval) -> str:
    """The verdict for a difference whose interval does not clear 0 by more than the book's margin
    (:data:`ewcbook.chapters.MARGIN`), with the power it had, in one wording
    (:func:`ewcbook.chapters.open_reason`) whether the interval contains 0 or not.

    Args:
        subject: what was compared, e.g. ``"online EWC against EWC"``.
        interval: ``(mean, low, high)`` of the difference.

    Returns:
        ``"<subject> is not resolved: the interval does not clear 0 by more than 0.005 (differences up to X
        allowed)"``, X the larger end in absolute value.
    """
    if not isinstance(subject, str) or not subject:
        raise TypeError(f"subject must be a non-empty str, got {subject!r}")
    _, low, high = Interval(*(float(x) for x in interval))
    return f"{subject} is not resolved: {open_reason(low, high)}"


def intransigence(R, reference) -> float:
    """Mean over tasks k of ``reference[k] − R[k, k]`` (Chaudhry et al. 2018):
    how much worse each task is learned, when it is learned, than by a
    reference model (here: joint training on all tasks, a common stand-in for
    the paper's joint training on tasks 1..k). Positive: the method cannot
    learn new tasks as well."""
    R, reference = np.asarray(R, dtype=float), np.asarray(reference, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or reference.shape != (len(R),):
        raise ValueError(f"R must be T x T and reference of length T, got {R.shape} and {reference.shape}")
    return float(np.mean(reference - R.diagonal()))


def seen_curve(R) -> np.ndarray:
    """Mean accuracy over the tasks seen so far, after each task: ``R[i, :i+1].mean()``."""
    R = np.asarray(R, dtype=float)
    return np.array([R[i, : i + 1].mean() for i in range(len(R))])


def metrics(results: dict, joint=None) -> dict:
    """Per run name: mean and 95 % interval over seeds of average accuracy,
    mean of the diagonal, forgetting, backward transfer and (with ``joint``,
    a list of :class:`JointResult` paired by seed) intransigence."""
    table = {}
    for name, runs in results.items():
        rows = {
            "average_accuracy": [average_accuracy(r.R) for r in runs],
            "diagonal": [float(np.mean(r.R.diagonal())) for r in runs],
            "forgetting": [forgetting(r.R) for r in runs],
            "bwt": [backward_transfer(r.R) for r in runs],
        }
        if joint is not None:
            rows["intransigence"] = [intransigence(r.R, j.accuracies) for r, j in zip(runs, joint)]
        table[name] = {key: mean_interval(values) for key, values in rows.items()}
        table[name]["values"] = rows["average_accuracy"]
    if joint is not None:
        values = [float(j.accuracies.mean()) for j in joint]
        table["joint"] = {"average_accuracy": mean_interval(values), "values": values}
    return table


def stored_floats(learner) -> int:
    """Numbers a learner keeps for its penalties: anchors plus importance (Fisher) arrays.

    ``learner`` is a :class:`ewcbook.training.ContinualModel` or a list of penalties.
    """
    penalties = learner.penalties if isinstance(learner, ContinualModel) else list(learner)
    total = 0
    for p in penalties:
        total += sum(int(np.prod(a.shape)) for a in p.anchors)
        total += sum(int(np.prod(w.shape)) for w in (p.importance or []))
    return total


# --- the memory claims, checked -------------------------------------------------------------


def merged_penalty_check(separate, merged, point) -> dict:
    """Value and gradient of one merged quadratic penalty against the sum of
    separate per-task penalties, at the weights ``point``.

    Args:
        separate: the per-task penalties (e.g. each loaded from the file saved
            after its task), all on one network.
        merged: the penalty that should equal their sum (e.g. the state saved
            after the last task, loaded), on the same network.
        point: the weights (``get_weights()`` order) at which both are compared;
            the network's weights are restored afterwards.

    Returns:
        ``{"value_separate", "value_merged", "value_rel_diff", "grad_rel_diff",
        "floats_separate", "floats_merged"}``: the relative differences are
        ``|a − b| / |a|`` of the values and ``max|g_a − g_b| / max|g_a|`` of
        the gradients.
    """
    separate = list(separate)
    if not separate:
        raise ValueError("separate must hold at least one penalty")
    variables = merged.variables
    if any([id(v) for v in p.variables] != [id(v) for v in variables] for p in separate):
        raise ValueError("separate and merged must be penalties of one network")
    saved = [v.numpy() for v in variables]
    try:
        for variable, value in zip(variables, point):
            variable.assign(value)
        with tf.GradientTape(persistent=True) as tape:
            value_separate = tf.add_n([p() for p in separate])
            value_merged = merged()
        g_sep = tape.gradient(value_separate, variables)
        g_mer = tape.gradient(value_merged, variables)
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in g_sep)
    grad_diff = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(g_sep, g_mer))
    vs, vm = float(value_separate), float(value_merged)
    return {
        "value_separate": vs,
        "value_merged": vm,
        "value_rel_diff": abs(vs - vm) / abs(vs),
        "grad_rel_diff": grad_diff / scale,
        "floats_separate": stored_floats(separate),
        "floats_merged": stored_floats([merged]),
    }


def seconds_per_step(learner: ContinualModel, task: Task, penalties, *, batch_size: int = 128,
                     steps: int = 64, repeats: int = 3) -> float:
    """Wall seconds of one training step of ``learner`` on ``task`` with
    ``penalties`` in place: the fastest of ``repeats`` epochs of at most
    ``steps`` steps (the least disturbed by other jobs), after one epoch that
    traces. ``learner``'s weights and penalties are restored afterwards."""
    saved_weights, saved_penalties = learner.network.get_weights(), learner.penalties
    learner.penalties = penalties
    learner.compile_for_tasks(1e-3, steps_per_execution=8)
    limit = min(len(task.y_train), batch_size * steps)
    data = task.dataset("train", batch_size=batch_size, limit=limit)
    try:
        learner.fit(data, epochs=1, verbose=0, shuffle=False)  # trace
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            learner.fit(data, epochs=1, verbose=0, shuffle=False)
            times.append(time.perf_counter() - start)
    finally:
        learner.network.set_weights(saved_weights)
        learner.penalties = saved_penalties
    return float(min(times)) / -(-limit // batch_size)


# --- figures --------------------------------------------------------------------------------


def matrix_grid(matrices: dict, *, columns: int = 3, title: str | None = None, names=None):
    """The accuracy matrices ``{method: R}`` side by side, in rows of ``columns``.

    Each cell shows 100·R[i, j] rounded, so a 10 × 10 matrix stays readable
    at page width; one shared colour scale.
    """
    if not matrices:
        raise ValueError("matrices must not be empty")
    rows = -(-len(matrices) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns + 0.8, 3.4 * rows + 0.4), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (method, R) in zip(axes.flat, matrices.items()):
        R = np.asarray(R)
        T = len(R)
        image = ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
        for i, j in zip(*np.nonzero(~np.isnan(R))):  # NaN: a task not evaluated before it was trained on
            ax.text(j, i, f"{100 * R[i, j]:.0f}", ha="center", va="center", fontsize=9,
                    color="white" if R[i, j] < 0.6 else "black")
        ticks = list(range(T))
        labels = names or [str(k + 1) for k in ticks]
        ax.set(xticks=ticks, yticks=ticks, title=label(method))
        ax.set_xticklabels(labels, fontsize=10)
        ax.set_yticklabels(labels, fontsize=10)
        ax.grid(False)
    for ax in axes.flat[len(matrices):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("after training on task")
    for col in range(columns):  # under the lowest panel of each column
        shown = [axes[r, col] for r in range(rows) if r * columns + col < len(matrices)]
        if shown:
            shown[-1].set_xlabel("accuracy on task")
    fig.colorbar(image, ax=axes, shrink=0.5, label="test accuracy")
    if title:
        fig.suptitle(title)
    return fig


def _check_seeds(seeds) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence of ints >= 0")
    return [integer(s, "seeds (each)", minimum=0) for s in seeds]
