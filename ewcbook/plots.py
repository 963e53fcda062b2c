"""One look for every figure of the book: a style, one colour per method,
and the few plots that several chapters draw."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

#: The same colour and name for each method in every chapter.
METHODS = {
    "joint": ("#4d4d4d", "joint training"),
    "none": ("#d62728", "no penalty"),
    "l2": ("#1f77b4", "L2 anchor"),
    "ewc": ("#2ca02c", "EWC"),
    "ewc_empirical": ("#98df8a", "EWC (empirical Fisher)"),
    "online_ewc": ("#9467bd", "online EWC"),
    "kfac": ("#8c564b", "K-FAC EWC"),
    "post": ("#ff7f0e", "the post's code"),
}

TASK_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def use_style() -> None:
    """Apply the book's matplotlib style (call once per chapter)."""
    plt.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
        }
    )


def color(method: str) -> str:
    """The colour of ``method`` (a key of :data:`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method][0]


def label(method: str) -> str:
    """The display name of ``method`` (a key of :data:`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method][1]


def accuracy_curves(ax, accuracies, task_names, *, boundaries=(), title=None):
    """Accuracy on each task (columns of ``accuracies``) after every epoch.

    Args:
        ax: a matplotlib Axes.
        accuracies: array (epochs, tasks), e.g. from
            :class:`ewcbook.evaluation.TaskAccuracyHistory`.
        task_names: one name per column.
        boundaries: epochs after which a new task starts (drawn as lines).
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


def accuracy_matrix(ax, R, task_names=None, *, title=None):
    """Heatmap of R[i, j], the accuracy on task j after training on task i."""
    R = np.asarray(R)
    T = len(R)
    names = task_names or [str(i + 1) for i in range(T)]
    image = ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
    for i in range(T):
        for j in range(T):
            ax.text(
                j,
                i,
                f"{R[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if R[i, j] < 0.6 else "black",
            )
    ax.set(
        xticks=range(T),
        yticks=range(T),
        xticklabels=names,
        yticklabels=names,
        xlabel="evaluated on task",
        ylabel="after training on task",
        title=title,
    )
    ax.grid(False)
    return image
