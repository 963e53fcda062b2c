"""Chapter 1 (catastrophic forgetting): its two figures of accuracy during training."""

from __future__ import annotations

import numpy as np

from ewcbook.chapters.style import TASK_COLORS


def accuracy_curves(ax, accuracies, task_names, *, boundaries=(), title=None):
    """Accuracy on each task (columns of ``accuracies``) after every epoch.

    Args:
        ax: a matplotlib Axes.
        accuracies: array (epochs, tasks), e.g. from
            :class:`ewcbook.evaluation.TaskAccuracyHistory`.
        task_names: one name per column.
        boundaries: epochs after which a new task starts (drawn as lines).
        title: the panel's title.
    """
    accuracies = np.asarray(accuracies)
    if accuracies.ndim != 2 or accuracies.shape[1] != len(task_names):
        raise ValueError(f"accuracies must be (epochs, {len(task_names)}), got shape {accuracies.shape}")
    epochs = np.arange(1, len(accuracies) + 1)
    for j, name in enumerate(task_names):
        ax.plot(epochs, accuracies[:, j], marker="o", color=TASK_COLORS[j % len(TASK_COLORS)], label=f"task {name}")
    for b in boundaries:
        ax.axvline(b + 0.5, color="0.5", linestyle="--", linewidth=1)
    ax.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1.02), title=title)
    ax.legend()
    return ax


def first_epoch_curve(ax, steps, accuracies, task_names, *, chance: float = 0.2) -> None:
    """Accuracy on each task against the number of batches of the new task seen.

    Args:
        ax: a matplotlib Axes.
        steps: batches seen at each point (0 for the point before training).
        accuracies: array (points, tasks).
        task_names: a label per task (column).
        chance: the accuracy of guessing, drawn as a dotted line.
    """
    accuracies = np.asarray(accuracies)
    for k, name in enumerate(task_names):
        ax.plot(steps, accuracies[:, k], "-", marker=".", color=TASK_COLORS[k], label=name)
    ax.axhline(chance, color="0.6", linestyle=":", linewidth=1, label=f"chance ({chance:g})")
    ax.set(xlabel="batches of task B seen (128 images each)", ylabel="test accuracy", ylim=(0, 1.02),
           title="The first epoch of B, batch by batch")
    ax.legend(loc="center right")
